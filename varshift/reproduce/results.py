"""What a reproduced figure is, and how it is written to disk."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._json import json_ready

__all__ = ["Claim", "FigureResult", "mean_sd", "new_figure", "write_figure", "write_case",
           "write_report"]


def new_figure(rows, cols, width=5.2, height=3.6):
    """A figure of ``rows`` x ``cols`` panels, each ``width`` x ``height`` inches;
    returns ``(figure, axes)`` with axes always 2-D."""
    import matplotlib.pyplot as plt

    return plt.subplots(rows, cols, figsize=(width * cols, height * rows),
                        constrained_layout=True, squeeze=False)


def mean_sd(values):
    """``(mean, sample sd)`` of a list of per-seed values (sd 0 for one value)."""
    values = np.asarray(values, float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


@dataclass
class Claim:
    """One of the paper's claims, checked on our run.

    Attributes
    ----------
    text : str
        The claim, e.g. "shift grows with the drop ratio".
    paper : str
        The paper's number or statement.
    ours : str
        Our number(s), with error bars over seeds where there are seeds.
    holds : bool or None
        Whether the claim holds here (None: not decidable from this run).
    """

    text: str
    paper: str
    ours: str
    holds: bool | None

    def __post_init__(self):
        if self.holds is not None:
            self.holds = bool(self.holds)


@dataclass
class FigureResult:
    """A reproduced figure: the drawing, its numbers, a caption and its claims."""

    name: str
    title: str
    figure: object
    caption: str
    numbers: dict
    claims: list = field(default_factory=list)


def write_figure(result: FigureResult, out: Path, seconds: float = float("nan")) -> list:
    """Write ``NAME.png``, ``NAME.svg``, ``NAME.json`` (numbers, claims, seconds taken)
    and ``NAME.caption.md``; returns the paths."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{result.name}.{ext}" for ext in ("png", "svg", "json", "caption.md")]
    result.figure.savefig(paths[0], dpi=120)
    result.figure.savefig(paths[1])
    plt.close(result.figure)
    paths[2].write_text(json.dumps(json_ready({
        "name": result.name, "title": result.title, "caption": result.caption,
        "seconds": seconds, "numbers": result.numbers,
        "claims": [c.__dict__ for c in result.claims]}), indent=1))
    paths[3].write_text(f"**{result.title}.** {result.caption}\n")
    return paths


def write_case(result, out: Path) -> list:
    """Write a case study's ``case-NAME.png``, ``.svg``, ``.json`` (every number) and
    ``.md`` (its summary); returns the paths."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"case-{result.name}.{ext}" for ext in ("png", "svg", "json", "md")]
    ax = result.plot()
    ax.figure.savefig(paths[0], dpi=120)
    ax.figure.savefig(paths[1])
    plt.close(ax.figure)
    result.to_json(paths[2])
    paths[3].write_text(result.summary(markdown=True) + "\n")
    return paths


def _figure_number(path):
    digits = "".join(ch for ch in path.stem.split("_")[0] if ch.isdigit())
    return (int(digits) if digits else 0, path.stem)


def write_report(out: Path, skipped, settings: str) -> Path:
    """``REPORT.md`` from every figure JSON in ``out`` (so a run with ``--only``
    updates its figures and keeps the others): one row per claim (paper, ours, holds),
    the figures with captions, what this run skipped and why, and time per figure."""
    mark = {True: "yes", False: "**no**", None: "n/a"}
    figures = [json.loads(p.read_text()) for p in sorted(out.glob("fig*.json"), key=_figure_number)]
    lines = ["# varshift reproduction of Li et al. (CVPR 2019) at small scale", "",
             f"Settings of the last run: {settings}. Each figure below has a PNG, an SVG, "
             "the numbers behind it (`.json`) and its caption (`.caption.md`). A claim that "
             "does not hold here is reported as such.", "",
             "| figure | claim | paper | ours | holds here |", "|---|---|---|---|---|"]
    for f in figures:
        for c in f["claims"]:
            lines.append(f"| {f['name']} | {c['text']} | {c['paper']} | {c['ours']} | {mark[c['holds']]} |")
    lines += ["", "## Figures", ""]
    for f in figures:
        lines += [f"### {f['title']}", "", f"![{f['name']}]({f['name']}.png)", "", f["caption"], ""]
    cases = [json.loads(p.read_text()) for p in sorted(out.glob("case-*.json"))]
    if cases:
        lines += ["## Case studies", "",
                  "Questions people posted, rebuilt and measured over several seeds "
                  "(`varshift case NAME`; quick settings here). Full summaries: "
                  "`case-NAME.md`.", "",
                  "| case | statement | posted | measured here | holds here |",
                  "|---|---|---|---|---|"]
        for c in cases:
            lines += [f"| {c['name']} | {k['text']} | {k['paper']} | {k['ours']} | {mark[k['holds']]} |"
                      for k in c["claims"]]
        lines.append("")
        for c in cases:
            settings = ", ".join(f"{k} {v}" for k, v in c["settings"].items())
            lines += [f"### {c['title']} (`{c['name']}`)", "", f"*Question.* {c['question']}", "",
                      f"*Settings:* {settings}.", "", f"![{c['name']}](case-{c['name']}.png)", "",
                      f"**Conclusion.** {c['conclusion']}", ""]
    if skipped:
        lines += ["## Skipped in the last run", ""] + [f"- `{name}`: {why}" for name, why in skipped] + [""]
    lines += ["## Time per figure", "", "| figure | seconds |", "|---|---|"]
    lines += [f"| {f['name']} | {f['seconds']:.1f} |" if f.get("seconds") is not None
              else f"| {f['name']} | n/a |" for f in figures + cases]
    path = out / "REPORT.md"
    path.write_text("\n".join(lines) + "\n")
    return path
