"""Case studies: networks as posted, the verdict protocol applied to them, conclusions
that follow the numbers, and runs that are identical however they are computed."""

import inspect
import json
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from scipy import stats

from varshift import cases, nn
from varshift.cases import _case, _common, autoencoder, convnet, orderings, stale_stats
from varshift.cases._common import CaseResult, Regime, claim, fmt, sd_claim, seeded, spread, verdict
from varshift.models import reference_convnet
from varshift.verdicts import Claim

matplotlib.use("Agg")

NOT_TESTED = "not tested at the posted regime"


# ------------------------------------------------------------------ the protocol in the cases
@pytest.mark.parametrize("shift, expected", [(0.5, "holds"), (-0.5, "contradicted"), (0.0, "undecided")])
def test_a_paired_claim_follows_its_interval(shift, expected):
    rng = np.random.default_rng(0)
    reference = rng.normal(10, 3, 8)  # large spread between seeds, small within a pair
    noise = rng.normal(0, 0.05, 8)
    arm = reference + shift + noise - noise.mean()  # the mean paired difference is exactly shift
    result = claim("arm is larger", "posted", arm, reference, direction=1)
    assert result.verdict == expected and result.n == 8 and result.kind == "claim"
    assert result.low < result.estimate < result.high
    met, missed = Regime("r", "rule", "x", True), Regime("r", "rule", "x", False)
    assert claim("t", "p", arm, reference, direction=1, regime=met).verdict == expected
    off = claim("t", "p", arm, reference, direction=1, regime=missed)
    assert off.verdict == NOT_TESTED and off.estimate == result.estimate and "regime: r" in off.rule


def test_the_seed_sd_claim_uses_the_chi_square_interval():
    values = [60.0, 97.0, 62.0, 95.0, 61.0, 96.0]
    result = sd_claim("runs vary", "60 and 97", values, at_least=10, unit=" %")
    n, sd = 6, np.std(values, ddof=1)
    assert result.estimate == pytest.approx(sd)
    assert result.low == pytest.approx(sd * np.sqrt((n - 1) / stats.chi2.ppf(0.975, n - 1)))
    assert result.high == pytest.approx(sd * np.sqrt((n - 1) / stats.chi2.ppf(0.025, n - 1)))
    assert result.verdict == "holds"  # the whole interval is above 10 points
    assert sd_claim("t", "p", [90.0, 90.2, 89.9, 90.1, 90.0], at_least=10).verdict == "contradicted"
    assert sd_claim("t", "p", [85.0, 97.0, 90.0], at_least=10).verdict == "undecided"
    assert sd_claim("t", "p", values, at_least=10,
                    regime=Regime("r", "rule", "x", False)).verdict == NOT_TESTED


def test_verdict_counts_never_turn_undecided_into_holds():
    claims = [Claim("a", "p", "o", "holds"), Claim("b", "p", "o", "undecided"),
              Claim("c", "p", "o", "contradicted"), Claim("d", "p", "o", NOT_TESTED),
              Claim.sanity("e", "1", "1", True), Claim.sanity("f", "1", "2", False)]
    sentence = verdict(claims)
    assert sentence.startswith("Of 4 statements checked: 1 hold, 1 contradicted, 1 undecided, "
                               "1 not tested at the posted regime.")
    assert "Contradicted: c." in sentence and "Failed sanity checks: f." in sentence
    assert _common.off_regime([Regime("trained", "posted 99%", "90%", False),
                               Regime("short", "rule", "ok", True)]).startswith(
        "Not in the posted regime, so its statements are not tested: trained - posted 99%; here 90%. ")
    assert _common.off_regime([Regime("short", "rule", "ok", True)]) == ""


def test_seeded_pairs_the_arms_of_every_comparison():
    weights = lambda model: [l.params["weight"] for _, l in model.leaves()  # noqa: E731, E741
                             if l.kind in ("conv", "dense")]
    with_bn = seeded(reference_convnet(0.3, batchnorm="keras"), 4)
    without = seeded(reference_convnet(0.0, batchnorm=None), 4)
    assert all(np.array_equal(a, b) for a, b in zip(weights(with_bn), weights(without)))
    assert not np.array_equal(weights(seeded(reference_convnet(0.3), 5))[0], weights(with_bn)[0])
    a, b = orderings.ordering_network("C-D-B-A-P", seed=1), orderings.ordering_network("C-A-B-P-D", seed=1)
    assert all(np.array_equal(u, v) for u, v in zip(weights(a), weights(b)))
    masks = [layer.rng.random(3) for m in (a, b) for _, layer in m.leaves() if layer.kind == "dropout"]
    assert np.array_equal(masks[0], masks[2]) and np.array_equal(masks[1], masks[3])


