"""Backends: what :func:`~varshift.measure`, :func:`~varshift.diagnose` and
:func:`~varshift.recalibrate` need from a model, for each framework models come from.

The measurement itself (passes, float64 statistics, the report, the findings, the
recalibration) is written once, against :class:`Backend`. A backend finds the
BatchNorm and noise layers of a model with stable names, switches their modes per
pass, reports what BatchNorm layers receive and what every layer gives during a
forward pass as float64 NumPy statistics, cuts the user's data into batches,
snapshots and restores every piece of the model's state, and reads and writes the
running statistics.

* :mod:`varshift.backends.numpy_engine`: models built from :mod:`varshift.nn`;
* :mod:`varshift.backends.torch`: any ``torch.nn.Module`` (imported only when one is
  passed; ``import varshift`` never imports torch);
* :mod:`varshift.backends.keras`: any Keras 3 model or layer, on any Keras backend
  (imported only when one is passed; ``import varshift`` never imports keras).
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .. import _validate

__all__ = ["Modes", "LayerInfo", "BatchNormInfo", "Backend", "backend_for"]


@dataclass(frozen=True)
class Modes:
    """Train (True) or inference (False) mode, by kind of layer, for one pass.

    Attributes
    ----------
    batchnorm : bool
        BatchNorm normalises with batch statistics (True) or its running ones.
    dropout : bool
        Dropout-like noise layers are active.
    other : bool
        Every other layer (a user's module that calls ``F.dropout(x, p,
        self.training)`` follows this one).
    """

    batchnorm: bool
    dropout: bool
    other: bool

    @property
    def any_training(self) -> bool:
        """Whether some layer runs in train mode (and may update its buffers)."""
        return self.batchnorm or self.dropout or self.other


@dataclass(frozen=True)
class LayerInfo:
    """A layer whose output a report describes.

    Attributes
    ----------
    name : str
        Stable path in the model (``'3'``, ``'layer1.0.conv1'``; ``''`` for the model
        itself).
    kind : str
        ``'conv'``, ``'dense'``, ``'batchnorm'``, ``'dropout'``, ``'activation'``,
        ``'pool'``, ``'reshape'``, ``'container'`` or ``'layer'``.
    description : str
        The layer's repr (its class name for a container).
    """

    name: str
    kind: str
    description: str


@dataclass(frozen=True)
class BatchNormInfo:
    """A BatchNorm layer and its settings.

    Attributes
    ----------
    name : str
    num_features : int
    momentum : float or None
        Weight of the new batch in the running averages (PyTorch's convention);
        None: a cumulative average.
    eps : float
    affine : bool
    track_running_stats : bool
        Whether inference uses running statistics (else batch statistics).
    frozen : bool
        Kept in inference mode while the rest trains (frozen-BatchNorm fine-tuning):
        the train-mode passes leave it in inference mode, as training did.
    unbiased : bool
        The running variance estimates the unbiased variance (PyTorch, varshift):
        :func:`~varshift.recalibrate` writes ``M2 / (M - 1)``; False: the population
        variance ``M2 / M`` (Keras, whose moving variance averages biased batch
        variances).
    keras_momentum : bool
        The layer's own ``momentum`` argument is Keras' (the weight of the old value,
        ``1 - momentum`` here); findings quote it in that convention.
    largest : float
        The largest value the layer's batch statistics can hold (the maximum of the
        dtype it computes them in; default float32's).
    """

    name: str
    num_features: int
    momentum: float | None
    eps: float
    affine: bool
    track_running_stats: bool
    frozen: bool = False
    unbiased: bool = True
    keras_momentum: bool = False
    largest: float = float(np.finfo(np.float32).max)


class Backend(ABC):
    """The model-specific half of measuring, diagnosing and recalibrating.

    Parameters
    ----------
    model
        The framework's model; kept as ``self.model``.
    """

    #: Whether noise can escape the mode switches (e.g. ``F.dropout(x, training=True)``
    #: hard-coded in a forward method), so that inference must be checked for
    #: determinism.
    hidden_noise_possible = False

    def __init__(self, model):
        self.model = model

    # ------------------------------------------------------------------ structure
    @abstractmethod
    def layers(self) -> list:
        """The layers a report describes, in forward order.

        Returns
        -------
        list of LayerInfo
            Where the order is only known from running the model, the layers seen
            so far (by the passes or by :meth:`trace`).
        """

    @abstractmethod
    def batchnorms(self) -> list:
        """The BatchNorm layers, in forward order (as :meth:`layers`).

        Returns
        -------
        list of BatchNormInfo
        """

    @abstractmethod
    def trace(self, x) -> None:
        """Learn the layers and their forward order from batch ``x``, where they
        cannot be read from the model's structure (call inside :meth:`preserved`)."""

    @abstractmethod
    def noise_upstream(self, x) -> dict:
        """For every BatchNorm, the noise layers that feed it with no BatchNorm in
        between.

        Parameters
        ----------
        x : batch
            A batch to follow the data flow with, where it is not structural.

        Returns
        -------
        dict of str to list of str
            BatchNorm name -> names of the noise layers (only non-empty lists).
        """

    @abstractmethod
    def noise_description(self, name) -> str:
        """A noise layer's type and rate, e.g. ``'Dropout 0.5'``."""

    # ------------------------------------------------------------------ data
    @abstractmethod
    def batches(self, data, batch_size, owner, name="data", input_key=None):
        """The user's ``data`` as checked batches the model takes.

        Returns
        -------
        varshift._data.Batches
            Iterating yields batches of shape (N, ...) in the model's format.
        """

    # ------------------------------------------------------------------ state
    @abstractmethod
    @contextmanager
    def preserved(self, seed, keep_buffers=False):
        """Run code on the model and leave nothing of it changed afterwards.

        Parameters
        ----------
        seed : int or None
            Seed of the noise drawn inside (the model's own random state is saved
            and restored).
        keep_buffers : bool, default False
            Keep the buffers as they are when the block ends normally (used to write
            running statistics); after an exception they are always restored.

        Yields
        ------
        None
        """

    @abstractmethod
    def running_stats(self, name):
        """``(mean, var, num_batches_tracked)`` of BatchNorm ``name``: arrays of
        shape (C,) in float64 and an int (or None); None without running
        statistics."""

    @abstractmethod
    def set_running_stats(self, name, mean, var, num_batches_tracked) -> None:
        """Write BatchNorm ``name``'s running statistics.

        Parameters
        ----------
        mean, var : ndarray of shape (C,)
        num_batches_tracked : int

        Raises
        ------
        varshift.NonFiniteError
            If a value is NaN or beyond the buffers' dtype; nothing is written then.
        """

    # ------------------------------------------------------------------ computing
    @abstractmethod
    @contextmanager
    def observe(self, sink):
        """While inside, :meth:`run_passes` reports statistics to ``sink``.

        ``sink.output(passes, name, moments, shape)`` receives a layer's output
        moments (:class:`~varshift.stats.RunningMoments` over the batch, channels on
        axis 1) and its shape per sample, where ``sink.wants_output(passes)``;
        ``sink.input(passes, name, moments)`` a BatchNorm's input moments. ``passes``
        are the names of the passes the value belongs to (several where a backend
        computed them once).
        """

    @abstractmethod
    def run_passes(self, x, passes) -> None:
        """Run batch ``x`` once per pass.

        Parameters
        ----------
        x : batch of shape (N, ...)
        passes : dict of str to Modes
            Train-mode passes must not move running statistics (or any buffer).
        """

    @abstractmethod
    def output(self, x, modes):
        """The model's output for ``x`` in ``modes``, not observed.

        Returns
        -------
        ndarray of shape (N, F), float64
            Every output tensor, flattened per sample.
        """

    @abstractmethod
    def batchnorm_input(self, name, x, modes):
        """Moments of what BatchNorm ``name`` receives when ``x`` runs in ``modes``,
        computing no more of the model than needed.

        Returns
        -------
        RunningMoments
            Per channel, over the batch (over every call, for a layer called more
            than once).
        """


def backend_for(model, owner) -> Backend:
    """The backend of ``model``, or TypeError naming ``owner`` and the argument.

    A ``torch.nn.Module`` or a Keras layer is recognised without importing its
    framework: if torch (keras) is not imported, no module (layer) of it can exist. A
    Keras layer is checked first, since on Keras' torch backend it is also a
    ``torch.nn.Module``.
    """
    from ..nn.layer import Layer

    if isinstance(model, Layer):
        from .numpy_engine import NumpyBackend

        return NumpyBackend(model)
    if _is_keras(model):
        from .keras import KerasBackend

        return KerasBackend(model, owner)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        from .torch import TorchBackend

        return TorchBackend(model, owner)
    raise TypeError(f"{owner}: model must be a varshift model (a varshift.nn Layer, e.g. "
                    f"nn.Sequential), a torch.nn.Module or a Keras 3 model, got "
                    f"{_validate.shown(model)}")


def _is_keras(model) -> bool:
    """Whether ``model`` is a Keras layer (a model is one), by the modules of its
    classes; TypeError for Keras 2 (``tf.keras`` before Keras 3)."""
    keras = sys.modules.get("keras")
    if keras is None or not any(cls.__module__.split(".")[0] == "keras"
                                for cls in type(model).__mro__):
        return False
    if not hasattr(keras, "Layer") or not isinstance(model, keras.Layer):
        raise TypeError(f"a Keras model needs Keras 3 (found Keras "
                        f"{getattr(keras, '__version__', '?')}); got {_validate.shown(model)}")
    return True
