"""Optimisers: SGD (with momentum, Nesterov, weight decay) and Adam.

Both follow PyTorch's update rules exactly, so a varshift model and a PyTorch model
with the same weights take the same steps. An optimiser holds the model, not arrays:
each :meth:`Optimizer.step` walks ``model.named_parameters()`` and keeps its state by
parameter key, so ``model.astype`` or ``model.load_state_dict`` do not break it.
"""

from __future__ import annotations

import numpy as np

from . import _validate, kernels
from .kernels import threads

__all__ = ["Optimizer", "SGD", "Adam"]


class Optimizer:
    """Base class: parameter walk, ``zero_grad`` and per-parameter state.

    Parameters
    ----------
    model : varshift.nn.Layer
    lr : float > 0
        Learning rate.
    weight_decay : float >= 0, default 0
        L2 penalty: ``weight_decay * param`` is added to every gradient.
    """

    def __init__(self, model, lr, weight_decay=0.0):
        name = type(self).__name__
        self.model = _validate.model(model, name)
        self.lr = _validate.real(lr, "lr", name, 0, low_open=True)
        self.weight_decay = _validate.real(weight_decay, "weight_decay", name, 0)
        self.state: dict[str, dict] = {}

    def zero_grad(self) -> None:
        """Set every gradient of the model to zero."""
        self.model.zero_grad()

    @threads.batched
    def step(self) -> None:
        """Update every parameter that has a gradient, in place."""
        for key, param, grad in self.model.named_parameters():
            if grad is not None:
                self._update(param, np.ascontiguousarray(grad), self.state.setdefault(key, {}))

    def _update(self, param, grad, state):  # pragma: no cover - abstract
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent, PyTorch's rule.

    Parameters
    ----------
    model : varshift.nn.Layer
    lr : float
    momentum : float >= 0, default 0
    dampening : float, default 0
    nesterov : bool, default False
    weight_decay : float, default 0

    Notes
    -----
    ``g = grad + wd p``; with momentum, ``b = g`` on the first step, then
    ``b = momentum b + (1 - dampening) g``, and ``g = g + momentum b`` (Nesterov) or
    ``g = b``; finally ``p -= lr g``.
    """

    def __init__(self, model, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(model, lr, weight_decay)
        self.momentum = _validate.real(momentum, "momentum", "SGD", 0)
        self.dampening = _validate.real(dampening, "dampening", "SGD")
        self.nesterov = _validate.flag(nesterov, "nesterov", "SGD")
        if self.nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError("SGD: nesterov needs momentum > 0 and dampening 0")

    def _update(self, param, grad, state):
        if self.weight_decay:
            grad = grad + self.weight_decay * param
        if self.momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = grad.copy()
            else:
                buf *= self.momentum
                buf += (1 - self.dampening) * grad
            grad = grad + self.momentum * buf if self.nesterov else buf
        param -= self.lr * grad


class Adam(Optimizer):
    """Adam (Kingma & Ba), PyTorch's rule with L2 weight decay.

    Parameters
    ----------
    model : varshift.nn.Layer
    lr : float, default 1e-3
    betas : tuple of float, default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 0

    Notes
    -----
    See :func:`varshift.kernels.optim.adam_numpy` for the update; it runs fused in
    one Numba pass per parameter.
    """

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(model, lr, weight_decay)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"Adam: betas must be a pair of floats in [0, 1), got "
                            f"{_validate.shown(betas)}")
        self.betas = tuple(_validate.fraction(b, f"betas[{i}]", "Adam") for i, b in enumerate(betas))
        self.eps = _validate.real(eps, "eps", "Adam", 0, low_open=True)

    def _update(self, param, grad, state):
        if "exp_avg" not in state or state["exp_avg"].dtype != param.dtype:
            state.update(step=0, exp_avg=np.zeros_like(param), exp_avg_sq=np.zeros_like(param))
        state["step"] += 1
        kernels.adam_step(param.reshape(-1), grad.reshape(-1), state["exp_avg"].reshape(-1),
                          state["exp_avg_sq"].reshape(-1), self.lr, *self.betas, self.eps,
                          state["step"], self.weight_decay)
