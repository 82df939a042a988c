"""Findings: the codes varshift reports, their severities, and how a severity is graded.

:data:`CODES` is the one list of codes: :func:`~varshift.diagnose` (with data) and
:func:`~varshift.inspect` (a Keras file alone) report only these, :class:`Finding`'s
docstring is completed from it, and ``docs/findings.md`` is tested against it.
"""

from __future__ import annotations

import numbers
import re
import textwrap
from dataclasses import dataclass, field
from difflib import SequenceMatcher

from ._json import json_ready

__all__ = ["Finding", "Code", "CODES", "SEVERITIES", "FRAMEWORKS", "grade", "momentum_words",
           "possessive",
           "in_convention", "format_findings"]

#: Severities, most severe first.
SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Code:
    """A kind of finding.

    Attributes
    ----------
    name : str
    summary : str
        What it means, in one sentence.
    source : {'data', 'file', 'both'}
        Whether :func:`~varshift.diagnose` (data), :func:`~varshift.inspect` (file) or
        both report it.
    """

    name: str
    summary: str
    source: str


#: Every code, in the order the documentation lists them.
CODES = {code.name: code for code in (
    Code("DAMAGED_RUNNING_STATS", "A running mean or variance is NaN or infinite, or a "
         "running variance is negative: values no update produces.", "data"),
    Code("BAD_MOVING_STATS", "A saved file's moving statistics are non-finite, negative or "
         "zero variances.", "file"),
    Code("INPUT_SCALE", "The first BatchNorm's inputs are orders of magnitude away from its "
         "running statistics: the data's scale differs from training's.", "data"),
    Code("STATS_AT_INIT", "The running statistics are exactly BatchNorm's initial 0 and 1: "
         "the update never ran.", "both"),
    Code("STATS_NEAR_INIT", "A saved file's moving statistics still hold much of the initial "
         "0 and 1, judged from the optimizer's step count.", "file"),
    Code("STALE_RUNNING_STATS", "The running statistics fit neither the train-mode nor the "
         "inference-mode inputs the current weights produce.", "data"),
    Code("DROPOUT_BEFORE_BN", "Dropout-like noise reaches a BatchNorm with no BatchNorm in "
         "between (Li et al.'s variance shift).", "both"),
    Code("SUSPICIOUS_MOMENTUM", "A momentum that looks like the other framework's convention, "
         "or one that never or barely updates.", "both"),
    Code("FROZEN_BATCHNORM", "A saved file's BatchNormalization is frozen (trainable=False).",
         "file"),
    Code("UNPLACED_WEIGHTS", "A saved file holds weights that no layer of its config "
         "accounts for (a subclassed model or layer, a damaged config).", "file"),
    Code("SMALL_BATCH_STATS", "Too few values per channel per batch for reliable batch "
         "statistics.", "data"),
    Code("EVAL_BATCH_DEPENDENT", "Inference-mode outputs depend on the other samples in the "
         "batch.", "data"),
    Code("EVAL_NOT_DETERMINISTIC", "Two inference-mode runs of one batch differ: noise that "
         "does not follow the mode switches.", "data"),
)}


@dataclass
class Finding:
    """One diagnosed problem.

    Attributes
    ----------
    code : str
        One of :data:`CODES` (listed below).
    layer : str
        Path of the layer concerned ('' for the whole model).
    severity : {'error', 'warning', 'info'}
        ``'error'``: inference is wrong now; ``'warning'``: likely wrong or fragile;
        ``'info'``: advice, nothing measurably wrong at inference.
    evidence : dict
        The numbers behind the finding.
    explanation, fix : str
    """

    code: str
    layer: str
    severity: str
    evidence: dict = field(default_factory=dict)
    explanation: str = ""
    fix: str = ""

    def __post_init__(self):
        if self.code not in CODES:
            raise ValueError(f"Finding: code must be one of {', '.join(CODES)}, got "
                             f"{self.code!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"Finding: severity must be one of {SEVERITIES}, got "
                             f"{self.severity!r}")

    def __str__(self):
        numbers = ", ".join(f"{k}={_fmt(v)}" for k, v in self.evidence.items())
        where = f"layer {self.layer!r}" if self.layer else "model"
        return (f"[{self.severity}] {self.code} at {where}\n  evidence: {numbers}\n"
                f"  {self.explanation}\n  fix: {self.fix}")

    def to_dict(self) -> dict:
        """JSON-ready built-ins."""
        return {"code": self.code, "layer": self.layer, "severity": self.severity,
                "evidence": {k: json_ready(v) for k, v in self.evidence.items()},
                "explanation": self.explanation, "fix": self.fix}

    @property
    def rank(self) -> int:
        """0 for an error, 1 for a warning, 2 for info (for sorting)."""
        return SEVERITIES.index(self.severity)


