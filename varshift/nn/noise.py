"""Multiplicative noise layers: Dropout, Uout and Gaussian dropout.

Each multiplies its input element-wise by random noise ``m`` with E[m] = 1 in train
mode and is the identity in inference mode; backward multiplies by the same ``m``.
They differ only in the distribution of ``m``, which is where Li et al.'s variance
shift comes from: the train-mode variance of ``x m`` is ``E[m^2] E[x^2] - E[x]^2``.

Each layer states ``E[m^2]`` (:attr:`~Dropout.second_moment`) and draws ``m`` from a
given generator (:meth:`~Dropout.sample`); :mod:`varshift.theory` and the
reproduction ask the layer for both. :data:`NOISES` names the layers.
"""

from __future__ import annotations

import numpy as np

from .._validate import fraction, real
from .._validate import seed as check_seed
from ..backends.modes import Kind
from .layer import Layer

__all__ = ["Dropout", "Uout", "GaussianDropout", "NOISES"]


class _MultiplicativeNoise(Layer):
    """Shared train/eval logic; subclasses define :meth:`sample` and
    :attr:`second_moment`."""

    kind = Kind.DROPOUT

    def __init__(self, seed=None):
        super().__init__()
        self.seed = check_seed(seed, "seed", type(self).__name__)
        self.rng = np.random.default_rng(self.seed)

    def _initialize(self, rng):
        self.rng = rng

    def _forward(self, x):
        if not self.training:
            return x, None
        noise = self._noise(x.shape, x.dtype)
        return x * noise, noise

    def _backward(self, dout, noise):
        return (dout if noise is None else dout * noise), {}

    def _noise(self, shape, dtype):
        return self.sample(self.rng, shape, dtype)

    def sample(self, rng, shape, dtype=np.float64):
        """Draw the noise ``m`` element-wise.

        Parameters
        ----------
        rng : numpy.random.Generator
            The stream to draw from (the layer draws from its own ``rng``).
        shape : tuple of int
        dtype : numpy dtype, default float64

        Returns
        -------
        ndarray of the given shape and dtype
        """
        raise NotImplementedError(f"{type(self).__name__} does not define sample(rng, shape, dtype)")

    @property
    def second_moment(self) -> float:
        """``E[m^2]`` of the noise (``E[m] = 1``), the only statistic of ``m`` that
        Li et al.'s variance shift depends on.

        Raises
        ------
        NotImplementedError
            For a noise layer that does not state it: theory never guesses it.
        """
        raise NotImplementedError(f"{type(self).__name__} does not state E[m^2] of its noise: "
                                  f"define its second_moment property")


class Dropout(_MultiplicativeNoise):
    """Inverted Bernoulli dropout.

    Parameters
    ----------
    rate : float in [0, 1), default 0.5
        Drop probability; the retain ratio of Li et al. is ``p = 1 - rate``.
    seed : int >= 0, optional
        Seed of the layer's random stream (a seeded container reseeds it). It is
        saved with the model, so it must be a plain integer, not a Generator.

    Notes
    -----
    ``m = a / p`` with ``a ~ Bernoulli(p)`` per element, so ``E[m] = 1`` and
    ``E[m^2] = 1 / p``.
    """

    def __init__(self, rate=0.5, seed=None):
        self.rate = fraction(rate, "rate", "Dropout")
        super().__init__(seed)

    @property
    def second_moment(self) -> float:
        """``E[m^2]`` of the noise.

        Notes
        -----
        ``E[m^2] = p (1 / p)^2 = 1 / p`` with ``p = 1 - rate`` (Li et al., Eq. 7).
        """
        return 1.0 / (1.0 - self.rate)

    def sample(self, rng, shape, dtype=np.float64):
        dtype = np.dtype(dtype)
        keep = 1.0 - self.rate
        return (rng.random(shape, dtype=dtype) < keep) * dtype.type(1.0 / keep)


class Uout(_MultiplicativeNoise):
    """Li et al.'s uniform dropout: ``x (1 + r)``, ``r ~ U(-beta, beta)`` per element.

    Parameters
    ----------
    beta : float >= 0, default 0.1
    seed : int, optional

    Notes
    -----
    ``E[m] = 1`` and ``E[m^2] = 1 + beta^2 / 3``; for zero-mean input the
    variance shift is ``3 / (3 + beta^2)`` (Li et al., Eq. 15).
    """

    def __init__(self, beta=0.1, seed=None):
        self.beta = real(beta, "beta", "Uout", 0)
        super().__init__(seed)

    @property
    def second_moment(self) -> float:
        """``E[m^2]`` of the noise.

        Notes
        -----
        ``E[m^2] = 1 + Var r = 1 + beta^2 / 3`` for ``r ~ U(-beta, beta)``.
        """
        return 1.0 + self.beta * self.beta / 3.0

    def sample(self, rng, shape, dtype=np.float64):
        dtype = np.dtype(dtype)
        u = rng.random(shape, dtype=dtype)
        return dtype.type(1.0 - self.beta) + dtype.type(2.0 * self.beta) * u


class GaussianDropout(_MultiplicativeNoise):
    """Gaussian dropout: ``x (1 + sigma n)``, ``n ~ N(0, 1)``, ``sigma^2 = rate/(1-rate)``.

    Parameters
    ----------
    rate : float in [0, 1), default 0.5
        The Bernoulli drop rate with the same noise variance.
    seed : int, optional

    Notes
    -----
    ``E[m^2] = 1 / (1 - rate)``, as for :class:`Dropout` with the same rate.
    """

    def __init__(self, rate=0.5, seed=None):
        self.rate = fraction(rate, "rate", "GaussianDropout")
        super().__init__(seed)

    @property
    def second_moment(self) -> float:
        """``E[m^2]`` of the noise.

        Notes
        -----
        ``E[m^2] = 1 + sigma^2 = 1 / (1 - rate)``.
        """
        return 1.0 / (1.0 - self.rate)

    def sample(self, rng, shape, dtype=np.float64):
        dtype = np.dtype(dtype)
        sigma = np.sqrt(self.rate / (1.0 - self.rate))
        return dtype.type(1.0) + dtype.type(sigma) * rng.standard_normal(shape, dtype=dtype)


NOISES = {"dropout": Dropout, "uout": Uout, "gaussian": GaussianDropout}
"""The noise layers by name: the one vocabulary of the reproduction's networks."""
