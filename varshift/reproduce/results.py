"""What a reproduced figure is, and how it is written to disk."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Claim", "FigureResult", "mean_sd", "write_figure", "write_report"]


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


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_figure(result: FigureResult, out: Path) -> list:
    """Write ``NAME.png``, ``NAME.svg``, ``NAME.json`` (numbers and claims) and
    ``NAME.caption.md``; returns the paths."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{result.name}.{ext}" for ext in ("png", "svg", "json", "caption.md")]
    result.figure.savefig(paths[0], dpi=120)
    result.figure.savefig(paths[1])
    plt.close(result.figure)
    paths[2].write_text(json.dumps(_plain({
        "name": result.name, "title": result.title, "numbers": result.numbers,
        "claims": [c.__dict__ for c in result.claims]}), indent=1))
    paths[3].write_text(f"**{result.title}.** {result.caption}\n")
    return paths


def write_report(results, skipped, out: Path, settings: str, timings: dict) -> Path:
    """``REPORT.md``: one row per claim (paper, ours, holds), the figures, what was
    skipped and why, and how long each figure took."""
    mark = {True: "yes", False: "**no**", None: "n/a"}
    lines = ["# varshift reproduction of Li et al. (CVPR 2019) at small scale", "",
             f"Settings: {settings}. Each figure below has a PNG, an SVG, the numbers behind "
             "it (`.json`) and its caption (`.caption.md`). A claim that does not hold here "
             "is reported as such.", "",
             "| figure | claim | paper | ours | holds here |", "|---|---|---|---|---|"]
    for r in results:
        for c in r.claims:
            lines.append(f"| {r.name} | {c.text} | {c.paper} | {c.ours} | {mark[c.holds]} |")
    lines += ["", "## Figures", ""]
    for r in results:
        lines += [f"### {r.title}", "", f"![{r.name}]({r.name}.png)", "", r.caption, ""]
    if skipped:
        lines += ["## Skipped", ""] + [f"- `{name}`: {why}" for name, why in skipped] + [""]
    lines += ["## Time per figure", "", "| figure | seconds |", "|---|---|"]
    lines += [f"| {name} | {sec:.1f} |" for name, sec in timings.items()]
    path = out / "REPORT.md"
    path.write_text("\n".join(lines) + "\n")
    return path
