"""REPORT's "Changes after results": every disclosed change is rendered, matches the
committed rows and git, and the report never says that every claim was declared before
its numbers while changes after results exist."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from varshift.reproduce import disclosures
from varshift.reproduce.disclosures import DISCLOSURES, SECTION, counted_before
from varshift.reproduce.plan import Settings
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
def rendered(tmp_path_factory):
    """REPORT.md rendered from the committed figure and case JSON (and NOTES.md)."""
    if not (FIGURES / "REPORT.md").exists():
        pytest.skip("no committed figures")
    out = tmp_path_factory.mktemp("report")
    for path in list(FIGURES.glob("fig*.json")) + list(FIGURES.glob("case-*.json")):
        shutil.copy(path, out / path.name)
    if (FIGURES / "NOTES.md").exists():
        shutil.copy(FIGURES / "NOTES.md", out / "NOTES.md")
    write_report(out, [], Settings(quick=False).describe() + "; case studies in their quick mode")
    return (out / "REPORT.md").read_text()


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
            row = rows[(m.figure, m.text)]
            assert (row["kind"], row["verdict"]) == (m.after, m.verdict), m
        for e in d.edits:
            row = rows[(e.figure, e.text)]
            assert row[{"paper": "paper", "claim": "text", "ours": "ours"}[e.column]] == e.new, e
            assert e.old != e.new


def test_summary_shows_the_tally_before_the_change_next_to_the_current_one(rendered):
    (change,) = [d for d in DISCLOSURES if d.moved]
    (holm_change,) = [d for d in DISCLOSURES if d.commit == "ded8da9"]
    assert "29 hold, 2 contradicted, 37 undecided" in holm_change.effect
    figures = committed()
    rows, moved = counted_before(figures, change)
    before = [Claim(**c) for c in rows]
    assert moved == len(change.moved) == 14
    assert sum(c.kind == "claim" for c in before) == 82
    assert tally(before) == "49 hold, 4 contradicted, 29 undecided"
    now = [Claim(**c) for f in figures for c in f["claims"]]
    assert tally(now) == "44 hold, 3 contradicted, 21 undecided"
    line = next(x for x in rendered.splitlines() if x.startswith("- Paper claims ("))
    assert line.startswith("- Paper claims (68): 29 hold, 2 contradicted, 37 undecided (without "
                           "the adjustment: 44 hold, 3 contradicted, 21 undecided); ")
    assert f"as counted before {change.commit}" in line
    assert line.endswith("82 paper claims, 49 hold, 4 contradicted, 29 undecided.")
    assert "49 hold, 4 contradicted, 29 undecided -> 68: 44 hold" in change.effect


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
