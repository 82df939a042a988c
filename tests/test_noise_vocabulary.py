"""One noise vocabulary: every noise layer states E[m^2] and draws its own noise, and
theory and the reproduction ask the layer instead of guessing from its type."""

import numpy as np
import pytest

from varshift import nn
from varshift import theory as T
from varshift.nn.noise import NOISES, _MultiplicativeNoise
from varshift.reproduce import experiments, networks

LAYERS = [nn.Dropout(0.1), nn.Dropout(0.5), nn.Dropout(0.9), nn.Uout(0.1), nn.Uout(1.0),
          nn.GaussianDropout(0.2), nn.GaussianDropout(0.7)]


class _Silent(_MultiplicativeNoise):
    """A new noise layer that draws its noise but does not state its moments."""

    def __init__(self, rate=0.5, seed=None):
        self.rate = rate
        super().__init__(seed)

    def sample(self, rng, shape, dtype=np.float64):
        return np.where(rng.random(shape) < 0.5, 1.0 - self.rate, 1.0 + self.rate).astype(dtype)


class _TwoPoint(_Silent):
    """``m = 1 -+ rate`` with probability 1/2 each: ``E[m^2] = 1 + rate^2``, which is
    not Dropout's ``1 / (1 - rate)`` at the same ``rate``."""

    @property
    def second_moment(self):
        return 1.0 + self.rate * self.rate


def _inputs(seed=0, shape=(400, 6, 12)):
    """Correlated inputs with a nonzero mean, as they enter a noise layer."""
    rng = np.random.default_rng(seed)
    return 0.7 + rng.standard_normal((shape[0], 1, 1)) + rng.standard_normal(shape)


@pytest.mark.parametrize("layer", LAYERS, ids=repr)
def test_stated_second_moment_matches_the_layers_own_noise(layer):
    """E[m] = 1 and E[m^2] = second_moment within 5 standard errors of the mean of
    400,000 draws of the noise the layer applies in training (its float32 forward)."""
    layer.rng = np.random.default_rng(7)
    m = layer.train().forward(np.ones((1000, 400), np.float32)).astype(np.float64).ravel()
    for values, expected in ((m, 1.0), (m * m, layer.second_moment)):
        stderr = values.std(ddof=1) / np.sqrt(values.size)
        assert abs(values.mean() - expected) <= 5 * stderr, (layer, values.mean(), expected, stderr)
        assert 5 * stderr < 0.03 * expected  # the check has power: it sees a 3 % error


@pytest.mark.parametrize("layer", LAYERS, ids=repr)
def test_sample_draws_what_the_layer_applies(layer):
    """The layer's training noise is its :meth:`sample` from its own stream."""
    layer.rng = np.random.default_rng(3)
    applied = layer.train().forward(np.ones((8, 5), np.float32))
    np.testing.assert_array_equal(applied, layer.sample(np.random.default_rng(3), (8, 5), np.float32))


@pytest.mark.parametrize("case", [dict(c=0.0, v=1.0), dict(c=[0.0, 0.5, 2.0], v=[1.0, 2.0, 0.5]),
                                  dict(c=0.5, v=1.5, d_cos2=[1.0, 40.0], rho=0.3, w_norm2=[1.0, 2.0])])
def test_closed_forms_through_the_layer_equal_the_explicit_parameters(case):
    """Bit for bit for Dropout and Uout (the reproduction's numbers do not move), to
    rounding for GaussianDropout (``sigma^2 = rate / (1 - rate)``)."""
    for rate in (0.1, 0.3, 0.7):
        explicit = {"p": 1 - rate}
        np.testing.assert_array_equal(T.train_variance(nn.Dropout(rate), **case),
                                      T.train_variance("dropout", **explicit, **case))
        np.testing.assert_array_equal(T.train_variance(nn.GaussianDropout(rate), **case),
                                      T.train_variance("dropout", **explicit, **case))
        np.testing.assert_allclose(T.train_variance(nn.GaussianDropout(rate), **case),
                                   T.train_variance("gaussian", sigma2=rate / (1 - rate), **case),
                                   rtol=1e-14)
    for beta in (0.1, 0.5, 1.0):
        np.testing.assert_array_equal(T.train_variance(nn.Uout(beta), **case),
                                      T.train_variance("uout", beta=beta, **case))
        assert T.noise_second_moment(nn.Uout(beta)) == T.noise_second_moment("uout", beta=beta)


