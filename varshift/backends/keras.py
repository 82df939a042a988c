"""The backend of a Keras 3 model or layer, on any Keras backend (imported only when
one is passed).

Names and order
    Layers are named by the path of their names from the model (``'dense'``,
    ``'inner/batch_normalization'``; ``''`` for the model itself) and listed in the
    order of their first call, a layer before the layers it calls; a layer called
    several times in one forward pass gets one entry per call (``'relu'``,
    ``'relu#2'``), and a BatchNormalization's input statistics pool all its calls.
    Functional and Sequential models (also nested ones) are not listed, their layers
    are; a subclassed model or layer with layers of its own is a ``'container'``.
    Layers whose output is not one tensor are not listed.

Channels
    Keras is channels-last: a layer's statistics are per channel along its last axis
    (along axis 1 for a layer with ``data_format='channels_first'``), a
    BatchNormalization's along its ``axis``. Shapes are Keras' own, e.g. ``(L, C)``.

Modes
    Keras has no per-layer mode flag: while varshift measures, the ``call`` of every
    layer that takes a ``training`` argument is wrapped to receive its own value, and
    the model is called with its own. BatchNormalization and the dropout-like layers
    (Dropout, SpatialDropout1D/2D/3D, GaussianDropout, GaussianNoise, AlphaDropout)
    follow their kinds' modes, every other layer the pass's mode of "other" layers.
    A BatchNormalization with
    ``trainable=False`` runs in inference mode even with ``training=True`` in Keras 3:
    it is *frozen* and stays in inference mode in the train-mode passes, as in training.
    Keras' conventions are converted: ``momentum`` in the reports is the weight of the
    new batch (``1 - `` Keras' momentum), ``num_batches_tracked`` is None (Keras keeps
    no counter), and :func:`~varshift.recalibrate` writes the population variance
    (Keras' moving variance averages biased batch variances).

What cannot be controlled
    Noise inside a custom layer that does not follow ``training``; it is detected as
    for torch (``measure`` warns, ``diagnose`` reports ``EVAL_NOT_DETERMINISTIC``). Noise
    in a custom layer that follows ``training`` follows the "other" mode, and is found
    upstream of a BatchNormalization by its behaviour, like a Dropout. A layer whose
    ``call`` is not used (a quantized Dense, rematerialisation) is not observed. The
    model takes one input tensor. Batch Renormalization (``renorm=True``) is not
    recalibrated (its extra moving statistics would disagree).

State
    :meth:`KerasAdapter.save` keeps a copy of every variable of the model
    (weights, moving statistics, seed-generator states) and every layer's
    ``trainable`` flag, and puts back whatever differs afterwards, also after an
    exception; the wrapped ``call`` methods are removed, and on Keras' torch backend the
    torch random state (used by Keras' unseeded torch dropout) is restored. Train-mode
    passes never move the moving statistics (they are put back after each pass), and
    on the torch backend they run under ``torch.no_grad()``. Dropout masks come from the
    layers' seed generators (and torch's generator), reseeded from ``seed`` per batch.
"""

from __future__ import annotations

import functools
import re
import sys
from contextlib import contextmanager, nullcontext

import keras
import numpy as np

from .. import _validate
from .._data import Batches
from .adapter import Adapter, BatchNormInfo, LayerInfo
from .modes import Kind

__all__ = ["KerasAdapter", "KerasBatches"]

#: Dropout-like layers (SpatialDropout1D/2D/3D are Dropout subclasses).
_NOISE = (keras.layers.Dropout, keras.layers.GaussianDropout, keras.layers.GaussianNoise,
          keras.layers.AlphaDropout)
#: Models that only chain their layers (not reported, as torch's ``nn.Sequential``).
_UNREPORTED = (keras.Sequential, keras.src.models.functional.Functional)
#: Config entries shown in a layer's description, when present.
_SHOWN = ("units", "filters", "kernel_size", "strides", "pool_size", "rate", "stddev", "axis",
          "momentum", "epsilon", "activation", "data_format")
#: Terminal formatting in Keras' messages (bold layer errors).
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: varshift's kind of the layers of a Keras module (``keras.src.layers.<group>``).
_GROUP_KINDS = {"convolutional": Kind.CONV, "activations": Kind.ACTIVATION,
                "pooling": Kind.POOL, "reshaping": Kind.RESHAPE}


def _numpy(t) -> np.ndarray:
    """A backend tensor (or array) as a NumPy array."""
    return np.asarray(keras.ops.convert_to_numpy(t))


