"""``varshift.diagnose``: name what is wrong with a model's BatchNorm statistics.

Each check is structural (the architecture, the layers' settings), measured (a
:class:`~varshift.measurement.Report`), or both, and produces a :class:`Finding` with the
evidence numbers, an explanation and a suggested fix. The thresholds are the module
constants below.
"""

from __future__ import annotations

import numpy as np

from . import _validate
from ._process import public
from .backends import EVAL, session_for
from .backends.numpy_engine import dropout_upstream_of_batchnorm
from .findings import Finding, grade, in_convention, momentum_words, possessive
from .measurement import Report, inference_noise, measure_with
from .stats import deviation_in_stds, ratio, symmetric_shift

__all__ = ["diagnose", "dropout_upstream_of_batchnorm", "momentum_like_other_convention"]

#: Dropout-attributed shift max(r, 1/r) that is reported (warning) or serious (error).
DROPOUT_SHIFT = (1.05, 1.2)
#: Shift of the running statistics against the train-mode ones, and mean drift in
#: standard deviations, that make them stale (warning, error).
STALE_SHIFT = (1.2, 1.5)
STALE_MEAN = (0.2, 0.5)
#: Values per channel in one batch below which batch statistics are noisy (warning, error).
SMALL_BATCH = (32, 8)
#: Relative change of inference-mode outputs with the batch composition.
BATCH_DEPENDENCE = 1e-4
#: A momentum at least this large looks like Keras' convention used as PyTorch's.
KERAS_LIKE_MOMENTUM = 0.5
#: Shift of the first BatchNorm beyond which its inputs' scale differs from training's.
INPUT_SCALE_SHIFT = 100.0

