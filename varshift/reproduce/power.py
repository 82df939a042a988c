"""Statistical power of the reproduction's accuracy claims, from a pilot's paired
differences (issue 24; the plan is ``docs/power-analysis.md``).

Every accuracy claim compares test (or training) errors of arms paired by seed and is
judged by the 95 % Student-t interval of the per-seed differences
(:mod:`varshift.verdicts`). This module gives, for the two-sided paired t-test behind
that interval, the power at a true effect (exact, from the noncentral t
distribution), the smallest effect detectable with a given power, and the number of
seeds needed; for the "within a margin" claims the exact power of the interval lying
inside the margin. :data:`CLAIMS` lists the accuracy claims with the paper's numbers
(table and row), so that each claim's effect can be scaled to our error level.

All functions are pure: they take per-seed values and return numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ALPHA", "POWER", "BUDGET", "PAPER_BASELINE", "PAPER", "Term", "AccuracyClaim",
           "CLAIMS", "accuracy_claims", "power", "equivalence_power", "min_effect", "seeds_needed",
           "holm_alpha", "sd_upper", "accuracy", "differences", "paper_effect", "scaled_effect", "analyse"]

ALPHA = 0.05
"""Two-sided level of the verdicts' 95 % interval."""
POWER = 0.8
"""Power wanted for every accuracy claim."""
BUDGET = 30
"""Most seeds per arm a claim may need and still count as testable."""

BASE, A5, B5 = ("a", 0.0, "dropout"), ("a", 0.5, "dropout"), ("b", 0.5, "dropout")
A1, B1, A3, B3 = ("a", 0.1, "dropout"), ("b", 0.1, "dropout"), ("a", 0.3, "dropout"), ("b", 0.3, "dropout")
A7, B7 = ("a", 0.7, "dropout"), ("b", 0.7, "dropout")
HEAD2, UOUT2 = ("head", 0.2, "dropout"), ("b", 0.2, "uout")

PAPER_BASELINE = {"PreResNet": 5.02, "WRN": 3.97, "DenseNet": 4.72, "ResNeXt": 3.77}
"""No-Dropout CIFAR-10 test error (%) per architecture: Li et al.'s Table 4, drop 0.0
(ResNeXt: the locked width protocol, ``protocols/width.json``; :data:`CLAIMS` has none)."""

_TABLE3 = {"PreResNet": (8.42, 6.42, 5.85, 5.77), "WRN": (4.59, 4.20, 3.81, 3.71),
           "DenseNet": (8.70, 6.82, 5.63, 5.29),
           "ResNeXt": (4.43, 3.96, 4.09, 3.93)}  # (a) 0.5, Adjust, (b) 0.5, Adjust
_FIG4_07 = {"PreResNet": (14.5, 7.2), "WRN": (10.2, 4.4), "DenseNet": (18.0, 7.2),
            "ResNeXt": (4.6, 4.9)}  # (a), (b)
_TABLE4_02 = {"PreResNet": 5.01, "WRN": 4.00, "DenseNet": 4.73, "ResNeXt": 3.69}
_TABLE6_02 = {"PreResNet": 4.85, "WRN": 3.80, "DenseNet": 4.64, "ResNeXt": 3.83}


def _paper():
    table = {}
    for arch, base in PAPER_BASELINE.items():
        a, a_adj, b, b_adj = _TABLE3[arch]
        a7, b7 = _FIG4_07[arch]
        c10 = f"C10 {arch}"
        table.update({
            (arch, BASE, "test"): (base, f"Table 4, {c10}, drop 0.0"),
            (arch, A5, "test"): (a, f"Table 3, {c10}, (a) 0.5"),
            (arch, A5, "adjusted"): (a_adj, f"Table 3, {c10}, (a) 0.5-Adjust"),
            (arch, B5, "test"): (b, f"Table 3, {c10}, (b) 0.5"),
            (arch, B5, "adjusted"): (b_adj, f"Table 3, {c10}, (b) 0.5-Adjust"),
            (arch, A7, "test"): (a7, f"Fig. 4 bars, (a){c10}, 0.7 (read from the chart, +-0.5)"),
            (arch, B7, "test"): (b7, f"Fig. 4 bars, (b){c10}, 0.7 (read from the chart, +-0.5)"),
            (arch, HEAD2, "test"): (_TABLE4_02[arch], f"Table 4, {c10}, drop 0.2"),
            (arch, UOUT2, "test"): (_TABLE6_02[arch], f"Table 6, {c10}, beta 0.2"),
        })
    # Fig. 5, final training accuracy (%) of (a) 0.5: C10 DenseNet about 99 (train mode)
    # against 96.5 (inference mode); C10 PreResNet within about 0.5 points (no gap); no WRN
    # or ResNeXt panel
    table[("DenseNet", A5, "train_mode")] = (99.0, "Fig. 5, C10 DenseNet, train mode (chart)")
    table[("DenseNet", A5, "eval_mode")] = (96.5, "Fig. 5, C10 DenseNet, eval mode (chart)")
    table[("PreResNet", A5, "train_mode")] = (98.75, "Fig. 5, C10 PreResNet, train mode (chart)")
    table[("PreResNet", A5, "eval_mode")] = (98.75, "Fig. 5, C10 PreResNet, eval mode (chart)")
    return table