def _is_tensor(value) -> bool:
    return isinstance(value, np.ndarray) or keras.ops.is_tensor(value)


def _sublayers(layer) -> list:
    """The layers ``layer`` holds directly (not the InputLayers of a model)."""
    return [sub for sub in layer._flatten_layers(include_self=False, recursive=False)
            if not isinstance(sub, keras.layers.InputLayer)]


def _walk(model):
    """``(path, layer)`` for ``model`` (path ``''``) and every layer inside, parents
    first; a layer held twice is listed at its first path."""
    seen, stack, out = set(), [("", model)], []
    while stack:
        path, layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        out.append((path, layer))
        stack.extend((f"{path}/{sub.name}" if path else sub.name, sub)
                     for sub in reversed(_sublayers(layer)))
    return out


#: What :func:`_run_replaying` reads of a functional graph (Keras 3's ``Function``)
#: and of its nodes.
_GRAPH_ATTRIBUTES = ("_nodes_by_depth", "_outputs_struct", "inputs", "outputs", "name")
_NODE_ATTRIBUTES = ("operation", "is_input", "input_tensors", "outputs", "arguments")


def _readers(graph):
    """Tensor id -> the ids of the operations of ``graph``'s nodes that take it (None
    for an output of the graph); None where :func:`_run_replaying` cannot run
    ``graph`` (a Keras version with other internals, or something of the graph's own
    shadows ``_run_through_graph``)."""
    if (not all(hasattr(graph, name) for name in _GRAPH_ATTRIBUTES)
            or "_run_through_graph" in vars(graph)):
        return None
    readers = {id(x): [None] for x in graph.outputs}
    for nodes in graph._nodes_by_depth.values():
        for node in nodes:
            if not all(hasattr(node, name) for name in _NODE_ATTRIBUTES):
                return None
            for x in node.input_tensors:
                readers.setdefault(id(x), []).append(id(node.operation))
    return readers


def _run_replaying(graph, stand_ins, readers, inputs, operation_fn=lambda op: op,
                   call_fn=None):
    """Keras' ``Function._run_through_graph`` (3.x), except that a node whose layer has
    a stand-in in ``stand_ins`` (layer id -> function of no argument returning the
    layer's output) takes its output from the stand-in, without mapping its arguments
    or calling the layer, and only where a node that is not a stand-in reads it (or
    it is an output of the graph: ``readers`` is :func:`_readers`). Symbolic runs
    (``call_fn``) are Keras' own."""
    if call_fn is not None:
        return type(graph)._run_through_graph(graph, inputs, operation_fn, call_fn)
    tensors = {id(x): y for x, y in zip(graph.inputs, keras.tree.flatten(inputs))}
    by_depth = graph._nodes_by_depth
    operation_for = getattr(graph, "_get_operation_for_node", lambda node: node.operation)
    for depth in sorted(by_depth, reverse=True):
        for node in by_depth[depth]:
            if not node.operation or node.is_input:
                continue  # the inputs are there already
            stand_in = stand_ins.get(id(node.operation))
            if stand_in is not None:
                if all(reader in stand_ins for x in node.outputs
                       for reader in readers.get(id(x), ())):
                    continue  # read by stand-ins only (or by nothing): not needed
                outputs = [stand_in()]  # a replayed output is one tensor
            elif any(id(x) not in tensors for x in node.input_tensors):
                continue  # not computable (as Keras skips it)
            else:
                args, kwargs = node.arguments.fill_in(tensors)
                outputs = keras.tree.flatten(operation_fn(operation_for(node))(*args, **kwargs))
            for x, y in zip(node.outputs, outputs):
                tensors[id(x)] = y
    missing = [i for i, x in enumerate(graph.outputs) if id(x) not in tensors]
    if missing:
        raise ValueError(f"output {missing[0]} of {graph.name!r} is not connected to its inputs")
    return keras.tree.pack_sequence_as(graph._outputs_struct,
                                       [tensors[id(x)] for x in graph.outputs])


