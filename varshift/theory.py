"""Li et al.'s variance shift in closed form, and a Monte Carlo sampler that checks it.

Setting (Li, Chen, Hu & Yang, CVPR 2019, section 3): the units entering BatchNorm have
mean ``c`` and variance ``v``; in training each is multiplied by independent noise
``m`` with ``E[m] = 1`` -- inverted Bernoulli dropout ``a / p`` (``p`` the *retain*
ratio), Uout ``1 + r`` with ``r ~ U(-beta, beta)``, or Gaussian ``1 + sigma n`` --
and at inference the noise is gone. Every function returns (or uses) Li et al.'s
``Delta = Var_test / Var_train <= 1``; 1 means no shift, and BatchNorm's running
variance is then ``1 / Delta`` times too large at inference.

Only ``E[m^2]`` matters: ``1 / p`` (dropout), ``1 + beta^2 / 3`` (Uout),
``1 + sigma^2`` (Gaussian). Case (a) puts the noise right before BatchNorm, case (b)
before a weight layer ``w`` (d inputs, equicorrelated with correlation ``rho``) that
feeds BatchNorm. All functions broadcast over array arguments.

Where a function takes a noise by name with the paper's parameter (``p``, ``beta`` or
``sigma2``), a noise layer of :mod:`varshift.nn.noise` can stand instead: it states its
own ``E[m^2]`` and draws its own noise, and a layer that does not state them raises
rather than getting another noise's closed form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "shift_dropout_bn", "shift_dropout_weight_bn", "shift_uout", "shift_gaussian",
    "noise_second_moment", "train_variance", "test_variance", "monte_carlo", "MonteCarlo",
    "weight_cos2", "WeightAngle", "weights_with_cos2",
]

NOISES = ("dropout", "uout", "gaussian")


def noise_second_moment(noise="dropout", *, p=None, beta=None, sigma2=None):
    """``E[m^2]`` of the multiplicative noise (``E[m] = 1`` for all three).

    Parameters
    ----------
    noise : {'dropout', 'uout', 'gaussian'} or noise layer
        The noise by name, with its parameter below; or a layer of
        :mod:`varshift.nn.noise` (``nn.Dropout(0.5)``, ...), which states its own
        ``second_moment``, and then none of ``p``, ``beta``, ``sigma2``.
    p : array_like, for dropout
        Retain ratio in (0, 1] (drop rate ``1 - p``).
    beta : array_like, for uout
        Half-width >= 0 of the uniform noise.
    sigma2 : array_like, for gaussian
        Noise variance >= 0.

    Returns
    -------
    ndarray
        ``1 / p``, ``1 + beta^2 / 3``, ``1 + sigma2``, or the layer's ``second_moment``.

    Raises
    ------
    ValueError
        An unknown name, a missing or invalid parameter, or a parameter given with a
        layer.
    NotImplementedError
        A noise layer that does not state its ``second_moment``.
    """
    if not isinstance(noise, str):
        if any(value is not None for value in (p, beta, sigma2)):
            raise ValueError(f"{noise!r} states its own noise: give no p, beta or sigma2 with it")
        return np.asarray(noise.second_moment, float)
    if noise == "dropout":
        p = _check(p, "p", lo=0, lo_open=True, hi=1)
        return 1.0 / p
    if noise == "uout":
        beta = _check(beta, "beta", lo=0)
        return 1.0 + beta * beta / 3.0
    if noise == "gaussian":
        return 1.0 + _check(sigma2, "sigma2", lo=0)
    raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")


def train_variance(noise="dropout", *, p=None, beta=None, sigma2=None, c=0.0, v=1.0,
                   d_cos2=None, rho=0.0, w_norm2=1.0):
    """Variance of BatchNorm's input in training.

    Parameters
    ----------
    noise, p, beta, sigma2
        The noise, by name with its parameter or as a noise layer; see
        :func:`noise_second_moment`.
    c, v : array_like
        Mean and variance (> 0) of each unit before the noise.
    d_cos2 : array_like, optional
        ``d cos^2(theta)`` of the weights (Eq. 13); None for case (a), no weights.
    rho : array_like
        Correlation of the units (case (b)).
    w_norm2 : array_like
        ``sum w_i^2`` (case (b)).

    Returns
    -------
    ndarray

    Notes
    -----
    Case (a), Eq. 7: ``E[m^2] (c^2 + v) - c^2`` (``(c^2 + v) / p - c^2`` for dropout).
    Case (b), Eq. 9 with Eq. 11 and 13:
    ``|w|^2 [E[m^2] (c^2 + v) - c^2 + rho v (d cos^2 - 1)]``.
    """
    m2 = noise_second_moment(noise, p=p, beta=beta, sigma2=sigma2)
    c, v = np.asarray(c, float), _check(v, "v", lo=0, lo_open=True)
    own = m2 * (c * c + v) - c * c
    if d_cos2 is None:
        return own
    return np.asarray(w_norm2, float) * (own + _cross(rho, v, d_cos2))


def test_variance(*, c=0.0, v=1.0, d_cos2=None, rho=0.0, w_norm2=1.0):
    """Variance of BatchNorm's input at inference (no noise).

    Notes
    -----
    Case (a): ``v``. Case (b), Eq. 10: ``|w|^2 [v + rho v (d cos^2 - 1)]``.
    """
    v = _check(v, "v", lo=0, lo_open=True) + 0 * np.asarray(c, float)
    if d_cos2 is None:
        return v
    return np.asarray(w_norm2, float) * (v + _cross(rho, v, d_cos2))


def _cross(rho, v, d_cos2):
    """``rho v (d cos^2 - 1)``: the correlated part, unchanged by the noise."""
    return np.asarray(rho, float) * v * (_check(d_cos2, "d_cos2", lo=0) - 1.0)


def shift_dropout_bn(p, c=0.0, v=1.0):
    """Case (a): Dropout directly before BatchNorm (Eq. 7-8).

    Parameters
    ----------
    p : array_like
        Retain ratio in (0, 1].
    c, v : array_like
        Mean and variance of the units.

    Returns
    -------
    ndarray
        ``Delta(p) = v / ((c^2 + v) / p - c^2)``; equals ``p`` for ``c = 0``.
    """
    return test_variance(c=c, v=v) / train_variance("dropout", p=p, c=c, v=v)


def shift_dropout_weight_bn(p, d=None, cos2=None, rho=0.0, c=0.0, v=1.0, *, d_cos2=None):
    """Case (b): Dropout, then a weight layer with d inputs, then BatchNorm (Eq. 9-14).

    Parameters
    ----------
    p : array_like
        Retain ratio in (0, 1].
    d, cos2 : array_like
        Fan-in of the weight layer (C_in * k * k for a convolution) and
        ``cos^2(theta) = (sum w)^2 / (d sum w^2)`` (Eq. 13) of its weights;
        or give ``d_cos2`` directly.
    rho : array_like
        Correlation between the units.
    c, v : array_like

    Returns
    -------
    ndarray
        Eq. 12: ``[v + v rho (d cos^2 - 1)] / [(c^2 + v) / p - c^2 + v rho (d cos^2 - 1)]``,
        which tends to 1 as ``d cos^2`` grows (with rho > 0): the Wide ResNet effect.
        With ``rho = 0`` it is case (a) whatever d.
    """
    if d_cos2 is None:
        if d is None or cos2 is None:
            raise ValueError("shift_dropout_weight_bn: give d and cos2, or d_cos2")
        d_cos2 = np.asarray(d, float) * _check(cos2, "cos2", lo=0, hi=1)
    kw = dict(c=c, v=v, d_cos2=d_cos2, rho=rho)
    return test_variance(**kw) / train_variance("dropout", p=p, **kw)


def shift_uout(beta, c=0.0, v=1.0):
    """Uout, ``x (1 + r)`` with ``r ~ U(-beta, beta)``, before BatchNorm (Eq. 15).

    Returns
    -------
    ndarray
        ``v / ((c^2 + v)(1 + beta^2 / 3) - c^2)``; ``3 / (3 + beta^2)`` for ``c = 0``
        (300/301 at beta = 0.1).
    """
    return test_variance(c=c, v=v) / train_variance("uout", beta=beta, c=c, v=v)


def shift_gaussian(sigma2, c=0.0, v=1.0):
    """Gaussian dropout, ``x (1 + sigma n)``, before BatchNorm.

    Returns
    -------
    ndarray
        ``v / ((c^2 + v)(1 + sigma^2) - c^2)``; ``1 / (1 + sigma^2)`` for ``c = 0``,
        equal to Bernoulli dropout's ``p`` when ``sigma^2 = (1 - p) / p``.
    """
    return test_variance(c=c, v=v) / train_variance("gaussian", sigma2=sigma2, c=c, v=v)


def _check(value, name, lo=None, hi=None, lo_open=False):
    arr = np.asarray(value, dtype=float)
    if value is None or arr.size == 0:
        raise ValueError(f"{name} is required")
    bad = ~np.isfinite(arr)
    if lo is not None:
        bad |= (arr <= lo) if lo_open else (arr < lo)
    if hi is not None:
        bad |= arr > hi
    if np.any(bad):
        interval = f"{'(' if lo_open else '['}{lo}, {hi if hi is not None else 'inf'}{']' if hi is not None else ')'}"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return arr


# ---------------------------------------------------------------------- Monte Carlo
@dataclass
class MonteCarlo:
    """A simulated Delta with its standard error.

    Attributes
    ----------
    estimate : float
        ``Var_test / Var_train`` over all samples.
    stderr : float
        Standard error, from the spread of the estimate over independent batches.
    train_var, test_var : float
    n : int
        Samples drawn (per mode).
    """

    estimate: float
    stderr: float
    train_var: float
    test_var: float
    n: int


def weights_with_cos2(d, cos2, seed=0):
    """A unit-norm weight vector of length ``d`` with exactly the given ``cos^2(theta)``.

    ``w = sqrt(cos2) 1 / sqrt(d) + sqrt(1 - cos2) u`` with ``u`` a random unit vector
    orthogonal to the all-ones vector.
    """
    d = int(d)
    cos2 = float(_check(cos2, "cos2", lo=0, hi=1))
    ones = np.ones(d) / np.sqrt(d)
    if d == 1:
        return np.ones(1)
    u = np.random.default_rng(seed).standard_normal(d)
    u -= u.mean()
    u /= np.linalg.norm(u)
    return np.sqrt(cos2) * ones + np.sqrt(1.0 - cos2) * u


def monte_carlo(case="dropout", *, p=None, beta=None, sigma2=None, c=0.0, v=1.0, rho=0.0,
                d=None, cos2=None, weights=None, n=200_000, batches=40, seed=0) -> MonteCarlo:
    """Simulate a case with explicit noise, weights and equicorrelated inputs.

    Parameters
    ----------
    case : {'dropout', 'uout', 'gaussian', 'dropout_weight'} or noise layer
        Noise right before BatchNorm (case (a) and its variants), or Dropout before a
        weight layer (case (b)). A layer of :mod:`varshift.nn.noise` is case (a) with
        the layer's own noise (its ``sample``, drawn from this function's stream).
    p, beta, sigma2, c, v, rho
        As in the closed forms (scalars); no ``p``, ``beta`` or ``sigma2`` with a layer.
    d, cos2 : optional
        Case (b): fan-in and cos^2(theta) of generated weights
        (:func:`weights_with_cos2`), or give ``weights`` (shape (d,)).
    n : int, default 200000
        Samples per mode.
    batches : int, default 40
        Independent batches for the standard error.
    seed : int, default 0

    Returns
    -------
    MonteCarlo

    Notes
    -----
    Inputs ``x_i = c + sqrt(v) (sqrt(rho) z_0 + sqrt(1 - rho) z_i)`` with standard
    normal ``z``, so ``Var x_i = v`` and ``Corr(x_i, x_j) = rho``. Training computes
    ``sum_i w_i m_i x_i`` (case (b)) or ``m x`` (case (a)), inference the same without
    ``m``; both use the same ``x``.
    """
    rng = np.random.default_rng(seed)
    if case == "dropout_weight":
        if weights is None:
            if d is None or cos2 is None:
                raise ValueError("monte_carlo: case 'dropout_weight' needs d and cos2, or weights")
            weights = weights_with_cos2(d, cos2, seed=seed + 1)
        w = np.asarray(weights, float)
        noise = "dropout"
    elif not isinstance(case, str) or case in NOISES:
        w = np.ones(1)
        noise = case
    else:
        raise ValueError(f"monte_carlo: case must be one of {NOISES + ('dropout_weight',)}, got {case!r}")
    rho = float(rho)
    if not 0 <= rho < 1:
        raise ValueError(f"monte_carlo: rho must be in [0, 1), got {rho}")
    params = dict(p=p, beta=beta, sigma2=sigma2)
    noise_second_moment(noise, **params)  # validates the noise parameter (or the layer's)
    per = max(2, n // batches)
    rows = max(1, min(per, 2_000_000 // w.size))
    sums = np.zeros((batches, 2, 3))  # per batch, (train, test), (count, sum, sum of squares)
    for b in range(batches):
        for start in range(0, per, rows):
            m = min(rows, per - start)
            z0 = rng.standard_normal((m, 1))
            x = c + np.sqrt(v) * (np.sqrt(rho) * z0 + np.sqrt(1 - rho) * rng.standard_normal((m, w.size)))
            noisy = x * _draw_noise(rng, noise, (m, w.size), **params)
            for mode, values in enumerate((noisy @ w, x @ w)):
                sums[b, mode] += (m, values.sum(), values @ values)
    count, total, squares = sums[..., 0], sums[..., 1], sums[..., 2]
    batch_var = (squares - total ** 2 / count) / (count - 1)
    pooled = (squares.sum(0) - total.sum(0) ** 2 / count.sum(0)) / (count.sum(0) - 1)
    ratios = batch_var[:, 1] / batch_var[:, 0]
    return MonteCarlo(float(pooled[1] / pooled[0]), float(ratios.std(ddof=1) / np.sqrt(batches)),
                      float(pooled[0]), float(pooled[1]), per * batches)


def _draw_noise(rng, noise, shape, p=None, beta=None, sigma2=None):
    if not isinstance(noise, str):
        return noise.sample(rng, shape)
    if noise == "dropout":
        return (rng.random(shape) < p) / p
    if noise == "uout":
        return 1.0 + rng.uniform(-beta, beta, shape)
    return 1.0 + np.sqrt(sigma2) * rng.standard_normal(shape)


# ---------------------------------------------------------------------- weights
@dataclass
class WeightAngle:
    """cos^2(theta) of one weight layer's filters (Li et al., Eq. 13, Fig. 3, Table 1).

    Attributes
    ----------
    name : str
    d : int
        Fan-in: ``in_features`` or ``C_in * prod(kernel)``.
    cos2 : float
        Mean over output units (filters) of ``(sum w)^2 / (d sum w^2)``.
    d_cos2 : float
        ``d * cos2``.
    per_filter : ndarray of shape (out,)
    """

    name: str
    d: int
    cos2: float
    d_cos2: float
    per_filter: np.ndarray


def weight_cos2(model) -> list:
    """cos^2(theta) and d cos^2(theta) of every Dense and Conv layer of ``model``.

    Returns
    -------
    list of WeightAngle
        In network order. For iid zero-mean random weights ``d cos^2 ~ 1``; trained
        filters with a common direction give ``d cos^2 >> 1``.
    """
    out = []
    for path, layer in model.walk():
        if layer.kind in ("dense", "conv"):
            w = layer.params["weight"].astype(np.float64).reshape(layer.params["weight"].shape[0], -1)
            d = w.shape[1]
            norm2 = np.sum(w * w, axis=1)
            per = np.where(norm2 > 0, w.sum(axis=1) ** 2 / (d * np.where(norm2 > 0, norm2, 1)), 0.0)
            out.append(WeightAngle(path, d, float(per.mean()), float(d * per.mean()), per))
    return out
