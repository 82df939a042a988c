"""Adapter of Flax NNX models; the oracle is ``jax.numpy``.

A model is one ``nnx.Module`` holding its layers as attributes named by label (the
names in varshift's reports), whose ``__call__`` follows the model's tree (channels
last). Flax's ReLU, global pooling and joins are functions, not modules; here they are
tiny modules of their own (``Relu``, ``GlobalAveragePool``, ``Add``, ``Concatenate``), so
that the reports list them under their labels as for the other frameworks. The model
is in train mode, as after training (``model.train()``); a frozen BatchNorm has
``use_running_average=True``. Modes are attributes only: none is passed as a call
argument (varshift does not switch those).
"""

from contextlib import contextmanager

import numpy as np

from . import EPS, MOMENTUM, Framework

_WRAPPED = {}    # module class -> its subclass that calls back after each call
_CALLBACKS = {}  # id(module) -> callback, while after_each_call is active
_MODES = ("deterministic", "use_running_average")


class FlaxNNX(Framework):
    name = "flax"
    install = 'pip install ".[flax]"'
    modules = ("jax", "flax")
    unbiased = False          # the running variance averages biased batch variances
    #: ReLU and pooling are functions in Flax: wrapped in modules, they are plain layers
    kinds = {**Framework.kinds, "relu": "layer", "gap": "layer"}
    counts_batches = False    # no num_batches_tracked

    def load(self):
        import jax
        import jax.numpy as jnp
        from flax import nnx

        self.jax, self.jnp, self.nnx = jax, jnp, nnx
        self.classes = _classes(nnx, jnp)

    # ------------------------------------------------------------------ building
    def build(self, spec, w):
        nnx, jnp = self.nnx, self.jnp
        rngs = nnx.Rngs(0)
        layers = {}
        for op in spec.walk():
            if op.label in layers or op.kind in ("residual", "concat"):
                continue  # (the joins are the model's own: see Net)
            a = w.get(op.label, {})
            if op.kind == "dense":
                out, inp = a["weight"].shape
                layer = nnx.Linear(inp, out, rngs=rngs)
                layer.kernel.set_value(jnp.asarray(a["weight"].T))
            elif op.kind == "conv":
                out, inp, k = a["weight"].shape
                layer = nnx.Conv(inp, out, kernel_size=k, padding="SAME", rngs=rngs)
                layer.kernel.set_value(jnp.asarray(a["weight"].transpose(2, 1, 0)))
            elif op.kind == "bn":
                layer = nnx.BatchNorm(len(a["gamma"]), momentum=1 - MOMENTUM, epsilon=EPS,
                                      rngs=rngs)
                for attr, key in (("scale", "gamma"), ("bias", "beta"), ("mean", "mean"),
                                  ("var", "var")):
                    getattr(layer, attr).set_value(jnp.asarray(a[key]))
            elif op.kind == "dropout":
                layer = nnx.Dropout(op.rate, rngs=rngs)
            else:
                layer = self.classes[op.kind]()
            if op.kind in ("dense", "conv"):
                layer.bias.set_value(jnp.asarray(a["bias"]))
            layers[op.label] = layer
        model = self.classes["net"](spec.ops, layers)
        model.train()
        for label in spec.frozen:
            layers[label].use_running_average = True
        joins = [op.label for op in spec.walk() if op.kind in ("residual", "concat")]
        return model, {label: label for label in [*layers, *joins]}

    def layout(self, x):
        return np.ascontiguousarray(np.moveaxis(x, 1, -1))

    # ------------------------------------------------------------------ oracle
    def tensor(self, x):
        return self.jnp.asarray(x)

    def numpy(self, t):
        return np.moveaxis(np.asarray(t).astype(np.float64), -1, 1)

    def apply(self, model, name, t):
        return getattr(model, name)(t)  # Dense, Conv, Relu, pooling: no mode

    def batchnorm(self, t, gamma, beta, eps, mean=None, var=None):
        jnp = self.jnp
        if mean is None:
            axes = tuple(range(t.ndim - 1))
            mean, var = jnp.mean(t, axis=axes), jnp.var(t, axis=axes)
        else:
            mean, var = (jnp.asarray(np.asarray(s, np.float32)) for s in (mean, var))
        return (t - mean) / jnp.sqrt(var + eps) * jnp.asarray(gamma) + jnp.asarray(beta)

    def add(self, a, b):
        return a + b

    def concat(self, a, b):
        return self.jnp.concatenate([a, b], axis=-1)

    # ------------------------------------------------------------------ state
    def running_stats(self, model, name):
        m = getattr(model, name)
        return (np.asarray(m.mean[...], np.float64), np.asarray(m.var[...], np.float64), None)

    def fingerprint(self, model):
        jax, nnx = self.jax, self.nnx
        found = {}
        for path, node in nnx.iter_graph(model):
            key = ".".join(map(str, path))
            if isinstance(node, nnx.Variable):
                value = node.get_raw_value()
                if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
                    value = jax.random.key_data(value)
                value = np.asarray(value)
                prefix = "running:" if isinstance(node, nnx.BatchStat) else ""
                found[f"{prefix}{type(node).__name__}:{key}"] = (
                    value.dtype.str, value.shape, value.tobytes())
            elif isinstance(node, nnx.Module):
                found[f"module:{key}"] = (type(node), sorted(vars(node)),
                                          [(a, getattr(node, a)) for a in _MODES
                                           if hasattr(node, a)])
        return found

    @contextmanager
    def after_each_call(self, model, name, callback):
        module = getattr(model, name)
        cls = type(module)
        module.__class__ = _calling_back(cls)
        _CALLBACKS[id(module)] = callback
        try:
            yield
        finally:
            del _CALLBACKS[id(module)]
            module.__class__ = cls


