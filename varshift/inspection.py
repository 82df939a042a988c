"""``varshift.inspect``: what a saved Keras model file says about its BatchNorm
statistics, without Keras or TensorFlow (and without running anything in the file).

A file holds the layers' settings, the moving statistics and, when the model was saved
compiled, the optimizer's step count. From these alone it can tell:

- statistics that never moved (``STATS_AT_INIT``: mean exactly 0 and variance exactly
  1 in every channel), invalid ones (``BAD_MOVING_STATS``: non-finite or negative, an
  error; zero variances, a warning), a momentum that looks like PyTorch's convention
  (``SUSPICIOUS_MOMENTUM``: Keras' momentum is the weight of the old value; ``1 -
  momentum >= KERAS_LIKE_MOMENTUM``, diagnose's rule and finding, or >= 1, warn; >=
  ``SLOW_MOMENTUM`` is info);
- how much of the initial values is still in the statistics (``STATS_NEAR_INIT``): after
  ``n`` updates, ``w = momentum ** n``, where ``n`` is the optimizer's step count times
  the layer's calls per forward pass (a BatchNormalization shared by several branches
  or inputs of a functional model updates at each call). With batch statistics that
  stayed near (mean ``mu``, variance ``v``) the stored values are ``(1 - w) * mu`` and
  ``w + (1 - w) * v``, so ``v ~ (stored - w) / (1 - w)`` and ``mu ~ stored / (1 - w)``:
  the estimated effect is what ``diagnose`` grades for ``STALE_RUNNING_STATS``, the
  variance shift ``max(r, 1/r)`` of ``v + eps`` against ``stored + eps`` (channel-
  averaged) and the mean drift ``|mu - stored| / sqrt(stored + eps)``. Severity comes
  from that estimate against ``STALE_SHIFT`` / ``STALE_MEAN``; where ``w >=
  NEAR_INIT_WEIGHT`` but the estimate is small (inputs close to standardised) it is
  info, saying that the file cannot tell and pointing to ``diagnose`` with data. Where
  ``n`` updates from 0/1 cannot have produced the statistics (``n = 0``, or a stored
  variance below ``w``) the count is not used. Without a usable count, statistics
  within ``NEAR_INIT_DISTANCE`` of 0/1 (``|mean|`` and ``|ln variance|`` in every
  channel) are reported as info only;
- where dropout-like noise reaches a BatchNormalization with no other one in between
  (``DROPOUT_BEFORE_BN``): Li et al.'s case (a) with no weight layer in between (for
  Dropout-type noise of rate r through elementwise layers the recorded variance is at
  least ``1 / (1 - r)`` times the inference one, graded with ``DROPOUT_SHIFT``;
  GaussianNoise and AlphaDropout warn), case (b) through a weight layer (info);
- frozen BatchNormalization layers in a trainable model (``FROZEN_BATCHNORM``): a warning
  when trainable layers feed them (their input distribution moves in training), info
  when everything upstream is frozen too;
- weights that no layer of the config accounts for (``UNPLACED_WEIGHTS``): the
  sub-layers of a subclassed model or layer, or a damaged config. A warning when some
  could be a BatchNormalization's (their statistics go unchecked), info otherwise.

BatchNormalization layers are found in Sequential and functional models, nested ones,
and wrappers (TimeDistributed, Bidirectional).

What a file cannot tell: how far the statistics are from those of the data, which needs
the data (``varshift.diagnose``). Statistics close to 0/1 may be stale or describe inputs
that really are standardised; the step count may not be this layer's number of updates
(the optimizer re-created or recompiled, statistics loaded from a pre-trained model, the
layer frozen for part of training); the estimates assume batch statistics that did not
drift while the weights trained, and amplify noise by ``1 / (1 - w)``; nor can it see
whether a dropout was called with ``training=True`` at inference, or what a subclassed
model or a Lambda layer does.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from . import keras_file
from ._json import json_ready
from ._process import public
from .diagnosis import (
    DROPOUT_SHIFT,
    KERAS_LIKE_MOMENTUM,
    STALE_MEAN,
    STALE_SHIFT,
    momentum_like_other_convention,
)
from .findings import SEVERITIES, Finding, grade
from .keras_file import SEQUENTIAL, ModelFileError, checked_setting, read_keras_file
from .stats import deviation_in_stds, ratio, symmetric_shift

__all__ = ["inspect", "Inspection", "BatchNormInfo", "DropoutInfo", "ModelFileError"]

#: Weight ``momentum ** updates`` of the initial 0/1 values still in the moving
#: statistics from which it is reported even when the estimated effect is small (info:
#: a file cannot tell whether the initial values happen to fit the data).
NEAR_INIT_WEIGHT = 0.1
#: Without a step count: every channel's |moving mean| and |ln moving variance| at most
#: this is reported (info only: standardised inputs look the same).
NEAR_INIT_DISTANCE = 0.05
#: A Keras momentum at least this slow is reported (info): its half-life is >= 693 updates.
SLOW_MOMENTUM = 0.999
#: Dropout-like layers and the config key of their strength.
DROPOUT_LIKE = {"Dropout": "rate", "SpatialDropout1D": "rate", "SpatialDropout2D": "rate",
                "SpatialDropout3D": "rate", "GaussianDropout": "rate", "AlphaDropout": "rate",
                "GaussianNoise": "stddev"}
#: Those whose noise multiplies the input by a mean-1 factor of variance rate / (1 - rate):
#: feeding BatchNorm through elementwise layers, they make the train-mode variance at
#: least 1 / (1 - rate) times the inference-mode one.
MULTIPLICATIVE = {"Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
                  "GaussianDropout"}


def _is_weight_layer(layer) -> bool:
    """A layer with a kernel (Dense, Conv*, EinsumDense, recurrent, ...): Li et al.'s
    weight layer of case (b)."""
    return not (layer.is_batchnorm or layer.is_container or layer.is_wrapper) and any(
        key in layer.config for key in ("kernel_initializer", "depthwise_initializer"))


@dataclass
class BatchNormInfo:
    """One BatchNormalization layer of the file.

    Attributes
    ----------
    path : str
        Layer names from the top model down, joined with '/'.
    index : int
        Position in model order (depth first through nested models).
    axis : int or list of int
    momentum : float
        Keras' convention: the weight of the old value.
    epsilon : float
    center, scale : bool
    trainable : bool
        Trainable itself and inside trainable models (False: inference mode in Keras 3).
    moving_mean, moving_variance : ndarray, shape (C,)
    updates_per_step : int
        Updates of the moving statistics per training step: its calls in training mode
        per forward pass (more than 1 for a layer shared by several branches or inputs;
        0 if every call passes ``training=False``).
    """

    path: str
    index: int
    axis: object
    momentum: float
    epsilon: float
    center: bool
    scale: bool
    trainable: bool
    moving_mean: np.ndarray
    moving_variance: np.ndarray
    updates_per_step: int = 1

    @property
    def channels(self) -> int:
        return int(self.moving_mean.size)

    @property
    def at_init(self) -> bool:
        """Moving mean all 0 and variance all 1, as Keras initialises them."""
        return bool(np.all(self.moving_mean == 0) and np.all(self.moving_variance == 1))

    def statistics(self) -> dict:
        """Summary of the moving statistics: min/mean/max over the finite channels of each,
        the number of non-finite values (mean and variance together) and of variances
        <= 0."""
        def summary(a):
            finite = a[np.isfinite(a)].astype(np.float64)
            if not finite.size:
                return {"min": float("nan"), "mean": float("nan"), "max": float("nan")}
            with np.errstate(over="ignore"):  # a mean of values near the float64 limit is inf
                mean = float(finite.mean())
            return {"min": float(finite.min()), "mean": mean, "max": float(finite.max())}

        var = self.moving_variance
        return {"moving_mean": summary(self.moving_mean), "moving_variance": summary(var),
                "nonfinite": int(np.sum(~np.isfinite(self.moving_mean)) + np.sum(~np.isfinite(var))),
                "nonpositive_variance": int(np.sum(var <= 0))}

    def to_dict(self) -> dict:
        return {"path": self.path, "index": self.index, "channels": self.channels,
                "axis": self.axis, "momentum": self.momentum, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale, "trainable": self.trainable,
                "updates_per_step": self.updates_per_step, **self.statistics()}

    def updates(self, steps):
        """Updates of its moving statistics in ``steps`` optimizer steps (None: unknown)."""
        return None if steps is None else steps * self.updates_per_step


@dataclass
class DropoutInfo:
    """One dropout-like layer and where it sits relative to the BatchNormalization layers.

    Attributes
    ----------
    path : str
    index : int
        Position in model order.
    class_name : str
    rate : float or None
        ``rate`` (``stddev`` for GaussianNoise).
    after : list of str
        BatchNormalization layers upstream of it with no other one in between.
    reaches : dict of str to list of str
        BatchNormalization layers its noise reaches with no other one in between ->
        the weight layers first met on the way (empty: a path without any, Li et al.'s
        case (a); else case (b)).
    """

    path: str
    index: int
    class_name: str
    rate: float | None
    after: list = field(default_factory=list)
    reaches: dict = field(default_factory=dict)

    def case(self, bn: str) -> str:
        """Li et al.'s case for the BatchNormalization ``bn`` it reaches: 'a' or 'b'."""
        return "b" if self.reaches[bn] else "a"

    def describe_reach(self, bn: str) -> str:
        via = self.reaches[bn]
        return f"{bn} (case a)" if not via else f"{bn} (case b, via {', '.join(via)})"

    def to_dict(self) -> dict:
        return {"path": self.path, "index": self.index, "class_name": self.class_name,
                "rate": self.rate, "after": self.after,
                "reaches": [{"batchnorm": bn, "case": self.case(bn), "via": via}
                            for bn, via in self.reaches.items()]}


