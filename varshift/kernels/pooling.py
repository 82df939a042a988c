"""Max pooling over window columns: the maximum of each window and its adjoint.

``windows`` has shape (P, T, Q): P planes (N * C), T taps of the window, Q output
positions, as :class:`varshift.nn.MaxPool2D` builds it with im2col. The gradient flows
to the *first* maximum of each window (a NaN counts as the maximum, as in
``np.argmax``).

``*_numpy`` are the reference; ``*_numba`` do one pass without NumPy's strided
``argmax`` and ``take_along_axis`` over the tap axis (3x less time for the 1-D
networks' pooling).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .jit import njit

__all__ = ["max_windows_numpy", "max_windows_backward_numpy", "max_windows_numba",
           "max_windows_backward_numba"]


def max_windows_numpy(windows):
    """Maximum over the tap axis.

    Parameters
    ----------
    windows : ndarray of shape (P, T, Q)

    Returns
    -------
    out : ndarray of shape (P, 1, Q)
    argmax : ndarray of int, shape (P, 1, Q)
        Tap of the first maximum.
    """
    argmax = windows.argmax(axis=1)[:, None]
    return np.take_along_axis(windows, argmax, axis=1), argmax


def max_windows_backward_numpy(dout, argmax, taps):
    """Window gradient: ``dout`` at each window's ``argmax`` tap, zero elsewhere.

    Parameters
    ----------
    dout : ndarray of shape (P, 1, Q)
    argmax : ndarray of int, shape (P, 1, Q)
    taps : int

    Returns
    -------
    dwindows : ndarray of shape (P, taps, Q)
    """
    dwindows = np.zeros((dout.shape[0], taps, dout.shape[2]), dtype=dout.dtype)
    np.put_along_axis(dwindows, argmax, dout, axis=1)
    return dwindows


def max_windows_numba(windows):
    """Numba version of :func:`max_windows_numpy`."""
    return _max_windows(np.ascontiguousarray(windows))


def max_windows_backward_numba(dout, argmax, taps):
    """Numba version of :func:`max_windows_backward_numpy`."""
    return _max_windows_backward(np.ascontiguousarray(dout), np.ascontiguousarray(argmax), taps)


@njit(parallel=True, cache=True)
def _max_windows(windows):
    p_, t_, q_ = windows.shape
    out = np.empty((p_, 1, q_), dtype=windows.dtype)
    argmax = np.empty((p_, 1, q_), dtype=np.int64)
    for p in prange(p_):
        out[p, 0] = windows[p, 0]
        argmax[p, 0] = 0
        for t in range(1, t_):  # taps outside, positions inside: contiguous rows (2x)
            for q in range(q_):
                v, best = windows[p, t, q], out[p, 0, q]
                if v > best or (v != v and best == best):  # the first NaN wins, as argmax
                    out[p, 0, q] = v
                    argmax[p, 0, q] = t
    return out, argmax


@njit(parallel=True, cache=True)
def _max_windows_backward(dout, argmax, taps):
    p_, _, q_ = dout.shape
    dwindows = np.zeros((p_, taps, q_), dtype=dout.dtype)
    for p in prange(p_):
        for q in range(q_):
            dwindows[p, argmax[p, 0, q], q] = dout[p, 0, q]
    return dwindows
