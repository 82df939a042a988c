"""The statistical protocol: paired intervals decide, undecided never counts as holding."""

import numpy as np
import pytest

from varshift import verdicts as v
from varshift.verdicts import Claim, count, interval, judge, tally

RNG = np.random.default_rng(0)
NOISE = RNG.normal(0, 0.3, 8)


def test_interval_matches_scipy_t():
    from scipy import stats

    v = [1.0, 2.0, 4.0, 3.5]
    mean, low, high = interval(v)
    ref = stats.t.interval(0.95, 3, loc=np.mean(v), scale=stats.sem(v))
    assert mean == pytest.approx(2.625) and (low, high) == pytest.approx(ref)
    assert interval([2.0])[1:] == (-np.inf, np.inf)


@pytest.mark.parametrize("bad", [[], [1.0, np.nan], [np.inf, 1.0]])
def test_interval_rejects_empty_or_non_finite(bad):
    with pytest.raises(ValueError, match="finite"):
        interval(bad)


@pytest.mark.parametrize("direction", [1, -1])
def test_known_effect_holds_reversed_is_contradicted_none_is_undecided(direction):
    reference = 5 + NOISE
    effect = 2.0 * direction
    assert Claim.paired("c", "p", reference + effect + NOISE / 10, reference,
                        direction=direction).verdict == "holds"
    assert Claim.paired("c", "p", reference - effect + NOISE / 10, reference,
                        direction=direction).verdict == "contradicted"
    no_effect = reference + np.tile([1.0, -1.0], 4)  # mean difference exactly 0
    assert Claim.paired("c", "p", no_effect, reference, direction=direction).verdict == "undecided"


def test_pairing_removes_the_shared_seed_noise():
    seeds = np.array([1.0, 9.0, 3.0, 12.0, 6.0])  # large seed-to-seed spread
    claim = Claim.paired("c", "p", seeds + 0.5 + [0.01, -0.02, 0.0, 0.02, -0.01], seeds, direction=1)
    assert claim.verdict == "holds" and claim.n == 5
    assert claim.low > 0.4 and claim.high < 0.6 and "difference +0.50" in claim.ours


def test_minimum_effect_and_equivalence_margin():
    ref = 5 + NOISE
    small = ref + 0.3 + NOISE / 100
    assert Claim.paired("c", "p", small, ref, direction=1).verdict == "holds"
    assert Claim.paired("c", "p", small, ref, direction=1, min_effect=1.0).verdict == "undecided"
    assert Claim.paired("c", "p", small, ref, direction=0, min_effect=1.0).verdict == "holds"
    assert Claim.paired("c", "p", ref + 3 + NOISE / 100, ref, direction=0,
                        min_effect=1.0).verdict == "contradicted"
    assert judge(-2.0, 2.0, 0, 1.0) == "undecided"
    with pytest.raises(ValueError, match="margin"):
        judge(0.0, 1.0, 0, 0.0)
    with pytest.raises(ValueError, match="direction"):
        judge(0.0, 1.0, 2)


def test_fewer_than_three_seeds_are_undecided_and_the_posted_regime_is_respected():
    assert Claim.paired("c", "p", [9.0], [1.0], direction=1).verdict == "undecided"
    # two equal differences: an interval of width 0, still not evidence
    assert Claim.paired("c", "p", [1.15, 1.20], [1.0, 1.05], direction=1).verdict == "undecided"
    assert Claim.paired("c", "p", [1.15, 1.20, 1.3], [1.0, 1.05, 1.15], direction=1).verdict == "holds"
    far = Claim.paired("c", "p", 5 + NOISE + 3, 5 + NOISE, direction=-1, posted_regime=False)
    assert far.verdict == "not tested at the posted regime" and far.holds is None
    assert far.estimate == pytest.approx(3.0)


def test_one_sample_claims_against_a_fixed_value():
    claim = Claim.paired("c", "p", [0.03, 0.035, 0.04], 0.01, direction=1, digits=3)
    assert claim.verdict == "holds" and "vs 0.01;" in claim.ours


def test_all_of_and_counting_keep_undecided_apart():
    hold = Claim.paired("h", "", [2.0, 2.1, 2.2], [1.0, 1.0, 1.0], direction=1)
    undecided = Claim.paired("u", "", [2.0, 0.1, 2.2], [1.0, 1.0, 1.0], direction=1)
    contra = Claim.paired("x", "", [0.0, 0.1, 0.2], [1.0, 1.0, 1.0], direction=1)
    assert Claim.all_of("a", "", [hold, hold]).verdict == "holds"
    assert Claim.all_of("a", "", [hold, undecided]).verdict == "undecided"
    assert Claim.all_of("a", "", [undecided, contra]).verdict == "contradicted"
    sanity = Claim.sanity("s", "1", "1.0", True)
    claims = [hold, undecided, contra, sanity]
    assert count(claims) == {"holds": 1, "undecided": 1, "contradicted": 1}
    assert tally(claims) == "1 hold, 1 contradicted, 1 undecided"
    assert sanity.holds is True and Claim.sanity("s", "1", "2", False).verdict == "fails"


