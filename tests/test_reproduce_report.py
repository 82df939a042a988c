"""REPORT.md's layout: a one-page summary first, tables no wider than a screen, the
paper's words and our numbers beside every row."""

import json
import re
from pathlib import Path

import pytest

from varshift.reproduce.results import (
    CONFIRMATORY,
    CONFIRMATORY_READING,
    REESTIMATION,
    WIDTH,
    write_report,
)

FIGURES = Path(__file__).resolve().parents[1] / "figures"


@pytest.fixture(scope="module")
def rendered(rendered_report):
    return rendered_report


@pytest.mark.parametrize("source", ["rendered", "committed"])
def test_no_table_row_is_wider_than_a_screen(rendered, source):
    report = rendered if source == "rendered" else (FIGURES / "REPORT.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("|")]
    assert len(rows) > 100  # the claim tables are tables
    wide = [(len(line), line[:60]) for line in rows if len(line) > WIDTH]
    assert wide == []


def test_a_wide_row_would_be_caught(tmp_path):
    # the check above measures what the renderer writes: a long claim text exceeds it
    claim = {"text": "x" * WIDTH, "paper": "p", "ours": "o", "verdict": "holds", "kind": "claim",
             "rule": "", "p_holds": 0.001, "p_against": 0.9, "n": 5}
    (tmp_path / "fig1_a.json").write_text(json.dumps(
        {"name": "fig1_a", "title": "A", "caption": "c", "numbers": {}, "claims": [claim]}))
    write_report(tmp_path, [], "test")
    rows = [x for x in (tmp_path / "REPORT.md").read_text().splitlines() if x.startswith("|")]
    assert max(map(len, rows)) > WIDTH


def test_the_summary_comes_first_and_fits_a_page(rendered):
    headings = re.findall(r"^## (.+)$", rendered, re.MULTILINE)
    assert headings[:3] == ["Summary", "How the verdicts are reached", "Paper claims"]
    assert headings.index("Changes after results") > headings.index("Sanity and regime checks (not evidence)")
    summary = rendered[rendered.index("## Summary"):rendered.index("## How the verdicts")]
    assert len(summary.split()) < 1000  # about a page of prose, with its glossary
    for topic in ("Mechanism", "Accuracy", "Width", "Paper claims (", "Our extensions",
                  "Changes after results"):
        assert topic in summary, topic
    if (FIGURES / CONFIRMATORY).exists():
        assert "Confirmatory accuracy claims (18)" in summary and "## Confirmatory run" in rendered
        reading = (FIGURES / CONFIRMATORY).with_name(CONFIRMATORY_READING)
        first = reading.read_text().splitlines()[0]
        assert f"\n  {first}\n" in summary  # the maintainers' reading, nested in its bullet
    if (FIGURES / REESTIMATION).exists():  # the follow-up: its own section and family line
        assert "## Re-estimating the statistics three ways (an extension)" in rendered
        assert "- The re-estimation follow-up, an extension (6):" in summary
    else:
        assert "its verdicts are not part of this report" in summary


def test_every_summary_id_names_a_row_with_that_verdict(rendered):
    summary = rendered[rendered.index("## Summary"):rendered.index("## How the verdicts")]
    verdicts = dict(re.findall(r"^\| ([PESA]\d+) \| .* \| (\S+)(?: \(raw: .*\))? \|$", rendered,
                               re.MULTILINE))
    held = [i for part in re.findall(r"hold after Holm's adjustment \(([^)]*)\)", summary)
            for i in part.split(", ")]
    assert held and all(verdicts[i] == "holds" for i in held)


def test_every_row_has_its_note(rendered):
    ids = re.findall(r"^\| ([PESA]\d+) \|", rendered, re.MULTILINE)
    assert len(ids) == len(set(ids)) > 50
    for i in ids:
        assert f"- **{i}.** " in rendered, i


def test_the_summary_states_this_runs_baselines_not_fixed_ones(rendered):
    """The accuracy note's error range and scale come from the run's own fig16."""
    from varshift.reproduce.results import _baselines

    fig16 = {"name": "fig16_training", "numbers": {"table": [
        {"arch": "PreResNet", "setting": "no noise", "test_error": [2.0, 3.0]},
        {"arch": "WRN", "setting": "no noise", "test_error": [4.0, 4.0]},
        {"arch": "WRN", "setting": "a 0.5", "test_error": [9.0, 9.0]}]}}
    # means 2.5 and 4.0; the paper's 5.02 and 3.97 are 2.0 and 0.99 times them
    assert _baselines([fig16]) == {"baselines": "2.5-4.0 %", "scale": "by a factor of about 1.5"}
    assert "did not measure" in _baselines([])["baselines"]
    table = json.loads((FIGURES / "fig16_training.json").read_text())["numbers"]["table"]
    means = [sum(r["test_error"]) / len(r["test_error"]) for r in table if r["setting"] == "no noise"]
    assert f"reach {min(means):.1f}-{max(means):.1f} % test error" in rendered


def test_the_confirmatory_verdicts_lead_the_accuracy_summary(tmp_path):
    """With a confirmatory ``verdicts.json`` beside the figures, the summary counts its
    Holm-adjusted verdicts (ids named), states what the contradicted claims measured, and
    its section lists every declared claim."""
    def row(i, raw, adjusted, estimate, low, high, sized_for, direction=1, margin=None):
        return {"id": i, "status": "confirmatory", "text": f"net: claim {i}", "why": "sized",
                "paper": f"paper {i}", "ours": f"ours {i}", "verdict": raw, "kind": "claim",
                "rule": "", "p_holds": 0.01, "p_against": 0.9, "n": 11, "holm": adjusted,
                "estimate": estimate, "low": low, "high": high, "sd": 0.5, "direction": direction,
                "margin": margin, "sized_for": sized_for, "paper_effect": 2.0}
    verdicts = {"version": 2, "sha256": "f" * 64, "commit": "abc1234", "first_seed": 100,
                "regime": "240 epochs on 1,000 sequences", "train_sequences": 1000,
                "earlier": {"1": "0123abc"},
                "claims": [row("A01", "holds", "holds", 1.0, 0.5, 1.5, 1.2),
                           row("A05", "holds", "undecided", 0.4, 0.05, 0.75, 2.0),
                           row("A08", "contradicted", "contradicted", -0.9, -1.3, -0.5, 1.5),
                           # equivalence claims, sized for a zero difference within +-0.5
                           row("A12", "contradicted", "contradicted", -1.1, -1.3, -0.9, 0.0, 0, 0.5),
                           row("A13", "undecided", "undecided", -0.6, -0.9, -0.3, 0.0, 0, 0.5),
                           {"id": "A02", "status": "awaiting its pilot", "text": "claim A02",
                            "why": "its arm was not piloted"},
                           {"id": "A03", "status": "not testable at this regime",
                            "text": "claim A03", "why": "below the detectable effect"}]}
    (tmp_path / CONFIRMATORY).parent.mkdir()
    (tmp_path / CONFIRMATORY).write_text(json.dumps(verdicts))
    write_report(tmp_path, [], "test")
    report = (tmp_path / "REPORT.md").read_text()
    summary = report[report.index("## Summary"):report.index("## How the verdicts")]
    assert "**Accuracy at 1,000 training sequences, confirmatory" in summary
    assert ("1 of 5 hold after Holm's adjustment (A01), 2 without it (A05 too); 2 contradicted (A08, A12); "
            "2 undecided; 1 not testable at this regime and 1 awaiting their pilot, each declared "
            "in the protocol before any verdict on it") in summary
    assert ("the paper's effect being the other way unless said): A08 -0.90 [-1.30, -0.50]; "
            "A12 -1.10 [-1.30, -0.90] (an equivalence claim, outside its margin of +-0.5 "
            "points).") in summary
    # A05's interval [0.05, 0.75] excludes the 2.0 it was sized for: smaller than sized for;
    # A13, an equivalence claim, was sized for no effect to detect
    assert "excluding the effect the claim was sized for: A05." in summary
    assert "Protocol version 2 (commit abc1234; earlier families unchanged): [its section]" in summary
    assert ("- Confirmatory accuracy claims (5): 1 hold, 2 contradicted, 2 undecided (without the "
            "adjustment: 2 hold, 2 contradicted, 1 undecided)") in summary
    section = report[report.index("## Confirmatory run"):]
    assert "| A05 | net: claim A05 | undecided (raw: holds) |" in section
    assert "| A08 | net: claim A08 | **contradicted** |" in section
    assert ("- **A08.** Paper: paper A08. Ours: mean paired difference -0.90 points (95 % CI -1.30 "
            "to -0.50; sd across seeds 0.50; n = 11), against the paper's direction; sized to "
            "detect +1.50 (the paper's +2.00 scaled to the pilot's error level): the interval lies "
            "wholly below it") in section
    assert "+1.20 (the paper's +2.00 scaled to the pilot's error level): the interval includes it" in section
    assert "+2.00 (the paper's +2.00 scaled to the pilot's error level): the interval lies wholly below it" in section
    assert "| A03 | claim A03 | not testable at this regime |" in section
    assert "- **A02.** its arm was not piloted" in section


def test_the_summary_names_claims_that_hold_before_the_adjustment_only_when_few():
    from types import SimpleNamespace

    from varshift.reproduce.results import RAW_ONLY_NAMED, _topic_line

    def rows(raw_only):
        held = [SimpleNamespace(id="P1", adjusted="holds", claim={"verdict": "holds"})]
        return held + [SimpleNamespace(id=f"P{i + 2}", adjusted="undecided",
                                       claim={"verdict": "holds"}) for i in range(raw_only)]
    assert _topic_line(rows(0)) == "1 of 1 hold after Holm's adjustment (P1); 0 undecided"
    assert _topic_line(rows(2)).startswith("1 of 3 hold after Holm's adjustment (P1), 3 without "
                                           "it (P2, P3 too); 2 undecided")
    many = _topic_line(rows(RAW_ONLY_NAMED + 1))
    assert f", {RAW_ONLY_NAMED + 2} without it; " in many and "too" not in many


def test_the_cost_question_is_answered_per_network_from_its_confirmatory_parts():
    from varshift.reproduce.results import _confirmatory_cost

    def part(i, text, adjusted, estimate):
        return {"id": i, "status": "confirmatory", "text": text, "holm": adjusted,
                "estimate": estimate}
    adjust = "re-estimating the statistics lowers the test error at (a) 0.5"
    below = "with Dropout 0.5 (a), inference-mode training accuracy falls below train mode"
    verdicts = {"train_sequences": 1000, "claims": [
        part("A1", f"Net1: {adjust}", "holds", -1.0), part("A2", f"Net1: {below}", "holds", 1.0),
        part("A3", f"Net2: {adjust}", "contradicted", 0.8),
        part("A4", f"Net2: {below}", "holds", 1.3),
        part("A5", f"Net3: {below}", "undecided", 0.1)]}
    text = _confirmatory_cost(verdicts)
    assert text.startswith(" Confirmatory at 1,000 sequences: Net1: yes (")
    assert "Net2: not shown (" in text and "Net3: not settled (" in text
    assert "+0.80 points, A3: contradicted" in text
    assert _confirmatory_cost(None) == ""
