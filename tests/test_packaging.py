"""The distribution: ``python -m build`` makes an sdist and a wheel that pass ``twine
check``, hold what they should, and install in a clean virtual environment where the
command line runs. Slow (minutes: the clean environment downloads NumPy, SciPy,
Matplotlib and Numba); CI runs it with ``-m slow``. Also the skip reasons that say
what to install."""

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTORCH = """
import importlib.abc, sys
class NoTorch(importlib.abc.MetaPathFinder):  # torch not installed, as far as imports go
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoTorch())
sys.path.insert(0, sys.argv[1])
import pytest
from conftest import keras_on_torch
try:
    keras_on_torch()
except pytest.skip.Exception as skip:
    print(skip.msg)
"""


def test_keras_tests_without_torch_say_what_to_install():
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed: pip install -e '.[keras]'")
    out = subprocess.run([sys.executable, "-c", NOTORCH, str(ROOT / "tests")],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "KERAS_BACKEND": "torch"})
    assert out.returncode == 0, out.stderr
    assert "keras is installed, but importing it failed because 'torch' is missing" in out.stdout
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in out.stdout


def _run(*command, cwd=None, env=None, timeout=1200):
    out = subprocess.run([str(c) for c in command], capture_output=True, text=True, cwd=cwd,
                         env=env, timeout=timeout)
    assert out.returncode == 0, f"{command}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """The sdist and the wheel (built from the sdist, as ``python -m build`` does)."""
    for module in ("build", "twine"):
        pytest.importorskip(module, reason=f"needs {module}: pip install build twine")
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--outdir", out, ROOT)
    (sdist,) = out.glob("varshift-*.tar.gz")
    (wheel,) = out.glob("varshift-*-py3-none-any.whl")
    return sdist, wheel


def _tracked(folder):
    """The files of ``folder`` that git tracks (None outside a git checkout)."""
    try:
        listed = subprocess.run(["git", "ls-files", folder], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return None
    return {name for name in listed if (ROOT / name).is_file()}


@pytest.mark.slow
def test_the_sdist_holds_the_package_license_and_readme_and_no_leftovers(dists):
    sdist, _ = dists
    with tarfile.open(sdist) as archive:
        top = sdist.name[:-len(".tar.gz")]
        names = {n.removeprefix(f"{top}/") for n in archive.getnames()}
        license_text = archive.extractfile(f"{top}/LICENSE").read().decode()
    assert {"LICENSE", "README.md", "setup.cfg", "pyproject.toml", "PKG-INFO"} <= names
    assert license_text == (ROOT / "LICENSE").read_text()
    tracked = _tracked("varshift")
    if tracked is None:
        pytest.skip("not a git checkout: cannot list the package's tracked files")
    assert tracked <= names, f"missing from the sdist: {sorted(tracked - names)}"
    unwanted = [n for n in names
                if n.split("/")[0] in ("figures", "notebooks", "tests", "benchmarks", "docs")
                or "__pycache__" in n.split("/") or n.endswith((".pyc", ".nbi", ".nbc"))
                or ".ipynb_checkpoints" in n]
    assert unwanted == []


@pytest.mark.slow
def test_the_wheel_has_the_metadata_and_the_package(dists):
    _, wheel = dists
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(f"{info}/METADATA").decode()
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert f"{info}/licenses/LICENSE" in names
    assert "License: BSD-3-Clause" in metadata.splitlines()
    for classifier in ["License :: OSI Approved :: BSD License",
                       "Operating System :: OS Independent", "Development Status :: 3 - Alpha",
                       *(f"Programming Language :: Python :: 3.{v}" for v in range(10, 14))]:
        assert f"Classifier: {classifier}" in metadata.splitlines()
    assert "varshift = varshift.cli:main" in entry_points
    tracked = {n for n in _tracked("varshift") or () if n.endswith(".py")}
    assert tracked <= names, f"missing from the wheel: {sorted(tracked - names)}"
    assert not [n for n in names if n.endswith((".pyc", ".nbi", ".nbc")) or "__pycache__" in n]


@pytest.mark.slow
def test_twine_check_passes(dists):
    out = _run(sys.executable, "-m", "twine", "check", "--strict", *dists)
    assert out.count("PASSED") == 2, out


MEASURE_INPUTS = """import numpy as np, varshift
from varshift import nn
varshift.save(nn.Sequential(nn.Conv2D(1, 4, 3), nn.BatchNorm(4), nn.ReLU(), nn.Flatten(),
                            nn.Dropout(0.3), nn.Dense(144, 2), seed=0), 'm.npz')
np.save('x.npy', np.random.default_rng(0).random((64, 1, 8, 8), dtype=np.float32))
print(varshift.__file__)
"""


@pytest.mark.slow
def test_the_wheel_installs_and_runs_in_a_clean_venv(dists, tmp_path):
    import varshift

    _, wheel = dists
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)  # no system site packages: the registry's
    python, script = venv / "bin" / "python", venv / "bin" / "varshift"
    _run(python, "-m", "pip", "install", "-q", wheel)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VARSHIFT_DATA")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    work = tmp_path / "work"
    work.mkdir()
    assert _run(script, "--version", cwd=work, env=env) == f"varshift {varshift.__version__}\n"
    imported = _run(python, "-c", MEASURE_INPUTS, cwd=work, env=env).strip()
    assert Path(imported).is_relative_to(venv)  # the installed copy, not this checkout
    report = json.loads(_run(script, "measure", "m.npz", "x.npy", "--json", cwd=work, env=env))
    assert report["num_samples"] == 64 and len(report["bn"]) == 1