def test_case_result_summary_tables_and_json_round_trip(tmp_path):
    claims = [claim("it is", "yes", [1.0, 2.0, 3.0], [0.0, 1.1, 1.9], direction=1),
              Claim.sanity("it runs", "yes", "yes", True)]
    result = CaseResult("demo", "A demo", "Is it?", {"seeds": 3}, [("a", "col A"), ("b", "B|C")],
                        [{"a": "1.0", "b": "x"}, {"a": "22.5", "b": "y"}], claims, "It is.",
                        {"values": np.array([1.0, np.nan])}, [Regime("trained", "rule", "99%", True)],
                        1.5)
    assert result.statements == claims[:1] and result.checks == claims[1:]
    text = result.summary()
    assert "Question: Is it?" in text and "col A" in text and "- [holds] it is." in text
    assert "Sanity checks (true by construction; not evidence):\n- [passes] it runs" in text
    assert "- trained: rule; here 99% -> met" in text and "Conclusion: It is." in text
    markdown = result.summary(markdown=True)
    assert "| col A | B\\|C |" in markdown and "| it runs | yes | yes | passes |" in markdown
    assert f"| it is | yes | {claims[0].ours} | +1 [" in markdown and "| 3 | holds |" in markdown
    assert repr(result).startswith("<CaseResult 'demo': 1 hold, 0 contradicted, 0 undecided;")
    data = json.loads(result.to_json(tmp_path / "r.json"))
    assert data == json.loads((tmp_path / "r.json").read_text())
    assert data["numbers"]["values"] == [1.0, None] and data["claims"][1]["kind"] == "sanity"
    back = CaseResult.from_dict(data)
    assert back.claims == result.claims and back.regimes == result.regimes
    with pytest.raises(NotImplementedError):
        result.plot()


def test_spread_fmt_and_slug():
    assert spread([1, 2, 3]) == {"mean": 2.0, "sd": 1.0, "min": 1.0, "max": 3.0}
    assert fmt([0.1, 0.2, 0.3], 1, 100) == "20.0 ± 10.0"
    assert _common.slug("BN + Dropout, lr 2e-3") == "BN-Dropout-lr-2e-3"


def test_unknown_case_is_rejected():
    with pytest.raises(ValueError, match="unknown case 'nope'"):
        cases.run("nope")


# ------------------------------------------------------------------ the Case base
CASE_MODULES = (convnet, orderings, stale_stats, autoencoder)
FIGURES = Path(__file__).resolve().parent.parent / "figures"


@pytest.mark.parametrize("module", CASE_MODULES, ids=lambda m: m.NAME)
def test_every_case_is_a_case_whose_run_and_tasks_come_from_the_base(module):
    case = cases.CASES[module.NAME]
    assert isinstance(case, cases.Case) and case.name == module.NAME
    assert not {"run", "tasks", "_params", "_plan"} & set(vars(type(case)))  # never redefined
    assert not {"run", "tasks", "_params"} & set(vars(module))  # no module-level copies either
    assert "if quick" not in inspect.getsource(module)  # the base picks the mode's values
    assert case.function == f"{module.__name__}:train_run" and case.result.__module__ == module.__name__
    arms = case.arms(dict.fromkeys(case.options))
    for quick, seeds in ((True, case.default_seeds.quick), (False, case.default_seeds.full)):
        planned = case.tasks(quick, data_dir="d")
        assert len(planned) == len(arms) * seeds
        assert [t.label for t in planned[:2]] == [f"cases/{module.NAME}/{arms[0].label}/seed{s}"
                                                  for s in (0, 1)]
        assert all(t.options == ({"data_dir": "d"} if case.reads_mnist else {}) for t in planned)


def test_a_case_takes_its_sizes_from_the_mode_or_the_caller():
    case = cases.CASES[convnet.NAME]
    sizes = {"epochs": 3, "n_train": 60000, "n_test": 10000, "n_stats": 10000}
    assert case.tasks(False, seeds=1)[0].params == {"config": "BN + Dropout", "seed": 0, **sizes}
    assert case.tasks(False, seeds=1, epochs=7)[0].params["epochs"] == 7
    assert case.tasks(True, seeds=1, seed=4)[0].params == {
        "config": "BN + Dropout", "seed": 4, "epochs": 2, "n_train": 6000, "n_test": 1000,
        "n_stats": 2000}
    assert case.settings(5, case._params(False, {"epochs": 7}), {})["epochs"] == 7
    with pytest.raises(TypeError, match=r"case 'linear-autoencoder': unknown option\(s\) "
                                        r"\['epochs'\]; its options are \['schedules'\]"):
        cases.run(autoencoder.NAME, epochs=3)
    with pytest.raises(TypeError, match="unknown option"):
        case.tasks(orders=["C-D-B-A-P"])


