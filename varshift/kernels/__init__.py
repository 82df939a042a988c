"""Hot loops, each with a NumPy reference and a Numba implementation.

The layers call the names exported here. They are the Numba versions unless the
environment variable ``VARSHIFT_KERNELS=numpy`` selects the NumPy references (slower,
but easy to read and to step through); the tests compare the two.
"""

from __future__ import annotations

import os

from . import batchnorm, elementwise, gemm, optim, pooling, threads, window
from .window import Window

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
im2row = _pick(window, "im2row", lambda x, window, *_: x.size * window.kernel[0] * window.kernel[1])
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
