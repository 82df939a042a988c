"""A minimal training loop, :func:`fit`, and its :class:`History`."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np

from ._progress import progress_bar
from .nn.layer import modes, preserved

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


def _check_data(data, name):
    try:
        x, y = data
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an (x, y) pair of arrays") from None
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"{name}: x has {len(x)} samples but y has {len(y)}")
    if len(x) == 0:
        raise ValueError(f"{name} is empty")
    return x, y


def evaluate(model, data, loss, batch_size=256, *, batchnorm="eval", dropout="eval", seed=0):
    """Loss (and accuracy for a classification loss), by default in inference mode.

    Parameters
    ----------
    model : varshift.nn.Layer
    data : tuple of (ndarray of shape (N, ...), ndarray of shape (N, ...))
    loss : varshift.nn losses
    batch_size : int, default 256
        Also the number of samples BatchNorm normalises over when ``batchnorm='train'``.
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
    """
    x, y = _check_data(data, "evaluate: data")
    total, correct = 0.0, 0
    with preserved(model, seed), modes(model, default="eval", batchnorm=batchnorm, dropout=dropout), \
            np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            out = model(xb)
            total += loss(out, yb) * len(xb)
            if loss.classification:
                correct += int((out.argmax(axis=1) == yb).sum())
    result = {"loss": total / len(x)}
    if loss.classification:
        result["accuracy"] = correct / len(x)
    return result


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
    epochs : int, default 1
    batch_size : int, default 32
        The last batch of an epoch may be smaller, unless ``drop_last``.
    seed : int, default 0
        Seed of the shuffling order.
    progress : bool, default False
        Show a progress bar on stderr (tqdm if installed).
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
    FloatingPointError
        When a batch contains non-finite inputs or the loss becomes non-finite; the
        model is left as it was before that step.
    """
    x, y = _check_data(data, "fit: data")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"fit: {name} must be a positive integer, got {value!r}")
    rng = np.random.default_rng(seed)
    history = History()
    model.train()
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x))
        stop = len(x) - len(x) % batch_size if drop_last else len(x)
        starts = range(0, stop, batch_size)
        total, correct, seen = 0.0, 0, 0
        for step, start in enumerate(
                progress_bar(starts, progress, len(starts), f"epoch {epoch}/{epochs}"), 1):
            idx = order[start:start + batch_size]
            xb, yb = x[idx], y[idx]
            where = f"epoch {epoch}, step {step} (samples {start}-{start + len(idx) - 1} of the shuffled data)"
            if xb.dtype.kind == "f" and not np.isfinite(xb).all():
                raise FloatingPointError(f"fit: non-finite input in {where}")
            buffers = model.state_dict(params=False)
            with np.errstate(over="ignore", invalid="ignore"):  # caught just below
                out = model(xb)
                value = loss(out, yb)
            if not np.isfinite(value):
                model.load_state_dict(buffers, strict=False)
                raise FloatingPointError(
                    f"fit: loss is {value} in {where}; the model is left as it was before "
                    f"this step (try a smaller learning rate)")
            optimizer.zero_grad()
            model.backward(loss.backward())
            optimizer.step()
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
