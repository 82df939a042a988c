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

__all__ = ["CONFIRMATORY", "REESTIMATION", "FigureResult", "confirmatory_markdown", "mean_sd", "new_figure",
           "save_figure", "write_figure", "write_case", "write_report", "write_timings"]


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
    """The verdict the summary counts (Holm's where there is one), with the unadjusted
    one beside it where they differ."""
    bold = lambda v: f"**{v}**" if v in ("contradicted", "fails") else v  # noqa: E731
    if adjusted is None or adjusted == verdict:
        return bold(verdict)
    return f"{bold(adjusted)} (raw: {bold(verdict)})"


WIDTH = 140
"""Widest table row REPORT.md may hold, in characters of Markdown (about a screen): the
tables hold the claim and its verdict, and each table's notes below it the paper's
words and our numbers, which would not fit beside them."""

_KINDS = {"claim": ("P", "paper", "Paper"), "extension": ("E", "source", "Source"),
          "sanity": ("S", "expected", "Expected")}


@dataclass
class _Row:
    """One claim row of the report, numbered within its kind (``P3``, ``E1``, ``S12``)."""

    id: str
    where: str
    claim: dict
    adjusted: str | None = None


def _numbered(figures, kind, adjusted=None):
    """``(where, [_Row])`` per figure with rows of ``kind``, numbered in report order."""
    prefix, groups, i = _KINDS[kind][0], [], 0
    for f in figures:
        rows = []
        for c in f["claims"]:
            if c.get("kind", "claim") == kind:
                i += 1
                rows.append(_Row(f"{prefix}{i}", f["name"], c,
                                 (adjusted or {}).get((f["name"], c["text"]))))
        if rows:
            groups.append((f, rows))
    return groups


def _claim_table(groups, kind, heading_level="###"):
    """Per figure: a table of id, claim and verdict, then a note per row with the
    paper's words (or the source, or what is expected) and our numbers."""
    _, column, label = _KINDS[kind]
    lines = []
    for f, rows in groups:
        lines += [f"{heading_level} {f.get('title', f['name'])} (`{f['name']}`)", ""]
        lines += _rows_table(rows, label) + [""]
    return lines


def _rows_table(rows, label, ours=lambda claim: claim["ours"]):
    """A table of id, claim and verdict (Holm's, raw beside it where they differ), then a
    note per row: ``label`` (the paper's words, or the source, or what is expected) and
    ``ours(claim)``."""
    lines = ["| id | claim | verdict |", "|---|---|---|"]
    lines += [f"| {r.id} | {_cell(r.claim['text'])} | "
              f"{_verdict_cell(r.claim['verdict'], r.adjusted)} |" for r in rows]
    lines.append("")
    return lines + [f"- **{r.id}.** {label}: {r.claim['paper'] or 'none'}. Ours: {ours(r.claim)}."
                    for r in rows]


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
    DECLARED + "\n\nThe verdict comes "
    "from the 95 % Student-t interval of the per-seed differences: **holds** if it excludes 0 "
    "(or the margin) in the paper's direction, **contradicted** if it excludes 0 the other way, "
    "**undecided** otherwise; with fewer than 3 seeds a claim is undecided whatever its "
    "interval.\n\n**Multiplicity:** the paper claims, our extensions and the case-study "
    "statements are three families (a protocol run, such as the confirmatory one, has its "
    "own, fixed in its file); in each, Holm's step-down procedure adjusts the "
    "one-sided tests behind the verdicts (level 0.025 each, the level of a 95 % interval's "
    "bound), for \"holds\" and for \"contradicted\" apart. The tables show the adjusted "
    "verdict and, where it differs, the unadjusted one (\"raw\"); the summary counts the "
    "adjusted ones. "
    "Undecided is not counted as holding.\n\nChecks that are true by "
    "construction when the code is right (closed forms against themselves or against Monte "
    "Carlo, a shift of 1 after recalibrating on the same data) are listed separately and are "
    "not evidence for the paper; the regime checks (training has plateaued) are listed with "
    "them.")