def test_a_case_class_must_declare_what_is_its_own():
    with pytest.raises(TypeError, match="must declare result, train, default_seeds"):
        type("Nameless", (cases.Case,), {"name": "x"})

    def nested(seed):
        return {}

    with pytest.raises(TypeError, match="train must be a module-level function"):
        type("Nested", (cases.Case,), {"name": "x", "result": CaseResult, "default_seeds": (1, 1),
                                        "train": staticmethod(nested)})


@pytest.mark.parametrize("name", sorted(cases.CASES))
def test_committed_case_results_rerender_from_their_cached_runs(name):
    """The committed figures/case-NAME.json and .md are what the cases make of the
    committed cached runs (quick mode, seed 0), computing nothing."""
    from varshift.tasks import cached

    if not (FIGURES / "tasks" / "cases" / name).is_dir():
        pytest.skip("no committed case runs")
    case = cases.CASES[name]
    planned = case.tasks(True)
    assert len(cached(planned, FIGURES / "tasks")) == len(planned)  # so run computes nothing
    result = case.run(True, cache=FIGURES / "tasks")
    data = result.to_dict()
    data.pop("seconds")
    assert json.dumps(data, indent=1) + "\n" == (FIGURES / f"case-{name}.json").read_text()
    assert result.summary(markdown=True) + "\n" == (FIGURES / f"case-{name}.md").read_text()


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
    assert orderings.BEST == "C-D-B-A-P"


def test_autoencoder_has_keras_initial_weights_paired_with_and_without_bn():
    model = autoencoder.autoencoder(True, seed=3)
    assert [type(layer).__name__ for layer in model.layers] == ["Dense", "BatchNorm", "Dense"]
    first = model.layers[0].params
    assert np.abs(first["weight"]).max() <= np.sqrt(6 / 20) and not first["bias"].any()
    assert model.layers[1].momentum == pytest.approx(0.01)
    plain = autoencoder.autoencoder(False, seed=3)
    assert np.array_equal(plain.layers[1].params["weight"], model.layers[2].params["weight"])


def test_stale_case_networks_and_momentum():
    mlp = stale_stats.sigmoid_mlp(seed=0)
    assert mlp(np.zeros((3, 1, 28, 28), np.float32)).shape == (3, 10)
    model = stale_stats._set_momentum(stale_stats.NETWORKS["convnet"](0), 1.0)
    assert [b.momentum for b in model.layers if isinstance(b, nn.BatchNorm)] == [0.0, 0.0]


# ------------------------------------------------------------------ verdicts from synthetic runs
def _convnet_runs(level, rng, erratic=0.0, seeds=5):
    """Per configuration ``level[name]`` accuracy plus a seed effect shared by every
    configuration (runs are paired) and an ``erratic`` spread for BN + Dropout."""
    seed_effect = rng.normal(0, 0.004, seeds)
    runs = {}
    for name, (batchnorm, _, _) in convnet.CONFIGS.items():
        acc = level[name] + seed_effect + rng.normal(0, 0.0005, seeds)
        if name == "BN + Dropout":
            acc = acc + erratic * np.where(np.arange(seeds) % 2, 1, -1)
        runs[name] = []
        for a in acc:
            record = {"curve": [a - 0.01, a], "eval": float(a)}
            if batchnorm:
                record.update(batch_stats=float(a), recalibrated=float(a + 0.01), shift=[1.01, 1.02],
                              dropout_factor=[1.0, 1.0], running_factor=[1.01, 0.98])
            runs[name].append(record)
    return runs


CONVNET_SETTINGS = dict(seeds=5, epochs=3, train_images=60000, test_images=10000, lr="2e-4",
                        batch=200)


