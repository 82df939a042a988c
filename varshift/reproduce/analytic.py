"""Figures (1)-(4): Li et al.'s closed forms with Monte Carlo points (no data needed)."""

from __future__ import annotations

import numpy as np

from .. import plots
from .. import theory as T
from ..verdicts import Claim
from .results import FigureResult, new_figure

__all__ = ["FIGURES"]


def _z(mc, exact):
    return abs(mc.estimate - exact) / mc.stderr


def _agrees_with_mc(equation, paper, worst, points, n):
    """The check that a closed form matches its simulation within 4 standard errors."""
    return Claim.sanity(f"{equation} agrees with Monte Carlo", paper,
                        f"worst deviation {worst:.2f} s.e. over {points} points (n={n})", worst < 4)


def _mc_point(x, mc):
    return {"x": x, "estimate": mc.estimate, "stderr": mc.stderr}


def shift_vs_p(ctx):
    """Delta(p) for case (a), and 1/Delta, with Monte Carlo points."""
    n = 40_000 if ctx.quick else 400_000
    ratios = (0.0, 0.5, 1.0, 2.0)
    mc, worst = {}, 0.0
    for r in ratios:
        mc[r] = []
        for p in (0.2, 0.4, 0.6, 0.8):
            sim = T.monte_carlo("dropout", p=p, c=r, v=1.0, n=n, seed=ctx.seed)
            mc[r].append(_mc_point(p, sim))
            worst = max(worst, _z(sim, T.shift_dropout_bn(p, r)))
    fig, ((a, b),) = new_figure(1, 2, width=6.0, height=4.2)
    plots.plot_shift_vs_p(a, ratios, mc)
    plots.plot_shift_vs_p(b, ratios, mc, inverse=True)
    claims = [
        Claim.sanity("Case (a): Delta = p for zero-mean input (drop 0.1 gives 0.9)", "0.9",
              f"{float(T.shift_dropout_bn(0.9)):.4f}", bool(np.isclose(T.shift_dropout_bn(0.9), 0.9))),
        Claim.sanity("Case (a): a non-zero mean makes the shift larger (Delta < p)",
              "Eq. 8: v / ((c^2+v)/p - c^2)",
              f"p=0.5: Delta {float(T.shift_dropout_bn(0.5, 1.0)):.3f} at c/sqrt(v)=1",
              bool(T.shift_dropout_bn(0.5, 1.0) < 0.5)),
        _agrees_with_mc("Eq. 8", "digest: MC 0.49998/0.33316/0.88904", worst, 16, n),
    ]
    numbers = {"monte_carlo": {str(k): v for k, v in mc.items()}, "worst_z": worst}
    return FigureResult("fig1_shift_vs_p", "Case (a): variance shift against the retain ratio",
                        fig, "Li et al.'s Delta = Var_test/Var_train for Dropout directly before "
                        "BatchNorm (Eq. 8), one curve per input mean c/sqrt(v); points are Monte "
                        "Carlo estimates (hollow markers) with 2-s.e. bars, which are smaller than the markers "
                        "(40,000 samples quick, 400,000 full). Right: 1/Delta on a log axis, the "
                        "moving/real variance ratio BatchNorm ends up with.", numbers, claims)


def shift_vs_width(ctx):
    """Delta(d) for case (b) with the zero-mean-weight and rho = 0 controls."""
    n = 8_000 if ctx.quick else 40_000
    rho, cos2 = 0.3, 0.02
    mc, worst = {}, 0.0
    for p in (0.9, 0.5):
        mc[p] = []
        for d in (64, 256, 1024):
            sim = T.monte_carlo("dropout_weight", p=p, d=d, cos2=cos2, rho=rho, n=n, seed=ctx.seed)
            mc[p].append(_mc_point(d, sim))
            worst = max(worst, _z(sim, T.shift_dropout_weight_bn(p, d, cos2, rho)))
    fig, ((ax,),) = new_figure(1, 1, width=7, height=4.2)
    plots.plot_shift_vs_width(ax, rho=rho, cos2=cos2, mc=mc)
    wide = float(T.shift_dropout_weight_bn(0.5, 8192, cos2, rho))
    thin = float(T.shift_dropout_weight_bn(0.5, 64, cos2, rho))
    random_w = float(T.shift_dropout_weight_bn(0.5, 8192, 1 / 8192, rho))
    claims = [
        Claim.sanity("Case (b): the shift vanishes as d cos^2 grows (the Wide ResNet effect)",
              "Delta -> 1 as d -> inf", f"p=0.5: Delta {thin:.3f} at d=64, {wide:.3f} at d=8192",
              wide > 0.95 and wide > thin),
        Claim.sanity("Zero-mean random weights (cos^2 = 1/d) give no width benefit",
              "digest remark: d cos^2 ~ 1", f"p=0.5, d=8192: Delta {random_w:.3f} (= p)",
              bool(np.isclose(random_w, 0.5))),
        _agrees_with_mc("Eq. 12", "digest: MC 0.366/0.381/0.435/0.603", worst, 6, n),
    ]
    return FigureResult("fig2_shift_vs_width", "Case (b): variance shift against the fan-in",
                        fig, "Eq. 12 for Dropout before a weight layer with d inputs, rho = 0.3 "
                        "and a trained-like cos^2(theta) = 0.02 (solid, drawn from d = 50, where "
                        "d cos^2 = 1: with fewer inputs such a filter would be less aligned than a "
                        "random one and Delta < p). Dashed: zero-mean random weights (cos^2 = 1/d) "
                        "and uncorrelated inputs (rho = 0) give the same flat line, case (a)'s "
                        "Delta = p. Points: Monte Carlo with explicit masks, weights and "
                        "equicorrelated inputs, 2-s.e. bars.",
                        {"monte_carlo": {str(k): v for k, v in mc.items()}, "worst_z": worst}, claims)