GLOSSARY = (
    "*Terms.* (a): Dropout right before a BatchNorm; (b): Dropout before a block's last "
    "convolution, so a weight layer lies between it and the next BatchNorm. Shift: the "
    "paper's max(moving/real, real/moving) of a BatchNorm's variance (moving: from training; "
    "real: met in inference mode, Dropout off); 1 is none. Adjust: re-estimating "
    "BatchNorm's statistics on the training data with Dropout "
    "off (the paper's Table 3). Holm: the correction for testing many claims at once; raw: "
    "without it. Powered: seeds chosen in advance to give 80 % power for the paper's effect "
    "scaled to our error level (assuming effects scale with the baseline error).")
"""The summary's definitions, for a reader who starts there."""
_FULL_RUN = "Full run (exploratory): "

_TOPICS = (
    ("mechanism", "Mechanism: the variance shift itself"),
    ("cost", "Is the accuracy cost the shift's? (rows added after results)"),
    ("accuracy", "Accuracy in the full run (exploratory): test error and training accuracy"),
    ("width", "Width: wide against thin"),
)


def _topic(text):
    """Which part of the summary a paper claim belongs to, from its text."""
    lowered = text.lower()
    if "cost is the shift's" in lowered:
        return "cost"
    if any(w in lowered for w in ("width", "wide", "cos^2")):
        return "width"
    if any(w in lowered for w in ("error", "accuracy", "hurts", "re-estimation", "baseline")):
        return "accuracy"
    return "mechanism"


def _ids(rows, verdict):
    return ", ".join(r.id for r in rows if (r.adjusted or r.claim["verdict"]) == verdict)


RAW_ONLY_NAMED = 3
"""The summary names the claims that hold before Holm's adjustment only when there are at
most so many of them (else it gives their number alone)."""


def _topic_line(rows):
    """``'H of N hold after Holm's adjustment (P1, P2), R without it (P3 too); C
    contradicted (P5); U undecided'``."""
    verdicts = [r.adjusted or r.claim["verdict"] for r in rows]
    held, raw = verdicts.count("holds"), sum(r.claim["verdict"] == "holds" for r in rows)
    held_raw_only = [r.id for r, v in zip(rows, verdicts)
                     if r.claim["verdict"] == "holds" and v != "holds"]
    line = (f"{held} of {len(rows)} hold after Holm's adjustment"
            + (f" ({_ids(rows, 'holds')})" if held else "")
            + (f", {raw} without it" if raw != held else "")
            + (f" ({', '.join(held_raw_only)} too)"
               if 0 < len(held_raw_only) <= RAW_ONLY_NAMED else ""))
    if "contradicted" in verdicts:
        line += f"; {verdicts.count('contradicted')} contradicted ({_ids(rows, 'contradicted')})"
    raw_only = [r for r in rows if r.claim["verdict"] == "contradicted"
                and (r.adjusted or r.claim["verdict"]) != "contradicted"]
    if raw_only:
        line += (f"; {len(raw_only)} contradicted before the adjustment only ("
                 + ", ".join(f"{r.id}, {r.claim['text']}" for r in raw_only) + ")")
    return line + f"; {verdicts.count('undecided')} undecided"


SUMMARY_NOTES = {
    "mechanism": "The shift grows with the drop rate at (a), (a) shifts far more than (b), a "
                 "variance and a mean shift also appear at BatchNorm layers with no Dropout "
                 "right before them (the paper's chain reaction; growth layer by layer is not "
                 "tested), and Uout shifts less than Dropout. The growth "
                 "with the drop rate ({grow_dense}, {grow_pre}, {grow_wrn}) follows almost "
                 "directly from Eq. 8: low-risk tests.",
    "cost": "Both parts must hold: Adjust lowers the error, and inference-mode training "
            "accuracy falls below train mode.{confirmatory_cost}",
    "accuracy": "**Underpowered at this regime**: the no-Dropout networks reach {baselines} "
                "test error (fig16; the paper's: 4-5 %), so the paper's effects scale down "
                "{scale}, below what 5 seeds detect for nearly every accuracy claim "
                "(docs/power-analysis.md, section 2). The confirmatory run is the powered test.",
    "width": "**Confounded by depth in this run** for the conv nets (the MLP rows vary the "
             "width alone): WRN is 2 blocks of 48 channels and PreResNet 3 blocks of 16, and "
             "PreResNet's larger (b) shift comes mostly from its third block. A declared "
             "widen-factor sweep (1, 2, 4, 8) at fixed depth "
             "(`varshift/reproduce/protocols/width.json`) is running; no verdict yet. The "
             "paper's WRN claims: a smaller shift ({wide_shift}) and a smaller cost ({wide_cost}).",
}