@dataclass
class Inspection:
    """What :func:`inspect` found in a Keras model file.

    Attributes
    ----------
    path : str
    format : {'keras', 'h5'}
    keras_version : str or None
    model_name : str
    trainable : bool
        The top model's ``trainable`` flag.
    optimizer_iterations : int or None
        Steps of the saved optimizer (None: saved without one).
    layers : list of (str, str)
        (path, class name) of every layer in model order.
    batchnorms : list of BatchNormInfo
    dropouts : list of DropoutInfo
    findings : list of Finding
        Most severe first.
    unplaced_weights : list of varshift.keras_file.UnplacedWeights
        Weight groups of the file that no layer of the config accounts for (a
        subclassed model or layer, a damaged config): reported as ``UNPLACED_WEIGHTS``.
    """

    path: str
    format: str
    keras_version: str | None
    model_name: str
    trainable: bool
    optimizer_iterations: int | None
    layers: list
    batchnorms: list
    dropouts: list
    findings: list
    unplaced_weights: list = field(default_factory=list)

    def to_dict(self) -> dict:
        """Everything but the per-channel arrays, as JSON-ready built-ins."""
        return json_ready({
            "path": self.path, "format": self.format, "keras_version": self.keras_version,
            "model_name": self.model_name, "trainable": self.trainable,
            "optimizer_iterations": self.optimizer_iterations,
            "layers": [{"path": p, "class_name": c} for p, c in self.layers],
            "batchnorms": [b.to_dict() for b in self.batchnorms],
            "dropouts": [d.to_dict() for d in self.dropouts],
            "unplaced_weights": [vars(u) for u in self.unplaced_weights],
            "findings": [f.to_dict() for f in self.findings]})

    def to_json(self, **kwargs) -> str:
        """JSON text of :meth:`to_dict` (keyword arguments go to :func:`json.dumps`)."""
        return json.dumps(self.to_dict(), **kwargs)

    def summary(self) -> str:
        """The report as text tables: BatchNormalization layers, dropout-like layers,
        findings."""
        kind = ".keras archive" if self.format == "keras" else "legacy HDF5"
        steps = ("no optimizer state" if self.optimizer_iterations is None
                 else f"optimizer steps: {self.optimizer_iterations}")
        lines = [f"Keras model {self.model_name!r} in {os.path.basename(self.path)} ({kind}, "
                 f"Keras {self.keras_version or 'version unknown'}): {len(self.layers)} layers, "
                 f"{len(self.batchnorms)} BatchNormalization, {len(self.dropouts)} dropout-like; "
                 f"{steps}"]
        if self.batchnorms:
            width = max(len("layer"), *(len(b.path) for b in self.batchnorms))
            stats = [b.statistics() for b in self.batchnorms]
            means = [_triple(s["moving_mean"]) for s in stats]
            variances = [_triple(s["moving_variance"]) for s in stats]
            wm, wv = (max(len(title), *map(len, column)) for title, column in
                      (("moving_mean", means), ("moving_variance", variances)))
            lines += ["", "BatchNormalization (moving statistics over channels: min / mean / max)",
                      f"{'#':>4}  {'layer':<{width}} {'C':>5} {'axis':>5} {'momentum':>8} "
                      f"{'epsilon':>7} {'center':>6} {'scale':>5} {'trainable':>9}  "
                      f"{'moving_mean':<{wm}}  {'moving_variance':<{wv}} {'nonfinite':>9} "
                      f"{'var<=0':>6}"]
            for b, s, mean, var in zip(self.batchnorms, stats, means, variances):
                lines.append(
                    f"{b.index:>4}  {b.path:<{width}} {b.channels:>5} {str(b.axis):>5} "
                    f"{b.momentum:>8.4g} {b.epsilon:>7.3g} {_yes(b.center):>6} "
                    f"{_yes(b.scale):>5} {_yes(b.trainable):>9}  {mean:<{wm}}  {var:<{wv}} "
                    f"{s['nonfinite']:>9} {s['nonpositive_variance']:>6}")
        elif self.unplaced_weights:
            lines += ["", f"No BatchNormalization layer in the config, which does not account "
                          f"for {len(self.unplaced_weights)} weight groups of the file (see "
                          f"UNPLACED_WEIGHTS below)."]
        else:
            lines += ["", "No BatchNormalization layer: no moving statistics, no variance shift "
                          "in Li et al.'s sense."]
        if self.dropouts:
            width = max(len("layer"), *(len(d.path) for d in self.dropouts))
            lines += ["", "Dropout-like layers (BatchNormalization layers before and after them, "
                          "with no other one in between)",
                      f"{'#':>4}  {'layer':<{width}} {'class':<16} {'rate':>6}  after / reaches"]
            for d in self.dropouts:
                after = ", ".join(d.after) or "-"
                reaches = "; ".join(d.describe_reach(bn) for bn in d.reaches) or "-"
                rate = "?" if d.rate is None else f"{d.rate:.3g}"
                lines.append(f"{d.index:>4}  {d.path:<{width}} {d.class_name:<16} {rate:>6}  "
                             f"after: {after} / reaches: {reaches}")
        lambdas = [p for p, c in self.layers if c == "Lambda"]
        if lambdas:
            lines += ["", f"Lambda layers (named only; their code is not run): {', '.join(lambdas)}"]
        lines += ["", "Findings: none." if not self.findings else "Findings:"]
        lines += [str(f) for f in self.findings]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return (f"Inspection({self.path!r}: {len(self.batchnorms)} BatchNormalization, "
                f"{len(self.dropouts)} dropout-like, {len(self.findings)} findings)")


