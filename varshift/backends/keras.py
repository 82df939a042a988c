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
    Keras has no per-layer mode flag: the model is called with ``training`` set to the
    pass's mode of "other" layers (custom layers and nested models read it), and while
    varshift measures, the ``call`` of every BatchNormalization and dropout-like layer
    (Dropout, SpatialDropout1D/2D/3D, GaussianDropout, GaussianNoise, AlphaDropout) is
    wrapped to receive its own ``training`` value. A BatchNormalization with
    ``trainable=False`` runs in inference mode even with ``training=True`` in Keras 3:
    it is *frozen* and stays in inference mode in the train-mode passes, as in training.
    Keras' conventions are converted: ``momentum`` in the reports is the weight of the
    new batch (``1 - `` Keras' momentum), ``num_batches_tracked`` is None (Keras keeps
    no counter), and :func:`~varshift.recalibrate` writes the population variance
    (Keras' moving variance averages biased batch variances).

What cannot be controlled
    Noise inside a custom layer that does not follow ``training``; it is detected as
    for torch (``measure`` warns, ``diagnose`` reports ``EVAL_NOT_DETERMINISTIC``). Noise
    in a custom layer that follows ``training`` follows the "other" mode, but only
    dropout-like layers are found upstream of a BatchNormalization. A layer whose
    ``call`` is not used (a quantized Dense, rematerialisation) is not observed. The
    model takes one input tensor. Batch Renormalization (``renorm=True``) is not
    recalibrated (its extra moving statistics would disagree).

State
    :meth:`KerasBackend.preserved` keeps a copy of every variable of the model
    (weights, moving statistics, seed-generator states) and every layer's
    ``trainable`` flag, and puts back whatever differs afterwards, also after an
    exception; the wrapped ``call`` methods are removed, and on Keras' torch backend the
    torch random state (used by Keras' unseeded torch dropout) is restored. Train-mode
    passes never move the moving statistics (they are put back after each pass), and
    on the torch backend they run under ``torch.no_grad()``. Dropout masks come from the
    layers' seed generators (and torch's generator), reseeded from ``seed`` per batch.
"""

from __future__ import annotations

import re
import sys
from contextlib import nullcontext

import keras
import numpy as np

from .. import _validate
from .._data import Batches
from ..stats import RunningMoments
from . import BatchNormInfo, LayerInfo
from ._calls import EVAL, CallTracking, Stop

__all__ = ["KerasBackend", "KerasBatches"]

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
_GROUP_KINDS = {"convolutional": "conv", "activations": "activation", "pooling": "pool",
                "reshaping": "reshape"}


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


def _kind(layer) -> str:
    """varshift's kind of a Keras layer."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return "batchnorm"
    if isinstance(layer, _NOISE):
        return "dropout"
    if isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense)):
        return "dense"
    if _sublayers(layer):
        return "container"
    parts = type(layer).__module__.split(".")
    if parts[:3] == ["keras", "src", "layers"] and len(parts) > 3:
        return _GROUP_KINDS.get(parts[3], "layer")
    return "layer"


def _describe(layer, kind) -> str:
    """``'Dense(units=8, activation=linear)'``: the class and its main settings."""
    if kind == "container":
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


