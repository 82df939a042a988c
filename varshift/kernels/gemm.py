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
from numba import prange, types
from numba.extending import overload
from numba.np.linalg import _BLAS  # Numba's BLAS signatures (private, stable since 0.2x)

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
    """``a @ b`` (C-contiguous) in one BLAS call, or in ``blocks`` blocks of the longer
    side of the result on Numba's threads, each block one BLAS call on the operands as
    they lie in memory (C- or Fortran-contiguous; any other layout is copied first)."""
    if blocks == 1:
        first, trans_first = _fortran_operand(b)
        second, trans_second = _fortran_operand(a)
        return _GEMM[a.dtype.char](1.0, first, second, trans_a=trans_first,
                                   trans_b=trans_second).T
    (m, k), n = a.shape, b.shape[1]
    out = np.empty((m, n), a.dtype)
    a_memory, a_fortran = _memory(a)
    b_memory, b_fortran = _memory(b)
    _split_product(a_memory, a_fortran, b_memory, b_fortran, out.reshape(-1), m, n, k,
                   blocks, n > m)
    return out


def _memory(x):
    """``(flat view of x's memory, whether x is Fortran-ordered)``: copied to C order
    only if ``x`` is neither C- nor Fortran-contiguous."""
    if x.flags.c_contiguous:
        return x.reshape(-1), False
    if x.flags.f_contiguous:
        return x.T.reshape(-1), True
    return np.ascontiguousarray(x).reshape(-1), False


def _gemm(transa, transb, m, n, k, a, lda, b, ldb, c, ldc):
    """BLAS ``xgemm`` (column-major) on flat arrays that start at the operands' first
    elements: ``c = op(a) op(b)``, with ``a`` ``m x k`` and ``b`` ``k x n`` after
    ``op``. Compiled only, through :func:`_gemm_overload`."""
    raise NotImplementedError("only callable from compiled code")


@overload(_gemm)
def _gemm_overload(transa, transb, m, n, k, a, lda, b, ldb, c, ldc):
    """Numba's own BLAS entry point, the one its ``np.dot`` calls, which takes leading
    dimensions, so that a block of a matrix needs no copy."""
    xxgemm = _BLAS().numba_xxgemm(a.dtype)
    kind = ord("s" if a.dtype == types.float32 else "d")

    def call(transa, transb, m, n, k, a, lda, b, ldb, c, ldc):
        one = np.ones(1, c.dtype)
        zero = np.zeros(1, c.dtype)
        xxgemm(kind, transa, transb, m, n, k, one.ctypes, a.ctypes, lda, b.ctypes, ldb,
               zero.ctypes, c.ctypes, ldc)

    return call


@njit(cache=True)
def _block(size, blocks, block):
    """``(start, stop)`` of block ``block`` of ``blocks`` near-equal parts of
    ``range(size)`` (empty when there are more blocks than items)."""
    step = (size + blocks - 1) // blocks
    start = min(size, block * step)
    return start, min(size, start + step)


@njit(parallel=True, cache=True)
def _split_product(a, a_fortran, b, b_fortran, out, m, n, k, blocks, by_columns):
    """``out = a @ b`` in ``blocks`` blocks of columns (``by_columns``) or of rows of
    the C-contiguous ``out`` (flat, ``m * n``), on Numba's threads.

    ``a`` (``m x k``) and ``b`` (``k x n``) are flat views of their memory, in
    Fortran order where the flag says so. In BLAS's column-major terms ``out^T = b^T
    a^T``: a C-ordered operand is already its transpose, a Fortran-ordered one is
    transposed by BLAS. A block of columns of ``out`` starts ``lo`` values into
    ``out`` and into a C ``b`` (``lo * k`` into a Fortran one); a block of rows starts
    ``lo * n`` into ``out`` and ``lo * k`` into a C ``a`` (``lo`` into a Fortran one).
    """
    trans_b = ord("T") if b_fortran else ord("N")
    trans_a = ord("T") if a_fortran else ord("N")
    ld_b = k if b_fortran else n
    ld_a = m if a_fortran else k
    for block in prange(blocks):
        lo, hi = _block(n if by_columns else m, blocks, block)
        if lo < hi:
            if by_columns:
                _gemm(trans_b, trans_a, hi - lo, m, k, b[lo * k if b_fortran else lo:], ld_b,
                      a, ld_a, out[lo:], n)
            else:
                _gemm(trans_b, trans_a, n, hi - lo, k, b, ld_b,
                      a[lo if a_fortran else lo * k:], ld_a, out[lo * n:], n)


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