PAPER = _paper()
"""``(arch, arm, quantity) -> (value in %, where in Li et al. it is)``; arms are
``(placement, rate, noise)``. Missing keys: the paper gives no number."""


@dataclass(frozen=True)
class Term:
    """One signed quantity of one arm: ``sign * quantity(arch, arm)`` per seed.

    ``quantity`` is ``'test'`` (test error, %), ``'adjusted'`` (test error after
    recalibration), ``'train_mode'`` or ``'eval_mode'`` (final training accuracy, %,
    in train or inference mode), ``'adjusted_dropout_on'`` or ``'adjusted_unused'``
    (test error after re-estimating with Dropout on, or on unused sequences:
    ``train_network(reestimate=True)``)."""

    sign: int
    arch: str
    arm: tuple
    quantity: str = "test"


@dataclass(frozen=True)
class AccuracyClaim:
    """An accuracy claim of the reproduction: the per-seed difference is the sum of
    its terms; ``direction`` and ``margin`` as in :func:`varshift.verdicts.judge`
    (a margin: an equivalence claim, whose effect under the paper is 0)."""

    figure: str
    text: str
    terms: tuple
    direction: int
    margin: float | None = None

    @property
    def arms(self):
        """``(arch, arm)`` pairs the claim needs."""
        return sorted({(t.arch, t.arm) for t in self.terms})


def _diff(arch, arm, ref, quantity="test", ref_quantity=None):
    return (Term(1, arch, arm, quantity), Term(-1, arch, ref, ref_quantity or quantity))


def accuracy_claims(archs=("PreResNet", "WRN", "DenseNet")):
    """The accuracy claims of ``archs``, per architecture in the order of REPORT.md's
    figures, then (PreResNet and WRN both given) the wide-against-thin claim."""
    claims = []
    for arch in archs:
        fig5 = f"fig5_shift_per_layer_{arch.lower()}"
        claims += [
            AccuracyClaim(fig5, f"{arch}: drop 0.5 at (a) raises the test error", _diff(arch, A5, BASE), 1),
            AccuracyClaim(fig5, f"{arch}: drop 0.1 at (a) stays within 0.5 points of the baseline",
                          _diff(arch, A1, BASE), 0, margin=0.5),
        ]
        claims += [AccuracyClaim(fig5, f"{arch}: (b) hurts less than (a) at drop {r:g}",
                                 _diff(arch, a, b), 1)
                   for r, a, b in ((0.1, A1, B1), (0.3, A3, B3), (0.5, A5, B5), (0.7, A7, B7))]
        claims += [AccuracyClaim("fig7_train_eval_accuracy", f"{arch}: with Dropout 0.5 (a), "
                                 "inference-mode training accuracy falls below train mode",
                                 (Term(1, arch, A5, "train_mode"), Term(-1, arch, A5, "eval_mode")), 1)]
        claims += [AccuracyClaim("fig9_recalibration", f"{arch}: re-estimating the statistics lowers "
                                 f"the test error at ({pl}) 0.5", _diff(arch, arm, arm, "adjusted", "test"), -1)
                   for pl, arm in (("a", A5), ("b", B5))]
        claims += [
            AccuracyClaim("fig9_recalibration", f"{arch}: re-estimation helps (a) more than (b)",
                          _diff(arch, A5, A5, "test", "adjusted") + _diff(arch, B5, B5, "adjusted", "test"), 1),
            AccuracyClaim("fig9_recalibration", f"{arch}: after re-estimation (a) 0.5 still trails the "
                          "no-Dropout network", _diff(arch, A5, BASE, "adjusted", "test"), 1),
            AccuracyClaim("fig10_after_bn_and_uout", f"{arch}: one Dropout 0.2 after all BatchNorm "
                          "lowers the test error", _diff(arch, HEAD2, BASE), -1),
            AccuracyClaim("fig10_after_bn_and_uout", f"{arch}: Uout (beta 0.2) at the (b) positions "
                          "lowers the test error", _diff(arch, UOUT2, BASE), -1),
        ]
    if {"PreResNet", "WRN"} <= set(archs):
        claims.append(AccuracyClaim(
            "fig15_conv_angles", "Dropout 0.5 at (b) costs the wide network less test error than the thin one",
            _diff("WRN", B5, BASE) + tuple(Term(-t.sign, t.arch, t.arm, t.quantity)
                                           for t in _diff("PreResNet", B5, BASE)), -1))
    return claims