def _moments(array, axis) -> RunningMoments:
    """Per-channel float64 moments of an array of shape (N, ...), channels on ``axis``."""
    if array.ndim == 1:
        array = array[:, None]
    if array.dtype.kind != "f":
        array = array.astype(np.float64)
    moved = np.moveaxis(array, axis, 1)
    return RunningMoments(moved.shape[1]).update(moved)


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
    buffers : list of Variable
        The variables :meth:`restore` may keep (the moving statistics).
    """

    def __init__(self, model, layers, buffers):
        self.values = [(v, _numpy(v).copy()) for v in model.variables]
        self.trainable = [(layer, layer.trainable) for layer in layers]
        self.buffers = {id(v) for v in buffers}
        torch = _torch_rng()
        self.rng = None if torch is None else torch.get_rng_state()

    def restore(self, buffers=True):
        """Put everything back (the buffers only if ``buffers``)."""
        for layer, trainable in self.trainable:  # parents first: a model's flag is recursive
            if layer.trainable != trainable:
                layer.trainable = trainable
        _put_back([(v, copy) for v, copy in self.values if buffers or id(v) not in self.buffers])
        if self.rng is not None:
            _torch_rng().set_rng_state(self.rng)


def _put_back(values):
    """Assign each ``(variable, copy)`` whose variable differs from its copy (bitwise:
    NaN equals itself)."""
    for variable, copy in values:
        if _numpy(variable).tobytes() != copy.tobytes():
            variable.assign(copy)


class KerasBackend(CallTracking):
    """:class:`~varshift.backends.Backend` of a Keras 3 model or layer (see the module
    docstring for names, channels, modes, what cannot be controlled, and state).

    Parameters
    ----------
    model : keras.Layer
        Usually a ``keras.Model``; built (called once, or made with ``keras.Input``).
    owner : str
        The calling function, for error messages.

    Raises
    ------
    ValueError
        If a layer is not built yet (its first call would create its weights), or for
        ``recalibrate``, if a BatchNormalization uses ``renorm=True``.
    """

    hidden_noise_possible = True

    def __init__(self, model, owner):
        super().__init__(model)
        walked = _walk(model)
        for name, layer in walked:
            if not layer.built:
                raise ValueError(
                    f"{owner}: layer {name or model.name!r} ({type(layer).__name__}) is not "
                    f"built yet; call the model on a batch once (model(x)) or create it "
                    f"with keras.Input, which sets its shapes and weights")
        self._layers = dict(walked)
        self._all = [layer for _, layer in walked]
        self._kinds = {name: _kind(layer) for name, layer in walked}
        self._info = {name: LayerInfo(name, kind, _describe(self._layers[name], kind))
                      for name, kind in self._kinds.items()}
        self._bn = {name: layer for name, layer in walked if self._kinds[name] == "batchnorm"}
        self._channels = {name: int(m.moving_mean.shape[0]) for name, m in self._bn.items()}
        self._noise = {name: f"{type(layer).__name__} "
                             f"{getattr(layer, 'rate', getattr(layer, 'stddev', None))}"
                       for name, layer in walked if self._kinds[name] == "dropout"}
        if owner == "recalibrate":
            for name, layer in self._bn.items():
                if layer.renorm:
                    raise ValueError(f"recalibrate: BatchNormalization {name!r} uses "
                                     f"renorm=True (Batch Renormalization), whose extra moving "
                                     f"statistics varshift does not recalibrate")
        seeds = {id(sg.state): sg.state for layer in self._all
                 for sg in getattr(layer, "_seed_generators", [])}
        self._seed_states = list(seeds.values())
        self._buffers = [v for v in model.non_trainable_variables if id(v) not in seeds]
        self.dtype = model.dtype_policy.compute_dtype
        self._modes = EVAL
        self._probe = None      # noise_upstream's (active noise, inputs, outputs, replay)
        self._unwrapped = []    # (layer, the call its instance had or None), as wrapped

    # ------------------------------------------------------------------ structure
    def batchnorms(self):
        return [BatchNormInfo(name, self._channels[name], 1.0 - m.momentum, m.epsilon,
                              bool(m.center or m.scale), True, frozen=not m.trainable,
                              unbiased=False, keras_momentum=True,
                              largest=float(np.finfo(_float_dtype(m.compute_dtype)).max))
                for name, m in ((name, self._bn[name]) for name in self._bn_order)]

    def noise_upstream(self, x):
        """Follows the data flow by perturbation: with every BatchNormalization
        replaying its inference-mode output, each noise layer alone is switched on; the
        BatchNormalization inputs it changes are downstream of it with no
        BatchNormalization in between."""
        x = x[:64]
        inputs, outputs = {}, {}
        self._probe = (None, inputs, outputs, False)
        try:
            self._forward(x, EVAL)
            called = dict.fromkeys(key.partition("#")[0] for key in self._order)
            upstream = {}
            for noise in (name for name in called if name in self._noise):
                changed = {}
                self._probe = (noise, changed, outputs, True)
                self._reseed()
                self._forward(x, EVAL)
                for key, value in changed.items():
                    if value.tobytes() != inputs[key].tobytes():
                        upstream.setdefault(key.partition("#")[0], set()).add(noise)
        finally:
            self._probe = None
        return {name: sorted(found) for name, found in upstream.items()}

    def noise_description(self, name):
        return self._noise[name]

    # ------------------------------------------------------------------ data
    def batches(self, data, batch_size, owner, name="data", input_key=None):
        return KerasBatches(data, batch_size, owner, name, input_key, dtype=self.dtype)

    # ------------------------------------------------------------------ state
    def _save(self):
        return (_Saved(self.model, self._all, self._buffers),
                [(v, _numpy(v).copy()) for v in self._buffers])

    def _reseed(self):
        """Seed every seed generator (and torch's, on the torch backend)."""
        sequence = self._seeds.spawn(1)[0]
        states = sequence.generate_state(len(self._seed_states) + 1, np.uint32) >> np.uint32(1)
        for state, value in zip(self._seed_states, states):
            state.assign(np.array([value, 0]).astype(keras.backend.standardize_dtype(
                state.dtype)))
        torch = _torch_rng()
        if torch is not None:
            torch.manual_seed(int(states[-1]))

    def running_stats(self, name):
        m = self._bn[name]
        return (_numpy(m.moving_mean).astype(np.float64),
                _numpy(m.moving_variance).astype(np.float64), None)

    def set_running_stats(self, name, mean, var, num_batches_tracked):
        m = self._bn[name]
        dtype = np.dtype(keras.backend.standardize_dtype(m.moving_variance.dtype))
        stats = _validate.running_stats({"moving_mean": mean, "moving_variance": var}, dtype,
                                        f"BatchNormalization {name!r}")
        for key, value in stats.items():
            getattr(m, key).assign(value.astype(dtype))
        written = {id(m.moving_mean), id(m.moving_variance)}
        self._reference = [(v, _numpy(v).copy() if id(v) in written else copy)
                           for v, copy in self._reference]

    # ------------------------------------------------------------------ wrapped calls
    def _intercept(self):
        for name, layer in self._layers.items():
            if not isinstance(layer, _UNREPORTED):
                self._unwrapped.append((layer, vars(layer).get("call")))
                layer.call = self._wrapped(name, layer.call)

    def _release(self):
        """Put back each layer's ``call``: its class's, or the one its instance had."""
        for layer, own in reversed(self._unwrapped):
            if own is None:
                delattr(layer, "call")
            else:
                layer.call = own
        self._unwrapped = []

    def _wrapped(self, name, call):
        """``call`` that observes the layer and, for BatchNormalization and noise
        layers, receives the pass's ``training`` value."""
        kind = self._kinds[name]

        def wrapped(*args, **kwargs):
            key = self._enter(name)
            out = None
            if kind == "batchnorm":
                kwargs["training"] = self._modes.batchnorm and self._layers[name].trainable
                out = self._on_batchnorm(name, key, args[0] if args else kwargs["inputs"])
            elif kind == "dropout":
                kwargs["training"] = (self._modes.dropout if self._probe is None
                                      else self._probe[0] == name)
            if out is None:
                out = call(*args, **kwargs)
                self._on_output(name, key, out)
            self._stack.pop()  # not after an exception: the stack names the failing layer
            return out

        return wrapped

    def _on_batchnorm(self, name, key, x):
        """Note what BatchNorm ``name`` receives; returns the output to replay instead
        of running it (noise_upstream), else None."""
        if self._probe is not None:
            _, inputs, outputs, replay = self._probe
            inputs[key] = _numpy(x).copy()
            return outputs[key] if replay else None
        self._batchnorm_input(name, lambda: _moments(_numpy(x), self._layers[name].axis))
        return None

    def _on_output(self, name, key, out):
        if not keras.ops.is_tensor(out) or len(out.shape) == 0:
            return
        self._order[key] = True
        if self._probe is not None and self._kinds[name] == "batchnorm":
            self._probe[2][key] = out
        if self._sink is not None and self._sink.wants_output(self._passes):
            array = _numpy(out)
            self._sink.output(self._passes, key, _moments(array, _channel_axis(
                self._layers[name])), tuple(array.shape[1:]))

    # ------------------------------------------------------------------ computing
    def _forward(self, x, modes):
        """The model's output for ``x`` in ``modes`` (None if a wrapped call stopped
        it); buffers a train-mode pass changed are put back."""
        self._modes = modes
        self._start_forward()
        try:
            with _no_grad():
                return self.model(x, training=modes.other)
        except Stop:
            return None
        except (ValueError, TypeError, RuntimeError) as err:
            if type(err) not in (ValueError, TypeError, RuntimeError):
                raise
            where = (f"layer {self._stack[-1]!r} ({self._layer_info(self._stack[-1]).description})"
                     if self._stack else f"model {self.model.name!r}")
            raise type(err)(f"{where}: {_ANSI.sub('', str(err))}") from err
        finally:
            self._end_forward(modes)

    def _undo_buffers(self):
        _put_back(self._reference)

    def _arrays(self, output, n):
        return [_numpy(t).astype(np.float64) for t in keras.tree.flatten(output)
                if keras.ops.is_tensor(t) and len(t.shape) and t.shape[0] == n]
