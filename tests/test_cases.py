"""Case studies: networks as posted, measurements, and conclusions that follow the numbers."""

import json
import subprocess
import sys

import matplotlib
import numpy as np
import pytest
from scipy import stats

from varshift import cases, nn
from varshift.cases import autoencoder, convnet, orderings, stale_stats
from varshift.cases._common import CaseResult, Claim, fmt, holm, paired_p, spread, welch_p

matplotlib.use("Agg")


# ------------------------------------------------------------------ shared statistics
def test_holm_matches_the_definition():
    p = np.array([0.01, 0.04, 0.03, 0.2])
    # sorted 0.01, 0.03, 0.04, 0.2 times 4, 3, 2, 1, running maximum
    assert np.allclose(holm(p), [0.04, 0.09, 0.09, 0.2])
    assert holm([0.5, 0.9]).max() <= 1.0


def test_t_tests_agree_with_scipy_and_handle_constant_samples():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 8), rng.normal(1, 2, 8)
    assert welch_p(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert paired_p(a, b) == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert welch_p([1, 1], [1, 1]) == 1.0 and welch_p([1, 1], [2, 2]) == 0.0
    assert paired_p([1, 2], [1, 2]) == 1.0 and paired_p([1, 2], [0, 1]) == 0.0


def test_spread_and_fmt():
    assert spread([1, 2, 3]) == {"mean": 2.0, "sd": 1.0, "min": 1.0, "max": 3.0}
    assert fmt([0.1, 0.2, 0.3], 1, 100) == "20.0 ± 10.0"


def test_case_result_summary_table_and_json_round_trip(tmp_path):
    result = CaseResult("demo", "A demo", "Is it?", {"seeds": 2}, [("a", "col A"), ("b", "B")],
                        [{"a": "1.0", "b": "x"}, {"a": "22.5", "b": "y"}],
                        [Claim("it is", "yes", "no", False), Claim("it runs", "-", "yes", True)],
                        "It is not.", {"values": np.array([1.0, np.nan])}, 1.5)
    text = result.summary()
    assert "Question: Is it?" in text and "col A" in text and "-> does not hold" in text
    assert "Conclusion: It is not." in text
    markdown = result.summary(markdown=True)
    assert "| col A | B |" in markdown and "| it is | yes | no | does not hold |" in markdown
    data = json.loads(result.to_json(tmp_path / "r.json"))
    assert data == json.loads((tmp_path / "r.json").read_text())
    assert data["numbers"]["values"] == [1.0, None] and data["claims"][1]["holds"] is True
    with pytest.raises(NotImplementedError):
        result.plot()


def test_unknown_case_is_rejected():
    with pytest.raises(ValueError, match="unknown case 'nope'"):
        cases.run("nope")


# ------------------------------------------------------------------ the networks
@pytest.mark.parametrize("order", list(orderings.POSTED))
def test_every_posted_ordering_builds_the_posted_network(order):
    model = orderings.ordering_network(order, seed=0)
    kinds = [type(layer).__name__ for layer in model.layers]
    letter = {"Conv2D": "C", "ELU": "A", "Dropout": "D", "BatchNorm": "B", "MaxPool2D": "P"}
    assert "-".join(letter[k] for k in kinds[:5]) == order
    assert "-".join(letter[k] for k in kinds[5:10]) == order
    assert kinds[10:] == ["Flatten", "Dense", "ELU", "Dense"]
    assert [layer.rate for layer in model.layers if isinstance(layer, nn.Dropout)] == [0.2, 0.3]
    assert all(layer.momentum == pytest.approx(0.01) and layer.eps == 1e-3
               for layer in model.layers if isinstance(layer, nn.BatchNorm))
    assert model(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 10)


def test_ordering_must_use_each_letter_once():
    with pytest.raises(ValueError, match="each of C, A, D, B, P once.*'C-A-B-P'"):
        orderings.ordering_network("C-A-B-P")
    assert orderings.dropout_before_batchnorm("C-D-B-A-P")
    assert not orderings.dropout_before_batchnorm("C-B-A-D-P")


def test_autoencoder_has_keras_initial_weights():
    model = autoencoder.autoencoder(True, seed=3)
    assert [type(layer).__name__ for layer in model.layers] == ["Dense", "BatchNorm", "Dense"]
    first = model.layers[0].params
    assert np.abs(first["weight"]).max() <= np.sqrt(6 / 20) and not first["bias"].any()
    assert model.layers[1].momentum == pytest.approx(0.01)


def test_stale_case_networks_and_momentum():
    mlp = stale_stats.sigmoid_mlp(seed=0)
    assert mlp(np.zeros((3, 1, 28, 28), np.float32)).shape == (3, 10)
    model = stale_stats._set_momentum(stale_stats.NETWORKS["convnet"](0), 1.0)
    assert [b.momentum for b in model.layers if isinstance(b, nn.BatchNorm)] == [0.0, 0.0]


# ------------------------------------------------------------------ conclusions follow the numbers
def _convnet_runs(bn_accuracy, plain_accuracy, rng):
    runs = {}
    for name, (batchnorm, _, _) in convnet.CONFIGS.items():
        base = bn_accuracy if batchnorm else plain_accuracy
        runs[name] = []
        for _ in range(5):
            acc = float(base + rng.normal(0, 0.002))
            record = {"curve": [acc - 0.01, acc], "eval": acc}
            if batchnorm:
                record.update(batch_stats=acc, recalibrated=acc, shift=[1.01, 1.02],
                              dropout_factor=[1.0, 1.0], running_factor=[1.01, 0.98])
            runs[name].append(record)
    return runs


def test_convnet_conclusion_follows_the_measurements():
    rng = np.random.default_rng(1)
    settings = dict(seeds=5, epochs=1, train_images=600, test_images=100, lr=2e-4, batch=200)
    helped = convnet._result(_convnet_runs(0.99, 0.95, rng), settings, 0.0)
    assert helped.claims[0].holds is False and "BatchNorm helped" in helped.conclusion
    same = convnet._result(_convnet_runs(0.97, 0.97, rng), settings, 0.0)
    assert same.claims[0].holds is True and "did not clearly help" in same.conclusion
    assert same.claims[2].holds is False  # Dropout-attributed factor exactly 1
    assert "No run came near 60%" in same.conclusion
    assert helped.plot(kind="curves").get_xlabel() == "epoch"
    assert helped.plot().get_ylabel() == "test accuracy (%)"
    with pytest.raises(ValueError, match="kind must be"):
        helped.plot(kind="bars")


def test_orderings_conclusion_separates_real_differences_from_noise():
    rng = np.random.default_rng(2)
    runs = {}
    for order in orderings.POSTED:
        level = 0.02 if order == "C-B-A-P-D" else 0.05
        runs[order] = [{"loss": level + rng.normal(0, 1e-4), "accuracy": 0.99,
                        "recalibrated_loss": 0.05 + rng.normal(0, 0.01),
                        "shift": [1.1, 1.2], "running_factor": [1.0, 1.0],
                        "dropout_factor": [0.7 if orderings.dropout_before_batchnorm(order) else 1.0,
                                           0.9]} for _ in range(3)]
    settings = dict(seeds=3, epochs=1, train_images=320, test_images=100, batch=32, lr=1e-3)
    result = orderings._result(runs, settings, 0.0)
    best, differ, _, shifts, _ = result.claims
    assert best.holds is False and "C-B-A-P-D" in best.ours  # Dropout after BN here
    assert differ.holds is True and "pairwise differences survive" in result.conclusion
    assert shifts.holds is True and "1.429-1.429" in shifts.ours  # 1 / 0.7
    assert len(result.rows) == 10 and result.plot().get_ylabel().startswith("test loss")


# ------------------------------------------------------------------ real runs, small settings
def test_linear_autoencoder_case_measures_the_running_average_lag():
    result = autoencoder.run(seeds=4)
    runs = result.numbers["runs"]
    assert [r["steps"] for r in runs[32]] == [60] * 4 and [r["steps"] for r in runs[10]] == [180] * 4
    for batch, steps in ((32, 60), (10, 180)):
        weights = [r["init_weight"] for r in runs[batch]]
        assert np.allclose(weights, 0.99 ** steps, atol=1e-4), weights  # Keras' update rule
    lag_claims = [c for c in result.claims if "of the initial values" in c.text]
    assert len(lag_claims) == 2 and all(c.holds for c in lag_claims)
    assert all(np.isfinite(r[k]) for rs in runs.values() for r in rs
               for k in ("plain", "bn", "recalibrated", "bn_train_mode"))
    assert "seed pairs" in result.conclusion
    assert result.plot().get_ylabel() == "validation MSE"


def test_autoencoder_runs_are_deterministic():
    a, b = autoencoder._one_run(10, 7), autoencoder._one_run(10, 7)
    assert a == b


def test_convnet_case_runs_and_dropout_after_bn_adds_no_shift(mnist_dir):
    result = convnet.run(seeds=2, epochs=1, n_train=400, n_test=200, data_dir=mnist_dir)
    runs = result.numbers["runs"]
    assert set(runs) == set(convnet.CONFIGS) and all(len(v) == 2 for v in runs.values())
    assert runs[convnet.FAST][0]["eval"] != runs["BN + Dropout"][0]["eval"]  # lr 2e-3
    for name in ("BN + Dropout", "BN"):
        for record in runs[name]:
            assert len(record["shift"]) == 2
            assert np.allclose(record["dropout_factor"], 1.0, atol=1e-9)
    assert "batch_stats" not in runs["Dropout"][0]
    assert len(result.rows) == 5 and len(result.claims) == 3


def test_orderings_case_measures_dropout_before_bn(mnist_dir):
    result = orderings.run(seeds=2, n_train=256, n_test=200, orders=["C-D-B-A-P", "C-B-A-D-P"],
                           data_dir=mnist_dir)
    runs = result.numbers["runs"]
    before = [r["dropout_factor"][0] for r in runs["C-D-B-A-P"]]
    after = [r["dropout_factor"][0] for r in runs["C-B-A-D-P"]]
    assert min(before) < 0.95 and np.allclose(after, 1.0, atol=1e-9)
    assert all(np.isfinite(r["loss"]) and 0 <= r["accuracy"] <= 1
               for rs in runs.values() for r in rs)
    with pytest.raises(ValueError, match="unknown ordering"):
        orderings.run(orders=["C-A-B"], data_dir=mnist_dir)


def test_stale_statistics_case_reproduces_never_updated_statistics(mnist_dir):
    result = stale_stats.run(seeds=1, steps=10, n_test=200, data_dir=mnist_dir)
    runs = result.numbers["runs"]
    mlp_never = runs["sigmoid MLP, never updated"][0]
    assert mlp_never["batch1"] is None  # one value per channel after a Dense layer
    assert any(f.startswith("STATS_AT_INIT") for f in mlp_never["findings"])
    assert runs["convnet, never updated"][0]["batch1"] is not None
    # the momentum never enters training: same seed, same weights, same batch statistics
    assert len({r[0]["batch100"] for k, r in runs.items() if k.startswith("convnet")}) == 1
    assert len(result.rows) == 6 and result.plot().get_ylim() == (0, 100)


def test_case_command(tmp_path):
    out = subprocess.run([sys.executable, "-m", "varshift", "case", "linear-autoencoder",
                          "--seeds", "2", "--json", "-q", "--plot", str(tmp_path / "ae.png")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["name"] == "linear-autoencoder"
    assert (tmp_path / "ae.png").stat().st_size > 1000
    bad = subprocess.run([sys.executable, "-m", "varshift", "case", "nope"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_reproduce_includes_cases_in_the_report(tmp_path):
    from varshift import reproduce

    results, skipped = reproduce.run(tmp_path, quick=True, only=["linear-autoencoder"])
    assert skipped == [] and [r.name for r in results] == ["linear-autoencoder"]
    for ext in ("png", "svg", "json", "md"):
        assert (tmp_path / f"case-linear-autoencoder.{ext}").stat().st_size > 100
    report = (tmp_path / "REPORT.md").read_text()
    assert "## Case studies" in report and "| linear-autoencoder | batch 32:" in report
    assert "**Conclusion.**" in report


def test_cases_needing_mnist_are_skipped_with_instructions(tmp_path, monkeypatch):
    from varshift import reproduce

    monkeypatch.setenv("VARSHIFT_DATA", str(tmp_path / "nothing"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    results, skipped = reproduce.run(tmp_path, quick=True, only=["stale-running-stats"],
                                     data_dir=str(tmp_path / "none"))
    assert results == [] and skipped[0][0] == "stale-running-stats"
    assert "MNIST files not found" in skipped[0][1] and "--data-dir" in skipped[0][1]


def test_a_saved_result_loads_as_its_case_and_plots(tmp_path):
    result = autoencoder.run(seeds=2, batch_sizes=(32,))
    result.to_json(tmp_path / "ae.json")
    loaded = cases.load(tmp_path / "ae.json")
    assert isinstance(loaded, autoencoder.AutoencoderResult)
    assert loaded.summary() == result.summary() and loaded.claims == result.claims
    assert loaded.plot().get_ylabel() == "validation MSE"
    (tmp_path / "other.json").write_text('{"name": "fig1"}')
    with pytest.raises(ValueError, match="not a saved case result"):
        cases.load(tmp_path / "other.json")
