"""Small torch models, their training, and their complete state (test helpers)."""

import torch
import torch.nn.functional as F
from torch import nn


def trained_torch(model, x, steps=30, batch=64, lr=0.05, seed=0, keep_modes=False):
    """A few SGD steps on a made-up target, in train mode (running statistics move)
    unless ``keep_modes`` (the modules' modes as they are)."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    if not keep_modes:
        model.train()
    for step in range(steps):
        start = (step * batch) % max(len(x) - batch, 1)
        out = model(x[start:start + batch])
        target = torch.randn(out.shape, generator=generator)
        loss = ((out - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def mlp(dropout=0.5, features=20, hidden=64):
    """The issue's network: Linear-ReLU-Dropout-Linear-BatchNorm1d (and a head)."""
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, 2))


class FunctionalDropout(nn.Module):
    """A user block that calls ``F.dropout`` itself, following its training flag (or,
    with ``hard_coded``, always active)."""

    def __init__(self, features, p=0.5, hard_coded=False):
        super().__init__()
        self.fc = nn.Linear(features, features)
        self.p, self.hard_coded = p, hard_coded

    def forward(self, x):
        training = True if self.hard_coded else self.training
        return self.fc(F.dropout(torch.relu(x), self.p, training))


def state(model):
    """Everything of a module tree that varshift must leave as it was."""
    modules = list(model.modules())
    return {
        "tensors": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "identity": {k: id(t) for k, t in model.state_dict(keep_vars=True).items()},
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "training": [m.training for m in modules],
        "attributes": [(getattr(m, "track_running_stats", None), getattr(m, "momentum", None))
                       for m in modules],
        "hooks": [(list(m._forward_hooks), list(m._forward_pre_hooks), list(m._backward_hooks))
                  for m in modules],
        "rng": torch.get_rng_state(),
    }


def assert_same_state(model, before, except_running_stats=False):
    after = state(model)
    skip = ("running_mean", "running_var", "num_batches_tracked") if except_running_stats else ()
    assert after["tensors"].keys() == before["tensors"].keys()
    for key, value in before["tensors"].items():
        if key.endswith(skip):
            continue
        now = after["tensors"][key]
        assert value.dtype == now.dtype and torch.equal(
            value.view(torch.uint8) if value.dim() else value, now.view(torch.uint8)
            if now.dim() else now), key
    # recalibrate's new statistics come in new tensors (a graph built before keeps the old)
    assert {k: v for k, v in after["identity"].items() if not k.endswith(skip)} == \
        {k: v for k, v in before["identity"].items() if not k.endswith(skip)}
    for name in ("requires_grad", "training", "attributes", "hooks"):
        assert after[name] == before[name], name
    assert len(after["grads"]) == len(before["grads"]) and all(
        (a is None and b is None) or torch.equal(a, b)
        for a, b in zip(after["grads"], before["grads"]))
    assert torch.equal(after["rng"], before["rng"])
