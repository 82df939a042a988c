"""What a reproduced figure is, and how it is written to disk."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._files import atomic_write
from .._json import json_ready
from .disclosures import ANCHOR, DECLARED, DISCLOSURES, SECTION
from .disclosures import markdown as disclosures_markdown

__all__ = ["FigureResult", "mean_sd", "new_figure", "save_figure", "write_figure", "write_case",
           "write_report", "write_timings"]


def new_figure(rows, cols, width=5.2, height=3.6):
    """A figure of ``rows`` x ``cols`` panels, each ``width`` x ``height`` inches;
    returns ``(figure, axes)`` with axes always 2-D.

    A plain :class:`matplotlib.figure.Figure`, not one of pyplot's: it needs no
    backend (the user's is left as it is) and is not shown by an interactive one."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * cols, height * rows), layout="constrained")
    return figure, figure.subplots(rows, cols, squeeze=False)


def mean_sd(values):
    """``(mean, sample sd)`` of a list of per-seed values (sd 0 for one value)."""
    values = np.asarray(values, float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


@dataclass
class FigureResult:
    """A reproduced figure: the drawing, its numbers, a caption and its claims."""

    name: str
    title: str
    figure: object
    caption: str
    numbers: dict
    claims: list = field(default_factory=list)
    """:class:`varshift.verdicts.Claim` rows (claims and sanity checks)."""


def _write_text(path: Path, text: str) -> None:
    with atomic_write(path, "w", owner="reproduce") as f:
        f.write(text)


def save_figure(figure, png: Path, svg: Path) -> None:
    """Save ``figure`` as PNG and SVG with fixed metadata, so that the same figure gives
    byte-identical files (no creation date, SVG ids from a fixed salt)."""
    import matplotlib as mpl
    import matplotlib.pyplot as plt

    with mpl.rc_context({"svg.hashsalt": "varshift"}):
        for path, kw in ((png, {"dpi": 120, "metadata": {"Software": None}}),
                         (svg, {"metadata": {"Date": None, "Creator": None}})):
            with atomic_write(path, "wb", owner="reproduce") as f:
                figure.savefig(f, format=path.suffix[1:], **kw)
    plt.close(figure)


def write_figure(result: FigureResult, out: Path) -> list:
    """Write ``NAME.png``, ``NAME.svg``, ``NAME.json`` (numbers and claims) and
    ``NAME.caption.md``; returns the paths. Same numbers, same bytes."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{result.name}.{ext}" for ext in ("png", "svg", "json", "caption.md")]
    save_figure(result.figure, paths[0], paths[1])
    _write_text(paths[2], json.dumps(json_ready({
        "name": result.name, "title": result.title, "caption": result.caption,
        "numbers": result.numbers, "claims": [c.__dict__ for c in result.claims]}), indent=1) + "\n")
    _write_text(paths[3], f"**{result.title}.** {result.caption}\n")
    return paths


def write_timings(out: Path, seconds: dict) -> Path:
    """Merge ``name -> seconds`` into ``out/timings.json`` (the only file whose content
    depends on the machine and the moment)."""
    path = out / "timings.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    old.update({k: round(float(v), 1) for k, v in seconds.items() if v is not None})
    _write_text(path, json.dumps(dict(sorted(old.items())), indent=1) + "\n")
    return path


def write_case(result, out: Path) -> list:
    """Write a case study's ``case-NAME.png``, ``.svg``, ``.json`` (every number) and
    ``.md`` (its summary); returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"case-{result.name}.{ext}" for ext in ("png", "svg", "json", "md")]
    save_figure(result.plot().figure, paths[0], paths[1])
    data = result.to_dict()
    data.pop("seconds", None)  # timings go to timings.json
    _write_text(paths[2], json.dumps(data, indent=1) + "\n")
    _write_text(paths[3], result.summary(markdown=True) + "\n")
    return paths


def _figure_number(path):
    digits = "".join(ch for ch in path.stem.split("_")[0] if ch.isdigit())
    return (int(digits) if digits else 0, path.stem)


def _cell(text):
    return str(text).replace("|", "\\|")


def _verdict_cell(verdict, adjusted=None):
    bold = lambda v: f"**{v}**" if v in ("contradicted", "fails") else v  # noqa: E731
    if adjusted is None or adjusted == verdict:
        return bold(verdict)
    return f"{bold(verdict)}; Holm: {bold(adjusted)}"


def _claim_rows(where, claims, adjusted=None):
    """Table rows; ``adjusted`` maps a row's ``(where, text)`` to its Holm verdict."""
    rows = []
    for c in claims:
        verdict = _verdict_cell(c["verdict"], (adjusted or {}).get((where, c["text"])))
        rows.append(f"| {where} | {_cell(c['text'])} | {_cell(c['paper'])} | {_cell(c['ours'])} | "
                    f"{verdict} |")
    return rows


def _adjusted(groups, kind):
    """Holm verdicts of every ``kind`` row of ``groups`` (``(where, claim dicts)`` pairs),
    one family, keyed by ``(where, text)``; and the family's claims."""
    from ..verdicts import Claim, holm

    keys, claims = [], []
    for where, rows in groups:
        for c in rows:
            if c.get("kind", "claim") == kind:
                keys.append((where, c["text"]))
                claims.append(Claim(**c))
    return dict(zip(keys, holm(claims))), claims


PROTOCOL = (
    DECLARED + " The verdict comes "
    "from the 95 % Student-t interval of the per-seed differences: **holds** if it excludes 0 "
    "(or the margin) in the paper's direction, **contradicted** if it excludes 0 the other way, "
    "**undecided** otherwise; with fewer than 3 seeds a claim is undecided whatever its "
    "interval. **Multiplicity:** the paper claims, our extensions and the case-study "
    "statements are three families; in each, Holm's step-down procedure adjusts the "
    "one-sided tests behind the verdicts (level 0.025 each, the level of a 95 % interval's "
    "bound), for \"holds\" and for \"contradicted\" apart. The tables show the unadjusted "
    "verdict and, where it differs, the adjusted one; the summary counts the adjusted ones. "
    "Undecided is not counted as holding. Checks that are true by "
    "construction when the code is right (closed forms against themselves or against Monte "
    "Carlo, a shift of 1 after recalibrating on the same data) are listed separately and are "
    "not evidence for the paper; the regime checks (training has plateaued) are listed with "
    "them.")


def _counted_before() -> str:
    """The paper claims as counted before each change after results that moved them
    (empty when none did)."""
    parts = [f"{d.counts_before} before {d.commit}" for d in DISCLOSURES if d.counts_before]
    return (f"; as counted before the changes after results that moved them ([{SECTION}]"
            f"({ANCHOR})): " + "; ".join(parts)) if parts else ""


def write_report(out: Path, skipped, settings: str) -> Path:
    """``REPORT.md`` from every figure and case JSON in ``out`` (so a run with ``--only``
    updates its figures and keeps the others): the protocol, the counts of each
    verdict (and the paper claims' as counted before a change after results), the
    changes after results (:mod:`varshift.reproduce.disclosures`), one row per claim
    (paper, ours with interval and n, verdict), the sanity checks apart, the figures
    with captions, the case studies, and what was skipped."""
    from ..verdicts import Claim, adjusted_tally

    figures = [json.loads(p.read_text()) for p in sorted(out.glob("fig*.json"), key=_figure_number)]
    cases = [json.loads(p.read_text()) for p in sorted(out.glob("case-*.json"))]
    as_claims = lambda rows: [Claim(**c) for c in rows]  # noqa: E731
    checks = [c for f in figures + cases for c in as_claims(f["claims"]) if c.kind == "sanity"]
    failed = [c for c in checks if c.verdict == "fails"]
    in_figures = [(f["name"], f["claims"]) for f in figures]
    paper, paper_claims = _adjusted(in_figures, "claim")
    extension, extension_claims = _adjusted(in_figures, "extension")
    case, case_claims = _adjusted([(k["name"], k["claims"]) for k in cases], "claim")
    lines = ["# varshift reproduction of Li et al. (CVPR 2019) at small scale", "",
             f"Settings: {settings}. Every figure has a PNG, an SVG, its numbers (`.json`) and "
             f"its caption (`.caption.md`); wall times are in `timings.json`.", "",
             "## How the verdicts are reached", "", PROTOCOL, "",
             "## Summary", "",
             "Counts after Holm's adjustment within each family.", "",
             f"- Paper claims ({len(paper_claims)}): {adjusted_tally(paper_claims)}"
             f"{_counted_before()}.",
             f"- Our extensions, comparisons the paper does not make "
             f"({len(extension_claims)}): {adjusted_tally(extension_claims, 'extension')}.",
             f"- Case-study statements ({len(case_claims)}): "
             f"{adjusted_tally(case_claims)}." if cases else "- Case studies: not run.",
             f"- Sanity and regime checks: {len(checks) - len(failed)} of {len(checks)} pass"
             + (f"; failing: {'; '.join(c.text for c in failed)}." if failed else "."), ""]
    lines += disclosures_markdown(DISCLOSURES)
    notes = out / "NOTES.md"
    if notes.exists():
        lines += ["## Reading of the results", "", notes.read_text().strip(), ""]
    lines += ["## Paper claims", "",
              "| figure | claim | paper | ours: mean ± sd; paired difference [95 % CI], n | verdict |",
              "|---|---|---|---|---|"]
    for f in figures:
        lines += _claim_rows(f["name"], [c for c in f["claims"] if c.get("kind", "claim") == "claim"],
                             paper)
    lines += ["", "## Our extensions (not claims of the paper; same rule, counted apart)", "",
              "| figure | comparison | source | ours: mean ± sd; paired difference [95 % CI], n | verdict |",
              "|---|---|---|---|---|"]
    for f in figures:
        lines += _claim_rows(f["name"], [c for c in f["claims"] if c.get("kind") == "extension"],
                             extension)
    lines += ["", "## Sanity and regime checks (not evidence)", "",
              "| where | check | expected | ours | result |", "|---|---|---|---|---|"]
    for where, rows in [(f["name"], f["claims"]) for f in figures] + [(k["name"], k["claims"]) for k in cases]:
        lines += _claim_rows(where, [c for c in rows if c.get("kind") == "sanity"])
    lines += ["", "## Figures", ""]
    for f in figures:
        lines += [f"### {f['title']}", "", f"![{f['name']}]({f['name']}.png)", "", f["caption"], ""]
    if cases:
        lines += ["## Case studies", "",
                  "Questions people posted, rebuilt and measured over several seeds "
                  "(`varshift case NAME`). Full summaries: `case-NAME.md`.", "",
                  "| case | statement | posted | measured here | verdict |", "|---|---|---|---|---|"]
        for k in cases:
            lines += _claim_rows(k["name"], [c for c in k["claims"] if c.get("kind", "claim") == "claim"],
                                 case)
        lines.append("")
        for k in cases:
            case_settings = ", ".join(f"{a} {b}" for a, b in k["settings"].items())
            lines += [f"### {k['title']} (`{k['name']}`)", "", f"*Question.* {k['question']}", "",
                      f"*Settings:* {case_settings}.", "", f"![{k['name']}](case-{k['name']}.png)", "",
                      f"**Conclusion.** {k['conclusion']}", ""]
    if skipped:
        lines += ["## Skipped in the last run", ""] + [f"- `{name}`: {why}" for name, why in skipped] + [""]
    path = out / "REPORT.md"
    _write_text(path, "\n".join(lines) + "\n")
    return path