CLAIMS = accuracy_claims()
"""The accuracy claims of the full run (paper claims only; fig7's no-Dropout rows, which
compare 100 % with 100 %, are sanity checks), in the order of REPORT.md's figures."""


# ------------------------------------------------------------------ power of the tests
def _check(sd, n):
    if not np.isfinite(sd) or sd <= 0:
        raise ValueError(f"sd must be a positive finite number, got {sd!r}")
    if isinstance(n, bool) or int(n) != n or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")


def power(effect, sd, n, alpha=ALPHA):
    """Power of the two-sided paired t-test (one-sample t on the differences).

    Parameters
    ----------
    effect : float
        True mean of the paired differences.
    sd : float
        True sd of the paired differences (> 0).
    n : int
        Number of pairs (seeds), at least 2.
    alpha : float, default 0.05

    Returns
    -------
    float
        ``P(|T| > t_{1-alpha/2, n-1})`` with ``T`` noncentral t, ``n - 1`` degrees of
        freedom and noncentrality ``effect * sqrt(n) / sd`` (exact; ``alpha`` at
        ``effect = 0``).
    """
    from scipy import stats

    _check(sd, n)
    df, nc = n - 1, effect * np.sqrt(n) / sd
    crit = stats.t.ppf(1 - alpha / 2, df)
    # the lower tail as the upper tail of -T: scipy's nct.cdf returns NaN far in its tail
    return float(stats.nct.sf(crit, df, nc) + stats.nct.sf(crit, df, -nc))


def equivalence_power(effect, sd, n, margin, alpha=ALPHA):
    """Power of an equivalence claim: the probability that the ``1 - alpha`` t-interval
    of the mean difference lies inside ``(-margin, margin)`` (the verdict "holds" of a
    direction-0 claim; two one-sided tests at ``alpha / 2``).

    Parameters
    ----------
    effect, sd, n, alpha
        As in :func:`power`.
    margin : float
        Equivalence margin (> 0), in the units of the differences.

    Returns
    -------
    float
        Exact: the mean and the sample sd are independent, so the probability is the
        normal probability of the mean falling inside ``(-margin + h, margin - h)``,
        ``h = t_{1-alpha/2, n-1} * s / sqrt(n)``, integrated over the scaled
        chi-square distribution of ``s`` (in its quantiles, so that a narrow
        distribution at large ``n`` is not missed).
    """
    from scipy import integrate, stats

    _check(sd, n)
    if not margin > 0:
        raise ValueError(f"margin must be > 0, got {margin!r}")
    df = n - 1
    k = stats.t.ppf(1 - alpha / 2, df) / np.sqrt(n)
    se = sd / np.sqrt(n)

    def inside(q):  # q: quantile of u = df * s^2 / sd^2, chi-square with df degrees of freedom
        h = k * sd * np.sqrt(stats.chi2.ppf(q, df) / df)
        return stats.norm.cdf((margin - h - effect) / se) - stats.norm.cdf((-margin + h - effect) / se)

    top = stats.chi2.cdf(df * (margin / (k * sd)) ** 2, df)  # beyond: wider than the margin
    return float(min(1.0, max(0.0, integrate.quad(inside, 0, top, limit=200, epsabs=1e-12)[0])))


