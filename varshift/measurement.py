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

The passes switch each layer's own mode (:class:`~varshift.backends.Modes`): for a
torch module every ``_BatchNorm`` and every dropout module, and the ``training`` flag
of every other module (so ``F.dropout(x, p, self.training)`` follows the pass); for a
Keras model the ``training`` argument of every BatchNormalization and dropout-like
layer, and the model's own for the other layers. A
BatchNorm kept in inference mode while the rest trains (frozen-BatchNorm fine-tuning,
:attr:`BatchNormStats.frozen`) stays so in the train-mode passes, as in training.

Nothing of the model changes: parameters, buffers, random state, modes, hooks (and a
varshift model's forward caches) are restored, and Dropout masks come from random
state seeded by ``seed``. Where passes agree (the same input, and the same behaviour of
a layer in both modes, as before the first Dropout), a layer of a varshift model is
computed once for all of them, also inside Residual and Concat blocks.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass

import numpy as np

from . import _validate
from ._data import Batches
from ._files import atomic_write
from ._json import loads
from ._process import public
from ._progress import progress_bar
from ._safe_read import read_text
from .backends import EVAL, PASSES, Statistics, session_for
from .findings import FRAMEWORKS, momentum_words
from .nn.layer import preserved
from .stats import RunningMoments, deviation_in_stds, ratio, symmetric_shift

__all__ = ["measure", "Report", "LayerStats", "BatchNormStats", "UncontrolledNoiseWarning",
           "preserved"]


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
    """Property: per-channel mean, or variance (in the layer's convention), of the input
    in one pass."""
    def get(self):
        moments = getattr(self, source)
        return moments.mean if statistic == "mean" else moments.var(1 if self.unbiased else 0)
    get.__doc__ = (f"Per-channel {statistic} of the input in the {source!r} pass, shape (C,)"
                   + (" (unbiased, or the population variance where the layer's running "
                      "variance averages those: see ``unbiased``)." if statistic == "var"
                      else "."))
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
    frozen : bool
        Kept in inference mode while the rest of the model trains (frozen-BatchNorm
        fine-tuning): its running statistics are meant to stay as they are.
    framework : {'varshift', 'torch', 'keras', 'flax'}
        Where the layer comes from: findings quote its momentum in that framework's
        convention (Keras and Flax: the weight of the old value, ``1 - momentum``).
    unbiased : bool
        Whether the running variance estimates the unbiased variance (varshift,
        PyTorch) or the population one (Keras, Flax); the input variances here are
        computed alike, so that freshly recalibrated statistics have a shift of 1.
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
    frozen: bool = False
    framework: str = "varshift"
    unbiased: bool = True

    @property
    def keras_momentum(self) -> bool:
        """Whether the layer's framework states momentum as the old value's weight."""
        return momentum_words(self.framework)[1] == "old"

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
                    "attribution": b.attribution, "frozen": b.frozen,
                    "framework": b.framework, "unbiased": b.unbiased} for b in self.bn],
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
        _check_report_dict(d)
        layers = [LayerStats(r["name"], r["kind"], r["layer"], tuple(r["shape"]),
                             RunningMoments.from_dict(r["train"]),
                             RunningMoments.from_dict(r["eval"])) for r in d["layers"]]
        bn = [BatchNormStats(
            b["name"], b["index"], b["num_features"], b["momentum"], b["eps"],
            b["num_batches_tracked"],
            None if b["moving_mean"] is None else np.asarray(b["moving_mean"]),
            None if b["moving_var"] is None else np.asarray(b["moving_var"]),
            *(RunningMoments.from_dict(b[k]) for k in ("real", "train", "nodrop")),
            frozen=bool(b.get("frozen", False)),
            framework=b.get("framework", "keras" if b.get("keras_momentum") else "varshift"),
            unbiased=bool(b.get("unbiased", True)))
            for b in d["bn"]]
        return cls(layers, bn, d["num_samples"], d["batch_size"], d["seed"])

    @classmethod
    def from_json(cls, text_or_path) -> "Report":
        """Inverse of :meth:`to_json` (JSON text or a path to a file holding it: a
        path-like object, or a one-line string not starting with ``{`` or ``[``).

        Raises
        ------
        OSError
            If the file cannot be opened.
        ValueError
            If the text is not a report's JSON (naming the file, if one was given),
            the file is not a regular file or holds more than ``MAX_TEXT_BYTES``, or
            the JSON is nested more than ``MAX_JSON_DEPTH`` deep.
        """
        text = os.fspath(text_or_path) if isinstance(text_or_path, os.PathLike) \
            else str(text_or_path)
        source = "text"
        if isinstance(text_or_path, os.PathLike) or _looks_like_a_path(text):
            source = repr(text)
            text = read_text(text, "Report.from_json")
        try:
            return cls.from_dict(loads(text, "the JSON"))
        except (ValueError, OverflowError) as err:  # also json.JSONDecodeError
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
            names = [b.name + (" (frozen)" if b.frozen else "") for b in self.bn]
            w = max(12, *map(len, names))
            lines += ["", "BatchNorm inputs (variances averaged over channels; shift = "
                          "max(real/moving, moving/real), 1 = none; a frozen layer keeps its "
                          "statistics in training)",
                      f"{'#':>3} {'layer':<{w}} {'C':>5} {'moving_var':>11} {'real_var':>11} "
                      f"{'train_var':>11} {'shift':>7} {'mean_shift':>10}   attribution of "
                      f"real/moving: upstream x dropout x running_stats"]
            for b, name in zip(self.bn, names):
                a = b.attribution
                moving = float(np.mean(b.moving_var)) if b.moving_var is not None else float("nan")
                lines.append(
                    f"{b.index:>3} {name:<{w}} {b.num_features:>5} {moving:>11.4g} "
                    f"{np.mean(b.real_var):>11.4g} {np.mean(b.train_var):>11.4g} "
                    f"{_ratio(b.shift, 7)} {_ratio(np.mean(b.mean_shift), 10)}   "
                    f"{_ratio(a['upstream'])} x {_ratio(a['dropout'])} x "
                    f"{_ratio(a['running_stats'])}")
        w = max(12, *(len(r.name or "(model)") for r in self.layers)) if self.layers else 12
        lines += ["", "Layer outputs (variance averaged over channels)",
                  f"{'layer':<{w}} {'kind':<11} {'shape':<16} {'train_var':>11} {'eval_var':>11} "
                  f"{'eval/train':>10}"]
        for r in self.layers:
            lines.append(f"{r.name or '(model)':<{w}} {r.kind:<11} {str(r.shape):<16} "
                         f"{r.train_var:>11.4g} {r.eval_var:>11.4g} {_ratio(r.var_ratio, 10)}")
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