@public()
def diagnose(model, data, *, batch_size=256, train_batch_size=None, seed=0, report=None,
             progress=False, input_key=None) -> list:
    """Check a model's BatchNorm layers for the problems users run into.

    Parameters
    ----------
    model : varshift.nn.Layer, torch.nn.Module, Keras 3 model or Flax NNX module
        Not changed.
    data : array or tensor, (x, y) pair, or iterable of batches (e.g. a DataLoader)
        Inputs to measure on, typically (a sample of) the training data. An iterable
        is read once, so a generator works: its first batch is kept for the
        batch-dependence check.
    batch_size : int, default 256
        Batch size of the measurement.
    train_batch_size : int, optional
        The batch size the model is trained with, for ``SMALL_BATCH_STATS``
        (default: the batch size of the measurement, ``report.batch_size``).
    seed : int, default 0
    report : Report, optional
        A measurement of ``model`` to reuse (from :func:`~varshift.measure` on
        ``data``). It must describe this model as it is now: the same layers and
        channels, and the same running statistics.
    progress : bool, default False
        Progress on stderr (a tqdm bar on a terminal, a few plain lines in a log).
    input_key : hashable, optional
        For dict batches: the key of the model's input.

    Returns
    -------
    list of Finding
        Most severe first; empty for a healthy model.

    Raises
    ------
    TypeError, ValueError
        For bad arguments (naming them), and for a ``report`` of another model, or
        of this model before its running statistics changed.

    Notes
    -----
    Codes (all of them, with their sources: :data:`varshift.findings.CODES` and
    ``docs/findings.md``): ``DAMAGED_RUNNING_STATS`` (a running mean or variance that is
    NaN or infinite, or a negative running variance: values no update produces; the
    variance shift of that layer, and the inference statistics after it, are undefined
    then), ``INPUT_SCALE`` (the first BatchNorm's inputs are orders of magnitude away
    from its running statistics; later layers are then not called stale),
    ``DROPOUT_BEFORE_BN`` (noise, found by its behaviour, reaches a BatchNorm; graded on
    what inference suffers now: info once the statistics match inference, e.g. after
    recalibration, or for a frozen BatchNorm), ``STALE_RUNNING_STATS`` (running
    statistics far from both the train-mode and the inference-mode statistics of the
    current weights, graded on what normalisation divides by, the variance plus
    ``eps``), ``STATS_AT_INIT`` (running mean 0 and variance 1 untouched),
    ``SMALL_BATCH_STATS`` (too few values per channel per batch),
    ``EVAL_BATCH_DEPENDENT`` (inference-mode outputs change with batch composition; the
    BatchNorms responsible are found by behaviour), ``SUSPICIOUS_MOMENTUM`` (a momentum
    that looks like the other framework's convention, or one that never updates),
    ``EVAL_NOT_DETERMINISTIC`` (torch, Keras and Flax models: inference-mode outputs of
    one batch differ between two runs, noise that does not follow the mode switches).
    Evidence and fixes quote momentum in the framework's convention (the weight of the
    new batch in PyTorch and varshift, of the old value in Keras and Flax). A frozen
    BatchNorm (kept in inference mode while the rest trains: torch ``eval()`` with
    ``requires_grad=False``, Keras ``trainable=False``, Flax ``use_running_average=True``,
    the engine's ``bn.eval()`` in a model in train mode) is not reported as stale.
    """
    session = session_for(model, "diagnose")
    if train_batch_size is not None:
        train_batch_size = _validate.integer(train_batch_size, "train_batch_size", "diagnose")
    seed = _validate.seed(seed, "seed", "diagnose")
    progress = _validate.flag(progress, "progress", "diagnose")
    batches = session.batches(data, batch_size, "diagnose", input_key=input_key)
    if report is None:
        report = measure_with(session, batches, seed, progress, warn=False)
    else:
        if not isinstance(report, Report):
            raise TypeError(f"diagnose: report must be a varshift Report (from "
                            f"varshift.measure), got {_validate.shown(report)}")
        with session.preserved(seed):
            session.trace(next(iter(batches)))  # reads (only) the first batch
        _check_report(report, session)
    sample = batches.first
    with session.preserved(seed), np.errstate(all="ignore"):
        upstream = session.noise_upstream(sample)
        noise = inference_noise(session, sample) if session.hidden_noise_possible else 0.0
    shapes = {r.name: r.shape for r in report.layers}
    findings = _input_scale(report.bn[0], session.adapter.to_numpy(sample)) if report.bn else []
    for b in report.bn:
        findings += _momentum(b)
        damaged = _damaged(b)
        at_init = _at_init(b)
        findings += damaged + at_init
        findings += _dropout(b, upstream.get(b.name, []), session)
        if not (damaged or at_init or b.frozen or findings and findings[0].code == "INPUT_SCALE"):
            findings += _stale(b)
        findings += _small_batch(b, shapes.get(b.name), train_batch_size or report.batch_size)
    if noise > 0:
        findings += _not_deterministic(noise)
    else:
        findings += _batch_dependence(session, sample, seed)
    order = {r.name: i for i, r in enumerate(report.layers)}
    findings.sort(key=lambda f: (f.rank, order.get(f.layer, -1)))
    return findings


def _check_report(report, session):
    """ValueError unless ``report`` describes the session's model as it is now."""
    expected = [(layer.name, layer.kind) for layer in session.layers()]
    got = [(r.name, r.kind) for r in report.layers]
    if got != expected:
        raise ValueError(
            f"diagnose: report describes another model: its layers are "
            f"{_layer_list(got)}, the model's are {_layer_list(expected)}; measure this "
            f"model (varshift.measure(model, data)) or leave report out")
    for b, layer in zip(report.bn, session.batchnorms()):
        path = layer.name
        if b.name != path or b.num_features != layer.num_features:
            raise ValueError(f"diagnose: report describes another model: BatchNorm {b.name!r} "
                             f"with {b.num_features} channels, the model has {path!r} with "
                             f"{layer.num_features}")
        current = (session.running_stats(path) or (None, None))[:2]
        for name, stored, now in zip(("mean", "var"), (b.moving_mean, b.moving_var), current):
            if (stored is None) != (now is None) or (
                    now is not None and not np.array_equal(stored, now, equal_nan=True)):
                raise ValueError(
                    f"diagnose: report was measured with other running statistics (running_"
                    f"{name} of BatchNorm {path!r} differs): it describes this model before "
                    f"recalibration or further training, or another model; measure again")