def test_convnet_verdicts_follow_the_synthetic_effects():
    rng = np.random.default_rng(1)
    flat = dict.fromkeys(convnet.CONFIGS, 0.985)
    same = convnet._result(_convnet_runs(flat, rng), CONVNET_SETTINGS, 0.0)
    gain, erratic, cause, stale, fast, sanity = same.claims
    assert same.regimes[0].ok and gain.verdict == "holds"  # no gain within half a point
    assert erratic.verdict == "contradicted" and fast.verdict == "contradicted"  # sd << 10 points
    assert cause.verdict == "undecided" and stale.verdict == "holds"
    assert sanity.kind == "sanity" and sanity.verdict == "passes"
    helped = convnet._result(_convnet_runs({**flat, "Dropout": 0.975, "neither": 0.975}, rng),
                             CONVNET_SETTINGS, 0.0)
    assert helped.claims[0].verdict == "contradicted"  # BatchNorm gains a point
    hurt = convnet._result(_convnet_runs({**flat, "BN + Dropout": 0.975}, rng), CONVNET_SETTINGS, 0.0)
    assert hurt.claims[2].verdict == "holds"  # Dropout costs a point with BN, nothing without
    wild = convnet._result(_convnet_runs(flat, rng, erratic=0.2), CONVNET_SETTINGS, 0.0)
    assert wild.claims[1].verdict == "holds"
    low = convnet._result(_convnet_runs(dict.fromkeys(convnet.CONFIGS, 0.88), rng), CONVNET_SETTINGS, 0.0)
    assert not low.regimes[0].ok
    assert [c.verdict for c in low.statements if "regime" in c.rule] == [NOT_TESTED] * 4
    assert low.claims[3].verdict == "holds"  # our explanation does not depend on the regime
    assert "Not in the posted regime" in low.conclusion and "No run came near 60%" in low.conclusion
    assert "Of 5 statements checked: 1 hold, 0 contradicted, 0 undecided, 4 not tested" in low.conclusion


def test_convnet_plots():
    result = convnet._result(_convnet_runs(dict.fromkeys(convnet.CONFIGS, 0.985),
                                           np.random.default_rng(0)), CONVNET_SETTINGS, 0.0)
    assert result.plot(kind="curves").get_xlabel() == "epoch"
    assert result.plot().get_ylabel() == "test accuracy (%)"
    with pytest.raises(ValueError, match="kind must be"):
        result.plot(kind="bars")


def _orderings_runs(loss, rng, accuracy=0.99, seeds=4, orders=None):
    seed_effect = rng.normal(0, 0.01, seeds)
    return {order: [{"loss": float(loss(order) + seed_effect[s] + rng.normal(0, 1e-4)),
                     "accuracy": accuracy, "recalibrated_loss": 0.05 + 0.001 * s,
                     "converged_loss": 0.05 + 0.001 * s + (0.01 if orderings.dropout_before_batchnorm(order) else 0.0),
                     "shift": [1.1, 1.2], "running_factor": [1.0, 1.0],
                     "dropout_factor": [0.7 + 0.01 * s if orderings.dropout_before_batchnorm(order) else 1.0,
                                        0.9]} for s in range(seeds)]
            for order in orders or orderings.POSTED}


ORDERINGS_SETTINGS = dict(seeds=4, epochs=20, train_images=60000, test_images=10000, batch=32, lr=1e-3)


@pytest.mark.parametrize("best, expected", [(0.02, "holds"), (0.08, "contradicted"), (0.05, "undecided")])
def test_orderings_verdicts_follow_the_synthetic_effects(best, expected):
    rng = np.random.default_rng(2)
    level = lambda order: best if order == orderings.BEST else 0.05  # noqa: E731
    if expected == "undecided":
        level = lambda order: 0.05 + (0.002 * rng.standard_normal() if order == orderings.BEST else 0)  # noqa: E731
    result = orderings._result(_orderings_runs(level, rng), ORDERINGS_SETTINGS, 0.0)
    ranking, rho, shifted, costs, more, sanity = result.claims
    assert result.regimes[0].ok and ranking.verdict == expected
    assert shifted.verdict == "holds" and "C-D-B-A-P: -0.285" in shifted.ours
    assert costs.verdict == "holds" and more.verdict == "holds"  # 0.01 before, 0 after
    assert sanity.kind == "sanity" and sanity.verdict == "passes"
    table = result.table()
    assert "C-D-B-A-P - this, eval loss [95% CI]" in table and len(result.rows) == 10
    if expected == "holds":
        assert "lower test loss than 9 of the 9 other orderings" in result.conclusion


