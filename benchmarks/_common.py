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
    """The kernel family (OpenBLAS's ``openblas_get_corename``) of the OpenBLAS that
    varshift's layers use, SciPy's: e.g. 'Haswell' or 'SkylakeX'. Imports varshift:
    call it in the orchestrating process or a varshift worker, never in a peer."""
    import scipy.linalg.blas  # noqa: F401 - loads SciPy's OpenBLAS

    from varshift._runtimes import loaded

    libs = [r for r in loaded() if r.internal_api == "openblas"]
    scipys = [r for r in libs if "scipy.libs" in r.filepath] or libs
    if not scipys:
        return "no OpenBLAS"
    return scipys[0].architecture or "?"


def cpu_model():
    """The processor's model name (Linux's /proc/cpuinfo), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def describe_machine():
    """Lines naming what the numbers were measured on: CPU model, cores and load,
    OpenBLAS's kernel, torch's version, CPU capability and default thread counts.
    Run in the orchestrating process (it imports varshift and torch; the workers are
    fresh processes)."""
    lines = [f"CPU: {cpu_model()}; {os.cpu_count()} logical cores; load average "
             f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}"]
    pin = {v: os.environ[v] for v in BLAS_PIN_VARS if v in os.environ}
    lines.append(f"OpenBLAS (SciPy's, varshift's products): kernel {blas_kernel()}"
                 + (f"; pinned by {pin}" if pin else "; not pinned"))
    try:
        import torch
    except ImportError:
        lines.append("torch: not installed")
    else:
        lines.append(f"torch {torch.__version__}: CPU capability "
                     f"{torch.backends.cpu.get_cpu_capability()}, default threads "
                     f"{torch.get_num_threads()} intra-op / {torch.get_num_interop_threads()} "
                     f"inter-op (each worker sets its own)")
    return lines


def peer_threads():
    """A PyTorch peer's thread counts, for its JSON line."""
    import torch

    return {"torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads()}


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


def print_seconds_of_second_call(fn, extra=None):
    """Call ``fn`` once to warm up, time a second call, and print ``{"seconds": ...}``
    and the entries of ``extra`` (a worker's last line, read by :func:`run_worker`)."""
    fn()
    start = time.perf_counter()
    fn()
    print(json.dumps({"seconds": time.perf_counter() - start, **(extra or {})}))
