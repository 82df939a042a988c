import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", deadline=None, max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def mnist_root():
    """Folder with the MNIST files: $VARSHIFT_DATA/mnist or ../shared/data/mnist."""
    for base in (os.environ.get("VARSHIFT_DATA"), SHARED_DATA):
        if base and (Path(base) / "mnist").is_dir():
            return Path(base) / "mnist"
    return None


@pytest.fixture
def mnist_dir():
    root = mnist_root()
    if root is None:
        pytest.skip("MNIST files not available (set VARSHIFT_DATA)")
    return root


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


FIGURES = Path(__file__).resolve().parents[1] / "figures"


@pytest.fixture(scope="session")
def rendered_report(tmp_path_factory):
    """REPORT.md rendered from the committed figure and case JSON, NOTES.md and the
    confirmatory verdicts, as `figures/REPORT.md` is."""
    import shutil

    from varshift.reproduce.plan import Settings
    from varshift.reproduce.results import (
        CONFIRMATORY,
        CONFIRMATORY_READING,
        REESTIMATION,
        write_report,
    )

    if not (FIGURES / "REPORT.md").exists():
        pytest.skip("no committed figures")
    out = tmp_path_factory.mktemp("report")
    for path in [*FIGURES.glob("fig*.json"), *FIGURES.glob("case-*.json"), FIGURES / "NOTES.md",
                 FIGURES / CONFIRMATORY, (FIGURES / CONFIRMATORY).with_name(CONFIRMATORY_READING),
                 FIGURES / REESTIMATION]:
        if path.exists():
            (out / path.relative_to(FIGURES)).parent.mkdir(exist_ok=True)
            shutil.copy(path, out / path.relative_to(FIGURES))
    write_report(out, [], Settings(quick=False).describe() + "; case studies in their quick mode")
    return (out / "REPORT.md").read_text()


#: How to install each package the Keras tests need, for the skip reason.
INSTALL_HINTS = {
    "keras": "pip install -e '.[keras]'",
    "h5py": "pip install -e '.[keras]'",
    "torch": ("pip install torch (without a GPU, the CPU-only build: pip install torch "
              "--index-url https://download.pytorch.org/whl/cpu)"),
}


def keras_import_skip_reason(err):
    """The reason to skip a Keras test for ``err``, the ImportError of ``import keras``:
    which package is missing and how to install it (Keras on its torch backend needs
    PyTorch, which the ``keras`` extra does not install)."""
    missing = (err.name or "keras").partition(".")[0]
    hint = INSTALL_HINTS.get(missing, f"pip install {missing}")
    if missing == "keras":
        return f"Keras tests need keras, which is not installed: {hint}"
    return (f"Keras tests need keras on its torch backend; keras is installed, but "
            f"importing it failed because {missing!r} is missing ({err}). Install it: {hint}")


def import_keras():
    """``import keras`` (on the backend set in ``KERAS_BACKEND``), or skip the test
    saying what is missing and how to install it."""
    try:
        import keras
    except ImportError as err:
        pytest.skip(keras_import_skip_reason(err))
    return keras


def keras_on_torch():
    """Keras on its torch backend, seeded; skips, saying what is missing and how to
    install it, where keras or torch is missing, or where keras was imported before with
    another backend."""
    os.environ["KERAS_BACKEND"] = "torch"
    keras = import_keras()
    if keras.backend.backend() != "torch":
        pytest.skip("keras was imported before with another backend")
    keras.utils.set_random_seed(0)
    return keras
