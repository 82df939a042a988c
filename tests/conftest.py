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


def keras_on_torch():
    """Keras on its torch backend, seeded; skips where keras is missing or was imported
    before with another backend."""
    os.environ["KERAS_BACKEND"] = "torch"
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("keras was imported before with another backend")
    keras.utils.set_random_seed(0)
    return keras
