"""Sliding windows: im2col and its adjoint col2im, for convolution and pooling, and
their channels-last twins im2row and row2im, for strided convolution.

A 2-D window geometry (kernel, stride, padding, dilation) turns an input of shape
(N, C, H, W) into a column matrix of shape (C * KH * KW, N * OH * OW): row
``(c * KH + i) * KW + j`` holds input channel ``c`` seen through kernel tap ``(i, j)``
at every output position. A convolution is then one GEMM ``W.reshape(O, -1) @ cols``
and a pooling a reduction over the rows of a single-channel view. 1-D layers use the
same kernels with H = 1.

im2row is the channels-last alternative: a row matrix of shape (N * OH * OW,
KH * KW * C) whose row ``(n * OH + p) * OW + q`` is the patch of output ``(p, q)`` of
sample ``n``, column ``(i * KW + j) * C + c``. Each patch is copied as KH runs of
KW * C contiguous values of a padded channels-last copy of the input, whatever the
stride, where im2col gathers single values at a stride > 1. row2im is its adjoint.

Two implementations are kept: ``*_numpy`` (strided slices, the readable reference and
test oracle) and ``*_numba`` (parallel over channels or samples, the default).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import prange

from . import workspace
from .jit import njit

__all__ = ["Window", "im2col_numpy", "col2im_numpy", "im2col_numba", "col2im_numba",
           "im2row_numpy", "row2im_numpy", "im2row_numba", "row2im_numba"]


@dataclass(frozen=True)
class Window:
    """Geometry of a 2-D sliding window.

    Attributes
    ----------
    kernel, stride, dilation : tuple of int, shape (2,)
        ``(h, w)`` pairs.
    padding : tuple of tuple of int, shape (2, 2)
        ``((top, bottom), (left, right))``; uneven only for ``padding='same'`` with an
        even kernel extent.
    """

    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))
    dilation: tuple[int, int] = (1, 1)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Output height and width for an input of ``height`` x ``width``.

        Notes
        -----
        ``out = floor((in + pad_before + pad_after - dil * (k - 1) - 1) / stride) + 1``
        per axis; a non-positive result means the window does not fit.
        """
        return tuple(  # type: ignore[return-value]
            (n + sum(p) - d * (k - 1) - 1) // s + 1
            for n, k, s, p, d in zip(
                (height, width), self.kernel, self.stride, self.padding, self.dilation
            )
        )

    @property
    def args(self) -> tuple[int, ...]:
        """The eight ints ``kh, kw, sh, sw, ph, pw, dh, dw`` the kernels take, where
        ``ph`` and ``pw`` are the top and left padding."""
        (top, _), (left, _) = self.padding
        return (*self.kernel, *self.stride, top, left, *self.dilation)


def _taps(k, dilation, stride, n_out):
    """Slice of a padded axis that tap ``k`` reads at the ``n_out`` outputs."""
    return slice(k * dilation, k * dilation + stride * (n_out - 1) + 1, stride)


