"""Power of the accuracy claims (varshift.reproduce.power) and the pilot's regime."""

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from varshift import tasks
from varshift.reproduce import pilot, plan, power
from varshift.reproduce.power import A5, B5, BASE

FIGURES = Path(__file__).resolve().parent.parent / "figures"


def simulated(effect, sd, n, alpha, margin=None, reps=40_000, seed=0):
    """Monte Carlo power of the paired t-test (or of the interval inside the margin)."""
    d = np.random.default_rng(seed).normal(effect, sd, size=(reps, n))
    mean, s = d.mean(axis=1), d.std(axis=1, ddof=1)
    half = stats.t.ppf(1 - alpha / 2, n - 1) * s / np.sqrt(n)
    hits = (np.abs(mean) > half) if margin is None else (np.abs(mean) + half < margin)
    return hits.mean(), np.sqrt(0.25 / reps)


@pytest.mark.parametrize("n", [2, 5, 30])
def test_power_at_zero_effect_is_alpha(n):
    assert power.power(0.0, 1.0, n) == pytest.approx(0.05, abs=1e-12)
    assert power.power(0.0, 0.2, n, alpha=0.00125) == pytest.approx(0.00125, abs=1e-12)


@pytest.mark.parametrize("d, n, expected", [(0.5, 34, 0.8078), (0.8, 15, 0.8213), (1.0, 10, 0.8031)])
def test_power_matches_textbook_values(d, n, expected):
    """Also far in the lower tail, where scipy's nct.cdf gives NaN (df 29, nc -6)."""
    # G*Power, "Means: difference from constant (one sample case)", two tails, alpha 0.05
    assert power.power(d, 1.0, n) == pytest.approx(expected, abs=5e-5)
    assert power.power(-d * 0.3, 0.3, n) == pytest.approx(expected, abs=5e-5)  # scale and sign
    assert np.isfinite(power.power(6 / np.sqrt(30), 1.0, 30, alpha=0.00125))


@pytest.mark.parametrize("d, n", [(0.5, 34), (0.8, 15), (1.0, 10)])
def test_seeds_needed_matches_textbook_sample_sizes(d, n):
    assert power.seeds_needed(d, 1.0) == n
    assert power.seeds_needed(0.15 * d, 0.15) == n
    assert power.power(d, 1.0, n - 1) < 0.8 <= power.power(d, 1.0, n)


@pytest.mark.parametrize("effect, sd, n, alpha", [(0.2, 0.15, 6, 0.05), (0.3, 0.4, 12, 0.05),
                                                   (0.5, 0.3, 20, 0.00125)])
def test_power_agrees_with_monte_carlo(effect, sd, n, alpha):
    mc, se = simulated(effect, sd, n, alpha)
    assert power.power(effect, sd, n, alpha) == pytest.approx(mc, abs=4 * se)


@pytest.mark.parametrize("effect, sd, n, margin", [(0.0, 0.3, 8, 0.5), (0.2, 0.3, 8, 0.5),
                                                   (0.0, 0.15, 5, 0.5), (0.1, 0.5, 25, 0.4)])
def test_equivalence_power_agrees_with_monte_carlo(effect, sd, n, margin):
    mc, se = simulated(effect, sd, n, 0.05, margin=margin)
    assert power.equivalence_power(effect, sd, n, margin) == pytest.approx(mc, abs=4 * se)


def test_equivalence_power_limits():
    assert power.equivalence_power(0.0, 0.2, 200, 0.5) == pytest.approx(1.0, abs=1e-9)
    assert power.equivalence_power(0.0, 1.0, 3, 0.01) < 1e-3
    assert power.equivalence_power(2.0, 0.2, 50, 0.5) < 1e-9  # the truth is outside


def test_min_effect_inverts_power():
    for sd, n, alpha in ((0.15, 5, 0.05), (0.3, 30, 0.00125)):
        mde = power.min_effect(sd, n, alpha)
        assert power.power(mde, sd, n, alpha) == pytest.approx(0.8, abs=1e-8)
        assert power.min_effect(2 * sd, n, alpha) == pytest.approx(2 * mde, rel=1e-8)
    # the review's figure: paired sd 0.15 at n = 5 detects about 0.25 points
    assert power.min_effect(0.15, 5) == pytest.approx(0.25, abs=0.01)


