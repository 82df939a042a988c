"""Mergeable per-channel moments (Chan et al.'s parallel update), in float64."""

from __future__ import annotations

import numpy as np

from . import kernels

__all__ = ["RunningMoments", "ratio", "symmetric_shift", "deviation_in_stds"]


def ratio(a, b):
    """``a / b`` elementwise (float64), without warnings: ``0 / 0`` is 1 (two equal
    zero variances: no change), ``x / 0`` is inf for x > 0, NaN stays NaN."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    shape = np.broadcast(a, b).shape
    out = np.broadcast_to(np.where(a == 0, 1.0, np.inf), shape).copy()
    out[np.broadcast_to(np.isnan(a) | np.isnan(b), shape)] = np.nan
    return np.divide(a, b, out=out, where=b != 0)


def symmetric_shift(r):
    """Li et al.'s symmetric metric ``max(r, 1/r)`` of a ratio (``1/0`` is inf, NaN
    stays NaN), without warnings."""
    shift = np.maximum(r, ratio(1.0, r))
    return shift if shift.ndim else float(shift)


def deviation_in_stds(a, b, var):
    """``|a - b| / sqrt(var)`` elementwise, without warnings: 0 where ``a == b``
    and ``var == 0``, inf where they differ."""
    d = np.abs(np.asarray(a, np.float64) - b)
    return np.where(d == 0, 0.0, ratio(d, np.sqrt(np.maximum(var, 0))))


class RunningMoments:
    """Count, mean and sum of squared deviations per channel, updated batch by batch.

    Channels are axis 1 of every array given to :meth:`update`; all other axes are
    pooled. Memory is O(channels) whatever the amount of data, and two accumulators
    over disjoint data combine exactly with :meth:`merge`.

    Attributes
    ----------
    count : float
        Values seen per channel.
    mean, m2 : ndarray of shape (C,), float64
        Mean and sum of squared deviations from it.

    Notes
    -----
    Merging (n_a, mu_a, M2_a) with (n_b, mu_b, M2_b): ``n = n_a + n_b``,
    ``delta = mu_b - mu_a``, ``mu = mu_a + delta n_b / n``,
    ``M2 = M2_a + M2_b + delta^2 n_a n_b / n`` (Chan, Golub & LeVeque, 1979).
    """

    def __init__(self, channels: int):
        self.count = 0.0
        self.mean = np.zeros(channels)
        self.m2 = np.zeros(channels)

    @property
    def channels(self) -> int:
        return self.mean.shape[0]

    def update(self, x) -> "RunningMoments":
        """Add a batch ``x`` of shape (N, C, ...); returns self."""
        x3 = np.ascontiguousarray(x).reshape(x.shape[0], x.shape[1], -1)
        if x3.shape[1] != self.channels:
            raise ValueError(f"RunningMoments: expected {self.channels} channels, got {x3.shape[1]}")
        if x3.dtype.kind != "f":
            x3 = x3.astype(np.float64)
        count = x3.shape[0] * x3.shape[2]
        if count == 0:
            return self
        mean, var = kernels.bn_moments(x3)
        return self._combine(float(count), mean, var * count)

    def merge(self, other: "RunningMoments") -> "RunningMoments":
        """Statistics of both data sets together (a new object)."""
        if other.channels != self.channels:
            raise ValueError(f"RunningMoments.merge: {self.channels} channels vs {other.channels}")
        out = RunningMoments(self.channels)._combine(self.count, self.mean, self.m2)
        return out._combine(other.count, other.mean, other.m2)

    def _combine(self, count, mean, m2):
        total = self.count + count
        if count == 0:
            return self
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + m2 + delta * delta * (self.count * count / total)
        self.count = total
        return self

    def var(self, ddof: int = 0) -> np.ndarray:
        """Per-channel variance (population for ``ddof=0``, unbiased for 1)."""
        if self.count - ddof <= 0:
            return np.full(self.channels, np.nan)
        return self.m2 / (self.count - ddof)

    def to_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean.tolist(), "m2": self.m2.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "RunningMoments":
        out = cls(len(d["mean"]))
        out.count, out.mean, out.m2 = float(d["count"]), np.asarray(d["mean"], float), np.asarray(d["m2"], float)
        return out
