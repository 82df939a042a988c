"""The backend of any Flax NNX module (imported only when one is passed).

Names and order
    Modules are named by their paths joined by dots (``'bn1'``, ``'layers.0'``; ``''``
    for the model; a shared module by its first path) and listed in the order of their
    first call, as for torch (one entry per call: ``'act'``, ``'act#2'``).
    ``nnx.Sequential`` and modules whose output is not one array are not reported.
    Statistics are per channel along the last axis, a BatchNorm's along its ``axis``.

Modes
    NNX's mode attributes, set per module (``model.train()`` sets them for all):
    ``use_running_average`` (BatchNorm) and ``deterministic`` (Dropout, and any module
    that has one, e.g. a user's noise drawn from ``nnx.Rngs``). A mode passed as a call
    argument (``self.bn(x, use_running_average=False)``) is the model's own, as in Flax,
    where the argument beats the attribute: varshift does not switch it. A BatchNorm with
    ``use_running_average=True`` while another module is in train mode is *frozen*: the
    train-mode passes keep it in inference mode, as training did. ``axis_name`` (batch
    statistics across devices) is ignored. Momentum here is the weight of the new batch
    (``1 -`` Flax's), ``num_batches_tracked`` is None (Flax keeps no counter), and
    :func:`~varshift.recalibrate` writes the population variance (Flax's running
    variance averages biased batch variances).

What cannot be controlled
    Noise from keys that are not the model's (an ``nnx.Rngs`` passed as an argument or
    held outside the model, a fixed ``jax.random`` key, NumPy), or in a module without
    a ``deterministic`` attribute: it is detected as for torch. The model is called
    eagerly on one array; a module called inside a JAX transformation (``nnx.jit``,
    ``nnx.vmap``, ``nnx.scan``, ... in a ``__call__``) is refused, as are Linen modules.

State
    :meth:`FlaxAdapter.save` keeps every Variable (parameters, batch statistics, each
    ``nnx.Rngs`` stream's key and count, the user's own) and every graph node's
    attributes (modes, counters, attributes a call adds); restoring puts back the
    original objects (JAX arrays are immutable; NumPy arrays and array refs get their
    contents back). While intercepting, each called module's class is a subclass that
    reports its calls, put back afterwards. Noise is reseeded per batch: every stream's
    key from the seed and the batch's position, its count 0.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import _validate
from .._data import Batches
from .adapter import Adapter, BatchNormInfo, LayerInfo
from .modes import Kind

__all__ = ["FlaxAdapter", "FlaxBatches"]

#: The attributes that hold an NNX module's mode (True: inference mode).
_MODES = ("deterministic", "use_running_average")
_KINDS = ((nnx.BatchNorm, Kind.BATCHNORM), (nnx.Dropout, Kind.DROPOUT),
          ((nnx.Conv, nnx.ConvTranspose), Kind.CONV),
          ((nnx.Linear, nnx.LinearGeneral, nnx.Einsum), Kind.DENSE))
#: Attributes shown in a module's description, when present.
_SHOWN = ("in_features", "out_features", "kernel_size", "strides", "rate", "num_features",
          "momentum", "epsilon", "axis")
_SUBCLASSES = {}  # module class -> its subclass whose __call__ reports to an adapter
_ACTIVE = {}      # id(module) -> (adapter, name) while intercepted


def _reporting(cls):
    """The subclass of module class ``cls`` whose ``__call__`` reports to the adapter
    intercepting the instance (made once per class: JAX and NNX register it)."""
    if cls not in _SUBCLASSES:
        def __call__(self, *args, **kwargs):
            adapter, name = _ACTIVE.get(id(self), (None, None))
            if adapter is None or (args and isinstance(args[0], jax.core.Tracer)):
                raise TypeError(f"a {cls.__name__} module was called inside a JAX "
                                f"transformation (nnx.jit, nnx.vmap, nnx.scan, jax.jit, ...) "
                                f"in the model's __call__, which traces or copies it; varshift "
                                f"calls the model eagerly: measure it without the transformation")
            return adapter._called(self, name, cls.__call__, args, kwargs)

        _SUBCLASSES[cls] = type(cls)(cls.__name__, (cls,), {
            "__call__": __call__, "__module__": cls.__module__,
            "__qualname__": cls.__qualname__, "__doc__": cls.__doc__},
            pytree=cls._pytree__is_pytree)
    return _SUBCLASSES[cls]


def _info(name, module, container) -> LayerInfo:
    kind = next((kind for types, kind in _KINDS if isinstance(module, types)),
                Kind.CONTAINER if container else Kind.LAYER)
    own = vars(module)
    shown = ", ".join(f"{key}={own[key]!r}" for key in _SHOWN
                      if isinstance(own.get(key), (int, float, str, tuple)))
    return LayerInfo(name, kind, type(module).__name__ if container else
                     f"{type(module).__name__}({shown})",
                     int(np.ravel(module.axis)[0]) if kind is Kind.BATCHNORM else -1,
                     f"Dropout {module.rate}" if kind is Kind.DROPOUT else None)


class FlaxBatches(Batches):
    """:class:`~varshift._data.Batches` as JAX arrays: accepts what
    :class:`~varshift._data.Batches` does, plus JAX arrays and ``(x, y, ...)`` tuples or
    lists of them; floating batches are cast to ``dtype``."""

    def __init__(self, data, batch_size, owner, name="data", input_key=None, *, dtype):
        self._dtype = dtype
        if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], jax.Array):
            data = data[0]
        super().__init__(np.asarray(data) if isinstance(data, jax.Array) else data,
                         batch_size, owner, name, input_key)

    def _input_of(self, item):
        if isinstance(item, (tuple, list)) and item and self._is_array(item[0]):
            return item[0]
        return super()._input_of(item)

    def _is_array(self, value):
        return isinstance(value, (np.ndarray, jax.Array))

    def _to_model(self, batch):
        return jnp.asarray(batch, self._dtype if self._dtype_kind(batch) == "f" else None)

    @staticmethod
    def _dtype_kind(x):  # bfloat16 is kind 'V' to NumPy
        return "f" if jnp.issubdtype(x.dtype, jnp.floating) else x.dtype.kind


class _Saved:
    """Graph nodes' attributes and Variables' values; :meth:`restore` puts back the
    original objects (and the contents of mutable ones)."""

    def __init__(self, nodes, variables):
        self.attributes = [(node, dict(vars(node))) for node in nodes]
        raws = [(v, v.get_raw_value()) for v in variables]
        self.values = [(v, raw, raw[...] if v.ref else np.array(raw)
                        if isinstance(raw, np.ndarray) else None) for v, raw in raws]

    def restore(self):
        for node, saved in self.attributes:
            now = vars(node)
            if len(now) != len(saved) or any(now.get(k, now) is not v for k, v in saved.items()):
                now.clear()
                now.update(saved)
        for v, raw, copy in self.values:
            if v.get_raw_value() is not raw:
                v.set_raw_value(raw)
            if v.ref:
                raw[...] = copy
            elif copy is not None:
                np.copyto(raw, copy)


class FlaxAdapter(Adapter):
    """:class:`~varshift.backends.adapter.Adapter` of a Flax NNX module (see the module
    docstring); TypeError for a Linen module or another object than an ``nnx.Module``."""

    hidden_noise_possible = True
    noun = "module"

    def __init__(self, model, owner):
        super().__init__(model, owner)
        linen = sys.modules.get("flax.linen")
        if linen is not None and isinstance(model, linen.Module):
            raise TypeError(
                f"{owner}: model is a Flax Linen module ({type(model).__name__}), whose "
                f"variables live outside it; varshift measures Flax NNX modules: build the "
                f"model with flax.nnx layers (nnx.Linear, nnx.BatchNorm, nnx.Dropout, ...). "
                f"nnx.bridge.ToNNX is not enough: it wraps the Linen model as one module, "
                f"whose BatchNorm and Dropout layers varshift cannot see")
        if not isinstance(model, nnx.Module):
            raise TypeError(f"{owner}: a Flax model must be an NNX module (flax.nnx.Module), "
                            f"got {_validate.shown(model)}")
        graph = list(nnx.iter_graph(model))
        modules = [(path, m) for path, m in graph if isinstance(m, nnx.Module)]
        parents = {path[:i] for path, _ in modules for i in range(len(path))}
        self._modules = {".".join(map(str, path)): m for path, m in modules}
        self._layers = {name: _info(name, m, path in parents)
                        for (path, m), name in zip(modules, self._modules)}
        self._bn = {name: m for name, m in self._modules.items()
                    if self._layers[name].kind is Kind.BATCHNORM}
        self._nodes = [node for _, node in graph if isinstance(node, nnx.Pytree)]
        self._variables = [v for _, v in graph if isinstance(v, nnx.Variable)]
        self._streams = [s for _, s in graph if isinstance(s, nnx.RngStream)]
        self.dtype = next((v[...].dtype for v in self._variables if isinstance(v, nnx.Param)
                           and jnp.issubdtype(v[...].dtype, jnp.floating)), jnp.float32)
        self._in_train = [m for m in self._modules.values()
                          if any(getattr(m, attr, None) is False for attr in _MODES)]
        self._interceptor, self._training, self._replay = None, {}, {}

    # ------------------------------------------------------------------ structure
    def layers(self):
        return dict(self._layers)

    def batchnorm(self, name):
        m = self._bn[name]
        compute = jnp.promote_types(m.dtype or self.dtype, jnp.float32)
        return BatchNormInfo(
            name, int(m.num_features), 1.0 - m.momentum, m.epsilon,
            m.scale is not None or m.bias is not None, True,
            frozen=m.use_running_average is True and any(o is not m for o in self._in_train),
            unbiased=False, framework="flax", largest=float(jnp.finfo(compute).max),
            channel_axis=int(np.ravel(m.axis)[0]))

    # ------------------------------------------------------------------ data
    def batches(self, data, batch_size, owner, name="data", input_key=None):
        return FlaxBatches(data, batch_size, owner, name, input_key, dtype=self.dtype)

    # ------------------------------------------------------------------ calling
    @contextmanager
    def intercepting(self, interceptor):
        self._interceptor, swapped = interceptor, []
        try:
            for name, m in self._modules.items():
                if callable(m) and not isinstance(m, nnx.Sequential):
                    reporting = _reporting(type(m))
                    _ACTIVE[id(m)] = (self, name)
                    swapped.append((m, type(m)))
                    m.__class__ = reporting
            yield
        finally:
            for m, cls in swapped:
                m.__class__ = cls
                del _ACTIVE[id(m)]
            self._interceptor = None

    def _called(self, module, name, call, args, kwargs):
        """A call of an intercepted module, in its mode, reported to the interceptor."""
        key = self._interceptor.on_enter(name)
        out = self._replay.get(name)
        if out is None and name in self._bn and args and isinstance(args[0], jax.Array):
            out = self._interceptor.on_batchnorm(key, args[0])
        if out is None:
            out = call(module, *args, **kwargs)
        self._interceptor.on_exit(key, out)
        return out

    def call(self, x, training, replay=None):
        self._training, self._replay = training, replay or {}
        for name, m in self._modules.items():
            for attr in _MODES:
                if hasattr(m, attr) and getattr(m, attr) is not (not training[name]):
                    setattr(m, attr, not training[name])
            if name in self._bn and m.axis_name is not None:
                m.axis_name = m.axis_index_groups = None
        try:
            return self.model(x)
        finally:
            self._replay = {}

    def reseed(self, sequence):
        """Every ``nnx.Rngs`` stream of the model: a key from ``sequence`` (of the
        stream's PRNG implementation and shape), and count 0."""
        for stream, seed in zip(self._streams, sequence.generate_state(len(self._streams))):
            old = stream.key[...]
            key = jax.random.key(int(seed), impl=jax.random.key_impl(old))
            stream.key.set_value(jax.random.split(key, old.shape) if old.shape else key)
            stream.count.set_value(jnp.zeros_like(stream.count[...]))

    # ------------------------------------------------------------------ state
    def save(self):
        return _Saved(self._nodes, self._variables)

    def save_buffers(self):
        """Every node's attributes and every Variable but the random streams' (which
        advance from call to call)."""
        return _Saved(self._nodes, [v for v in self._variables
                                    if not isinstance(v, nnx.RngState)])

    def running_stats(self, name):
        m = self._bn[name]
        return np.asarray(m.mean[...], np.float64), np.asarray(m.var[...], np.float64), None

    def write_running_stats(self, name, mean, var, num_batches_tracked):
        m, dtype = self._bn[name], self._bn[name].var[...].dtype
        stats = _validate.running_stats({"mean": mean, "var": var}, dtype,
                                        f"BatchNorm {name!r}", limit=float(jnp.finfo(dtype).max))
        for key, value in stats.items():
            getattr(m, key).set_value(jnp.asarray(value, dtype))

    # ------------------------------------------------------------------ numbers
    def to_numpy(self, tensor):
        return np.asarray(tensor)

    def tensors(self, output):
        return [t for t in jax.tree.leaves(output) if isinstance(t, (jax.Array, np.ndarray))]

    def reportable(self, output):
        return (isinstance(output, jax.Array) and output.ndim > 0
                and not jnp.issubdtype(output.dtype, jnp.complexfloating)
                and not jnp.issubdtype(output.dtype, jax.dtypes.prng_key))
