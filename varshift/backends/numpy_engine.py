"""The backend of varshift's own models (:mod:`varshift.nn`).

Everything is structural here: layers have stable paths (``'2.body.0'``), kinds, and
a forward order equal to :meth:`~varshift.nn.layer.Layer.walk`'s. Its fast path: the
passes run layer by layer, and a layer is computed once for all passes that give it
the same input and behave alike in it (as before the first Dropout); a Sequential,
Residual or Concat whose passes share an input but not their behaviour inside is run
child by child, so that they share what comes before the noise.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from .._data import Batches
from ..nn import BatchNorm, Concat, Residual, Sequential
from ..nn.layer import Snapshot, seed_noise
from ..stats import RunningMoments
from .adapter import Adapter, BatchNormInfo, LayerInfo
from .modes import Kind

__all__ = ["NumpyAdapter", "dropout_upstream_of_batchnorm"]


def _join(prefix, name):
    return f"{prefix}.{name}" if prefix else name


def dropout_upstream_of_batchnorm(model) -> dict:
    """For every BatchNorm, the Dropout-like layers that feed it with no BatchNorm
    in between, following Sequential, Residual and Concat data paths.

    Returns
    -------
    dict of str to list of str
        BatchNorm path -> paths of the noise layers upstream (only non-empty lists).
    """
    found: dict[str, list[str]] = {}

    def flow(layer, path, incoming):
        if isinstance(layer, Sequential):
            for name, child in layer.children().items():
                incoming = flow(child, _join(path, name), incoming)
            return incoming
        if isinstance(layer, Residual):
            body = flow(layer.body, _join(path, "body"), incoming)
            skip = incoming if layer.shortcut is None else flow(
                layer.shortcut, _join(path, "shortcut"), incoming)
            return body | skip
        if isinstance(layer, Concat):
            out = set()
            for name, branch in layer.children().items():
                out |= flow(branch, _join(path, name), incoming)
            return out
        if isinstance(layer, BatchNorm):
            if incoming:
                found[path] = sorted(incoming)
            return set()
        if layer.kind is Kind.DROPOUT:
            return incoming | {path}
        return incoming

    flow(model, "", set())
    return found


def _noise(layer):
    """A noise layer's type and rate (``'Dropout 0.5'``), else None."""
    if layer.kind is not Kind.DROPOUT:
        return None
    return f"{type(layer).__name__} {getattr(layer, 'rate', getattr(layer, 'beta', None))}"


class _Buffers:
    """A model's buffers; :meth:`restore` puts them back."""

    def __init__(self, model):
        self.model, self.buffers = model, model.state_dict(params=False)

    def restore(self):
        self.model.load_state_dict(self.buffers, strict=False)


def _set_modes(layer, modes, frozen):
    for _, sub in layer.walk():
        sub.training = modes.training(sub.kind, id(sub) in frozen)


def _behaviour(layer, modes, frozen):
    """What ``layer``'s subtree computes in ``modes`` (``frozen``: ids of frozen
    BatchNorms): equal tuples mean equal outputs for equal inputs; None when the modes
    make it random (active noise)."""
    signature = []
    for _, sub in layer.walk():
        training = modes.training(sub.kind, id(sub) in frozen)
        if isinstance(sub, BatchNorm):
            signature.append(training or not sub.track_running_stats)
        elif sub.kind is Kind.DROPOUT:
            if training:
                return None
            signature.append(False)
    return tuple(signature)


