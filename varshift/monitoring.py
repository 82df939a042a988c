"""Watching the variance shift while a model trains: the framework-free core of the
training-loop monitors.

:func:`shift_summary` measures a model (varshift, PyTorch, Keras 3 or Flax NNX) on
held-out data and returns a :class:`ShiftSummary`: the variance shift of every
BatchNorm layer and the worst finding of :func:`~varshift.diagnose`, as plain floats
and strings under stable scalar names (:meth:`ShiftSummary.scalars`)::

    varshift/shift/<layer>     Li et al.'s shift max(r, 1/r) of one BatchNorm layer
    varshift/worst_shift       the largest of them
    varshift/worst_severity    0 no finding, 1 info, 2 warning, 3 error
    varshift/findings          how many findings diagnose reported

(the last two only with ``findings=True``). :class:`Monitor` calls it every N-th step
of a plain PyTorch or Flax loop, writes the scalars to a TensorBoard ``SummaryWriter``
if one is given, warns past one threshold and asks to stop past another; the Keras
callback (:mod:`varshift.keras`) and the Lightning callback (:mod:`varshift.lightning`)
are thin wrappers around it.

A monitor never changes the model nor the training's random stream: measuring goes
through :func:`~varshift.measure`, which puts back parameters, buffers (running
statistics included), modes and the random states it touches (torch's global
generator, Keras' seed generators, Flax's ``Rngs``), so a training run with the
monitor gives the same weights as one without it.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from . import _validate
from .findings import SEVERITIES

__all__ = ["shift_summary", "ShiftSummary", "Monitor", "ShiftWarning", "SEVERITY_LEVELS",
           "PREFIX"]

#: The first part of every scalar's name.
PREFIX = "varshift"

#: A finding's severity as a number for loggers that take numbers only (0: no finding).
SEVERITY_LEVELS = {severity: len(SEVERITIES) - i for i, severity in enumerate(SEVERITIES)}


class ShiftWarning(UserWarning):
    """The variance shift of a BatchNorm layer passed a monitor's ``warn_above``."""


@dataclass(frozen=True)
class ShiftSummary:
    """The numbers a monitor reports for one measurement.

    Attributes
    ----------
    shifts : dict of str to float
        Li et al.'s shift ``max(r, 1/r)`` per BatchNorm layer (its path in the model),
        in network order; NaN for a layer without running statistics.
    findings : tuple of Finding or None
        :func:`~varshift.diagnose`'s findings, most severe first; None when the
        summary was made without them (``findings=False``).
    """

    shifts: dict
    findings: tuple | None

    @property
    def worst_layer(self) -> str | None:
        """The BatchNorm layer with the largest finite shift (None if there is none)."""
        finite = {name: s for name, s in self.shifts.items() if math.isfinite(s)}
        return max(finite, key=finite.get) if finite else None

    @property
    def worst_shift(self) -> float:
        """The largest finite shift; NaN for a model without (measurable) BatchNorm."""
        layer = self.worst_layer
        return float("nan") if layer is None else self.shifts[layer]

    @property
    def worst_finding(self):
        """The most severe :class:`~varshift.Finding`, or None (none found, or not
        diagnosed)."""
        return self.findings[0] if self.findings else None

    @property
    def worst_severity(self) -> int:
        """The worst finding's severity as a number: 0 none, 1 info, 2 warning,
        3 error (:data:`SEVERITY_LEVELS`); 0 also when not diagnosed."""
        finding = self.worst_finding
        return 0 if finding is None else SEVERITY_LEVELS[finding.severity]

    def scalars(self, prefix: str = PREFIX) -> dict:
        """The numbers under their stable names (see the module docstring).

        Parameters
        ----------
        prefix : str, default 'varshift'
            The names' first part.

        Returns
        -------
        dict of str to float
            In a fixed order: the per-layer shifts, the worst shift, then (with
            findings) the worst severity and the number of findings. Characters
            other than letters, digits and ``_ . / -`` in layer names become ``_``.
        """
        values = {f"{prefix}/shift/{tag_part(name)}": float(s) for name, s in self.shifts.items()}
        values[f"{prefix}/worst_shift"] = self.worst_shift
        if self.findings is not None:
            values[f"{prefix}/worst_severity"] = float(self.worst_severity)
            values[f"{prefix}/findings"] = float(len(self.findings))
        return values

    def describe(self) -> str:
        """One line for a log or a warning: the worst shift and the worst finding."""
        layer = self.worst_layer
        text = ("no BatchNorm layer with running statistics" if layer is None
                else f"largest variance shift {self.worst_shift:.4g} at BatchNorm {layer!r}")
        finding = self.worst_finding
        if finding is not None:
            where = f" at {finding.layer!r}" if finding.layer else ""
            text += f"; worst finding: [{finding.severity}] {finding.code}{where}"
        elif self.findings is not None:
            text += "; no findings"
        return text


