"""Fused optimiser updates, in place on flat parameter arrays.

``adam_numpy`` is the reference; ``adam_numba`` does the same in one parallel pass
without temporaries.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from .jit import njit

__all__ = ["adam_numpy", "adam_numba"]


def adam_numpy(p, g, m, v, lr, beta1, beta2, eps, step, weight_decay):
    """One Adam step (PyTorch's formulation, L2 weight decay added to the gradient).

    Parameters
    ----------
    p, g, m, v : ndarray of shape (P,)
        Parameter, gradient, first and second moment; ``p``, ``m`` and ``v`` are
        updated in place.
    lr, beta1, beta2, eps, weight_decay : float
    step : int
        1-based step count, for the bias corrections.

    Notes
    -----
    ``g' = g + wd p``, ``m = b1 m + (1 - b1) g'``, ``v = b2 v + (1 - b2) g'^2``,
    ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``.
    """
    g = g + weight_decay * p if weight_decay else g
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * g * g
    denom = np.sqrt(v) / math.sqrt(1 - beta2**step) + eps
    p -= (lr / (1 - beta1**step)) * m / denom


def adam_numba(p, g, m, v, lr, beta1, beta2, eps, step, weight_decay):
    """Numba version of :func:`adam_numpy`, same contract."""
    _adam(p, g, m, v, lr, beta1, beta2, eps, 1 - beta1**step, math.sqrt(1 - beta2**step),
          weight_decay)


@njit(parallel=True, cache=True)
def _adam(p, g, m, v, lr, beta1, beta2, eps, bc1, bc2_sqrt, weight_decay):
    step_size = lr / bc1
    for i in prange(p.size):
        gi = g[i] + weight_decay * p[i]
        mi = beta1 * m[i] + (1 - beta1) * gi
        vi = beta2 * v[i] + (1 - beta2) * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] -= step_size * mi / (math.sqrt(vi) / bc2_sqrt + eps)