_NAMED = {
    "grow_pre": "PreResNet: the shift grows with the drop rate at (a)",
    "grow_wrn": "WRN: the shift grows with the drop rate at (a)",
    "grow_dense": "DenseNet: the shift grows with the drop rate at (a)",
    "wide_shift": "At (b) drop 0.5 the wide network shifts less than the thin one",
    "wide_cost": "Dropout 0.5 at (b) costs the wide network less test error than the thin one",
}
"""The rows :data:`SUMMARY_NOTES` names (``{key}``), by claim text: the summary gives their
ids and verdicts, or their text where a partial run lacks them."""


def _baselines(figures):
    """``{baselines}`` and ``{scale}`` of :data:`SUMMARY_NOTES`: the range of this run's
    no-Dropout test errors (fig16's means over seeds, per network), and how many times
    smaller than the paper's (:data:`varshift.reproduce.power.PAPER_BASELINE`) they are."""
    from .power import PAPER_BASELINE

    table = next((f["numbers"]["table"] for f in figures if f["name"] == "fig16_training"), [])
    ours = {r["arch"]: float(np.mean(r["test_error"])) for r in table
            if r["setting"] == "no noise" and r["arch"] in PAPER_BASELINE}
    if not ours:
        return {"baselines": "a test error this run did not measure (no fig16)",
                "scale": "by a factor this run cannot give"}
    factor = np.mean([PAPER_BASELINE[a] / e for a, e in ours.items()])
    return {"baselines": f"{min(ours.values()):.1f}-{max(ours.values()):.1f} %",
            "scale": f"by a factor of about {factor:.1f}"}


CONFIRMATORY = Path("confirmatory/verdicts.json")
"""The confirmatory run's verdicts (:mod:`varshift.reproduce.confirm`), relative to the
figures' folder."""
REESTIMATION = Path("reestimation/verdicts.json")
"""The re-estimation follow-up's verdicts (``confirm --protocol reestimation``), relative
to the figures' folder: an extension of the confirmatory run, rendered after it."""
REESTIMATION_TITLE = "Re-estimating the statistics three ways (an extension)"
_REESTIMATION_ANCHOR = "#re-estimating-the-statistics-three-ways-an-extension"
CONFIRMATORY_READING = "reading.md"
"""The maintainers' reading of the confirmatory verdicts (Markdown bullets), beside them;
REPORT's summary nests it under the confirmatory run's bullet."""
CONFIRMATORY_TITLE = "Confirmatory run: the accuracy claims at a powered regime"
_CONFIRMATORY_ANCHOR = "#confirmatory-run-the-accuracy-claims-at-a-powered-regime"
_NOT_YET = ("A confirmatory run at a harder regime (1,000 training sequences, fresh seeds, "
            "sizes from a power analysis, claims locked in "
            "`varshift/reproduce/protocols/confirmatory.json` before its runs) is judged apart "
            "(`python -m varshift.reproduce.confirm --report`, which writes `{path}`); its "
            "verdicts are not part of this report.")


def _confirmatory_rows(verdicts):
    """The judged rows of a confirmatory ``verdicts`` document as :class:`_Row`\\ s (the
    protocol's ids, Holm's verdict as the adjusted one)."""
    return [_Row(r["id"], "confirmatory", r, r["holm"]) for r in verdicts["claims"]
            if "holm" in r]


def _awaiting_runs(verdicts):
    """The confirmatory rows of families whose runs are not all done (not judged)."""
    return [r for r in verdicts["claims"] if r["status"] == "confirmatory" and "holm" not in r]


def _declared_counts(verdicts):
    """``'N not testable at this regime and M awaiting their pilot, each declared in the
    protocol before any verdict on it'`` (a part whose count is 0 left out), after ``'K
    confirmatory, awaiting their runs; '`` where a family is not complete."""
    statuses = [r["status"] for r in verdicts["claims"]]
    waiting = len(_awaiting_runs(verdicts))
    declared = [f"{n} {what}" for n, what in (
        (statuses.count("not testable at this regime"), "not testable at this regime"),
        (statuses.count("awaiting its pilot"), "awaiting their pilot")) if n]
    return ((f"{waiting} confirmatory, awaiting their runs; " if waiting else "")
            + " and ".join(declared) + ", each declared in the protocol before any verdict on it")