def _ratio(value, width=0) -> str:
    """A ratio for a table: four decimals, or four significant digits from 10,000 on
    (a shift of 3.8e14 is not printed as 381726078129144.5000)."""
    text = f"{value:.4f}" if abs(value) < 1e4 or not np.isfinite(value) else f"{value:.4g}"
    return f"{text:>{width}}"


def _looks_like_a_path(text) -> bool:
    """Whether ``Report.from_json``'s string argument names a file rather than holding
    JSON: one short line that does not start like a JSON object or array."""
    return not text.lstrip().startswith(("{", "[")) and "\n" not in text and len(text) < 4096


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_vector(value) -> bool:
    """A list of numbers (None standing for NaN, as :meth:`Report.to_json` writes it)."""
    return isinstance(value, list) and all(v is None or _is_number(v) for v in value)


def _is_moments(value) -> bool:
    return (isinstance(value, dict) and _is_number(value.get("count"))
            and _is_vector(value.get("mean")) and _is_vector(value.get("m2"))
            and len(value["mean"]) == len(value["m2"]))


def _is_text(value) -> bool:
    return isinstance(value, str)


_MOMENTS = (_is_moments, "moments {count, mean, m2}", False)
#: The fields of a report's dict: name -> (check, what it must be, may be None).
_REPORT_FIELDS = {"layers": (lambda v: isinstance(v, list), "a list", False),
                  "bn": (lambda v: isinstance(v, list), "a list", False),
                  "num_samples": (_is_int, "an integer", False),
                  "batch_size": (_is_int, "an integer", True),
                  "seed": (_is_int, "an integer", True)}
_LAYER_FIELDS = {"name": (_is_text, "a string", False),
                 "kind": (_is_text, "a string", False),
                 "layer": (_is_text, "a string", False),
                 "shape": (lambda v: isinstance(v, list) and all(map(_is_int, v)),
                           "a list of integers", False),
                 "train": _MOMENTS, "eval": _MOMENTS}
_BN_FIELDS = {"name": (_is_text, "a string", False),
              "index": (_is_int, "an integer", False),
              "num_features": (lambda v: _is_int(v) and v >= 1, "a positive integer", False),
              "momentum": (_is_number, "a number", True),
              "eps": (_is_number, "a number", False),
              "num_batches_tracked": (_is_int, "an integer", True),
              "moving_mean": (_is_vector, "a list of numbers", True),
              "moving_var": (_is_vector, "a list of numbers", True),
              "real": _MOMENTS, "train": _MOMENTS, "nodrop": _MOMENTS}


