"""``varshift.measure``: per-layer statistics in train and inference mode, BatchNorm's
running statistics against the real ones, and Li et al.'s variance shift.

For every batch the model runs in three passes:

* ``train``: Dropout active, BatchNorm normalising with batch statistics -- what
  training saw;
* ``eval``: inference mode -- what the user gets. The statistics of each BatchNorm
  input here are Li et al.'s *real* statistics (their protocol, section 4), to be
  compared with the layer's *moving* (running) ones;
* ``nodrop``: Dropout off, BatchNorm with batch statistics -- the counterfactual that
  attributes the shift.

Per BatchNorm layer the variance ratio then factorises exactly (variances averaged over
channels)::

    real / moving = (real / nodrop) * (nodrop / train) * (train / moving)
                     upstream BN        Dropout           stale or noisy
                     running stats                        running stats

Nothing of the model changes: buffers, random streams, modes and forward caches are
restored, and Dropout masks come from streams seeded by ``seed``. Where passes agree (the
same input, and the same behaviour of a layer in both modes, as before the first
Dropout), a layer of a Sequential model is computed once for all of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from . import _validate
from ._data import Batches
from ._files import atomic_write
from ._progress import progress_bar
from .nn import BatchNorm, Sequential
from .nn.layer import preserved
from .stats import RunningMoments, deviation_in_stds, ratio, symmetric_shift

__all__ = ["measure", "Report", "LayerStats", "BatchNormStats", "preserved"]

PASSES = {
    "eval": {"default": "eval"},
    "train": {"default": "train"},
    "nodrop": {"batchnorm": "train", "dropout": "eval", "default": "eval"},
}


@dataclass
class LayerStats:
    """Output statistics of one layer in train and in inference mode.

    Attributes
    ----------
    name : str
        Path in the model (``'3'``, ``'2.body.0'``).
    kind : str
        ``'conv'``, ``'batchnorm'``, ``'dropout'``, ...
    layer : str
        The layer's repr.
    shape : tuple of int
        Output shape of one sample.
    train, eval : RunningMoments
        Per-channel (axis 1) moments of the output.
    """

    name: str
    kind: str
    layer: str
    shape: tuple
    train: RunningMoments
    eval: RunningMoments

    @property
    def train_var(self) -> float:
        """Output variance in train mode, averaged over channels."""
        return float(np.mean(self.train.var(1)))

    @property
    def eval_var(self) -> float:
        """Output variance in inference mode, averaged over channels."""
        return float(np.mean(self.eval.var(1)))

    @property
    def var_ratio(self) -> float:
        """``eval_var / train_var`` (Li et al.'s Delta for this layer's output; 1 when
        both are 0)."""
        return float(ratio(self.eval_var, self.train_var))


def _moment(source, statistic):
    """Property: per-channel mean, or unbiased variance, of the input in one pass."""
    def get(self):
        moments = getattr(self, source)
        return moments.mean if statistic == "mean" else moments.var(1)
    get.__doc__ = f"Per-channel {statistic} of the input in the {source!r} pass, shape (C,)."
    return property(get)


@dataclass
class BatchNormStats:
    """One BatchNorm layer: its running statistics and those of its input.

    Attributes
    ----------
    name : str
    index : int
        Position among the model's BatchNorm layers (Li et al.'s x-axis).
    num_features, momentum, eps, num_batches_tracked
        The layer's settings and counter (``momentum`` None: cumulative).
    moving_mean, moving_var : ndarray of shape (C,) or None
        The running statistics (None without ``track_running_stats``).
    real, train, nodrop : RunningMoments
        Input moments in the ``eval``, ``train`` and ``nodrop`` passes.
    """

    name: str
    index: int
    num_features: int
    momentum: float | None
    eps: float
    num_batches_tracked: int | None
    moving_mean: np.ndarray | None
    moving_var: np.ndarray | None
    real: RunningMoments
    train: RunningMoments
    nodrop: RunningMoments

    # per-channel statistics of the input (unbiased variances, as BatchNorm stores)
    real_mean = _moment("real", "mean")
    real_var = _moment("real", "var")
    train_mean = _moment("train", "mean")
    train_var = _moment("train", "var")
    nodrop_mean = _moment("nodrop", "mean")
    nodrop_var = _moment("nodrop", "var")

    def _avg_ratio(self, a, b):
        if a is None or b is None:
            return float("nan")
        return float(ratio(np.mean(a), np.mean(b)))

    @property
    def var_ratio(self) -> float:
        """``mean(real_var) / mean(moving_var)``: an estimate of Li et al.'s
        Delta = Var_test / Var_train (the shift is ``max(r, 1/r)``)."""
        return self._avg_ratio(self.real_var, self.moving_var)

    @property
    def shift(self) -> float:
        """Li et al.'s metric ``max(r, 1/r)``, r = var_ratio (1 means no shift)."""
        return symmetric_shift(self.var_ratio)

    @property
    def channel_shift(self):
        """The same metric per channel, shape (C,) (1 for a channel whose real and
        moving variances are both 0)."""
        if self.moving_var is None:
            return np.full(self.num_features, np.nan)
        return symmetric_shift(ratio(self.real_var, self.moving_var))

    @property
    def mean_shift(self):
        """``|real_mean - moving_mean| / sqrt(moving_var)`` per channel, shape (C,)
        (0 for equal means, also when the moving variance is 0)."""
        if self.moving_var is None:
            return np.full(self.num_features, np.nan)
        return deviation_in_stds(self.real_mean, self.moving_mean, self.moving_var)

    @property
    def attribution(self) -> dict:
        """Factors of :attr:`var_ratio`: ``{'upstream': real/nodrop, 'dropout':
        nodrop/train, 'running_stats': train/moving}`` (their product is var_ratio).

        A factor below 1 means the later quantity is smaller: ``dropout < 1`` is
        Dropout inflating the train-mode variance.
        """
        return {"upstream": self._avg_ratio(self.real_var, self.nodrop_var),
                "dropout": self._avg_ratio(self.nodrop_var, self.train_var),
                "running_stats": self._avg_ratio(self.train_var, self.moving_var)}


