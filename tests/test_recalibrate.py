"""varshift.recalibrate."""

import copy
import sys
import warnings

import numpy as np
import pytest
from helpers import blobs, dropout_before_bn, trained

from varshift import diagnose, evaluate, measure, nn, recalibrate


def test_after_shift_is_one_on_the_same_data_and_only_running_stats_change():
    x, y = blobs()
    model = trained(dropout_before_bn(), (x, y))
    model[2].eval()  # a mixed mode to restore
    params = {k: v.copy() for k, v, _ in model.named_parameters()}
    rng = model.rng_state()
    modes = [layer.training for _, layer in model.walk()]
    result = recalibrate(model, x, batch_size=128)
    assert [b.shift for b in result.before.bn][1] > 2
    for b in result.after.bn:
        assert b.shift == pytest.approx(1.0, abs=1e-5)
    assert all(np.array_equal(params[k], v) for k, v, _ in model.named_parameters())
    assert model.rng_state() == rng and [layer.training for _, layer in model.walk()] == modes
    assert result.layers == ["4", "7"]
    assert int(model[4].buffers["num_batches_tracked"]) == 16  # 2000 samples / 128
    assert "shift before" in str(result)


def test_running_stats_are_the_population_statistics_layer_by_layer():
    x, y = blobs(1000)
    model = trained(dropout_before_bn(), (x, y), epochs=1)
    recalibrate(model, x, batch_size=100)
    model.eval()
    h = x
    for layer in model.layers[:4]:
        h = layer(h)
    np.testing.assert_allclose(model[4].buffers["running_mean"], h.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model[4].buffers["running_var"], h.astype(np.float64).var(0, ddof=1), rtol=1e-5)
    for layer in model.layers[4:7]:  # uses the new statistics of layer 4 upstream
        h = layer(h)
    np.testing.assert_allclose(model[7].buffers["running_var"], h.astype(np.float64).var(0, ddof=1), rtol=1e-5)


def test_recalibration_with_dropout_on_keeps_the_shift():
    x, y = blobs()
    model = trained(dropout_before_bn(), (x, y))
    on = recalibrate(copy.deepcopy(model), x, dropout="on")
    off = recalibrate(model, x, dropout="off")
    assert on.after.bn[1].shift > 1.5 and off.after.bn[1].shift == pytest.approx(1.0, abs=1e-5)


def test_holdout_reports_and_accuracy_recovers():
    x, y = blobs(3000)
    xt, yt = blobs(1000, seed=1)
    model = trained(dropout_before_bn(rate=0.6), (x, y))
    before = evaluate(model, (xt, yt), nn.CrossEntropyLoss())
    result = recalibrate(model, x, holdout=xt)
    after = evaluate(model, (xt, yt), nn.CrossEntropyLoss())
    assert after["loss"] < before["loss"]
    assert result.after.num_samples == 1000
    assert result.after.bn[1].shift < result.before.bn[1].shift
    assert result.after.bn[1].shift < 1.1


def test_argument_errors_and_failure_restores_the_model(monkeypatch):
    x, y = blobs(300)
    model = trained(dropout_before_bn(), (x, y), epochs=1)
    with pytest.raises(ValueError, match="dropout must be 'off' or 'on'"):
        recalibrate(model, x, dropout="eval")
    with pytest.raises(TypeError, match="one-shot iterator"):
        recalibrate(model, iter([x]))
    before = model.state_dict()
    module = sys.modules["varshift.recalibration"]

    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return original(*args, **kwargs)

    original = module._recalibrate_layer
    monkeypatch.setattr(module, "_recalibrate_layer", failing)
    with pytest.raises(RuntimeError, match="boom"):
        recalibrate(model, x)
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_measure_after_recalibration_on_a_convnet():
    rng = np.random.default_rng(0)
    x = rng.random((300, 1, 12, 12), dtype=np.float32)
    model = nn.Sequential(nn.Conv2D(1, 4, 3, padding=1), nn.Dropout(0.4), nn.BatchNorm(4), nn.ReLU(),
                          nn.Conv2D(4, 4, 3, stride=2), nn.BatchNorm(4), nn.GlobalAvgPool(),
                          nn.Dense(4, 2), seed=0)
    for start in range(0, 300, 50):
        model(x[start:start + 50])  # running stats from train mode (with Dropout)
    assert measure(model, x).bn[0].shift > 1.2
    result = recalibrate(model, x, batch_size=64)
    assert all(b.shift == pytest.approx(1.0, abs=1e-5) for b in result.after.bn)


def test_without_reports_the_statistics_are_the_same():
    x, y = blobs(600)
    model = trained(dropout_before_bn(), (x, y), epochs=1)
    twin = copy.deepcopy(model)
    quiet = recalibrate(model, x, batch_size=100, reports=False)
    recalibrate(twin, x, batch_size=100)
    assert quiet.before is None and quiet.after is None and quiet.layers == ["4", "7"]
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, twin.state_dict()[key])
    assert "no reports" in str(quiet)
    with pytest.raises(ValueError, match="no reports"):
        quiet.plot()


@pytest.mark.parametrize("scale", [1e-22, 1e-38])
def test_variances_below_the_dtype_range_warn_and_are_not_called_stale(scale):
    x = (np.random.default_rng(0).standard_normal((400, 4)) * scale).astype(np.float32)
    model = nn.Sequential(nn.BatchNorm(4), nn.Dense(4, 2), seed=0)
    with pytest.warns(UserWarning, match=r"recalibrate: BatchNorm '0': the variance of channels "
                                         r"0, 1, 2, 3 is too small for the layer's dtype .*"
                                         r"outputs are unaffected") as caught:
        recalibrate(model, x)
    assert caught[0].filename == __file__  # the user's line
    assert diagnose(model, x) == []
    twin = nn.Sequential(nn.BatchNorm(4), nn.Dense(4, 2), seed=0).astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # float64 holds these variances
        result = recalibrate(twin, x.astype(np.float64))
    assert result.after.bn[0].shift == pytest.approx(1.0)