def min_effect(sd, n, alpha=ALPHA, power_=POWER):
    """Smallest true effect the two-sided paired t-test detects with ``power_``.

    Parameters
    ----------
    sd, n, alpha
        As in :func:`power`.
    power_ : float, default 0.8
        Wanted power, in ``(alpha, 1)``.

    Returns
    -------
    float
        The positive effect at which :func:`power` equals ``power_`` (root-finding on
        the exact power, to 1e-10 relative).
    """
    from scipy import optimize

    _check(sd, n)
    if not alpha < power_ < 1:
        raise ValueError(f"power must be in (alpha, 1), got {power_!r}")
    high = sd
    while power(high, sd, n, alpha) < power_:
        high *= 2
    return float(optimize.brentq(lambda e: power(e, sd, n, alpha) - power_, 0.0, high, rtol=1e-10))


def seeds_needed(effect, sd, alpha=ALPHA, power_=POWER, margin=None, most=10_000):
    """Fewest seeds (pairs) at which a claim reaches ``power_``.

    Parameters
    ----------
    effect, sd, alpha
        As in :func:`power`.
    power_ : float, default 0.8
    margin : float, optional
        An equivalence claim's margin (:func:`equivalence_power`); default: the
        two-sided t-test (:func:`power`).
    most : int, default 10000
        Largest number of seeds searched.

    Returns
    -------
    int or None
        The smallest ``n >= 2`` with power at least ``power_`` (power grows with
        ``n``: a doubling, then a bisection search), or None if even ``most`` seeds do
        not reach it (always for a zero effect of a t-test).
    """
    def reaches(n):
        got = power(effect, sd, n, alpha) if margin is None else equivalence_power(
            effect, sd, n, margin, alpha)
        return got >= power_

    if not reaches(most):
        return None
    low, high = 1, 2  # reaches(low) is False (n = 1 has no test), reaches(high) unknown
    while not reaches(high):
        low, high = high, min(2 * high, most)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if reaches(mid) else (mid, high)
    return high


def holm_alpha(m, alpha=ALPHA):
    """Holm's strictest level, ``alpha / m``: a claim with enough power at it has enough
    at every step of Holm's procedure over ``m`` claims."""
    if isinstance(m, bool) or int(m) != m or m < 1:
        raise ValueError(f"m must be a positive integer, got {m!r}")
    return alpha / m


def sd_upper(sd, n, confidence=0.8):
    """One-sided upper confidence bound of a true sd from a sample sd of ``n`` values:
    ``sd * sqrt((n - 1) / chi2_{1 - confidence, n - 1})`` (a pilot's sd is itself
    uncertain; planning with this bound gives the wanted power with probability
    ``confidence`` over pilots, Browne 1995)."""
    from scipy import stats

    _check(sd, n)
    return float(sd * np.sqrt((n - 1) / stats.chi2.ppf(1 - confidence, n - 1)))


# ------------------------------------------------------------------ claims from a pilot
def accuracy(result, quantity):
    """One run's accuracy ``quantity`` (:class:`Term`): test error, test error after
    recalibration (or after another re-estimation), or final training accuracy in train
    or inference mode (%)."""
    if quantity == "test":
        return result["test_error"]
    if quantity == "adjusted":
        return result["recalibrated"]["test_error"]
    if quantity.startswith("adjusted_"):
        return result["reestimated"][quantity[len("adjusted_"):]]
    return result["history"][quantity][-1]


def differences(claim, runs):
    """Per-seed differences of ``claim`` over the seeds every arm has.

    Parameters
    ----------
    claim : AccuracyClaim
    runs : dict
        ``(arch, arm) -> {seed: result}`` (results of
        :func:`varshift.reproduce.experiments.train_network`).

    Returns
    -------
    seeds : list of int
        Sorted seeds present in every arm of the claim.
    values : ndarray of float, shape (len(seeds),)
    """
    arms = [runs.get(a, {}) for a in claim.arms]
    seeds = sorted(set.intersection(*(set(a) for a in arms)))
    values = np.array([sum(t.sign * accuracy(runs[(t.arch, t.arm)][s], t.quantity) for t in claim.terms)
                       for s in seeds], float)
    return seeds, values


def paper_effect(claim):
    """The paper's value of ``claim``'s difference (points) and its sources, or
    ``(None, reason)`` where the paper gives no number; 0 for an equivalence claim."""
    if claim.margin is not None:
        return 0.0, "the paper's 'close to': 0"
    keys = [(t.arch, t.arm, t.quantity) for t in claim.terms]
    missing = [k for k in keys if k not in PAPER]
    if missing:
        return None, "no number in the paper"
    effect = sum(t.sign * PAPER[k][0] for t, k in zip(claim.terms, keys))
    return float(effect), "; ".join(dict.fromkeys(PAPER[k][1] for k in keys))