def _layer_list(pairs, limit=6):
    shown = ", ".join(f"{name or '(model)'} {kind}" for name, kind in pairs[:limit])
    return f"[{shown}{', ...' if len(pairs) > limit else ''}] ({len(pairs)} layers)"


def momentum_like_other_convention(layer, momentum, framework):
    """The ``SUSPICIOUS_MOMENTUM`` finding for a layer of a framework whose ``momentum``
    is the weight of the old value (Keras, Flax) that looks like PyTorch's (the new
    batch's weight): ``momentum`` as the framework writes it."""
    name = momentum_words(framework)[0]
    new = 1 - momentum
    return Finding(
        "SUSPICIOUS_MOMENTUM", layer, "warning", {"momentum": momentum, "weight_of_new_batch": new},
        f"momentum={momentum:g} is {possessive(name)} weight of the old statistics, so each new batch "
        f"weighs {new:.3g} and the moving statistics follow only the last few batches. "
        f"It looks like a PyTorch momentum (the weight of the new batch): in {name}, a "
        f"new batch weighing {momentum:g} is momentum={new:.3g}.",
        f"Use momentum={new:.3g} ({possessive(name)} default is 0.99), or recalibrate after training.")


def _momentum(b):
    if b.momentum is None or b.moving_var is None:
        return []
    name, weight = momentum_words(b.framework)
    if b.momentum >= KERAS_LIKE_MOMENTUM and weight == "old":
        return [momentum_like_other_convention(b.name, 1 - b.momentum, b.framework)]
    if b.momentum >= KERAS_LIKE_MOMENTUM:
        return [Finding(
            "SUSPICIOUS_MOMENTUM", b.name, "warning",
            {"momentum": b.momentum, "weight_of_old_statistics": 1 - b.momentum},
            f"momentum={b.momentum:g} gives the new batch weight {b.momentum:g} ({possessive(name)} "
            f"convention), so the running statistics follow only the last few batches. It "
            f"looks like a Keras momentum (the weight of the old value): in {name}, an old "
            f"value weighing {b.momentum:g} is momentum={1 - b.momentum:.3g}.",
            f"Use momentum={1 - b.momentum:.3g}"
            + (" (or BatchNorm.keras(...) for Keras' conventions)" if name == "varshift" else "")
            + ", or recalibrate after training.")]
    if b.momentum == 0 and weight == "old":
        return [Finding(
            "SUSPICIOUS_MOMENTUM", b.name, "warning", {"momentum": 1.0},
            f"momentum=1 ({possessive(name)} convention: the weight of the old value) never updates "
            f"the moving statistics.", f"Use {possessive(name)} default momentum=0.99.")]
    if b.momentum == 0:
        return [Finding(
            "SUSPICIOUS_MOMENTUM", b.name, "warning", {"momentum": 0.0},
            f"momentum=0 ({possessive(name)} convention: the weight of the new batch) never updates "
            f"the running statistics.",
            f"Use {possessive(name)} default momentum=0.1, or momentum=None for a cumulative average.")]
    return []


def _damaged(b):
    if b.moving_var is None:
        return []
    problems = _validate.damaged_stats(b.moving_mean, b.moving_var)
    evidence = {f"{stat}_{what.lower()}_channels": _channel_list(where)
                for (stat, what), where in problems.items()}
    damage = [f"{stat} is {what} in channel{'s' if len(where) > 1 else ''} "
              f"{_channel_list(where)}" for (stat, what), where in problems.items()]
    if b.num_batches_tracked is not None and b.num_batches_tracked < 0:
        evidence["num_batches_tracked"] = b.num_batches_tracked
        damage.append(f"num_batches_tracked is negative ({b.num_batches_tracked})")
    if not damage:
        return []
    return [Finding(
        "DAMAGED_RUNNING_STATS", b.name, "error", evidence,
        f"The running statistics hold values no BatchNorm update produces: "
        f"{'; '.join(damage)}. Inference normalises with them, so its outputs in these "
        f"channels (and in every layer after this one) are NaN or meaningless, and this "
        f"layer's variance shift is undefined. Usual causes: a damaged or hand-edited "
        f"model file, a training run that diverged, buffers written by hand.",
        "varshift.recalibrate(model, training_data) (on the command line: varshift "
        "recalibrate MODEL DATA -o FIXED.npz) replaces them by exact statistics.")]


