"""The models, the oracle and the framework adapters of the conformance suite
(``tests/test_conformance.py``, issue 22).

The suite runs one set of tests on every framework varshift takes models from. Each
framework has an *adapter*: one module in this package that defines a subclass of
:class:`Framework` and names an instance of it ``FRAMEWORK``. Every module here is found
by :func:`adapters`; adding a framework (Flax NNX, say) is one more file, and
``test_conformance.py`` does not change.

The models
    :data:`MODELS` are small networks written once, as trees of :class:`Op`: Dense and
    Conv with Dropout before BatchNorm and after it, a residual block, a concatenation,
    a frozen BatchNorm, a BatchNorm called twice in one forward pass, and a model with
    no BatchNorm. Every layer has a *label*; the weights (Dense/Conv kernels in
    PyTorch's layout, BatchNorm's gamma, beta and running statistics) are drawn once, in
    :func:`weights`, and every adapter writes the same values into its model, so the
    models are the same function in every framework. Inputs are drawn channels first,
    ``(N, C)`` or ``(N, C, L)``; an adapter moves them to its own layout.

The oracle
    :func:`oracle` runs a model layer by layer, outside varshift, in the framework's own
    operations (the adapter's primitives below), with the modes of a pass set by hand:
    ``'eval'`` (inference mode) and ``'nodrop'`` (Dropout off, BatchNorm with batch
    statistics, a frozen BatchNorm with its running ones). It returns the per-channel
    moments of every BatchNorm's input (all its calls pooled) and of every layer's
    output, plus for each value how the ``'train'`` pass (Dropout on) relates to it:
    equal (no noise upstream), one Dropout applied to a noise-free value (its moments
    are then predictable), or not predictable.

The adapter (subclass :class:`Framework`)
    Attributes: ``name`` (the test id), ``install`` (how to install it, shown when it
    is missing), ``modules`` (what ``import varshift`` must not import), ``unbiased``
    (``recalibrate`` writes the unbiased variance; Keras: the population one), ``kinds``
    (op kind -> the kind varshift reports),
    ``counts_batches`` (BatchNorm has ``num_batches_tracked``), ``rtol`` (float32
    agreement with the oracle), ``unsupported`` (model name -> why the framework cannot
    express it; those tests are skipped with that reason).

    Methods, all small:

    * ``load()``: import the framework (ImportError or :class:`Unavailable`: skipped);
    * ``build(model, weights) -> (model, names)``: the framework's model with these
      weights (frozen BatchNorms frozen the framework's way; the model as after
      training, e.g. torch's in train mode), and ``names``: label -> the layer's name
      in varshift's reports, for every labelled layer the reports list;
    * ``layout(x)``: a channels-first NumPy batch in the model's input layout;
    * oracle primitives on the framework's tensors: ``tensor(x)``, ``numpy(t)``
      (float64, channels on axis 1), ``apply(model, name, t)`` (a Dense, Conv, ReLU or
      global-pooling layer in inference mode), ``batchnorm(t, gamma, beta, eps, mean,
      var)`` (normalise with these statistics, or with the batch's when they are None),
      ``add(a, b)``, ``concat(a, b)`` (along channels);
    * ``running_stats(model, name) -> (mean, var, num_batches_tracked or None)``;
    * ``fingerprint(model) -> dict``: the whole state, bitwise (parameters, buffers,
      modes/trainable flags, hooks or wrapped methods, random states); keys of the
      running statistics start with ``'running:'``;
    * ``after_each_call(model, name, callback)``: a context manager during which
      ``callback()`` runs after every call of the layer (so that it can raise in the
      middle of a pass).
"""

from __future__ import annotations

import importlib
import pkgutil
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np

#: BatchNorm settings of every model (momentum in PyTorch's convention).
EPS, MOMENTUM = 1e-3, 0.1
#: Samples, and the batch size: 2 batches of 128 and one of 44.
N, BATCH = 300, 128


class Unavailable(Exception):
    """Raised by ``Framework.load`` when the framework is installed but unusable here
    (e.g. Keras imported before with another backend)."""


class Tripped(Exception):
    """The failure the suite injects in the middle of a pass."""