def _direction(row):
    """Where a confirmatory row's mean difference lies: in the declared direction (the
    paper's, where it has one) or against it; for an equivalence claim, inside or
    outside its margin."""
    side = "the paper's direction" if row.get("paper_effect") is not None else "the declared direction"
    if row["direction"] == 0:
        margin = row.get("margin")
        return ("an equivalence claim" + (f" (the interval must lie within +-{margin:g} points)"
                                          if margin is not None else ""))
    sign = row["estimate"] * row["direction"]
    return f"in {side}" if sign > 0 else f"against {side}" if sign < 0 else "zero"


def _measured(row):
    """A confirmatory row's numbers in words: the mean paired difference with its 95 %
    interval, the sd across seeds and n, which way it points, and the effect a directional
    claim was sized for (with whether the interval excludes it: a description, not a
    test). An equivalence claim names its margin instead: it was sized to show a zero
    difference inside it."""
    text = (f"mean paired difference {row['estimate']:+.2f} points (95 % CI {row['low']:+.2f} to "
            f"{row['high']:+.2f}; sd across seeds {row['sd']:.2f}; n = {row['n']}), "
            f"{_direction(row)}")
    sized = row.get("sized_for")
    if sized is not None and row["direction"] != 0:
        side = ("includes it" if row["low"] <= sized <= row["high"] else
                "lies wholly above it" if row["low"] > sized else "lies wholly below it")
        paper = row.get("paper_effect")
        text += (f"; sized to detect {sized:+.2f}"
                 + (f" (the paper's {paper:+.2f} scaled to the pilot's error level)"
                    if paper is not None else "")
                 + f": the interval {side} (a description, not a declared test)")
    return text


def _outside_margin(row):
    """For a contradicted equivalence claim, which has no direction: its margin."""
    if row["direction"] != 0:
        return ""
    margin = row.get("margin")
    return " (an equivalence claim, outside its margin" + (
        f" of +-{margin:g} points)" if margin is not None else ")")


def _confirmatory_summary(verdicts):
    """The summary's sentences on the confirmatory run (or, without ``verdicts``, where
    its verdicts will be)."""
    if verdicts is None:
        return _NOT_YET.format(path=Path("figures") / CONFIRMATORY)
    rows = _confirmatory_rows(verdicts)
    against = "; ".join(f"{r.id} {r.claim['estimate']:+.2f} [{r.claim['low']:+.2f}, "
                        f"{r.claim['high']:+.2f}]" + _outside_margin(r.claim)
                        for r in rows if r.adjusted == "contradicted")
    small = [r.id for r in rows if r.adjusted == "undecided" and r.claim.get("sized_for") is not None
             and r.claim["direction"] != 0
             and not r.claim["low"] <= r.claim["sized_for"] <= r.claim["high"]]
    return (f"{_topic_line(rows)}; {_declared_counts(verdicts)}. "
            + (f"**Contradicted** (our mean paired difference in points and its 95 % interval, "
               f"the paper's effect being the other way unless said): {against}. "
               if against else "")
            + (f"Undecided, with an interval excluding the effect the claim was sized for: "
               f"{', '.join(small)}. " if small else "")
            + f"Protocol version {verdicts['version']} (commit {verdicts['commit']}"
            + ("; earlier families unchanged" if verdicts.get("earlier") else "")
            + f"): [its section]({_CONFIRMATORY_ANCHOR}).")


_COST_PARTS = {"re-estimating the statistics lowers the test error at (a) 0.5":
               "Adjust changed the (a) 0.5 test error by",
               "inference-mode training accuracy falls below train mode":
               "inference-mode training accuracy trails train mode by"}
"""The confirmatory claims that test the two parts of the cost question (by text), and
how each part's number reads."""