def tag_part(name: str) -> str:
    """A layer path as a part of a scalar's name: characters other than letters,
    digits and ``_ . / -`` become ``_`` (TensorBoard's tag alphabet); empty: ``_``."""
    return re.sub(r"[^\w./-]", "_", name) or "_"


def shift_summary(model, data, *, findings=True, batch_size=256, seed=0, input_key=None,
                  writer=None, step=None, prefix=PREFIX) -> ShiftSummary:
    """Measure the variance shift of a model's BatchNorm layers on held-out data.

    Parameters
    ----------
    model : varshift.nn.Layer, torch.nn.Module, Keras 3 model or Flax NNX module
        Not changed (see Notes).
    data : array or tensor of shape (N, ...), (x, y) pair, or iterable of batches
        Held-out inputs, as :func:`~varshift.measure` takes them (with ``findings``
        they are read twice, so not a generator).
    findings : bool, default True
        Also run :func:`~varshift.diagnose` (on the same measurement) for the worst
        finding. It adds a few passes over the first batch to :func:`measure`'s three
        passes per batch; False measures only.
    batch_size : int, default 256
        Batch size for array data.
    seed : int, default 0
        Seed of the Dropout masks of the train-mode pass.
    input_key : hashable, optional
        For dict batches: the key of the model's input.
    writer : object with ``add_scalar(tag, value, step)``, optional
        A TensorBoard ``SummaryWriter`` (``torch.utils.tensorboard`` or tensorboardX)
        that receives :meth:`ShiftSummary.scalars`.
    step : int, optional
        The global step for ``writer`` (required with a writer).
    prefix : str, default 'varshift'
        The scalars' first part.

    Returns
    -------
    ShiftSummary

    Raises
    ------
    TypeError, ValueError
        For bad arguments (naming them), and whatever :func:`~varshift.measure`
        raises for the model and data.

    Notes
    -----
    The model's parameters, buffers, modes and random states are the same
    afterwards, as after :func:`~varshift.measure`: a training loop that calls this
    between steps trains exactly as it would without it.
    """
    findings = _validate.flag(findings, "findings", "shift_summary")
    if findings:  # diagnose reads the data after measure
        check_reusable(data, "shift_summary")
    if writer is not None:
        _check_writer(writer, "shift_summary")
        if step is None:
            raise ValueError("shift_summary: step must be an integer >= 0 when a writer is "
                             "given (the global step the scalars are written at), got None")
        step = _validate.integer(step, "step", "shift_summary", minimum=0)
    _check_prefix(prefix, "shift_summary")
    summary = _summarise(model, data, findings, batch_size, seed, input_key)
    if writer is not None:
        write_scalars(writer, summary.scalars(prefix), step)
    return summary


def _summarise(model, data, findings, batch_size, seed, input_key) -> ShiftSummary:
    from .diagnosis import diagnose
    from .measurement import measure

    report = measure(model, data, batch_size=batch_size, seed=seed, input_key=input_key)
    shifts = {b.name: float(b.shift) for b in report.bn}
    found = None
    if findings:
        found = tuple(diagnose(model, data, batch_size=batch_size, seed=seed, report=report,
                               input_key=input_key))
    return ShiftSummary(shifts, found)


def write_scalars(writer, scalars: dict, step: int) -> None:
    """``writer.add_scalar(tag, value, step)`` for every scalar."""
    for tag, value in scalars.items():
        writer.add_scalar(tag, value, step)


def _check_writer(writer, owner):
    if not callable(getattr(writer, "add_scalar", None)):
        _validate._fail(TypeError, owner, "writer", "None or a TensorBoard SummaryWriter (an "
                        "object with add_scalar(tag, value, step))", writer)


def _check_prefix(prefix, owner):
    if not isinstance(prefix, str) or not prefix or tag_part(prefix) != prefix:
        _validate._fail(TypeError if not isinstance(prefix, str) else ValueError, owner,
                        "prefix", "a non-empty string of letters, digits, '_', '.', '/' or '-'",
                        prefix)


def _threshold(value, name, owner):
    """None, or a shift threshold: a float >= 1 (a shift is max(r, 1/r) >= 1)."""
    return None if value is None else _validate.real(value, name, owner, 1)


def check_reusable(data, owner):
    """``data`` if a monitor can read it again and again; TypeError for a one-shot
    iterator (a generator), which the first measurement would use up."""
    if isinstance(data, Iterator):
        _validate._fail(TypeError, owner, "data", "held-out data that can be read more than "
                        "once (an array or tensor, an (x, y) pair, a list of batches, a "
                        "DataLoader), not a one-shot iterator", data)
    return data


