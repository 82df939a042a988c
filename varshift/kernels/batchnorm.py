"""Per-channel BatchNorm kernels on inputs viewed as (N, C, L).

Every BatchNorm input -- (N, C), (N, C, L) or (N, C, H, W) -- is viewed as (N, C, L)
with L = 1, L or H * W, and statistics run over the M = N * L values of a channel.

* ``moments``: per-channel mean and biased variance, accumulated in float64.
* ``normalize``: ``xhat = (x - mean) * inv_std`` and ``out = gamma * xhat + beta``.
* ``backward``: gradients of ``normalize`` for batch statistics (``batch_stats=True``,
  mean and variance depend on x) or fixed running statistics.

``*_numpy`` functions are the reference; ``*_numba`` are parallel over channels.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

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
    out, xhat : ndarray of shape (N, C, L)
    """
    xhat = (x - mean[:, None]) * inv_std[:, None]
    return xhat * gamma[:, None] + beta[:, None], xhat


def backward_numpy(dout, xhat, gamma, inv_std, batch_stats):
    """Gradients of :func:`normalize_numpy`.

    Parameters
    ----------
    dout, xhat : ndarray of shape (N, C, L)
    gamma, inv_std : ndarray of shape (C,)
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
    dbeta = dout.sum(axis=(0, 2), dtype=np.float64)
    dgamma = (dout * xhat).sum(axis=(0, 2), dtype=np.float64)
    g = (gamma * inv_std)[:, None]
    if not batch_stats:
        return g * dout, dgamma, dbeta
    m = dout.shape[0] * dout.shape[2]
    mb = (dbeta / m).astype(dout.dtype)[:, None]
    mg = (dgamma / m).astype(dout.dtype)[:, None]
    return g * (dout - mb - xhat * mg), dgamma, dbeta


@njit(parallel=True, cache=True)
def moments_numba(x):
    """Numba version of :func:`moments_numpy` (two passes per channel)."""
    n_, c_, l_ = x.shape
    m = n_ * l_
    mean = np.empty(c_, np.float64)
    var = np.empty(c_, np.float64)
    for c in prange(c_):
        s = 0.0
        for n in range(n_):
            for i in range(l_):
                s += x[n, c, i]
        mu = s / m
        ss = 0.0
        for n in range(n_):
            for i in range(l_):
                d = x[n, c, i] - mu
                ss += d * d
        mean[c] = mu
        var[c] = ss / m
    return mean, var


@njit(parallel=True, cache=True)
def normalize_numba(x, mean, inv_std, gamma, beta):
    """Numba version of :func:`normalize_numpy`."""
    n_, c_, l_ = x.shape
    out = np.empty_like(x)
    xhat = np.empty_like(x)
    for c in prange(c_):
        mu, s, g, b = mean[c], inv_std[c], gamma[c], beta[c]
        for n in range(n_):
            for i in range(l_):
                xh = (x[n, c, i] - mu) * s
                xhat[n, c, i] = xh
                out[n, c, i] = xh * g + b
    return out, xhat


@njit(parallel=True, cache=True)
def backward_numba(dout, xhat, gamma, inv_std, batch_stats):
    """Numba version of :func:`backward_numpy`."""
    n_, c_, l_ = dout.shape
    m = n_ * l_
    dx = np.empty_like(dout)
    dgamma = np.empty(c_, np.float64)
    dbeta = np.empty(c_, np.float64)
    for c in prange(c_):
        sb = 0.0
        sg = 0.0
        for n in range(n_):
            for i in range(l_):
                d = dout[n, c, i]
                sb += d
                sg += d * xhat[n, c, i]
        dbeta[c] = sb
        dgamma[c] = sg
        g = gamma[c] * inv_std[c]
        mb = sb / m if batch_stats else 0.0
        mg = sg / m if batch_stats else 0.0
        for n in range(n_):
            for i in range(l_):
                dx[n, c, i] = g * (dout[n, c, i] - mb - xhat[n, c, i] * mg)
    return dx, dgamma, dbeta