# ------------------------------------------------------------------ the models
@dataclass(frozen=True)
class Op:
    """A labelled layer: ``kind`` is 'dense', 'conv' (1-D, kernel 3, 'same'), 'bn',
    'dropout', 'relu', 'gap' (global average pooling), 'residual' (``x + body(x)``) or
    'concat' (``[body(x), x]`` along channels). A 'bn' whose label came before calls
    that BatchNorm again."""

    kind: str
    label: str
    size: int = 0
    rate: float = 0.0
    frozen: bool = False
    body: tuple = ()


def dense(label, units):
    return Op("dense", label, size=units)


def conv(label, filters):
    return Op("conv", label, size=filters)


def bn(label, frozen=False):
    return Op("bn", label, frozen=frozen)


def dropout(label, rate):
    return Op("dropout", label, rate=rate)


def relu(label):
    return Op("relu", label)


def gap(label):
    return Op("gap", label)


def residual(label, *body):
    return Op("residual", label, body=tuple(body))


def concat(label, *body):
    return Op("concat", label, body=tuple(body))


@dataclass(frozen=True)
class Model:
    """A test model: its input shape (channels first), its layers, and the layer the
    failure tests make raise (one near the last BatchNorm)."""

    name: str
    input_shape: tuple
    ops: tuple
    trip: str

    def walk(self, ops=None):
        """Every op, depth first, in forward order."""
        for op in self.ops if ops is None else ops:
            yield op
            yield from self.walk(op.body)

    @property
    def batchnorms(self) -> list:
        """BatchNorm labels in order of their first call."""
        return list(dict.fromkeys(op.label for op in self.walk() if op.kind == "bn"))

    @property
    def frozen(self) -> set:
        return {op.label for op in self.walk() if op.kind == "bn" and op.frozen}

    @property
    def reused(self) -> set:
        """BatchNorms called more than once."""
        labels = [op.label for op in self.walk() if op.kind == "bn"]
        return {label for label in labels if labels.count(label) > 1}

    def unfrozen(self) -> "Model":
        def thaw(ops):
            return tuple(replace(op, frozen=False, body=thaw(op.body)) for op in ops)
        return replace(self, ops=thaw(self.ops))

    def data(self, n=N, seed=0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return (rng.standard_normal((n, *self.input_shape)) * 1.5 + 0.5).astype(np.float32)


MODELS = {m.name: m for m in [
    Model("dense_dropout_before_bn", (6,), (
        dense("d1", 16), relu("r1"), dropout("p1", 0.5), bn("b1"),
        dense("d2", 16), relu("r2"), dropout("p2", 0.5), bn("b2"), dense("out", 3)), "p2"),
    Model("dense_dropout_after_bn", (6,), (  # no Dropout reaches a BatchNorm
        dense("d1", 16), bn("b1"), relu("r1"),
        dense("d2", 16), bn("b2"), relu("r2"), dropout("p2", 0.5), dense("out", 3)), "d2"),
    Model("conv_dropout_before_bn", (3, 12), (
        conv("c1", 8), relu("r1"), dropout("p1", 0.5), bn("b1"),
        conv("c2", 8), relu("r2"), dropout("p2", 0.5), bn("b2"), gap("g"), dense("out", 2)),
        "p2"),
    Model("conv_dropout_after_bn", (3, 12), (  # the first Dropout reaches b2 through c2
        conv("c1", 8), bn("b1"), relu("r1"), dropout("p1", 0.5),
        conv("c2", 8), bn("b2"), relu("r2"), dropout("p2", 0.5), gap("g"), dense("out", 2)),
        "c2"),
    Model("residual", (6,), (
        dense("d0", 12), bn("b0"), relu("r0"),
        residual("res", dense("d1", 12), relu("r1"), dropout("p1", 0.5), bn("b1")),
        bn("b2"), dense("out", 3)), "b1"),
    Model("concat", (3, 12), (
        conv("c0", 4), bn("b0"), relu("r0"),
        concat("cat", conv("c1", 4), relu("r1"), dropout("p1", 0.5), bn("b1")),
        bn("b2"), gap("g"), dense("out", 2)), "b1"),
    Model("frozen_bn", (6,), (
        dense("d1", 16), bn("b1", frozen=True), relu("r1"), dropout("p1", 0.5),
        dense("d2", 16), bn("b2"), dense("out", 3)), "d2"),
    Model("bn_called_twice", (6,), (
        dense("d1", 16), bn("b1"), relu("r1"), dropout("p1", 0.4), dense("d2", 16),
        bn("b1"), relu("r2"), dense("out", 3)), "d2"),
    Model("no_bn", (6,), (
        dense("d1", 16), relu("r1"), dropout("p1", 0.5), dense("d2", 16), relu("r2"),
        dense("out", 3)), "d2"),
]}


def weights(model: Model, seed=1) -> dict:
    """label -> float32 arrays: ``weight`` (PyTorch's layout: (out, in) or (out, in, 3))
    and ``bias`` for Dense and Conv; ``gamma``, ``beta``, ``mean`` and ``var`` for
    BatchNorm (running statistics away from the data's, so that there is a shift; a
    frozen BatchNorm's far away, as after fine-tuning on other data)."""
    rng = np.random.default_rng(seed)
    found = {}

    def walk(ops, channels):
        for op in ops:
            if op.kind in ("dense", "conv"):
                shape = (op.size, channels) + ((3,) if op.kind == "conv" else ())
                fan_in = channels * (3 if op.kind == "conv" else 1)
                found[op.label] = {"weight": rng.standard_normal(shape) / np.sqrt(fan_in),
                                   "bias": rng.normal(0, 0.2, op.size)}
                channels = op.size
            elif op.kind == "bn" and op.label not in found:
                found[op.label] = {"gamma": rng.uniform(0.5, 1.5, channels),
                                   "beta": rng.normal(0, 0.3, channels),
                                   "mean": rng.normal(0, 0.4, channels),
                                   "var": rng.uniform(0.4, 2.5, channels)}
                if op.frozen:
                    found[op.label]["mean"] += 3.0
                    found[op.label]["var"] *= 8.0
            elif op.kind in ("residual", "concat"):
                inner = walk(op.body, channels)
                channels = channels if op.kind == "residual" else channels + inner
        return channels

    walk(model.ops, model.input_shape[0])
    return {label: {k: v.astype(np.float32) for k, v in arrays.items()}
            for label, arrays in found.items()}


# ------------------------------------------------------------------ the adapters
class Framework:
    """Base class of the adapters (see the module docstring)."""

    name = "?"
    install = ""
    modules: tuple = ()
    unbiased = True
    counts_batches = True
    rtol = 2e-5
    unsupported: dict = {}
    #: The kind varshift reports for each kind of op (a framework whose activations and
    #: pooling are functions wraps them in modules it cannot tell apart: 'layer').
    kinds = {"dense": "dense", "conv": "conv", "bn": "batchnorm", "dropout": "dropout",
             "relu": "activation", "gap": "pool"}

    def load(self):
        raise NotImplementedError

    def __repr__(self):
        return self.name


def adapters() -> list:
    """The ``FRAMEWORK`` of every module of this package (the frameworks are not
    imported: that is each adapter's ``load``)."""
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        found.append(importlib.import_module(f"{__name__}.{info.name}").FRAMEWORK)
    return found


# ------------------------------------------------------------------ the oracle
@dataclass
class Moments:
    """Per-channel count, mean and unbiased/population variance of values (float64)."""

    count: int
    mean: np.ndarray
    var: np.ndarray        # unbiased
    pop_var: np.ndarray

    @classmethod
    def of(cls, arrays):
        """Of arrays of shape (N, C, ...), pooled (channels on axis 1)."""
        flat = np.concatenate([np.moveaxis(a, 1, 0).reshape(a.shape[1], -1) for a in arrays],
                              axis=1)
        return cls(flat.shape[1], flat.mean(1), flat.var(1, ddof=1), flat.var(1))


#: How the train pass relates to a value of the oracle's nodrop pass: equal, one
#: Dropout of this rate applied to a noise-free value, or not predictable.
EXACT, COMPLEX = "exact", "complex"


@dataclass
class Oracle:
    """What :func:`oracle` finds in one pass over the data.

    Attributes
    ----------
    inputs : dict
        BatchNorm label -> :class:`Moments` of its input, every call pooled.
    input_calls : dict
        BatchNorm label -> per call: (the train pass's relation, Moments).
    outputs : dict
        Output key (label, ``label#2`` for a second call) -> (relation, Moments).
    order : list
        Output keys in the order the layers first returned.
    noise : dict
        BatchNorm label -> Dropout labels upstream of it with no BatchNorm in between.
    """

    inputs: dict = field(default_factory=dict)
    input_calls: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    order: list = field(default_factory=list)
    noise: dict = field(default_factory=dict)


def _tagged(tag):
    """The relation of a deterministic layer's output to its input's."""
    return EXACT if tag == EXACT else COMPLEX


def oracle(fw, model, names, spec: Model, w, x, mode, stats=None, batch_size=BATCH) -> Oracle:
    """Moments of every BatchNorm input and layer output over ``x`` (the model's
    layout), computed layer by layer with the framework's operations.

    Parameters
    ----------
    mode : {'eval', 'nodrop'}
    stats : dict, optional
        label -> (mean, var) a BatchNorm normalises with in inference mode (default: the
        running statistics in ``w``).
    """
    stats = stats or {label: (a["mean"], a["var"]) for label, a in w.items() if "var" in a}
    inputs, outputs, order, noise = {}, {}, [], {}

    def forward(t):
        calls = {}

        def record(label, value, tag):
            calls[label] = calls.get(label, 0) + 1
            key = label if calls[label] == 1 else f"{label}#{calls[label]}"
            if key not in outputs:
                outputs[key] = (tag, [])
                order.append(key)
            outputs[key][1].append(fw.numpy(value))

        def run(ops, t, tag, upstream):
            for op in ops:
                if op.kind == "bn":
                    call = calls.get(op.label, 0)  # earlier calls in this forward
                    per_call = inputs.setdefault(op.label, {})
                    per_call.setdefault(call, (tag, []))[1].append(fw.numpy(t))
                    noise.setdefault(op.label, set()).update(upstream)
                    a = w[op.label]
                    use_running = mode == "eval" or op.frozen
                    mean, var = stats[op.label] if use_running else (None, None)
                    t = fw.batchnorm(t, a["gamma"], a["beta"], EPS, mean, var)
                    tag, upstream = _tagged(tag), set()
                elif op.kind == "dropout":
                    tag = op.rate if tag == EXACT else COMPLEX
                    upstream = upstream | {op.label}
                elif op.kind in ("residual", "concat"):
                    inner, inner_tag, inner_noise = run(op.body, t, tag, upstream)
                    t = fw.add(t, inner) if op.kind == "residual" else fw.concat(inner, t)
                    tag = EXACT if tag == inner_tag == EXACT else COMPLEX
                    upstream = upstream | inner_noise
                else:
                    t = fw.apply(model, names[op.label], t)
                    tag = _tagged(tag)
                record(op.label, t, tag)
            return t, tag, upstream

        run(spec.ops, t, EXACT, set())

    for start in range(0, len(x), batch_size):
        forward(fw.tensor(x[start:start + batch_size]))
    result = Oracle(order=order, noise={k: sorted(v) for k, v in noise.items()})
    for label, per_call in inputs.items():
        result.input_calls[label] = [(tag, Moments.of(arrays))
                                     for _, (tag, arrays) in sorted(per_call.items())]
        result.inputs[label] = Moments.of([a for _, (_, arrays) in per_call.items()
                                           for a in arrays])
    result.outputs = {key: (tag, Moments.of(arrays)) for key, (tag, arrays) in outputs.items()}
    return result


def dropped(m: Moments, rate) -> Moments:
    """The expected moments of ``x * mask / (1 - rate)`` (mask ~ Bernoulli(1 - rate))
    for values ``x`` of moments ``m``: the same mean, ``E[x^2] / (1 - rate) - E[x]^2``."""
    second = m.pop_var + m.mean ** 2
    var = second / (1 - rate) - m.mean ** 2
    return Moments(m.count, m.mean, var, var)


def pooled(parts) -> Moments:
    """Moments of the union of disjoint data sets of moments ``parts``."""
    count = sum(p.count for p in parts)
    mean = sum(p.count * p.mean for p in parts) / count
    m2 = sum(p.count * (p.pop_var + (p.mean - mean) ** 2) for p in parts)
    return Moments(count, mean, m2 / (count - 1), m2 / count)


# ------------------------------------------------------------------ helpers
@contextmanager
def tripwire(fw, model, name, fail_on=None, exception=Tripped):
    """Count the calls of layer ``name``; raise ``exception`` at call ``fail_on``.

    Yields a list whose length is the number of calls so far.
    """
    calls = []

    def callback():
        calls.append(1)
        if len(calls) == fail_on:
            raise exception(f"injected failure at call {fail_on} of layer {name!r}")

    with fw.after_each_call(model, name, callback):
        yield calls