@pytest.mark.parametrize("layer", [nn.Dropout(0.3), nn.Uout(1.0), nn.GaussianDropout(0.4), _TwoPoint(0.4)],
                         ids=repr)
def test_monte_carlo_of_a_layer_matches_the_closed_form_through_the_layer(layer):
    mc = T.monte_carlo(layer, c=0.5, v=1.0, n=100_000, seed=5)
    exact = T.test_variance(c=0.5, v=1.0) / T.train_variance(layer, c=0.5, v=1.0)
    assert abs(mc.estimate - exact) <= 4 * mc.stderr and mc.stderr < 0.02, (mc, exact)


def test_a_noise_layer_without_stated_moments_fails_loudly():
    silent = _Silent(0.3)
    message = r"_Silent does not state E\[m\^2\] of its noise"
    for ask in (lambda: silent.second_moment, lambda: T.noise_second_moment(silent),
                lambda: T.train_variance(silent, c=0.5), lambda: T.monte_carlo(silent, n=100),
                lambda: experiments._theory_point(silent.train(), _inputs(), None)):
        with pytest.raises(NotImplementedError, match=message):
            ask()
    with pytest.raises(NotImplementedError, match="does not define sample"):
        _MultiplicativeNoise().train().forward(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="give no p, beta or sigma2"):
        T.train_variance(nn.Dropout(0.5), p=0.5)


@pytest.mark.parametrize("layer, explicit", [(nn.Dropout(0.3, seed=1), ("dropout", {"p": 1 - 0.3})),
                                             (nn.Uout(0.5, seed=1), ("uout", {"beta": 0.5}))],
                         ids=["dropout", "uout"])
def test_theory_points_are_those_of_the_explicit_parameters(layer, explicit):
    """The reproduction's predictions, which the cached runs hold, do not move."""
    name, amount = explicit
    x = _inputs()
    a = experiments._theory_point(layer.train(), x, None)
    want = T.test_variance(c=a["c"], v=a["v"]) / T.train_variance(name, c=a["c"], v=a["v"], **amount)
    assert a["predicted"] == float(want)
    conv = nn.Conv1D(6, 4, 3, padding="same").initialize(2)
    b = experiments._theory_point(layer, x, conv)
    w = conv.params["weight"].astype(np.float64).reshape(4, -1)
    norm2 = np.sum(w * w, axis=1)
    kw = dict(c=b["c"], v=b["v"], rho=b["rho"], d_cos2=w.sum(axis=1) ** 2 / norm2, w_norm2=norm2)
    assert b["predicted"] == float(T.test_variance(**kw).sum()
                                   / T.train_variance(name, **kw, **amount).sum())


def test_theory_point_asks_the_layer_not_its_type():
    """A new noise layer with a ``rate`` gets its own closed form, not Dropout's, and
    that closed form is the one its measured ratio agrees with."""
    layer = _TwoPoint(0.6, seed=0).train()
    point = experiments._theory_point(layer, _inputs(), None, draws=20)
    c, v = point["c"], point["v"]
    assert point["predicted"] == pytest.approx(v / ((c * c + v) * (1 + 0.6 ** 2) - c * c), rel=1e-12)
    dropout = v / ((c * c + v) / (1 - 0.6) - c * c)
    assert abs(point["measured"] - point["predicted"]) < 0.1 * abs(point["measured"] - dropout)


def test_the_networks_draw_their_noise_layers_from_the_one_vocabulary():
    assert set(NOISES) == {"dropout", "uout", "gaussian"}
    for name, cls in NOISES.items():
        model = networks.preresnet("a", 0.3, noise=name, seed=0)
        noises = [layer for _, layer in model.walk() if layer.kind == "dropout"]
        assert noises and all(type(layer) is cls for layer in noises), name
    with pytest.raises(ValueError, match=r"noise must be one of \('dropout', 'uout', 'gaussian'\)"):
        networks.preresnet("a", 0.3, noise="spatial")


def test_a_gaussian_network_gets_gaussian_theory():
    model = networks.preresnet("a", 0.4, noise="gaussian", seed=0)
    points = experiments._theory_points(model, _inputs(shape=(200, 1, 40)), seed=0)
    assert {p["case"] for p in points} == {"a"} and len(points) == 3
    for p in points:
        c, v = p["c"], p["v"]
        gaussian = T.test_variance(c=c, v=v) / T.train_variance("gaussian", sigma2=0.4 / 0.6, c=c, v=v)
        assert p["predicted"] == pytest.approx(float(gaussian), rel=1e-14)
