"""Paper-style plots. Every function takes ``ax=None`` (a new figure when None) and
returns the Axes it drew on; none computes anything expensive."""

from __future__ import annotations

import numpy as np

__all__ = ["plot_bn_shift", "plot_bn_channels", "plot_layer_variance"]


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6, 3.6), constrained_layout=True)
    return ax


def plot_bn_shift(report, ax=None, label=None, **line_kw):
    """Li et al.'s Fig. 1: ``max(real/moving, moving/real)`` per BatchNorm layer index.

    Parameters
    ----------
    report : varshift.Report
    ax : matplotlib Axes, optional
    label : str, optional
        Legend entry (several reports can share one Axes).
    **line_kw
        Passed to ``ax.plot``.
    """
    ax = _axes(ax)
    index = [b.index for b in report.bn]
    shift = [b.shift for b in report.bn]
    ax.plot(index, shift, marker="o", label=label, **line_kw)
    ax.axhline(1.0, color="0.5", lw=0.8, ls="--")
    ax.set_xlabel("BatchNorm layer index")
    ax.set_ylabel("max(real/moving, moving/real)")
    ax.set_title("Variance shift per BatchNorm layer")
    if index:
        ax.set_xticks(index)
    if label is not None:
        ax.legend()
    return ax


def _find_bn(report, layer):
    if not report.bn:
        raise ValueError("the report has no BatchNorm layer")
    if layer is None:
        return max(report.bn, key=lambda b: np.nan_to_num(b.shift, nan=0.0))
    for b in report.bn:
        if layer in (b.name, b.index):
            return b
    raise ValueError(f"no BatchNorm layer {layer!r}; have {[b.name for b in report.bn]}")


def plot_bn_channels(report, layer=None, ax=None):
    """Moving against real variance per channel of one BatchNorm layer (log-log).

    Points on the diagonal have no shift; Dropout upstream puts them below it
    (moving variance inflated by the noise).
    """
    ax = _axes(ax)
    b = _find_bn(report, layer)
    if b.moving_var is None:
        raise ValueError(f"BatchNorm {b.name!r} keeps no running statistics")
    ax.loglog(b.moving_var, b.real_var, ".", label="channels")
    lo = min(np.min(b.moving_var), np.min(b.real_var))
    hi = max(np.max(b.moving_var), np.max(b.real_var))
    ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8, ls="--", label="no shift")
    ax.set_xlabel("moving (running) variance")
    ax.set_ylabel("real variance (inference mode)")
    ax.set_title(f"BatchNorm {b.name!r}: shift {b.shift:.3f}")
    ax.legend()
    return ax


def plot_layer_variance(report, ax=None):
    """Output variance per layer in train and inference mode (log scale)."""
    ax = _axes(ax)
    x = np.arange(len(report.layers))
    ax.semilogy(x, [r.train_var for r in report.layers], marker="o", label="train mode")
    ax.semilogy(x, [r.eval_var for r in report.layers], marker="s", label="inference mode")
    ax.set_xticks(x, [f"{r.name or 'model'}\n{r.kind}" for r in report.layers],
                  fontsize="small", rotation=90)
    ax.set_ylabel("output variance (mean over channels)")
    ax.set_title("Train vs inference variance per layer")
    ax.legend()
    return ax