class Report:
    """Result of :func:`measure`; compute once, print, save and plot many times.

    Attributes
    ----------
    layers : list of LayerStats
        Every layer except plain Sequential containers, in network order.
    bn : list of BatchNormStats
        The BatchNorm layers, in network order (empty if the model has none).
    num_samples, seed : int
    batch_size : int
        Samples in the first batch measured: the batch size the data actually had
        (``measure``'s ``batch_size`` for arrays larger than it, the array's length
        otherwise, the iterable's own batch size for batches).
    """

    def __init__(self, layers, bn, num_samples, batch_size, seed):
        self.layers = list(layers)
        self.bn = list(bn)
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.seed = seed

    # ------------------------------------------------------------------ combine
    def merge(self, other: "Report") -> "Report":
        """Statistics over the data of both reports (e.g. two shards of a data set).

        Both must come from the same model (same layers and running statistics).
        """
        if not isinstance(other, Report):
            raise TypeError(f"Report.merge: other must be a Report, got {_validate.shown(other)}")
        if [(r.name, r.kind) for r in self.layers] != [(r.name, r.kind) for r in other.layers] \
                or [b.name for b in self.bn] != [b.name for b in other.bn]:
            raise ValueError("Report.merge: the reports come from different architectures")
        for a, b in zip(self.bn, other.bn):
            if not (_same(a.moving_mean, b.moving_mean) and _same(a.moving_var, b.moving_var)):
                raise ValueError(f"Report.merge: BatchNorm {a.name!r} has different running "
                                 f"statistics in the two reports (different models)")
        layers = [LayerStats(a.name, a.kind, a.layer, a.shape, a.train.merge(b.train),
                             a.eval.merge(b.eval)) for a, b in zip(self.layers, other.layers)]
        bn = [BatchNormStats(**{**a.__dict__, "real": a.real.merge(b.real),
                                "train": a.train.merge(b.train),
                                "nodrop": a.nodrop.merge(b.nodrop)})
              for a, b in zip(self.bn, other.bn)]
        return Report(layers, bn, self.num_samples + other.num_samples, self.batch_size, self.seed)

    # ------------------------------------------------------------------ export
    def to_dict(self) -> dict:
        """Everything, as JSON-ready built-ins: raw accumulators plus derived numbers."""
        def arr(a):
            return None if a is None else np.asarray(a, float).tolist()

        return {
            "num_samples": self.num_samples, "batch_size": self.batch_size, "seed": self.seed,
            "layers": [{"name": r.name, "kind": r.kind, "layer": r.layer, "shape": list(r.shape),
                        "train": r.train.to_dict(), "eval": r.eval.to_dict(),
                        "train_var": r.train_var, "eval_var": r.eval_var,
                        "var_ratio": r.var_ratio} for r in self.layers],
            "bn": [{"name": b.name, "index": b.index, "num_features": b.num_features,
                    "momentum": b.momentum, "eps": b.eps,
                    "num_batches_tracked": b.num_batches_tracked,
                    "moving_mean": arr(b.moving_mean), "moving_var": arr(b.moving_var),
                    "real": b.real.to_dict(), "train": b.train.to_dict(),
                    "nodrop": b.nodrop.to_dict(), "shift": b.shift, "var_ratio": b.var_ratio,
                    "channel_shift": arr(b.channel_shift), "mean_shift": arr(b.mean_shift),
                    "attribution": b.attribution} for b in self.bn],
        }

    def to_json(self, path=None, **kwargs) -> str:
        """JSON text of :meth:`to_dict`; also written to ``path`` if given (atomically:
        an existing file is replaced only by a complete one)."""
        text = json.dumps(_nan_to_none(self.to_dict()), **kwargs)
        if path is not None:
            with atomic_write(path, "w", "Report.to_json") as f:
                f.write(text)
        return text

    @classmethod
    def from_dict(cls, d: dict) -> "Report":
        """Inverse of :meth:`to_dict`; ValueError if ``d`` is not a report's dict."""
        try:
            return cls._from_dict(d)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            detail = f"missing {err.args[0]!r}" if isinstance(err, KeyError) else str(err)
            raise ValueError(f"Report.from_dict: not a varshift report ({detail})") from err

    @classmethod
    def _from_dict(cls, d):
        layers = [LayerStats(r["name"], r["kind"], r["layer"], tuple(r["shape"]),
                             RunningMoments.from_dict(r["train"]),
                             RunningMoments.from_dict(r["eval"])) for r in d["layers"]]
        bn = [BatchNormStats(
            b["name"], b["index"], b["num_features"], b["momentum"], b["eps"],
            b["num_batches_tracked"],
            None if b["moving_mean"] is None else np.asarray(b["moving_mean"]),
            None if b["moving_var"] is None else np.asarray(b["moving_var"]),
            *(RunningMoments.from_dict(b[k]) for k in ("real", "train", "nodrop")))
            for b in d["bn"]]
        return cls(layers, bn, d["num_samples"], d["batch_size"], d["seed"])

    @classmethod
    def from_json(cls, text_or_path) -> "Report":
        """Inverse of :meth:`to_json` (JSON text or a path to a file holding it).

        Raises
        ------
        OSError
            If the file cannot be read.
        ValueError
            If the text is not a report's JSON (naming the file, if one was given).
        """
        text = str(text_or_path)
        source = "text"
        if not text.lstrip().startswith("{"):
            source = repr(text)
            with open(text) as f:
                text = f.read()
        try:
            return cls.from_dict(json.loads(text))
        except ValueError as err:  # also json.JSONDecodeError
            raise ValueError(f"Report.from_json: {source} is not a varshift report's JSON "
                             f"({err})") from err

    # ------------------------------------------------------------------ display
    def __str__(self) -> str:
        lines = [f"varshift report: {self.num_samples} samples, batch {self.batch_size}, "
                 f"seed {self.seed}"]
        if not self.bn:
            lines.append("The model has no BatchNorm layer: no running statistics to compare, "
                         "no variance shift in Li et al.'s sense.")
        else:
            lines += ["", "BatchNorm inputs (variances averaged over channels; shift = "
                          "max(real/moving, moving/real), 1 = none)",
                      f"{'#':>3} {'layer':<12} {'C':>5} {'moving_var':>11} {'real_var':>11} "
                      f"{'train_var':>11} {'shift':>7} {'mean_shift':>10}   attribution of "
                      f"real/moving: upstream x dropout x running_stats"]
            for b in self.bn:
                a = b.attribution
                moving = float(np.mean(b.moving_var)) if b.moving_var is not None else float("nan")
                lines.append(
                    f"{b.index:>3} {b.name:<12} {b.num_features:>5} {moving:>11.4g} "
                    f"{np.mean(b.real_var):>11.4g} {np.mean(b.train_var):>11.4g} "
                    f"{b.shift:>7.4f} {np.mean(b.mean_shift):>10.4f}   "
                    f"{a['upstream']:.4f} x {a['dropout']:.4f} x {a['running_stats']:.4f}")
        lines += ["", "Layer outputs (variance averaged over channels)",
                  f"{'layer':<12} {'kind':<11} {'shape':<16} {'train_var':>11} {'eval_var':>11} "
                  f"{'eval/train':>10}"]
        for r in self.layers:
            lines.append(f"{r.name or '(model)':<12} {r.kind:<11} {str(r.shape):<16} "
                         f"{r.train_var:>11.4g} {r.eval_var:>11.4g} {r.var_ratio:>10.4f}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.__str__()

    def plot(self, ax=None, kind="shift", layer=None, label=None):
        """Draw the report; returns the Axes.

        Parameters
        ----------
        ax : matplotlib Axes, optional
        kind : {'shift', 'channels', 'layers'}
            ``'shift'``: the shift per BatchNorm layer index (Li et al.'s Fig. 1);
            ``'channels'``: moving against real variance per channel of one BatchNorm
            layer; ``'layers'``: train against inference output variance per layer.
        layer : str or int, optional
            For ``'channels'``: a BatchNorm name or index (default: largest shift).
        label : str, optional
            For ``'shift'``: legend label of the curve (to compare reports on one Axes).
        """
        from . import plots

        if kind == "shift":
            return plots.plot_bn_shift(self, ax=ax, label=label)
        if kind == "channels":
            return plots.plot_bn_channels(self, layer=layer, ax=ax)
        if kind == "layers":
            return plots.plot_layer_variance(self, ax=ax)
        raise ValueError(f"Report.plot: kind must be 'shift', 'channels' or 'layers', got {kind!r}")


def _same(a, b):
    return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))


