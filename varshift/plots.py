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


#: Tick mantissas per decade on a log axis of ratios, by how many decades it spans (at most).
_RATIO_MANTISSAS = ((0.5, (1, 1.1, 1.25, 1.5, 2, 3, 5)), (1.5, (1, 1.5, 2, 3, 5)),
                    (np.inf, (1, 2, 5)))


def _ratio_ticks(low, high):
    """Plain-number ticks (1, 1.25, 1.5, 2, 5, 10, ...) between ``low`` and ``high`` (both
    > 0) on a log axis; finer when the axis spans little."""
    low, high = sorted((low, high))
    mantissas = next(m for most, m in _RATIO_MANTISSAS if np.log10(high / low) <= most)
    decades = range(int(np.floor(np.log10(low))), int(np.ceil(np.log10(high))) + 1)
    ticks = [m * 10.0 ** e for e in decades for m in mantissas]
    return [t for t in ticks if low <= t * (1 + 1e-9) and t <= high * (1 + 1e-9)]


def _ratio_locator():
    """A matplotlib Locator placing :func:`_ratio_ticks` on the axis' current view (it
    follows the view when more curves are drawn)."""
    from matplotlib import ticker

    class RatioLocator(ticker.Locator):
        def __call__(self):
            return self.tick_values(*self.axis.get_view_interval())

        def tick_values(self, vmin, vmax):
            return _ratio_ticks(vmin, vmax) if vmin > 0 and vmax > 0 else []

    return RatioLocator()


def plot_bn_shift(report, ax=None, label=None, **line_kw):
    """Li et al.'s Fig. 1: ``max(real/moving, moving/real)`` per BatchNorm layer.

    The shift is a ratio, so the y axis is logarithmic (a shift of 1.3 is as far from 1
    as its inverse, and stays visible next to a shift of 16), ticked with plain numbers;
    the x ticks are the BatchNorm layers' names, as the report's tables print them.

    Parameters
    ----------
    report : varshift.Report
    ax : matplotlib Axes, optional
    label : str, optional
        Legend entry (several reports of the same model can share one Axes).
    **line_kw
        Passed to ``ax.plot``.

    Returns
    -------
    matplotlib Axes
    """
    from matplotlib import ticker

    ax = _axes(ax)
    index = [b.index for b in report.bn]
    shift = [b.shift for b in report.bn]
    ax.plot(index, shift, marker="o", label=label, **line_kw)
    ax.axhline(1.0, color="0.5", lw=0.8, ls="--")
    ax.set_yscale("log")
    if index:  # the axis spans at least 1 to 1.5, so that shifts of about 1 get ticks
        ax.update_datalim([(index[0], 1.0), (index[0], 1.5)], updatex=False)
        ax.autoscale_view()
    ax.yaxis.set_major_locator(_ratio_locator())
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlabel("BatchNorm layer (its name in the model)")
    ax.set_ylabel("max(real/moving, moving/real)")
    ax.set_title("Variance shift per BatchNorm layer (log scale)")
    if index:
        names = [str(b.name) for b in report.bn]
        long = max(len(n) for n in names) > 8
        ax.set_xticks(index, names, rotation=30 if long else 0, ha="right" if long else "center")
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


# ---------------------------------------------------------------- analytic figures
DELTA = r"$\Delta = \mathrm{Var}_{test}\,/\,\mathrm{Var}_{train}$"
MC_LABEL = "Monte Carlo, ±2 s.e. (bars hidden by the markers)"


def _mc_points(ax, points, color, label=None):
    """Monte Carlo points (hollow) with 2-standard-error bars: dicts with x, estimate,
    stderr."""
    if points:
        ax.errorbar([q["x"] for q in points], [q["estimate"] for q in points],
                    yerr=[2 * q["stderr"] for q in points], fmt="o", ms=6, mfc="white",
                    mew=1.2, color=color, capsize=3, lw=1, label=label)


