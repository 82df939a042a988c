"""Fully connected layer."""

from __future__ import annotations

import numpy as np

from .. import kernels
from .._validate import flag, integer
from ..backends.modes import Kind
from .layer import Layer

__all__ = ["Dense"]


class Dense(Layer):
    """Affine map ``out = x W^T + b``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool, default True

    Attributes
    ----------
    params : dict
        ``weight`` of shape (out_features, in_features) and ``bias`` of shape
        (out_features,), both drawn from U(-1/sqrt(in_features), 1/sqrt(in_features)),
        PyTorch's default.

    Notes
    -----
    Input (N, in_features), output (N, out_features). Backward:
    ``dW = dout^T x``, ``db = sum_n dout``, ``dx = dout W``.
    """

    kind = Kind.DENSE

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features = integer(in_features, "in_features", "Dense")
        self.out_features = integer(out_features, "out_features", "Dense")
        self.bias = flag(bias, "bias", "Dense")
        self.params["weight"] = np.zeros((self.out_features, self.in_features), self.dtype)
        if self.bias:
            self.params["bias"] = np.zeros(self.out_features, self.dtype)
        self._initialize(np.random.default_rng())

    def _initialize(self, rng):
        bound = 1.0 / np.sqrt(self.in_features)
        for value in self.params.values():
            value[...] = rng.uniform(-bound, bound, value.shape)

    def _check_input(self, x):
        self._expect(x, (2,), self.in_features)

    def _forward(self, x):
        out = kernels.matmul(x, self.params["weight"].T)
        if self.bias:
            out += self.params["bias"]
        return out, x

    def _backward(self, dout, x):
        grads = {"weight": kernels.matmul(dout.T, x)}
        if self.bias:
            grads["bias"] = dout.sum(axis=0)
        dx = kernels.matmul(dout, self.params["weight"]) if self._input_grad else None
        return dx, grads
