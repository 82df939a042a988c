"""varshift reproduce: figures, numbers, claims and the report."""

import json
import os
import subprocess
import sys
import time

import pytest

from varshift import reproduce
from varshift.reproduce import analytic, empirical

ANALYTIC = list(analytic.FIGURES)


def files_of(out, name):
    return [out / f"{name}.{ext}" for ext in ("png", "svg", "json", "caption.md")]


def test_analytic_figures_are_written_with_claims_that_hold(tmp_path):
    results, skipped = reproduce.run(tmp_path, quick=True, only=ANALYTIC)
    assert skipped == [] and len(results) == 4
    for result in results:
        for path in files_of(tmp_path, result.name):
            assert path.stat().st_size > 100, path
        data = json.loads((tmp_path / f"{result.name}.json").read_text())
        assert data["claims"] and all(c["holds"] for c in data["claims"]), data["claims"]
    report = (tmp_path / "REPORT.md").read_text()
    assert "| fig4_noise_types | Uout shifts far less than Dropout" in report
    assert report.count("![") == 4 and "Time per figure" in report


def test_figures_needing_missing_data_are_skipped_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("VARSHIFT_DATA", str(tmp_path / "nothing"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    results, skipped = reproduce.run(tmp_path, quick=True, only=["width"],
                                     data_dir=str(tmp_path / "none"))
    assert results == [] and [name for name, _ in skipped] == ["width"]
    assert "MNIST files not found" in skipped[0][1] and "--data-dir" in skipped[0][1]
    assert "## Skipped" in (tmp_path / "REPORT.md").read_text()


def test_a_miniature_sweep_drives_figures_5_7_8_9(tmp_path, monkeypatch):
    pytest.importorskip("mnist1d")
    monkeypatch.setattr(empirical, "RATES", (0.0, 0.1, 0.5))
    monkeypatch.setattr(empirical.Context, "epochs", property(lambda self: 2))
    names = ["shift-per-layer", "train-eval-accuracy", "flipped-logits", "recalibration"]
    results, skipped = reproduce.run(tmp_path, quick=True, only=names, seeds=1)
    assert skipped == [] and [r.name for r in results] == [
        "fig5_shift_per_layer_preresnet", "fig7_train_eval_accuracy", "fig8_flipped_logits",
        "fig9_recalibration"]
    fig5 = json.loads((tmp_path / "fig5_shift_per_layer_preresnet.json").read_text())
    assert set(fig5["numbers"]) == {"a/0.0", "a/0.1", "a/0.5", "b/0.0", "b/0.1", "b/0.5"}
    assert len(fig5["numbers"]["a/0.5"]["shift_per_layer"]) == 7  # BatchNorm layers
    fig9 = json.loads((tmp_path / "fig9_recalibration.json").read_text())
    assert max(fig9["numbers"]["a"]["max_shift_after"]) < 1.001
    for result in results:
        assert all(isinstance(c.holds, bool) for c in result.claims)


def test_unknown_figure_is_rejected():
    with pytest.raises(ValueError, match="unknown figure"):
        reproduce.run("unused", only=["fig99"])


def test_reproduce_command(tmp_path):
    out = subprocess.run([sys.executable, "-m", "varshift", "reproduce", "--only", "noise-types",
                          "--out", str(tmp_path), "-q"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "1 figure(s) and 0 case studies" in out.stdout
    assert "3 of 3 paper claims and 0 of 0 posted statements hold here" in out.stdout


@pytest.mark.slow
def test_quick_reproduction_makes_every_figure_and_case(tmp_path, mnist_dir):
    # its speed (about 12 minutes on 2 cores) is reported, not asserted: timings belong in
    # benchmarks, not in tests
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "varshift", "reproduce", "--quick", "--out",
                          str(tmp_path), "--data-dir", str(mnist_dir), "-q"],
                         capture_output=True, text=True, timeout=2400,
                         env={**os.environ, "VARSHIFT_DATA": str(mnist_dir.parent)})
    seconds = time.perf_counter() - start
    assert out.returncode == 0, out.stderr
    print(out.stdout, f"({seconds:.0f} s)")
    assert "11 figure(s) and 4 case studies" in out.stdout and "skipped" not in out.stdout
    report = (tmp_path / "REPORT.md").read_text()
    assert report.count("![") == 15 and report.count("**Conclusion.**") == 4


def test_a_partial_run_keeps_the_other_figures_in_the_report(tmp_path):
    reproduce.run(tmp_path, quick=True, only=["shift-heatmap", "noise-types"])
    reproduce.run(tmp_path, quick=True, only=["noise-types"])
    report = (tmp_path / "REPORT.md").read_text()
    assert "| fig3_shift_heatmap |" in report and "| fig4_noise_types |" in report
    assert report.count("![") == 2
    assert (tmp_path / "fig3_shift_heatmap.svg").stat().st_size < 500_000  # rasterised mesh
