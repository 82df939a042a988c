"""Pooling and reshaping layers: max and average pooling, global average pooling,
flatten.

Max and average pooling view (N, C, *S) as N * C single-channel images, build their
window columns with the same im2col as convolution, and reduce over the window.
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from ._args import int_tuple, spatial_window
from .conv import _as_4d
from .layer import Layer

__all__ = ["MaxPool1D", "MaxPool2D", "AvgPool1D", "AvgPool2D", "GlobalAvgPool", "Flatten"]


class _Pool(Layer):
    """Shared implementation of the windowed pooling layers.

    Parameters
    ----------
    kernel_size : int or tuple of int
    stride : int or tuple of int, optional
        Defaults to ``kernel_size``.
    padding : int or tuple of int, default 0
        At most half the kernel, as in PyTorch; max pooling pads with -inf, average
        pooling with zeros that count in the mean (PyTorch's ``count_include_pad``).
    """

    kind = "pool"
    dims = 2
    pad_value = 0.0

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        owner, n = type(self).__name__, self.dims
        self.kernel_size = int_tuple(kernel_size, n, "kernel_size", owner)
        self.stride = self.kernel_size if stride is None else int_tuple(stride, n, "stride", owner)
        self.padding = int_tuple(padding, n, "padding", owner, minimum=0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(
                f"{owner}: padding {self.padding} must be at most half the kernel "
                f"{self.kernel_size}"
            )
        self.window = spatial_window(n, self.kernel_size, self.stride, self.padding, (1,) * n)

    def _check_input(self, x):
        self._expect(x, (self.dims + 2,))
        if min(self.window.output_size(*_as_4d(x).shape[2:])) < 1:
            raise ValueError(
                f"{self.describe()}: input of spatial size {x.shape[2:]} is smaller "
                f"than the kernel {self.kernel_size}"
            )

    def _forward(self, x):
        n, c = x.shape[:2]
        x4 = _as_4d(x)
        planes = x4.reshape(n * c, 1, *x4.shape[2:])
        cols = kernels.im2col(planes, self.window, self.pad_value)
        out, cache = self._reduce(cols)
        out_size = self.window.output_size(*x4.shape[2:])[2 - self.dims:]
        return out.reshape(n, c, *out_size), (x.shape, planes.shape, cols.shape, cache)

    def _backward(self, dout, cache):
        x_shape, planes_shape, cols_shape, reduce_cache = cache
        dcols = self._expand(dout.reshape(-1), cols_shape, reduce_cache)
        return kernels.col2im(dcols, planes_shape, self.window).reshape(x_shape), {}


class _MaxPool(_Pool):
    pad_value = -np.inf

    def _reduce(self, cols):
        argmax = cols.argmax(axis=0)
        return np.take_along_axis(cols, argmax[None], axis=0)[0], argmax

    def _expand(self, dout, cols_shape, argmax):
        dcols = np.zeros(cols_shape, dtype=dout.dtype)
        np.put_along_axis(dcols, argmax[None], dout[None], axis=0)
        return dcols


class _AvgPool(_Pool):
    def _reduce(self, cols):
        return cols.mean(axis=0), None

    def _expand(self, dout, cols_shape, _):
        return np.broadcast_to(dout / cols_shape[0], cols_shape)


class MaxPool1D(_MaxPool):
    """1-D max pooling: (N, C, L) -> (N, C, L_out); see :class:`_Pool` for arguments.

    Notes
    -----
    The gradient flows to the first maximum of each window.
    """

    dims = 1


class MaxPool2D(_MaxPool):
    """2-D max pooling: (N, C, H, W) -> (N, C, H_out, W_out); see :class:`_Pool`.

    Notes
    -----
    The gradient flows to the first maximum of each window.
    """


class AvgPool1D(_AvgPool):
    """1-D average pooling: (N, C, L) -> (N, C, L_out); see :class:`_Pool`."""

    dims = 1


class AvgPool2D(_AvgPool):
    """2-D average pooling: (N, C, H, W) -> (N, C, H_out, W_out); see :class:`_Pool`."""


class GlobalAvgPool(Layer):
    """Mean over every spatial axis: (N, C, *S) -> (N, C).

    Notes
    -----
    Backward spreads ``dout / prod(S)`` evenly over the spatial positions.
    """

    kind = "pool"

    def _check_input(self, x):
        self._expect(x, (3, 4))

    def _forward(self, x):
        return x.mean(axis=tuple(range(2, x.ndim))), x.shape

    def _backward(self, dout, shape):
        size = int(np.prod(shape[2:]))
        return np.broadcast_to((dout / size).reshape(*dout.shape, *(1,) * (len(shape) - 2)),
                               shape).copy(), {}


class Flatten(Layer):
    """Reshape (N, *D) to (N, prod(D)) in C order (as PyTorch's ``nn.Flatten``)."""

    kind = "reshape"

    def _check_input(self, x):
        if x.ndim < 2:
            raise ValueError(f"{self.describe()}: expected input of shape (N, ...), got {x.shape}")

    def _forward(self, x):
        return x.reshape(x.shape[0], -1), x.shape

    def _backward(self, dout, shape):
        return dout.reshape(shape), {}
