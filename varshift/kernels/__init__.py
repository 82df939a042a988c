"""Hot loops, each with a NumPy reference and a Numba implementation.

The layers call the names exported here. They are the Numba versions unless the
environment variable ``VARSHIFT_KERNELS=numpy`` selects the NumPy references (slower,
but easy to read and to step through); the tests compare the two.
"""

from __future__ import annotations

import os
import sys


def _use_user_cache_dir() -> None:
    """Send Numba's on-disk cache (the kernels use ``cache=True``) to a user folder,
    ``$XDG_CACHE_HOME/varshift/numba`` (default ``~/.cache/varshift/numba``), unless
    the user set ``NUMBA_CACHE_DIR``.

    Without this, Numba writes its cache files next to the sources, i.e. into the
    installed package in site-packages; uninstalling does not remove them, and the
    leftover folder then shadows an editable install of varshift. Numba reads the
    variable when it is imported; if it already was, its config is updated too.
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(base, "varshift", "numba")
    os.environ["NUMBA_CACHE_DIR"] = folder
    config = sys.modules.get("numba.core.config")
    if config is not None:
        config.CACHE_DIR = folder


_use_user_cache_dir()

# Numba's OpenMP workers spin-wait after every parallel kernel and take the cores the
# next BLAS call needs; sleeping workers made a training step 1.6x faster on 2 cores.
# Set before Numba loads its OpenMP pool (at the first parallel call); a user's own
# setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Likewise OpenBLAS workers spin ~0.1 s after every product; read by SciPy's OpenBLAS,
# which varshift's layers use and which loads later (see gemm.py).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from . import batchnorm, elementwise, gemm, optim, pooling, threads, window  # noqa: E402
from .window import Window  # noqa: E402

__all__ = ["Window", "BACKEND", "matmul", "add_bias_nchw", "im2col", "col2im", "im2row", "row2im", "bn_moments", "bn_normalize",
           "bn_backward", "adam_step", "leaky_relu", "leaky_relu_backward", "elu", "elu_backward",
           "max_windows", "max_windows_backward"]

BACKEND = os.environ.get("VARSHIFT_KERNELS", "numba").strip().lower()
if BACKEND not in ("numba", "numpy"):
    raise ImportError(
        f"VARSHIFT_KERNELS must be 'numba' or 'numpy', got {BACKEND!r}"
    )


def _size(x, *_):
    return x.size


def _pick(module, name, items=_size):
    """The kernel ``name`` of the selected backend; Numba kernels run serially on
    fewer than ``threads.PARALLEL_MIN_ITEMS`` items (see :mod:`.threads`)."""
    kernel = getattr(module, f"{name}_{BACKEND}")
    return kernel if BACKEND == "numpy" else threads.sized(kernel, items)


matmul = gemm.matmul_numpy if BACKEND == "numpy" else gemm.matmul_blas
add_bias_nchw = _pick(gemm, "add_bias_nchw")
im2col = _pick(window, "im2col", lambda x, window, *_: x.size * window.kernel[0] * window.kernel[1])
col2im = _pick(window, "col2im")
im2row = _pick(window, "im2row", lambda x, window: x.size * window.kernel[0] * window.kernel[1])
row2im = _pick(window, "row2im")
bn_moments = _pick(batchnorm, "moments")
bn_normalize = _pick(batchnorm, "normalize")
bn_backward = _pick(batchnorm, "backward")
adam_step = _pick(optim, "adam")
leaky_relu = _pick(elementwise, "leaky_relu")
leaky_relu_backward = _pick(elementwise, "leaky_relu_backward")
elu = _pick(elementwise, "elu")
elu_backward = _pick(elementwise, "elu_backward")
max_windows = _pick(pooling, "max_windows")
max_windows_backward = _pick(pooling, "max_windows_backward")