def _channel_list(channels, limit=8) -> str:
    """Channel indices for a message: all of them, or the first ``limit`` and the count."""
    shown = ", ".join(str(c) for c in channels[:limit])
    return shown if len(channels) <= limit else f"{shown}, ... ({len(channels)} channels)"


def _at_init(b):
    if b.moving_var is None or np.any(b.moving_mean != 0) or np.any(b.moving_var != 1):
        return []
    drift = float(np.mean(np.abs(b.train_mean)))
    var_shift = symmetric_shift(np.mean(b.train_var))
    if drift < 0.05 and var_shift < 1.1:
        return []  # the data really are standardised: nothing to see
    return [Finding(
        "STATS_AT_INIT", b.name, "error",
        {"num_batches_tracked": b.num_batches_tracked, "train_mean_abs": drift,
         "train_var": float(np.mean(b.train_var)), "shift": b.shift},
        "The running mean is exactly 0 and the running variance exactly 1, the values "
        "BatchNorm starts with: the update never ran (the layer was in inference mode "
        "or frozen during training, TensorFlow 1's UPDATE_OPS were not run, or the "
        "model was never trained), so inference normalises with statistics that do not "
        "describe the data.",
        "Keep BatchNorm in train mode while training (and run its update ops), or "
        "varshift.recalibrate(model, training_data) to compute the statistics now.")]


def _dropout(b, noise_paths, session):
    """``DROPOUT_BEFORE_BN``, graded on what inference suffers now: the shift the noise
    causes in training (nodrop / train) where the running statistics still carry it, info
    only where they match inference (recalibrated) or the layer is frozen."""
    if not noise_paths:
        return []
    factor = b.attribution["dropout"]
    noise_shift = symmetric_shift(factor)
    layers = ", ".join(f"{p} ({session.noise_description(p)})" for p in noise_paths)
    evidence = {"dropout_layers": layers, "dropout_shift": noise_shift,
                "nodrop_over_train_var": factor, "layer_shift": b.shift}
    found = f"Dropout-like noise ({', '.join(noise_paths)}) reaches this BatchNorm with no " \
            f"BatchNorm in between."
    if b.frozen:
        return [Finding(
            "DROPOUT_BEFORE_BN", b.name, "info", evidence,
            f"{found} The layer is frozen: it normalises with fixed statistics and records "
            f"nothing, so the noise does not shift them; in training it only sees inputs "
            f"whose variance the noise scales by {1 / factor:.3g}x against inference.",
            "Nothing for the statistics. If the frozen statistics should describe the new "
            "data, recalibrate with include_frozen=True.")]
    inference = grade(b.shift, DROPOUT_SHIFT)
    if inference is None or b.moving_var is None:
        return [Finding(
            "DROPOUT_BEFORE_BN", b.name, "info", evidence,
            f"{found} Inference is consistent now: the running statistics match the "
            f"inference-mode inputs (shift {b.shift:.3g}, e.g. after recalibration). "
            f"Training with this noise records a variance {noise_shift:.3g}x off again "
            f"(Li et al.'s variance shift).",
            "After every training run, varshift.recalibrate(model, training_data); or move "
            "the Dropout after the last BatchNorm (e.g. just before the classifier).")]
    severity = grade(min(noise_shift, b.shift), DROPOUT_SHIFT) or "info"
    return [Finding(
        "DROPOUT_BEFORE_BN", b.name, severity, evidence,
        f"{found} In training the noise inflates the input variance that BatchNorm records; "
        f"at inference it is gone, so the layer divides by a variance {noise_shift:.3g}x too "
        f"large (Li et al.'s variance shift; measured with Dropout switched off: "
        f"{factor:.3g} of the train-mode variance).",
        "Move Dropout after the last BatchNorm (e.g. just before the classifier), use "
        "Uout (small uniform noise), or varshift.recalibrate(model, training_data) "
        "to re-estimate the statistics with Dropout off.")]