def scaled_effect(claim, baseline):
    """The paper's effect scaled to our error level, term by term:
    ``sum sign * paper_value * baseline[arch] / PAPER_BASELINE[arch]`` (``baseline``:
    our mean no-Dropout test error per architecture, %); None without a paper number."""
    effect, _ = paper_effect(claim)
    if effect is None or claim.margin is not None:
        return effect
    return float(sum(t.sign * PAPER[(t.arch, t.arm, t.quantity)][0] * baseline[t.arch]
                     / PAPER_BASELINE[t.arch] for t in claim.terms))


def analyse(claims, runs, alpha=ALPHA, power_=POWER, budget=BUDGET, grid=(10, 20, 30)):
    """The power table: one row per claim.

    Parameters
    ----------
    claims : list of AccuracyClaim
        Holm's ``m`` is their number.
    runs : dict
        ``(arch, arm) -> {seed: result}``; the no-Dropout arm of each architecture
        gives our baseline error.
    alpha, power_ : float
    budget : int
        Most seeds a claim may need to be testable.
    grid : tuple of int
        Numbers of seeds at which the smallest detectable effect is also given.

    Returns
    -------
    list of dict
        Per claim: ``figure``, ``text``, ``direction``, ``margin``, ``n``, ``mean``,
        ``sd`` (paired, ``ddof=1``), ``paper``, ``source``, ``scaled``, ``mde``
        (smallest effect detectable, ``{"alpha": ..., "holm": ...}``, at the pilot's
        n), ``mde_grid`` (Holm, at ``grid``), ``power`` (equivalence claims: the power
        at the pilot's n and the paper's effect 0, instead of ``mde``), ``seeds``
        (``{"alpha", "holm"}``), ``seeds_upper`` (at Holm's alpha, planning with
        :func:`sd_upper` instead of the sd: a check, not the decision), ``testable``
        (bool, or None without a pilot; decided on the sd itself, at Holm's alpha)
        and ``why``.
    """
    holm = holm_alpha(len(claims), alpha)
    archs = {t.arch for c in claims for t in c.terms}
    baseline = {a: float(np.mean([r["test_error"] for r in runs[(a, BASE)].values()]))
                for a in archs if runs.get((a, BASE))}
    rows = []
    for claim in claims:
        seeds, d = differences(claim, runs)
        effect, source = paper_effect(claim)
        row = {"figure": claim.figure, "text": claim.text, "direction": claim.direction,
               "margin": claim.margin, "n": len(seeds), "mean": None, "sd": None,
               "paper": effect, "source": source, "scaled": None, "mde": None, "mde_grid": None,
               "power": None, "seeds": None, "seeds_upper": None, "testable": None, "why": "no pilot runs of its arms at this regime"}
        rows.append(row)
        if len(seeds) < 3 or not all(t.arch in baseline for t in claim.terms):
            continue
        sd = float(d.std(ddof=1))
        row.update(mean=float(d.mean()), sd=sd)
        if sd == 0:
            row.update(testable=False, why="the pilot's differences do not vary (sd 0)")
            continue
        levels = {"alpha": alpha, "holm": holm}
        if claim.margin is not None:  # no effect to detect: the power at the paper's 0
            row["power"] = {k: equivalence_power(0.0, sd, len(seeds), claim.margin, a)
                            for k, a in levels.items()}
        else:
            row["mde"] = {k: min_effect(sd, len(seeds), a, power_) for k, a in levels.items()}
            row["mde_grid"] = {str(n): min_effect(sd, n, holm, power_) for n in grid}
        if effect is None:
            row.update(testable=False, why="the paper gives no effect size")
            continue
        scaled = scaled_effect(claim, baseline)
        row["scaled"] = scaled
        if claim.margin is None and (scaled == 0 or np.sign(scaled) != claim.direction):
            row.update(testable=False, why="the paper's own effect is zero or has the other sign")
            continue
        row["seeds"] = {k: seeds_needed(scaled, sd, a, power_, claim.margin, most=10_000)
                        for k, a in levels.items()}
        row["seeds_upper"] = seeds_needed(scaled, sd_upper(sd, len(seeds)), holm, power_,
                                          claim.margin, most=10_000)
        need = row["seeds"]["holm"]
        row["testable"] = need is not None and need <= budget
        row["why"] = (f"{need} seeds at Holm's alpha" if row["testable"] else
                      f"needs {need or 'more than 10,000'} seeds at Holm's alpha, over the budget of {budget}")
    return rows