def _confirmatory_cost(verdicts):
    """The cost bullet's answer per network from the confirmatory rows that test its parts
    (empty without ``verdicts``): yes where every part holds; where Adjust raised the error
    (its part contradicted), the test cannot attribute the cost; not settled otherwise."""
    by_arch = {}
    for r in _confirmatory_rows(verdicts or {"claims": []}):
        for text, reads in _COST_PARTS.items():
            if text in r.claim["text"]:
                by_arch.setdefault(r.claim["text"].split(":", 1)[0], []).append((reads, r))
    answers = []
    for arch, parts in by_arch.items():
        found = [r.adjusted for _, r in parts]
        answer = ("not shown" if "contradicted" in found else "yes" if len(parts) == len(_COST_PARTS)
                  and set(found) == {"holds"} else "not settled")
        answers.append(f"{arch}: {answer} (" + "; ".join(
            f"{reads} {r.claim['estimate']:+.2f} points, {r.id}: {r.adjusted}" for reads, r in parts)
            + ")")
    if not answers:
        return ""
    size = f" at {verdicts['train_sequences']:,} sequences" if verdicts.get("train_sequences") else ""
    return (f" Confirmatory{size}: " + "; ".join(answers) + ". Where Adjust raises the error "
            "(a contradicted part), it cannot show whether the cost is the shift's.")


def _confirmatory_tally(rows):
    """:func:`~varshift.verdicts.tally` of confirmatory ``rows`` after Holm's adjustment,
    with the unadjusted one beside it where it differs."""
    from ..verdicts import Claim, tally

    claims = [Claim(**{k: r.claim[k] for k in Claim.__dataclass_fields__ if k in r.claim})
              for r in rows]
    adjusted = tally([Claim(**{**c.__dict__, "verdict": r.adjusted}) for c, r in zip(claims, rows)])
    raw = tally(claims)
    return adjusted if adjusted == raw else f"{adjusted} (without the adjustment: {raw})"


def confirmatory_markdown(verdicts, heading="##", title=CONFIRMATORY_TITLE):
    """A protocol run's section (lines of Markdown) from its ``verdicts`` document
    (:func:`varshift.reproduce.confirm.document`): the protocol, the counts after Holm's
    adjustment, the judged claims as REPORT's other tables (notes below), and the claims
    declared untestable or awaiting their pilot, with the reason declared for each."""
    rows = _confirmatory_rows(verdicts)
    others = [r for r in verdicts["claims"] if "holm" not in r]
    families = sorted({r["family"] for r in verdicts["claims"] if "family" in r})
    if len(families) > 1:
        judged = sorted({r.claim["family"] for r in rows})
        adjustment = (f"within each of the protocol's {len(families)} Holm families, judged once "
                      f"all of a family's runs exist (judged: "
                      + ", ".join(f"family {f}, {sum(r.claim['family'] == f for r in rows)} claims"
                                  for f in judged) + ")")
    else:
        adjustment = f"over the protocol's family of {len(rows)} claims"
    earlier = verdicts.get("earlier")
    history = (" (earlier versions locked in " + ", ".join(
        f"{commit} (version {v})" for v, commit in earlier.items())
        + "; each family keeps the claims and seeds of the version that made it confirmatory)"
        if earlier else "")
    lines = [f"{heading} {title}", "",
             f"Protocol `{verdicts.get('file', 'confirmatory.json')}` version "
             f"{verdicts['version']}, sha256 `{verdicts['sha256']}`, locked in commit "
             f"{verdicts['commit']}{history}; {verdicts['regime']}; seeds from "
             f"{verdicts['first_seed']}, "
             f"each claim on its declared number of seeds (n below). Verdicts: the paired rule "
             f"of the tables above, with Holm's adjustment {adjustment}.", "",
             f"- Claims judged ({len(rows)}), after Holm's adjustment: "
             f"{_confirmatory_tally(rows)}."]
    if others:
        lines.append(f"- Not judged: {_declared_counts(verdicts)}.")
    lines += [""] + _rows_table(rows, "Paper", _measured)
    if not others:
        return lines + [""]
    lines += ["", "Declared in the protocol, each before any verdict on it, and not judged:", "",
              "| id | claim | declared |", "|---|---|---|"]
    lines += [f"| {r['id']} | {_cell(r['text'])} | {_not_judged(r)} |" for r in others]
    lines.append("")
    lines += [f"- **{r['id']}.** {r['why']}" for r in others]
    return lines + [""]


def _not_judged(row):
    """The declared column of a claim not judged: its status, and for a confirmatory
    claim its family's runs done."""
    if "runs" not in row:
        return row["status"]
    done, declared = row["runs"]
    return f"confirmatory (family {row['family']}): {done} of its family's {declared} runs done"


