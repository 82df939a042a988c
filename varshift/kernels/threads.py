"""Thread policy: how many threads a kernel or a BLAS product may use.

Two limits apply to every call. The process-wide one is set with :func:`limit` (e.g.
one thread in every :mod:`varshift.tasks` task) and is never exceeded. Below it, each
call chooses by its amount of work: a Numba kernel on fewer than
:data:`PARALLEL_MIN_ITEMS` values, or a product of fewer than
:data:`PARALLEL_MIN_FLOPS` multiply-adds, runs on the calling thread alone.

Why: waking a second thread costs tens of microseconds on an idle machine and up to a
scheduler time slice when another process holds the other core, while the kernels of
the small 1-D networks take 5-50 microseconds; and OpenBLAS's calling thread waits for
its workers by spinning, burning a core it may not own (a PreResNet step at batch 100
took 100x longer with two threads than with one while two other processes ran).

A serial call uses the same compiled code as a parallel call limited to one thread,
so single-threaded results do not depend on this policy.

The two thread runtimes varshift's kernels use, Numba's OpenMP layer and the OpenBLAS
bundled with SciPy, are loaded by :func:`load_runtimes` before the first kernel or
product, with the process's environment as it is: varshift sets no variable, so its
workers wait as the user's settings say (``OMP_WAIT_POLICY``,
``OPENBLAS_THREAD_TIMEOUT``). On 2 cores with another process busy, spinning idle
workers made a convnet training step up to 3x slower; a user who wants them to sleep
sets ``OMP_WAIT_POLICY=PASSIVE OPENBLAS_THREAD_TIMEOUT=4`` before starting Python.

Switching Numba and OpenBLAS to one thread and back costs 1-2 microseconds a call, 3-5 %
of a small network's step. Inside a :func:`batched` call (a model's forward and
backward, an optimizer step) a serial call therefore leaves them at one thread for the
next serial call, and the previous limits come back before a parallel call and when
the outermost batched call returns.
"""

from __future__ import annotations

import functools
import sys
import threading

import numba

__all__ = ["PARALLEL_MIN_ITEMS", "PARALLEL_MIN_FLOPS", "limit", "sized", "blas_serial",
           "batched", "load_runtimes"]

PARALLEL_MIN_ITEMS = 1 << 18
"""Values (of the largest array a Numba kernel reads or writes) below which it runs
serially: ~0.1 ms of work for the element-wise kernels."""

PARALLEL_MIN_FLOPS = 1 << 25
"""Multiply-adds ``m * n * k`` below which a product runs on one BLAS thread: ~0.5 ms
of single-threaded sgemm."""

_BLAS = []

_LOADED = []
_LOADING = threading.Lock()


def load_runtimes() -> None:
    """Load SciPy's OpenBLAS and start Numba's threading layer, once per process.
    PyTorch's thread count, which starting Numba's OpenMP layer can change, is put
    back."""
    if _LOADED:
        return
    with _LOADING:
        if _LOADED:
            return
        torch = sys.modules.get("torch")
        torch_threads = torch.get_num_threads() if torch is not None else None
        try:
            import scipy.linalg.blas  # noqa: F401
            from numba.np.ufunc.parallel import _launch_threads

            _launch_threads()
        finally:
            if torch is not None and torch.get_num_threads() != torch_threads:
                torch.set_num_threads(torch_threads)
        _LOADED.append(True)


class _Lazy(threading.local):
    """This thread's state inside a :func:`batched` call (Numba's limits are per
    thread)."""

    active = False
    numba = None  # Numba's thread count before a serial call left it at 1
    blas = None  # [(controller, threads)] likewise for BLAS


_LAZY = _Lazy()


def batched(method):
    """Decorate ``method`` so that, within its outermost call, consecutive serial
    kernels and products switch threads once instead of once per call.

    Parameters
    ----------
    method : callable

    Returns
    -------
    callable
        Same signature and result; Numba's and BLAS's thread limits are as before
        when it returns.
    """

    @functools.wraps(method)
    def run(*args, **kwargs):
        if _LAZY.active:
            return method(*args, **kwargs)
        _LAZY.active = True
        try:
            return method(*args, **kwargs)
        finally:
            _LAZY.active = False
            _numba_back()
            _blas_back()

    return run