def plot_shift_vs_p(ax=None, c_over_sqrt_v=(0.0, 0.5, 1.0, 2.0), mc=None, inverse=False):
    """Case (a): Delta against the retain ratio p, one curve per c / sqrt(v) (Eq. 8).

    Parameters
    ----------
    ax : matplotlib Axes, optional
    c_over_sqrt_v : sequence of float
    mc : dict of float to list of dict, optional
        Monte Carlo points per c / sqrt(v): ``{'x': p, 'estimate', 'stderr'}``.
    inverse : bool, default False
        Plot 1 / Delta, what the measured moving/real ratio estimates.
    """
    from .theory import shift_dropout_bn

    ax = _axes(ax)
    p = np.linspace(0.05, 1.0, 200)
    for ratio in c_over_sqrt_v:
        delta = shift_dropout_bn(p, c=ratio, v=1.0)
        line, = ax.plot(p, 1 / delta if inverse else delta, label=rf"$c/\sqrt{{v}}$ = {ratio:g}")
        points = (mc or {}).get(ratio, [])
        if inverse:
            points = [dict(q, estimate=1 / q["estimate"], stderr=q["stderr"] / q["estimate"] ** 2)
                      for q in points]
        _mc_points(ax, points, line.get_color())
    if mc:
        _mc_points(ax, [{"x": np.nan, "estimate": np.nan, "stderr": 0.0}], "k", MC_LABEL)
    ax.set_xlabel("retain ratio p (drop rate 1 - p)")
    ax.set_ylabel(r"$1/\Delta$ = moving / real variance" if inverse else DELTA)
    if inverse:
        ax.set_yscale("log")
    ax.set_title("Case (a): Dropout → BN" + (r" (inverse, $1/\Delta$)" if inverse else ""))
    ax.legend(fontsize="small")
    return ax


def plot_shift_vs_width(ax=None, retain=(0.9, 0.7, 0.5, 0.3), rho=0.3, cos2=0.02, c=0.0, mc=None):
    """Case (b): Delta against the fan-in d (Eq. 12), with the two flat controls.

    Solid: trained-like weights with fixed cos^2(theta), drawn where d cos^2 >= 1
    (below, Delta < p: fewer inputs than a random filter's d cos^2 = 1); dashed:
    zero-mean random weights (cos^2 = 1/d) and uncorrelated inputs (rho = 0), which
    coincide: both give case (a)'s Delta = Eq. 8 whatever d.
    """
    from .theory import shift_dropout_weight_bn

    ax = _axes(ax)
    d = np.logspace(0, np.log10(8192), 200)
    trained = d >= 1 / cos2
    for p in retain:
        line, = ax.semilogx(d[trained], shift_dropout_weight_bn(p, d[trained], cos2, rho, c=c),
                            label=f"p = {p:g}")
        color = line.get_color()
        ax.semilogx(d, shift_dropout_weight_bn(p, d, 1 / d, rho, c=c), ls="--", color=color, lw=1)
        _mc_points(ax, (mc or {}).get(p, []), color)
    ax.plot([], [], "k--", lw=1, label=r"random weights ($\cos^2\theta = 1/d$) or $\rho = 0$")
    if mc:
        _mc_points(ax, [{"x": np.nan, "estimate": np.nan, "stderr": 0.0}], "k", "Monte Carlo, ±2 s.e.")
    ax.axvline(1 / cos2, color="0.6", lw=0.8, ls=":")
    ax.text(1 / cos2, 0.02, r" $d\,\cos^2\theta = 1$", color="0.4", fontsize="x-small",
            transform=ax.get_xaxis_transform())
    ax.set_xlabel("fan-in d of the weight layer")
    ax.set_ylabel(DELTA)
    ax.set_title(rf"Case (b): $\rho$ = {rho:g}, $\cos^2\theta$ = {cos2:g}")
    ax.legend(fontsize="x-small", ncol=2, loc="upper left")
    return ax


