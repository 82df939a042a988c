"""Batch normalisation over every axis but the channel axis."""

from __future__ import annotations

import numpy as np

from .. import kernels
from .._validate import flag, fraction, integer, real, running_stats
from ..backends.modes import Kind
from .layer import Layer

__all__ = ["BatchNorm"]


class BatchNorm(Layer):
    """Batch normalisation for (N, C), (N, C, L) and (N, C, H, W) input.

    Parameters
    ----------
    num_features : int
        Number of channels C.
    eps : float, default 1e-5
        Added to the variance before the square root.
    momentum : float or None, default 0.1
        Weight of the *new* batch in the running averages (PyTorch's convention):
        ``running = (1 - momentum) * running + momentum * batch``. ``None`` gives the
        cumulative average over every batch seen (exact population statistics, as
        used by :func:`varshift.recalibrate`). Keras' ``momentum=0.99`` is
        ``momentum=0.01`` here; see :meth:`keras`.
    affine : bool, default True
        Learn a per-channel scale ``weight`` (gamma, init 1) and shift ``bias``
        (beta, init 0).
    track_running_stats : bool, default True
        Keep ``running_mean``, ``running_var`` and ``num_batches_tracked`` buffers
        and use them in inference mode. Without them the layer always normalises
        with batch statistics.
    unbiased : bool, default True
        Update ``running_var`` with the unbiased batch variance ``M / (M - 1) var``
        (PyTorch); False uses the biased one (Keras). The batch itself is always
        normalised with the biased variance.

    Notes
    -----
    With M = N * prod(S) values per channel, batch mean ``mu`` and biased variance
    ``s2``, training mode computes ``xhat = (x - mu) / sqrt(s2 + eps)`` and
    ``out = gamma * xhat + beta``; inference mode uses ``running_mean`` and
    ``running_var`` instead of ``mu`` and ``s2``. The backward pass for batch
    statistics is ``dx = gamma / sqrt(s2 + eps) * (dout - mean(dout) -
    xhat * mean(dout * xhat))``, means taken per channel.

    Training mode with M = 1 raises, as PyTorch does: the variance of one value is 0.
    """

    kind = Kind.BATCHNORM

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, unbiased=True):
        super().__init__()
        self.num_features = integer(num_features, "num_features", "BatchNorm")
        self.eps = real(eps, "eps", "BatchNorm", 0, low_open=True)
        self.momentum = None if momentum is None else fraction(
            momentum, "momentum", "BatchNorm", upper_open=False)
        self.affine = flag(affine, "affine", "BatchNorm")
        self.track_running_stats = flag(track_running_stats, "track_running_stats", "BatchNorm")
        self.unbiased = flag(unbiased, "unbiased", "BatchNorm")
        c = self.num_features
        if self.affine:
            self.params["weight"] = np.ones(c, self.dtype)
            self.params["bias"] = np.zeros(c, self.dtype)
        if self.track_running_stats:
            self.buffers["running_mean"] = np.zeros(c, self.dtype)
            self.buffers["running_var"] = np.ones(c, self.dtype)
            self.buffers["num_batches_tracked"] = np.zeros((), np.int64)

    @classmethod
    def keras(cls, num_features, momentum=0.99, epsilon=1e-3, **kwargs):
        """A BatchNorm with Keras' conventions.

        Parameters
        ----------
        num_features : int
        momentum : float, default 0.99
            Keras' momentum, the weight of the *old* value (becomes ``1 - momentum``).
        epsilon : float, default 1e-3
        **kwargs
            Other :class:`BatchNorm` arguments.

        Returns
        -------
        BatchNorm
            With ``unbiased=False`` (Keras updates the moving variance with the
            biased batch variance).
        """
        return cls(num_features, eps=epsilon, momentum=1.0 - momentum, unbiased=False, **kwargs)

    def _initialize(self, rng):
        if self.affine:
            self.params["weight"][...] = 1
            self.params["bias"][...] = 0

    def _check_input(self, x):
        self._expect(x, (2, 3, 4), self.num_features)

    @property
    def _uses_batch_stats(self) -> bool:
        return self.training or not self.track_running_stats

    def _forward(self, x):
        x3 = x.reshape(x.shape[0], self.num_features, -1)
        count = x3.shape[0] * x3.shape[2]
        if self._uses_batch_stats:
            if self.training and count < 2:
                raise ValueError(
                    f"{self.describe()}: expected more than 1 value per channel when "
                    f"training, got input of shape {x.shape}"
                )
            mean, var = kernels.bn_moments(x3)
            if self.training and self.track_running_stats:
                self._update_running_stats(mean, var, count)
        else:
            mean = self.buffers["running_mean"].astype(np.float64)
            var = self.buffers["running_var"].astype(np.float64)
        mean = mean.astype(self.dtype)
        inv_std = (1.0 / np.sqrt(var + self.eps)).astype(self.dtype)
        gamma, beta = self._affine()
        out = kernels.bn_normalize(x3, mean, inv_std, gamma, beta)
        return out.reshape(x.shape), (x3, mean, inv_std, self._uses_batch_stats)

    def _backward(self, dout, cache):
        x3, mean, inv_std, batch_stats = cache
        gamma, _ = self._affine()
        dx, dgamma, dbeta = kernels.bn_backward(
            dout.reshape(x3.shape), x3, mean, inv_std, gamma, batch_stats)
        grads = {"weight": dgamma, "bias": dbeta} if self.affine else {}
        return dx.reshape(dout.shape), grads

    def _affine(self):
        if self.affine:
            return self.params["weight"], self.params["bias"]
        return np.ones(self.num_features, self.dtype), np.zeros(self.num_features, self.dtype)

    def _update_running_stats(self, mean, var, count):
        """Exponential (or, with momentum None, cumulative) average, in place."""
        tracked = int(self.buffers["num_batches_tracked"]) + 1
        # a damaged (negative) count restarts the cumulative average with this batch
        weight = 1.0 / max(tracked, 1) if self.momentum is None else self.momentum
        if self.unbiased:
            var = var * count / (count - 1)
        old = [self.buffers["running_mean"], self.buffers["running_var"]]
        # the running buffer's own dtype for the decayed part, as PyTorch's in-place
        # update; weight 1 keeps only the batch (also over a NaN or inf, where 0 * inf
        # would be NaN)
        new = [batch if weight == 1 else (1.0 - weight) * running + weight * batch
               for running, batch in zip(old, (mean, var))]
        # channels damaged before (NaN or inf, e.g. loaded from a damaged file) may stay
        # so, as in PyTorch: the check is for values this update pushes out of range;
        # varshift.diagnose reports the damage and varshift.recalibrate replaces it
        damaged = ~(np.isfinite(old[0]) & np.isfinite(old[1]))
        self._write_running_stats(*new, tracked, damaged)

    def set_running_stats(self, mean, var, num_batches_tracked) -> None:
        """Replace ``running_mean``, ``running_var`` and ``num_batches_tracked``.

        Parameters
        ----------
        mean, var : array_like of shape (C,)
        num_batches_tracked : int

        Raises
        ------
        varshift.NonFiniteError
            If a value is NaN or does not fit the layer's dtype (e.g. the variance of
            inputs near the float32 limit); nothing is written then.
        """
        self._write_running_stats(mean, var, num_batches_tracked)

    def _write_running_stats(self, mean, var, num_batches_tracked, exempt=None):
        """:meth:`set_running_stats`, not checking the channels where ``exempt`` (a
        boolean mask of shape (C,)) is True."""
        # describe() (a repr) only for an error: it costs more than a small layer's step
        stats = running_stats({"running_mean": mean, "running_var": var}, self.dtype,
                              self.describe, exempt=exempt)
        for key, value in stats.items():
            self.buffers[key][...] = value
        self.buffers["num_batches_tracked"][...] = num_batches_tracked
