"""1-D and 2-D convolution as im2col followed by one GEMM."""

from __future__ import annotations

import numpy as np

from .. import kernels
from ._args import int_tuple, positive_int, spatial_window
from .layer import Layer

__all__ = ["Conv1D", "Conv2D"]


class _Conv(Layer):
    """Shared implementation of :class:`Conv1D` and :class:`Conv2D`.

    Input (N, C_in, *S) with S = (L,) or (H, W); weight (C_out, C_in, *K);
    output (N, C_out, *S_out). A 1-D input is treated as a 2-D one of height 1.

    Notes
    -----
    With ``cols = im2col(x)`` of shape (C_in * prod(K), N * prod(S_out)) and
    ``W2 = weight.reshape(C_out, -1)``: ``out = W2 cols + b``, and backward
    ``dW2 = dout2 cols^T``, ``db = sum dout``, ``dx = col2im(W2^T dout2)``, where
    ``dout2`` is ``dout`` as (C_out, N * prod(S_out)).
    """

    kind = "conv"
    dims = 2

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, bias=True):
        super().__init__()
        owner, n = type(self).__name__, self.dims
        self.in_channels = positive_int(in_channels, "in_channels", owner)
        self.out_channels = positive_int(out_channels, "out_channels", owner)
        self.kernel_size = int_tuple(kernel_size, n, "kernel_size", owner)
        self.stride = int_tuple(stride, n, "stride", owner)
        self.dilation = int_tuple(dilation, n, "dilation", owner)
        if padding == "same":
            if self.stride != (1,) * n:
                raise ValueError(f"{owner}: padding='same' needs stride 1, got {self.stride}")
            self.padding = "same"
        else:
            self.padding = int_tuple(padding, n, "padding", owner, minimum=0)
        self.bias = bool(bias)
        self.window = spatial_window(n, self.kernel_size, self.stride, self.padding,
                                     self.dilation)
        shape = (self.out_channels, self.in_channels, *self.kernel_size)
        self.params["weight"] = np.zeros(shape, self.dtype)
        if self.bias:
            self.params["bias"] = np.zeros(self.out_channels, self.dtype)
        self._initialize(np.random.default_rng())

    def _initialize(self, rng):
        bound = 1.0 / np.sqrt(self.in_channels * np.prod(self.kernel_size))
        for value in self.params.values():
            value[...] = rng.uniform(-bound, bound, value.shape)

    def _check_input(self, x):
        self._expect(x, (self.dims + 2,), self.in_channels)
        if min(self.window.output_size(*_as_4d(x).shape[2:])) < 1:
            raise ValueError(
                f"{self.describe()}: input of spatial size {x.shape[2:]} is smaller "
                f"than the dilated kernel {self.kernel_size} with padding {self.padding}"
            )

    def _forward(self, x):
        x4 = _as_4d(x)
        n = x.shape[0]
        out_size = self.window.output_size(*x4.shape[2:])
        cols = kernels.im2col(x4, self.window)
        res = kernels.matmul(self.params["weight"].reshape(self.out_channels, -1), cols)
        res = res.reshape(self.out_channels, n, -1).transpose(1, 0, 2)
        out = np.empty(res.shape, dtype=res.dtype)
        if self.bias:
            np.add(res, self.params["bias"][:, None], out=out)
        else:
            out[...] = res
        return out.reshape(n, self.out_channels, *out_size[2 - self.dims:]), (x.shape, cols)

    def _backward(self, dout, cache):
        x_shape, cols = cache
        weight = self.params["weight"]
        n = dout.shape[0]
        dout2 = dout.reshape(n, self.out_channels, -1).transpose(1, 0, 2).reshape(
            self.out_channels, -1)
        grads = {"weight": kernels.matmul(dout2, cols.T)}
        if self.bias:
            grads["bias"] = dout2.sum(axis=1)
        dcols = kernels.matmul(weight.reshape(self.out_channels, -1).T, dout2)
        dx = kernels.col2im(dcols, _as_4d_shape(x_shape), self.window)
        return dx.reshape(x_shape), grads


def _as_4d_shape(shape):
    return shape if len(shape) == 4 else (shape[0], shape[1], 1, shape[2])


def _as_4d(x):
    """View (N, C, L) as (N, C, 1, L); leave (N, C, H, W) alone."""
    return x.reshape(_as_4d_shape(x.shape))


class Conv1D(_Conv):
    """1-D convolution (cross-correlation, as in PyTorch).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or tuple of int, shape (1,)
    stride, dilation : int, default 1
    padding : int or 'same', default 0
        Zeros added at both ends; ``'same'`` (stride 1 only) keeps the length.
    bias : bool, default True

    Notes
    -----
    Input (N, C_in, L), weight (C_out, C_in, K), output (N, C_out, L_out) with
    ``L_out = floor((L + 2 pad - dil (K - 1) - 1) / stride) + 1`` and
    ``out[n, o, l] = b[o] + sum_{c, k} W[o, c, k] x[n, c, l stride + k dil - pad]``.
    """

    dims = 1


class Conv2D(_Conv):
    """2-D convolution (cross-correlation, as in PyTorch).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or tuple of int, shape (2,)
    stride, dilation : int or tuple of int, shape (2,), default 1
    padding : int, tuple of int, shape (2,), or 'same', default 0
    bias : bool, default True

    Notes
    -----
    Input (N, C_in, H, W), weight (C_out, C_in, KH, KW), output (N, C_out, H_out,
    W_out), each output size as in :class:`Conv1D`, and
    ``out[n, o, h, w] = b[o] + sum_{c, i, j} W[o, c, i, j]
    x[n, c, h sh + i dh - ph, w sw + j dw - pw]``.
    """

    dims = 2