Finding.__doc__ += "\n    Notes\n    -----\n    The codes:\n\n" + "\n".join(
    f"    ``{code.name}`` ({code.source})\n        {code.summary}" for code in CODES.values())


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_findings(findings, verbose=False) -> str:
    """Findings as text for people: grouped by code, or each in full.

    Parameters
    ----------
    findings : iterable of Finding
        In the order to show them within a code (``diagnose`` and ``inspect`` give them
        most severe first, then in model order).
    verbose : bool, default False
        True: every finding in full (``str(finding)``), separated by blank lines.

    Returns
    -------
    str
        ``''`` without findings. Grouped (``verbose=False``): a line counting the
        findings by severity (if there are several), then one block per code, the
        code with the most severe finding first. A code found at one layer is shown in full. Found at several,
        its block has a header (the worst severity, the number of layers and, if they
        differ, how many of each severity), the explanation and the fix once, the
        evidence equal at every layer once, and a table: one row per layer with the
        rest of its evidence (and its severity where they differ), numbers before
        texts, columns lined up whatever the length of the layer names. An
        explanation or fix that embeds numbers is worded for the table's first layer,
        which a note says; the others' numbers are in their rows. Findings of one code
        whose texts differ in more than numbers and names (a frozen layer against one
        in training, say) get a block each.

    Notes
    -----
    Texts are compared with their numbers masked; texts that still differ are grouped
    when :class:`difflib.SequenceMatcher` finds at least ``0.8`` of their words alike
    (layer names embedded in them).
    """
    findings = list(findings)
    if not findings:
        return ""
    if verbose:
        return "\n\n".join(str(f) for f in findings)
    by_code = {}
    for f in findings:
        by_code.setdefault(f.code, []).append(f)
    groups = sorted(by_code.values(), key=lambda group: min(f.rank for f in group))
    blocks = []
    for group in groups:
        for number, variant in enumerate(_variants(group)):
            blocks.append(str(variant[0]) if len(variant) == 1 else
                          _block(variant, more=number > 0))
    counts = _severity_counts(findings)
    head = (f"{len(findings)} findings ({counts}) of {len(groups)} "
            f"code{'s' if len(groups) > 1 else ''}:")
    return "\n\n".join([head] + blocks) if len(findings) > 1 else blocks[0]


#: A number in a text (digits of layer names included), for comparing wordings.
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?%?|\b(?:nan|inf)\b")
#: Share of alike words above which two wordings of a code are one variant.
_ALIKE = 0.8


def _masked(finding) -> tuple:
    """The words of a finding's explanation and fix, numbers replaced by '#'."""
    return tuple(_NUMBER.sub("#", f"{finding.explanation} | fix: {finding.fix}").split())


def _variants(group) -> list:
    """``group`` (findings of one code) split into lists of findings worded alike, in
    order of first appearance."""
    variants = []  # (masked words of the first, findings)
    for f in group:
        words = _masked(f)
        for first, members in variants:
            if words == first or SequenceMatcher(None, first, words, autojunk=False).ratio() \
                    >= _ALIKE:
                members.append(f)
                break
        else:
            variants.append((words, [f]))
    return [members for _, members in variants]


def _severity_counts(findings) -> str:
    """'2 errors, 1 warning, 3 info'."""
    parts = []
    for severity in SEVERITIES:
        n = sum(f.severity == severity for f in findings)
        if n:
            parts.append(f"{n} {severity}" + ("s" if n > 1 and severity != "info" else ""))
    return ", ".join(parts)