def test_orderings_off_the_posted_regime_and_with_a_subset():
    rng = np.random.default_rng(3)
    runs = _orderings_runs(lambda o: 0.5, rng, accuracy=0.8)
    result = orderings._result(runs, ORDERINGS_SETTINGS, 0.0)
    assert [c.verdict for c in result.claims[:2]] == [NOT_TESTED] * 2
    assert result.claims[2].verdict == "holds"  # Li et al.'s shift does not depend on it
    assert "Not in the posted regime" in result.conclusion
    ax = result.plot()
    posted = [a for a in ax.figure.axes if a is not ax][0]
    assert posted.get_ylim()[1] < 0.1 < ax.get_ylim()[1]  # the posted values on their own scale
    ax.figure.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.y0 >= ax.get_window_extent().y1  # above the axes, covering nothing
    two = orderings._result(_orderings_runs(lambda o: 0.05, rng, orders=["C-A-B-P-D", "C-B-A-D-P"]),
                            ORDERINGS_SETTINGS, 0.0)
    assert [c.kind for c in two.claims] == []  # no BEST, no ranking, no Dropout before BN


def _stale_runs(rng, levels, seeds=3):
    """``levels[(network, variant)] = {mode: accuracy}``; each run's weights depend on
    the network and seed only."""
    runs = {}
    for network in stale_stats.NETWORKS:
        for variant in stale_stats.VARIANTS:
            runs[f"{network}, {variant}"] = [
                {**{mode: (None if value is None else float(value + rng.normal(0, 0.001)))
                    for mode, value in levels[network, variant].items()},
                 "real_sd": 0.2, "real_mean": 0.1, "weights": f"{network}{s}{variant == 'never updated'}",
                 "findings": [] if variant == "momentum 0.9" else ["STALE_RUNNING_STATS (error)"]}
                for s in range(seeds)]
    return runs


def test_stale_statistics_verdicts_follow_the_synthetic_effects():
    rng = np.random.default_rng(4)
    good = {"eval": 0.99, "batch100": 0.99, "batch1": 0.97, "recalibrated": 0.99}
    levels = {("convnet", "never updated"): {**good, "eval": 0.2},
              ("convnet", "momentum 0.99"): {**good, "eval": 0.9},
              ("convnet", "momentum 0.9"): good}
    levels.update({("sigmoid MLP", v): {**good, "batch1": None, "eval": levels["convnet", v]["eval"]}
                   for v in stale_stats.VARIANTS})
    settings = dict(seeds=3, steps=100, question_steps=600, batch=100, lr=1e-3, test_images=1000)
    result = stale_stats._result(_stale_runs(rng, levels), settings, 0.0)
    assert all(r.ok for r in result.regimes)
    assert [c.verdict for c in result.statements] == ["holds"] * 9  # batch 1 untestable in the MLP
    checks = {c.text: c.verdict for c in result.checks}
    assert checks["sigmoid MLP: a BatchNorm after a Dense layer cannot normalise a test batch of 1"] == "passes"
    assert set(checks.values()) == {"passes"} and len(checks) == 3
    assert "diagnose flags a running-statistics problem (STATS_AT_INIT or STALE_RUNNING_STATS) in " \
           "every seed of: convnet, never updated, convnet, momentum 0.99, sigmoid MLP" in result.conclusion
    for steps in (600, 20):  # 0.99 has converged too; 0.9 has not converged yet
        other = stale_stats._result(_stale_runs(rng, levels), {**settings, "steps": steps}, 0.0)
        assert not other.regimes[0].ok
        assert [c.verdict for c in other.statements if "momentum" in c.text] == [NOT_TESTED] * 4
    weak = {k: {**v, "batch100": 0.9} for k, v in levels.items()}
    off = stale_stats._result(_stale_runs(rng, weak), settings, 0.0)
    assert [c.verdict for c in off.statements if "never-updated" in c.text or "test batch" in c.text] \
        == [NOT_TESTED] * 5
    ax = result.plot()
    ax.figure.canvas.draw()
    assert ax.get_legend().get_window_extent().y0 >= ax.get_window_extent().y1
    assert ax.get_ylim() == (0, 100) and sum(t.get_text() == "n/a" for t in ax.texts) == 3