def plot_shift_heatmap(ax=None, rho=0.3, c=0.0):
    """Delta over (p, d cos^2(theta)) for case (b), with contour lines."""
    from .theory import shift_dropout_weight_bn

    ax = _axes(ax)
    p = np.linspace(0.05, 1.0, 120)
    dc = np.logspace(0, 3, 120)
    grid = shift_dropout_weight_bn(p[:, None], rho=rho, c=c, d_cos2=dc[None])
    mesh = ax.pcolormesh(dc, p, grid, shading="auto", cmap="viridis", vmin=0, vmax=1,
                         rasterized=True)  # keeps the SVG small
    contours = ax.contour(dc, p, grid, levels=[0.5, 0.7, 0.8, 0.9, 0.95], colors="w", linewidths=0.8)
    ax.clabel(contours, fontsize="x-small")
    ax.set_xscale("log")
    ax.set_xlabel(r"$d\,\cos^2\theta$")
    ax.set_ylabel("retain ratio p")
    ax.set_title(rf"$\Delta$ for case (b), $\rho$ = {rho:g}")
    ax.figure.colorbar(mesh, ax=ax, label=r"$\Delta$")
    return ax


def plot_noise_types(ax=None, c=0.0, mc=None):
    """Bernoulli dropout, Uout and Gaussian dropout at equal noise variance.

    Delta depends on the noise only through E[m^2] = 1 + s^2, so at equal multiplier
    variance s^2 the three coincide; what differs is the range each covers: Uout's
    s^2 = beta^2 / 3 is at most 1/3 for beta <= 1, Bernoulli's (1 - p) / p is 1 at a
    drop rate of 0.5. Markers show common settings.
    """
    from .theory import shift_dropout_bn, shift_gaussian, shift_uout

    ax = _axes(ax)
    s2 = np.linspace(0, 1.5, 200)
    ax.plot(s2, shift_gaussian(s2, c=c), color="0.3", lw=2, label=r"any noise, $E[m^2] = 1 + s^2$")
    for name, xs, ys, marker in [
        ("Dropout, drop 0.1/0.3/0.5", [0.1 / 0.9, 0.3 / 0.7, 1.0],
         shift_dropout_bn(np.array([0.9, 0.7, 0.5]), c=c), "o"),
        (r"Uout, $\beta$ 0.1/0.3/0.5/1", np.array([0.1, 0.3, 0.5, 1.0]) ** 2 / 3,
         shift_uout(np.array([0.1, 0.3, 0.5, 1.0]), c=c), "s"),
        (r"Gaussian, $\sigma^2$ 0.2/0.6/1.2", [0.2, 0.6, 1.2],
         shift_gaussian(np.array([0.2, 0.6, 1.2]), c=c), "^"),
    ]:
        ax.plot(xs, ys, marker, ms=7, label=name)
    for i, points in enumerate((mc or {}).values()):
        _mc_points(ax, points, "k", "Monte Carlo, ±2 s.e." if i == 0 else None)
    ax.set_xlabel(r"noise variance $s^2 = \mathrm{Var}(m)$")
    ax.set_ylabel(DELTA)
    ax.set_title(rf"Noise types before BN ($c/\sqrt{{v}}$ = {c:g})", pad=22)
    # beta = sqrt(3 s^2), extended oddly below 0 so that both maps stay monotonic and
    # inverse to each other over the whole axis (the x-axis margin goes below 0)
    top = ax.secondary_xaxis("top", functions=(lambda v: np.sign(v) * np.sqrt(3 * np.abs(v)),
                                                lambda b: np.sign(b) * np.asarray(b) ** 2 / 3))
    betas = [0, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2]
    top.set_xticks(betas, [f"{b:g}" for b in betas])
    top.set_xticks([0.25], minor=True)  # unlabelled: s^2 = beta^2/3 crowds 0, 0.25 and 0.5
    top.set_xlabel(r"Uout's $\beta$ with this variance ($s^2 = \beta^2/3$)", fontsize="small")
    ax.legend(fontsize="small")
    return ax
