"""varshift reproduce: figures, numbers, verdicts, the report, and reproducible files."""

import json
import os
import subprocess
import sys
import time

import pytest

from varshift import reproduce
from varshift.reproduce import analytic, plan

ANALYTIC = list(analytic.FIGURES)
NETWORK = ["training", "shift-per-layer", "propagation", "train-eval-accuracy", "flipped-logits",
           "recalibration", "after-bn-and-uout", "equal-variance", "theory-vs-measurement",
           "conv-angles", "batch-size-momentum"]


def files_of(out, name):
    return [out / f"{name}.{ext}" for ext in ("png", "svg", "json", "caption.md")]


@pytest.fixture
def tiny(monkeypatch):
    """Every training run at 1 epoch on 500 sequences (plan's settings, patched)."""
    monkeypatch.setattr(plan.Settings, "epochs", property(lambda self: 1))
    monkeypatch.setattr(plan.Settings, "num_samples", property(lambda self: 500))


def test_analytic_figures_are_sanity_checks_that_pass(tmp_path):
    import matplotlib

    previous = matplotlib.get_backend()
    matplotlib.use("svg")  # a user's backend, other than the Agg that run() once forced
    try:
        results, skipped = reproduce.run(tmp_path, quick=True, only=ANALYTIC)
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(previous)
    assert skipped == [] and len(results) == 4
    for result in results:
        for path in files_of(tmp_path, result.name):
            assert path.stat().st_size > 100, path
        data = json.loads((tmp_path / f"{result.name}.json").read_text())
        assert data["claims"] and all(c["kind"] == "sanity" and c["verdict"] == "passes"
                                      for c in data["claims"]), data["claims"]
    report = (tmp_path / "REPORT.md").read_text()
    assert "(`fig4_noise_types`)" in report
    assert "| Uout shifts far less than Dropout (beta 0.1 vs drop 0.1) | passes |" in report
    assert "Paper claims (0): 0 hold, 0 contradicted, 0 undecided" in report
    assert "Sanity and regime checks: 10 of 10 pass" in report and report.count("![") == 4