def _block(variant, more=False) -> str:
    """One code's findings of one wording: header, explanation and fix once, a table of
    the layers and their evidence."""
    first = variant[0]
    severities = {f.severity for f in variant}
    worst = min(severities, key=SEVERITIES.index)
    mixed = f" ({_severity_counts(variant)})" if len(severities) > 1 else ""
    lines = [f"[{worst}] {first.code} at {len(variant)} {'more ' if more else ''}"
             f"layers{mixed}", f"  {first.explanation}", f"  fix: {first.fix}"]
    texts = {(f.explanation, f.fix) for f in variant}
    if len(texts) > 1:
        what = ("numbers" if len({_masked(f) for f in variant}) == 1
                else "numbers and names")
        lines.append(f"  (worded for {_where(first)}; the other layers' {what} differ: "
                     f"see their evidence below)")
    keys = list(dict.fromkeys(k for f in variant for k in f.evidence))
    columns, same = [("layer", [_where(f, short=True) for f in variant], "<")], []
    if len(severities) > 1:
        columns.append(("severity", [f.severity for f in variant], "<"))
    for key in keys:
        values = [f.evidence.get(key, _MISSING) for f in variant]
        cells = [_cell(v) for v in values]
        if _MISSING not in values and len(set(cells)) == 1:
            same.append(f"{key}={cells[0]}")
            continue
        columns.append((key, cells, ">" if all(_numeric(v) for v in values) else "<"))
    columns[1:] = sorted(columns[1:], key=lambda c: c[0] != "severity" and c[2] == "<")
    if same:
        lines.append(f"  evidence at every layer: {', '.join(same)}")
    if len(columns) == 1:  # nothing differs between the layers but their names
        lines.append(textwrap.fill(", ".join(columns[0][1]), 88, initial_indent="  layers: ",
                                   subsequent_indent="    ", break_long_words=False,
                                   break_on_hyphens=False))
        return "\n".join(lines)
    widths = [max(len(title), *map(len, cells)) for title, cells, _ in columns]
    rows = [[title for title, _, _ in columns]] + [
        [cells[i] for _, cells, _ in columns] for i in range(len(variant))]
    for row in rows:
        lines.append("    " + "  ".join(f"{text:{align}{width}}" for text, width, (_, _, align)
                                          in zip(row, widths, columns)).rstrip())
    return "\n".join(lines)


_MISSING = object()


def _where(finding, short=False) -> str:
    """'the model', "layer 'a.b'"; short, for a table: '(model)', 'a.b' (quoted only if
    it holds characters that would break the columns)."""
    if not finding.layer:
        return "(model)" if short else "the model"
    if short:
        return finding.layer if finding.layer.isprintable() else repr(finding.layer)
    return f"layer {finding.layer!r}"


def _numeric(value) -> bool:
    return value is _MISSING or value is None or (
        isinstance(value, numbers.Real) and not isinstance(value, bool))


def _cell(value) -> str:
    """An evidence value in a table cell: 4 significant digits for non-integers."""
    if value is _MISSING:
        return "-"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_cell(v) for v in value) + ")"
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return f"{float(value):.4g}"
    text = str(value)
    return text if text.isprintable() else repr(text)


def grade(value, thresholds):
    """The severity of ``value`` against ``(warning, error)`` thresholds, or None.

    Parameters
    ----------
    value : float
    thresholds : (float, float)
        The warning and the error threshold; if the warning one is the larger,
        smaller values are worse.

    Returns
    -------
    {'error', 'warning'} or None
    """
    warning, error = thresholds
    if warning > error:  # smaller is worse
        return "error" if value < error else "warning" if value < warning else None
    return "error" if value >= error else "warning" if value >= warning else None


#: Each framework's name in messages, and whose weight its BatchNorm ``momentum`` is: the
#: new batch's or the old value's (a new framework adds one line here).
FRAMEWORKS = {"torch": ("PyTorch", "new"), "varshift": ("varshift", "new"),
              "keras": ("Keras", "old"), "flax": ("Flax", "old")}


def momentum_words(framework) -> tuple:
    """``(framework's name, 'new' or 'old')``: whose weight ``momentum`` is in
    ``framework`` ('torch', 'varshift', 'keras' or 'flax')."""
    return FRAMEWORKS[framework]


def possessive(name) -> str:
    """``"Keras'"``, ``"PyTorch's"``."""
    return f"{name}'" if name.endswith("s") else f"{name}'s"


def in_convention(new_weight, framework) -> float:
    """The momentum with weight ``new_weight`` of the new batch, as ``framework`` writes
    it."""
    return new_weight if momentum_words(framework)[1] == "new" else 1.0 - new_weight
