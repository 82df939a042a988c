"""REPORT's "Changes after results": every disclosed change is rendered, matches the
committed rows and git, and the report never says that every claim was declared before
its numbers while changes after results exist."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from varshift.reproduce import disclosures
from varshift.reproduce.disclosures import DISCLOSURES, SECTION
from varshift.reproduce.results import PROTOCOL, write_report
from varshift.verdicts import Claim, tally

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "figures"
ALL_PREDECLARED = re.compile(r"every claim (was|is) declared[^.]*before", re.IGNORECASE)


def committed(pattern="fig*.json"):
    paths = sorted(FIGURES.glob(pattern))
    if not paths:
        pytest.skip("no committed figures")
    return [json.loads(p.read_text()) for p in paths]


def section(report):
    start = report.index(f"## {SECTION}")
    end = report.index("\n## ", start + 1)
    return report[start:end]


@pytest.fixture(scope="module")
def rendered(rendered_report):
    return rendered_report


def test_committed_report_is_the_rendered_one(rendered):
    # REPORT.md is generated, never hand-edited: re-rendering the cache gives its bytes
    assert (FIGURES / "REPORT.md").read_text() == rendered


def test_every_disclosure_is_rendered_after_the_summary(rendered, tmp_path):
    for report in (rendered, (FIGURES / "REPORT.md").read_text()):
        text = section(report)
        assert report.index("## Summary") < report.index(f"## {SECTION}")
        if "## Reading of the results" in report:
            assert report.index(f"## {SECTION}") < report.index("## Reading of the results")
        for d in DISCLOSURES:
            assert f" {d.commit} ({d.date} UTC): {d.title}" in text, d.commit
            assert d.reason in text and d.effect in text
            for m in d.moved:
                assert m.text.replace("|", "\\|") in text
            for e in d.edits:
                assert e.old.replace("|", "\\|") in text and e.new.replace("|", "\\|") in text
    # also in a report without any of the figures the changes concern
    write_report(tmp_path, [], "test")
    report = (tmp_path / "REPORT.md").read_text()
    assert all(f" {d.commit} (" in section(report) for d in DISCLOSURES)


@pytest.mark.parametrize("source", ["rendered", "committed", "protocol"])
def test_no_claim_of_all_claims_predeclared_while_disclosures_exist(rendered, source):
    text = {"rendered": rendered, "committed": (FIGURES / "REPORT.md").read_text(),
            "protocol": PROTOCOL}[source]
    assert DISCLOSURES, "the list is empty: then this test has nothing to guard"
    assert not ALL_PREDECLARED.search(text), ALL_PREDECLARED.search(text).group(0)
    assert f"[{SECTION}](#changes-after-results)" in text  # says where the changes are
    assert disclosures.DECLARED in text


def test_the_pattern_catches_the_old_sentence():
    old = "Every claim was declared in code before its numbers existed: the quantity, ..."
    assert ALL_PREDECLARED.search(old)


def test_moved_rows_and_edits_match_the_committed_rows():
    rows = {(f["name"], c["text"]): c for f in committed() + committed("case-*.json")
            for c in f["claims"]}
    for d in DISCLOSURES:
        for m in d.moved:
            if any(m.text == later.text for e in DISCLOSURES[DISCLOSURES.index(d) + 1:]
                   for later in e.moved):
                continue  # moved again later: checked there
            row = rows[(m.figure, m.text)]
            verdict = ({"holds": "passes", "contradicted": "fails"}[m.verdict]
                       if m.after == "sanity" else m.verdict)
            assert (row["kind"], row["verdict"]) == (m.after, verdict), m
        for e in d.edits:
            if any((e.figure, e.text, e.column) == (again.figure, again.text, again.column)
                   for later in DISCLOSURES[DISCLOSURES.index(d) + 1:] for again in later.edits):
                assert e.new == next(again.old for later in DISCLOSURES[DISCLOSURES.index(d) + 1:]
                                     for again in later.edits
                                     if (again.figure, again.text, again.column)
                                     == (e.figure, e.text, e.column))
                continue  # edited again later: the next edit starts where this one ended
            row = rows[(e.figure, e.text)]
            assert row[{"paper": "paper", "claim": "text", "ours": "ours"}[e.column]] == e.new, e
            assert e.old != e.new


def _figures_at(commit):
    """The claim rows of every figure JSON as committed at ``commit`` (None without git
    history)."""
    names = git("ls-tree", "--name-only", commit, "figures/")
    if names is None:
        return None
    return [json.loads(git("show", f"{commit}:{name}")) for name in names.split()
            if name.startswith("figures/fig") and name.endswith(".json")]


@pytest.mark.parametrize("d", [d for d in DISCLOSURES if d.counts_before], ids=lambda d: d.commit)
def test_the_counts_before_each_change_are_those_of_its_parent_commit(d, rendered):
    figures = _figures_at(f"{d.commit}~1")
    if figures is None:
        pytest.skip(f"git history without {d.commit}")
    claims = [Claim(**c) for f in figures for c in f["claims"]]
    paper = [c for c in claims if c.kind == "claim"]
    if "Holm-adjusted" in d.counts_before:
        if any(c.p_holds is None for c in paper):
            pytest.skip("the parent's rows carry no p-values")
        from dataclasses import replace

        from varshift.verdicts import holm
        paper = [replace(c, verdict=v) for c, v in zip(paper, holm(paper))]
        expected = f"{len(paper)} paper claims, Holm-adjusted: {tally(paper)}"
    else:
        expected = f"{len(paper)} paper claims, {tally(paper)}"
    assert d.counts_before == expected
    assert f"| {d.commit} | {d.counts_before} |" in section(rendered).splitlines()


def test_summary_counts_the_current_rows_after_holm(rendered):
    figures = committed()
    claims = [Claim(**c) for f in figures for c in f["claims"] if c["kind"] == "claim"]
    line = next(x for x in rendered.splitlines() if x.startswith("- Paper claims ("))
    assert line.startswith(f"- Paper claims ({len(claims)}): ")
    assert f"(without the adjustment: {tally(claims)})" in line


def git(*args):
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30,
                             env={**os.environ, "TZ": "UTC"})
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


@pytest.mark.parametrize("d", DISCLOSURES, ids=lambda d: d.commit)
def test_disclosures_name_real_commits_with_their_dates_and_messages(d):
    date = git("show", "-s", "--format=%ad", "--date=format-local:%Y-%m-%d %H:%M:%S", d.commit)
    if date is None:
        pytest.skip(f"git history without {d.commit}")
    assert date.strip() == d.date
    message = git("show", "-s", "--format=%B", d.commit)
    for quote in re.findall(r'commit message: "([^"]+)"', d.reason):
        assert quote in message, quote
