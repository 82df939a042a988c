"""The statistical protocol behind every empirical verdict varshift reports.

A claim is declared before its numbers exist: the quantity, the paper's direction
(``arm`` larger or smaller than ``reference``, or both within a margin) and a minimum
effect where the paper implies one. The two arms are *paired*: the same seed gives the
same initial weights, data order and test set in both, so the per-seed differences
``d_s = arm_s - reference_s`` carry the comparison. The verdict comes from the 95 %
Student-t confidence interval of their mean:

============  ============================================================  ==============
direction     holds                                                         contradicted
============  ============================================================  ==============
``+1``        lower bound > ``min_effect``                                  upper < 0
``-1``        upper bound < ``-min_effect``                                 lower > 0
``0``         interval inside (-``margin``, ``margin``)                     interval outside
============  ============================================================  ==============

and **undecided** otherwise, and always with fewer than :data:`MIN_SEEDS` seeds (two
seeds cannot estimate the spread: equal differences in both, common with test errors
counted in steps of one sample, give an interval of width 0). Undecided is never
counted as holding. A statement that was measured away from the regime it was made in
(e.g. posted at 97-99 % accuracy, tested at 85 %) is reported as *not tested at the
posted regime*, whatever its interval. Checks that are true by construction (a shift of
1 right after recalibrating on the same data) are :meth:`Claim.sanity` rows, never
claims.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import numpy as np

__all__ = ["Claim", "VERDICTS", "MIN_SEEDS", "ALPHA", "interval", "judge", "p_values", "holm",
           "count", "tally", "adjusted_tally"]

HOLDS, CONTRADICTED, UNDECIDED, NOT_TESTED = (
    "holds", "contradicted", "undecided", "not tested at the posted regime")
PASSES, FAILS = "passes", "fails"
MIN_SEEDS = 3
"""Fewest pairs a claim is judged on; with fewer it is undecided."""
ALPHA = 0.025
"""One-sided level of each test: a bound of the two-sided 95 % interval excludes a value
exactly when the one-sided p-value against it is below 0.025."""
VERDICTS = (HOLDS, CONTRADICTED, UNDECIDED, NOT_TESTED)
"""Verdicts of a claim; sanity checks are ``'passes'`` or ``'fails'``."""


def interval(values, confidence=0.95):
    """Mean of ``values`` and its two-sided Student-t confidence interval.

    Parameters
    ----------
    values : array_like of float, shape (n,)
        Per-seed values (e.g. paired differences).
    confidence : float, default 0.95

    Returns
    -------
    mean, low, high : float
        ``low, high = mean -/+ t_{n-1} * sd / sqrt(n)``; infinite for ``n < 2``.

    Raises
    ------
    ValueError
        If ``values`` is empty or holds a NaN or an infinity.
    """
    from scipy import stats

    v = np.asarray(values, float).ravel()
    if v.size == 0 or not np.all(np.isfinite(v)):
        raise ValueError(f"values must be a non-empty list of finite numbers, got {v.tolist()}")
    mean = float(v.mean())
    if v.size < 2:
        return mean, -np.inf, np.inf
    half = float(stats.t.ppf(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return mean, mean - half, mean + half


def judge(low, high, direction, min_effect=0.0) -> str:
    """The verdict for an interval ``[low, high]`` of ``arm - reference``.

    Parameters
    ----------
    low, high : float
    direction : {1, -1, 0}
        The paper's direction: ``arm`` larger (1), smaller (-1), or equal within
        ``min_effect`` (0, an equivalence claim; ``min_effect`` is then the margin > 0).
    min_effect : float, default 0.0

    Returns
    -------
    str
        ``'holds'``, ``'contradicted'`` or ``'undecided'``.
    """
    if direction not in (1, -1, 0):
        raise ValueError(f"direction must be 1, -1 or 0, got {direction!r}")
    if min_effect < 0 or (direction == 0 and min_effect <= 0):
        raise ValueError(f"min_effect must be >= 0 (> 0, the margin, for direction 0), got {min_effect}")
    if direction == 0:
        if -min_effect < low and high < min_effect:
            return HOLDS
        return CONTRADICTED if (low > min_effect or high < -min_effect) else UNDECIDED
    low, high = (low, high) if direction == 1 else (-high, -low)
    if low > min_effect:
        return HOLDS
    return CONTRADICTED if high < 0 else UNDECIDED


def p_values(mean, low, high, n, direction, min_effect=0.0, confidence=0.95):
    r"""One-sided p-values behind :func:`judge`'s verdict on a Student-t interval.

    Parameters
    ----------
    mean, low, high : float
        Mean paired difference and its two-sided ``confidence`` interval (as returned by
        :func:`interval`).
    n : int
        Number of pairs.
    direction : {1, -1, 0}
    min_effect : float, default 0.0
    confidence : float, default 0.95

    Returns
    -------
    p_holds, p_against : float
        ``p_holds`` tests the paper's statement: the null is "no effect of at least
        ``min_effect`` in the paper's direction" (for ``direction=0``, two one-sided
        tests against the margins, the larger p). ``p_against`` tests the contradiction:
        the null is "no effect the other way" (for ``direction=0``: "inside the margin",
        the smaller of the two p). Both are 1 with fewer than :data:`MIN_SEEDS` pairs.

    Notes
    -----
    With standard error :math:`s = (high - low) / (2 t_{n-1})`, a one-sided test of
    :math:`\mu \le c` has :math:`p = 1 - F_{t, n-1}((\bar d - c) / s)`. Hence
    ``p_holds < ALPHA`` exactly when :func:`judge` says ``'holds'`` at the 95 % interval
    and ``p_against < ALPHA`` exactly when it says ``'contradicted'``. When every
    difference is equal (:math:`s = 0`) a p-value is 0 if the mean is strictly beyond the
    tested value and 1 otherwise, as the zero-width interval is judged.
    """
    from scipy import stats

    if n < MIN_SEEDS or not (np.isfinite(low) and np.isfinite(high)):
        return 1.0, 1.0
    se = (high - low) / 2 / stats.t.ppf(0.5 + confidence / 2, n - 1)

    def above(c):  # p of the null mu <= c
        if se == 0:
            return 0.0 if mean > c else 1.0
        return float(stats.t.sf((mean - c) / se, n - 1))

    def below(c):  # p of the null mu >= c
        if se == 0:
            return 0.0 if mean < c else 1.0
        return float(stats.t.cdf((mean - c) / se, n - 1))

    if direction == 0:
        return (max(above(-min_effect), below(min_effect)),
                min(above(min_effect), below(-min_effect)))
    if direction == 1:
        return above(min_effect), below(0.0)
    return below(-min_effect), above(0.0)


def holm(claims, alpha=ALPHA) -> list:
    r"""Holm-adjusted verdicts of a family of claims.

    Parameters
    ----------
    claims : list of Claim
        The family (e.g. every paper claim of a report). Rows *not tested at the posted
        regime* keep that verdict and are not part of the family.
    alpha : float, default :data:`ALPHA`
        Family-wise level of each of the two step-down procedures.

    Returns
    -------
    list of str
        One verdict per claim: ``'holds'`` where Holm's step-down procedure rejects the
        claim's ``p_holds`` null, ``'contradicted'`` where it rejects its ``p_against``
        null, ``'undecided'`` otherwise.

    Raises
    ------
    ValueError
        If a claim of the family has no p-values (a sanity row, or a row from before
        they were stored).

    Notes
    -----
    Two families of tests, one for "holds" and one for "contradicted", each controlled at
    ``alpha``: sort the :math:`m` p-values, reject the :math:`k`-th smallest while
    :math:`p_{(k)} \le \alpha / (m - k + 1)`, stop at the first that is not. An adjusted
    verdict is never more decisive than the unadjusted one.
    """
    tested = [i for i, c in enumerate(claims) if c.verdict != NOT_TESTED]
    missing = [claims[i].text for i in tested if claims[i].p_holds is None or claims[i].p_against is None]
    if missing:
        raise ValueError(f"claims must carry p-values to be Holm-adjusted; missing in {missing}")

    def rejected(p):
        order = sorted(tested, key=lambda i: p[i])
        out = set()
        for k, i in enumerate(order):
            if p[i] > alpha / (len(order) - k):
                break
            out.add(i)
        return out

    holds = rejected({i: claims[i].p_holds for i in tested})
    against = rejected({i: claims[i].p_against for i in tested})
    return [c.verdict if c.verdict == NOT_TESTED else HOLDS if i in holds
            else CONTRADICTED if i in against else UNDECIDED for i, c in enumerate(claims)]


def _fmt(x, digits):
    return f"{x:+.{digits}f}" if np.isfinite(x) else ("+inf" if x > 0 else "-inf")


@dataclass
class Claim:
    """One statement checked against measurements, with its verdict.

    Attributes
    ----------
    text : str
        The statement, e.g. ``"(b) hurts less than (a) at drop 0.5"``.
    paper : str
        What the paper (or the post) says, with its number.
    ours : str
        Our numbers, formatted.
    verdict : str
        One of :data:`VERDICTS` for a claim; ``'passes'`` or ``'fails'`` for a sanity
        check.
    estimate : float or None
        Mean paired difference ``arm - reference`` (None where there is none).
    low, high : float or None
        Its 95 % confidence interval.
    n : int or None
        Number of seeds (pairs).
    kind : {'claim', 'extension', 'sanity'}
        A claim of the paper (or the post); an extension: a comparison the paper does
        not make, judged by the same rule and counted apart; a sanity check: true by
        construction, never counted.
    rule : str
        The pre-declared rule, e.g. ``"paired t 95 %, paper: arm < reference"``.
    p_holds, p_against : float or None
        One-sided p-values of the claim and of its contradiction (:func:`p_values`), for
        the multiplicity adjustment (:func:`holm`); None for sanity rows.
    """

    text: str
    paper: str
    ours: str
    verdict: str
    estimate: float | None = None
    low: float | None = None
    high: float | None = None
    n: int | None = None
    kind: str = "claim"
    rule: str = ""
    p_holds: float | None = None
    p_against: float | None = None

    def __post_init__(self):
        allowed = (PASSES, FAILS) if self.kind == "sanity" else VERDICTS
        if self.kind not in ("claim", "extension", "sanity"):
            raise ValueError(f"kind must be 'claim', 'extension' or 'sanity', got {self.kind!r}")
        if self.verdict not in allowed:
            raise ValueError(f"verdict of a {self.kind} must be one of {allowed}, got {self.verdict!r}")

    @property
    def holds(self) -> bool | None:
        """True if the claim holds (or the sanity check passes), False if contradicted
        (or failed), None if undecided or not tested."""
        return {HOLDS: True, PASSES: True, CONTRADICTED: False, FAILS: False}.get(self.verdict)

    @classmethod
    def paired(cls, text, paper, arm, reference, *, direction, min_effect=0.0, unit="",
               digits=2, names=("arm", "reference"), posted_regime=True, confidence=0.95):
        """A claim judged from per-seed values of two paired arms.

        Parameters
        ----------
        text, paper : str
        arm, reference : array_like of float, shape (n_seeds,)
            Values of the two arms, index ``s`` from seed ``s`` in both. ``reference``
            may be a scalar (a one-sample claim against a fixed value).
        direction : {1, -1, 0}
            The paper's direction of ``arm - reference`` (see :func:`judge`).
        min_effect : float, default 0.0
            Smallest effect the paper implies (the margin for ``direction=0``).
        unit : str
            Appended to the numbers, e.g. ``' %'``.
        digits : int, default 2
        names : (str, str)
            How the two arms are called in :attr:`ours`.
        posted_regime : bool, default True
            False marks the claim *not tested at the posted regime* (the interval is
            still shown).
        confidence : float, default 0.95

        Returns
        -------
        Claim
        """
        arm = np.asarray(arm, float).ravel()
        fixed = np.ndim(reference) == 0  # a one-sample claim against a fixed value
        reference = np.broadcast_to(np.asarray(reference, float), arm.shape)
        mean, low, high = interval(arm - reference, confidence)
        verdict = (NOT_TESTED if not posted_regime else UNDECIDED if arm.size < MIN_SEEDS
                   else judge(low, high, direction, min_effect))
        sd = lambda v: float(v.std(ddof=1)) if v.size > 1 else 0.0  # noqa: E731
        ref = (f"{reference[0]:g}" if fixed else
               f"{names[1]} {reference.mean():.{digits}f} ± {sd(reference):.{digits}f}{unit}")
        ours = (f"{names[0]} {arm.mean():.{digits}f} ± {sd(arm):.{digits}f}{unit} vs {ref}; "
                f"difference {_fmt(mean, digits)} [{_fmt(low, digits)}, {_fmt(high, digits)}], "
                f"n={arm.size}")
        sign = {1: ">", -1: "<"}.get(direction)
        rule = (f"paired t {confidence:.0%}: {names[0]} {sign} {names[1]}"
                + (f" by > {min_effect:g}" if min_effect else "") if sign else
                f"paired t {confidence:.0%}: |{names[0]} - {names[1]}| < {min_effect:g}")
        p_holds, p_against = p_values(mean, low, high, arm.size, direction, min_effect, confidence)
        return cls(text, paper, ours, verdict, mean, low, high, int(arm.size), "claim", rule,
                   p_holds, p_against)

    @classmethod
    def all_of(cls, text, paper, claims):
        """A claim made of several paired comparisons (e.g. every consecutive rate):
        holds if all hold, contradicted if any is contradicted, else undecided.

        Its ``p_holds`` is the largest of the parts' (an intersection-union test) and its
        ``p_against`` the smallest, so that :func:`holm` treats it as :func:`judge`'s rule
        does."""
        verdicts = {c.verdict for c in claims}
        if NOT_TESTED in verdicts:
            verdict = NOT_TESTED
        elif CONTRADICTED in verdicts:
            verdict = CONTRADICTED
        else:
            verdict = HOLDS if verdicts == {HOLDS} else UNDECIDED
        ours = "; ".join(f"{c.text}: {c.estimate:+.3g} [{c.low:+.3g}, {c.high:+.3g}]" for c in claims)
        rules = sorted({c.rule for c in claims})
        return cls(text, paper, ours, verdict, None, None, None, claims[0].n, "claim",
                   "every part: " + "; ".join(rules), max(c.p_holds for c in claims),
                   min(c.p_against for c in claims))

    def as_extension(self) -> "Claim":
        """The same comparison, counted as an extension (not a claim of the paper)."""
        return replace(self, kind="extension")

    @classmethod
    def sanity(cls, text, expected, ours, ok):
        """A check that is true by construction when the code is right."""
        return cls(text, expected, ours, PASSES if ok else FAILS, kind="sanity",
                   rule="by construction")


def count(claims, kind="claim") -> Counter:
    """How many claims of ``kind`` (``'claim'`` or ``'extension'``) have each verdict."""
    return Counter(c.verdict for c in claims if c.kind == kind)


def tally(claims, kind="claim") -> str:
    """``'H hold, C contradicted, U undecided (, N not tested at the posted regime)'``."""
    n = count(claims, kind)
    parts = [f"{n[HOLDS]} hold", f"{n[CONTRADICTED]} contradicted", f"{n[UNDECIDED]} undecided"]
    if n[NOT_TESTED]:
        parts.append(f"{n[NOT_TESTED]} not tested at the posted regime")
    return ", ".join(parts)


def adjusted_tally(claims, kind="claim") -> str:
    """:func:`tally` of the ``kind`` rows after Holm's adjustment (:func:`holm`, the rows
    of ``kind`` as one family), with the unadjusted tally beside it where it differs."""
    family = [c for c in claims if c.kind == kind]
    adjusted = tally([replace(c, verdict=v) for c, v in zip(family, holm(family))], kind)
    raw = tally(family, kind)
    return adjusted if adjusted == raw else f"{adjusted} (without the adjustment: {raw})"