@pytest.mark.parametrize("effect, sd, margin", [(0.3, 0.5, None), (0.0, 0.35, 0.5), (0.1, 0.3, 0.5)])
def test_seeds_needed_search_is_the_smallest(effect, sd, margin):
    def reach(n):
        return (power.power(effect, sd, n) if margin is None
                else power.equivalence_power(effect, sd, n, margin))

    assert power.seeds_needed(effect, sd, margin=margin) == next(
        n for n in range(2, 1000) if reach(n) >= 0.8)


def test_sd_upper_bound_covers_the_true_sd_as_often_as_asked():
    rng = np.random.default_rng(3)
    sds = rng.normal(0, 1.0, size=(4000, 5)).std(axis=1, ddof=1)
    covered = np.mean([power.sd_upper(s, 5) >= 1.0 for s in sds])
    assert covered == pytest.approx(0.8, abs=4 * np.sqrt(0.16 / 4000))
    assert power.sd_upper(1.0, 5) == pytest.approx(np.sqrt(4 / stats.chi2.ppf(0.2, 4)))


def test_seeds_needed_gives_none_when_out_of_reach():
    assert power.seeds_needed(0.0, 1.0) is None
    assert power.seeds_needed(0.01, 1.0, most=100) is None


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="sd must be"):
        power.power(0.1, 0.0, 5)
    with pytest.raises(ValueError, match="n must be"):
        power.power(0.1, 1.0, 1)
    with pytest.raises(ValueError, match="margin"):
        power.equivalence_power(0.0, 1.0, 5, 0.0)
    with pytest.raises(ValueError, match="power must be"):
        power.min_effect(1.0, 5, power_=0.01)
    with pytest.raises(ValueError, match="m must be"):
        power.holm_alpha(0)
    assert power.holm_alpha(40) == pytest.approx(0.00125)


def test_claims_are_the_reports_accuracy_claims():
    """Every claim listed exists, with the same text, among the full run's paper claims, or
    among its extensions for the six rows d3d182c moved there after the pilot's analysis
    and WRN's fig7 row, which 05fac29 moved because the paper's Fig. 5 has no WRN panel
    (m = 40 stays, as declared: a larger m only makes the sizing conservative)."""
    rows = {(json.loads(p.read_text())["name"], c["text"]): c["kind"]
            for p in FIGURES.glob("fig*.json") for c in json.loads(p.read_text())["claims"]}
    listed = {(c.figure, c.text) for c in power.CLAIMS}
    assert len(power.CLAIMS) == len(listed) == 40
    assert listed <= set(rows)
    extensions = {k for k in listed if rows[k] == "extension"}
    assert {text.split(": ", 1)[1] for _, text in extensions} == {
        "(b) hurts less than (a) at drop 0.1", "(b) hurts less than (a) at drop 0.3",
        "with Dropout 0.5 (a), inference-mode training accuracy falls below train mode"}
    assert len(extensions) == 7
    assert len([c for c in power.CLAIMS if c.margin is not None]) == 3


def fake_runs(arch, errors, seeds=range(5)):
    """``(arch, arm) -> {seed: result}`` with test error ``errors[arm] + seed / 10``."""
    return {(arch, arm): {s: {"test_error": e + s / 10, "recalibrated": {"test_error": e - 1 + s / 5},
                              "history": {"train_mode": [0, 99.0], "eval_mode": [0, 97.0 - s]}}
                          for s in seeds}
            for arm, e in errors.items()}


