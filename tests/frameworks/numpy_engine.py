"""Adapter of varshift's own engine (:mod:`varshift.nn`); the oracle is NumPy."""

from contextlib import contextmanager

import numpy as np

from . import EPS, MOMENTUM, Framework


class NumpyEngine(Framework):
    name = "numpy"
    install = "(part of varshift)"
    #: float32 agreement with the oracle: a frozen BatchNorm whose statistics are far from
    #: the data amplifies the engine's own summation order (2.5e-5 of the scale seen)
    rtol = 5e-5
    unsupported = {
        "bn_called_twice": "varshift.nn has no shared layers: a layer held twice is walked "
                           "(and reported) at each of its paths, and its forward cache "
                           "keeps only the last call, so it cannot be trained either",
    }

    def load(self):
        from varshift import nn

        self.nn = nn

    # ------------------------------------------------------------------ building
    def build(self, spec, w):
        nn = self.nn
        labelled = {}

        def make(op):
            if op.kind in ("residual", "concat"):
                body = nn.Sequential(*[make(o) for o in op.body])
                layer = nn.Residual(body) if op.kind == "residual" else nn.Concat(
                    body, nn.Identity())
            elif op.kind == "dense":
                out, inp = w[op.label]["weight"].shape
                layer = nn.Dense(inp, out)
            elif op.kind == "conv":
                out, inp, k = w[op.label]["weight"].shape
                layer = nn.Conv1D(inp, out, k, padding=1)
            elif op.kind == "bn":
                layer = nn.BatchNorm(len(w[op.label]["gamma"]), eps=EPS, momentum=MOMENTUM)
            elif op.kind == "dropout":
                layer = nn.Dropout(op.rate)
            else:
                layer = {"relu": nn.ReLU, "gap": nn.GlobalAvgPool}[op.kind]()
            labelled[op.label] = layer
            return layer

        model = nn.Sequential(*[make(op) for op in spec.ops], seed=0)
        for label, layer in labelled.items():
            a = w.get(label, {})
            if "weight" in a:
                layer.params["weight"][...] = a["weight"]
                layer.params["bias"][...] = a["bias"]
            elif "gamma" in a:
                layer.params["weight"][...] = a["gamma"]
                layer.params["bias"][...] = a["beta"]
                layer.set_running_stats(a["mean"], a["var"], 40)
        model.train()  # as after training; a frozen BatchNorm stays in inference mode
        for op in spec.walk():
            if op.kind == "bn" and op.frozen:
                labelled[op.label].training = False
        paths = {id(layer): path for path, layer in model.walk()}
        return model, {label: paths[id(layer)] for label, layer in labelled.items()}

    def layout(self, x):
        return x

    # ------------------------------------------------------------------ oracle
    def tensor(self, x):
        return np.asarray(x, np.float32)

    def numpy(self, t):
        return t.astype(np.float64)

    def apply(self, model, name, t):
        layer = dict(model.walk())[name]
        kind = type(layer).__name__
        if kind == "ReLU":
            return np.maximum(t, 0)
        if kind == "GlobalAvgPool":
            return t.mean(axis=2, dtype=np.float64).astype(np.float32)
        weight, bias = layer.params["weight"], layer.params["bias"]
        if kind == "Dense":
            return (t @ weight.T + bias).astype(np.float32)
        padded = np.pad(t, ((0, 0), (0, 0), (1, 1)))  # Conv1D, kernel 3, padding 1
        windows = np.stack([padded[:, :, k:k + t.shape[2]] for k in range(3)], axis=-1)
        return (np.einsum("nilk,oik->nol", windows, weight) + bias[:, None]).astype(np.float32)

    def batchnorm(self, t, gamma, beta, eps, mean=None, var=None):
        axes = (0,) + tuple(range(2, t.ndim))
        if mean is None:
            mean, var = t.mean(axes, dtype=np.float64), t.var(axes, dtype=np.float64)
        shape = (1, -1) + (1,) * (t.ndim - 2)
        scale = (np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps))
        out = (t - np.reshape(mean, shape)) * np.reshape(scale, shape) + np.reshape(beta, shape)
        return out.astype(np.float32)

    def add(self, a, b):
        return a + b

    def concat(self, a, b):
        return np.concatenate([a, b], axis=1)

    # ------------------------------------------------------------------ state
    def running_stats(self, model, name):
        buffers = dict(model.walk())[name].buffers
        return (buffers["running_mean"].astype(np.float64),
                buffers["running_var"].astype(np.float64),
                int(buffers["num_batches_tracked"]))

    def fingerprint(self, model):
        found = {}
        for key, value in model.state_dict().items():
            running = key.endswith(("running_mean", "running_var", "num_batches_tracked"))
            found[("running:" if running else "") + key] = (value.dtype.str, value.shape,
                                                           value.tobytes())
        found["rng"] = model.rng_state()
        for path, layer in model.walk():
            found[f"layer:{path}"] = (type(layer).__name__, layer.training, id(layer._cache),
                                      layer._out_shape, layer.dtype.str,
                                      [id(hook) for hook in layer._hooks])
        return found

    @contextmanager
    def after_each_call(self, model, name, callback):
        handle = dict(model.walk())[name].add_hook(lambda layer, x, out: callback())
        try:
            yield
        finally:
            handle.remove()


FRAMEWORK = NumpyEngine()