def _autoencoder_runs(rng, bn_minus_plain, plain=0.7, seeds=6):
    runs = {}
    for batch, epochs in autoencoder.SCHEDULES:
        level = plain + rng.normal(0, 0.1, seeds)
        steps = -(-90 // batch) * epochs
        runs[autoencoder._label(batch, epochs)] = [
            {"plain": float(p), "bn": float(p + bn_minus_plain + rng.normal(0, 0.005)),
             "recalibrated": float(p + bn_minus_plain - 0.02), "bn_train_mode": float(p), "zero": 1.0,
             "steps": steps, "init_weight": 0.99 ** steps, "var_ratio": 0.9, "mean_gap": 0.05}
            for p in level]
    return runs


@pytest.mark.parametrize("effect, expected", [(0.2, "holds"), (-0.2, "contradicted")])
def test_autoencoder_verdicts_follow_the_synthetic_effects(effect, expected):
    rng = np.random.default_rng(5)
    settings = dict(seeds=6, samples=100, lr=1e-3)
    result = autoencoder._result(_autoencoder_runs(rng, effect), settings, 0.0)
    raises = [c for c in result.statements if "raises" in c.text]
    assert [c.verdict for c in raises] == [expected] * 3
    assert all(c.verdict == "holds" for c in result.statements if "stale" in c.text)
    assert [c.verdict for c in result.checks] == ["passes"] * 3
    untrained = autoencoder._result(_autoencoder_runs(rng, effect, plain=1.3), settings, 0.0)
    assert {c.verdict for c in untrained.statements} == {NOT_TESTED}
    assert "predicting zero" in untrained.regimes[0].rule and not untrained.regimes[0].ok


# ------------------------------------------------------------------ real runs, small settings
def test_linear_autoencoder_case_measures_the_running_average_lag():
    result = cases.run(autoencoder.NAME, seeds=3)
    runs = result.numbers["runs"]
    assert list(runs) == ["batch 32, 20 epochs", "batch 10, 20 epochs", "batch 32, 100 epochs"]
    assert [[r["steps"] for r in rs] for rs in runs.values()] == [[60] * 3, [180] * 3, [300] * 3]
    assert [c.verdict for c in result.checks] == ["passes"] * 3  # 0.99^steps, Keras' rule
    assert all(np.isfinite(r[k]) for rs in runs.values() for r in rs
               for k in ("plain", "bn", "recalibrated", "bn_train_mode", "zero"))
    # the posted schedule leaves the network untrained (worse than predicting zero);
    # 100 epochs train it past the posted 0.775
    assert [r.ok for r in result.regimes] == [False, True, True]
    assert np.mean([r["plain"] for r in runs["batch 32, 100 epochs"]]) < 0.775
    assert "seed pairs" in result.conclusion and "At the posted schedule" in result.conclusion
    ax = result.plot()
    assert ax.get_ylabel() == "validation MSE"


def test_autoencoder_runs_are_deterministic():
    assert autoencoder.train_run(10, 3, 7) == autoencoder.train_run(10, 3, 7)


def test_serial_and_two_processes_give_identical_results(tmp_path):
    options = dict(seeds=2, schedules=[(10, 2), (32, 3)])
    serial = cases.run("linear-autoencoder", **options).to_dict()
    parallel = cases.run("linear-autoencoder", jobs=2, cache=tmp_path, **options).to_dict()
    serial.pop("seconds"), parallel.pop("seconds")
    assert parallel == serial
    assert len(list(tmp_path.rglob("*.json"))) == 4  # one cached result per run
    cached = cases.run("linear-autoencoder", cache=tmp_path, **options).to_dict()
    cached.pop("seconds")
    assert cached == serial


@pytest.mark.slow
def test_dask_cluster_gives_the_serial_results():
    distributed = pytest.importorskip("dask.distributed")
    options = dict(seeds=2, schedules=[(10, 2)])
    serial = cases.run("linear-autoencoder", **options).to_dict()
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        remote = cases.run("linear-autoencoder", client=client, **options).to_dict()
    serial.pop("seconds"), remote.pop("seconds")
    assert remote == serial


@pytest.mark.slow
def test_mnist_case_is_identical_in_two_processes(mnist_dir, tmp_path):
    options = dict(seeds=2, steps=3, question_steps=3, n_test=20, data_dir=str(mnist_dir))
    serial = cases.run("stale-running-stats", **options).to_dict()
    parallel = cases.run("stale-running-stats", jobs=2, **options).to_dict()
    serial.pop("seconds"), parallel.pop("seconds")
    assert parallel == serial


@pytest.mark.slow
def test_convnet_case_runs_and_dropout_after_bn_adds_no_shift(mnist_dir):
    result = cases.run(convnet.NAME, seeds=2, epochs=1, n_train=400, n_test=200, data_dir=mnist_dir)
    runs = result.numbers["runs"]
    assert set(runs) == set(convnet.CONFIGS) and all(len(v) == 2 for v in runs.values())
    assert runs[convnet.FAST][0]["eval"] != runs["BN + Dropout"][0]["eval"]  # lr 2e-3
    for name in ("BN + Dropout", "BN"):
        for record in runs[name]:
            assert len(record["shift"]) == 2
            assert np.allclose(record["dropout_factor"], 1.0, atol=1e-9)
    assert "batch_stats" not in runs["Dropout"][0]
    assert len(result.rows) == 5 and len(result.statements) == 5 and len(result.checks) == 1
    assert result.checks[0].verdict == "passes" and not result.regimes[0].ok


@pytest.mark.slow
def test_orderings_case_measures_dropout_before_bn(mnist_dir):
    result = cases.run(orderings.NAME, seeds=2, n_train=256, n_test=200,
                       orders=["C-D-B-A-P", "C-B-A-D-P"], data_dir=mnist_dir)
    runs = result.numbers["runs"]
    before = [r["dropout_factor"][0] for r in runs["C-D-B-A-P"]]
    after = [r["dropout_factor"][0] for r in runs["C-B-A-D-P"]]
    assert min(before) < 0.95 and np.allclose(after, 1.0, atol=1e-9)
    assert all(np.isfinite(r[k]) for rs in runs.values() for r in rs
               for k in ("loss", "converged_loss", "recalibrated_loss"))
    assert all(0 <= r["accuracy"] <= 1 for rs in runs.values() for r in rs)
    with pytest.raises(ValueError, match="unknown ordering"):
        cases.run(orderings.NAME, orders=["C-A-B"], data_dir=mnist_dir)


@pytest.mark.slow
def test_stale_statistics_case_reproduces_never_updated_statistics(mnist_dir):
    result = cases.run(stale_stats.NAME, seeds=2, steps=10, question_steps=20, n_test=200, data_dir=mnist_dir)
    runs = result.numbers["runs"]
    mlp_never = runs["sigmoid MLP, never updated"][0]
    assert mlp_never["batch1"] is None  # one value per channel after a Dense layer
    assert any(f.startswith("STATS_AT_INIT") for f in mlp_never["findings"])
    assert runs["convnet, never updated"][0]["batch1"] is not None
    # the momentum never enters training: same seed, same weights, same batch statistics
    assert runs["convnet, momentum 0.99"][0]["weights"] == runs["convnet, momentum 0.9"][0]["weights"]
    assert runs["convnet, momentum 0.99"][0]["weights"] != runs["convnet, never updated"][0]["weights"]
    assert len(result.rows) == 6 and result.plot().get_ylim() == (0, 100)


def test_case_command(tmp_path):
    out = subprocess.run([sys.executable, "-m", "varshift", "case", "linear-autoencoder",
                          "--seeds", "2", "--json", "-q", "--jobs", "2", "--cache", str(tmp_path / "c"),
                          "--plot", str(tmp_path / "ae.png")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["name"] == "linear-autoencoder" and {c["kind"] for c in data["claims"]} == {"claim", "sanity"}
    assert (tmp_path / "ae.png").stat().st_size > 1000 and any((tmp_path / "c").rglob("*.json"))
    bad = subprocess.run([sys.executable, "-m", "varshift", "case", "nope"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    zero = subprocess.run([sys.executable, "-m", "varshift", "case", "linear-autoencoder", "--jobs", "0"],
                          capture_output=True, text=True, timeout=60)
    assert zero.returncode == 2 and "jobs must be a positive integer" in zero.stderr


def test_reproduce_includes_cases_in_the_report(tmp_path):
    from varshift import reproduce

    results, skipped = reproduce.run(tmp_path, quick=True, only=["linear-autoencoder"])
    assert skipped == [] and [r.name for r in results] == ["linear-autoencoder"]
    for ext in ("png", "svg", "json", "md"):
        assert (tmp_path / f"case-linear-autoencoder.{ext}").stat().st_size > 100
    report = (tmp_path / "REPORT.md").read_text()
    assert "## Case studies" in report and "| linear-autoencoder | batch 32, 20 epochs:" in report
    assert "**Conclusion.**" in report and "Case-study statements (6)" in report


@pytest.mark.parametrize("name", sorted(cases.CASES))
def test_case_tasks_are_the_runs_its_run_computes(name, monkeypatch):
    case, seen = cases.CASES[name], []

    class Captured(Exception):
        pass

    def capture(tasks, **_):
        seen.extend(tasks)
        raise Captured

    monkeypatch.setattr(_case, "run_tasks", capture)
    for quick, options in ((True, {}), (False, {"seeds": 2, "seed": 3})):
        seen.clear()
        with pytest.raises(Captured):
            case.run(quick, data_dir="somewhere", **options)
        planned = case.tasks(quick, data_dir="somewhere", **options)
        assert len(planned) == len(seen) > 0
        assert [(t.key, t.function, t.options) for t in planned] == \
            [(t.key, t.function, t.options) for t in seen]


def test_reproduce_computes_case_runs_in_the_figures_batch(tmp_path, monkeypatch):
    from varshift import reproduce

    batches = []
    prefetch = reproduce.Context.prefetch
    monkeypatch.setattr(reproduce.Context, "prefetch",
                        lambda self, names, extra=(): (batches.append([t.key for t in extra]),
                                                       prefetch(self, names, extra))[1])
    reproduce.run(tmp_path, quick=True, only=["linear-autoencoder"], progress=False)
    assert batches == [[t.key for t in cases.CASES[autoencoder.NAME].tasks(True)]]
    assert len(list((tmp_path / "tasks" / "cases").rglob("*.json"))) == len(batches[0])


def test_cases_needing_mnist_are_skipped_with_instructions(tmp_path, monkeypatch):
    from varshift import reproduce

    monkeypatch.setenv("VARSHIFT_DATA", str(tmp_path / "nothing"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    results, skipped = reproduce.run(tmp_path, quick=True, only=["stale-running-stats"],
                                     data_dir=str(tmp_path / "none"))
    assert results == [] and skipped[0][0] == "stale-running-stats"
    assert "MNIST files not found" in skipped[0][1] and "--data-dir" in skipped[0][1]


def test_a_saved_result_loads_as_its_case_and_plots(tmp_path):
    result = cases.run(autoencoder.NAME, seeds=2, schedules=[(32, 2)])
    result.to_json(tmp_path / "ae.json")
    loaded = cases.load(tmp_path / "ae.json")
    assert isinstance(loaded, autoencoder.AutoencoderResult)
    assert loaded.summary() == result.summary() and loaded.claims == result.claims
    assert loaded.plot().get_ylabel() == "validation MSE"
    (tmp_path / "other.json").write_text('{"name": "fig1"}')
    with pytest.raises(ValueError, match="not a saved case result"):
        cases.load(tmp_path / "other.json")
    data = json.loads((tmp_path / "ae.json").read_text())
    data["claims"][0]["holds"] = True  # written by an older varshift
    (tmp_path / "old.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="another version of varshift"):
        cases.load(tmp_path / "old.json")


def test_the_quick_reproduction_trims_cases_and_the_full_one_does_not(tmp_path, monkeypatch):
    from varshift import reproduce
    from varshift.reproduce import plan

    class Captured(Exception):
        pass

    batches, computed = [], []

    def capture(tasks, **_):
        computed.append([t.key for t in tasks])
        raise Captured

    monkeypatch.setattr(reproduce.Context, "mnist_missing", None)  # the files are not read
    monkeypatch.setattr(reproduce.Context, "prefetch",
                        lambda self, names, extra=(): batches.append([t.key for t in extra]))
    monkeypatch.setattr(_case, "run_tasks", capture)
    case = cases.CASES[convnet.NAME]
    own = [t.key for t in case.tasks(True, data_dir="somewhere")]
    trimmed = [t.key for t in case.tasks(True, data_dir="somewhere", **plan.QUICK_CASES[case.name])]
    for quick, planned in ((True, trimmed), (False, own)):
        batches.clear(), computed.clear()
        with pytest.raises(Captured):
            reproduce.run(tmp_path, quick=quick, only=[case.name], data_dir="somewhere")
        assert batches == computed == [planned]
    # seeds 0-2 of every configuration, on fewer images: runs of their own (since the
    # quick run's 4,000 images, not shared with the full reproduction's cache)
    quick_params = [t.params for t in case.tasks(True, data_dir="somewhere",
                                                 **plan.QUICK_CASES[case.name])]
    assert len(own) == 5 * 5 and len(trimmed) == 5 * 3 and not set(trimmed) & set(own)
    assert {(p["seed"], p["n_train"]) for p in quick_params} == {(s, 4000) for s in range(3)}


def test_the_quick_report_says_how_it_trims_the_cases():
    from varshift.reproduce import plan

    quick = plan.Settings(quick=True).describe_cases()
    assert quick.startswith("case studies in their quick mode, trimmed for a preview: ")
    assert ("bn-dropout-mnist-convnet with seeds 3 (not 5), train images 4,000 (not 6,000), "
            "stats images 500 (not 2,000);") in quick
    assert ("layer-orderings with train images 1,500 (not 6,000), test images 500 (not 1,000), "
            "stats images 500 (not 1,000);") in quick
    assert quick.endswith("; stale-running-stats with question steps 200 (not 600)")
    assert plan.Settings(quick=False).describe_cases() == "case studies in their quick mode"
