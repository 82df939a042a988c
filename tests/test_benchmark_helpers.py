"""The benchmarks' shared helpers (the benchmarks themselves are run by hand: timings
belong in benchmarks, not in tests)."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import _common  # noqa: E402

_WORKER = """
import json, os, sys
sys.path.insert(0, {benchmarks!r})
from _common import blas_kernel
print(json.dumps({{"pin": [os.environ.get(v) for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")],
                  "threads": os.environ.get("OMP_NUM_THREADS"), "blas": blas_kernel()}}))
"""


@pytest.fixture
def worktree_first(monkeypatch):
    """Subprocesses import this checkout's varshift."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))


@pytest.fixture
def worker(tmp_path, worktree_first):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER.format(benchmarks=os.path.dirname(_common.__file__)))
    return lambda **kwargs: json.loads(_common.run_worker(str(script), [], 1, **kwargs))


def test_native_blas_unsets_the_pin_in_the_worker_alone(worker, monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "512")
    assert _common.blas_pinned()
    pinned, native = worker(), worker(native_blas=True)
    assert pinned["pin"] == ["Haswell", "512"]
    if platform.machine() in ("x86_64", "AMD64"):  # a kernel family of x86 processors
        assert pinned["blas"] == "Haswell"
    assert native["pin"] == [None, None] and native["threads"] == "1"
    assert os.environ["OPENBLAS_CORETYPE"] == "Haswell"  # the caller's environment is kept
    assert isinstance(native["blas"], str) and native["blas"]


def test_no_pin_is_reported_as_such(monkeypatch):
    for var in _common.BLAS_PIN_VARS:
        monkeypatch.delenv(var, raising=False)
    assert not _common.blas_pinned()


# --------------------------------------------------------------- the PyTorch peers
def _peer_workers(tmp_path):
    """Every benchmark's PyTorch peer worker: (script, arguments), quick settings."""
    images = tmp_path / "images.npy"
    np.save(images, np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32))
    return {
        "small_networks preresnet": ("small_networks.py", ["torch", "--network", "preresnet",
                                                           "--steps", "1"]),
        "small_networks densenet": ("small_networks.py", ["torch", "--network", "densenet",
                                                          "--steps", "1"]),
        "train_step": ("train_step.py", ["torch", "--steps", "1"]),
        "measure": ("measure.py", ["torch", "--images", str(images)]),
        "torch_measure": ("torch_measure.py", ["hooks", "--n", "8", "--size", "8"]),
    }


def _run_peer(script, args, varshift_first):
    """Run a peer worker as ``python script --worker ...`` does, optionally after
    ``import varshift`` in the same process."""
    code = ("import runpy, sys\n"
            + ("import varshift\n" if varshift_first else "")
            + "sys.argv = [sys.argv[1], '--worker', *sys.argv[2:], '--threads', '1']\n"
            + "sys.path.insert(0, str(__import__('pathlib').Path(sys.argv[0]).parent))\n"
            + "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, "-c", code, str(BENCHMARKS / script), *args],
                          capture_output=True, text=True, timeout=600, env=env)


def test_every_peer_worker_refuses_to_time_in_a_process_that_imported_varshift(tmp_path):
    pytest.importorskip("torch")
    for name, (script, args) in _peer_workers(tmp_path).items():
        out = _run_peer(script, args, varshift_first=True)
        assert out.returncode != 0, name
        assert "AssertionError: the PyTorch peer must run in a process that never imported " \
               "varshift" in out.stderr, (name, out.stderr[-2000:])


def test_the_small_network_peers_run_clean_with_varshifts_parameter_counts(tmp_path):
    """Without varshift the peers run (so they never import it themselves) and their
    architectures have varshift's parameter counts."""
    pytest.importorskip("torch")
    from varshift.reproduce import networks

    for name, (script, args) in _peer_workers(tmp_path).items():
        if not name.startswith("small_networks"):
            continue
        out = _run_peer(script, args, varshift_first=False)
        assert out.returncode == 0, (name, out.stderr[-2000:])
        report = json.loads(out.stdout.strip().splitlines()[-1])
        model = getattr(networks, args[2])("a", 0.3, seed=0)
        assert report["params"] == sum(v.size for v in model.state_dict(buffers=False).values())
        assert report["torch_threads"] == 1
