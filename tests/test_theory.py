"""varshift.theory: closed forms against Monte Carlo, the paper's values and limits."""

import itertools

import numpy as np
import pytest

from varshift import nn
from varshift import theory as T


def within(mc, exact, k=4.0):
    assert abs(mc.estimate - exact) <= k * mc.stderr, (mc, exact)
    assert mc.stderr < 0.02  # the check has power


@pytest.mark.parametrize("p, c, v", list(itertools.product([0.3, 0.7, 0.95], [0.0, 0.5, 2.0], [0.5, 2.0])))
def test_case_a_dropout_matches_monte_carlo(p, c, v):
    within(T.monte_carlo("dropout", p=p, c=c, v=v, n=100_000, seed=1), T.shift_dropout_bn(p, c, v))


@pytest.mark.parametrize("beta, c", list(itertools.product([0.1, 0.5, 1.0, 2.0], [0.0, 1.0])))
def test_uout_matches_monte_carlo(beta, c):
    within(T.monte_carlo("uout", beta=beta, c=c, n=100_000, seed=2), T.shift_uout(beta, c))


@pytest.mark.parametrize("sigma2, c", list(itertools.product([0.1, 0.5, 1.0], [0.0, 1.0])))
def test_gaussian_matches_monte_carlo(sigma2, c):
    within(T.monte_carlo("gaussian", sigma2=sigma2, c=c, n=100_000, seed=3), T.shift_gaussian(sigma2, c))


@pytest.mark.parametrize("p, d, cos2, rho", list(itertools.product([0.5, 0.9], [8, 64, 256], [0.02, 0.2], [0.0, 0.3])))
def test_case_b_matches_monte_carlo(p, d, cos2, rho):
    mc = T.monte_carlo("dropout_weight", p=p, d=d, cos2=cos2, rho=rho, c=0.5, v=1.0, n=20_000, seed=4)
    within(mc, T.shift_dropout_weight_bn(p, d, cos2, rho, c=0.5, v=1.0))


def test_case_b_with_explicit_random_weights():
    w = np.random.default_rng(0).normal(0.1, 1, 64)
    d_cos2 = w.sum() ** 2 / (w @ w)
    mc = T.monte_carlo("dropout_weight", p=0.5, c=0.5, v=1.0, rho=0.3, weights=w, n=40_000)
    within(mc, T.shift_dropout_weight_bn(0.5, rho=0.3, c=0.5, v=1.0, d_cos2=d_cos2))
    # variances themselves, not only their ratio (|w|^2 scales both)
    kw = dict(c=0.5, v=1.0, rho=0.3, d_cos2=d_cos2, w_norm2=w @ w)
    assert mc.train_var == pytest.approx(T.train_variance("dropout", p=0.5, **kw), rel=0.05)
    assert mc.test_var == pytest.approx(T.test_variance(**kw), rel=0.05)


def test_paper_worked_values():
    assert T.shift_uout(0.1) == pytest.approx(300 / 301, rel=1e-15)  # Eq. 15
    assert T.shift_dropout_bn(0.9) == pytest.approx(0.9)               # drop 0.1, c = 0
    # the digest's independent check of Eq. 8
    np.testing.assert_allclose(T.shift_dropout_bn([0.5, 0.5, 0.9], [0, 1, 0.5], [1, 1, 2]),
                               [0.5, 1 / 3, 0.88889], rtol=1e-5)
    assert T.shift_uout(0.5) == pytest.approx(0.92308, rel=1e-5)


def test_eq14_is_eq12():
    p, d, cos2, rho, c, v = 0.6, 300, 0.03, 0.25, 0.7, 1.3
    dc = d * cos2
    eq14 = (v * rho + v * (1 - rho) / dc) / (v * rho + ((1 / p - 1) * c * c + v * (1 / p - rho)) / dc)
    assert T.shift_dropout_weight_bn(p, d, cos2, rho, c, v) == pytest.approx(eq14, rel=1e-13)


def test_limits_and_equivalences():
    p = np.array([0.3, 0.5, 0.9])
    assert np.allclose(T.shift_dropout_weight_bn(p, rho=0.3, d_cos2=1e9), 1.0, atol=1e-6)  # wide
    np.testing.assert_allclose(T.shift_dropout_weight_bn(p, 4096, 0.05, rho=0.0, c=1.0),
                               T.shift_dropout_bn(p, c=1.0))                            # rho = 0
    np.testing.assert_allclose(T.shift_dropout_weight_bn(p, rho=0.3, d_cos2=1.0),
                               T.shift_dropout_bn(p))           # d cos^2 = 1: random weights
    np.testing.assert_allclose(T.shift_gaussian((1 - p) / p), p)  # Gaussian = Bernoulli
    assert np.all(np.diff(T.shift_dropout_bn(np.linspace(0.1, 1, 10), c=1.0)) > 0)
    assert T.shift_dropout_bn(1.0, c=3.0) == 1.0


def test_functions_broadcast():
    out = T.shift_dropout_bn(np.linspace(0.1, 1, 5)[:, None], c=np.array([0.0, 1.0, 2.0]))
    assert out.shape == (5, 3)
    grid = T.shift_dropout_weight_bn(np.linspace(0.1, 1, 4)[:, None], rho=0.3,
                                     d_cos2=np.logspace(0, 3, 6)[None])
    assert grid.shape == (4, 6) and np.all((grid > 0) & (grid <= 1))


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"p must be in \(0, 1\]"):
        T.shift_dropout_bn(0.0)
    with pytest.raises(ValueError, match="beta must be in"):
        T.shift_uout(-0.1)
    with pytest.raises(ValueError, match="give d and cos2, or d_cos2"):
        T.shift_dropout_weight_bn(0.5, d=10)
    with pytest.raises(ValueError, match="case must be one of"):
        T.monte_carlo("spatial", p=0.5)
    with pytest.raises(ValueError, match="rho must be in"):
        T.monte_carlo("dropout", p=0.5, rho=1.0)


def test_weight_cos2():
    w = T.weights_with_cos2(100, 0.07, seed=3)
    assert w @ w == pytest.approx(1.0) and w.sum() ** 2 / (100 * (w @ w)) == pytest.approx(0.07)
    model = nn.Sequential(nn.Conv2D(3, 64, 3), nn.Flatten(), nn.Dense(64, 512), seed=0)
    angles = T.weight_cos2(model)
    assert [(a.name, a.d) for a in angles] == [("0", 27), ("2", 64)]
    # iid zero-mean random weights: E[(sum w)^2 / sum w^2] = 1, so d cos^2 ~ 1
    assert angles[1].d_cos2 == pytest.approx(1.0, abs=0.15)
    model[2].params["weight"][:] = np.abs(model[2].params["weight"])  # a common direction
    assert T.weight_cos2(model)[1].d_cos2 > 30