def _calling_back(cls):
    """The subclass of module class ``cls`` whose ``__call__`` runs the instance's
    callback after the original (made once per class, as varshift's own subclasses:
    NNX registers each class as a pytree)."""
    if cls not in _WRAPPED:
        def __call__(self, *args, **kwargs):
            out = cls.__call__(self, *args, **kwargs)
            callback = _CALLBACKS.get(id(self))
            if callback is not None:
                callback()
            return out

        _WRAPPED[cls] = type(cls)(cls.__name__, (cls,), {
            "__call__": __call__, "__module__": cls.__module__,
            "__qualname__": cls.__qualname__}, pytree=cls._pytree__is_pytree)
    return _WRAPPED[cls]


_CLASSES = {}


def _classes(nnx, jnp):
    """The model's module classes (defined once: NNX registers each class)."""
    if _CLASSES:
        return _CLASSES

    class Relu(nnx.Module):
        def __call__(self, x):
            return jnp.maximum(x, 0)

    class GlobalAveragePool(nnx.Module):
        def __call__(self, x):
            return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))

    class Add(nnx.Module):
        def __call__(self, a, b):
            return a + b

    class Concatenate(nnx.Module):
        def __call__(self, a, b):
            return jnp.concatenate([a, b], axis=-1)

    class Net(nnx.Module):
        """The model: its layers by label, run along ``ops``."""

        def __init__(self, ops, layers):
            self.ops = nnx.static(ops) if hasattr(nnx, "static") else ops
            for label, layer in layers.items():
                setattr(self, label, layer)
            for op in _walk(ops):
                if op.kind in ("residual", "concat"):
                    setattr(self, op.label, (Add if op.kind == "residual" else Concatenate)())

        def __call__(self, x):
            return self._run(self.ops, x)

        def _run(self, ops, x):
            for op in ops:
                if op.kind in ("residual", "concat"):
                    x = getattr(self, op.label)(*(
                        (x, self._run(op.body, x)) if op.kind == "residual"
                        else (self._run(op.body, x), x)))
                else:
                    x = getattr(self, op.label)(x)
            return x

    _CLASSES.update(relu=Relu, gap=GlobalAveragePool, net=Net)
    return _CLASSES


def _walk(ops):
    for op in ops:
        yield op
        yield from _walk(op.body)


FRAMEWORK = FlaxNNX()