def _summary(paper_rows, families, checks, failed, figures, verdicts, reading=""):
    """REPORT's first section, a page: the paper claims by topic, then each family's
    counts, all after Holm's adjustment (``families``: its count lines; ``figures``: the
    figures' JSON, for the regime's numbers; ``verdicts``: the confirmatory run's, or
    None; ``reading``: the maintainers' bullets on them, nested under their topic)."""
    by_topic = {key: [r for _, rows in paper_rows for r in rows if _topic(r.claim["text"]) == key]
                for key, _ in _TOPICS}
    lines = ["## Summary", "",
             "Li et al.'s claims tested on small 1-D analogs of their networks (MNIST-1D). Counts "
             "are after Holm's adjustment within each family ([how](#how-the-verdicts-are-"
             "reached)); ids (P: paper claims, E: our extensions, S: sanity checks, A: "
             "confirmatory claims) point to the tables below.", "", GLOSSARY, ""]
    ids = {r.claim["text"]: f"{r.id}: {r.adjusted or r.claim['verdict']}"
           for _, rows in paper_rows for r in rows}
    named = {key: ids.get(text, f'"{text}"') for key, text in _NAMED.items()}
    named["confirmatory_cost"] = _confirmatory_cost(verdicts)
    named.update(_baselines(figures))
    for key, title in _TOPICS:
        if key == "accuracy":
            size = (f" at {verdicts['train_sequences']:,} training sequences"
                    if verdicts and verdicts.get("train_sequences") else "")
            lines.append(f"- **Accuracy{size}, confirmatory (claims and seeds fixed in advance; "
                         f"powered).** " + _confirmatory_summary(verdicts))
            lines += [f"  {line}" for line in reading.strip().splitlines() if line.strip()]
        if by_topic[key]:
            lines.append(f"- **{title}.** {_FULL_RUN if key == 'cost' else ''}"
                         f"{_topic_line(by_topic[key])}. "
                         f"{SUMMARY_NOTES[key].format(**named)}")
    lines += ["", "Counts by family, after Holm's adjustment:", ""] + families
    lines += [f"- Sanity and regime checks: {len(checks) - len(failed)} of {len(checks)} pass"
              + (f"; failing: {'; '.join(c.text for c in failed)}" if failed else "")
              + " (not evidence: true by construction, or regime checks).",
              f"- Changes after results: {len(DISCLOSURES)} changes made after their numbers "
              f"existed, each with its reason and effect on the counts: "
              f"[{SECTION}]({ANCHOR}).", ""]
    return lines


