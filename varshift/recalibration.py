"""``varshift.recalibrate``: re-estimate BatchNorm running statistics with Dropout off.

This is Li et al.'s "Adjust" (their Table 3) and Hendrycks & Gimpel's re-estimation:
after training, the running mean and variance of every BatchNorm layer are replaced by
the exact population statistics of its input in inference mode, layer by layer in
network order, so that each layer sees the already recalibrated layers upstream.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from . import _validate
from ._process import public
from ._progress import progress_bar
from .backends import Modes, session_for
from .backends.replay import PROBE_SAMPLES, Plan, Recorder, Replay, plan_passes
from .measurement import Report, measure_with
from .stats import RunningMoments

__all__ = ["recalibrate", "Recalibration"]

#: Default ``cache_bytes`` of :func:`recalibrate`: 1 GiB.
CACHE_BYTES = 1 << 30

@dataclass
class Recalibration:
    """Result of :func:`recalibrate`.

    Attributes
    ----------
    before, after : Report or None
        None when called with ``reports=False``; otherwise measured on ``holdout`` if given, else on the recalibration data (where the
        after-shift is 1 by construction; on held-out data it is the number to read).
    layers : list of str
        The BatchNorm layers recalibrated, in order.
    frozen : list of str
        Frozen BatchNorm layers left as they were (``include_frozen=False``).
    """

    before: Report
    after: Report
    layers: list
    frozen: list = field(default_factory=list)

    def __str__(self):
        left = (f"\nLeft as they were (frozen; include_frozen=True recalibrates them): "
                f"{', '.join(self.frozen)}" if self.frozen else "")
        if self.before is None:
            return f"BatchNorm recalibration of {', '.join(self.layers)} (no reports){left}"
        lines = ["BatchNorm recalibration (shift = max(real/moving, moving/real))",
                 f"{'#':>3} {'layer':<14} {'shift before':>12} {'shift after':>12}"]
        for b, a in zip(self.before.bn, self.after.bn):
            lines.append(f"{b.index:>3} {b.name:<14} {_shown(b)} {_shown(a)}"
                         + ("  frozen, left" if b.name in self.frozen else ""))
        return "\n".join(lines) + left

    __repr__ = __str__

    def plot(self, ax=None):
        """Shift per BatchNorm layer before and after; returns the Axes."""
        if self.before is None:
            raise ValueError("Recalibration.plot: no reports; call recalibrate(..., reports=True)")
        from .plots import plot_bn_shift

        ax = plot_bn_shift(self.before, ax=ax, label="before")
        plot_bn_shift(self.after, ax=ax, label="after recalibration")
        ax.set_title("Variance shift before and after recalibration")
        return ax


def _shown(b) -> str:
    """The shift of BatchNorm ``b`` (a BatchNormStats) for the table: 'damaged' for
    damaged running statistics, 'undefined' for NaN (after a damaged layer)."""
    if b.moving_var is not None and _validate.damaged_stats(b.moving_mean, b.moving_var):
        return f"{'damaged':>12}"
    return f"{'undefined':>12}" if np.isnan(b.shift) else f"{b.shift:>12.4f}"


@public()
def recalibrate(model, data, *, batch_size=256, dropout="off", holdout=None, seed=0,
                progress=False, reports=True, input_key=None,
                include_frozen=False, cache_bytes=CACHE_BYTES) -> Recalibration:
    """Replace every BatchNorm's running statistics by exact population statistics.

    Parameters
    ----------
    model : varshift.nn.Layer, torch.nn.Module, Keras 3 model or Flax NNX module
        Changed in place: only ``running_mean``, ``running_var`` and
        ``num_batches_tracked`` of BatchNorm layers that keep running statistics
        (a Keras BatchNormalization's ``moving_mean`` and ``moving_variance``).
    data : array or tensor, (x, y) pair, or re-iterable of batches (a list, a DataLoader)
        Usually the training inputs. Read once per BatchNorm layer (see Notes), plus
        once to find the layers' order and twice for the reports, so not a generator.
    batch_size : int, default 256
    dropout : {'off', 'on'}, default 'off'
        'off' (Dropout in inference mode) removes Li et al.'s shift; 'on' keeps the
        noise active, like PyTorch's ``update_bn``, whose statistics keep Dropout's
        variance, for comparison.
    holdout : data, optional
        Data for the before/after reports (default: ``data``); read twice, so not a
        generator.
    seed : int, default 0
        Seed of the Dropout masks (reports, and ``dropout='on'``).
    progress : bool, default False
        Progress on stderr, per BatchNorm layer and per report (a tqdm bar on a
        terminal, a few plain lines in a log).
    reports : bool, default True
        Measure the model before and after (two :func:`~varshift.measure` passes over
        ``holdout``); False skips them, leaving ``before`` and ``after`` None.
    input_key : hashable, optional
        For dict batches: the key of the model's input.
    include_frozen : bool, default False
        Also recalibrate frozen BatchNorms (kept in inference mode while the rest
        trains, as in frozen-BatchNorm fine-tuning: torch ``eval()`` with
        ``requires_grad=False`` parameters, Keras ``trainable=False``, Flax
        ``use_running_average=True``). By default they keep the statistics they were
        frozen with, and the result lists them in ``frozen``.
    cache_bytes : int, default 1 GiB
        Memory for the layer outputs kept between passes (see Notes); 0 runs every
        pass from the input.

    Returns
    -------
    Recalibration

    Raises
    ------
    TypeError, ValueError
        For bad arguments (naming them), checked before anything changes, and for
        statistics that are not finite or do not fit the model's dtype.

    Warns
    -----
    UserWarning
        If a variance is too small for the buffer's dtype (inputs of scale 1e-20 in
        float32: the variance underflows to 0 or to a subnormal number and is stored
        with a relative error above :data:`UNDERFLOW_TOLERANCE`), naming the layer and
        the channels. A warning, not an error: the stored value is the closest the
        dtype holds, and normalisation divides by ``sqrt(var + eps)``, where such a
        variance is negligible unless ``eps`` is as small (the message says which), so
        the recalibrated model computes what exact statistics would give; refusing
        would leave the old statistics in place. Only the variance shift of that layer
        (a ratio to the stored variance) is then meaningless: measured right after
        recalibrating it is far from 1 or infinite. :func:`~varshift.diagnose` does not
        call such statistics stale.

    Notes
    -----
    For BatchNorm layer k in forward order, with layers 0..k-1 already recalibrated
    and the whole model in inference mode, the input's per-channel mean and variance
    over all of ``data`` become the running statistics (a cumulative average over every
    value, as ``momentum=None`` accumulates, not an exponential one; the unbiased
    variance, or for a Keras model the population variance, Keras' convention), and
    ``num_batches_tracked`` the number of batches (Keras has no counter). If anything fails (also the "after"
    report, or ``KeyboardInterrupt``), the model's original statistics are restored;
    nothing else of the model changes in any case. Damaged running statistics (NaN,
    infinite, a negative variance: :func:`~varshift.diagnose`'s
    ``DAMAGED_RUNNING_STATS``) are replaced like any others; their shift in the
    "before" report is undefined (NaN or infinite, "damaged" in the printed table),
    and so may be the shifts of the layers after them.

    One pass over ``data`` per BatchNorm layer, each stopping at its layer. The first
    runs the model from the input; pass k replays the outputs that pass k-1 and
    earlier kept of the layers that returned before BatchNorm k-1 was called (the
    model runs on one sample per batch up to them), so it computes only what lies
    between BatchNorms k-1 and k: the passes cost about one forward pass over the
    data in all, not one per layer. Which outputs reach BatchNorm k is found on the
    first samples of the first batch, where each pass is checked to give BatchNorm k
    the input of a full forward pass bit for bit
    (:mod:`varshift.backends.replay`); a pass that fails the check, every pass with
    ``dropout='on'``, of a model whose BatchNorms are called twice per forward pass,
    or whose kept outputs would exceed ``cache_bytes``, runs from the input over all
    of the data. The statistics are the same either way.
    """
    session = session_for(model, "recalibrate")
    _validate.choice(dropout, "dropout", "recalibrate", ("off", "on"))
    seed = _validate.seed(seed, "seed", "recalibrate")
    progress = _validate.flag(progress, "progress", "recalibrate")
    reports = _validate.flag(reports, "reports", "recalibrate")
    include_frozen = _validate.flag(include_frozen, "include_frozen", "recalibrate")
    cache_bytes = _validate.integer(cache_bytes, "cache_bytes", "recalibrate", minimum=0)
    batches = _reiterable(session.batches(data, batch_size, "recalibrate", input_key=input_key))
    report_data = batches if holdout is None else session.batches(
        holdout, batch_size, "recalibrate", name="holdout", input_key=input_key)
    if reports:
        _reiterable(report_data)

    def report():
        return measure_with(session, report_data, seed, progress) if reports else None

    planned = dropout == "off" and cache_bytes > 0  # else every pass is plain
    with session.preserved(seed, keep_buffers=True):
        first = next(iter(batches))  # the order is learned, and the plan found, on it
        # with Dropout off, the trace's inference-mode pass is the plan's full pass
        full = Recorder(session.adapter, keep=set(), inputs=None) if planned else None
        if not session.trace(first[:PROBE_SAMPLES], watch=full):
            full = None
        tracking = [bn for bn in session.batchnorms() if bn.track_running_stats]
        targets = [bn for bn in tracking if include_frozen or not bn.frozen]
        for bn in targets:
            if bn.not_recalibrated:
                raise ValueError(f"recalibrate: {bn.not_recalibrated}")
        before = report()
        modes = Modes(batchnorm=False, dropout=dropout == "on", other=dropout == "on")
        plan = Plan.plain(len(targets))
        if planned:
            with _validate.reraise_with_context(f"recalibrate: data batch 0 of shape "
                                                f"{tuple(first.shape)}"), \
                    np.errstate(over="ignore", invalid="ignore"):
                plan = plan_passes(session, [bn.name for bn in targets], first, modes,
                                   full)
        kept = {}
        for k, bn in enumerate(targets):
            # the first pass counts the samples: beyond the budget, every pass is plain
            if not _recalibrate_layer(session, bn, batches, modes, progress, plan, k, kept,
                                      budget=cache_bytes if k == 0 else None):
                plan = Plan.plain(len(targets))
                kept.clear()
        after = report()
    return Recalibration(before, after, [bn.name for bn in targets],
                         [bn.name for bn in tracking if bn not in targets])


def _reiterable(batches):
    if not batches.reiterable:
        raise TypeError(f"recalibrate: {batches.name} is read several times; pass an array, "
                        f"an (x, y) pair or a list of batches, not a one-shot iterator or "
                        f"generator")
    return batches


def _recalibrate_layer(session, bn, batches, modes, progress, plan, k, kept,
                       budget=None) -> bool:
    """Exact statistics of BatchNorm ``bn``'s input over ``batches``, written to it, in
    pass ``k`` of ``plan``, replaying and updating ``kept`` (layer -> its outputs per
    batch). Returns False if the plan's kept outputs need more than ``budget`` bytes
    for the samples of ``batches`` (then this pass keeps nothing)."""
    adapter, samples, fits = session.adapter, 0, True
    moments, count = RunningMoments(bn.num_features), 0
    keep = plan.keep[k]
    for key in keep:
        kept[key] = []
    for i, x in enumerate(progress_bar(batches, progress, batches.num_batches,
                                       f"recalibrate {bn.name}")):
        replay = None
        if plan.replays(k):  # copied where the model asks for them
            outputs = {key: kept[key][i] for key in plan.live[k]}
            outputs.update({key: plan.standins[key] for key in plan.dead[k]})
            replay = Replay(adapter, outputs)
        watch = Recorder(adapter, keep=keep, replayed=replay or ()) if keep else None
        # the pass also runs bn itself, with its old (maybe damaged) statistics: a
        # NaN there is no concern, and a non-finite result is refused when written
        with _validate.reraise_with_context(f"recalibrate: data batch {i} of shape "
                                            f"{tuple(x.shape)}"), \
                np.errstate(over="ignore", invalid="ignore"):
            seen = session.batchnorm_input(bn.name, x[:1] if replay else x, modes,
                                           replay=replay, watch=watch)
        samples += len(x)
        if budget is not None and plan.bytes_per_sample * samples > budget:
            keep, fits = (), False
        for key in keep:
            kept[key].append(watch.outputs[key])
        moments = moments.merge(seen)
        count += seen.count > 0
    for key in [key for key, last in plan.last_use.items() if last <= k and key in kept]:
        del kept[key]
    if moments.count < 2:
        raise ValueError(f"recalibrate: BatchNorm {bn.name!r} saw {moments.count:.0f} value(s) "
                         f"per channel of data; a variance needs at least 2 (give more samples)")
    var = moments.var(ddof=1 if bn.unbiased else 0)
    session.set_running_stats(bn.name, moments.mean, var, int(count))
    _warn_underflow(bn, var, session.running_stats(bn.name)[1])
    return fits


#: Relative error of a stored running variance beyond which it underflowed: rounding
#: to float32 (6e-8) or float16 (5e-4) stays below it.
UNDERFLOW_TOLERANCE = 1e-3


def _warn_underflow(bn, var, stored):
    """Warn if the running variance ``stored`` lost the computed ``var`` (float64) to
    the buffer's dtype: 0 or a subnormal number for a positive variance."""
    lost = np.flatnonzero(np.abs(stored - var) > UNDERFLOW_TOLERANCE * var)
    if lost.size:
        c = lost[0]
        # normalisation divides by sqrt(var + eps): an error far below eps changes nothing
        effect = ("outputs are unaffected (normalisation adds eps={:g}, far larger)"
                  if np.max(np.abs(stored - var)[lost]) < 1e-6 * bn.eps else
                  "inference outputs of these channels differ from exact statistics "
                  "(normalisation adds only eps={:g})").format(bn.eps)
        warnings.warn(
            f"recalibrate: BatchNorm {bn.name!r}: the variance of channel"
            f"{'s' if lost.size > 1 else ''} {', '.join(map(str, lost[:8]))}"
            f"{', ...' if lost.size > 8 else ''} is too small for the layer's dtype (channel "
            f"{c}: {var[c]:.4g}, stored as {stored[c]:.4g}; the inputs are of scale "
            f"{np.sqrt(var[c]):.2g}): {effect}, and this layer's variance shift is "
            f"meaningless; scale the inputs, or use float64", UserWarning,
            stacklevel=_validate.user_stacklevel())
