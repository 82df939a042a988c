"""1-D and 2-D convolution as im2col (or its channels-last twin im2row) followed by one
GEMM."""

from __future__ import annotations

import numpy as np

from .. import kernels
from .._validate import flag, int_tuple, integer
from ..backends.modes import Kind
from ._args import spatial_window
from .layer import Layer

__all__ = ["Conv1D", "Conv2D"]


class _Conv(Layer):
    """Shared implementation of :class:`Conv1D` and :class:`Conv2D`.

    Input (N, C_in, *S) with S = (L,) or (H, W); weight (C_out, C_in, *K);
    output (N, C_out, *S_out). A 1-D input is treated as a 2-D one of height 1.

    Attributes
    ----------
    channels_last : bool
        True when the width stride is above 1: the layer then builds its patches with
        im2row instead of im2col (see Notes).

    Notes
    -----
    With ``cols = im2col(x)`` of shape (C_in * prod(K), N * prod(S_out)) and
    ``W2 = weight.reshape(C_out, -1)``: ``out = W2 cols + b``, and backward
    ``dW2 = dout2 cols^T``, ``db = sum dout``, ``dx = col2im(W2^T dout2)``, where
    ``dout2`` is ``dout`` as (C_out, N * prod(S_out)).

    A layer whose width stride is above 1 (:attr:`channels_last`) uses the row matrix
    ``rows = im2row(x)`` of shape (N * prod(S_out), prod(K) * C_in) instead, with the
    weight's columns ordered to match (``W2 = weight`` moved to (C_out, *K, C_in)):
    ``out = (rows W2^T)^T + b``, ``dW2 = dout2 rows``, ``dx = row2im(dout2^T W2)``.
    im2col gathers single values at such a stride while im2row copies runs of
    ``K_w * C_in``: building the patches of the reference convnet's second convolution
    is 2.8x faster, and its forward GEMM, computed with output shape
    (N * prod(S_out), C_out), 15% faster. The two layouts sum each output in a
    different order, so they round differently.

    The batch is processed in chunks whose patches take about ``chunk_bytes``, so
    that they are still in cache when the GEMM reads them (25% faster for the
    reference convnet's second convolution than one 31 MB column matrix).
    """

    kind = Kind.CONV
    dims = 2
    chunk_bytes = 1 << 22

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, bias=True):
        super().__init__()
        owner, n = type(self).__name__, self.dims
        self.in_channels = integer(in_channels, "in_channels", owner)
        self.out_channels = integer(out_channels, "out_channels", owner)
        self.kernel_size = int_tuple(kernel_size, n, "kernel_size", owner)
        self.stride = int_tuple(stride, n, "stride", owner)
        self.dilation = int_tuple(dilation, n, "dilation", owner)
        if isinstance(padding, str) and padding != "same":
            raise ValueError(f"{owner}: padding must be 'same', an int >= 0 or {n} of them, "
                             f"got {padding!r}")
        if padding == "same":
            if self.stride != (1,) * n:
                raise ValueError(f"{owner}: padding='same' needs stride 1, got {self.stride}")
            self.padding = "same"
        else:
            self.padding = int_tuple(padding, n, "padding", owner, minimum=0)
        self.bias = flag(bias, "bias", owner)
        self.window = spatial_window(n, self.kernel_size, self.stride, self.padding,
                                     self.dilation)
        self.channels_last = self.stride[-1] > 1
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

    def _chunks(self, shape4, itemsize):
        """Slices of a batch of 4-D shape ``shape4``, each with about ``chunk_bytes``
        of columns."""
        taps = self.in_channels * int(np.prod(self.kernel_size))
        per_sample = taps * int(np.prod(self.window.output_size(*shape4[2:]))) * itemsize
        step = max(1, self.chunk_bytes // per_sample)
        return [slice(start, start + step) for start in range(0, shape4[0], step)]

    def _weight_matrix(self):
        """The weight as W2 of shape (C_out, prod(K) * C_in), columns in the order of
        the patches (see Notes)."""
        weight = self.params["weight"]
        o = self.out_channels
        if not self.channels_last:
            return weight.reshape(o, -1)
        kernel4 = weight.reshape(o, self.in_channels, *self.window.kernel)
        return kernel4.transpose(0, 2, 3, 1).reshape(o, -1)

    def _weight_grad(self, dw2):
        """Inverse of :meth:`_weight_matrix` for the gradient."""
        if not self.channels_last:
            return dw2.reshape(self.params["weight"].shape)
        dw4 = dw2.reshape(self.out_channels, *self.window.kernel, self.in_channels)
        return np.ascontiguousarray(dw4.transpose(0, 3, 1, 2)).reshape(self.params["weight"].shape)

    def _forward(self, x):
        x4 = _as_4d(x)
        n, o = x.shape[0], self.out_channels
        out_size = self.window.output_size(*x4.shape[2:])
        length = out_size[0] * out_size[1]
        w2 = self._weight_matrix()
        out = np.empty((n, o, length), dtype=x.dtype)
        bias = self.params["bias"] if self.bias else np.zeros(o, x.dtype)
        patches = []
        for chunk in self._chunks(x4.shape, x4.itemsize):
            if self.channels_last:
                patches.append(kernels.im2row(x4[chunk], self.window))
                res = kernels.matmul(patches[-1], w2.T).reshape(-1, length, o)
            else:
                patches.append(kernels.im2col(x4[chunk], self.window))
                res = kernels.matmul(w2, patches[-1]).reshape(o, -1, length)
            kernels.add_bias_nchw(res, bias, out[chunk], self.channels_last)
        return out.reshape(n, o, *out_size[2 - self.dims:]), (x.shape, patches)

    def _backward(self, dout, cache):
        x_shape, patches = cache
        x4_shape = _as_4d_shape(x_shape)
        n, o = dout.shape[:2]
        w2 = self._weight_matrix()
        dout3 = dout.reshape(n, o, -1)
        dw2 = np.zeros_like(w2)
        dx = np.empty(x4_shape, dtype=dout.dtype) if self._input_grad else None
        for chunk, chunk_patches in zip(self._chunks(x4_shape, dout.itemsize), patches):
            dout2 = dout3[chunk].transpose(1, 0, 2).reshape(o, -1)
            if self.channels_last:
                dw2 += kernels.matmul(dout2, chunk_patches)
                if dx is not None:
                    dpatches = kernels.matmul(dout2.T, w2)
                    dx[chunk] = kernels.row2im(dpatches, dx[chunk].shape, self.window)
            else:
                dw2 += kernels.matmul(dout2, chunk_patches.T)
                if dx is not None:
                    dpatches = kernels.matmul(w2.T, dout2)
                    dx[chunk] = kernels.col2im(dpatches, dx[chunk].shape, self.window)
        grads = {"weight": self._weight_grad(dw2)}
        if self.bias:
            grads["bias"] = dout3.sum(axis=(0, 2))
        return (None if dx is None else dx.reshape(x_shape)), grads


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