def test_differences_and_paper_effects():
    runs = fake_runs("DenseNet", {BASE: 2.0, A5: 5.0, B5: 3.0})
    by_text = {c.text: c for c in power.CLAIMS}
    raise_ = by_text["DenseNet: drop 0.5 at (a) raises the test error"]
    seeds, d = power.differences(raise_, runs)
    assert seeds == [0, 1, 2, 3, 4] and np.allclose(d, 3.0)
    helps = by_text["DenseNet: re-estimation helps (a) more than (b)"]
    assert np.allclose(power.differences(helps, runs)[1], 0.0)  # gains equal: 1 - s/10 each
    gap = by_text["DenseNet: with Dropout 0.5 (a), inference-mode training accuracy falls below train mode"]
    assert np.allclose(power.differences(gap, runs)[1], 2.0 + np.arange(5))
    # seeds missing in one arm are left out
    del runs[("DenseNet", B5)][3]
    assert power.differences(by_text["DenseNet: (b) hurts less than (a) at drop 0.5"], runs)[0] == [0, 1, 2, 4]
    effect, source = power.paper_effect(raise_)
    assert effect == pytest.approx(8.70 - 4.72) and "Table 3, C10 DenseNet, (a) 0.5" in source
    assert power.scaled_effect(raise_, {"DenseNet": 2.36}) == pytest.approx((8.70 - 4.72) / 2)
    assert power.paper_effect(by_text["WRN: (b) hurts less than (a) at drop 0.1"])[0] is None
    wide = by_text["Dropout 0.5 at (b) costs the wide network less test error than the thin one"]
    assert power.paper_effect(wide)[0] == pytest.approx((3.81 - 3.97) - (5.85 - 5.02))
    assert power.scaled_effect(wide, {"WRN": 3.97 / 2, "PreResNet": 5.02}) == pytest.approx(
        (3.81 - 3.97) / 2 - (5.85 - 5.02))


def test_analyse_marks_claims_in_advance():
    rng = np.random.default_rng(1)
    runs = fake_runs("PreResNet", {BASE: 5.02, A5: 8.0, B5: 6.0}, seeds=range(8))
    for arm in (A5, B5):  # noisy differences, sd about 0.3
        for r in runs[("PreResNet", arm)].values():
            r["test_error"] += rng.normal(0, 0.3)
    claims = [c for c in power.CLAIMS if c.terms[0].arch == "PreResNet"]
    rows = {r["text"]: r for r in power.analyse(claims, runs)}
    row = rows["PreResNet: drop 0.5 at (a) raises the test error"]
    ours = 5.02 + 0.35  # the fake baseline's mean over seeds 0-7
    assert row["n"] == 8 and row["scaled"] == pytest.approx((8.42 - 5.02) * ours / 5.02)
    assert row["testable"] and row["seeds"]["holm"] <= 30
    assert row["seeds"]["alpha"] <= row["seeds"]["holm"] <= row["seeds_upper"]
    assert row["mde"]["alpha"] < row["mde"]["holm"] and set(row["mde_grid"]) == {"10", "20", "30"}
    recal_b = rows["PreResNet: re-estimating the statistics lowers the test error at (b) 0.5"]
    assert recal_b["scaled"] == pytest.approx((5.77 - 5.85) * ours / 5.02)
    fig7 = rows["PreResNet: with Dropout 0.5 (a), inference-mode training accuracy falls below train mode"]
    assert fig7["testable"] is False and "zero or has the other sign" in fig7["why"]
    untested = rows["PreResNet: Uout (beta 0.2) at the (b) positions lowers the test error"]
    assert untested["testable"] is None and untested["n"] == 0


def test_regime_rule():
    assert pilot.regime_size(4.0) == pilot.regime_size(8.0) == pilot.regime_size(6.0) == 2000
    assert pilot.regime_size(2.37) == 1000 and pilot.regime_size(8.01) == 4000


def test_the_rule_reads_its_committed_runs_without_computing(tmp_path):
    settings, error = pilot.choose(FIGURES / "power" / "tasks", compute=False)
    assert settings.train_sequences == 1000 and error == pytest.approx(2.3667, abs=1e-3)
    with pytest.raises(FileNotFoundError, match="run the pilot first"):
        pilot.choose(tmp_path, compute=False)


def test_harder_regime_keeps_the_full_runs_keys():
    full = plan.Settings(quick=False)
    hard = plan.Settings(quick=False, train_sequences=1000)
    assert hard.epochs == 240 and plan.Settings(quick=False, train_sequences=2000).epochs == 120
    assert "1,000 MNIST-1D training sequences, 2,000 test sequences" in hard.describe()
    keys = [t.key for t in plan.network_tasks(full)]
    assert all((FIGURES / "tasks" / f"{k}.json").exists() for k in keys)  # the cache is valid
    task = plan.network_task(hard, "WRN", "b", 0.5, 3)
    assert task.params["n_train"] == 1000 and "n_train" not in plan.network_task(full, "WRN", "b", 0.5, 3).params
    with pytest.raises(ValueError, match="train_sequences"):
        plan.Settings(quick=True, train_sequences=5000)