def test_extensions_and_sanity_rows_are_counted_apart():
    hold = Claim.paired("h", "", [2.0, 2.1, 2.2], [1.0, 1.0, 1.0], direction=1)
    contra = Claim.paired("x", "", [0.0, 0.1, 0.2], [1.0, 1.0, 1.0], direction=1)
    extension = contra.as_extension()
    assert (extension.kind, extension.verdict, extension.estimate) == ("extension", "contradicted",
                                                                        contra.estimate)
    claims = [hold, extension, Claim.sanity("s", "1", "1.0", True)]
    assert tally(claims) == "1 hold, 0 contradicted, 0 undecided"
    assert tally(claims, "extension") == "0 hold, 1 contradicted, 0 undecided"


def test_verdicts_are_validated():
    with pytest.raises(ValueError, match="verdict"):
        Claim("t", "p", "o", True)
    with pytest.raises(ValueError, match="kind"):
        Claim("t", "p", "o", "holds", kind="other")


@pytest.mark.parametrize("direction, margin", [(1, 0.0), (1, 0.3), (-1, 0.0), (-1, 0.2), (0, 0.4)])
def test_p_values_reach_alpha_exactly_when_the_interval_decides(direction, margin):
    rng = np.random.default_rng(int(50 + 10 * direction + 100 * margin))
    decided = {v.HOLDS: 0, v.CONTRADICTED: 0, v.UNDECIDED: 0}
    for _ in range(400):
        n = int(rng.integers(3, 12))
        d = rng.normal(rng.normal(0, 0.6), rng.uniform(0.05, 1.0), n)
        mean, low, high = v.interval(d)
        verdict = v.judge(low, high, direction, margin)
        p_holds, p_against = v.p_values(mean, low, high, n, direction, margin)
        assert (p_holds < v.ALPHA) == (verdict == v.HOLDS)
        assert (p_against < v.ALPHA) == (verdict == v.CONTRADICTED)
        decided[verdict] += 1
    assert min(decided.values()) > 10  # every verdict was exercised


def test_p_values_of_zero_width_intervals_and_too_few_seeds():
    assert v.p_values(0.0, 0.0, 0.0, 5, 0, 0.5) == (0.0, 1.0)   # 100 % vs 100 %: "holds"
    assert v.p_values(0.2, 0.2, 0.2, 5, 1) == (0.0, 1.0)
    assert v.p_values(0.0, 0.0, 0.0, 5, 1) == (1.0, 1.0)        # no effect: undecided
    assert v.p_values(3.0, 2.0, 4.0, 2, 1) == (1.0, 1.0)


def test_holm_matches_a_hand_computation_and_is_never_more_decisive():
    def claim(p_holds, p_against, verdict):
        return v.Claim("t", "p", "o", verdict, p_holds=p_holds, p_against=p_against)

    # five tested rows; sorted p_holds 0.001, 0.003, 0.006, 0.020, 0.90 against
    # 0.025/5, 0.025/4, 0.025/3, 0.025/2: the fourth (0.020 > 0.0125) stops the procedure
    family = [claim(0.001, 0.99, v.HOLDS),
              claim(0.006, 0.99, v.HOLDS),
              claim(0.020, 0.99, v.HOLDS),
              claim(0.004, 0.99, v.NOT_TESTED),   # not part of the family
              claim(0.003, 0.99, v.HOLDS),
              claim(0.90, 0.02, v.CONTRADICTED)]
    adjusted = v.holm(family)
    assert adjusted == [v.HOLDS, v.HOLDS, v.UNDECIDED, v.NOT_TESTED, v.HOLDS, v.UNDECIDED]
    # p_against 0.02 > 0.025 / 5: the contradiction does not survive either
    assert v.holm([family[5]]) == [v.CONTRADICTED]
    rng = np.random.default_rng(0)
    claims = [v.Claim.paired("c", "p", rng.normal(m, 1, 6), 0.0, direction=1)
              for m in rng.normal(0, 1.5, 40)]
    for c, a in zip(claims, v.holm(claims)):
        assert a == c.verdict or a == v.UNDECIDED


def test_all_of_carries_intersection_union_p_values():
    parts = [v.Claim.paired(f"part {i}", "p", np.arange(5.0) + m, 0.0, direction=1)
             for i, m in enumerate((3.0, 0.5))]
    whole = v.Claim.all_of("all", "p", parts)
    assert whole.p_holds == max(c.p_holds for c in parts)
    assert whole.p_against == min(c.p_against for c in parts)


def test_holm_refuses_rows_without_p_values():
    with pytest.raises(ValueError, match="p-values"):
        v.holm([v.Claim("old row", "p", "o", v.HOLDS)])


@pytest.mark.parametrize("sd", [0.4, 1.0, 2.5, 6.0])
def test_a_seed_sd_claim_carries_p_values_that_agree_with_its_interval(sd):
    from varshift.cases._common import sd_claim

    values = np.random.default_rng(int(10 * sd)).normal(0, sd, 6)
    c = sd_claim("runs vary", "p", values, at_least=1.5)
    assert (c.p_holds < v.ALPHA) == (c.verdict == v.HOLDS)
    assert (c.p_against < v.ALPHA) == (c.verdict == v.CONTRADICTED)