def _count(n, noun) -> str:
    """``'1 step'``, ``'60 steps'``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _yes(flag) -> str:
    return "yes" if flag else "no"


def _triple(s) -> str:
    return f"{s['min']:.3g} / {s['mean']:.3g} / {s['max']:.3g}"


@public(None)
def inspect(path) -> Inspection:
    """Report a saved Keras model's BatchNormalization and dropout-like layers and what
    is visibly wrong with them, without Keras.

    Parameters
    ----------
    path : str or os.PathLike
        A Keras 3 ``.keras`` archive or a legacy HDF5 ``.h5`` model (``model.save``).

    Returns
    -------
    Inspection

    Raises
    ------
    FileNotFoundError, PermissionError
        If the file cannot be opened.
    ModelFileError
        (``varshift.ModelFileError``, a ValueError) If the file is not a regular file or
        not a Keras model, is damaged, holds a setting of the wrong type, or is beyond
        the reading limits (see :func:`varshift.keras_file.read_keras_file`); the message
        names the file and the entry or setting.
    ImportError
        If h5py (``pip install ".[keras]"`` from a clone of varshift) is missing.

    Notes
    -----
    Finding codes: ``STATS_AT_INIT``, ``STATS_NEAR_INIT``, ``BAD_MOVING_STATS``,
    ``SUSPICIOUS_MOMENTUM``, ``DROPOUT_BEFORE_BN``, ``FROZEN_BATCHNORM``,
    ``UNPLACED_WEIGHTS``; the module docstring says what a file can and cannot tell, the
    module constants hold the thresholds.
    """
    kfile = read_keras_file(path)
    model = kfile.model
    order, trainable = [], {}

    def visit(layer, parent_trainable):
        trainable[layer.path] = parent_trainable and layer.trainable
        if layer.path:
            order.append(layer)
        for child in layer.children:
            visit(child, trainable[layer.path])

    visit(model, True)
    index = {layer.path: i for i, layer in enumerate(order)}
    graph = _Graph(model)
    batchnorms = [BatchNormInfo(  # settings checked by read_keras_file
        layer.path, index[layer.path], layer.config["axis"], float(layer.config["momentum"]),
        float(layer.config["epsilon"]), layer.config["center"], layer.config["scale"],
        trainable[layer.path], np.asarray(layer.weights["moving_mean"]).ravel(),
        np.asarray(layer.weights["moving_variance"]).ravel(), layer.calls)
        for layer in order if layer.is_batchnorm]
    dropouts = []
    for layer in order:
        if layer.class_name in DROPOUT_LIKE:
            rate = checked_setting(layer.config, DROPOUT_LIKE[layer.class_name], "number", None,
                                   layer.where)
            dropouts.append(DropoutInfo(
                layer.path, index[layer.path], layer.class_name,
                None if rate is None else float(rate),
                after=sorted(graph.batchnorms_from(layer.path, backward=True), key=index.get),
                reaches=graph.batchnorms_from(layer.path)))
    steps = kfile.optimizer_iterations
    findings = _unplaced(kfile)
    for b in batchnorms:
        findings += _bad_stats(b) + _momentum(b, steps)
        if b.at_init:
            findings += _at_init(b, steps)
        elif b.trainable:
            findings += _near_init(b, steps)
        if not b.trainable and model.trainable:
            findings += _frozen(b, graph, trainable)
        findings += _dropout(b, dropouts)
    findings.sort(key=lambda f: (f.rank, index.get(f.layer, -1)))
    return Inspection(kfile.path, kfile.format, kfile.keras_version, model.name,
                      model.trainable, steps,
                      [(layer.path, layer.class_name) for layer in order], batchnorms,
                      dropouts, findings, kfile.unplaced)


class _Graph:
    """Data flow between the leaf layers, through nested models: Sequential models in
    order, functional ones along their config's inbound nodes, a wrapper's layers side
    by side. Nested models and wrappers are entered and left through virtual nodes
    'PATH<in>' and 'PATH<out>'."""

    def __init__(self, model):
        self.leaves = {}
        self.forward, self.backward = {}, {}
        self._wire(model)

    def _edge(self, a, b):
        self.forward.setdefault(a, set()).add(b)
        self.backward.setdefault(b, set()).add(a)

    def _ends(self, layer):
        if layer.is_container or layer.is_wrapper:
            self._wire(layer)
            return f"{layer.path}<in>", f"{layer.path}<out>"
        self.leaves[layer.path] = layer
        return layer.path, layer.path

    def _wire(self, model):
        start, end = f"{model.path}<in>", f"{model.path}<out>"
        if model.is_wrapper:  # its layers side by side (Bidirectional's two directions)
            for child in model.children:
                first, last = self._ends(child)
                self._edge(start, first)
                self._edge(last, end)
            return
        if model.class_name in SEQUENTIAL:
            previous = start
            for child in model.saved_children():
                first, last = self._ends(child)
                self._edge(previous, first)
                previous = last
            self._edge(previous, end)
            return
        ends = {child.name: self._ends(child) for child in model.children}
        for child in model.children:
            first = ends[child.name][0]
            if child.class_name == "InputLayer":
                self._edge(start, first)
            for source in child.inbound:
                if source in ends:
                    self._edge(ends[source][1], first)
        for name in model.outputs:
            if name in ends:
                self._edge(ends[name][1], end)

    def batchnorms_from(self, path, backward=False) -> dict:
        """BatchNormalization layers reached from ``path`` (downstream, or upstream with
        ``backward``) with no other one in between -> the weight layers first met on the
        way (empty if some path has none)."""
        edges = self.backward if backward else self.forward
        found = {}
        stack = [(node, None) for node in edges.get(path, ())]
        seen = set()
        while stack:
            node, via = stack.pop()
            if (node, via) in seen:
                continue
            seen.add((node, via))
            layer = self.leaves.get(node)
            if layer is not None and layer.is_batchnorm:
                found.setdefault(node, set()).add(via)
                continue
            if via is None and layer is not None and _is_weight_layer(layer):
                via = node
            stack.extend((n, via) for n in edges.get(node, ()))
        return {bn: [] if None in vias else sorted(vias) for bn, vias in found.items()}

    def upstream(self, path) -> list:
        """Every leaf layer upstream of ``path``, through BatchNormalization layers too."""
        seen, stack = set(), list(self.backward.get(path, ()))
        while stack:
            node = stack.pop()
            if node not in seen:
                seen.add(node)
                stack.extend(self.backward.get(node, ()))
        return [node for node in seen if node in self.leaves]


def _bad_stats(b):
    s = b.statistics()
    negative = int(np.sum(b.moving_variance < 0))
    zero = s["nonpositive_variance"] - negative
    if not (s["nonfinite"] or s["nonpositive_variance"]):
        return []
    severity = "error" if s["nonfinite"] or negative else "warning"
    return [Finding(
        "BAD_MOVING_STATS", b.path, severity,
        {"channels": b.channels, "nonfinite": s["nonfinite"], "negative_variances": negative,
         "zero_variances": zero, "epsilon": b.epsilon},
        "Some moving statistics are unusable: non-finite values (training diverged, or "
        "the file was damaged) turn every output of the channel into NaN at inference; a "
        "negative variance cannot come from the moving average (the file was edited or "
        "damaged); a zero variance means a channel whose input was constant (e.g. a dead "
        f"ReLU), which inference divides by sqrt(epsilon) = {np.sqrt(b.epsilon):.3g}.",
        "Re-estimate the statistics on training data (from a checkpoint before the "
        "divergence); for constant channels, check the layers before this one.")]


def _momentum(b, steps):
    """``SUSPICIOUS_MOMENTUM``: diagnose's rule for a momentum in the other framework's
    convention (shared), then what only a file shows: a momentum of 1 or more (never
    updates; above 1 diverges), or one so slow that the step count matters."""
    m = b.momentum
    if 1 - m >= KERAS_LIKE_MOMENTUM:
        return [momentum_like_other_convention(b.path, m, "keras")]
    if m >= 1:
        return [Finding(
            "SUSPICIOUS_MOMENTUM", b.path, "warning", {"momentum": m},
            f"momentum={m:g} never lets a batch into the moving statistics"
            + (" (and above 1 it makes them diverge)." if m > 1 else "."),
            "Use Keras' default momentum=0.99.")]
    if m >= SLOW_MOMENTUM:
        evidence = {"momentum": m, "half_life_updates": float(np.log(0.5) / np.log(m))}
        if steps is not None:
            evidence["init_weight_left"] = float(m ** b.updates(steps))
        return [Finding(
            "SUSPICIOUS_MOMENTUM", b.path, "info", evidence,
            f"momentum={m:g} forgets the initial statistics slowly: half of them is still "
            f"there after {evidence['half_life_updates']:.0f} updates.",
            "Fine for long training; for short training use 0.99 or less.")]
    return []


def _at_init(b, steps):
    return [Finding(
        "STATS_AT_INIT", b.path, "error",
        {"channels": b.channels, "optimizer_iterations": steps, "trainable": b.trainable},
        "The moving mean is exactly 0 and the moving variance exactly 1 in every channel, "
        "the values Keras starts with: the update never ran (the model was not trained, or "
        "the layer ran in inference mode throughout training: trainable=False, or "
        "training=False passed to it or to the model around it), so inference normalises "
        "with statistics that do not describe the data.",
        "Train with the layer in training mode, or re-estimate its statistics: make it "
        "trainable and call the model with training=True on training batches without "
        "applying gradients.")]


def _near_init(b, steps):
    """``STATS_NEAR_INIT`` from the number of updates where it applies, else from the
    distance of the statistics to 0/1."""
    var = b.moving_variance.astype(np.float64)
    if not (np.all(var > 0) and np.all(np.isfinite(var)) and np.all(np.isfinite(b.moving_mean))):
        return []  # BAD_MOVING_STATS
    found = _near_init_by_count(b, steps) if b.updates(steps) else None
    return _near_init_by_distance(b) if found is None else found


def _near_init_by_distance(b):
    var = b.moving_variance.astype(np.float64)
    if max(np.max(np.abs(b.moving_mean)), np.max(np.abs(np.log(var)))) > NEAR_INIT_DISTANCE:
        return []
    return [Finding(
        "STATS_NEAR_INIT", b.path, "info",
        {"max_abs_moving_mean": float(np.max(np.abs(b.moving_mean))),
         "moving_variance_range": (float(b.moving_variance.min()),
                                   float(b.moving_variance.max()))},
        f"Every channel's moving mean is within {NEAR_INIT_DISTANCE} of 0 and its moving "
        f"variance within a factor exp({NEAR_INIT_DISTANCE}) of 1: still close to the "
        f"initial values, or inputs that really are standardised. The number of updates "
        f"is unknown (no optimizer state in the file, or a step count that cannot have "
        f"produced these statistics), so a file cannot tell which.",
        "Save the model compiled after training (model.save keeps the optimizer's step "
        "count) so that inspect can weigh the initial values, or measure on data: "
        "varshift.diagnose(keras.saving.load_model(path), data).")]


def _near_init_by_count(b, steps):
    """Findings from ``w = momentum ** updates`` (``updates``: ``steps`` times the
    layer's updates per step), graded on the estimated effect as ``diagnose`` grades
    ``STALE_RUNNING_STATS``; None if the updates from 0/1 cannot have produced the
    statistics (the count does not apply to this layer), or the momentum is outside
    [0, 1) (no moving average forgets its start then)."""
    if not 0 <= b.momentum < 1:
        return None
    updates = b.updates(steps)
    w = float(b.momentum ** updates)
    evidence = {"optimizer_iterations": steps}
    if b.updates_per_step != 1:
        evidence["updates_per_step"] = b.updates_per_step
    evidence.update(momentum=b.momentum, init_weight_left=w)
    mean, var = b.moving_mean.astype(np.float64), b.moving_variance.astype(np.float64)
    data_var = (var - w) / (1 - w)
    if not np.all(data_var > 0):
        return None
    with np.errstate(all="ignore"):  # statistics near the float64 limits: inf or nan
        data_mean, moving = np.mean(data_var), np.mean(var)
        shift = symmetric_shift(ratio(data_mean + b.epsilon, moving + b.epsilon))
        drift = float(np.mean(deviation_in_stds(mean / (1 - w), mean, var + b.epsilon)))
    if np.isnan(shift) or np.isnan(drift):
        return None  # statistics at the float64 limits: no estimate
    evidence.update(estimated_data_var=float(data_mean), moving_var=float(moving),
                    estimated_var_shift=float(shift), estimated_mean_drift_std=drift)
    grades = [g for g in (grade(shift, STALE_SHIFT), grade(drift, STALE_MEAN)) if g]
    if b.updates_per_step == 1:
        counted = (f"The saved optimizer made {_count(steps, 'step')}. If this layer's "
                   f"statistics started at 0/1 and were updated at each of them, ")
    else:
        counted = (f"The saved optimizer made {_count(steps, 'step')}, and the config calls "
                   f"this layer {b.updates_per_step} times per forward pass in training mode "
                   f"(a shared layer): {_count(updates, 'update')}. If its statistics started "
                   f"at 0/1 and were updated at each call, ")
    counted += (f"{w:.3g} (momentum^{updates}) of what it stores is still the initial mean 0 "
                f"and variance 1. ")
    estimate = (f"Assuming steady batch statistics, the data's variance is about "
                f"{data_mean:.4g} against {moving:.4g} stored ({shift:.3g}x), and the stored "
                f"mean is {drift:.3g} standard deviations off")
    if not grades:
        if w < NEAR_INIT_WEIGHT:
            return []
        return [Finding(
            "STATS_NEAR_INIT", b.path, "info", evidence,
            counted + estimate + f": within what diagnose accepts (a shift below "
            f"{STALE_SHIFT[0]}x, a drift below {STALE_MEAN[0]} standard deviations), as "
            f"for inputs whose statistics are close to 0/1 anyway. The file alone cannot "
            f"tell whether they fit the data (the estimate assumes the count applies to "
            f"this layer and amplifies noise by 1/(1-w) = {1 / (1 - w):.3g}).",
            "Measure on training data: varshift.diagnose(keras.saving.load_model(path), "
            "data) reports STALE_RUNNING_STATS if the statistics do not fit; "
            "varshift.recalibrate fixes them.")]
    return [Finding(
        "STATS_NEAR_INIT", b.path, "error" if "error" in grades else "warning", evidence,
        counted + estimate + ": the moving statistics are stale. A static file cannot "
        "confirm this (the statistics may have been loaded from a pre-trained model, or "
        "the optimizer re-created); varshift.diagnose on data measures it.",
        f"Train longer, or with momentum <= {0.05 ** (1 / updates):.3g} (which leaves at "
        f"most 5% of the initial values after {_count(updates, 'update')}), or re-estimate the "
        f"statistics on training data after training (varshift.recalibrate).")]


def _unplaced(kfile):
    """``UNPLACED_WEIGHTS``: weight groups of the file that no layer of the config
    accounts for; a warning if some could be a BatchNormalization's."""
    groups = kfile.unplaced
    if not groups and kfile.unplaced_complete:
        return []
    like = [g for g in groups if g.batchnorm_like]
    shown = like or groups
    listed = "; ".join(g.describe() for g in shown[:5]) + (
        f"; ... ({len(shown)} in all)" if len(shown) > 5 else "")
    evidence = {"unplaced_groups": len(groups), "batchnorm_like": len(like)}
    if listed:
        evidence["batchnorm_like_groups" if like else "groups"] = listed
    if not kfile.unplaced_complete:
        evidence["search_stopped_after"] = keras_file.MAX_WEIGHT_GROUPS
    why = ("The config does not describe every layer whose weights the file holds: a "
           "subclassed model or layer (its sub-layers are Python attributes, not config "
           "entries), or a damaged config. ")
    measure = ("Measure on data: varshift.diagnose(keras.saving.load_model(path), data) "
               "sees every BatchNorm of a loaded model, subclassed ones included.")
    if like:
        clue = ("variables named moving_mean and moving_variance" if kfile.format == "h5"
                else "2 to 7 vectors of one length")
        return [Finding(
            "UNPLACED_WEIGHTS", "", "warning", evidence,
            why + f"{_count(len(like), 'weight group')} of the file "
            f"{'looks' if len(like) == 1 else 'look'} like a BatchNormalization's ({clue}); "
            f"inspect cannot check {'it' if len(like) == 1 else 'them'} (no settings, no "
            f"place in the data flow), so no other finding here speaks for "
            f"{'it' if len(like) == 1 else 'them'}.", measure)]
    if not kfile.unplaced_complete:
        return [Finding(
            "UNPLACED_WEIGHTS", "", "warning", evidence,
            f"The weights file holds more groups outside the config's layers than inspect "
            f"visits ({keras_file.MAX_WEIGHT_GROUPS}): those left may hold BatchNormalization "
            f"statistics that go unchecked."
            + (f" {_count(len(groups), 'weight group')} among those visited "
               f"{'is' if len(groups) == 1 else 'are'} not accounted for by the config."
               if groups else ""), measure)]
    return [Finding(
        "UNPLACED_WEIGHTS", "", "info", evidence,
        why + "None of them looks like a BatchNormalization's statistics.",
        "Nothing for the BatchNorm statistics; varshift.diagnose(keras.saving.load_model("
        "path), data) sees every layer of a loaded model.")]


def _frozen(b, graph, trainable):
    moving = sorted(p for p in graph.upstream(b.path)
                    if trainable[p] and (graph.leaves[p].is_batchnorm
                                         or _is_weight_layer(graph.leaves[p])))
    text = ("trainable=False: in Keras 3 (and tf.keras since TF 2.0) the layer then runs in "
            "inference mode also during fit, normalising with its stored moving statistics "
            "and never updating them. ")
    if moving:
        return [Finding(
            "FROZEN_BATCHNORM", b.path, "warning",
            {"trainable_layers_upstream": len(moving), "first": ", ".join(moving[:3])},
            text + "Layers upstream of it are trainable, so training moves its input "
            "distribution away from the statistics it stores, which describe its inputs "
            "from before it was frozen.",
            "Unfreeze it, freeze the layers before it too, or re-estimate its statistics "
            "after training.")]
    return [Finding(
        "FROZEN_BATCHNORM", b.path, "info", {"trainable_layers_upstream": 0},
        text + "Everything upstream is frozen too (the usual fine-tuning set-up), so its "
        "inputs do not change in training: its statistics describe the data it was "
        "trained on before.",
        "Nothing, if the new data resemble the old; else re-estimate its statistics on "
        "the new data.")]


def _dropout(b, dropouts):
    sources = [d for d in dropouts if b.path in d.reaches and d.rate != 0]
    if not sources:
        return []
    bounds = [1 / (1 - d.rate) for d in sources if d.case(b.path) == "a"
              and d.class_name in MULTIPLICATIVE and d.rate is not None and d.rate < 1]
    other_a = any(d.case(b.path) == "a" and (d.class_name not in MULTIPLICATIVE or d.rate is None)
                  for d in sources)
    severity = "warning" if other_a else "info"
    evidence = {"dropout_layers": "; ".join(f"{d.path} ({d.class_name} {d.rate}): "
                                            f"{d.describe_reach(b.path)}" for d in sources)}
    if bounds:
        evidence["min_variance_ratio_case_a"] = max(bounds)
        graded = grade(max(bounds), DROPOUT_SHIFT)
        if graded and SEVERITIES.index(graded) < SEVERITIES.index(severity):
            severity = graded
    return [Finding(
        "DROPOUT_BEFORE_BN", b.path, severity, evidence,
        "Dropout-like noise reaches this BatchNormalization with no other one in between. "
        "In training the noise changes the variance the layer records; at inference it is "
        "gone, so the stored variance does not fit (Li et al.'s variance shift). In case "
        "(a), no weight layer in between, Dropout with rate r through elementwise layers "
        "makes the recorded variance at least 1/(1-r) times the inference one; in case (b) "
        "a weight layer mixes the noise and the shift depends on the weights (small for "
        "wide layers); a static file cannot measure it.",
        "Move the dropout after the last BatchNormalization (e.g. just before the "
        "classifier), or re-estimate the statistics on training data with dropout off.")]