def _kind(layer) -> Kind:
    """varshift's kind of a Keras layer."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return Kind.BATCHNORM
    if isinstance(layer, _NOISE):
        return Kind.DROPOUT
    if isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense)):
        return Kind.DENSE
    if _sublayers(layer):
        return Kind.CONTAINER
    parts = type(layer).__module__.split(".")
    if parts[:3] == ["keras", "src", "layers"] and len(parts) > 3:
        return _GROUP_KINDS.get(parts[3], Kind.LAYER)
    return Kind.LAYER


def _describe(layer, kind) -> str:
    """``'Dense(units=8, activation=linear)'``: the class and its main settings."""
    if kind is Kind.CONTAINER:
        return type(layer).__name__
    try:
        config = layer.get_config()
    except Exception:  # noqa: BLE001 -- a custom layer without a config
        config = {}
    shown = ", ".join(f"{key}={config[key]}" for key in _SHOWN if key in config)
    return f"{type(layer).__name__}({shown})"


def _channel_axis(layer) -> int:
    """The axis a layer's output statistics are taken along."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return layer.axis
    return 1 if getattr(layer, "data_format", None) == "channels_first" else -1


def _no_grad():
    """``torch.no_grad()`` on Keras' torch backend (the other backends record no
    gradients outside a tape or a traced function)."""
    if keras.backend.backend() == "torch":
        import torch

        return torch.no_grad()
    return nullcontext()


def _float_dtype(name):
    """The NumPy float dtype of a Keras dtype name (float32 for a NumPy-less one such as
    bfloat16, whose range float32's matches)."""
    try:
        dtype = np.dtype(name)
    except TypeError:
        return np.float32
    return dtype if dtype.kind == "f" else np.float32


def _torch_rng():
    """torch's CPU random state where Keras runs on torch (its unseeded dropout draws
    from it), else None."""
    torch = sys.modules.get("torch")
    if torch is None or keras.backend.backend() != "torch":
        return None
    return torch


class KerasBatches(Batches):
    """:class:`~varshift._data.Batches` as tensors of Keras' backend.

    Accepts what :class:`~varshift._data.Batches` does, plus tensors of the backend
    and ``(x, y)`` or ``(x, y, sample_weight)`` tuples or lists of them (as a
    ``tf.data`` pipeline or a torch ``DataLoader`` yields). Floating batches are cast
    to ``dtype``.
    """

    def __init__(self, data, batch_size, owner, name="data", input_key=None, *, dtype):
        self._dtype = dtype
        if isinstance(data, tuple) and len(data) == 2 and _is_tensor(data[0]):
            data = data[0]
        if _is_tensor(data) and not isinstance(data, np.ndarray):
            data = _numpy(data)
        super().__init__(data, batch_size, owner, name, input_key)

    def _input_of(self, item):
        if isinstance(item, (tuple, list)) and item and _is_tensor(item[0]):
            return item[0]
        return super()._input_of(item)

    def _as_batch(self, batch):
        return _numpy(batch) if keras.ops.is_tensor(batch) else np.asarray(batch)

    def _to_model(self, batch):
        if batch.dtype.kind == "f":
            batch = batch.astype(self._dtype, copy=False)
        return keras.ops.convert_to_tensor(batch)


class _Saved:
    """Values of every variable of a model, every layer's ``trainable`` flag, and
    torch's random state where Keras runs on torch.

    Parameters
    ----------
    model : keras.Layer
    layers : list of keras.Layer
        Every layer, parents first.
    """

    def __init__(self, model, layers):
        self.values = [(v, _numpy(v).copy()) for v in model.variables]
        self.trainable = [(layer, layer.trainable) for layer in layers]
        torch = _torch_rng()
        self.rng = None if torch is None else torch.get_rng_state()

    def restore(self):
        """Put everything back."""
        for layer, trainable in self.trainable:  # parents first: a model's flag is recursive
            if layer.trainable != trainable:
                layer.trainable = trainable
        _put_back(self.values)
        if self.rng is not None:
            _torch_rng().set_rng_state(self.rng)


def _put_back(values):
    """Assign each ``(variable, copy)`` whose variable differs from its copy (bitwise:
    NaN equals itself)."""
    for variable, copy in values:
        if _numpy(variable).tobytes() != copy.tobytes():
            variable.assign(copy)


class _Buffers:
    """Copies of the variables a train-mode call changes (the moving statistics);
    :meth:`restore` assigns back those that differ."""

    def __init__(self, variables):
        self.values = [(v, _numpy(v).copy()) for v in variables]

    def restore(self):
        _put_back(self.values)