def _check_fields(record, where, fields):
    if not isinstance(record, dict):
        raise ValueError(f"{where} must be an object, got {_validate.shown(record)}")
    for key, (check, expected, optional) in fields.items():
        if key not in record:
            raise ValueError(f"{where}: missing {key!r}")
        value = record[key]
        if not (value is None and optional) and not check(value):
            raise ValueError(f"{where}.{key} must be {expected}, got {_validate.shown(value)}")


def _check_report_dict(d):
    """ValueError naming the first field of ``d`` that a report's dict cannot hold."""
    _check_fields(d, "the report", _REPORT_FIELDS)
    for i, record in enumerate(d["layers"]):
        _check_fields(record, f"layers[{i}]", _LAYER_FIELDS)
    for i, record in enumerate(d["bn"]):
        _check_fields(record, f"bn[{i}]", _BN_FIELDS)
        if record.get("framework", "varshift") not in FRAMEWORKS:
            raise ValueError(f"bn[{i}].framework must be one of {', '.join(map(repr, FRAMEWORKS))}"
                             f", got {_validate.shown(record['framework'])}")
        for key in ("moving_mean", "moving_var"):
            if record[key] is not None and len(record[key]) != record["num_features"]:
                raise ValueError(f"bn[{i}].{key} has {len(record[key])} values, its "
                                 f"num_features is {record['num_features']}")


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


class UncontrolledNoiseWarning(UserWarning):
    """Inference-mode outputs of one batch differ between two runs: some noise does
    not follow the modes varshift sets (e.g. ``F.dropout(x, p, training=True)``)."""


BATCH_SIZE = 256
""":func:`measure`'s default batch size."""


@public()
def measure(model, data, *, batch_size=BATCH_SIZE, seed=0, progress=False, input_key=None) -> Report:
    """Measure train-mode and inference-mode statistics of every layer, and the
    variance shift of every BatchNorm layer.

    Parameters
    ----------
    model : varshift.nn.Layer, torch.nn.Module, Keras 3 model or Flax NNX module
        Not changed (see Notes). A torch module is measured on its device, in the
        dtype of its parameters.
    data : array or tensor of shape (N, ...), (x, y) pair, or iterable of batches
        Inputs (labels are ignored). Batches may be arrays, tensors, ``(x, y)``
        pairs (for torch also lists, as a ``DataLoader`` gives them) or dicts (see
        ``input_key``). An iterable is consumed once.
    batch_size : int, default 256
        Batch size for array data (BatchNorm normalises with statistics of this many
        samples in the train-mode passes).
    seed : int, default 0
        Seed of the Dropout masks in the train-mode pass.
    progress : bool, default False
        Progress on stderr (a tqdm bar on a terminal, a few plain lines in a log).
    input_key : hashable, optional
        For dict batches: the key of the model's input (e.g. ``'image'``).

    Returns
    -------
    Report

    Raises
    ------
    TypeError, ValueError
        For bad arguments or data (the message names them); data that does not fit
        a varshift model names the batch and the layer.
    varshift.NonFiniteError
        If a layer's outputs are not finite.

    Warns
    -----
    UncontrolledNoiseWarning
        For a torch module whose inference-mode output is random (noise that does not
        follow the modules' ``training`` flags): its inference statistics include
        that noise.

    Notes
    -----
    Statistics accumulate in float64 with Chan's mergeable update: memory is
    O(batch + channels), independent of the data size. Variances of BatchNorm inputs
    are unbiased, like the running variance. See the module docstring for the three
    passes and the attribution of the shift. Parameters, buffers (running statistics
    and ``num_batches_tracked`` included), modes, hooks and random state are the same
    afterwards, also when the call fails or is interrupted.
    """
    session = session_for(model, "measure")
    seed = _validate.seed(seed, "seed", "measure")
    progress = _validate.flag(progress, "progress", "measure")
    batches = data if isinstance(data, Batches) else session.batches(
        data, batch_size, "measure", input_key=input_key)
    return measure_with(session, batches, seed, progress)


