"""Per-channel BatchNorm kernels on inputs viewed as (N, C, L).

Every BatchNorm input -- (N, C), (N, C, L) or (N, C, H, W) -- is viewed as (N, C, L)
with L = 1, L or H * W, and statistics run over the M = N * L values of a channel.

* ``moments``: per-channel mean and biased variance, accumulated in float64.
* ``normalize``: ``out = gamma * xhat + beta`` with ``xhat = (x - mean) * inv_std``.
* ``backward``: gradients of ``normalize`` for batch statistics (``batch_stats=True``,
  mean and variance depend on x) or fixed running statistics; ``xhat`` is recomputed
  from ``x`` rather than stored.

``*_numpy`` functions are the reference; ``*_numba`` are parallel over channels.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .jit import njit

__all__ = [
    "moments_numpy",
    "normalize_numpy",
    "backward_numpy",
    "moments_numba",
    "normalize_numba",
    "backward_numba",
]


def moments_numpy(x):
    """Per-channel mean and biased variance.

    Parameters
    ----------
    x : ndarray of shape (N, C, L)

    Returns
    -------
    mean, var : ndarray of shape (C,), float64
    """
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(0, 2))
    var = ((x64 - mean[:, None]) ** 2).mean(axis=(0, 2))
    return mean, var


def normalize_numpy(x, mean, inv_std, gamma, beta):
    """Normalise, then scale and shift.

    Parameters
    ----------
    x : ndarray of shape (N, C, L)
    mean, inv_std, gamma, beta : ndarray of shape (C,), same dtype as ``x``

    Returns
    -------
    out : ndarray of shape (N, C, L)
    """
    xhat = (x - mean[:, None]) * inv_std[:, None]
    return xhat * gamma[:, None] + beta[:, None]


def backward_numpy(dout, x, mean, inv_std, gamma, batch_stats):
    """Gradients of :func:`normalize_numpy`.

    Parameters
    ----------
    dout, x : ndarray of shape (N, C, L)
    mean, inv_std, gamma : ndarray of shape (C,), same dtype as ``x``
    batch_stats : bool
        Whether mean and variance were the batch's own (then they depend on x).

    Returns
    -------
    dx : ndarray of shape (N, C, L)
    dgamma, dbeta : ndarray of shape (C,), float64

    Notes
    -----
    With ``g = gamma * inv_std`` and M values per channel,
    ``dx = g * (dout - mean(dout) - xhat * mean(dout * xhat))`` for batch statistics
    and ``dx = g * dout`` for fixed ones.
    """
    xhat = (x - mean[:, None]) * inv_std[:, None]
    dbeta = dout.sum(axis=(0, 2), dtype=np.float64)
    dgamma = (dout * xhat).sum(axis=(0, 2), dtype=np.float64)
    g = (gamma * inv_std)[:, None]
    if not batch_stats:
        return g * dout, dgamma, dbeta
    m = dout.shape[0] * dout.shape[2]
    mb = (dbeta / m).astype(dout.dtype)[:, None]
    mg = (dgamma / m).astype(dout.dtype)[:, None]
    return g * (dout - mb - xhat * mg), dgamma, dbeta


# Reductions may be reassociated (vectorised float64 sums); NaN and inf still propagate.
_REASSOC = {"reassoc", "contract"}


def moments_numba(x):
    """Numba version of :func:`moments_numpy`, in one pass.

    Sums of ``x - x[0, c, 0]`` and of its square are accumulated in float64; the
    shift keeps ``E[d^2] - E[d]^2`` free of cancellation for data far from zero.
    (N, C, 1) input is read row by row, other shapes channel by channel.
    """
    if x.shape[2] == 1:
        return _moments_rows(x.reshape(x.shape[0], x.shape[1]))
    return _moments_channels(x)


@njit(cache=True)
def _moments_rows(x):
    n_, c_ = x.shape
    shift = x[0].astype(np.float64)
    s1 = np.zeros(c_)
    s2 = np.zeros(c_)
    for n in range(n_):
        for c in range(c_):
            d = x[n, c] - shift[c]
            s1[c] += d
            s2[c] += d * d
    mean = s1 / n_
    return shift + mean, np.maximum(s2 / n_ - mean * mean, 0.0)


@njit(parallel=True, cache=True, fastmath=_REASSOC)
def _moments_channels(x):
    n_, c_, l_ = x.shape
    m = n_ * l_
    mean = np.empty(c_, np.float64)
    var = np.empty(c_, np.float64)
    for c in prange(c_):
        shift = np.float64(x[0, c, 0])
        s1 = 0.0
        s2 = 0.0
        for n in range(n_):
            for i in range(l_):
                d = x[n, c, i] - shift
                s1 += d
                s2 += d * d
        mu = s1 / m
        mean[c] = shift + mu
        var[c] = max(s2 / m - mu * mu, 0.0)
    return mean, var


@njit(parallel=True, cache=True)
def normalize_numba(x, mean, inv_std, gamma, beta):
    """Numba version of :func:`normalize_numpy`."""
    n_, c_, l_ = x.shape
    out = np.empty_like(x)
    for c in prange(c_):
        scale = inv_std[c] * gamma[c]
        offset = beta[c] - mean[c] * scale
        for n in range(n_):
            for i in range(l_):
                out[n, c, i] = x[n, c, i] * scale + offset
    return out


@njit(parallel=True, cache=True, fastmath=_REASSOC)
def backward_numba(dout, x, mean, inv_std, gamma, batch_stats):
    """Numba version of :func:`backward_numpy`."""
    n_, c_, l_ = dout.shape
    m = n_ * l_
    dx = np.empty_like(dout)
    dgamma = np.empty(c_, np.float64)
    dbeta = np.empty(c_, np.float64)
    for c in prange(c_):
        mu, s = mean[c], inv_std[c]
        sb = 0.0
        sg = 0.0
        for n in range(n_):
            for i in range(l_):
                d = dout[n, c, i]
                sb += d
                sg += d * ((x[n, c, i] - mu) * s)
        dbeta[c] = sb
        dgamma[c] = sg
        g = gamma[c] * s
        mb = sb / m if batch_stats else 0.0
        mg = sg / m if batch_stats else 0.0
        for n in range(n_):
            for i in range(l_):
                dx[n, c, i] = g * (dout[n, c, i] - mb - (x[n, c, i] - mu) * s * mg)
    return dx, dgamma, dbeta