def shift_heatmap(ctx):
    """Delta over (p, d cos^2) for case (b)."""
    fig, ((ax,),) = new_figure(1, 1, width=6.5, height=4.2)
    plots.plot_shift_heatmap(ax, rho=0.3)
    p, dc = np.array([0.5, 0.5, 0.9]), np.array([1.0, 100.0, 100.0])
    values = T.shift_dropout_weight_bn(p, rho=0.3, d_cos2=dc)
    claims = [Claim.sanity("Delta -> 1 when p -> 1 or d cos^2 -> inf", "Eq. 14 limits",
                    f"Delta(0.5, 1) = {values[0]:.3f}, Delta(0.5, 100) = {values[1]:.3f}, "
                    f"Delta(0.9, 100) = {values[2]:.3f}", bool(values[0] < values[1] < values[2]))]
    return FigureResult("fig3_shift_heatmap", "Variance shift over retain ratio and d cos^2",
                        fig, "Eq. 12 with rho = 0.3 and c = 0 over the retain ratio p and "
                        "d cos^2(theta); white lines are levels of Delta.",
                        {"p": p.tolist(), "d_cos2": dc.tolist(), "delta": values.tolist()}, claims)


def noise_types(ctx):
    """Uout vs Bernoulli vs Gaussian dropout at equal noise."""
    n = 40_000 if ctx.quick else 400_000
    sims = {"uout beta=0.1": T.monte_carlo("uout", beta=0.1, n=n, seed=ctx.seed),
            "uout beta=1": T.monte_carlo("uout", beta=1.0, n=n, seed=ctx.seed),
            "dropout p=0.9": T.monte_carlo("dropout", p=0.9, n=n, seed=ctx.seed),
            "gaussian s2=1/9": T.monte_carlo("gaussian", sigma2=1 / 9, n=n, seed=ctx.seed)}
    exact = {"uout beta=0.1": T.shift_uout(0.1), "uout beta=1": T.shift_uout(1.0),
             "dropout p=0.9": T.shift_dropout_bn(0.9), "gaussian s2=1/9": T.shift_gaussian(1 / 9)}
    worst = max(_z(sims[k], exact[k]) for k in sims)
    mc = {"all": [_mc_point(s2, sims[k]) for k, s2 in
                  (("uout beta=0.1", 0.01 / 3), ("uout beta=1", 1 / 3), ("dropout p=0.9", 1 / 9),
                   ("gaussian s2=1/9", 1 / 9))]}
    fig, ((a, b),) = new_figure(1, 2, width=6.0, height=4.2)
    plots.plot_noise_types(a, c=0.0, mc=mc)
    plots.plot_noise_types(b, c=1.0)
    claims = [
        Claim.sanity("Uout shifts far less than Dropout (beta 0.1 vs drop 0.1)", "300/301 = 0.9967 vs 0.9",
              f"{float(exact['uout beta=0.1']):.4f} vs {float(exact['dropout p=0.9']):.4f} "
              f"(MC {sims['uout beta=0.1'].estimate:.4f} vs {sims['dropout p=0.9'].estimate:.4f})",
              bool(exact["uout beta=0.1"] > exact["dropout p=0.9"])),
        Claim.sanity("At equal noise variance all three noises shift equally (only E[m^2] matters)",
              "not stated (Gaussian analog in the digest)",
              f"drop 0.1 vs Gaussian s^2=1/9: {float(exact['dropout p=0.9']):.4f} vs "
              f"{float(exact['gaussian s2=1/9']):.4f}",
              bool(np.isclose(exact["dropout p=0.9"], exact["gaussian s2=1/9"]))),
        _agrees_with_mc("Eq. 15 and the Gaussian form", "digest: MC 0.99679 / 0.92237", worst, 4, n),
    ]
    return FigureResult("fig4_noise_types", "Dropout, Uout and Gaussian dropout before BatchNorm",
                        fig, "Delta against the variance s^2 of the multiplicative noise m (left: "
                        "zero-mean input, right: c/sqrt(v) = 1). The curve is the same for every "
                        "noise; markers are common settings of each. Uout's variance beta^2/3 "
                        "stays below 1/3 for beta <= 1, which is why it shifts so little; the top axis "
                        "gives the beta with each variance. Hollow markers: Monte Carlo, 2-s.e. bars.",
                        {k: {"exact": float(exact[k]), "mc": sims[k].__dict__} for k in sims}, claims)


FIGURES = {"shift-vs-p": shift_vs_p, "shift-vs-width": shift_vs_width,
           "shift-heatmap": shift_heatmap, "noise-types": noise_types}