class NumpyAdapter(Adapter):
    """:class:`~varshift.backends.adapter.Adapter` of a :class:`varshift.nn.Layer` model.

    Mode switches, buffers, random streams and forward caches are the engine's own;
    every noise layer is a layer (kind ``'dropout'``), so no noise can escape them.
    The noise layers draw from one stream per session, seeded from the session's seed
    as :func:`varshift.nn.layer.preserved` seeds them. A BatchNorm in inference mode
    inside a model in train mode (``model.train(); bn.eval()``) is frozen, as for torch.
    """

    reseeds_per_batch = False

    def __init__(self, model, owner):
        super().__init__(model, owner)
        self._layers = dict(model.walk())
        self._paths = {id(layer): path for path, layer in self._layers.items()}
        self._interceptor, self._replay = None, {}
        self._passes = ()      # the passes a forward computes, for the hooks
        self._pristine = None  # the buffers as train-mode calls must leave them
        # a BatchNorm in inference mode inside a model in train mode (model.train();
        # bn.eval()) is frozen, as for torch
        self._frozen = {id(layer) for layer in self._layers.values()
                        if isinstance(layer, BatchNorm) and not layer.training
                        and layer is not model and model.training}

    # ------------------------------------------------------------------ structure
    def layers(self):
        return {path: LayerInfo(path, Kind(layer.kind),
                                repr(layer) if not layer.children() else type(layer).__name__,
                                noise=_noise(layer))
                for path, layer in self._layers.items()}

    def forward_order(self):
        return [path for path, layer in self._layers.items()
                if not isinstance(layer, Sequential)]

    def batchnorm(self, name):
        layer = self._layers[name]
        return BatchNormInfo(name, layer.num_features, layer.momentum, layer.eps,
                             layer.affine, layer.track_running_stats, id(layer) in self._frozen,
                             unbiased=layer.unbiased,
                             largest=float(np.finfo(self.model.dtype).max))

    # ------------------------------------------------------------------ data
    def batches(self, data, batch_size, owner, name="data", input_key=None):
        return Batches(data, batch_size, owner, name, input_key)

    # ------------------------------------------------------------------ calling
    @contextmanager
    def intercepting(self, interceptor):
        self._interceptor = interceptor
        try:
            yield
        finally:
            self._interceptor = None

    def call(self, x, training, replay=None):
        for path, layer in self._layers.items():
            layer.training = training[path]
        wrapped = [layer for path, layer in self._layers.items()
                   if not isinstance(layer, Sequential)]
        for layer in wrapped:
            layer.forward = self._wrapped(layer)
        self._replay = replay or {}
        try:
            return self.model(x)
        finally:
            self._replay = {}
            for layer in wrapped:
                del layer.forward

    def _wrapped(self, layer):
        """``layer.forward``, reporting to the interceptor."""
        forward, path = type(layer).forward.__get__(layer), self._paths[id(layer)]

        def wrapped(x):
            key = self._interceptor.on_enter(path)
            out = self._replay.get(path)
            if out is None and isinstance(layer, BatchNorm):
                out = self._interceptor.on_batchnorm(key, layer._prepare_input(x))
            if out is None:
                out = forward(x)
            self._interceptor.on_exit(key, out)
            return out

        return wrapped

    def reseed(self, sequence):
        """One stream per noise layer, spawned from ``sequence``."""
        seed_noise(self.model, sequence)

    # ------------------------------------------------------------------ state
    def save(self):
        return Snapshot(self.model)

    def save_buffers(self):
        """The buffers; the fast path also puts back from them, after a train-mode
        call of a part of the model, only that part's BatchNorm statistics."""
        self._pristine = _Buffers(self.model)
        return self._pristine

    def running_stats(self, name):
        layer = self._layers[name]
        if not layer.track_running_stats:
            return None
        return (layer.buffers["running_mean"].astype(float),
                layer.buffers["running_var"].astype(float),
                int(layer.buffers["num_batches_tracked"]))

    def write_running_stats(self, name, mean, var, num_batches_tracked):
        self._layers[name].set_running_stats(mean, var, num_batches_tracked)

    # ------------------------------------------------------------------ numbers
    def to_numpy(self, tensor):
        return np.asarray(tensor)

    def tensors(self, output):
        return [np.asarray(output)]

    def copy(self, tensor):
        return np.array(tensor, copy=True)

    def reportable(self, output):
        return isinstance(output, np.ndarray) and output.ndim > 0

    # ------------------------------------------------------------------ fast path
    @contextmanager
    def _observed(self, statistics):
        """Hooks reporting every layer's output and every BatchNorm's input."""
        def hook(path):
            def record(layer, x, out):
                if statistics.wants_output(self._passes):
                    out2 = out if out.ndim > 1 else out[:, None]
                    statistics.output(self._passes, path,
                                      RunningMoments(out2.shape[1]).update(out2), out.shape[1:])
                if isinstance(layer, BatchNorm):
                    statistics.input(self._passes, path,
                                     RunningMoments(layer.num_features).update(x))
            return record

        handles = [self._layers[path].add_hook(hook(path)) for path in self.forward_order()]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def run_passes(self, x, passes, statistics):
        """Run every pass on batch ``x``, computing each layer once for all passes that
        give it the same input and behave alike in it (as before the first Dropout),
        also inside Sequential, Residual and Concat containers."""
        try:
            with self._observed(statistics):
                self._run(self.model, {name: x for name in passes}, passes)
        finally:
            self._passes = ()
        return True

    def _run(self, layer, values, passes):
        """``{pass: output of layer}`` for the inputs ``values`` (``{pass: input}``)."""
        groups = {}
        for name, modes in passes.items():
            behaviour = _behaviour(layer, modes, self._frozen)
            key = (id(values[name]), behaviour) if behaviour is not None else (name,)
            groups.setdefault(key, []).append(name)
        groups = list(groups.values())
        same_input = {id(values[name]) for name in passes}
        if len(groups) > len(same_input) and isinstance(layer, (Sequential, Residual, Concat)):
            return self._run_inside(layer, values, passes)  # passes share a prefix inside
        out = {}
        for group in groups:
            modes = passes[group[0]]
            _set_modes(layer, modes, self._frozen)
            self._passes = tuple(group)
            result = layer(values[group[0]])
            if modes.batchnorm:
                self._undo_updates(layer)
            out.update(dict.fromkeys(group, result))
        return out

    def _undo_updates(self, layer):
        """Copy back the running statistics that a train-mode call of ``layer`` updated,
        from the last :meth:`save_buffers` (only ``layer``'s own BatchNorm layers: a
        whole-model reload per BatchNorm call made a pass quadratic in the depth)."""
        for path, sub in layer.walk(self._paths[id(layer)]):
            if isinstance(sub, BatchNorm) and sub.track_running_stats:
                for key, value in sub.buffers.items():
                    np.copyto(value, self._pristine.buffers[_join(path, key)], casting="unsafe")

    def _run_inside(self, layer, values, passes):
        """:meth:`_run` for a container, child by child; its output is formed (and its
        hooks called) once per distinct input and children's outputs."""
        if isinstance(layer, Sequential):
            out = values
            for child in layer.layers:
                out = self._run(child, out, passes)
            branches, join = [out], lambda _, outputs: outputs[0]
        else:
            children = layer.branches if isinstance(layer, Concat) else [
                child for child in (layer.body, layer.shortcut) if child is not None]
            branches = [self._run(child, values, passes) for child in children]
            join = layer._join
        groups = {}
        for name in passes:
            key = (id(values[name]), *(id(branch[name]) for branch in branches))
            groups.setdefault(key, []).append(name)
        joined = {}
        for group in groups.values():
            x = values[group[0]]
            out = join(x, [branch[group[0]] for branch in branches])
            self._passes = tuple(group)
            layer._notify(x, out)
            joined.update(dict.fromkeys(group, out))
        return joined
