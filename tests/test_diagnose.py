"""varshift.diagnose: each finding on a model built to have exactly that problem."""

import numpy as np
import pytest
from helpers import blobs, dropout_before_bn, healthy, trained

from varshift import diagnose, nn, recalibrate
from varshift.diagnosis import dropout_upstream_of_batchnorm


@pytest.fixture(scope="module")
def data():
    return blobs()


def codes(findings):
    return sorted({(f.code, f.layer, f.severity) for f in findings})


def test_healthy_model_has_no_findings(data):
    assert diagnose(trained(healthy(), data), data[0]) == []


def test_dropout_before_bn(data):
    findings = diagnose(trained(dropout_before_bn(), data), data[0])
    assert codes(findings) == [("DROPOUT_BEFORE_BN", "4", "error"), ("DROPOUT_BEFORE_BN", "7", "error")]
    f = findings[1]
    assert f.evidence["dropout_shift"] > 2 and "7" in f.layer and "Dropout" in f.evidence["dropout_layers"]
    assert "Move Dropout after the last BatchNorm" in f.fix
    # the fix: recalibration removes the measured running-stat shift but not the structure;
    # a negligible rate is only 'info'
    tiny = diagnose(trained(dropout_before_bn(rate=0.005), data), data[0])
    assert {f.severity for f in tiny if f.code == "DROPOUT_BEFORE_BN"} == {"info"}


def test_stale_running_stats(data):
    model = trained(healthy(), data)
    model[0].params["weight"] *= 3  # weights changed after the statistics were recorded
    findings = diagnose(model, data[0])
    assert codes(findings) == [("STALE_RUNNING_STATS", "1", "error")]
    assert findings[0].evidence["var_shift"] == pytest.approx(9, rel=0.05)
    recalibrate(model, data[0])
    assert diagnose(model, data[0]) == []


def test_stats_at_init(data):
    x = data[0] * 3 + 2
    model = trained(healthy(), (x, data[1]))
    # what TF1's unrun UPDATE_OPS leave behind: trained weights, statistics never updated
    model[1].load_state_dict({"running_mean": np.zeros(64), "running_var": np.ones(64),
                              "num_batches_tracked": 0}, strict=False)
    findings = diagnose(model, x)
    assert codes(findings) == [("STATS_AT_INIT", "1", "error")]
    assert findings[0].evidence["num_batches_tracked"] == 0


def test_small_batch_stats(data):
    model = trained(healthy(), data)
    assert codes(diagnose(model, data[0], train_batch_size=16)) == [("SMALL_BATCH_STATS", "1", "warning")]
    assert codes(diagnose(model, data[0], train_batch_size=4)) == [("SMALL_BATCH_STATS", "1", "error")]
    conv = nn.Sequential(nn.Conv2D(1, 2, 3, padding=1), nn.BatchNorm(2), seed=0)
    images = np.random.default_rng(0).random((64, 1, 6, 6), dtype=np.float32)
    for start in range(0, 64, 8):
        conv(images[start:start + 8])
    # 2 samples x 36 positions = 72 values per channel: enough
    assert not [f for f in diagnose(conv, images, train_batch_size=2) if f.code == "SMALL_BATCH_STATS"]


def test_eval_batch_dependent(data):
    model = nn.Sequential(nn.Dense(20, 16), nn.BatchNorm(16, track_running_stats=False), nn.ReLU(),
                          nn.Dense(16, 2), seed=0)
    findings = diagnose(trained(model, data), data[0])
    assert codes(findings) == [("EVAL_BATCH_DEPENDENT", "", "error")]
    assert findings[0].evidence["batch_stat_layers_at_inference"] == "1"


@pytest.mark.parametrize("momentum", [0.99, 0.0])
def test_suspicious_momentum(data, momentum):
    model = nn.Sequential(nn.Dense(20, 16), nn.BatchNorm(16, momentum=momentum), nn.ReLU(),
                          nn.Dense(16, 2), seed=0)
    findings = diagnose(trained(model, data), data[0])
    assert ("SUSPICIOUS_MOMENTUM", "1", "warning") in codes(findings)
    if momentum == 0.99:
        assert "Keras" in findings[0].explanation or "Keras" in "".join(f.explanation for f in findings)


def test_structural_search_follows_residuals_and_concats():
    model = nn.Sequential(
        nn.Residual(nn.Sequential(nn.Dropout(0.2), nn.Dense(4, 4))),    # 0.body.0
        nn.BatchNorm(4),                                                # 1 <- 0.body.0
        nn.Concat(nn.Uout(0.1), nn.Sequential(nn.BatchNorm(4), nn.GaussianDropout(0.1))),
        nn.BatchNorm(8),                                                # 3 <- 2.0, 2.1.1
        nn.Dropout(0.5), nn.Dense(8, 4), nn.ReLU(), nn.BatchNorm(4))    # 7 <- 4
    assert dropout_upstream_of_batchnorm(model) == {"1": ["0.body.0"], "3": ["2.0", "2.1.1"], "7": ["4"]}


def test_findings_serialise(data):
    findings = diagnose(trained(dropout_before_bn(), data), data[0])
    d = findings[0].to_dict()
    assert d["code"] == "DROPOUT_BEFORE_BN" and isinstance(d["evidence"]["dropout_shift"], float)
    assert str(findings[0]).startswith("[error] DROPOUT_BEFORE_BN at layer '4'")


def test_stale_because_momentum_is_too_slow_for_the_training_length(data):
    x = data[0] * 2 + 1
    model = nn.Sequential(nn.Dense(20, 16), nn.BatchNorm(16, momentum=0.005), nn.ReLU(),
                          nn.Dense(16, 2), seed=0)
    trained(model, (x, data[1]), epochs=1)  # 32 updates: 0.995^32 = 85% of the initial 0/1 left
    findings = diagnose(model, x)
    assert codes(findings) == [("STALE_RUNNING_STATS", "1", "warning")]  # 1.3x, 0.37 std
    assert findings[0].evidence["initial_value_weight_left"] == pytest.approx(0.995 ** 32)
    assert findings[0].evidence["var_shift"] > 1.2
