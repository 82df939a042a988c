"""What backends that learn a model's layers from its calls share (torch, Keras).

Such a backend intercepts every call of every layer while varshift measures (torch:
forward hooks; Keras: wrapped ``call`` methods) and reports to :class:`CallTracking`:
:meth:`~CallTracking._enter` when a layer starts (its key: ``'name'``, ``'name#2'`` for
a second call in one forward pass), :meth:`~CallTracking._batchnorm_input` with what a
BatchNorm receives, and pops :attr:`~CallTracking._stack` when the layer returns
(not after an exception, so that the stack names the failing layer). The layers are
listed in the order of their first call.
"""

from __future__ import annotations

from abc import abstractmethod
from contextlib import contextmanager

import numpy as np

from ..stats import RunningMoments
from . import Backend, LayerInfo, Modes

__all__ = ["CallTracking", "Stop", "TRAIN", "EVAL", "NODROP"]

#: The modes of the passes that follow the data flow.
EVAL = Modes(batchnorm=False, dropout=False, other=False)
TRAIN = Modes(batchnorm=True, dropout=True, other=True)
NODROP = Modes(batchnorm=True, dropout=False, other=False)


class Stop(BaseException):
    """Raised when a layer starts: nothing after it is needed (a BaseException, so that a
    forward method's or the framework's ``except Exception`` lets it through)."""


class CallTracking(Backend):
    """A :class:`~varshift.backends.Backend` that follows the calls of a running model.

    Subclasses set ``self._info`` (layer name -> :class:`LayerInfo`) and
    ``self._channels`` (BatchNorm name -> channels), and implement :meth:`_forward`,
    :meth:`_reseed`, :meth:`_save`, :meth:`_undo_buffers`, :meth:`_intercept` and
    :meth:`_release`.
    """

    def __init__(self, model):
        super().__init__(model)
        self._info, self._channels = {}, {}
        self._order = {}        # layer key -> its calls gave a tensor (in order of first call)
        self._bn_order = {}     # BatchNorm names, in order of first call
        self._most_calls = {}   # layer name -> most calls in one forward pass
        self._calls, self._stack = {}, []
        self._sink, self._passes = None, ()
        self._target, self._collected = None, None
        self._reference = None  # buffers as train-mode passes must leave them
        self._seeds = None      # random state of each batch's passes
        self._depth = 0         # nesting of preserved()

    @abstractmethod
    def _forward(self, x, modes):
        """The model's output for ``x`` in ``modes`` (None if :class:`Stop` ended it);
        call :meth:`_start_forward` first and :meth:`_end_forward` at the end (also
        after an exception)."""

    @abstractmethod
    def _reseed(self):
        """Seed the model's noise from the next of the session's seeds (``self._seeds``,
        a ``SeedSequence``): each batch's masks then depend on the seed and the
        batch's position only."""

    @abstractmethod
    def _save(self):
        """A copy of the model's state.

        Returns
        -------
        (saved, reference)
            ``saved.restore(buffers)`` puts everything back (the buffers only if
            ``buffers``); ``reference`` are the copies of the buffers train-mode passes
            must leave as they are.
        """

    @abstractmethod
    def _undo_buffers(self):
        """Put back the buffers a train-mode pass changed (to ``self._reference``)."""

    @abstractmethod
    def _intercept(self):
        """Start intercepting every layer's calls (hooks, wrapped methods)."""

    @abstractmethod
    def _release(self):
        """Stop intercepting: the model is as before :meth:`_intercept`."""

    # ------------------------------------------------------------------ state
    @contextmanager
    def preserved(self, seed, keep_buffers=False):
        (saved, reference), outer = self._save(), (self._reference, self._seeds)
        self._reference, self._seeds = reference, np.random.SeedSequence(seed)
        self._depth += 1
        ok = False
        try:
            if self._depth == 1:
                self._intercept()
            self._reseed()
            yield
            ok = True
        finally:
            self._depth -= 1
            if self._depth == 0:
                self._release()
            self._reference, self._seeds = outer
            saved.restore(buffers=not (ok and keep_buffers))

    # ------------------------------------------------------------------ structure
    def layers(self):
        return [self._layer_info(key) for key, tensor in self._order.items() if tensor]

    def _layer_info(self, key):
        """The :class:`LayerInfo` of a call key (``'relu#2'``: the second call)."""
        name, _, call = key.partition("#")
        info = self._info[name]
        return LayerInfo(key, info.kind, info.description) if call else info

    def trace(self, x):
        for modes in (EVAL, TRAIN, NODROP):
            self._forward(x[:64], modes)

    # ------------------------------------------------------------------ calls
    def _start_forward(self):
        self._calls, self._stack = {}, []

    def _end_forward(self, modes):
        for name, calls in self._calls.items():
            self._most_calls[name] = max(calls, self._most_calls.get(name, 0))
        if modes.any_training:
            self._undo_buffers()

    def _enter(self, name):
        """Note that layer ``name`` starts; returns the key of this call."""
        calls = self._calls[name] = self._calls.get(name, 0) + 1
        key = name if calls == 1 else f"{name}#{calls}"
        self._stack.append(key)
        self._order.setdefault(key, False)
        return key

    def _batchnorm_input(self, name, moments):
        """Report what BatchNorm ``name`` receives (a function giving its
        :class:`RunningMoments`, computed only if needed); raises :class:`Stop` after
        the last call of the layer :meth:`batchnorm_input` collects."""
        self._bn_order.setdefault(name, None)
        if self._sink is not None:
            self._sink.input(self._passes, name, moments())
        if name == self._target:
            self._collected = self._collected.merge(moments())
            if self._calls[name] == self._most_calls.get(name):
                raise Stop

    # ------------------------------------------------------------------ computing
    @contextmanager
    def observe(self, sink):
        self._sink = sink
        try:
            yield
        finally:
            self._sink = None

    def run_passes(self, x, passes):
        self._reseed()
        for name, modes in passes.items():
            self._passes = (name,)
            self._forward(x, modes)
        self._passes = ()

    @abstractmethod
    def _arrays(self, output, n) -> list:
        """The tensors of a model's output (a tensor or a nested structure) with ``n``
        samples, as float64 arrays of shape (n, ...)."""

    def output(self, x, modes):
        n = len(x)
        parts = [a.reshape(n, -1) for a in self._arrays(self._forward(x, modes), n)]
        return np.concatenate(parts, axis=1) if parts else np.zeros((n, 0))

    def batchnorm_input(self, name, x, modes):
        self._target, self._collected = name, RunningMoments(self._channels[name])
        self._reseed()
        try:
            self._forward(x, modes)
            return self._collected
        finally:
            self._target, self._collected = None, None