class Monitor:
    """Measure the variance shift every N-th step of a training loop.

    The core of :class:`varshift.keras.ShiftMonitor` and
    :class:`varshift.lightning.ShiftMonitor`, and the helper for plain PyTorch and
    Flax loops::

        monitor = Monitor(x_val, every=5, writer=SummaryWriter("runs/a"),
                          stop_above=2.0)
        for epoch in range(epochs):
            train_one_epoch(model)
            monitor(model, epoch)          # measures at epochs 4, 9, 14, ...
            if monitor.should_stop:
                break

    Parameters
    ----------
    data : array or tensor, (x, y) pair, or re-iterable batches
        Held-out inputs, read at each measurement (a generator is refused: it would
        be used up by the first one).
    every : int, default 1
        Measure at every ``every``-th call (the ``every``-th, the ``2 * every``-th,
        ...).
    warn_above : float >= 1, optional
        Warn (:class:`ShiftWarning`) when the worst shift exceeds it.
    stop_above : float >= 1, optional
        Set :attr:`should_stop` when the worst shift exceeds it.
    warn_severity : {'error', 'warning', 'info'}, optional
        Also warn when the worst finding is at least this severe (the warning holds
        the finding's explanation and fix). Needs ``findings=True``.
    findings : bool, default True
        Also diagnose for the worst finding (see :func:`shift_summary`).
    writer : object with ``add_scalar(tag, value, step)``, optional
        TensorBoard ``SummaryWriter`` receiving the scalars at each measurement.
    batch_size, seed, input_key, prefix
        As for :func:`shift_summary`.

    Attributes
    ----------
    last : ShiftSummary or None
        The latest measurement.
    history : list of (int, ShiftSummary)
        Every measurement with the step it was made at.
    should_stop : bool
        Whether a measurement exceeded ``stop_above``.
    """

    def __init__(self, data, *, every=1, warn_above=None, stop_above=None, warn_severity=None,
                 findings=True, writer=None, batch_size=256, seed=0, input_key=None, prefix=PREFIX,
                 owner="Monitor"):
        self.owner = owner
        self.data = check_reusable(data, owner)
        self.every = _validate.integer(every, "every", owner)
        self.warn_above = _threshold(warn_above, "warn_above", owner)
        self.stop_above = _threshold(stop_above, "stop_above", owner)
        self.findings = _validate.flag(findings, "findings", owner)
        if warn_severity is not None:
            _validate.choice(warn_severity, "warn_severity", owner, SEVERITIES)
            if not self.findings:
                raise ValueError(f"{owner}: warn_severity={warn_severity!r} needs findings=True "
                                 f"(the severity is the worst finding's), got findings=False")
        self.warn_severity = warn_severity
        if writer is not None:
            _check_writer(writer, owner)
        self.writer = writer
        self.batch_size = _validate.integer(batch_size, "batch_size", owner)
        self.seed = _validate.seed(seed, "seed", owner)
        self.input_key = input_key
        _check_prefix(prefix, owner)
        self.prefix = prefix
        self.calls = 0
        self.last = None
        self.history = []
        self.should_stop = False

    def due(self) -> bool:
        """Count one call; whether it is a measuring one (every ``every``-th)."""
        self.calls += 1
        return self.calls % self.every == 0

    def __call__(self, model, step):
        """Count a step, and measure ``model`` if it is due.

        Parameters
        ----------
        model : the model being trained
        step : int
            The step (epoch, or global step) the scalars are written at.

        Returns
        -------
        ShiftSummary or None
            None when this call is not a measuring one.
        """
        step = _validate.integer(step, "step", self.owner, minimum=0)
        if not self.due():
            return None
        return self.measure(model, step)

    def measure(self, model, step) -> ShiftSummary:
        """Measure now, write to the writer, warn and set :attr:`should_stop`."""
        summary = _summarise(model, self.data, self.findings, self.batch_size, self.seed,
                             self.input_key)
        self.last = summary
        self.history.append((step, summary))
        if self.writer is not None:
            write_scalars(self.writer, summary.scalars(self.prefix), step)
        worst = summary.worst_shift
        stop = self.stop_above is not None and worst > self.stop_above
        self.should_stop = self.should_stop or stop
        reasons = []
        if self.warn_above is not None and worst > self.warn_above:
            reasons.append(f"the shift is above warn_above={self.warn_above:g}")
        if stop:
            reasons.append(f"the shift is above stop_above={self.stop_above:g}: training stops")
        if self.warn_severity is not None and summary.worst_severity >= \
                SEVERITY_LEVELS[self.warn_severity]:
            reasons.append(f"the worst finding is at least a {self.warn_severity}")
        if reasons:
            warnings.warn(self.message(summary, step, reasons), ShiftWarning,
                          stacklevel=_validate.user_stacklevel())
        return summary

    def message(self, summary, step, reasons) -> str:
        """The text of the warning for ``summary`` at ``step``, with its reasons."""
        text = f"{self.owner}: at step {step}, {summary.describe()}; {'; '.join(reasons)}."
        finding = summary.worst_finding
        if finding is not None:
            return f"{text}\n{finding}"
        return text + " Run varshift.diagnose(model, data) for an explanation."

