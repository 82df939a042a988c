"""Helpers shared by the benchmark scripts: thread pinning and robust timing."""

import json
import os
import statistics
import subprocess
import sys
import time

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


BLAS_PIN_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
"""Set on some machines (this project's among them) to pin OpenBLAS to an older kernel
family, because older OpenBLAS builds compute wrong results or crash on newer
processors. A current NumPy or SciPy then runs, e.g., Haswell's AVX2 products on an
AVX-512 processor; PyTorch, whose products are oneDNN's and MKL's, is not affected.
``train_step.py`` and ``measure.py`` run varshift both ways; the other benchmarks run
it as the environment says."""


def blas_pinned():
    """Whether this environment pins OpenBLAS's kernel (see :data:`BLAS_PIN_VARS`)."""
    return any(v in os.environ for v in BLAS_PIN_VARS)


def blas_kernel():
    """The kernel family (threadpoolctl's 'architecture') of the OpenBLAS that
    varshift's layers use, SciPy's: e.g. 'Haswell' or 'SkylakeX'."""
    import scipy.linalg.blas  # noqa: F401 - loads SciPy's OpenBLAS
    from threadpoolctl import threadpool_info

    libs = [i for i in threadpool_info() if i.get("internal_api") == "openblas"]
    scipys = [i for i in libs if "scipy" in i.get("filepath", "")] or libs
    return scipys[0].get("architecture", "?") if scipys else "no OpenBLAS"


def run_worker(script, args, threads, extra_env=None, native_blas=False):
    """Run ``script --worker ...`` in a fresh interpreter with ``threads`` threads;
    return the last line of its stdout (JSON). ``native_blas=True`` unsets
    :data:`BLAS_PIN_VARS` in that process only, so OpenBLAS picks its kernel for this
    processor."""
    env = dict(os.environ, **{v: str(threads) for v in THREAD_VARS}, **(extra_env or {}))
    for var in BLAS_PIN_VARS if native_blas else ():
        env.pop(var, None)
    out = subprocess.run([sys.executable, script, "--worker", *args, "--threads", str(threads)],
                         env=env, check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def median_ms(fn, steps, warmup=5):
    """Median wall time of ``fn()`` in milliseconds after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def varshift_adam_step(model, x, y):
    """One training step of a varshift classifier: forward, backward (without the input
    gradient, which PyTorch does not compute either), Adam with lr 1e-3."""
    from varshift import nn, optim

    opt = optim.Adam(model, lr=1e-3)
    loss = nn.CrossEntropyLoss()

    def step():
        loss(model(x), y)
        opt.zero_grad()
        model.backward(loss.backward(), input_grad=False)
        opt.step()

    return step


def torch_adam_step(model, x, y):
    """The same step for a PyTorch classifier."""
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss(model(x), y).backward()
        opt.step()

    return step


def median_wall_and_cpu_ms(fn, steps, warmup=5):
    """Median wall and median CPU time (all threads of the process) of ``fn()`` in
    milliseconds after ``warmup`` calls, as ``{"ms": ..., "cpu_ms": ...}``."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"ms": 1000 * statistics.median(wall), "cpu_ms": 1000 * statistics.median(cpu)}


def print_seconds_of_second_call(fn):
    """Call ``fn`` once to warm up, time a second call, and print ``{"seconds": ...}``
    (a worker's last line, read by :func:`run_worker`)."""
    fn()
    start = time.perf_counter()
    fn()
    print(json.dumps({"seconds": time.perf_counter() - start}))
