"""Adapter of Keras 3 models, on Keras' torch backend; the oracle is ``keras.ops``.

A model is a functional ``keras.Model`` whose layers are named by label (channels
last); the residual join is an ``Add`` and the concatenation a ``Concatenate`` layer,
both listed in the reports under their labels. A frozen BatchNormalization has
``trainable=False``. ``KERAS_BACKEND`` is set to ``torch`` unless already set, before
Keras is imported, as the other Keras tests do.
"""

import os
from contextlib import contextmanager

import numpy as np

from . import EPS, MOMENTUM, Framework, Unavailable

_RUNNING = ("moving_mean", "moving_variance")


class Keras(Framework):
    name = "keras"
    install = 'pip install ".[keras,torch]"'
    modules = ("keras",)
    unbiased = False          # the moving variance averages biased batch variances
    counts_batches = False    # no num_batches_tracked

    def load(self):
        os.environ.setdefault("KERAS_BACKEND", "torch")
        import keras

        if keras.backend.backend() != "torch":
            raise Unavailable(f"keras was imported with the {keras.backend.backend()!r} "
                              f"backend; run with KERAS_BACKEND=torch")
        self.keras = keras

    # ------------------------------------------------------------------ building
    def build(self, spec, w):
        keras = self.keras
        L = keras.layers
        layers = {}

        def layer(op):
            if op.label not in layers:
                if op.kind == "dense":
                    made = L.Dense(w[op.label]["weight"].shape[0], name=op.label)
                elif op.kind == "conv":
                    made = L.Conv1D(w[op.label]["weight"].shape[0], 3, padding="same",
                                    name=op.label)
                elif op.kind == "bn":
                    made = L.BatchNormalization(momentum=1 - MOMENTUM, epsilon=EPS,
                                                trainable=not op.frozen, name=op.label)
                elif op.kind == "dropout":
                    made = L.Dropout(op.rate, name=op.label)
                else:
                    made = {"relu": L.ReLU, "gap": L.GlobalAveragePooling1D}[op.kind](
                        name=op.label)
                layers[op.label] = made
            return layers[op.label]

        def run(ops, h):
            for op in ops:
                if op.kind == "residual":
                    h = L.Add(name=op.label)([h, run(op.body, h)])
                elif op.kind == "concat":
                    h = L.Concatenate(name=op.label)([run(op.body, h), h])
                else:
                    h = layer(op)(h)
            return h

        shape = spec.input_shape[1:] + spec.input_shape[:1]  # channels last
        inputs = keras.Input(shape)
        model = keras.Model(inputs, run(spec.ops, inputs), name=spec.name)
        for label, made in layers.items():
            a = w.get(label, {})
            if "weight" in a:
                kernel = a["weight"].T if a["weight"].ndim == 2 else a["weight"].transpose(2, 1, 0)
                made.set_weights([kernel, a["bias"]])
            elif "gamma" in a:
                made.set_weights([a["gamma"], a["beta"], a["mean"], a["var"]])
        joins = {op.label for op in spec.walk() if op.kind in ("residual", "concat")}
        return model, {label: label for label in [*layers, *joins]}

    def layout(self, x):
        return np.ascontiguousarray(np.moveaxis(x, 1, -1))

    # ------------------------------------------------------------------ oracle
    def tensor(self, x):
        return self.keras.ops.convert_to_tensor(x)

    def numpy(self, t):
        return np.moveaxis(self.keras.ops.convert_to_numpy(t).astype(np.float64), -1, 1)

    def apply(self, model, name, t):
        return model.get_layer(name)(t)

    def batchnorm(self, t, gamma, beta, eps, mean=None, var=None):
        ops = self.keras.ops
        if mean is None:
            axes = tuple(range(len(t.shape) - 1))
            mean, var = ops.mean(t, axis=axes), ops.var(t, axis=axes)
        else:
            mean, var = (ops.convert_to_tensor(np.asarray(s, np.float32)) for s in (mean, var))
        gamma, beta = ops.convert_to_tensor(gamma), ops.convert_to_tensor(beta)
        return (t - mean) / ops.sqrt(var + eps) * gamma + beta

    def add(self, a, b):
        return a + b

    def concat(self, a, b):
        return self.keras.ops.concatenate([a, b], axis=-1)

    # ------------------------------------------------------------------ state
    def running_stats(self, model, name):
        m = model.get_layer(name)
        return (self.keras.ops.convert_to_numpy(m.moving_mean).astype(np.float64),
                self.keras.ops.convert_to_numpy(m.moving_variance).astype(np.float64), None)

    def fingerprint(self, model):
        import torch

        found = {}
        for v in model.variables:
            value = self.keras.ops.convert_to_numpy(v)
            prefix = "running:" if v.path.endswith(_RUNNING) else ""
            found[prefix + v.path] = (value.dtype.str, value.shape, value.tobytes())
        for layer in model._flatten_layers(include_self=True, recursive=True):
            found[f"layer:{layer.name}"] = (layer.trainable, vars(layer).get("call"))
        found["torch rng"] = torch.get_rng_state().numpy().tobytes()
        return found

    @contextmanager
    def after_each_call(self, model, name, callback):
        layer = model.get_layer(name)
        own, call = vars(layer).get("call"), layer.call

        def wrapped(*args, **kwargs):
            out = call(*args, **kwargs)
            callback()
            return out

        layer.call = wrapped
        try:
            yield
        finally:
            if own is None:
                del layer.call
            else:
                layer.call = own


FRAMEWORK = Keras()
