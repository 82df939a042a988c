"""Adapter of ``torch.nn.Module`` models; the oracle is ``torch.nn.functional``.

A model is one module holding its layers by label (``named_modules()`` names are the
labels) whose ``forward`` follows the model's tree. It is in train mode, as after
training; a frozen BatchNorm is in eval mode with ``requires_grad=False`` parameters.
"""

import functools
from contextlib import contextmanager

import numpy as np

from . import EPS, MOMENTUM, Framework

_RUNNING = ("running_mean", "running_var", "num_batches_tracked")


class Torch(Framework):
    name = "torch"
    install = 'pip install ".[torch]"'
    modules = ("torch",)

    def load(self):
        import torch

        self.torch = torch

    # ------------------------------------------------------------------ building
    def build(self, spec, w):
        torch, nn = self.torch, self.torch.nn
        layers = {}
        for op in spec.walk():
            if op.label in layers or op.kind in ("residual", "concat"):
                continue
            if op.kind == "dense":
                layer = nn.Linear(*w[op.label]["weight"].shape[::-1])
            elif op.kind == "conv":
                out, inp, k = w[op.label]["weight"].shape
                layer = nn.Conv1d(inp, out, k, padding=1)
            elif op.kind == "bn":
                layer = nn.BatchNorm1d(len(w[op.label]["gamma"]), eps=EPS, momentum=MOMENTUM)
            elif op.kind == "dropout":
                layer = nn.Dropout(op.rate)
            else:
                layer = {"relu": nn.ReLU, "gap": lambda: nn.AdaptiveAvgPool1d(1)}[op.kind]()
            layers[op.label] = layer
        model = _Net(spec.ops, layers)
        with torch.no_grad():
            for label, layer in layers.items():
                a = {k: torch.from_numpy(v) for k, v in w.get(label, {}).items()}
                if "weight" in a:
                    layer.weight.copy_(a["weight"])
                    layer.bias.copy_(a["bias"])
                elif "gamma" in a:
                    layer.weight.copy_(a["gamma"])
                    layer.bias.copy_(a["beta"])
                    layer.running_mean.copy_(a["mean"])
                    layer.running_var.copy_(a["var"])
                    layer.num_batches_tracked.fill_(40)
        model.train()
        for label in spec.frozen:
            layers[label].eval()
            layers[label].requires_grad_(False)
        return model, {label: label for label in layers}

    def layout(self, x):
        return x

    # ------------------------------------------------------------------ oracle
    def tensor(self, x):
        return self.torch.from_numpy(np.ascontiguousarray(x))

    def numpy(self, t):
        return t.detach().to(self.torch.float64).numpy()

    def apply(self, model, name, t):
        F = self.torch.nn.functional
        module = model.get_submodule(name)
        with self.torch.no_grad():
            if isinstance(module, self.torch.nn.Linear):
                return F.linear(t, module.weight, module.bias)
            if isinstance(module, self.torch.nn.Conv1d):
                return F.conv1d(t, module.weight, module.bias, padding=1)
            if isinstance(module, self.torch.nn.ReLU):
                return F.relu(t)
            return t.mean(dim=2)

    def batchnorm(self, t, gamma, beta, eps, mean=None, var=None):
        torch = self.torch
        stats = [None if s is None else torch.from_numpy(np.asarray(s, np.float32))
                 for s in (mean, var)]
        return torch.nn.functional.batch_norm(
            t, *stats, torch.from_numpy(gamma), torch.from_numpy(beta), training=mean is None,
            eps=eps)

    def add(self, a, b):
        return a + b

    def concat(self, a, b):
        return self.torch.cat([a, b], dim=1)

    # ------------------------------------------------------------------ state
    def running_stats(self, model, name):
        m = model.get_submodule(name)
        return (m.running_mean.double().numpy(), m.running_var.double().numpy(),
                int(m.num_batches_tracked))

    def fingerprint(self, model):
        torch = self.torch
        found = {}
        for key, t in model.state_dict(keep_vars=True).items():
            prefix = "running:" if key.endswith(_RUNNING) else ""
            data = t.detach()
            found[prefix + key] = (str(t.dtype), tuple(t.shape), data.numpy().tobytes())
            if not prefix:  # recalibrate leaves the new statistics in new tensors
                found[f"id:{key}"] = id(t)
        for name, m in model.named_modules():
            found[f"module:{name}"] = (
                m.training, [(k, p.requires_grad, None if p.grad is None else
                              p.grad.numpy().tobytes()) for k, p in m._parameters.items()],
                list(m._forward_hooks.items()), list(m._forward_pre_hooks.items()),
                list(m._backward_hooks.items()), sorted(vars(m)))
        found["rng"] = torch.get_rng_state().numpy().tobytes()
        return found

    @contextmanager
    def after_each_call(self, model, name, callback):
        handle = model.get_submodule(name).register_forward_hook(lambda m, i, o: callback())
        try:
            yield
        finally:
            handle.remove()


@functools.cache
def _net_class():
    import torch

    class Net(torch.nn.Module):
        """The model: its layers by label, run along ``ops``."""

        def __init__(self, ops, layers):
            super().__init__()
            self.ops = ops
            for label, layer in layers.items():
                self.add_module(label, layer)

        def forward(self, x):
            return self._run(self.ops, x)

        def _run(self, ops, x):
            for op in ops:
                if op.kind == "residual":
                    x = x + self._run(op.body, x)
                elif op.kind == "concat":
                    x = torch.cat([self._run(op.body, x), x], dim=1)
                else:
                    x = self._modules[op.label](x)
                    if op.kind == "gap":
                        x = x.flatten(1)
            return x

    return Net


def _Net(ops, layers):
    return _net_class()(ops, layers)


FRAMEWORK = Torch()
