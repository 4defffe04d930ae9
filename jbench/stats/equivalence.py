"""Intervals and verdicts on a paired difference: TOST equivalence (paired t, or on any interval), Tango's score
interval for paired right/wrong outcomes, MOVER averages of task intervals, the exact bound when nothing changed,
and the collapse test.

One of the three modules of :mod:`jbench.stats` (which re-exports every public name); see the package docstring
for why these methods and not the bootstrap alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as sps

from jbench.errors import StatsInputError
from jbench.stats.paired import _EPS, SCORE_METHOD, T_METHOD, TANGO_CC, _check_alpha, _pair, flips

__all__ = ["BETTER", "EQUIVALENT", "INCONCLUSIVE", "WORSE", "TostResult", "chance_level", "collapsed",
           "mover_average", "paired_binary_counts", "tango_ci", "tango_interval", "tost_equivalence",
           "tost_from_interval", "tost_from_summary", "tost_paired_binary", "zero_change_bound"]


# --------------------------------------------------------------------------------------------------------------
# Equivalence (TOST)
# --------------------------------------------------------------------------------------------------------------

EQUIVALENT, WORSE, BETTER, INCONCLUSIVE = "equivalent", "worse", "better", "inconclusive"


@dataclass(frozen=True)
class TostResult:
    """Outcome of a paired TOST at ``margin`` (same scale as the data).

    ``lo``/``hi`` are the (1 − 2·alpha) confidence interval of Δ (90% for alpha = 0.05): TOST at level alpha
    is exactly "this interval lies inside (−margin, +margin)". ``p`` is the TOST p-value max(p_lower, p_upper).
    ``method`` says which interval: :data:`T_METHOD` (``se``/``df`` are the t-test's), :data:`SCORE_METHOD`
    (``df`` = inf, ``se`` the plain standard error of Δ, for information only) or :data:`MOVER_METHOD`
    (averages; no p-values, NaN).
    """

    verdict: str
    delta: float
    lo: float
    hi: float
    p_lower: float
    p_upper: float
    p: float
    margin: float
    alpha: float
    n: int
    se: float
    df: float
    method: str = T_METHOD


def tost_from_summary(delta: float, se: float, df: float, margin: float, alpha: float = 0.05,
                      n: int = 0) -> TostResult:
    """TOST verdict from a difference, its standard error and degrees of freedom.

    With ``t_lo = (Δ + margin)/se`` and ``t_hi = (Δ − margin)/se`` on ``df`` degrees of freedom:

    * ``p_lower = P(T ≥ t_lo)`` tests H0: Δ ≤ −margin; ``p_upper = P(T ≤ t_hi)`` tests H0: Δ ≥ +margin.
    * **equivalent**: both rejected at alpha (max(p_lower, p_upper) < alpha), i.e. the (1−2α) CI of Δ lies
      strictly inside (−margin, +margin): any change is smaller than the margin.
    * **worse**: the upper bound of that CI is below −margin, i.e. H0: Δ ≥ −margin is rejected at alpha (one-sided):
      the variant loses *more* than the margin.
    * **better**: the lower bound is above +margin (the mirror image; rare for quantization, kept for symmetry).
    * **inconclusive**: anything else: the data cannot tell "within the margin" from "beyond it" (too few
      examples, or a loss near the margin). A significant loss smaller than the margin is still *equivalent*:
      look at the CI and McNemar p for "is it real", at the verdict for "does it matter".

    ``se == 0`` (every per-example difference identical, e.g. identical runs) makes the CI the point Δ.
    """
    _check_alpha(alpha)
    if not margin > 0:
        raise StatsInputError(f"margin must be > 0, got {margin}")
    nan = float("nan")
    if not (math.isfinite(delta) and math.isfinite(se)) or se < 0 or not df > 0:
        return TostResult(INCONCLUSIVE, delta, nan, nan, nan, nan, nan, margin, alpha, n, se, df)
    if se == 0:
        lo = hi = delta
        p_lower = 0.0 if delta > -margin else 1.0
        p_upper = 0.0 if delta < margin else 1.0
    else:
        tcrit = float(sps.t.ppf(1 - alpha, df))
        lo, hi = delta - tcrit * se, delta + tcrit * se
        p_lower = float(sps.t.sf((delta + margin) / se, df))
        p_upper = float(sps.t.cdf((delta - margin) / se, df))
    if lo > -margin and hi < margin:
        verdict = EQUIVALENT
    elif hi < -margin:
        verdict = WORSE
    elif lo > margin:
        verdict = BETTER
    else:
        verdict = INCONCLUSIVE
    return TostResult(verdict, float(delta), float(lo), float(hi), p_lower, p_upper, max(p_lower, p_upper),
                      float(margin), float(alpha), int(n), float(se), float(df))


def tost_equivalence(a: ArrayLike, b: ArrayLike, margin: float, alpha: float = 0.05) -> TostResult:
    """Paired TOST on ``d = b − a`` (Schuirmann): one-sample t-tests of mean(d) against ±margin, df = n − 1.

    Why a t-test and not the bootstrap: it is the standard, analytic procedure (reproducible without a seed and
    checkable against statsmodels' ``ttost_paired``), and for the benchmark sizes here (hundreds to thousands of
    examples) the CLT makes it as accurate as a bootstrap even for 0/1 outcomes. See :func:`tost_from_summary`.
    """
    x, y = _pair(a, b)
    d = y - x
    n = d.size
    if n < 2:
        return tost_from_summary(float(d.mean()), float("nan"), 0.0, margin, alpha, n)
    se = float(d.std(ddof=1) / math.sqrt(n))
    return tost_from_summary(float(d.mean()), se, n - 1, margin, alpha, n)


# --------------------------------------------------------------------------------------------------------------
# Paired binary outcomes: Tango's score interval, TOST on it, and averages of tasks (MOVER)
# --------------------------------------------------------------------------------------------------------------


def paired_binary_counts(a: ArrayLike, b: ArrayLike, scale: float = 1.0) -> tuple[int, int, int]:
    """``(n12, n21, n)``: variant right & original wrong, original right & variant wrong, and all pairs.

    ``scale`` is the value of "right" (1 for 0/1 data, 100 for points). Raises ValueError for other values.
    """
    x, y = _pair(a, b)
    if not scale > 0:
        raise StatsInputError(f"scale must be > 0, got {scale}")
    f = flips(x / scale, y / scale)
    return f.wrong_to_right, f.right_to_wrong, int(x.size)


def _tango_z(delta: np.ndarray, n12: np.ndarray, n21: np.ndarray, n: np.ndarray, cc: float) -> np.ndarray:
    """Tango's score statistic for H0: p12 − p21 = delta, with the numerator shrunk towards 0 by ``cc``.

    ``p21`` is its maximum-likelihood estimate under H0 (Tango 1998, eq. 4, the root of a quadratic), so the
    variance is evaluated under the hypothesis being tested: that is what keeps it positive, and the interval
    from collapsing, when no pair is discordant. Non-increasing in delta, so intervals follow by bisection.
    """
    a_ = 2.0 * n
    b_ = -n12 - n21 + (2.0 * n - n12 + n21) * delta
    c_ = -n21 * delta * (1.0 - delta)
    p21 = (np.sqrt(np.maximum(b_ * b_ - 4.0 * a_ * c_, 0.0)) - b_) / (2.0 * a_)
    var = n * (2.0 * p21 + delta * (1.0 - delta))
    num = n12 - n21 - n * delta
    num = np.sign(num) * np.maximum(np.abs(num) - cc, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(var > 0, num / np.sqrt(np.maximum(var, 1e-300)), np.sign(num) * np.inf)
    return z


def _tango_root(target: float, lo: np.ndarray, hi: np.ndarray, n12: np.ndarray, n21: np.ndarray, n: np.ndarray,
                cc: float, iters: int = 60) -> np.ndarray:
    """Bisection for Z(delta) = target on [lo, hi] (Z non-increasing; 60 halvings reach 1e-18 of a unit)."""
    for _ in range(iters):
        mid = (lo + hi) / 2.0
        above = _tango_z(mid, n12, n21, n, cc) > target
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    return (lo + hi) / 2.0


def tango_interval(n12: ArrayLike, n21: ArrayLike, n: ArrayLike, alpha: float = 0.05,
                   cc: float = TANGO_CC) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided (1 − alpha) score interval of Δ = p12 − p21 (proportions in [−1, 1]); vectorised over tables.

    ``n12`` = pairs where the variant is right and the original wrong, ``n21`` the reverse, ``n`` all pairs.
    This is Tango's (1998) asymptotic score interval, with a continuity correction of ``cc`` on the numerator
    (``cc=0`` gives Tango's interval exactly, e.g. R ``PropCIs::scoreci.mp``). Why the correction: computed
    exactly over the trinomial, plain Tango's 95% interval covers as little as 93.2% at n = 100 and 91.9% at
    n = 5 for some discordance rates; with ``cc = 0.5`` the minimum over n = 5…5,000 and discordance rates
    0.05%…90% was 95.0%, and it moves each bound by only about 0.5/n (0.05 points at n = 1,000). Each bound is
    a one-sided (1 − alpha/2) bound, so TOST at alpha reads the ``2·alpha`` interval; one-sided coverage of the
    90% bounds was at least 94.2% on the same grid (the minimum at n = 50 with 90% of pairs discordant).
    """
    _check_alpha(alpha)
    if cc < 0:
        raise StatsInputError(f"cc must be >= 0, got {cc}")
    b12, b21, nn = np.broadcast_arrays(np.asarray(n12, dtype=float), np.asarray(n21, dtype=float),
                                       np.asarray(n, dtype=float))
    if np.any(nn < 1) or np.any(b12 < 0) or np.any(b21 < 0) or np.any(b12 + b21 > nn):
        raise StatsInputError("need 0 <= n12, n21 and n12 + n21 <= n, n >= 1")
    z = float(sps.norm.ppf(1 - alpha / 2))
    dhat = (b12 - b21) / nn
    lower = _tango_root(z, np.full(dhat.shape, -1.0), dhat.copy(), b12, b21, nn, cc)
    upper = _tango_root(-z, dhat.copy(), np.full(dhat.shape, 1.0), b12, b21, nn, cc)
    lower = np.where(dhat <= -1.0, -1.0, np.minimum(lower, dhat))
    upper = np.where(dhat >= 1.0, 1.0, np.maximum(upper, dhat))
    return lower, upper


def tango_ci(a: ArrayLike, b: ArrayLike, *, alpha: float = 0.05, scale: float = 1.0,
             cc: float = TANGO_CC) -> tuple[float, float, float]:
    """``(delta, lo, hi)`` for paired right/wrong outcomes (values 0 or ``scale``), on the data's scale."""
    n12, n21, n = paired_binary_counts(a, b, scale)
    lo, hi = tango_interval(n12, n21, n, alpha, cc)
    return scale * (n12 - n21) / n, scale * float(lo), scale * float(hi)


def _verdict(lo: float, hi: float, margin: float) -> str:
    if lo > -margin and hi < margin:
        return EQUIVALENT
    if hi < -margin:
        return WORSE
    if lo > margin:
        return BETTER
    return INCONCLUSIVE


def tost_from_interval(delta: float, lo: float, hi: float, margin: float, alpha: float, n: int, method: str, *,
                       p_lower: float = float("nan"), p_upper: float = float("nan"), se: float = float("nan"),
                       df: float = float("inf")) -> TostResult:
    """The TOST verdict read off a (1 − 2·alpha) interval ``(lo, hi)`` of Δ (same rules as
    :func:`tost_from_summary`). A non-finite bound is always "inconclusive": a missing interval never passes."""
    _check_alpha(alpha)
    if not margin > 0:
        raise StatsInputError(f"margin must be > 0, got {margin}")
    ok = all(math.isfinite(v) for v in (delta, lo, hi))
    verdict = _verdict(lo, hi, margin) if ok else INCONCLUSIVE
    p = max(p_lower, p_upper) if math.isfinite(p_lower) and math.isfinite(p_upper) else float("nan")
    return TostResult(verdict, float(delta), float(lo), float(hi), float(p_lower), float(p_upper), p,
                      float(margin), float(alpha), int(n), float(se), float(df), method)


def tost_paired_binary(a: ArrayLike, b: ArrayLike, margin: float, alpha: float = 0.05, *, scale: float = 1.0,
                       cc: float = TANGO_CC) -> TostResult:
    """TOST for paired right/wrong outcomes on the (1 − 2·alpha) Tango score interval (see
    :func:`tango_interval`); ``margin`` on the data's scale (points when ``scale`` = 100).

    ``p_lower``/``p_upper`` are the one-sided score-test p-values of H0: Δ ≤ −margin and H0: Δ ≥ +margin
    (continuity-corrected like the interval, so p < alpha exactly when the bound clears the margin).
    Zero discordant pairs give an interval of about ±3.6/n at 90% (±2.7/n without the correction), not the point
    0, so a handful of agreeing examples is "inconclusive", not "equivalent".
    """
    _check_alpha(alpha)
    if not margin > 0:
        raise StatsInputError(f"margin must be > 0, got {margin}")
    n12, n21, n = paired_binary_counts(a, b, scale)
    lo, hi = tango_interval(n12, n21, n, 2 * alpha, cc)
    m = min(margin / scale, 1.0)
    args = (np.asarray(float(n12)), np.asarray(float(n21)), np.asarray(float(n)), cc)
    p_lower = float(sps.norm.sf(_tango_z(np.asarray(-m), *args)))
    p_upper = float(sps.norm.cdf(_tango_z(np.asarray(m), *args)))
    dhat = (n12 - n21) / n
    se = math.sqrt(max((n12 + n21) / n - dhat * dhat, 0.0) / n)
    return tost_from_interval(scale * dhat, scale * float(lo), scale * float(hi), margin, alpha, n, SCORE_METHOD,
                              p_lower=p_lower, p_upper=p_upper, se=scale * se)


def mover_average(estimates: Sequence[float], lows: Sequence[float],
                  highs: Sequence[float]) -> tuple[float, float, float]:
    """``(delta, lo, hi)`` for the mean of independent per-task differences, from their own intervals.

    MOVER (method of variance estimates recovery, Zou & Donner 2008; Newcombe's 1998 method 10 is the same
    construction for one paired difference): each side's half-width is recovered from the task intervals, so
    ``lo = Δ̄ − sqrt(Σ(Δ_t − l_t)²)/T`` and ``hi = Δ̄ + sqrt(Σ(u_t − Δ_t)²)/T``. Why this and not the bootstrap of
    averages: the average inherits each task's small-n and zero-discordance width (a bootstrap or a pooled
    standard error is 0 when every task agrees everywhere, and would call 4 × 5 examples "equivalent"), it
    keeps the score intervals' asymmetry, and for one task it is that task's interval.
    """
    d, lo, hi = (np.asarray(v, dtype=float) for v in (estimates, lows, highs))
    if not d.size or d.shape != lo.shape or d.shape != hi.shape:
        raise StatsInputError("need one estimate, low and high per task")
    t = d.size
    mean = float(d.mean())
    return (mean, mean - math.sqrt(float(np.sum((d - lo) ** 2))) / t,
            mean + math.sqrt(float(np.sum((hi - d) ** 2))) / t)


def zero_change_bound(n: int, alpha: float = 0.05) -> float:
    """Exact one-sided (1 − alpha) upper bound on the share of examples that change, when none of ``n`` did.

    (1 − q)^n = alpha solved for q (Clopper–Pearson with 0 events). For a metric bounded in [0, S] per example,
    |Δ| ≤ S·q, so ``±S·zero_change_bound(n, alpha)`` is a valid (1 − 2·alpha) interval of Δ where a bootstrap
    or t-interval has collapsed to the point 0.
    """
    _check_alpha(alpha)
    if n < 1:
        raise StatsInputError(f"n must be >= 1, got {n}")
    return 1.0 - alpha ** (1.0 / n)


# --------------------------------------------------------------------------------------------------------------
# Collapse
# --------------------------------------------------------------------------------------------------------------


def chance_level(n_choices: int) -> float:
    """Accuracy (0-1) of guessing uniformly among ``n_choices`` choices."""
    if n_choices < 1:
        raise StatsInputError(f"n_choices must be >= 1, got {n_choices}")
    return 1.0 / n_choices


def collapsed(value: float, chance: float) -> bool:
    """A score at or below chance (same scale) means the variant no longer does the task at all.

    For generation tasks pass ``chance = 0``: exact match 0 is the collapse signal. NaN counts as collapsed.
    """
    return bool(not math.isfinite(value) or value <= chance + _EPS * max(1.0, abs(chance)))
