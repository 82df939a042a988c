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

**One pool of threads.** BLAS always runs on one thread (:func:`product`): a large
product is split into blocks over Numba's threads, each block one single-threaded BLAS
call. Two pools, OpenBLAS's and Numba's OpenMP threads, each spinning after its work
while the other's wanted the cores, made the reference convnet's training step at two
threads 1.7 times slower than at one on two idle cores (204 against 118 ms); with one
pool it takes 65-69 ms.

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

from .. import _runtimes

__all__ = ["PARALLEL_MIN_ITEMS", "PARALLEL_MIN_FLOPS", "limit", "sized", "product",
           "batched", "load_runtimes", "single_threaded_worker"]

PARALLEL_MIN_ITEMS = 1 << 16
"""Values (of the largest array a Numba kernel reads or writes) below which it runs
serially: ~25 us of work for the element-wise kernels. At 2^16 the BatchNorms and
convolutions of the 1-D DenseNet (batch 100, length 40, 16-64 channels) run on both
threads, and its two-thread step was 14% faster on an Intel Xeon than at 2^18."""

PARALLEL_MIN_FLOPS = 1 << 24
"""Multiply-adds ``m * n * k`` below which a product is one BLAS call on the calling
thread, not split over Numba's threads: ~0.25 ms of single-threaded sgemm. At 2^24 the
reference convnet's first convolution (just under 2^25 for each of its two products)
is split; its training step was 3% faster on an Intel Xeon at two threads."""

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
    """The loaded BLAS runtimes (:mod:`varshift._runtimes`) the layers' products use:
    the OpenBLAS bundled with SciPy's wheels if there is one, else every loaded BLAS.

    Not NumPy's bundled copy, which the layers do not use: it reads
    ``OPENBLAS_THREAD_TIMEOUT`` before varshift can set it, so raising its thread count
    again after every small product would wake workers that then spin for ~0.1 s.
    """
    if not _BLAS:
        load_runtimes()  # SciPy's OpenBLAS is loaded before the runtimes are listed
        libs = [lib for lib in _runtimes.loaded() if lib.user_api == "blas"]
        _BLAS.extend([lib for lib in libs if "scipy.libs" in lib.filepath] or libs)
    return _BLAS


def limit(threads: int):
    """Limit this thread's Numba kernels and every loaded OpenMP and BLAS runtime to
    ``threads`` threads.

    Parameters
    ----------
    threads : int >= 1
        At most Numba's ``NUMBA_NUM_THREADS``.

    Returns
    -------
    restore : callable
        Puts back the previous limits.
    """
    _blas_libraries()  # the runtimes varshift uses are loaded before they are listed
    before = numba.get_num_threads()
    runtimes = [(lib, lib.get_num_threads()) for lib in _runtimes.loaded()]
    numba.set_num_threads(threads)
    for lib, _ in runtimes:
        lib.set_num_threads(threads)

    def restore():
        for lib, count in runtimes:
            lib.set_num_threads(count)
        numba.set_num_threads(before)

    return restore


def single_threaded_worker() -> None:
    """Make this process, a worker varshift started, compute on one thread: Numba, every
    OpenMP and BLAS runtime loaded now, and torch (now if imported, else as soon as it
    is).

    The limits are set through the libraries' own calls, not through environment
    variables, so the parent process's environment, which the worker inherits, is never
    written. Used as the ``initializer`` of :func:`varshift.tasks.run`'s process pool;
    each task also runs under :func:`limit` (1).
    """
    load_runtimes()
    numba.set_num_threads(1)
    for lib in _runtimes.loaded():
        lib.set_num_threads(1)
    if "torch" in sys.modules:
        _torch_single_threaded(sys.modules["torch"])
    else:
        sys.meta_path.insert(0, _AfterImport("torch", _torch_single_threaded))


def _torch_single_threaded(torch):
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # inter-op work already started: its pool keeps its size
        pass


class _AfterImport:
    """A ``sys.meta_path`` finder that calls ``then(module)`` once the module ``name``
    has been imported, before the import statement returns, and then removes itself."""

    def __init__(self, name, then):
        self.name, self.then = name, then

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module, then = spec.loader.exec_module, self.then

        def run(module):
            exec_module(module)
            then(module)

        spec.loader.exec_module = run
        return spec


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


def product(run, m, n, k):
    """``run(blocks)`` with every BLAS at one thread: a product of ``m x n x k``
    multiply-adds, split into ``blocks`` parts on Numba's threads.

    ``blocks`` is 1 below :data:`PARALLEL_MIN_FLOPS`, else Numba's thread count, at most
    the BLAS's own (a process-wide :func:`limit` is never exceeded). BLAS never runs
    its own threads, so its workers never spin beside Numba's: on 2 idle cores the two
    pools together made a convnet training step at two threads 1.7 times slower than at
    one.

    Parameters
    ----------
    run : callable
        ``run(blocks)`` computes the product.
    m, n, k : int

    Returns
    -------
    Whatever ``run`` returns.
    """
    large = m * n * k >= PARALLEL_MIN_FLOPS
    if large:
        _numba_back()
    if _LAZY.active:
        if _LAZY.blas is None:
            _LAZY.blas = _blas_to_one()
        return run(_blocks(large, _LAZY.blas))
    changed = _blas_to_one()
    try:
        return run(_blocks(large, changed))
    finally:
        for lib, threads in changed:
            lib.set_num_threads(threads)


def _blocks(large, changed):
    """How many blocks a product is split into: BLAS's limit before it was set to one
    thread (``changed``: the runtimes above one), and Numba's."""
    if not large or not changed:
        return 1
    return max(1, min(numba.get_num_threads(), *(threads for _, threads in changed)))
