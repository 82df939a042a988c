"""Matrix products for the layers: ``matmul_numpy`` (``a @ b``, the reference) and
``matmul_blas``, which calls SciPy's BLAS ``sgemm``/``dgemm`` directly, on one BLAS
thread, splitting a large product over Numba's threads
(:func:`varshift.kernels.threads.product`); and ``add_bias_nchw_*``, which turns a
convolution's product, (C_out, N, S) or channels-last (N, S, C_out), into its output
(N, C_out, S) plus the bias (a fused Numba pass is 3-4x faster than NumPy's transposed
add).

Why not NumPy's ``@``: NumPy's OpenBLAS starts its threads when NumPy is imported,
usually before varshift, and they then spin for ~0.1 s after every product, taking a
core from the Numba kernel that follows (a training step was 1.35x slower). SciPy's
OpenBLAS is a separate instance that is loaded only at the first product, by
:func:`varshift.kernels.threads.load_runtimes`, and never given more than one thread.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from . import threads
from .jit import njit

__all__ = ["matmul_numpy", "matmul_blas", "add_bias_nchw_numpy", "add_bias_nchw_numba"]

_GEMM = {}


def matmul_numpy(a, b):
    """``a @ b`` for 2-D arrays (reference)."""
    return a @ b


def _fortran_operand(x):
    """``(array, transpose flag)`` such that BLAS sees ``x^T`` without a copy."""
    if x.flags.c_contiguous:
        return x.T, 0  # x^T of a C array is a Fortran array
    if x.flags.f_contiguous:
        return x, 1
    return np.ascontiguousarray(x).T, 0


def matmul_blas(a, b):
    """``a @ b`` for 2-D float32/float64 arrays of one dtype, C-contiguous result.

    Every product calls SciPy's BLAS ``sgemm``/``dgemm`` on one BLAS thread. A large one
    (:func:`varshift.kernels.threads.product`) is split into row blocks over Numba's
    threads instead, one single-threaded BLAS call per block, so that the layers' kernels
    and products share one pool of threads.
    """
    if a.dtype != b.dtype or a.dtype.char not in "fd" or 0 in a.shape or 0 in b.shape:
        return a @ b
    if not _GEMM:
        threads.load_runtimes()  # first load of SciPy's OpenBLAS: see module doc
        from scipy.linalg import blas

        _GEMM.update(f=blas.sgemm, d=blas.dgemm)
    return threads.product(lambda blocks: _product(a, b, blocks), a.shape[0], b.shape[1],
                           a.shape[1])


def _product(a, b, blocks):
    """``a @ b`` (C-contiguous) in one BLAS call, or in ``blocks`` blocks of rows (if
    ``a`` is C-contiguous) or of columns (if ``b`` is Fortran-contiguous), so that no
    operand is copied where one of the two is laid out that way."""
    if blocks == 1:
        first, trans_first = _fortran_operand(b)
        second, trans_second = _fortran_operand(a)
        return _GEMM[a.dtype.char](1.0, first, second, trans_a=trans_first,
                                   trans_b=trans_second).T
    out = np.empty((a.shape[0], b.shape[1]), a.dtype)
    if not a.flags.c_contiguous and b.flags.f_contiguous:
        _column_blocks(a if a.flags.f_contiguous else np.ascontiguousarray(a), b.T, out, blocks)
    else:
        b = b if b.flags.c_contiguous or b.flags.f_contiguous else np.ascontiguousarray(b)
        _row_blocks(np.ascontiguousarray(a), b, out, blocks)
    return out


@njit(cache=True)
def _block(size, blocks, block):
    """``(start, stop)`` of block ``block`` of ``blocks`` near-equal parts of
    ``range(size)`` (empty when there are more blocks than items)."""
    step = (size + blocks - 1) // blocks
    start = min(size, block * step)
    return start, min(size, start + step)


@njit(parallel=True, cache=True)
def _row_blocks(a, b, out, blocks):
    """``out = a @ b`` for C-contiguous ``a`` and ``out``: ``blocks`` blocks of rows on
    Numba's threads, each one BLAS call."""
    for block in prange(blocks):
        lo, hi = _block(a.shape[0], blocks, block)
        if lo < hi:
            np.dot(a[lo:hi], b, out[lo:hi])


@njit(parallel=True, cache=True)
def _column_blocks(a, b_t, out, blocks):
    """``out = a @ b_t.T`` for C-contiguous ``b_t`` and ``out``: ``blocks`` blocks of
    columns on Numba's threads, each one BLAS call and a copy into ``out``."""
    for block in prange(blocks):
        lo, hi = _block(b_t.shape[0], blocks, block)
        if lo < hi:
            out[:, lo:hi] = np.dot(b_t[lo:hi], a.T).T


def add_bias_nchw_numpy(product, bias, out, channels_last=False):
    """``out[n, o, s] = product[o, n, s] + bias[o]``, or ``product[n, s, o] + bias[o]``
    with ``channels_last``.

    Parameters
    ----------
    product : ndarray of shape (C_out, N, S), or (N, S, C_out) with ``channels_last``
    bias : ndarray of shape (C_out,)
    out : ndarray of shape (N, C_out, S), C-contiguous
        Written in place.
    channels_last : bool, default False
    """
    view = product.transpose(0, 2, 1) if channels_last else product.transpose(1, 0, 2)
    np.add(view, bias[:, None], out=out)


def add_bias_nchw_numba(product, bias, out, channels_last=False):
    """Numba version of :func:`add_bias_nchw_numpy`."""
    kernel = _add_bias_from_nsc if channels_last else _add_bias_from_cns
    kernel(np.ascontiguousarray(product), bias, out)


@njit(parallel=True, cache=True)
def _add_bias_from_cns(product, bias, out):
    o_, n_, s_ = product.shape
    for n in prange(n_):
        for o in range(o_):
            b = bias[o]
            for s in range(s_):
                out[n, o, s] = product[o, n, s] + b


@njit(parallel=True, cache=True)
def _add_bias_from_nsc(product, bias, out):
    n_, s_, o_ = product.shape
    for n in prange(n_):
        for s in range(s_):  # reads contiguous channels, writes with stride S
            for o in range(o_):
                out[n, o, s] = product[n, s, o] + bias[o]