def measure_with(session, batches, seed, progress, warn=True, passes=tuple(PASSES)) -> Report:
    """:func:`measure` on checked arguments, through the model's backend.

    Parameters
    ----------
    session : varshift.backends.Session
    batches : varshift._data.Batches
    seed : int or None
    progress : bool
    warn : bool, default True
        Warn if inference is random (for backends where noise can escape the modes).
    passes : tuple of str, default all of ``PASSES``
        The passes to run. ``('eval',)`` is enough for the shifts (:attr:`BatchNormStats.shift`
        reads the inference-mode moments and the running statistics only), at a third of the
        work; the moments of the passes left out are empty.

    Returns
    -------
    Report
    """
    stats = Statistics()
    num_samples, seen_batch_size, noise = 0, None, 0.0
    with session.preserved(seed), np.errstate(over="ignore", invalid="ignore"):
        for i, x in enumerate(progress_bar(batches, progress, batches.num_batches, "measure")):
            with _validate.reraise_with_context(f"measure: {batches.name} batch {i} of "
                                               f"shape {tuple(x.shape)}"):
                session.run_passes(x, {p: PASSES[p] for p in passes}, stats)
            num_samples += len(x)
            seen_batch_size = seen_batch_size or len(x)
        if warn and session.hidden_noise_possible:
            noise = inference_noise(session, batches.first)
    if noise > 0:
        warnings.warn(f"measure: the model's inference-mode output is random (two runs of "
                      f"one batch differ by {noise:.3g} of its scale): some noise does not "
                      f"follow the modules' training flags, e.g. F.dropout(x, p, "
                      f"training=True) in a forward method; the inference statistics include "
                      f"it", UncontrolledNoiseWarning, stacklevel=_validate.user_stacklevel())

    layers = []
    for info in session.layers():
        if info.name not in stats.shapes:
            continue  # not called on these data
        channels = stats.channels(info.name)
        layers.append(LayerStats(info.name, info.kind, info.description,
                                 stats.shapes[info.name],
                                 *(stats.moments("outputs", p, info.name, channels)
                                   for p in ("train", "eval"))))
    bn, infos = [], session.batchnorms()
    for i, info in enumerate(infos):
        mean, var, tracked = session.running_stats(info.name) or (None, None, None)
        bn.append(BatchNormStats(
            info.name, i, info.num_features, info.momentum, info.eps, tracked, mean, var,
            *(stats.moments("inputs", p, info.name, info.num_features)
              for p in ("eval", "train", "nodrop")), frozen=info.frozen,
            framework=info.framework, unbiased=info.unbiased))
    # inference outputs after a BatchNorm with damaged running statistics are NaN by
    # that damage (diagnose reports it, recalibrate replaces it), not by divergence
    damaged = any(_validate.damaged_stats(b.moving_mean, b.moving_var)
                  for b in bn if b.moving_var is not None)
    checked = [p for p in (("train",) if damaged else ("train", "eval")) if p in passes]
    for record in layers:
        _check_finite(record, checked)
    for b, info in zip(bn, infos):
        if "train" in passes:
            _check_in_range(b, info)
    return Report(layers, bn, num_samples, seen_batch_size, seed)


def inference_noise(session, x) -> float:
    """How much two inference-mode runs of (up to 64 samples of) batch ``x`` differ:
    the largest absolute difference of the outputs over their largest absolute value
    (0 for a deterministic model; inf where only one of them is finite). Call inside
    ``session.preserved``."""
    x = x[:64]
    first, second = session.output(x, EVAL), session.output(x, EVAL)
    same = (first == second) | (np.isnan(first) & np.isnan(second))
    if same.all():
        return 0.0
    scale = max(float(np.max(np.abs(np.nan_to_num(first, posinf=0, neginf=0)), initial=0)),
                1e-12)
    with np.errstate(invalid="ignore"):
        return float(np.nan_to_num(np.max(np.abs(first - second)[~same]), nan=np.inf)) / scale


def _check_in_range(b: BatchNormStats, info):
    """NonFiniteError where a BatchNorm's train-mode batch statistics overflow its dtype
    (its output is then meaningless, e.g. all zeros, though finite)."""
    if b.frozen:
        return
    largest = max(float(np.nanmax(b.train_var, initial=0)), float(np.nanmax(b.nodrop_var,
                                                                           initial=0)))
    if largest > info.largest:
        raise _validate.NonFiniteError(
            f"measure: BatchNorm {b.name!r} receives inputs whose variance ({largest:.3g}) "
            f"is beyond what its batch statistics can hold ({info.largest:.3g}): they "
            f"overflow in train mode, so its train-mode outputs are meaningless; scale the "
            f"inputs down")


def _check_finite(record: LayerStats, modes):
    for name in modes:
        moments = getattr(record, name)
        if not (np.all(np.isfinite(moments.mean)) and np.all(np.isfinite(moments.m2))):
            raise _validate.NonFiniteError(
                f"measure: layer {record.name!r} ({record.layer}) produced non-finite outputs "
                f"in {name} mode; the model's weights or inputs are out of range")