def _numba_back():
    """Give Numba back the thread count a lazy serial call took."""
    if _LAZY.numba is not None:
        if _LAZY.numba > 1:
            numba.set_num_threads(_LAZY.numba)
        _LAZY.numba = None


def _blas_back():
    """Give BLAS back the thread counts a lazy serial product took."""
    if _LAZY.blas is not None:
        for lib, threads in _LAZY.blas:
            lib.set_num_threads(threads)
        _LAZY.blas = None


def _blas_to_one():
    """Set every BLAS above one thread to one; the changed ``(controller, threads)``."""
    changed = [(lib, t) for lib in _blas_libraries() if (t := lib.get_num_threads()) > 1]
    for lib, _ in changed:
        lib.set_num_threads(1)
    return changed


def _blas_libraries():
    """threadpoolctl controllers of the BLAS the layers' products use: the OpenBLAS
    bundled with SciPy's wheels if there is one, else every loaded BLAS.

    Not NumPy's bundled copy, which the layers do not use: it reads
    ``OPENBLAS_THREAD_TIMEOUT`` before varshift can set it, so raising its thread count
    again after every small product would wake workers that then spin for ~0.1 s.
    """
    if not _BLAS:
        load_runtimes()  # SciPy's OpenBLAS is loaded before threadpoolctl looks
        from .._process import thread_controller

        libs = thread_controller().select(user_api="blas").lib_controllers
        _BLAS.extend([lib for lib in libs if "scipy.libs" in lib.filepath] or libs)
    return _BLAS


def limit(threads: int):
    """Limit this thread's Numba kernels and every BLAS to ``threads`` threads.

    Parameters
    ----------
    threads : int >= 1
        At most Numba's ``NUMBA_NUM_THREADS``.

    Returns
    -------
    restore : callable
        Puts back the previous limits.
    """
    _blas_libraries()  # threadpoolctl imported without its environment change
    from threadpoolctl import threadpool_limits

    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    limiter = threadpool_limits(threads)
    return lambda: (limiter.restore_original_limits(), numba.set_num_threads(before))


def sized(kernel, items):
    """``kernel`` running serially when ``items(*args)`` is below
    :data:`PARALLEL_MIN_ITEMS`.

    Parameters
    ----------
    kernel : callable
        Calls Numba ``parallel=True`` functions.
    items : callable
        The call's amount of work from its arguments.

    Returns
    -------
    callable
        Same signature and result as ``kernel``.
    """

    def run(*args):
        if not _LOADED:
            load_runtimes()
        if items(*args) >= PARALLEL_MIN_ITEMS:
            _numba_back()
            return kernel(*args)
        if _LAZY.active:
            if _LAZY.numba is None:
                _LAZY.numba = numba.get_num_threads()
                if _LAZY.numba > 1:
                    numba.set_num_threads(1)
            return kernel(*args)
        threads = numba.get_num_threads()
        if threads == 1:
            return kernel(*args)
        numba.set_num_threads(1)
        try:
            return kernel(*args)
        finally:
            numba.set_num_threads(threads)

    run.__name__, run.__doc__, run.__wrapped__ = kernel.__name__, kernel.__doc__, kernel
    return run


def blas_serial(product, m, n, k):
    """``product()`` on one BLAS thread if ``m * n * k`` is below
    :data:`PARALLEL_MIN_FLOPS`, else under the current limit."""
    if m * n * k >= PARALLEL_MIN_FLOPS:
        _blas_back()
        return product()
    if _LAZY.active:
        if _LAZY.blas is None:
            _LAZY.blas = _blas_to_one()
        return product()
    changed = _blas_to_one()
    try:
        return product()
    finally:
        for lib, threads in changed:
            lib.set_num_threads(threads)
