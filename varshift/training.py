"""A minimal training loop, :func:`fit`, and its :class:`History`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import _validate
from ._data import batch_bounds
from ._process import public
from ._progress import progress_bar
from ._validate import NonFiniteError
from .nn.layer import modes, preserved
from .nn.losses import _Loss
from .optim import Optimizer

__all__ = ["fit", "evaluate", "History"]


@dataclass
class History:
    """Per-epoch metrics of :func:`fit`.

    Attributes
    ----------
    metrics : dict of str to list of float
        ``loss`` and ``accuracy``: train mode, averaged over the epoch's batches
        (as the model saw them while learning); ``eval_loss`` and ``eval_accuracy``:
        inference mode on the training data after the epoch; ``val_loss`` and
        ``val_accuracy``: inference mode on ``validation_data``. Accuracies only for
        classification losses.
    steps : int
        Optimiser steps taken.
    """

    metrics: dict[str, list[float]] = field(default_factory=dict)
    steps: int = 0

    def __getitem__(self, key):
        return self.metrics[key]

    def _append(self, key, value):
        self.metrics.setdefault(key, []).append(float(value))

    def __repr__(self):
        last = ", ".join(f"{k}={v[-1]:.4g}" for k, v in self.metrics.items())
        epochs = len(next(iter(self.metrics.values()), []))
        return f"History(epochs={epochs}, steps={self.steps}, last: {last})"


def _check_data(data, name, owner):
    """``data`` as checked ``(x, y)`` arrays: numeric, finite, non-empty, same length."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{owner}: {name} must be an (x, y) pair of arrays, got "
                        f"{_validate.shown(data)}")
    with _validate.reraise_with_context(f"{owner}: {name}"):
        x, y = np.asarray(data[0]), np.asarray(data[1])
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{owner}: {name} x must be a numeric array, got dtype {x.dtype}")
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError(f"{owner}: {name} x and y must be arrays of samples, got shapes "
                         f"{x.shape} and {y.shape}")
    if len(x) != len(y):
        raise ValueError(f"{owner}: {name}: x has {len(x)} samples but y has {len(y)}")
    if len(x) == 0:
        raise ValueError(f"{owner}: {name} is empty")
    if x.dtype.kind == "f":
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        if bad.any():
            raise ValueError(f"{owner}: {name} x has non-finite values (NaN or inf) in "
                             f"{int(bad.sum())} samples, the first at index {int(np.argmax(bad))}")
    return x, y


def _check_against_model(model, loss, x, y, name, owner):
    """Run the model on two samples (inference mode, nothing changes) to check that
    ``x`` fits it and ``y`` fits ``loss`` and the model's outputs."""
    with preserved(model), modes(model, default="eval"), np.errstate(all="ignore"), \
            _validate.reraise_with_context(f"{owner}: {name} x of shape {x.shape} does not fit "
                                           f"the model"):
        out = np.asarray(model(x[:2]))
    loss.check_target(y, out.shape, f"{owner}: {name} y")


def _check_loss(loss, owner):
    if not isinstance(loss, _Loss):
        raise TypeError(f"{owner}: loss must be a varshift loss (nn.CrossEntropyLoss() or "
                        f"nn.MSELoss()), got {_validate.shown(loss)}")


@public()
def evaluate(model, data, loss, batch_size=256, *, batchnorm="eval", dropout="eval", seed=0):
    """Loss (and accuracy for a classification loss), by default in inference mode.

    Parameters
    ----------
    model : varshift.nn.Layer
    data : tuple of (ndarray of shape (N, ...), ndarray of shape (N, ...))
    loss : varshift.nn losses
    batch_size : int, default 256
        Also the number of samples BatchNorm normalises over when ``batchnorm='train'``
        (a last batch of one sample is folded into the one before).
    batchnorm, dropout : {'eval', 'train'}, default 'eval'
        Mode of the BatchNorm and of the Dropout-like layers: ``batchnorm='train'``
        normalises every batch with its own statistics (TensorFlow's
        ``is_training=True`` at test time).
    seed : int, default 0
        Seed of the Dropout masks when ``dropout='train'``.

    Returns
    -------
    dict
        ``{'loss': float}`` plus ``'accuracy'`` for classification; a diverged model
        gives a non-finite loss, without warnings. The model is unchanged afterwards
        (modes, running statistics, random streams).

    Raises
    ------
    TypeError, ValueError
        For bad arguments, checked before anything runs (the message names the
        argument, expected and actual value).
    """
    _validate.model(model, "evaluate")
    _check_loss(loss, "evaluate")
    batch_size = _validate.integer(batch_size, "batch_size", "evaluate")
    for name, mode in (("batchnorm", batchnorm), ("dropout", dropout)):
        _validate.choice(mode, name, "evaluate", ("eval", "train"))
    seed = _validate.seed(seed, "seed", "evaluate")
    x, y = _check_data(data, "data", "evaluate")
    _check_against_model(model, loss, x, y, "data", "evaluate")
    total, correct = 0.0, 0
    with preserved(model, seed), modes(model, default="eval", batchnorm=batchnorm, dropout=dropout), \
            np.errstate(over="ignore", invalid="ignore"):
        for start, stop in batch_bounds(len(x), batch_size):
            xb, yb = x[start:stop], y[start:stop]
            out = model(xb)
            total += loss(out, yb) * len(xb)
            if loss.classification:
                correct += int((out.argmax(axis=1) == yb).sum())
    result = {"loss": total / len(x)}
    if loss.classification:
        result["accuracy"] = correct / len(x)
    return result