class KerasAdapter(Adapter):
    """:class:`~varshift.backends.adapter.Adapter` of a Keras 3 model or layer (see the
    module docstring for names, channels, modes, what cannot be controlled, and
    state).

    Raises
    ------
    ValueError
        If a layer is not built yet (its first call would create its weights).
    """

    hidden_noise_possible = True

    def __init__(self, model, owner):
        super().__init__(model, owner)
        walked = _walk(model)
        for name, layer in walked:
            if not layer.built:
                raise ValueError(
                    f"{owner}: layer {name or model.name!r} ({type(layer).__name__}) is not "
                    f"built yet; call the model on a batch once (model(x)) or create it "
                    f"with keras.Input, which sets its shapes and weights")
        self._layers = dict(walked)
        self._bn = {name: layer for name, layer in walked
                    if isinstance(layer, keras.layers.BatchNormalization)}
        seeds = {id(sg.state): sg.state for _, layer in walked
                 for sg in getattr(layer, "_seed_generators", [])}
        self._seed_states = list(seeds.values())
        self._buffers = [v for v in model.non_trainable_variables if id(v) not in seeds]
        self.dtype = model.dtype_policy.compute_dtype
        self._interceptor, self._training, self._unwrapped = None, {}, []
        self._replay = {}
        # the graphs (functional models) a replayed layer can be a node of
        self._graphs = [layer for _, layer in walked if isinstance(layer, keras.Function)]
        self._stand_ins = {}  # layer name -> its stand-in in a graph (see _graph_replay)
        self._readers = {}    # graph id -> its _readers (None: not walked)

    # ------------------------------------------------------------------ structure
    def layers(self):
        infos = {}
        for name, layer in self._layers.items():
            kind = _kind(layer)
            noise = (f"{type(layer).__name__} "
                     f"{getattr(layer, 'rate', getattr(layer, 'stddev', None))}"
                     if kind is Kind.DROPOUT else None)
            infos[name] = LayerInfo(name, kind, _describe(layer, kind), _channel_axis(layer),
                                    noise)
        return infos

    def batchnorm(self, name):
        m = self._bn[name]
        refused = (f"BatchNormalization {name!r} uses renorm=True (Batch Renormalization), "
                   f"whose extra moving statistics varshift does not recalibrate"
                   ) if m.renorm else None
        return BatchNormInfo(name, int(m.moving_mean.shape[0]), 1.0 - m.momentum, m.epsilon,
                             bool(m.center or m.scale), True, frozen=not m.trainable,
                             unbiased=False, framework="keras",
                             largest=float(np.finfo(_float_dtype(m.compute_dtype)).max),
                             channel_axis=m.axis, not_recalibrated=refused)

    # ------------------------------------------------------------------ data
    def batches(self, data, batch_size, owner, name="data", input_key=None):
        return KerasBatches(data, batch_size, owner, name, input_key, dtype=self.dtype)

    # ------------------------------------------------------------------ calling
    @contextmanager
    def intercepting(self, interceptor):
        self._interceptor = interceptor
        try:
            for name, layer in self._layers.items():
                if not isinstance(layer, _UNREPORTED):
                    self._unwrapped.append((layer, vars(layer).get("call")))
                    layer.call = self._wrapped(name, layer)
            yield
        finally:
            for layer, own in reversed(self._unwrapped):  # the class's call, or the instance's
                if own is None:
                    delattr(layer, "call")
                else:
                    layer.call = own
            self._unwrapped, self._interceptor = [], None

    def _wrapped(self, name, layer):
        """``layer.call`` reporting to the interceptor, with the layer's own
        ``training`` value."""
        call, batchnorm = layer.call, isinstance(layer, keras.layers.BatchNormalization)

        def wrapped(*args, **kwargs):
            key = self._interceptor.on_enter(name)
            if layer._call_has_training_arg:
                kwargs["training"] = self._training[name]
            out = self._replay.get(name)
            if out is None and batchnorm:
                out = self._interceptor.on_batchnorm(key, args[0] if args else kwargs["inputs"])
            if out is None:
                out = call(*args, **kwargs)
            self._interceptor.on_exit(key, out)
            return out

        return wrapped

    def call(self, x, training, replay=None):
        self._training, self._replay = training, replay or {}
        try:
            with _no_grad(), self._graph_replay() as direct:
                if direct:
                    return self.model.call(x, training=training[""])
                return self.model(x, training=training[""])
        finally:
            self._replay = {}

    @contextmanager
    def _graph_replay(self):
        """While inside, a functional model's graph gives a replayed layer's node its
        replayed output without calling the layer or mapping its arguments, and skips
        the replayed layers that only replayed layers read: Keras' ``Layer.__call__``
        costs about 0.4 ms a call, its per-node argument mapping tens of microseconds,
        and a replayed pass goes through every node before its frontier.

        The graph runs through :func:`_run_replaying`, set as an attribute of the
        graph that shadows Keras' ``Function._run_through_graph`` (private) while
        inside; the interceptor sees the calls of the replayed layers that are read
        (no replayed layer is called twice, so the keys of the others' calls are the
        same). A graph without what it reads (a Keras version with other internals)
        runs as before: the layer is called and its wrapped ``call`` replays it, as for
        a layer of a subclassed model.

        Yields whether :meth:`call` may run the model through its ``call`` method
        rather than ``Layer.__call__``, which clears the losses of every layer of the
        model, recursively (about 0.7 ms for DenseNet121, as much as the rest of a
        replayed pass on one sample); the model's layers are still called through
        ``Layer.__call__``. Only where the model is such a graph, its ``call`` is
        Keras' own and its dtypes are not mixed: then the model's ``Layer.__call__``
        converts no input (a batch has the model's dtype) and opens no autocast scope,
        and the graph passes ``training`` to its layers. What a replayed pass computes
        is checked against a full pass on the probe (:mod:`~varshift.backends.replay`).
        """
        if not self._replay or not self._graphs:
            yield False
            return
        stand_ins = {}
        for name in self._replay:
            if name in self._layers:
                if name not in self._stand_ins:
                    self._stand_ins[name] = self._replayed(name)
                stand_ins[id(self._layers[name])] = self._stand_ins[name]
        for graph in self._graphs:
            if id(graph) not in self._readers:
                self._readers[id(graph)] = _readers(graph)
        patched = [graph for graph in self._graphs if self._readers[id(graph)] is not None]
        for graph in patched:
            object.__setattr__(graph, "_run_through_graph", functools.partial(
                _run_replaying, graph, stand_ins, self._readers[id(graph)]))
        model = self.model
        direct = (any(graph is model for graph in patched)
                  and type(model).call is keras.src.models.functional.Functional.call
                  and "call" not in vars(model)
                  and model.dtype_policy.compute_dtype == model.dtype_policy.variable_dtype)
        try:
            yield direct
        finally:
            for graph in patched:
                object.__delattr__(graph, "_run_through_graph")

    def _replayed(self, name):
        """What a replayed layer's call does, without the layer: report the call and
        return the replayed output."""

        def replayed():
            key = self._interceptor.on_enter(name)
            out = self._replay[name]
            self._interceptor.on_exit(key, out)
            return out

        return replayed

    def reseed(self, sequence):
        """Seed every seed generator (and torch's, on the torch backend)."""
        states = sequence.generate_state(len(self._seed_states) + 1, np.uint32) >> np.uint32(1)
        for state, value in zip(self._seed_states, states):
            state.assign(np.array([value, 0]).astype(keras.backend.standardize_dtype(
                state.dtype)))
        torch = _torch_rng()
        if torch is not None:
            torch.manual_seed(int(states[-1]))

    # ------------------------------------------------------------------ state
    def save(self):
        return _Saved(self.model, list(self._layers.values()))

    def save_buffers(self):
        return _Buffers(self._buffers)

    def running_stats(self, name):
        m = self._bn[name]
        return (_numpy(m.moving_mean).astype(np.float64),
                _numpy(m.moving_variance).astype(np.float64), None)

    def write_running_stats(self, name, mean, var, num_batches_tracked):
        m = self._bn[name]
        dtype = np.dtype(keras.backend.standardize_dtype(m.moving_variance.dtype))
        stats = _validate.running_stats({"moving_mean": mean, "moving_variance": var}, dtype,
                                        f"BatchNormalization {name!r}")
        for key, value in stats.items():
            getattr(m, key).assign(value.astype(dtype))

    # ------------------------------------------------------------------ numbers
    def to_numpy(self, tensor):
        return _numpy(tensor)

    def tensors(self, output):
        return [t for t in keras.tree.flatten(output) if keras.ops.is_tensor(t)]

    def copy(self, tensor):
        torch = _torch_rng()
        if torch is not None and isinstance(tensor, torch.Tensor):
            return tensor.clone()  # what keras.ops.copy does, without its conversion
        return keras.ops.copy(tensor)

    def take(self, tensor, index):
        torch = _torch_rng()
        if torch is not None and isinstance(tensor, torch.Tensor):
            # indexing a torch tensor with a NumPy array is 5 to 50 times slower
            return tensor.index_select(0, torch.from_numpy(index).to(tensor.device))
        return keras.ops.take(tensor, index, axis=0)

    def reportable(self, output):
        return keras.ops.is_tensor(output) and len(output.shape) > 0

    def model_description(self):
        return f"model {self.model.name!r}"

    def message(self, error):
        return _ANSI.sub("", str(error))
