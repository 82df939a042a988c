"""The benchmarks' shared helpers (the benchmarks themselves are run by hand: timings
belong in benchmarks, not in tests)."""

import json
import os
import platform
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import _common  # noqa: E402

_WORKER = """
import json, os, sys
sys.path.insert(0, {benchmarks!r})
from _common import blas_kernel
print(json.dumps({{"pin": [os.environ.get(v) for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")],
                  "threads": os.environ.get("OMP_NUM_THREADS"), "blas": blas_kernel()}}))
"""


@pytest.fixture
def worker(tmp_path):
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