def _nan_to_none(value):
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def recorded_layers(model):
    """``(path, layer)`` of the layers a report describes: all but Sequential containers."""
    return [(path, layer) for path, layer in model.walk() if not isinstance(layer, Sequential)]


def batchnorm_layers(model):
    """``(path, layer)`` of the model's BatchNorm layers, in network order."""
    return [(path, layer) for path, layer in model.walk() if isinstance(layer, BatchNorm)]


def measure(model, data, *, batch_size=256, seed=0, progress=False) -> Report:
    """Measure train-mode and inference-mode statistics of every layer, and the
    variance shift of every BatchNorm layer.

    Parameters
    ----------
    model : varshift.nn.Layer
    data : ndarray of shape (N, ...), (x, y) pair, or iterable of batches
        Inputs (labels are ignored). An iterable is consumed once.
    batch_size : int, default 256
        Batch size for array data (BatchNorm normalises with statistics of this many
        samples in the train-mode passes).
    seed : int, default 0
        Seed of the Dropout masks in the train-mode pass.
    progress : bool, default False
        Progress on stderr (a tqdm bar on a terminal, a few plain lines in a log).

    Returns
    -------
    Report

    Raises
    ------
    TypeError, ValueError
        For bad arguments or data (the message names them); data that does not fit
        the model names the batch and the layer.
    varshift.NonFiniteError
        If a layer's outputs are not finite.

    Notes
    -----
    Statistics accumulate in float64 with Chan's mergeable update: memory is
    O(batch + channels), independent of the data size. Variances of BatchNorm inputs
    are unbiased, like the running variance. See the module docstring for the three
    passes and the attribution of the shift.
    """
    _validate.model(model, "measure")
    seed = _validate.seed(seed, "seed", "measure")
    progress = _validate.flag(progress, "progress", "measure")
    batches = data if isinstance(data, Batches) else Batches(data, batch_size, "measure")
    records = recorded_layers(model)
    bns = batchnorm_layers(model)
    outputs = {name: {} for name in PASSES}
    inputs = {name: {} for name in PASSES}
    current = {}

    def add(store, path, x, channels):
        batch = RunningMoments(channels).update(x)
        for name in current["passes"]:
            old = store[name].get(path)
            store[name][path] = batch if old is None else old.merge(batch)

    def hook(path):
        def record(layer, x, out):
            out2 = out if out.ndim > 1 else out[:, None]
            add(outputs, path, out2, out2.shape[1])
            shapes[path] = out.shape[1:]
            if isinstance(layer, BatchNorm):
                add(inputs, path, x, layer.num_features)
        return record

    shapes = {}
    stages = model.layers if isinstance(model, Sequential) else [model]
    handles = [layer.add_hook(hook(path)) for path, layer in records]
    num_samples, seen_batch_size = 0, None
    try:
        with preserved(model, seed) as pristine, np.errstate(over="ignore", invalid="ignore"):
            for i, x in enumerate(progress_bar(batches, progress, batches.num_batches, "measure")):
                with _validate.reraise_with_context(f"measure: {batches.name} batch {i} of "
                                                   f"shape {x.shape}"):
                    _run_passes(model, stages, x, current, pristine)
                num_samples += len(x)
                seen_batch_size = seen_batch_size or len(x)
    finally:
        for handle in handles:
            handle.remove()

    layers = [LayerStats(path, layer.kind, repr(layer) if not layer.children() else type(layer).__name__,
                         tuple(shapes[path]), outputs["train"][path], outputs["eval"][path])
              for path, layer in records]
    bn = [BatchNormStats(
        path, i, layer.num_features, layer.momentum, layer.eps,
        int(layer.buffers["num_batches_tracked"]) if layer.track_running_stats else None,
        layer.buffers["running_mean"].astype(float) if layer.track_running_stats else None,
        layer.buffers["running_var"].astype(float) if layer.track_running_stats else None,
        inputs["eval"][path], inputs["train"][path], inputs["nodrop"][path])
        for i, (path, layer) in enumerate(bns)]
    for record in layers:
        _check_finite(record)
    return Report(layers, bn, num_samples, seen_batch_size, seed)


