"""1-D and 2-D convolution as im2col (or its channels-last twin im2row) followed by one
GEMM per group of channels."""

from __future__ import annotations

import math

import numpy as np

from .. import kernels
from .._validate import flag, int_tuple, integer
from ..backends.modes import Kind
from ..kernels.workspace import scratch
from ._args import conv_groups, spatial_window
from .layer import Layer

__all__ = ["Conv1D", "Conv2D"]


class _Conv(Layer):
    """Shared implementation of :class:`Conv1D` and :class:`Conv2D`.

    Input (N, C_in, *S) with S = (L,) or (H, W); weight (C_out, C_in / G, *K) for
    G = ``groups``; output (N, C_out, *S_out). A 1-D input is treated as a 2-D one of
    height 1.

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

    With G groups, input channels ``g C_in / G ... (g + 1) C_in / G - 1`` feed only
    output channels ``g C_out / G ... (g + 1) C_out / G - 1``, as in PyTorch. The
    patches are built once for all channels; group ``g`` then takes its rows of ``W2``
    (of shape (C_out, prod(K) * C_in / G)), of ``dout2`` and of ``dW2``, and its
    channels of the patches (a contiguous block of rows of ``cols``; of ``rows``, the
    C_in / G columns from ``g C_in / G`` on in each tap's run of C_in, taken as a
    copy), and runs the GEMMs above on them: one GEMM per group, whose products are
    joined along the channels. The patch gradients are joined the same way before the
    single col2im or row2im. With G = 1 this is the single GEMM, on the very same
    arrays.

    The batch is processed in chunks whose patches take about ``chunk_bytes``, so
    that they are still in cache when the GEMM reads them (25% faster for the
    reference convnet's second convolution than one 31 MB column matrix). For the
    same reason the patches are not kept for backward: backward builds each chunk's
    patches again from the input, just before the weight gradient reads them, in
    scratch memory reused from chunk to chunk (:mod:`varshift.kernels.workspace`). The
    layer then keeps only its input between forward and backward (the patches of a
    5x5 convolution at stride 2 are about six times larger), and the reference
    convnet's training step was 5% faster on an Intel Xeon (the benchmark journal,
    2026-12-07, fifth session); the results are the same bit for bit.
    """

    kind = Kind.CONV
    dims = 2
    chunk_bytes = 1 << 22

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, bias=True, groups=1):
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
        if isinstance(padding, str):  # 'same'
            if self.stride != (1,) * n:
                raise ValueError(f"{owner}: padding='same' needs stride 1, got {self.stride}")
            self.padding = "same"
        else:
            self.padding = int_tuple(padding, n, "padding", owner, minimum=0)
        self.bias = flag(bias, "bias", owner)
        self.groups = conv_groups(groups, self.in_channels, self.out_channels, owner)
        self.window = spatial_window(n, self.kernel_size, self.stride, self.padding,
                                     self.dilation)
        self.channels_last = self.stride[-1] > 1
        shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        self.params["weight"] = np.zeros(shape, self.dtype)
        if self.bias:
            self.params["bias"] = np.zeros(self.out_channels, self.dtype)
        self._initialize(np.random.default_rng())

    def _initialize(self, rng):
        # 1 / sqrt(fan_in), as PyTorch: each output sees C_in / G input channels
        bound = 1.0 / np.sqrt(self.in_channels // self.groups * np.prod(self.kernel_size))
        for value in self.params.values():
            value[...] = rng.uniform(-bound, bound, value.shape)

    def _check_input(self, x):
        self._expect(x, (self.dims + 2,), self.in_channels)
        if min(self.window.output_size(*_as_4d(x).shape[2:])) < 1:
            raise ValueError(
                f"{self.describe()}: input of spatial size {x.shape[2:]} is smaller "
                f"than the dilated kernel {self.kernel_size} with padding {self.padding}"
            )

    def _patch_size(self, shape4):
        """``(taps, positions)``: a patch's values and the patches of one sample of
        4-D shape ``shape4``."""
        return (self.in_channels * math.prod(self.kernel_size),
                math.prod(self.window.output_size(*shape4[2:])))

    def _chunks(self, shape4, itemsize):
        """Slices of a batch of 4-D shape ``shape4``, each with about ``chunk_bytes``
        of columns."""
        per_sample = math.prod(self._patch_size(shape4)) * itemsize
        step = max(1, self.chunk_bytes // per_sample)
        return [slice(start, start + step) for start in range(0, shape4[0], step)]

    def _weight_matrix(self):
        """The weight as W2 of shape (C_out, prod(K) * C_in / G), columns in the order
        of the patches (see Notes)."""
        weight = self.params["weight"]
        o = self.out_channels
        if not self.channels_last:
            return weight.reshape(o, -1)
        kernel4 = weight.reshape(o, self.in_channels // self.groups, *self.window.kernel)
        return kernel4.transpose(0, 2, 3, 1).reshape(o, -1)

    def _weight_grad(self, dw2):
        """Inverse of :meth:`_weight_matrix` for the gradient."""
        if not self.channels_last:
            return dw2.reshape(self.params["weight"].shape)
        dw4 = dw2.reshape(self.out_channels, *self.window.kernel,
                          self.in_channels // self.groups)
        return np.ascontiguousarray(dw4.transpose(0, 3, 1, 2)).reshape(self.params["weight"].shape)

    def _out_rows(self, g):
        """The rows of ``W2``, ``dout2`` and ``dW2`` (output channels) of group ``g``."""
        per_group = self.out_channels // self.groups
        return slice(g * per_group, (g + 1) * per_group)

    def _group_patches(self, patches, g):
        """Group ``g``'s channels of a chunk's ``cols`` or ``rows`` (see Notes): the
        patches themselves when there is one group."""
        if self.groups == 1:
            return patches
        per_group = self.in_channels // self.groups
        if not self.channels_last:
            taps = per_group * self.window.kernel[0] * self.window.kernel[1]
            return patches[g * taps:(g + 1) * taps]
        m = patches.shape[0]
        by_channel = patches.reshape(m, -1, self.groups, per_group)
        return np.ascontiguousarray(by_channel[:, :, g]).reshape(m, -1)

    def _join_patches(self, group_patches):
        """The inverse of :meth:`_group_patches`: a chunk's ``cols`` or ``rows`` from
        each group's."""
        if self.groups == 1:
            return group_patches[0]
        if not self.channels_last:
            return np.concatenate(group_patches, axis=0)
        m = group_patches[0].shape[0]
        per_group = self.in_channels // self.groups
        by_channel = [p.reshape(m, -1, per_group) for p in group_patches]
        return np.stack(by_channel, axis=2).reshape(m, -1)

    def _product(self, w2, patches):
        """The convolution's GEMM, one per group: ``W2 cols`` of shape (C_out, M), or
        ``rows W2^T`` of shape (M, C_out) for :attr:`channels_last`."""
        if self.channels_last:
            parts = [kernels.matmul(self._group_patches(patches, g), w2[self._out_rows(g)].T)
                     for g in range(self.groups)]
        else:
            parts = [kernels.matmul(w2[self._out_rows(g)], self._group_patches(patches, g))
                     for g in range(self.groups)]
        return parts[0] if self.groups == 1 else np.concatenate(parts, axis=int(self.channels_last))

    def _patches(self, x4):
        """A chunk's ``rows`` (:attr:`channels_last`) or ``cols`` (see Notes), in this
        thread's scratch memory: valid until the next chunk's."""
        taps, positions = self._patch_size(x4.shape)
        length = positions * x4.shape[0]
        if self.channels_last:
            out = scratch("patches", (length, taps), x4.dtype)
            return kernels.im2row(x4, self.window, out)
        out = scratch("patches", (taps, length), x4.dtype)
        return kernels.im2col(x4, self.window, 0.0, out)

    def _forward(self, x):
        x4 = _as_4d(x)
        n, o = x.shape[0], self.out_channels
        out_size = self.window.output_size(*x4.shape[2:])
        length = out_size[0] * out_size[1]
        w2 = self._weight_matrix()
        out = np.empty((n, o, length), dtype=x.dtype)
        bias = self.params["bias"] if self.bias else np.zeros(o, x.dtype)
        for chunk in self._chunks(x4.shape, x4.itemsize):
            res = self._product(w2, self._patches(x4[chunk]))
            res = res.reshape(-1, length, o) if self.channels_last else res.reshape(o, -1, length)
            kernels.add_bias_nchw(res, bias, out[chunk], self.channels_last)
        return out.reshape(n, o, *out_size[2 - self.dims:]), (x.shape, x4)

    def _backward(self, dout, cache):
        x_shape, x4 = cache
        x4_shape = x4.shape
        n, o = dout.shape[:2]
        w2 = self._weight_matrix()
        dout3 = dout.reshape(n, o, -1)
        dw2 = np.zeros_like(w2)
        dx = np.empty(x4_shape, dtype=dout.dtype) if self._input_grad else None
        for chunk in self._chunks(x4_shape, dout.itemsize):
            chunk_patches = self._patches(x4[chunk])
            dout2 = dout3[chunk].transpose(1, 0, 2).reshape(o, -1)
            group_dpatches = []
            for g in range(self.groups):
                rows, patches_g = self._out_rows(g), self._group_patches(chunk_patches, g)
                if self.channels_last:
                    dw2[rows] += kernels.matmul(dout2[rows], patches_g)
                    if dx is not None:
                        group_dpatches.append(kernels.matmul(dout2[rows].T, w2[rows]))
                else:
                    dw2[rows] += kernels.matmul(dout2[rows], patches_g.T)
                    if dx is not None:
                        group_dpatches.append(kernels.matmul(w2[rows].T, dout2[rows]))
            if dx is not None:
                dpatches = self._join_patches(group_dpatches)
                scatter = kernels.row2im if self.channels_last else kernels.col2im
                dx[chunk] = scatter(dpatches, dx[chunk].shape, self.window)
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
    groups : int, default 1
        Number of channel groups G, dividing ``in_channels`` and ``out_channels``:
        each output channel sees only the C_in / G input channels of its group
        (``groups=in_channels`` is a depthwise convolution), as PyTorch's ``groups``.

    Notes
    -----
    Input (N, C_in, L), weight (C_out, C_in / G, K), output (N, C_out, L_out) with
    ``L_out = floor((L + 2 pad - dil (K - 1) - 1) / stride) + 1`` and
    ``out[n, o, l] = b[o] + sum_{c, k} W[o, c, k] x[n, g C_in / G + c, l stride + k dil - pad]``
    where ``g = o // (C_out / G)`` is the group of output ``o``.
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
    groups : int, default 1
        Number of channel groups, as in :class:`Conv1D`.

    Notes
    -----
    Input (N, C_in, H, W), weight (C_out, C_in / G, KH, KW), output (N, C_out, H_out,
    W_out), each output size as in :class:`Conv1D`, and
    ``out[n, o, h, w] = b[o] + sum_{c, i, j} W[o, c, i, j]
    x[n, g C_in / G + c, h sh + i dh - ph, w sw + j dw - pw]`` with ``g`` the group of
    output ``o`` (see :class:`Conv1D`).
    """

    dims = 2