def im2col_numpy(x, window: Window, pad_value=0.0, out=None):
    """Column matrix of ``x`` for ``window`` (NumPy reference).

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W)
    window : Window
    pad_value : float
        Value of the padding (0 for convolution and average pooling, -inf for max
        pooling).
    out : ndarray of shape (C * KH * KW, N * OH * OW), optional
        Where to write the result (C-contiguous, of ``x``'s dtype).

    Returns
    -------
    cols : ndarray of shape (C * KH * KW, N * OH * OW)
        ``out`` where given.
    """
    n, c, h, w = x.shape
    kh, kw, sh, sw, _, _, dh, dw = window.args
    oh, ow = window.output_size(h, w)
    xp = np.pad(x, ((0, 0), (0, 0), *window.padding), constant_values=pad_value)
    cols = np.empty((c, kh, kw, n, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            tap = xp[:, :, _taps(i, dh, sh, oh), _taps(j, dw, sw, ow)]
            cols[:, i, j] = tap.transpose(1, 0, 2, 3)
    return _written(cols.reshape(c * kh * kw, n * oh * ow), out)


def col2im_numpy(cols, x_shape, window: Window):
    """Adjoint of :func:`im2col_numpy`: scatter-add columns back to an input.

    Parameters
    ----------
    cols : ndarray of shape (C * KH * KW, N * OH * OW)
    x_shape : tuple of int
        ``(N, C, H, W)`` of the input that produced ``cols``.
    window : Window

    Returns
    -------
    dx : ndarray of shape (N, C, H, W)
    """
    n, c, h, w = x_shape
    kh, kw, sh, sw, ph, pw, dh, dw = window.args
    oh, ow = window.output_size(h, w)
    (_, pb), (_, pr) = window.padding
    dxp = np.zeros((n, c, h + ph + pb, w + pw + pr), dtype=cols.dtype)
    cols = cols.reshape(c, kh, kw, n, oh, ow)
    for i in range(kh):
        for j in range(kw):
            tap = (slice(None), slice(None), _taps(i, dh, sh, oh), _taps(j, dw, sw, ow))
            dxp[tap] += cols[:, i, j].transpose(1, 0, 2, 3)
    return dxp[:, :, ph : ph + h, pw : pw + w].copy()


def im2col_numba(x, window: Window, pad_value=0.0, out=None):
    """Column matrix of ``x`` for ``window`` (Numba, parallel over channels).

    Same contract as :func:`im2col_numpy`.
    """
    n, c, h, w = x.shape
    oh, ow = window.output_size(h, w)
    cols = _result((c * window.kernel[0] * window.kernel[1], n * oh * ow), x.dtype, out)
    kernel = _im2col_runs if window.stride[1] == 1 else _im2col_gather
    # flat offsets: a strided gather with 4-D indexing was 1.3-1.5x slower
    kernel(np.ascontiguousarray(x).reshape(-1), cols.reshape(-1), n, c, h, w, *window.args,
           oh, ow, x.dtype.type(pad_value))
    return cols


def col2im_numba(cols, x_shape, window: Window):
    """Adjoint of :func:`im2col_numba` (Numba, parallel over channels).

    Same contract as :func:`col2im_numpy`.
    """
    oh, ow = window.output_size(*x_shape[2:])
    # zeroed here, on one thread: the parallel kernel then writes to pages that are
    # already mapped (see .workspace; 3.9x faster in the 1-D DenseNet's step than
    # np.zeros, whose pages the two threads faulted in together)
    dx = np.empty(x_shape, dtype=cols.dtype)
    dx.fill(0)
    kernel = _col2im_runs if window.stride[1] == 1 else _col2im_gather
    kernel(np.ascontiguousarray(cols).reshape(-1), dx.reshape(-1), *x_shape, *window.args, oh, ow)
    return dx


def _written(result, out):
    """``result``, copied into ``out`` (checked) where given."""
    if out is None:
        return result
    np.copyto(_result(result.shape, result.dtype, out), result)
    return out


def _result(shape, dtype, out):
    """``out`` (checked), or a new array."""
    if out is None:
        return np.empty(shape, dtype)
    if out.shape != tuple(shape) or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {np.dtype(dtype)} array of shape "
                         f"{tuple(shape)}, got {out.dtype} {out.shape}")
    return out


@njit(inline="always")
def _valid(n_out, stride, offset, size):
    """Outputs ``lo <= o < hi`` whose tap ``o * stride + offset`` lies in [0, size)."""
    lo = 0 if offset >= 0 else (stride - 1 - offset) // stride
    hi = 0 if size - 1 - offset < 0 else min(n_out, (size - 1 - offset) // stride + 1)
    return min(lo, hi), hi


@njit(inline="always")
def _tap_offsets(offsets, i, j, h_, w_, sh, sw, ph, pw, dh, dw, oh, ow):
    """``offsets[p * ow + q]``: where tap ``(i, j)`` of output ``(p, q)`` reads in an
    (h_, w_) input plane, -1 in the padding."""
    for p in range(oh):
        h = p * sh + i * dh - ph
        for q in range(ow):
            w = q * sw + j * dw - pw
            offsets[p * ow + q] = h * w_ + w if 0 <= h < h_ and 0 <= w < w_ else -1


@njit(parallel=True, cache=True)
def _im2col_runs(src, dst, n_, c_, h_, w_, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, pad_value):
    """im2col for width stride 1 into flat ``dst``: each output row reads a contiguous
    run of the flat input ``src``."""
    plane = oh * ow
    width = n_ * plane
    for ci in prange(c_ * kh):  # one (channel, kernel row) per task: rows written contiguously
        c, i = ci // kh, ci % kh
        p0, p1 = _valid(oh, sh, i * dh - ph, h_)
        for j in range(kw):
            row = (ci * kw + j) * width
            q0, q1 = _valid(ow, sw, j * dw - pw, w_)
            for n in range(n_):
                x_plane = (n * c_ + c) * h_ * w_ + j * dw - pw
                for p in range(oh):
                    start = row + n * plane + p * ow
                    if p < p0 or p >= p1:
                        for q in range(ow):
                            dst[start + q] = pad_value
                        continue
                    x_row = x_plane + (p * sh + i * dh - ph) * w_
                    for q in range(q0):  # loops: a few values, cheaper than slice views
                        dst[start + q] = pad_value
                    # a slice copy vectorises (2x for 1-D layers)
                    dst[start + q0:start + q1] = src[x_row + q0:x_row + q1]
                    for q in range(q1, ow):
                        dst[start + q] = pad_value


@njit(parallel=True, cache=True)
def _im2col_gather(src, dst, n_, c_, h_, w_, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, pad_value):
    """im2col for any stride into flat ``dst``: a table of the plane's read offsets per
    tap, then one flat gather per (tap, sample) (1.3x faster than row runs of a few
    strided values)."""
    plane = oh * ow
    width = n_ * plane
    for ci in prange(c_ * kh):
        c, i = ci // kh, ci % kh
        offsets = np.empty(plane, np.int64)
        for j in range(kw):
            _tap_offsets(offsets, i, j, h_, w_, sh, sw, ph, pw, dh, dw, oh, ow)
            row = (ci * kw + j) * width
            for n in range(n_):
                x_plane = (n * c_ + c) * h_ * w_
                start = row + n * plane
                for k in range(plane):
                    at = offsets[k]
                    dst[start + k] = src[x_plane + at] if at >= 0 else pad_value


@njit(parallel=True, cache=True)
def _col2im_runs(src, dst, n_, c_, h_, w_, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    """col2im for width stride 1: each output row adds a contiguous run into the flat
    input gradient, taps in order as :func:`_col2im_gather`. The indices are unsigned
    (see :func:`_row2im`): the loop vectorises."""
    plane = oh * ow
    width = n_ * plane
    for c in prange(c_):  # a channel per task: no two tasks write the same dx element
        for i in range(kh):
            p0, p1 = _valid(oh, sh, i * dh - ph, h_)
            for j in range(kw):
                row = ((c * kh + i) * kw + j) * width
                q0, q1 = _valid(ow, sw, j * dw - pw, w_)
                for n in range(n_):
                    x_plane = (n * c_ + c) * h_ * w_ + j * dw - pw
                    for p in range(p0, p1):
                        x_row = x_plane + (p * sh + i * dh - ph) * w_
                        start = row + n * plane + p * ow
                        for q in range(q0, q1):
                            dst[np.uint64(x_row + q)] += src[np.uint64(start + q)]


@njit(parallel=True, cache=True)
def _col2im_gather(src, dst, n_, c_, h_, w_, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    """col2im for any stride: a table of read offsets per tap, as
    :func:`_im2col_gather`."""
    plane = oh * ow
    width = n_ * plane
    for c in prange(c_):  # a channel per task: no two tasks write the same dx element
        offsets = np.empty(plane, np.int64)
        for i in range(kh):
            for j in range(kw):  # taps in order: each dx element sums them as im2col_numpy
                _tap_offsets(offsets, i, j, h_, w_, sh, sw, ph, pw, dh, dw, oh, ow)
                row = ((c * kh + i) * kw + j) * width
                for n in range(n_):
                    x_plane = (n * c_ + c) * h_ * w_
                    start = row + n * plane
                    for k in range(plane):
                        at = offsets[k]
                        if at >= 0:
                            dst[x_plane + at] += src[start + k]


def im2row_numpy(x, window: Window, out=None):
    """Row matrix of ``x`` for ``window``, channels last (NumPy reference).

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W)
    window : Window
    out : ndarray of shape (N * OH * OW, KH * KW * C), optional
        Where to write the result (C-contiguous, of ``x``'s dtype).

    Returns
    -------
    rows : ndarray of shape (N * OH * OW, KH * KW * C)
        ``out`` where given. ``rows[(n * OH + p) * OW + q, (i * KW + j) * C + c] =
        x[n, c, p * sh + i * dh - ph, q * sw + j * dw - pw]``, zero in the padding.
    """
    n, c, h, w = x.shape
    kh, kw, sh, sw, _, _, dh, dw = window.args
    oh, ow = window.output_size(h, w)
    xp = np.pad(x, ((0, 0), (0, 0), *window.padding)).transpose(0, 2, 3, 1)
    rows = np.empty((n, oh, ow, kh, kw, c), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            rows[:, :, :, i, j] = xp[:, _taps(i, dh, sh, oh), _taps(j, dw, sw, ow)]
    return _written(rows.reshape(n * oh * ow, kh * kw * c), out)


def row2im_numpy(rows, x_shape, window: Window):
    """Adjoint of :func:`im2row_numpy`: scatter-add rows back to an input.

    Parameters
    ----------
    rows : ndarray of shape (N * OH * OW, KH * KW * C)
    x_shape : tuple of int
        ``(N, C, H, W)`` of the input that produced ``rows``.
    window : Window

    Returns
    -------
    dx : ndarray of shape (N, C, H, W)
    """
    n, c, h, w = x_shape
    kh, kw, sh, sw, ph, pw, dh, dw = window.args
    oh, ow = window.output_size(h, w)
    (_, pb), (_, pr) = window.padding
    dxp = np.zeros((n, h + ph + pb, w + pw + pr, c), dtype=rows.dtype)
    rows = rows.reshape(n, oh, ow, kh, kw, c)
    for i in range(kh):
        for j in range(kw):  # taps in order, as row2im_numba sums them
            dxp[:, _taps(i, dh, sh, oh), _taps(j, dw, sw, ow)] += rows[:, :, :, i, j]
    return dxp[:, ph : ph + h, pw : pw + w].transpose(0, 3, 1, 2).copy()


def im2row_numba(x, window: Window, out=None):
    """Row matrix of ``x`` for ``window``, channels last (Numba, parallel over
    samples).

    Same contract as :func:`im2row_numpy`.
    """
    n, c, h, w = x.shape
    kh, kw = window.kernel
    oh, ow = window.output_size(h, w)
    (top, bottom), (left, right) = window.padding
    xp = workspace.scratch("padded", (n, h + top + bottom, w + left + right, c), x.dtype)
    rows = _result((n * oh * ow, kh * kw * c), x.dtype, out)
    _im2row(np.ascontiguousarray(x), xp, rows, *window.args, oh, ow)
    return rows


def row2im_numba(rows, x_shape, window: Window):
    """Adjoint of :func:`im2row_numba` (Numba, parallel over samples).

    Same contract as :func:`row2im_numpy`.
    """
    n, c, h, w = x_shape
    oh, ow = window.output_size(h, w)
    (top, bottom), (left, right) = window.padding
    dxp = workspace.scratch("padded", (n, h + top + bottom, w + left + right, c), rows.dtype)
    dx = np.empty(x_shape, dtype=rows.dtype)
    _row2im(np.ascontiguousarray(rows), dxp, dx, *window.args, oh, ow)
    return dx


@njit(parallel=True, cache=True)
def _im2row(x, xp, rows, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    """Per sample: the padded channels-last copy ``xp[n]``, then each patch as ``kh``
    runs of ``kw * c`` values (``kh * kw`` runs of ``c`` with a width dilation)."""
    n_, c_, h_, w_ = x.shape
    _, hp, wp, _ = xp.shape
    run = kw * c_ if dw == 1 else c_
    pieces = 1 if dw == 1 else kw
    dst = rows.reshape(-1)
    for n in prange(n_):
        xp[n] = 0
        for c in range(c_):
            for h in range(h_):
                for w in range(w_):
                    xp[n, h + ph, w + pw, c] = x[n, c, h, w]
        src = xp[n].reshape(-1)
        for p in range(oh):
            for q in range(ow):
                at = ((n * oh + p) * ow + q) * kh * kw * c_
                for i in range(kh):
                    for j in range(pieces):
                        s = ((p * sh + i * dh) * wp + q * sw + j * dw) * c_
                        for t in range(run):  # unsigned: see _row2im
                            dst[np.uint64(at + t)] = src[np.uint64(s + t)]
                        at += run


@njit(parallel=True, cache=True)
def _row2im(rows, dxp, dx, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    """Per sample: add each tap's runs of ``c`` values into ``dxp[n]``, taps in order
    (so each element sums them as :func:`row2im_numpy`), then crop to ``dx[n]``.

    The flat indices are unsigned: Numba wraps negative indices, and that test kept
    LLVM from vectorizing the inner loop (3x slower)."""
    n_, c_, h_, w_ = dx.shape
    _, hp, wp, _ = dxp.shape
    src = rows.reshape(-1)
    taps = kh * kw * c_
    for n in prange(n_):
        dxp[n] = 0
        dst = dxp[n].reshape(-1)
        for i in range(kh):
            for j in range(kw):
                col = (i * kw + j) * c_
                for p in range(oh):
                    for q in range(ow):
                        at = ((n * oh + p) * ow + q) * taps + col
                        d = ((p * sh + i * dh) * wp + q * sw + j * dw) * c_
                        for c in range(c_):
                            dst[np.uint64(d + c)] += src[np.uint64(at + c)]
        for c in range(c_):
            for h in range(h_):
                for w in range(w_):
                    dx[n, c, h, w] = dxp[n, h + ph, w + pw, c]