def _stale(b):
    """``STALE_RUNNING_STATS``: the running statistics fit neither the train-mode inputs
    (which an exponential average converges to) nor the inference-mode ones (which
    recalibration writes). Graded on what normalisation divides by, var + eps: a
    variance far below eps (also one that underflowed in the buffer's dtype) changes no
    output."""
    if b.moving_var is None:
        return []
    moving = np.mean(b.moving_var) + b.eps
    fits = {}
    for source in ("train", "real"):
        mean, var = getattr(b, f"{source}_mean"), getattr(b, f"{source}_var")
        shift = symmetric_shift(ratio(np.mean(var) + b.eps, moving))
        drift = float(np.mean(deviation_in_stds(mean, b.moving_mean, b.moving_var + b.eps)))
        grades = [g for g in (grade(shift, STALE_SHIFT), grade(drift, STALE_MEAN)) if g]
        fits[source] = (shift, drift, grades)
    if not (fits["train"][2] and fits["real"][2]):
        return []
    severity = "error" if all("error" in fits[s][2] for s in fits) else "warning"
    evidence = {"train_over_moving_var": b.attribution["running_stats"],
                "var_shift": fits["train"][0], "mean_drift_std": fits["train"][1],
                "inference_var_shift": fits["real"][0], "inference_mean_drift_std": fits["real"][1],
                "momentum": in_convention(b.momentum, b.framework) if b.momentum else b.momentum,
                "num_batches_tracked": b.num_batches_tracked}
    if b.momentum and b.num_batches_tracked is not None:
        evidence["initial_value_weight_left"] = float((1 - b.momentum) ** b.num_batches_tracked)
    name, weight = momentum_words(b.framework)
    faster = ("a larger momentum" if weight == "new" else "a smaller momentum")
    return [Finding(
        "STALE_RUNNING_STATS", b.name, severity, evidence,
        "The running statistics are far from the statistics the current weights produce, "
        "in train mode (Dropout as in training) and in inference mode alike: the "
        "exponential average is stale. Usual causes: a momentum too slow for the number of "
        "updates (part of the initial 0/1 values is still in it), statistics recorded under "
        "earlier weights (averaged or fine-tuned weights), a change of data, or very small "
        "batches (Keras and Flax average biased batch variances: (n-1)/n of the true one).",
        f"varshift.recalibrate(model, training_data) (exact statistics for the current "
        f"weights); when training, {faster} ({possessive(name)} convention: the weight of the "
        f"{weight} {'batch' if weight == 'new' else 'value'}) or more steps.")]


