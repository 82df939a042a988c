"""One measuring session over any framework's model, through its adapter.

:class:`Session` is everything :func:`~varshift.measure`, :func:`~varshift.diagnose`
and :func:`~varshift.recalibrate` ask of a model, written once over an
:class:`~varshift.backends.adapter.Adapter`:

* the passes (:data:`~varshift.backends.modes.PASSES`) and their float64 statistics
  (:class:`Statistics`);
* the layers and BatchNorms in forward order, learned from the calls (a layer called
  twice in one forward pass is reported as ``'name'`` and ``'name#2'``; a BatchNorm's
  input statistics pool all its calls, as its running statistics do);
* stopping at a target layer once nothing after it is needed;
* finding the noise upstream of each BatchNorm by its behaviour;
* restoring every piece of state on success, on error and on KeyboardInterrupt.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace

import numpy as np

from ..stats import RunningMoments
from .modes import EVAL, NODROP, PASSES, TRAIN, Kind

__all__ = ["Session", "Statistics", "Stop"]

#: Samples of a batch used to follow the data flow.
PROBE_SAMPLES = 64


class Stop(BaseException):
    """Raised when nothing after a layer is needed (a BaseException, so that a
    forward method's or the framework's ``except Exception`` lets it through)."""


class Statistics:
    """Moments of every layer's output and every BatchNorm's input, per pass.

    Attributes
    ----------
    outputs, inputs : dict of str to dict of str to RunningMoments
        Pass name -> layer key -> moments (channels on axis 1).
    shapes : dict of str to tuple
        Layer key -> output shape of one sample.
    """

    def __init__(self):
        self.outputs = {name: {} for name in PASSES}
        self.inputs = {name: {} for name in PASSES}
        self.shapes = {}

    @staticmethod
    def wants_output(passes) -> bool:
        """Whether layer outputs computed for ``passes`` (pass names) are recorded
        (those of the train and eval passes are)."""
        return "train" in passes or "eval" in passes

    def output(self, passes, key, moments, shape):
        """Record a layer's output moments (and its per-sample shape) for ``passes``."""
        self.shapes[key] = tuple(shape)
        self._add(self.outputs, passes, key, moments)

    def input(self, passes, name, moments):
        """Record the moments of what BatchNorm ``name`` receives, for ``passes``."""
        self._add(self.inputs, passes, name, moments)

    @staticmethod
    def _add(store, passes, key, moments):
        for pass_name in passes:
            old = store[pass_name].get(key)
            store[pass_name][key] = moments if old is None else old.merge(moments)

    def moments(self, store, pass_name, key, channels) -> RunningMoments:
        """The moments of ``key`` in a pass (empty if it did not run there)."""
        found = getattr(self, store)[pass_name].get(key)
        return found if found is not None else RunningMoments(channels)

    def channels(self, key) -> int:
        """Channels of layer ``key``'s output."""
        return next(store[key].channels for store in self.outputs.values() if key in store)


