"""Hot loops, each with a NumPy reference and a Numba implementation.

The layers call the names exported here. They are the Numba versions unless the
environment variable ``VARSHIFT_KERNELS=numpy`` selects the NumPy references (slower,
but easy to read and to step through); the tests compare the two.
"""

from __future__ import annotations

import os

# Numba's OpenMP workers spin-wait after every parallel kernel and take the cores the
# next BLAS call needs; sleeping workers made a training step 1.6x faster on 2 cores.
# Set before Numba loads its OpenMP pool (at the first parallel call); a user's own
# setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Likewise OpenBLAS workers spin ~0.1 s after every product; read by SciPy's OpenBLAS,
# which varshift's layers use and which loads later (see gemm.py).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from . import batchnorm, elementwise, gemm, optim, window  # noqa: E402
from .window import Window

__all__ = ["Window", "BACKEND", "matmul", "im2col", "col2im", "bn_moments", "bn_normalize",
           "bn_backward", "adam_step", "leaky_relu", "leaky_relu_backward"]

BACKEND = os.environ.get("VARSHIFT_KERNELS", "numba").strip().lower()
if BACKEND not in ("numba", "numpy"):
    raise ImportError(
        f"VARSHIFT_KERNELS must be 'numba' or 'numpy', got {BACKEND!r}"
    )


def _pick(module, name):
    return getattr(module, f"{name}_{BACKEND}")


matmul = gemm.matmul_numpy if BACKEND == "numpy" else gemm.matmul_blas
im2col = _pick(window, "im2col")
col2im = _pick(window, "col2im")
bn_moments = _pick(batchnorm, "moments")
bn_normalize = _pick(batchnorm, "normalize")
bn_backward = _pick(batchnorm, "backward")
adam_step = _pick(optim, "adam")
leaky_relu = _pick(elementwise, "leaky_relu")
leaky_relu_backward = _pick(elementwise, "leaky_relu_backward")
