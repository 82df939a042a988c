"""The framework-specific surface: what a framework's models must offer varshift.

An :class:`Adapter` is small on purpose. It lists a model's layers, calls the model
with a mode for each layer through an interceptor, snapshots and restores state, reads
and writes BatchNorm statistics, converts tensors to NumPy and cuts the user's data
into batches. Everything else (the passes, the float64 statistics, stopping at a
layer, finding noise by its behaviour, restoring state on every exit) is written once,
in :class:`~varshift.backends.session.Session`.

The interceptor an adapter is given (the session) is called, for every call of every
layer the adapter reports, in this order::

    key = interceptor.on_enter(name)                  # the layer starts
    replacement = interceptor.on_batchnorm(key, x)    # BatchNorm only, before it runs
    interceptor.on_exit(key, output)                  # after it returned

``on_batchnorm`` may raise :class:`~varshift.backends.session.Stop` (nothing after
that layer is needed: let it propagate) or return an output to use instead of running
the layer (None: run it). After an exception ``on_exit`` is not called.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ..stats import RunningMoments
from .modes import Kind

__all__ = ["Adapter", "LayerInfo", "BatchNormInfo"]


@dataclass(frozen=True)
class LayerInfo:
    """A layer of a model.

    Attributes
    ----------
    name : str
        Stable path in the model (``'3'``, ``'layer1.0.conv1'``; ``''`` for the model
        itself); a second call in one forward pass is reported as ``'name#2'``.
    kind : Kind
    description : str
        The layer's repr (its class name for a container).
    channel_axis : int, default 1
        The axis of the output's channels (``-1`` for channels-last layers).
    noise : str or None
        For a Dropout-like layer, its type and rate (``'Dropout 0.5'``).
    """

    name: str
    kind: Kind
    description: str
    channel_axis: int = 1
    noise: str | None = None


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
        variance ``M2 / M`` (Keras and Flax, whose running variances average biased
        batch variances).
    framework : {'varshift', 'torch', 'keras', 'flax'}
        The framework, whose convention findings quote ``momentum`` in: the weight of
        the new batch (varshift, PyTorch) or of the old value (Keras, Flax:
        ``1 - momentum`` here).
    largest : float
        The largest value the layer's batch statistics can hold (the maximum of the
        dtype it computes them in; default float32's).
    channel_axis : int, default 1
        The axis of the input's channels.
    not_recalibrated : str or None
        Why :func:`~varshift.recalibrate` cannot write this layer's statistics, as a
        sentence naming the layer (None: it can).
    """

    name: str
    num_features: int
    momentum: float | None
    eps: float
    affine: bool
    track_running_stats: bool
    frozen: bool = False
    unbiased: bool = True
    framework: str = "varshift"
    largest: float = float(np.finfo(np.float32).max)
    channel_axis: int = 1
    not_recalibrated: str | None = None