def test_pilot_order_has_whole_seeds_preresnet_first():
    order = plan.pilot_tasks(plan.Settings(quick=False, train_sequences=1000), blocks=2)
    assert len(order) == 2 * 3 * (10 + 5 + 5) == len({t.key for t in order})
    first = [(t.params["arch"], t.params["seed"]) for t in order[:33]]
    assert first[:3] == [("PreResNet", 0)] * 3 and first[30:] == [("WRN", 0)] * 3
    assert [(t.params["arch"], t.params["seed"]) for t in order[60:63]] == [("PreResNet", 10)] * 3


def test_cached_reads_only_what_is_stored(tmp_path):
    done = tasks.Task("t/one", "math:hypot", {"x": 3.0, "y": 4.0})
    missing = tasks.Task("t/two", "math:hypot", {"x": 1.0, "y": 1.0})
    (tmp_path / "t").mkdir()
    (tmp_path / f"{done.key}.json").write_text(json.dumps(
        {"key": done.key, "function": done.function, "params": done.params, "seconds": 1.5,
         "result": {"value": 5.0}}))
    got = tasks.cached([done, missing], tmp_path)
    assert list(got) == [done.key] and got[done.key]["seconds"] == 1.5


def test_report_reads_a_pilot_cache_and_writes_the_same_bytes(tmp_path):
    settings = plan.Settings(quick=False, train_sequences=1000)
    cache = tmp_path / "tasks"
    runs = fake_runs("PreResNet", {BASE: 3.5, A5: 6.0, B5: 4.0}, seeds=range(4))
    runs[("PreResNet", A5)][2]["test_error"] += 0.5  # a paired sd above 0
    for (arch, arm), by_seed in runs.items():
        for seed, result in by_seed.items():
            task = plan.network_task(settings, arch, arm[0], arm[1], seed, arm[2])
            path = cache / f"{task.key}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"key": task.key, "function": task.function,
                                        "params": task.params, "seconds": 60.0 + seed,
                                        "result": result}))
    out = tmp_path / "power.json"
    table = pilot.report(out, {"pilot": (settings, cache)})["pilot"]
    assert table["baseline"] == {"PreResNet": pytest.approx(3.65)}
    assert table["minutes_per_task"]["PreResNet a/0.5/dropout"] == pytest.approx(61.5 / 60)
    rows = {r["text"]: r for r in table["rows"]}
    assert rows["PreResNet: drop 0.5 at (a) raises the test error"]["n"] == 4
    assert rows["WRN: drop 0.5 at (a) raises the test error"]["testable"] is None
    first = out.read_bytes()
    pilot.report(out, {"pilot": (settings, cache)})
    assert out.read_bytes() == first
    assert "| PreResNet: drop 0.5 at (a) raises the test error | 4 |" in pilot.markdown(table["rows"])


def test_the_other_arms_pilot_the_first_pilots_seeds_and_keep_its_keys():
    hard = plan.Settings(quick=False, train_sequences=1000)
    first = plan.pilot_tasks(hard)
    other = plan.pilot_tasks(hard, arms=plan.OTHER_PILOT_ARMS)
    assert len(other) == 4 * (10 + 5 + 5) and not {t.key for t in other} & {t.key for t in first}
    assert {(t.params["arch"], t.params["seed"]) for t in other} == {
        (t.params["arch"], t.params["seed"]) for t in first}  # the baselines exist already
    assert {(t.params["placement"], t.params["rate"], t.params["noise"]) for t in other} == set(
        plan.OTHER_PILOT_ARMS)
    # the first pilot's keys are those of its cached runs
    stored = {p.stem for p in (FIGURES / "power" / "tasks").rglob("*.json")}
    if stored:
        assert {t.key.rsplit("/", 1)[-1] for t in first} <= stored
