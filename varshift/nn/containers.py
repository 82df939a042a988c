"""Containers: Sequential chains, residual blocks and channel concatenation.

A container is itself a :class:`~varshift.nn.layer.Layer`: state dicts, modes, dtypes
and random streams recurse into its children, whose state keys are prefixed with
their names (``'2.body.0.weight'``), as in PyTorch.
"""

from __future__ import annotations

import numpy as np

from .._validate import seed as check_seed
from ..backends.modes import Kind
from .layer import Layer

__all__ = ["Sequential", "Residual", "Concat"]


class _Container(Layer):
    kind = Kind.CONTAINER

    def _adopt(self, layers, argument):
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(
                    f"{type(self).__name__}: {argument} {i} must be a Layer, "
                    f"got {type(layer).__name__}"
                )
        self._assign_names()

    def _check_backward(self):
        if self._out_shape is None:
            raise RuntimeError(f"{self.describe()}: backward called before forward")


class Sequential(_Container):
    """Layers applied one after the other.

    Parameters
    ----------
    *layers : Layer
    seed : int >= 0, optional
        If given, every parameter and random stream is (re)drawn from it with
        :meth:`~varshift.nn.layer.Layer.initialize`, so the model is reproducible.

    Examples
    --------
    >>> from varshift import nn
    >>> model = nn.Sequential(nn.Dense(4, 8), nn.ReLU(), nn.Dense(8, 2), seed=0)
    >>> model(np.ones((3, 4))).shape
    (3, 2)
    """

    def __init__(self, *layers, seed=None):
        super().__init__()
        self.layers = list(layers)
        self.seed = check_seed(seed, "seed", "Sequential")
        self._adopt(self.layers, "layer")
        if self.seed is not None:
            self.initialize(self.seed)

    def children(self):
        return {str(i): layer for i, layer in enumerate(self.layers)}

    def __getitem__(self, index):
        return self.layers[index]

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        self._out_shape = np.shape(x)
        return x

    def backward(self, dout, input_grad=True):
        self._check_backward()
        for i in range(len(self.layers) - 1, -1, -1):
            dout = self.layers[i].backward(dout, input_grad=input_grad or i > 0)
        return dout

    def __repr__(self):
        lines = [f"  ({i}): " + repr(layer).replace("\n", "\n  ")
                 for i, layer in enumerate(self.layers)]
        return "Sequential(\n" + "\n".join(lines) + "\n)" if lines else "Sequential()"


class Residual(_Container):
    """``body(x) + shortcut(x)``, the shortcut being the identity by default.

    Parameters
    ----------
    body : Layer
    shortcut : Layer, optional
        A projection (e.g. a 1x1 :class:`~varshift.nn.Conv2D`) when ``body`` changes
        the shape.

    Notes
    -----
    Backward: ``dx = body.backward(dout) + shortcut.backward(dout)`` (or ``+ dout``).
    """

    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body = body
        self.shortcut = shortcut
        self._adopt([body] + ([] if shortcut is None else [shortcut]), "branch")

    def children(self):
        named = {"body": self.body}
        if self.shortcut is not None:
            named["shortcut"] = self.shortcut
        return named

    def forward(self, x):
        return self._join(x, [self.body(x)] + ([] if self.shortcut is None else [self.shortcut(x)]))

    def _join(self, x, outputs):
        """``body(x) + shortcut(x)`` from the branch outputs ``[body(x)]`` (identity
        shortcut) or ``[body(x), shortcut(x)]``."""
        out = outputs[0]
        skip = np.asarray(x, dtype=out.dtype) if len(outputs) == 1 else outputs[1]
        if out.shape != skip.shape:
            raise ValueError(
                f"{self.describe()}: body output {out.shape} and shortcut output "
                f"{skip.shape} differ; give a shortcut projection"
            )
        self._out_shape = out.shape
        return out + skip

    def backward(self, dout, input_grad=True):
        self._check_backward()
        skip = dout if self.shortcut is None else self.shortcut.backward(dout, input_grad)
        dx = self.body.backward(dout, input_grad)
        return dx + skip if input_grad else None

    def __repr__(self):
        short = "" if self.shortcut is None else f",\n  shortcut={self.shortcut!r}"
        return f"Residual(\n  body={self.body!r}{short}\n)".replace("\n", "\n  ").replace(
            "\n  )", "\n)")


class Concat(_Container):
    """Branches applied to the same input, outputs concatenated along channels.

    Parameters
    ----------
    *branches : Layer
        Each maps ``(N, C, *S)`` to ``(N, C_i, *S)`` with the same N and S; the output
        is ``(N, sum C_i, *S)``. ``Concat(Identity(), block)`` is a DenseNet layer.

    Notes
    -----
    Backward splits ``dout`` by channel and sums the branches' input gradients.
    """

    def __init__(self, *branches):
        super().__init__()
        if not branches:
            raise ValueError("Concat: needs at least one branch")
        self.branches = list(branches)
        self._adopt(self.branches, "branch")

    def children(self):
        return {str(i): branch for i, branch in enumerate(self.branches)}

    def forward(self, x):
        return self._join(x, [branch(x) for branch in self.branches])

    def _join(self, x, outs):
        """The branch outputs ``outs`` concatenated along channels."""
        shapes = {(o.shape[0], *o.shape[2:]) for o in outs}
        if len(shapes) != 1 or min(o.ndim for o in outs) < 2:
            raise ValueError(
                f"{self.describe()}: branch outputs {[o.shape for o in outs]} differ "
                f"in more than the channel axis"
            )
        self._splits = np.cumsum([o.shape[1] for o in outs])[:-1]
        out = np.concatenate(outs, axis=1)
        self._out_shape = out.shape
        return out

    def backward(self, dout, input_grad=True):
        self._check_backward()
        parts = np.split(np.asarray(dout), self._splits, axis=1)
        dxs = [branch.backward(part, input_grad) for branch, part in zip(self.branches, parts)]
        return sum(dxs) if input_grad else None

    def __repr__(self):
        inner = ",\n".join("  " + repr(b).replace("\n", "\n  ") for b in self.branches)
        return f"Concat(\n{inner}\n)"
