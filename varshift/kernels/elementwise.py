"""Element-wise activations with a branch: ``leaky_relu`` (ReLU is slope 0) and ``elu``.

``*_numpy`` is the reference; ``*_numba`` does one fused parallel pass (NumPy's
``where`` with its temporaries was 50x slower on a (200, 32, 14, 14) input). ELU's
``expm1`` stays NumPy's in both (its SIMD loop; Numba's scalar one rounds differently
in the last bit), so both give identical results.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .jit import njit

__all__ = ["leaky_relu_numpy", "leaky_relu_backward_numpy", "leaky_relu_numba",
           "leaky_relu_backward_numba", "elu_numpy", "elu_backward_numpy", "elu_numba",
           "elu_backward_numba"]


def leaky_relu_numpy(x, slope):
    """``x`` where x > 0, else ``slope * x``; ``slope`` has the dtype of ``x``."""
    return np.where(x > 0, x, x * slope)


def leaky_relu_backward_numpy(dout, x, slope):
    """``dout`` where x > 0, else ``slope * dout``."""
    return np.where(x > 0, dout, dout * slope)


def elu_numpy(x, alpha):
    """``x`` where x > 0, else ``alpha * expm1(x)``; ``alpha`` has the dtype of ``x``."""
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


def elu_backward_numpy(dout, x, out, alpha):
    """``dout`` where x > 0, else ``dout * (out + alpha)`` (``out``: the forward's)."""
    return np.where(x > 0, dout, dout * (out + alpha))


def leaky_relu_numba(x, slope):
    """Numba version of :func:`leaky_relu_numpy`."""
    return _leaky(np.ascontiguousarray(x).reshape(-1), x.dtype.type(slope)).reshape(x.shape)


def leaky_relu_backward_numba(dout, x, slope):
    """Numba version of :func:`leaky_relu_backward_numpy`."""
    return _leaky_backward(np.ascontiguousarray(dout).reshape(-1),
                           np.ascontiguousarray(x).reshape(-1),
                           x.dtype.type(slope)).reshape(x.shape)


@njit(parallel=True, cache=True)
def _leaky(x, slope):
    out = np.empty_like(x)
    for i in prange(x.size):
        out[i] = x[i] if x[i] > 0 else x[i] * slope
    return out


@njit(parallel=True, cache=True)
def _leaky_backward(dout, x, slope):
    dx = np.empty_like(dout)
    for i in prange(x.size):
        dx[i] = dout[i] if x[i] > 0 else dout[i] * slope
    return dx


def elu_numba(x, alpha):
    """Numba version of :func:`elu_numpy`."""
    x = np.ascontiguousarray(x)
    negative = np.expm1(np.minimum(x, 0)).reshape(-1)
    return _elu(x.reshape(-1), negative, x.dtype.type(alpha)).reshape(x.shape)


def elu_backward_numba(dout, x, out, alpha):
    """Numba version of :func:`elu_backward_numpy`."""
    flat = [np.ascontiguousarray(a).reshape(-1) for a in (dout, x, out)]
    return _elu_backward(*flat, x.dtype.type(alpha)).reshape(x.shape)


@njit(parallel=True, cache=True)
def _elu(x, expm1_of_negative, alpha):
    out = np.empty_like(x)
    for i in prange(x.size):
        out[i] = x[i] if x[i] > 0 else alpha * expm1_of_negative[i]
    return out


@njit(parallel=True, cache=True)
def _elu_backward(dout, x, out, alpha):
    dx = np.empty_like(dout)
    for i in prange(x.size):
        dx[i] = dout[i] if x[i] > 0 else dout[i] * (out[i] + alpha)
    return dx