def test_figures_needing_missing_data_are_skipped_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("VARSHIFT_DATA", str(tmp_path / "nothing"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    results, skipped = reproduce.run(tmp_path, quick=True, only=["width"],
                                     data_dir=str(tmp_path / "none"))
    assert results == [] and [name for name, _ in skipped] == ["width"]
    assert "MNIST files not found" in skipped[0][1] and "--data-dir" in skipped[0][1]
    assert "## Skipped" in (tmp_path / "REPORT.md").read_text()


def test_unknown_figure_is_rejected():
    with pytest.raises(ValueError, match="unknown figure"):
        reproduce.run("unused", only=["fig99"])
    with pytest.raises(ValueError, match="seeds must be an integer >= 2"):
        reproduce.run("unused", only=["noise-types"], seeds=1)


def test_quick_runs_do_not_write_into_the_committed_figures():
    assert str(reproduce.default_out(True)) == os.path.join("figures", "quick")
    assert str(reproduce.default_out(False)) == "figures"


def test_reproduce_command(tmp_path):
    out = subprocess.run([sys.executable, "-m", "varshift", "reproduce", "--only", "noise-types",
                          "--out", str(tmp_path), "-q"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "1 figure(s) and 0 case studies" in out.stdout
    assert "Holm-adjusted, paper claims: 0 hold, 0 contradicted, 0 undecided" in out.stdout


def test_runs_are_paired_by_seed():
    """Every arm of a comparison starts from the same weights for the same seed."""
    from varshift.reproduce.networks import ARCHITECTURES

    for arch, build in ARCHITECTURES.items():
        weights = [list(build(pl, r, noise=n, seed=3).state_dict(buffers=False).values())
                   for pl, r, n in (("a", 0.0, "dropout"), ("a", 0.5, "dropout"),
                                    ("b", 0.3, "dropout"), ("b", 0.2, "uout"),
                                    ("head", 0.1, "dropout"))]
        for other in weights[1:]:
            assert len(other) == len(weights[0]), arch
            assert all((a == b).all() for a, b in zip(other, weights[0])), arch


def test_the_sweep_drives_every_network_figure_and_files_are_reproducible(tmp_path, tiny):
    pytest.importorskip("mnist1d")
    results, skipped = reproduce.run(tmp_path, quick=True, only=NETWORK, seeds=2, jobs=2)
    assert skipped == []
    names = sorted(r.name for r in results)
    assert names == sorted(["fig16_training", "fig5_shift_per_layer_preresnet", "fig12_propagation",
                            "fig7_train_eval_accuracy", "fig8_flipped_logits", "fig9_recalibration",
                            "fig10_after_bn_and_uout", "fig14_equal_variance",
                            "fig13_theory_vs_measurement", "fig15_conv_angles",
                            "fig11_batch_size_momentum"])
    fig5 = json.loads((tmp_path / "fig5_shift_per_layer_preresnet.json").read_text())
    assert len(fig5["numbers"]["a/0.5"]["shift_per_layer"]) == 2  # seeds
    assert len(fig5["numbers"]["a/0.5"]["shift_per_layer"][0]) == 7  # BatchNorm layers
    claims = [c for r in results for c in r.claims]
    assert any("(b) hurts less than (a) at drop 0.5" in c.text for c in claims)
    # fig7's no-Dropout agreement is a regime check that this 2-seed run of a few epochs
    # need not reach; every other check holds by construction and passes
    regime = "without Dropout, train and inference mode agree"
    for c in claims:
        assert c.verdict in ("holds", "contradicted", "undecided", "passes") or (
            regime in c.text and c.verdict == "fails")
        if c.kind == "claim" and c.estimate is not None:
            assert c.n == 2 and c.low <= c.estimate <= c.high
    assert all(c.verdict == "passes" for c in claims if c.kind == "sanity" and regime not in c.text)
    # one epoch leaves errors far above the full run's 10 % axis: every curve's end is in view
    fig16 = next(r for r in results if r.name == "fig16_training").figure.axes[0]
    ends = [line.get_ydata()[-1] for line in fig16.get_lines()]
    assert len(ends) == 6 and max(ends) > 10 and fig16.get_ylim()[1] > max(ends)
    assert "the error axis ends at 1.2 times" in (tmp_path / "fig16_training.caption.md").read_text()
    # the quick sweep has two momenta: no sentence comparing the middle one with the fastest
    assert "curve lies under" not in (tmp_path / "fig11_batch_size_momentum.caption.md").read_text()
    theory = json.loads((tmp_path / "fig13_theory_vs_measurement.json").read_text())
    assert {p["case"] for p in theory["numbers"]["points"]} == {"a", "b"}
    # re-rendering from the cache writes byte-identical figures, JSON and report
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()
              and p.name != "timings.json"}
    start = time.perf_counter()
    reproduce.run(tmp_path, quick=True, only=NETWORK, seeds=2)
    assert time.perf_counter() - start < 60  # nothing was trained again
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()
             and p.name != "timings.json"}
    assert after.keys() == before.keys()
    assert [n for n in before if before[n] != after[n]] == []
    report = (tmp_path / "REPORT.md").read_text()
    assert "## Sanity and regime checks" in report and "Paper claims (" in report
    assert "## Our extensions" in report and "Our extensions, comparisons the paper does not make (" in report
    assert "seconds" not in fig5 and "task:" in (tmp_path / "timings.json").read_text()


def test_a_partial_run_keeps_the_other_figures_in_the_report(tmp_path):
    reproduce.run(tmp_path, quick=True, only=["shift-heatmap", "noise-types"])
    reproduce.run(tmp_path, quick=True, only=["noise-types"])
    report = (tmp_path / "REPORT.md").read_text()
    assert "(`fig3_shift_heatmap`)" in report and "(`fig4_noise_types`)" in report
    assert report.count("![") == 2
    assert (tmp_path / "fig3_shift_heatmap.svg").stat().st_size < 500_000  # rasterised mesh


@pytest.mark.slow
def test_quick_reproduction_makes_every_figure_and_case(tmp_path, mnist_dir):
    # its speed is reported, not asserted: timings belong in benchmarks, not in tests
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "varshift", "reproduce", "--quick", "--jobs", "2",
                          "--out", str(tmp_path), "--data-dir", str(mnist_dir), "-q"],
                         capture_output=True, text=True, timeout=2400,
                         env={**os.environ, "VARSHIFT_DATA": str(mnist_dir.parent)})
    seconds = time.perf_counter() - start
    assert out.returncode == 0, out.stderr
    print(out.stdout, f"({seconds:.0f} s)")
    assert "16 figure(s) and 4 case studies" in out.stdout and "skipped" not in out.stdout
    report = (tmp_path / "REPORT.md").read_text()
    assert report.count("![") == 20 and report.count("**Conclusion.**") == 4


def test_only_the_placements_are_drawn_in_their_colours():
    """(a) is red and (b) green in every figure; the other series' palette and the
    reference bands take neither (issue 24's figures)."""
    from matplotlib.colors import same_color

    from varshift.reproduce.empirical import PLACEMENT_COLORS, REFERENCE_COLOR, SERIES_COLORS

    placements = list(PLACEMENT_COLORS.values())
    assert not same_color(*placements)
    for color in (*SERIES_COLORS, REFERENCE_COLOR):
        assert not any(same_color(color, p) for p in placements), color
