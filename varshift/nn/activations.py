"""Element-wise activations. Each caches what its derivative needs."""

from __future__ import annotations

import numpy as np

from .. import kernels
from .._validate import real
from ..backends.modes import Kind
from .layer import Layer

__all__ = ["ReLU", "LeakyReLU", "ELU", "Tanh", "Sigmoid", "Identity"]


class _Activation(Layer):
    kind = Kind.ACTIVATION


class LeakyReLU(_Activation):
    """``x`` for x > 0, else ``negative_slope * x``; derivative 1 or ``negative_slope``.

    Parameters
    ----------
    negative_slope : float, default 0.01
    """

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = real(negative_slope, "negative_slope", type(self).__name__)

    def _forward(self, x):
        return kernels.leaky_relu(x, self.negative_slope), x

    def _backward(self, dout, x):
        return kernels.leaky_relu_backward(dout, x, self.negative_slope), {}


class ReLU(LeakyReLU):
    """``max(x, 0)``: a :class:`LeakyReLU` with slope 0."""

    def __init__(self):
        super().__init__(0.0)


class ELU(_Activation):
    """``x`` for x > 0, else ``alpha * (exp(x) - 1)``; derivative there ``out + alpha``.

    Parameters
    ----------
    alpha : float > 0, default 1.0
    """

    def __init__(self, alpha=1.0):
        super().__init__()
        self.alpha = real(alpha, "alpha", "ELU", 0, low_open=True)

    def _forward(self, x):
        out = kernels.elu(x, self.alpha)
        return out, (x, out)

    def _backward(self, dout, cache):
        x, out = cache
        return kernels.elu_backward(dout, x, out, self.alpha), {}


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
