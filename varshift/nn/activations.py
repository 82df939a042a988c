"""Element-wise activations. Each caches what its derivative needs."""

from __future__ import annotations

import numbers

import numpy as np

from .layer import Layer

__all__ = ["ReLU", "LeakyReLU", "ELU", "Tanh", "Sigmoid", "Identity"]


class _Activation(Layer):
    kind = "activation"


class ReLU(_Activation):
    """``max(x, 0)``; derivative 1 for x > 0, else 0."""

    def _forward(self, x):
        return np.maximum(x, 0), x > 0

    def _backward(self, dout, positive):
        return dout * positive, {}


class LeakyReLU(_Activation):
    """``x`` for x > 0, else ``negative_slope * x``.

    Parameters
    ----------
    negative_slope : float, default 0.01
    """

    def __init__(self, negative_slope=0.01):
        super().__init__()
        if not isinstance(negative_slope, numbers.Real):
            raise ValueError(f"LeakyReLU: negative_slope must be a float, got {negative_slope!r}")
        self.negative_slope = float(negative_slope)

    def _forward(self, x):
        positive = x > 0
        return np.where(positive, x, x * self.dtype.type(self.negative_slope)), positive

    def _backward(self, dout, positive):
        return np.where(positive, dout, dout * self.dtype.type(self.negative_slope)), {}


class ELU(_Activation):
    """``x`` for x > 0, else ``alpha * (exp(x) - 1)``; derivative there ``out + alpha``.

    Parameters
    ----------
    alpha : float > 0, default 1.0
    """

    def __init__(self, alpha=1.0):
        super().__init__()
        if not isinstance(alpha, numbers.Real) or not alpha > 0:
            raise ValueError(f"ELU: alpha must be a positive float, got {alpha!r}")
        self.alpha = float(alpha)

    def _forward(self, x):
        alpha = self.dtype.type(self.alpha)
        out = np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))
        return out, (x > 0, out)

    def _backward(self, dout, cache):
        positive, out = cache
        return np.where(positive, dout, dout * (out + self.dtype.type(self.alpha))), {}


class Tanh(_Activation):
    """``tanh(x)``; derivative ``1 - out^2``."""

    def _forward(self, x):
        out = np.tanh(x)
        return out, out

    def _backward(self, dout, out):
        return dout * (1 - out * out), {}


class Sigmoid(_Activation):
    """``1 / (1 + exp(-x))``; derivative ``out (1 - out)``."""

    def _forward(self, x):
        out = 0.5 * (1 + np.tanh(0.5 * x))  # overflow-free logistic
        return out, out

    def _backward(self, dout, out):
        return dout * out * (1 - out), {}


class Identity(_Activation):
    """``x`` unchanged."""

    def _forward(self, x):
        return x, None

    def _backward(self, dout, _):
        return dout, {}
