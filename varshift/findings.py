"""Findings: the codes varshift reports, their severities, and how a severity is graded.

:data:`CODES` is the one list of codes: :func:`~varshift.diagnose` (with data) and
:func:`~varshift.inspect` (a Keras file alone) report only these, :class:`Finding`'s
docstring is completed from it, and ``docs/findings.md`` is tested against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._json import json_ready

__all__ = ["Finding", "Code", "CODES", "SEVERITIES", "grade", "momentum_words", "possessive",
           "in_convention"]

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


Finding.__doc__ += "\n    Codes\n    -----\n" + "\n".join(
    f"    ``{code.name}`` ({code.source})\n        {code.summary}" for code in CODES.values())


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


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


#: How each framework states a BatchNorm's momentum.
_CONVENTIONS = {"torch": ("PyTorch", "new"), "varshift": ("varshift", "new"),
                "keras": ("Keras", "old"), "flax": ("Flax", "old")}


def momentum_words(framework) -> tuple:
    """``(framework's name, 'new' or 'old')``: whose weight ``momentum`` is in
    ``framework`` ('torch', 'varshift', 'keras' or 'flax')."""
    return _CONVENTIONS[framework]


def possessive(name) -> str:
    """``"Keras'"``, ``"PyTorch's"``."""
    return f"{name}'" if name.endswith("s") else f"{name}'s"


def in_convention(new_weight, framework) -> float:
    """The momentum with weight ``new_weight`` of the new batch, as ``framework`` writes
    it."""
    return new_weight if momentum_words(framework)[1] == "new" else 1.0 - new_weight
