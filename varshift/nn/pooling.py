"""Pooling and reshaping layers: max and average pooling, global average pooling,
flatten.

Max and average pooling view ``(N, C, *S)`` as one image with N * C channels, build its
window columns with the same im2col as convolution, and reduce over the window.
"""

from __future__ import annotations

import math

import numpy as np

from .. import kernels
from .._validate import int_tuple
from ..backends.modes import Kind
from ._args import spatial_window
from .conv import _as_4d, _as_4d_shape
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

    kind = Kind.POOL
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
        image = x4.reshape(1, n * c, *x4.shape[2:])
        out_size = self.window.output_size(*x4.shape[2:])
        # rows of cols are (plane, tap); as (N * C, taps, positions) the window is axis 1
        cols = kernels.im2col(image, self.window, self.pad_value)
        windows = cols.reshape(n * c, -1, out_size[0] * out_size[1])
        out, cache = self._reduce(windows)
        return out.reshape(n, c, *out_size[2 - self.dims:]), (x.shape, windows.shape, cache)

    def _backward(self, dout, cache):
        x_shape, windows_shape, reduce_cache = cache
        n, c = x_shape[:2]
        dwindows = self._expand(dout.reshape(n * c, 1, -1), windows_shape, reduce_cache)
        image_shape = (1, n * c, *_as_4d_shape(x_shape)[2:])
        dx = kernels.col2im(dwindows.reshape(-1, windows_shape[2]), image_shape, self.window)
        return dx.reshape(x_shape), {}


class _MaxPool(_Pool):
    pad_value = -np.inf

    def _reduce(self, windows):
        return kernels.max_windows(windows)

    def _expand(self, dout, windows_shape, argmax):
        return kernels.max_windows_backward(dout, argmax, windows_shape[1])


class _AvgPool(_Pool):
    def _reduce(self, windows):
        return windows.mean(axis=1), None

    def _expand(self, dout, windows_shape, _):
        return np.broadcast_to(dout / windows_shape[1], windows_shape)


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
    """Mean over every spatial axis: ``(N, C, *S) -> (N, C)``.

    Notes
    -----
    Backward spreads ``dout / prod(S)`` evenly over the spatial positions.
    """

    kind = Kind.POOL

    def _check_input(self, x):
        self._expect(x, (3, 4))

    def _forward(self, x):
        return x.mean(axis=tuple(range(2, x.ndim))), x.shape

    def _backward(self, dout, shape):
        size = math.prod(shape[2:])
        return np.broadcast_to((dout / size).reshape(*dout.shape, *(1,) * (len(shape) - 2)),
                               shape).copy(), {}


class Flatten(Layer):
    """Reshape ``(N, *D)`` to ``(N, prod(D))`` in C order (as PyTorch's ``nn.Flatten``)."""

    kind = Kind.RESHAPE

    def _check_input(self, x):
        if x.ndim < 2:
            raise ValueError(f"{self.describe()}: expected input of shape (N, ...), got {x.shape}")

    def _forward(self, x):
        return x.reshape(x.shape[0], -1), x.shape

    def _backward(self, dout, shape):
        return dout.reshape(shape), {}