def _input_scale(b, x):
    """``INPUT_SCALE``: the first BatchNorm's inputs are orders of magnitude away from
    its running statistics (raw 0-255 images into a model trained on [0, 1], or a
    rescaling done twice), whatever the later layers then report."""
    if (b.moving_var is None or b.frozen or _validate.damaged_stats(b.moving_mean, b.moving_var)
            or np.all(b.moving_mean == 0) and np.all(b.moving_var == 1)):  # STATS_AT_INIT
        return []
    shift = symmetric_shift(ratio(np.mean(b.real_var) + b.eps, np.mean(b.moving_var) + b.eps))
    if not shift >= INPUT_SCALE_SHIFT:
        return []
    direction = "larger" if np.mean(b.real_var) > np.mean(b.moving_var) else "smaller"
    x = np.asarray(x)
    low, high = (float(x.min()), float(x.max())) if x.size else (np.nan, np.nan)
    return [Finding(
        "INPUT_SCALE", b.name, "error",
        {"shift": shift, "real_var": float(np.mean(b.real_var)),
         "moving_var": float(np.mean(b.moving_var)), "input_dtype": str(x.dtype),
         "input_range": (low, high)},
        f"The first BatchNorm's inputs have a variance {shift:.3g}x {direction} than its "
        f"running statistics: the data's scale differs from what the model was trained on "
        f"(inputs seen: dtype {x.dtype}, range [{low:.4g}, {high:.4g}]). Every later "
        f"layer's statistics are off for the same reason, so they are not reported as "
        f"stale.",
        "Give the model inputs preprocessed as in training (e.g. divide 0-255 images by "
        "255, or do not rescale twice where the model rescales itself), then diagnose "
        "again; recalibrating would only hide the mismatch.")]


def _small_batch(b, shape, batch):
    if shape is None:
        return []
    values = int(batch * np.prod(shape[1:], dtype=int))
    severity = grade(values, SMALL_BATCH)
    if severity is None:
        return []
    return [Finding(
        "SMALL_BATCH_STATS", b.name, severity,
        {"batch_size": batch, "values_per_channel": values,
         "rel_std_of_batch_var": float(np.sqrt(2 / max(values - 1, 1))),
         "std_of_batch_mean_in_stds": float(1 / np.sqrt(values))},
        f"Each batch gives this layer only {values} values per channel, so the batch "
        f"mean and variance it normalises with in training are noisy (the variance "
        f"estimate has a relative spread of about {np.sqrt(2 / max(values - 1, 1)):.0%}), "
        f"and training-mode outputs differ from inference-mode ones.",
        "Use larger batches, a batch-independent normalisation (GroupNorm, LayerNorm), "
        "or Batch Renormalization; varshift.recalibrate helps the inference side.")]


def _batch_dependence(session, x, seed):
    x = x[:64]
    if len(x) < 4:
        return []
    half = len(x) // 2
    with session.preserved(seed), np.errstate(all="ignore"):
        whole = session.output(x, EVAL)
        parts = np.concatenate([session.output(x[:half], EVAL), session.output(x[half:], EVAL)])
        culprits = session.batch_dependent_batchnorms(x) if not np.array_equal(
            whole, parts, equal_nan=True) else []
    if not (np.isfinite(whole).all() and np.isfinite(parts).all()):
        return []  # nothing to compare (damaged running statistics, reported as such)
    scale = max(float(np.max(np.abs(whole))), 1e-12)
    change = float(np.max(np.abs(whole - parts)) / scale)
    if not change > BATCH_DEPENDENCE:
        return []
    return [Finding(
        "EVAL_BATCH_DEPENDENT", "", "error",
        {"relative_output_change": change, "batch_stat_layers_at_inference": ", ".join(culprits)
         or "none found"},
        "In inference mode the model's outputs for the same samples change when they are "
        "evaluated in a different batch, so predictions depend on what else is in the "
        "batch (and on the test batch size). "
        + ("BatchNorm layers without running statistics normalise with batch statistics "
           "even at inference." if culprits else ""),
        "Give BatchNorm running statistics (track_running_stats=True) and recalibrate, "
        "or evaluate with a fixed, large batch.")]


def _not_deterministic(change):
    return [Finding(
        "EVAL_NOT_DETERMINISTIC", "", "error", {"relative_output_change": change},
        "In inference mode two runs of the same batch give different outputs: some noise "
        "does not follow the modules' training flags (F.dropout(x, p, training=True) or "
        "another random operation hard-coded in a forward method), so model.eval() does "
        "not switch it off. Predictions are random, and the inference-mode statistics "
        "varshift measures include that noise.",
        "Pass the module's flag (F.dropout(x, p, self.training)) or use an nn.Dropout "
        "module; keep noise at inference only on purpose (Monte Carlo dropout).")]