class Session:
    """A model, seen through its adapter, for measuring, diagnosing and recalibrating.

    Parameters
    ----------
    adapter : Adapter
    """

    def __init__(self, adapter):
        self.adapter = adapter
        self.model = adapter.model
        self.hidden_noise_possible = adapter.hidden_noise_possible
        self._layers = adapter.layers()
        self._bn = {name: adapter.batchnorm(name) for name, info in self._layers.items()
                    if info.kind is Kind.BATCHNORM}
        self._order = {}        # layer key -> it gave a tensor (in order of first call)
        self._bn_order = {}     # BatchNorm names, in order of first call
        self._most_calls = {}   # layer name -> most calls in one forward pass
        self._calls, self._stack = {}, []
        self._statistics, self._passes = None, ()
        self._target, self._collected = None, None
        self._probe = None      # noise_upstream's record of BatchNorm inputs and outputs
        self._watch = None      # a replay.Recorder watching every call, or None
        self._buffers = None    # buffers as train-mode calls must leave them (None: as now)
        self._modes = {}        # (modes, active layers) -> every layer's mode
        self._seeds = None      # the random state of each batch
        self._written = {}      # running statistics written in this session
        self._depth = 0         # nesting of preserved()

    # ------------------------------------------------------------------ state
    @contextmanager
    def preserved(self, seed, keep_buffers=False):
        """Run code on the model and leave nothing of it changed afterwards.

        Parameters
        ----------
        seed : int or None
            Seed of the noise drawn inside (the model's own random state is saved
            and restored).
        keep_buffers : bool, default False
            Keep the running statistics written inside (:meth:`set_running_stats`)
            when the block ends normally; after an exception they are restored too.
        """
        saved = self.adapter.save()
        outer = self._buffers, self._seeds, self._written
        self._buffers, self._seeds = self.adapter.save_buffers(), np.random.SeedSequence(seed)
        self._written = {}
        self._depth += 1
        ok = False
        try:
            if self._depth == 1:
                with self.adapter.intercepting(self):
                    self._reseed(start=True)
                    yield
            else:
                self._reseed(start=True)
                yield
            ok = True
        finally:
            self._depth -= 1
            written = self._written
            self._buffers, self._seeds, self._written = outer
            saved.restore()
            if ok and keep_buffers:
                for name, stats in written.items():
                    self.adapter.write_running_stats(name, *stats)
                self._written.update(written)

    def running_stats(self, name):
        """``(mean, var, num_batches_tracked)`` of BatchNorm ``name`` (float64 arrays of
        shape (C,) and an int or None), or None without running statistics."""
        return self.adapter.running_stats(name)

    def set_running_stats(self, name, mean, var, num_batches_tracked):
        """Write BatchNorm ``name``'s running statistics (inside :meth:`preserved`)."""
        self.adapter.write_running_stats(name, mean, var, num_batches_tracked)
        self._written[name] = (mean, var, num_batches_tracked)
        self._buffers = None  # saved again before the next train-mode call needs it

    # ------------------------------------------------------------------ structure
    def layers(self) -> list:
        """The layers a report describes, in forward order (those seen so far, where
        the order is learned from the calls).

        Returns
        -------
        list of LayerInfo
        """
        order = self.adapter.forward_order()
        keys = order if order is not None else [key for key, tensor in self._order.items()
                                                if tensor]
        return [self._info(key) for key in keys]

    def batchnorms(self) -> list:
        """The BatchNorm layers in forward order (as :meth:`layers`).

        Returns
        -------
        list of BatchNormInfo
        """
        order = self.adapter.forward_order()
        names = [name for name in order if name in self._bn] if order is not None \
            else list(self._bn_order)
        return [self._bn[name] for name in names]

    def _info(self, key):
        """The LayerInfo of a call key (``'relu#2'``: the second call)."""
        name, _, call = key.partition("#")
        info = self._layers[name]
        return replace(info, name=key) if call else info

    def noise_description(self, name) -> str:
        """A noise layer's type and rate (``'Dropout 0.5'``), or its description."""
        info = self._layers[name]
        return info.noise or info.description

    def batches(self, data, batch_size, owner, name="data", input_key=None):
        """The user's ``data`` as checked batches the model takes."""
        return self.adapter.batches(data, batch_size, owner, name, input_key)

    # ------------------------------------------------------------------ calls
    def _training(self, modes, active=()):
        """Every layer's mode in ``modes``; the layers ``active`` train regardless
        (computed once per ``modes`` and ``active``: recalibration runs thousands of
        passes)."""
        key = (modes, frozenset(active))
        if key not in self._modes:
            self._modes[key] = {name: name in active or modes.training(
                info.kind, info.kind is Kind.BATCHNORM and self._bn[name].frozen)
                for name, info in self._layers.items()}
        return self._modes[key]

    def _forward(self, x, modes, active=(), replay=None):
        """The model's output for ``x`` in ``modes`` (None if :class:`Stop` ended it),
        with the layers of ``replay`` replayed (see :meth:`Adapter.call
        <varshift.backends.adapter.Adapter.call>`); buffers a train-mode call changed
        are put back."""
        training = self._training(modes, active)
        if self._buffers is None and any(training.values()):
            self._buffers = self.adapter.save_buffers()
        self._calls, self._stack = {}, []
        try:
            if replay is not None:
                return self.adapter.call(x, training, replay=replay)
            return self.adapter.call(x, training)
        except Stop:
            return None
        except (ValueError, TypeError, RuntimeError) as err:
            if self._stack:
                info = self._info(self._stack[-1])
                where = f"{self.adapter.noun} {info.name or '(model)'!r} ({info.description})"
            else:
                where = self.adapter.model_description()
            if where is None:
                raise
            if type(err) not in (ValueError, TypeError, RuntimeError):
                if hasattr(err, "add_note"):  # a framework's own error type: kept, with a note
                    err.add_note(f"(raised in {where})")
                raise
            raise type(err)(f"{where}: {self.adapter.message(err)}") from err
        finally:
            for name, calls in self._calls.items():
                self._most_calls[name] = max(calls, self._most_calls.get(name, 0))
            if any(training.values()):
                self._buffers.restore()

    # the interceptor (see varshift.backends.adapter)
    def on_enter(self, name):
        """Layer ``name`` starts; returns the key of this call."""
        calls = self._calls[name] = self._calls.get(name, 0) + 1
        key = name if calls == 1 else f"{name}#{calls}"
        self._stack.append(key)
        self._order.setdefault(key, False)
        if self._watch is not None:
            self._watch.enter(key)
        return key

    def on_batchnorm(self, key, x):
        """BatchNorm call ``key`` receives ``x``; returns an output to use instead of
        running the layer, or None. Raises :class:`Stop` after the last call of the
        layer :meth:`batchnorm_input` collects."""
        name = key.partition("#")[0]
        self._bn_order.setdefault(name, None)
        if self._watch is not None:
            self._watch.batchnorm(key, x)
        if self._probe is not None:
            return self._probe.on_batchnorm(key, self.adapter.to_numpy(x))
        axis = self._bn[name].channel_axis
        if self._statistics is not None and self._passes:
            self._statistics.input(self._passes, name, self.adapter.moments(x, axis))
        if name == self._target:
            self._collected = self._collected.merge(self.adapter.moments(x, axis))
            if self._calls[name] >= self._most_calls.get(name, 1):  # its last call
                raise Stop
        return None

    def on_exit(self, key, output):
        """Layer call ``key`` returned ``output``."""
        self._stack.pop()  # not after an exception: the stack names the failing layer
        reportable = self.adapter.reportable(output)
        if self._watch is not None:
            self._watch.exit(key, output, reportable)
        if not reportable:
            return
        self._order[key] = True
        if self._probe is not None and key.partition("#")[0] in self._bn:
            self._probe.on_exit(key, output)
        if self._statistics is not None and self._statistics.wants_output(self._passes):
            shape = tuple(output.shape[1:])
            self._statistics.output(self._passes, key, self.adapter.moments(
                output, self._info(key).channel_axis), shape)

    # ------------------------------------------------------------------ computing
    def trace(self, x, watch=None) -> bool:
        """Learn the layers and their forward order from batch ``x`` (inside
        :meth:`preserved`); nothing to learn where the structure gives the order.

        Parameters
        ----------
        x : batch
            Its first :data:`PROBE_SAMPLES` samples are run in each mode.
        watch : object, optional
            Told of every call of the inference-mode pass (see
            :meth:`batchnorm_input`).

        Returns
        -------
        bool
            Whether the model ran (and ``watch`` was told).
        """
        if self.adapter.forward_order() is not None:
            return False
        for modes in (EVAL, TRAIN, NODROP):
            self._watch = watch if modes is EVAL else None
            try:
                self._forward(x[:PROBE_SAMPLES], modes)
            finally:
                self._watch = None
        return True

    def _reseed(self, start=False):
        """Seed the model's noise for the next batch from the session's next child
        seed, so that its noise depends on the seed and the batch's position only; an
        adapter that does not reseed per batch is seeded from the session's seed at
        the ``start``."""
        if self.adapter.reseeds_per_batch:
            self.adapter.reseed(self._seeds.spawn(1)[0])
        elif start:
            self.adapter.reseed(self._seeds)

    def run_passes(self, x, passes, statistics):
        """Run batch ``x`` once per pass, recording to ``statistics``.

        Parameters
        ----------
        x : batch of shape (N, ...)
        passes : dict of str to Modes
        statistics : Statistics
        """
        self._reseed()
        if self.adapter.run_passes(x, passes, statistics):
            return
        self._statistics = statistics
        try:
            for name, modes in passes.items():
                self._passes = (name,)
                self._forward(x, modes)
        finally:
            self._statistics, self._passes = None, ()

    def output(self, x, modes):
        """The model's output for ``x`` in ``modes``, not recorded.

        Returns
        -------
        ndarray of shape (N, F), float64
            Every output tensor with N samples, flattened per sample.
        """
        n = len(x)
        parts = [np.asarray(self.adapter.to_numpy(t), np.float64).reshape(n, -1)
                 for t in self.adapter.tensors(self._forward(x, modes))
                 if len(t.shape) and t.shape[0] == n]
        return np.concatenate(parts, axis=1) if parts else np.zeros((n, 0))

    def batchnorm_input(self, name, x, modes, replay=None, watch=None) -> RunningMoments:
        """Moments of what BatchNorm ``name`` receives when ``x`` runs in ``modes``,
        computing no more of the model than needed (per channel, over the batch and
        over every call of the layer).

        Parameters
        ----------
        name : str
        x : batch
        modes : Modes
        replay : dict of str to tensor, optional
            Layers not run, returning these outputs instead (see
            :meth:`Adapter.call <varshift.backends.adapter.Adapter.call>`).
        watch : object, optional
            Told of every call (``enter(key)``, ``batchnorm(key, x)``,
            ``exit(key, output, reportable)``): a
            :class:`~varshift.backends.replay.Recorder`.
        """
        self._target, self._collected = name, RunningMoments(self._bn[name].num_features)
        self._watch = watch
        self._reseed()
        try:
            self._forward(x, modes, replay=replay)
            return self._collected
        finally:
            self._target, self._collected, self._watch = None, None, None

    def watched(self, x, modes, watch, replay=None, stop=None):
        """Run ``x`` in ``modes`` with ``watch`` told of every call (see
        :meth:`batchnorm_input`), stopping after BatchNorm ``stop`` is called."""
        self._watch, self._target = watch, stop
        if stop is not None:
            self._collected = RunningMoments(self._bn[stop].num_features)
        self._reseed()
        try:
            self._forward(x, modes, replay=replay)
        finally:
            self._target, self._collected, self._watch = None, None, None

    def noise_upstream(self, x) -> dict:
        """For every BatchNorm, the noise layers that reach it with no BatchNorm in
        between, found by their behaviour.

        Every BatchNorm replays its inference-mode output, so that it blocks what
        comes from upstream; then layers are switched to train mode and run twice
        with different noise: each Dropout-like layer alone, the other layers in
        groups that are halved until single layers remain. A
        layer is noise upstream of the BatchNorms whose inputs differ between the two
        runs: it draws random numbers in train mode, and they reach that BatchNorm.
        Deterministic differences between the modes (a layer that merely computes
        something else in train mode) are not noise.

        Parameters
        ----------
        x : batch
            Only its first :data:`PROBE_SAMPLES` samples are used.

        Returns
        -------
        dict of str to list of str
            BatchNorm name -> sorted names of the noise layers (non-empty lists only).
        """
        x = x[:PROBE_SAMPLES]
        probe = self._probe = _Probe()
        try:
            self._forward(x, EVAL)
            probe.replaying = True
            known = [name for name, info in self._layers.items() if info.kind is Kind.DROPOUT]
            others = [name for name, info in self._layers.items()
                      if info.kind not in (Kind.DROPOUT, Kind.BATCHNORM)]
            found = [(name, self._differs(x, [name])) for name in known]
            upstream = {}
            for layer, reached in found + self._noisy(x, others):
                for key in reached:
                    upstream.setdefault(key.partition("#")[0], set()).add(layer)
        finally:
            self._probe = None
        return {name: sorted(found) for name, found in upstream.items()}

    def batch_dependent_batchnorms(self, x) -> list:
        """The BatchNorms whose inference-mode output for the same samples and the same
        input depends on the rest of the batch (they normalise with batch statistics at
        inference: no running statistics, or a mode the model fixes itself).

        Parameters
        ----------
        x : batch
            Its first :data:`PROBE_SAMPLES` samples are run, and their first half alone.

        Returns
        -------
        list of str
            BatchNorm names, in forward order.
        """
        x = x[:PROBE_SAMPLES]
        runs = []
        for part in (x, x[:len(x) // 2]):
            probe = self._probe = _Probe()
            try:
                self._forward(part, EVAL)
            finally:
                self._probe = None
            runs.append(probe)
        whole, half = runs
        found = []
        for key, output in half.outputs.items():
            n = len(half.inputs[key])
            same_input = np.allclose(whole.inputs[key][:n], half.inputs[key], rtol=1e-5,
                                     atol=1e-7 * np.max(np.abs(half.inputs[key]), initial=1))
            a = np.asarray(self.adapter.to_numpy(whole.outputs[key]), np.float64)[:n]
            b = np.asarray(self.adapter.to_numpy(output), np.float64)
            scale = max(float(np.max(np.abs(b), initial=0)), 1e-12)
            if same_input and np.max(np.abs(a - b), initial=0) > 1e-4 * scale:
                found.append(key.partition("#")[0])
        return list(dict.fromkeys(found))

    def _noisy(self, x, candidates):
        """``(layer, BatchNorm keys its noise reaches)`` for the noise layers among
        ``candidates``, by halving groups that change some BatchNorm's input."""
        reached = self._differs(x, candidates)
        if not reached:
            return []
        if len(candidates) == 1:
            return [(candidates[0], reached)]
        half = len(candidates) // 2
        return self._noisy(x, candidates[:half]) + self._noisy(x, candidates[half:])

    def _differs(self, x, active):
        """BatchNorm call keys whose inputs differ between two runs of ``x`` in
        inference mode with the layers ``active`` in train mode."""
        runs = []
        for _ in range(2):
            self._probe.inputs = {}
            self.adapter.reseed(self._seeds.spawn(1)[0])
            self._forward(x, EVAL, active=set(active))
            runs.append(self._probe.inputs)
        first, second = runs
        return {key for key in first.keys() | second.keys()
                if key not in first or key not in second
                or first[key].tobytes() != second[key].tobytes()}


class _Probe:
    """What :meth:`Session.noise_upstream` records: the inputs of every BatchNorm
    call, and (first run) its outputs, replayed in the later runs."""

    def __init__(self):
        self.inputs, self.outputs, self.replaying = {}, {}, False

    def on_batchnorm(self, key, x):
        self.inputs[key] = x.copy()
        return self.outputs.get(key) if self.replaying else None

    def on_exit(self, key, output):
        if not self.replaying:
            self.outputs.setdefault(key, output)