def _behaviour(layer, pass_name):
    """What ``layer``'s subtree computes in a pass: equal tuples mean equal outputs for
    equal inputs; None when the pass makes it random (active noise)."""
    signature = []
    for _, sub in layer.walk():
        training = _pass_mode(sub, pass_name)
        if isinstance(sub, BatchNorm):
            signature.append(training or not sub.track_running_stats)
        elif sub.kind == "dropout":
            if training:
                return None
            signature.append(False)
    return tuple(signature)


def _pass_mode(layer, pass_name):
    mode = PASSES[pass_name]
    wanted = mode.get(layer.kind, mode["default"])
    return wanted == "train"


def _run_passes(model, stages, x, current, pristine):
    """Run every pass on batch ``x`` stage by stage (the root's layers), computing each
    stage once for all passes that give it the same input and behave alike in it."""
    values = {name: x for name in PASSES}
    for stage in stages:
        groups = {}
        for name in PASSES:
            behaviour = _behaviour(stage, name)
            key = (id(values[name]), behaviour) if behaviour is not None else (name,)
            groups.setdefault(key, []).append(name)
        new_values = {}
        for group in groups.values():
            updates_stats = False
            for _, sub in stage.walk():
                sub.training = _pass_mode(sub, group[0])
                updates_stats |= isinstance(sub, BatchNorm) and sub.training and sub.track_running_stats
            current["passes"] = group
            out = stage(values[group[0]])
            if updates_stats:
                model.load_state_dict(pristine, strict=False)  # undo running-stat updates
            for name in group:
                new_values[name] = out
        values = new_values


def _check_finite(record: LayerStats):
    for name in ("train", "eval"):
        moments = getattr(record, name)
        if not (np.all(np.isfinite(moments.mean)) and np.all(np.isfinite(moments.m2))):
            raise _validate.NonFiniteError(
                f"measure: layer {record.name!r} ({record.layer}) produced non-finite outputs "
                f"in {name} mode; the model's weights or inputs are out of range")
