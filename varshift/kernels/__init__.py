"""Hot loops, each with a NumPy reference and a Numba implementation.

The layers call the names exported here. They are the Numba versions unless the
environment variable ``VARSHIFT_KERNELS=numpy`` selects the NumPy references (slower,
but easy to read and to step through); the tests compare the two.
"""

from __future__ import annotations

import os

from . import batchnorm, optim, window
from .window import Window

__all__ = ["Window", "BACKEND", "im2col", "col2im", "bn_moments", "bn_normalize",
           "bn_backward", "adam_step"]

BACKEND = os.environ.get("VARSHIFT_KERNELS", "numba").strip().lower()
if BACKEND not in ("numba", "numpy"):
    raise ImportError(
        f"VARSHIFT_KERNELS must be 'numba' or 'numpy', got {BACKEND!r}"
    )


def _pick(module, name):
    return getattr(module, f"{name}_{BACKEND}")


im2col = _pick(window, "im2col")
col2im = _pick(window, "col2im")
bn_moments = _pick(batchnorm, "moments")
bn_normalize = _pick(batchnorm, "normalize")
bn_backward = _pick(batchnorm, "backward")
adam_step = _pick(optim, "adam")
