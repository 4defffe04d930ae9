"""jbench.stats against scipy/statsmodels and hand computations on constructed paired data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from jbench import stats


def _table(both_right: int, r2w: int, w2r: int, both_wrong: int) -> tuple[np.ndarray, np.ndarray]:
    """Paired 0/1 outcomes with a given McNemar table (a = original, b = variant), in a shuffled order."""
    a = np.array([1] * both_right + [1] * r2w + [0] * w2r + [0] * both_wrong)
    b = np.array([1] * both_right + [0] * r2w + [1] * w2r + [0] * both_wrong)
    perm = np.random.default_rng(1).permutation(a.size)
    return a[perm], b[perm]


# ---- McNemar / flips / agreement -------------------------------------------------------------------------------


def test_mcnemar_known_table_matches_scipy_and_statsmodels() -> None:
    a, b = _table(30, 15, 5, 10)  # b01 = 5 (wrong→right), b10 = 15 (right→wrong)
    b01, b10, p = stats.mcnemar_exact(a, b)
    assert (b01, b10) == (5, 15)
    assert p == pytest.approx(sps.binomtest(5, 20, 0.5).pvalue, rel=1e-12)
    assert p == pytest.approx(0.04138946533203125, rel=1e-9)  # 2 * P(Bin(20, .5) <= 5)
    contingency = pytest.importorskip("statsmodels.stats.contingency_tables")
    sm = contingency.mcnemar([[30, 15], [5, 10]], exact=True)
    assert p == pytest.approx(sm.pvalue, rel=1e-12)


def test_mcnemar_symmetric_and_no_discordant_pairs() -> None:
    a, b = _table(10, 7, 7, 3)
    assert stats.mcnemar_exact(a, b)[2] == pytest.approx(1.0)
    same = np.array([1, 0, 1, 1, 0])
    assert stats.mcnemar_exact(same, same) == (0, 0, 1.0)


def test_mcnemar_rejects_non_binary() -> None:
    with pytest.raises(ValueError, match="0/1"):
        stats.mcnemar_exact([0.5, 1.0], [1.0, 1.0])


def test_flips_and_agreement() -> None:
    a, b = _table(4, 3, 2, 1)
    assert stats.flips(a, b) == stats.Flips(right_to_wrong=3, wrong_to_right=2)
    assert stats.flips(a, b).right_to_wrong == 3
    assert stats.agreement([0, 1, 2, 3], [0, 1, 0, 3]) == pytest.approx(0.75)
    assert stats.agreement(["東京", "a"], ["東京", "b"]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        stats.agreement([1, 2], [1])


# ---- bootstrap -------------------------------------------------------------------------------------------------


def test_bootstrap_deterministic_for_a_seed() -> None:
    a, b = _table(300, 40, 25, 100)
    first = stats.paired_bootstrap_ci(a, b, iters=5000, seed=7)
    assert first == stats.paired_bootstrap_ci(a, b, iters=5000, seed=7)
    # 0/1 data put the percentiles on a lattice, so compare the replicates themselves across seeds
    ma7, mb7 = stats.bootstrap_means(a, b, iters=100, rng=np.random.default_rng(7))
    ma8, mb8 = stats.bootstrap_means(a, b, iters=100, rng=np.random.default_rng(8))
    assert not np.array_equal(mb7 - ma7, mb8 - ma8)
    delta, lo, hi = first
    assert delta == pytest.approx(b.mean() - a.mean())
    assert lo < delta < hi


def test_bootstrap_ci_matches_the_analytic_paired_interval() -> None:
    a, b = _table(1500, 120, 60, 320)
    delta, lo, hi = stats.paired_bootstrap_ci(a, b, iters=20000, seed=0)
    d = b - a
    se = d.std(ddof=1) / math.sqrt(d.size)
    assert lo == pytest.approx(delta - 1.96 * se, abs=0.15 * se)
    assert hi == pytest.approx(delta + 1.96 * se, abs=0.15 * se)


def test_bootstrap_covers_the_true_delta() -> None:
    # population: P(original right) = .7, the variant loses 3 points; the CI should cover -0.03 ~95% of the time
    rng = np.random.default_rng(123)
    true_delta, reps, covered = -0.03, 200, 0
    for i in range(reps):
        a = (rng.random(800) < 0.7).astype(float)
        flip_down = (a == 1) & (rng.random(800) < 0.08)
        flip_up = (a == 0) & (rng.random(800) < 0.08 * 0.7 / 0.3 - 0.03 / 0.3)
        b = a.copy()
        b[flip_down], b[flip_up] = 0, 1
        _, lo, hi = stats.paired_bootstrap_ci(a, b, iters=2000, seed=i)
        covered += lo <= true_delta <= hi
    assert 0.90 <= covered / reps <= 0.99


def test_bootstrap_same_distribution_as_index_resampling() -> None:
    # continuous scores (every pair distinct) and naive index resampling give the same percentile interval
    rng = np.random.default_rng(5)
    a = rng.normal(0.6, 0.2, 60)
    b = a + rng.normal(-0.05, 0.1, 60)
    _, lo, hi = stats.paired_bootstrap_ci(a, b, iters=20000, seed=0)
    idx = np.random.default_rng(99).integers(0, a.size, size=(20000, a.size))
    naive = np.quantile(b[idx].mean(1) - a[idx].mean(1), [0.025, 0.975])
    width = naive[1] - naive[0]
    assert lo == pytest.approx(naive[0], abs=0.05 * width)
    assert hi == pytest.approx(naive[1], abs=0.05 * width)


def test_average_bootstrap_of_one_task_is_the_task_bootstrap() -> None:
    a, b = _table(80, 10, 4, 30)
    assert stats.paired_bootstrap_average_ci([(a, b)], iters=3000, seed=3) == \
        stats.paired_bootstrap_ci(a, b, iters=3000, seed=3)
    a2, b2 = _table(50, 2, 9, 20)
    delta, lo, hi = stats.paired_bootstrap_average_ci([(a, b), (a2, b2)], iters=3000, seed=3)
    assert delta == pytest.approx(((b.mean() - a.mean()) + (b2.mean() - a2.mean())) / 2)
    assert lo < delta < hi


def test_bootstrap_input_checks() -> None:
    with pytest.raises(ValueError):
        stats.paired_bootstrap_ci([1, 0], [1], iters=10)
    with pytest.raises(ValueError):
        stats.paired_bootstrap_ci([], [], iters=10)


# ---- KL --------------------------------------------------------------------------------------------------------


def test_choice_kl_zero_for_identical_lls() -> None:
    lls = [[-1.0, -2.0, -3.5], [-0.2, -4.0], [-7.0, -7.0, -1.0, -3.0, -2.0]]
    res = stats.choice_kl(lls, lls)
    assert res.mean_kl == pytest.approx(0.0, abs=1e-15)
    assert res.top_agreement == 1.0
    assert res.n == 3


def test_choice_kl_matches_hand_computation() -> None:
    # softmax is shift-invariant: the lls are log-probabilities plus an arbitrary constant per example
    la = list(np.log([0.5, 0.3, 0.2]) - 12.0)
    lb = list(np.log([0.2, 0.3, 0.5]) - 3.0)
    hand = 0.5 * math.log(0.5 / 0.2) + 0.3 * math.log(1.0) + 0.2 * math.log(0.2 / 0.5)  # = 0.3 ln 2.5
    res = stats.choice_kl([la], [lb])
    assert res.mean_kl == pytest.approx(hand, rel=1e-12)
    assert res.mean_kl == pytest.approx(sps.entropy([0.5, 0.3, 0.2], [0.2, 0.3, 0.5]), rel=1e-12)
    assert res.top_agreement == 0.0
    # averaged with an identical example: mean halves, top agreement 1/2
    res2 = stats.choice_kl([la, [-1.0, -2.0]], [lb, [-1.0, -2.0]])
    assert res2.mean_kl == pytest.approx(hand / 2)
    assert res2.top_agreement == pytest.approx(0.5)


def test_choice_kl_nonfinite_rows_are_left_out() -> None:
    res = stats.choice_kl([[-1.0, -2.0], [-1.0, -2.0]], [[float("nan"), -1.0], [-1.0, -2.0]])
    assert res.n == 1 and res.n_nonfinite == 1 and res.mean_kl == pytest.approx(0.0)
    with pytest.raises(ValueError, match="choices"):
        stats.choice_kl([[-1.0, -2.0]], [[-1.0, -2.0, -3.0]])


# ---- TOST ------------------------------------------------------------------------------------------------------


def test_tost_equivalent() -> None:
    a, b = _table(1400, 12, 10, 578)  # Δ = -0.1 pt over 2000 examples
    res = stats.tost_equivalence(a * 100, b * 100, margin=1.0)
    assert res.verdict == "equivalent"
    assert -1.0 < res.lo < res.delta < res.hi < 1.0
    assert res.p < 0.05


def test_tost_worse() -> None:
    a, b = _table(1200, 150, 30, 620)  # Δ = -6 pts, se ≈ 0.65
    res = stats.tost_equivalence(a * 100, b * 100, margin=1.0)
    assert res.verdict == "worse"
    assert res.hi < -1.0


def test_tost_inconclusive() -> None:
    a, b = _table(60, 6, 3, 31)  # Δ = -3 pts over only 100 examples: the CI straddles -margin
    res = stats.tost_equivalence(a * 100, b * 100, margin=1.0)
    assert res.verdict == "inconclusive"
    assert res.lo < -1.0 < res.hi


def test_tost_better_and_identical() -> None:
    a, b = _table(1200, 30, 150, 620)
    assert stats.tost_equivalence(a * 100, b * 100, margin=1.0).verdict == "better"
    same = stats.tost_equivalence(a, a, margin=0.5)
    assert same.verdict == "equivalent" and same.delta == 0 and same.lo == same.hi == 0


def test_tost_matches_statsmodels() -> None:
    weightstats = pytest.importorskip("statsmodels.stats.weightstats")
    a, b = _table(300, 25, 15, 160)
    x, y = a * 100.0, b * 100.0
    res = stats.tost_equivalence(x, y, margin=2.0)
    p, (t1, p1, df1), (t2, p2, df2) = weightstats.ttost_paired(y, x, -2.0, 2.0)
    assert res.p_lower == pytest.approx(p1, rel=1e-9)
    assert res.p_upper == pytest.approx(p2, rel=1e-9)
    assert res.p == pytest.approx(p, rel=1e-9)
    assert res.df == df1


def test_tost_input_checks() -> None:
    with pytest.raises(ValueError, match="margin"):
        stats.tost_equivalence([1, 0], [1, 1], margin=0)
    assert stats.tost_equivalence([1.0], [0.0], margin=1.0).verdict == "inconclusive"


# ---- paired binary: Tango score interval, TOST on it, MOVER averages ---------------------------------------------


@pytest.mark.parametrize(("table", "level", "expected", "places"), [
    # (n11, n12, n21, n22); n12 = variant right & original wrong. Published / reference values of Tango's
    # interval: Tango (1998) example, 90% (as in R ratesci's tests: -0.096, 0.037)
    ((43, 0, 1, 0), 0.90, (-0.096, 0.037), 3),
    # R ratesci tests, Tango RD: (-0.027, 0.390)
    ((4, 9, 3, 16), 0.95, (-0.027, 0.390), 3),
    # Bentur et al. (2009), the paired example of Fagerland, Lydersen & Laake (2014) and of R contingencytables'
    # Tango_asymptotic_score_CI_paired_2x2
    # (-0.517, -0.026)
    ((1, 1, 7, 12), 0.95, (-0.517, -0.026), 3),
])
def test_tango_matches_published_values(table: tuple[int, int, int, int], level: float,
                                        expected: tuple[float, float], places: int) -> None:
    n = sum(table)
    lo, hi = stats.tango_interval(table[1], table[2], n, 1 - level, cc=0.0)
    assert (round(float(lo), places), round(float(hi), places)) == expected


def _score_interval_by_optimisation(n12: int, n21: int, n: int, alpha: float) -> tuple[float, float]:
    """An independent Tango interval: the restricted MLE by numerical maximisation (no closed form), roots by
    brentq. Cells: p12 = p21 + Δ, p21, concordant 1 − 2·p21 − Δ."""
    from scipy import optimize

    nc = n - n12 - n21

    def z(delta: float) -> float:
        lo_p = max(0.0, -delta) + 1e-12
        hi_p = (1 - delta) / 2 - 1e-12

        def nll(q: float) -> float:
            cells = np.array([q + delta, q, 1 - 2 * q - delta])
            counts = np.array([n12, n21, nc])
            return -float(np.sum(np.where(counts > 0, counts * np.log(np.maximum(cells, 1e-300)), 0.0)))

        q = optimize.minimize_scalar(nll, bounds=(lo_p, hi_p), method="bounded",
                                     options={"xatol": 1e-13}).x
        var = n * (2 * q + delta - delta * delta)
        return (n12 - n21 - n * delta) / math.sqrt(var)

    zc = sps.norm.ppf(1 - alpha / 2)
    dhat = (n12 - n21) / n
    lo = optimize.brentq(lambda d: z(d) - zc, -1 + 1e-9, dhat, xtol=1e-12) if dhat > -1 else -1.0
    hi = optimize.brentq(lambda d: z(d) + zc, dhat, 1 - 1e-9, xtol=1e-12) if dhat < 1 else 1.0
    return lo, hi


@pytest.mark.parametrize(("n12", "n21", "n"), [(9, 3, 32), (0, 1, 44), (16, 8, 86), (5, 40, 1000), (3, 0, 20),
                                               (0, 0, 50), (120, 60, 2000)])
def test_tango_matches_an_independent_implementation(n12: int, n21: int, n: int) -> None:
    lo, hi = stats.tango_interval(n12, n21, n, 0.05, cc=0.0)
    ref = _score_interval_by_optimisation(n12, n21, n, 0.05)
    assert float(lo) == pytest.approx(ref[0], abs=2e-6) and float(hi) == pytest.approx(ref[1], abs=2e-6)


def test_tango_continuity_correction_widens_and_vectorises() -> None:
    n12, n21, n = np.array([0, 3, 9, 40]), np.array([0, 1, 3, 20]), np.array([50, 20, 32, 160])
    lo0, hi0 = stats.tango_interval(n12, n21, n, 0.05, cc=0.0)
    lo, hi = stats.tango_interval(n12, n21, n, 0.05)
    assert np.all(lo < lo0) and np.all(hi > hi0)
    for i in range(4):  # the same as one table at a time
        assert (lo[i], hi[i]) == pytest.approx(tuple(float(v) for v in stats.tango_interval(n12[i], n21[i], n[i])))
    # zero discordant pairs: closed form of the uncorrected bound is z²/(n + z²)
    z2 = sps.norm.ppf(0.975) ** 2
    assert float(hi0[0]) == pytest.approx(z2 / (50 + z2), rel=1e-9) and float(lo0[0]) == pytest.approx(-hi0[0])
    # all pairs discordant one way: the interval reaches the boundary
    assert float(stats.tango_interval(10, 0, 10)[1]) == 1.0 and float(stats.tango_interval(0, 10, 10)[0]) == -1.0
    with pytest.raises(ValueError):
        stats.tango_interval(5, 6, 10)


def test_tango_ci_on_points_scale() -> None:
    a, b = _table(30, 15, 5, 10)
    delta, lo, hi = stats.tango_ci(a * 100, b * 100, scale=100)
    d1, l1, h1 = stats.tango_ci(a, b)
    assert delta == pytest.approx(-100 * 10 / 60) and (lo, hi) == pytest.approx((100 * l1, 100 * h1))
    assert lo < delta < hi < 0  # McNemar p = 0.04: the difference is real
    with pytest.raises(ValueError, match="0/1"):
        stats.tango_ci([0.5, 1.0], [1.0, 1.0])


@pytest.mark.parametrize(("n", "verdict"), [(5, "inconclusive"), (50, "inconclusive"), (200, "inconclusive"),
                                            (20000, "equivalent")])
def test_all_agree_is_equivalent_only_at_large_n(n: int, verdict: str) -> None:
    a = (np.arange(n) % 3 != 0).astype(float) * 100
    res = stats.tost_paired_binary(a, a.copy(), margin=1.0, scale=100)
    assert res.verdict == verdict and res.delta == 0 and res.method == stats.SCORE_METHOD
    assert res.lo == pytest.approx(-res.hi) and res.hi > 0
    if n == 50:  # exact 90% bound: 1 - 0.05**(1/50) = 5.8 points; the corrected score bound is a bit wider
        assert 100 * stats.zero_change_bound(50, 0.05) == pytest.approx(5.8, abs=0.05)
        assert 5.8 < res.hi < 7.5
    # the old t-test TOST calls every one of them equivalent
    assert stats.tost_equivalence(a, a.copy(), margin=1.0).verdict == "equivalent"


def test_tost_paired_binary_verdicts_and_p_values() -> None:
    cases = [((1400, 12, 10, 578), "equivalent"), ((1200, 150, 30, 620), "worse"), ((60, 6, 3, 31), "inconclusive"),
             ((1200, 30, 150, 620), "better")]
    for (both, r2w, w2r, neither), verdict in cases:
        a, b = _table(both, r2w, w2r, neither)
        res = stats.tost_paired_binary(a * 100, b * 100, margin=1.0, scale=100)
        assert res.verdict == verdict, (both, r2w, w2r, neither)
        lo90, hi90 = (100 * float(v) for v in stats.tango_interval(w2r, r2w, a.size, 0.10))
        assert (res.lo, res.hi) == pytest.approx((lo90, hi90))
        # p < alpha exactly when the bound clears the margin (the test is the interval's inversion)
        assert (res.p_lower < 0.05) == (res.lo > -1.0) and (res.p_upper < 0.05) == (res.hi < 1.0)
        assert res.p == max(res.p_lower, res.p_upper) and res.df == math.inf
    # near-identical at a reference-sized n: the score interval and the t-interval agree closely
    a, b = _table(1400, 12, 10, 578)
    t, sc = stats.tost_equivalence(a * 100, b * 100, 1.0), stats.tost_paired_binary(a * 100, b * 100, 1.0, scale=100)
    assert sc.lo == pytest.approx(t.lo, abs=0.08) and sc.hi == pytest.approx(t.hi, abs=0.08)


def test_tost_from_interval_rules() -> None:
    assert stats.tost_from_interval(0.0, -0.5, 0.5, 1.0, 0.05, 10, "m").verdict == "equivalent"
    assert stats.tost_from_interval(-3.0, -4.0, -2.0, 1.0, 0.05, 10, "m").verdict == "worse"
    assert stats.tost_from_interval(3.0, 2.0, 4.0, 1.0, 0.05, 10, "m").verdict == "better"
    assert stats.tost_from_interval(0.0, -1.5, 0.5, 1.0, 0.05, 10, "m").verdict == "inconclusive"
    nan = float("nan")
    assert stats.tost_from_interval(0.0, nan, nan, 1.0, 0.05, 10, "m").verdict == "inconclusive"
    with pytest.raises(ValueError, match="margin"):
        stats.tost_from_interval(0.0, -0.5, 0.5, 0.0, 0.05, 10, "m")


def test_mover_average() -> None:
    # one task: its own interval
    assert stats.mover_average([-1.0], [-3.0], [0.5]) == pytest.approx((-1.0, -3.0, 0.5))
    # T equal symmetric tasks: half-width h/sqrt(T)
    d, lo, hi = stats.mover_average([0.0] * 4, [-2.0] * 4, [2.0] * 4)
    assert (d, lo, hi) == pytest.approx((0.0, -1.0, 1.0))
    # asymmetric sides are combined separately
    d, lo, hi = stats.mover_average([1.0, -1.0], [0.0, -4.0], [1.5, 1.0])
    assert d == 0.0 and lo == pytest.approx(-math.sqrt(1 + 9) / 2) and hi == pytest.approx(math.sqrt(0.25 + 4) / 2)
    with pytest.raises(ValueError):
        stats.mover_average([], [], [])


# ---- collapse --------------------------------------------------------------------------------------------------


def test_chance_and_collapse() -> None:
    assert stats.chance_level(5) == pytest.approx(0.2)
    assert stats.chance_level(2) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        stats.chance_level(0)
    assert stats.collapsed(50.0, 100 * stats.chance_level(2))       # at chance
    assert stats.collapsed(31.0, 100 * stats.chance_level(3))       # below chance
    assert not stats.collapsed(34.0, 100 * stats.chance_level(3))
    assert stats.collapsed(0.0, 0.0) and not stats.collapsed(0.5, 0.0)  # generation: EM == 0
    assert stats.collapsed(float("nan"), 20.0)