def write_report(out: Path, skipped, settings: str) -> Path:
    """``REPORT.md`` from every figure and case JSON in ``out`` (so a run with ``--only``
    updates its figures and keeps the others): a one-page summary with the counts after
    Holm's adjustment (and the paper claims' as counted before a change after results),
    the protocol, one table per figure and kind of row (claim and verdict, with the
    paper's words and our numbers as notes below it), the case studies' statements, the
    changes after results (:mod:`varshift.reproduce.disclosures`), the maintainers'
    reading (``NOTES.md``), the figures with captions, the case studies, and what was
    skipped. No table row is wider than :data:`WIDTH` characters."""
    from ..verdicts import NOT_TESTED, Claim, adjusted_tally

    figures = [json.loads(p.read_text()) for p in sorted(out.glob("fig*.json"), key=_figure_number)]
    cases = [json.loads(p.read_text()) for p in sorted(out.glob("case-*.json"))]
    as_claims = lambda rows: [Claim(**c) for c in rows]  # noqa: E731
    checks = [c for f in figures + cases for c in as_claims(f["claims"]) if c.kind == "sanity"]
    failed = [c for c in checks if c.verdict == "fails"]
    in_figures = [(f["name"], f["claims"]) for f in figures]
    paper, paper_claims = _adjusted(in_figures, "claim")
    extension, extension_claims = _adjusted(in_figures, "extension")
    case, case_claims = _adjusted([(k["name"], k["claims"]) for k in cases], "claim")
    paper_rows = _numbered(figures, "claim", paper)
    extension_rows = _numbered(figures, "extension", extension)
    sanity_rows = _numbered(figures + [{**k, "title": k["title"]} for k in cases], "sanity")
    families = [f"- Paper claims ({len(paper_claims)}): {adjusted_tally(paper_claims)}"
                + (f"; as counted before each change: [{SECTION}]({ANCHOR})" if any(
                    d.counts_before for d in DISCLOSURES) else "") + ".",
                f"- Our extensions, comparisons the paper does not make "
                f"({len(extension_claims)}): {adjusted_tally(extension_claims, 'extension')}.",
                f"- Case-study statements ({len(case_claims)}): "
                f"{adjusted_tally(case_claims)}." if cases else "- Case studies: not run."]
    lines = ["# varshift reproduction of Li et al. (CVPR 2019) at small scale", "",
             f"Settings: {settings}. Every figure has a PNG, an SVG, its numbers (`.json`) and "
             f"its caption (`.caption.md`); wall times are in `timings.json`.", ""]
    verdicts_path = out / CONFIRMATORY
    verdicts = json.loads(verdicts_path.read_text()) if verdicts_path.exists() else None
    reading_path = verdicts_path.with_name(CONFIRMATORY_READING)
    reading = reading_path.read_text() if verdicts and reading_path.exists() else ""
    if verdicts is not None:
        rows = _confirmatory_rows(verdicts)
        families.insert(0, f"- Confirmatory accuracy claims ({len(rows)}): "
                           f"{_confirmatory_tally(rows)} ([table]({_CONFIRMATORY_ANCHOR})).")
    followup_path = out / REESTIMATION
    followup = json.loads(followup_path.read_text()) if followup_path.exists() else None
    if followup is not None:
        rows = _confirmatory_rows(followup)
        families.insert(1, f"- The re-estimation follow-up, an extension ({len(rows)}): "
                           f"{_confirmatory_tally(rows)} ([table]({_REESTIMATION_ANCHOR})).")
    lines += _summary(paper_rows, families, checks, failed, figures, verdicts, reading)
    lines += ["## How the verdicts are reached", "", PROTOCOL, "",
              "## Paper claims", "",
              "Each table: the claim and its verdict (after Holm's adjustment; raw: without it). "
              "Below it, per row, the paper's words with their table or figure, and ours: mean "
              "± sd of each arm, the mean paired difference with its 95 % interval, and the "
              "number of seeds.", ""]
    lines += _claim_table(paper_rows, "claim")
    if verdicts is not None:
        lines += confirmatory_markdown(verdicts)
    if followup is not None:
        lines += confirmatory_markdown(followup, title=REESTIMATION_TITLE)
    lines += ["## Our extensions (not claims of the paper; same rule, counted apart)", ""]
    lines += _claim_table(extension_rows, "extension")
    lines += ["## Sanity and regime checks (not evidence)", ""]
    lines += _claim_table(sanity_rows, "sanity")
    if cases:
        lines += ["## Case-study statements", "",
                  "Questions people posted, rebuilt and measured over several seeds "
                  "(`varshift case NAME`; details under [Case studies](#case-studies)). *Not "
                  "tested*: not tested at the posted regime (the statement was made at a regime "
                  "these runs do not reach; its interval is still shown).", "",
                  "| case | statement | verdict |", "|---|---|---|"]
        for k in cases:  # the case named on its first row only
            statements = [c for c in k["claims"] if c.get("kind", "claim") == "claim"]
            lines += [f"| {k['name'] if i == 0 else ''} | {_cell(c['text'])} | "
                      f"{_verdict_cell(c['verdict'], case.get((k['name'], c['text'])))} |"
                      .replace(NOT_TESTED, "not tested") for i, c in enumerate(statements)]
        lines.append("")
        lines += [f"- **{k['name']}: {c['text']}.** Posted: {c['paper']}. Measured here: "
                  f"{c['ours']}." for k in cases for c in k["claims"]
                  if c.get("kind", "claim") == "claim"]
        lines.append("")
    lines += disclosures_markdown(DISCLOSURES)
    notes = out / "NOTES.md"
    if notes.exists():
        lines += ["## Reading of the results", "", notes.read_text().strip(), ""]
    lines += ["## Figures", ""]
    for f in figures:
        lines += [f"### {f['title']}", "", f"![{f['name']}]({f['name']}.png)", "", f["caption"], ""]
    if cases:
        lines += ["## Case studies", "", "Full summaries: `case-NAME.md`.", ""]
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