@public()
def fit(model, data, loss, optimizer, epochs=1, batch_size=32, seed=0, progress=False, *,
        validation_data=None, eval_train=True, drop_last=False):
    """Train ``model`` with mini-batches; return the per-epoch :class:`History`.

    Parameters
    ----------
    model : varshift.nn.Layer
        Trained in place, in train mode (left in train mode).
    data : tuple of (ndarray of shape (N, ...), ndarray of shape (N, ...))
        Inputs and targets (integer labels for :class:`~varshift.nn.CrossEntropyLoss`).
    loss : varshift.nn.CrossEntropyLoss or varshift.nn.MSELoss
    optimizer : varshift.optim.Optimizer
        Built on ``model`` (or on one of its sub-layers, to train only that part).
    epochs : int, default 1
    batch_size : int, default 32
        The last batch of an epoch may be smaller, unless ``drop_last``; a last batch
        of one sample is folded into the one before (BatchNorm cannot normalise one
        value).
    seed : int, default 0
        Seed of the shuffling order.
    progress : bool, default False
        Show progress on stderr (a tqdm bar on a terminal if tqdm is installed, else
        a few plain lines).
    validation_data : tuple, optional
        Evaluated in inference mode after every epoch.
    eval_train : bool, default True
        Also evaluate the training data in inference mode after every epoch (the
        train-vs-eval gap of Li et al.'s Fig. 5).
    drop_last : bool, default False
        Skip the last, smaller batch of each epoch.

    Returns
    -------
    History

    Raises
    ------
    TypeError, ValueError
        For bad arguments or data (labels out of range or not integers, one-hot
        labels, non-finite inputs, a learning rate that is not a positive finite
        number, ...). Everything is checked before the first step, so the model is
        unchanged.
    varshift.NonFiniteError
        When the loss or a gradient becomes non-finite (a subclass of
        FloatingPointError and ValueError). That step is not applied: the model is
        as after the previous step.

    Notes
    -----
    If any error interrupts a step (also ``KeyboardInterrupt``) before the optimiser
    updates the weights, the running statistics and random streams are restored to
    their state before that step, so the model is exactly as after the last completed
    step.
    """
    _validate.model(model, "fit")
    _check_loss(loss, "fit")
    _check_optimizer(optimizer, model)
    epochs = _validate.integer(epochs, "epochs", "fit")
    batch_size = _validate.integer(batch_size, "batch_size", "fit")
    seed = _validate.seed(seed, "seed", "fit")
    progress = _validate.flag(progress, "progress", "fit")
    eval_train = _validate.flag(eval_train, "eval_train", "fit")
    drop_last = _validate.flag(drop_last, "drop_last", "fit")
    x, y = _check_data(data, "data", "fit")
    _check_against_model(model, loss, x, y, "data", "fit")
    if validation_data is not None:
        validation_data = _check_data(validation_data, "validation_data", "fit")
        _check_against_model(model, loss, *validation_data, "validation_data", "fit")
    stop = len(x) - len(x) % batch_size if drop_last else len(x)
    if stop == 0:
        raise ValueError(f"fit: drop_last=True with batch_size {batch_size} larger than the "
                         f"{len(x)} samples leaves no batch to train on")
    bounds = batch_bounds(stop, batch_size)
    rng = np.random.default_rng(seed)
    history = History()
    model.train()
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x))
        total, correct, seen = 0.0, 0, 0
        for step, (start, end) in enumerate(
                progress_bar(bounds, progress, len(bounds), f"epoch {epoch}/{epochs}"), 1):
            idx = order[start:end]
            xb, yb = x[idx], y[idx]
            where = f"epoch {epoch}, step {step} (samples {start}-{end - 1} of the shuffled data)"
            out, value = _step(model, loss, optimizer, xb, yb, where)
            history.steps += 1
            total += value * len(idx)
            seen += len(idx)
            if loss.classification:
                correct += int((out.argmax(axis=1) == yb).sum())
        history._append("loss", total / seen)
        if loss.classification:
            history._append("accuracy", correct / seen)
        evaluations = [("eval", (x, y))] if eval_train else []
        if validation_data is not None:
            evaluations.append(("val", validation_data))
        for prefix, eval_data in evaluations:
            for key, value in evaluate(model, eval_data, loss, max(batch_size, 256)).items():
                history._append(f"{prefix}_{key}", value)
    return history


def _check_optimizer(optimizer, model):
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"fit: optimizer must be a varshift optimizer (optim.SGD or optim.Adam "
                        f"built on the model), got {_validate.shown(optimizer)}")
    if not any(optimizer.model is layer for _, layer in model.walk()):
        raise ValueError("fit: optimizer was built on another model, so training would not "
                         "change this one; build it on this model, e.g. optim.Adam(model)")
    _validate.real(optimizer.lr, "optimizer.lr", "fit", 0, low_open=True)


def _step(model, loss, optimizer, xb, yb, where):
    """One training step; anything failing before the update restores the running
    statistics and random streams, so the step leaves no trace."""
    buffers, streams = model.state_dict(params=False), model.rng_state()
    not_applied = ("this step was not applied (the model is as after the previous step); "
                   "try a smaller learning rate")
    try:
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # caught just below
                out = model(xb)
                value = loss(out, yb)
        except NonFiniteError as err:
            raise NonFiniteError(f"fit: {err}, in {where}; {not_applied}") from err
        if not np.isfinite(value):
            raise NonFiniteError(f"fit: loss is {value} in {where}; {not_applied}")
        optimizer.zero_grad()
        model.backward(loss.backward(), input_grad=False)
        for key, _, grad in model.named_parameters():
            if grad is not None and not np.isfinite(grad).all():
                raise NonFiniteError(f"fit: the gradient of {key!r} is not finite in {where}; "
                                     f"{not_applied}")
    except BaseException:
        model.load_state_dict(buffers, strict=False)
        model.set_rng_state(streams)
        raise
    optimizer.step()
    return out, value