class Adapter(ABC):
    """The model-specific half of measuring, diagnosing and recalibrating.

    Parameters
    ----------
    model
        The framework's model; kept as ``self.model``.
    owner : str
        The calling function, for error messages.
    """

    #: Whether noise can escape the per-layer modes (a forward method drawing noise
    #: whatever its flag): inference is then checked for determinism.
    hidden_noise_possible = False
    #: Whether the session reseeds the model's noise before every batch (so that a
    #: batch's masks depend on the seed and the batch's position only); False keeps
    #: one stream per session.
    reseeds_per_batch = True
    #: What the framework calls a layer, in error messages.
    noun = "layer"

    def __init__(self, model, owner):
        self.model = model
        self.owner = owner

    # ------------------------------------------------------------------ structure
    @abstractmethod
    def layers(self) -> dict:
        """Every layer that has a mode, by name (``str -> LayerInfo``)."""

    @abstractmethod
    def batchnorm(self, name) -> BatchNormInfo:
        """The settings of BatchNorm ``name``."""

    def forward_order(self):
        """The reported layers' names in forward order where the structure gives it,
        else None (the session learns the order from the calls)."""
        return None

    # ------------------------------------------------------------------ data
    @abstractmethod
    def batches(self, data, batch_size, owner, name="data", input_key=None):
        """The user's ``data`` as checked batches the model takes
        (a :class:`varshift._data.Batches`)."""

    # ------------------------------------------------------------------ calling
    @abstractmethod
    @contextmanager
    def intercepting(self, interceptor):
        """While inside, :meth:`call` reports every call of every reported layer to
        ``interceptor`` (see the module docstring); afterwards the model is as before."""

    @abstractmethod
    def call(self, x, training, replay=None):
        """The model's output for batch ``x``.

        Parameters
        ----------
        x : batch of shape (N, ...)
        training : dict of str to bool
            Train (True) or inference mode of every layer of :meth:`layers`.
        replay : dict of str to tensor, optional
            Layers (called once per forward pass) that are not run: each call returns
            the given output instead (still reported to the interceptor, without
            ``on_batchnorm``), whatever its input (:mod:`~varshift.backends.replay`).
        """

    def run_passes(self, x, passes, statistics) -> bool:
        """Optionally run several passes at once (sharing what they have in common),
        reporting to ``statistics`` (a :class:`~varshift.backends.session.Statistics`);
        returns False to let the session run them one by one."""
        return False

    @abstractmethod
    def reseed(self, sequence) -> None:
        """Seed the model's noise from ``sequence`` (a ``numpy.random.SeedSequence``)."""

    # ------------------------------------------------------------------ state
    @abstractmethod
    def save(self):
        """Snapshot everything a call can change (parameters, buffers, modes, random
        state); ``.restore()`` of the result puts it back, bitwise."""

    @abstractmethod
    def save_buffers(self):
        """Snapshot what a train-mode call changes (running statistics, counters);
        ``.restore()`` puts it back (cheaply: after every train-mode call)."""

    @abstractmethod
    def running_stats(self, name):
        """``(mean, var, num_batches_tracked)`` of BatchNorm ``name``: arrays of
        shape (C,) in float64 and an int (or None); None without running
        statistics."""

    @abstractmethod
    def write_running_stats(self, name, mean, var, num_batches_tracked) -> None:
        """Write BatchNorm ``name``'s running statistics.

        Raises
        ------
        varshift.NonFiniteError
            If a value is NaN or beyond the buffers' dtype; nothing is written then.
        """

    # ------------------------------------------------------------------ numbers
    @abstractmethod
    def to_numpy(self, tensor) -> np.ndarray:
        """A tensor as a NumPy array (of its own dtype)."""

    @abstractmethod
    def tensors(self, output) -> list:
        """The tensors of a (nested) output."""

    def take(self, tensor, index):
        """The samples ``index`` (an integer NumPy array) of ``tensor``, in that
        order."""
        return tensor[index]

    def copy(self, tensor):
        """An independent copy of ``tensor``, safe from in-place changes of the
        original and of the copy (the tensor itself where tensors are immutable)."""
        return tensor

    @abstractmethod
    def reportable(self, output) -> bool:
        """Whether a layer's output is one real tensor with a batch axis."""

    def moments(self, tensor, axis=1) -> RunningMoments:
        """Per-channel float64 moments of a tensor of shape (N, ...), channels on
        ``axis`` (one channel for shape (N,))."""
        array = self.to_numpy(tensor)
        if array.ndim == 1:
            array = array[:, None]
        if array.dtype.kind != "f":
            array = array.astype(np.float64)
        moved = np.moveaxis(array, axis, 1)
        return RunningMoments(moved.shape[1]).update(moved)

    def model_description(self):
        """How an error outside every layer names the model (None: such errors are
        raised unchanged)."""
        return None

    def message(self, error) -> str:
        """The text of an error raised inside the model, for varshift's message."""
        return str(error)
