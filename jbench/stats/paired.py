"""Paired resampling and per-example agreement of two runs on the same examples: the paired bootstrap, right/wrong
flips with McNemar's exact test, prediction agreement, and the KL between the runs' choice distributions.

One of the three modules of :mod:`jbench.stats` (which re-exports every public name): this one holds the
statistics that describe a paired difference; :mod:`jbench.stats.equivalence` the intervals and verdicts on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy import special
from scipy import stats as sps

from jbench.errors import StatsInputError

__all__ = ["BOOTSTRAP_METHOD", "MOVER_METHOD", "SCORE_METHOD", "TANGO_CC", "T_METHOD", "ChoiceKL", "Flips",
           "agreement", "bootstrap_means", "choice_kl", "flips", "is_binary", "mcnemar_exact",
           "paired_bootstrap_average_ci", "paired_bootstrap_ci"]

#: How the interval of a row was computed (shown per row in the comparison report).
SCORE_METHOD = "Tango score (CC)"  # paired binary; CC: continuity correction, see tango_interval
BOOTSTRAP_METHOD = "paired bootstrap"
T_METHOD = "paired t"
MOVER_METHOD = "MOVER"  # over the per-task intervals (Zou & Donner 2008)
#: Continuity correction of the Tango score statistic (see :func:`tango_interval` for why 0.5).
TANGO_CC = 0.5

# Upper bound on the multinomial count matrix built per chunk (elements), so that 10k iterations over a
# 5,000-example task with continuous scores stay within a few tens of MB.
_CHUNK_ELEMENTS = 4_000_000
_EPS = 1e-9


def _pair(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(a, dtype=float).ravel()
    y = np.asarray(b, dtype=float).ravel()
    if x.shape != y.shape:
        raise StatsInputError(f"paired samples must have the same length, got {x.size} and {y.size}")
    if x.size == 0:
        raise StatsInputError("paired samples are empty")
    return x, y


def is_binary(values: ArrayLike) -> bool:
    """True when every value is 0 or 1: McNemar and flip counts only make sense for right/wrong outcomes."""
    v = np.asarray(values, dtype=float)
    return bool(np.all((v == 0.0) | (v == 1.0)))


# --------------------------------------------------------------------------------------------------------------
# Paired bootstrap
# --------------------------------------------------------------------------------------------------------------


def bootstrap_means(a: ArrayLike, b: ArrayLike, *, iters: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``iters`` bootstrap replicates of ``(mean(a*), mean(b*))`` resampling *pairs* (the same indices for both).

    Why multinomial counts over distinct pairs: drawing n examples with replacement is exactly a multinomial
    draw of how often each example is taken, and examples with identical ``(a_i, b_i)`` are interchangeable.
    For 0/1 metrics there are at most four distinct pairs, so 10,000 replicates of a 5,000-example task cost
    microseconds instead of 50 million index gathers; the distribution is the same as index resampling.
    """
    x, y = _pair(a, b)
    if iters < 1:
        raise StatsInputError("iters must be >= 1")
    n = x.size
    pairs, counts = np.unique(np.stack([x, y], axis=1), axis=0, return_counts=True)
    probs = counts / n
    k = len(probs)
    chunk = max(1, _CHUNK_ELEMENTS // k)
    out_a = np.empty(iters)
    out_b = np.empty(iters)
    for start in range(0, iters, chunk):
        size = min(chunk, iters - start)
        draws = rng.multinomial(n, probs, size=size).astype(float)  # (size, k): times each pair type is drawn
        out_a[start: start + size] = draws @ pairs[:, 0] / n
        out_b[start: start + size] = draws @ pairs[:, 1] / n
    return out_a, out_b


def _percentile_ci(samples: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise StatsInputError(f"alpha must be in (0, 1), got {alpha}")


def paired_bootstrap_ci(a: ArrayLike, b: ArrayLike, *, iters: int = 10_000, alpha: float = 0.05,
                        seed: int = 0) -> tuple[float, float, float]:
    """``(delta, lo, hi)``: Δ = mean(b) − mean(a) and its percentile (1−alpha) CI from a paired bootstrap.

    Deterministic for a given seed. The point estimate is the observed Δ, not the bootstrap mean.
    """
    _check_alpha(alpha)
    x, y = _pair(a, b)
    ma, mb = bootstrap_means(x, y, iters=iters, rng=np.random.default_rng(seed))
    lo, hi = _percentile_ci(mb - ma, alpha)
    return float(y.mean() - x.mean()), lo, hi


def paired_bootstrap_average_ci(pairs: Sequence[tuple[ArrayLike, ArrayLike]], *,
                                iters: int = 10_000, alpha: float = 0.05,
                                seed: int = 0) -> tuple[float, float, float]:
    """CI for the difference of an *average of task means* (the 4-/6-task average).

    Each task is resampled over its own examples (tasks are independent, the examples inside each are paired),
    and each replicate's Δ is ``mean_t(mean(b_t*)) − mean_t(mean(a_t*))``: every task weighs the same, as in
    the published averages, regardless of its size.
    """
    _check_alpha(alpha)
    if not pairs:
        raise StatsInputError("no tasks to average")
    rng = np.random.default_rng(seed)
    tot = np.zeros(iters)
    delta = 0.0
    for a, b in pairs:
        x, y = _pair(a, b)
        ma, mb = bootstrap_means(x, y, iters=iters, rng=rng)
        tot += mb - ma
        delta += y.mean() - x.mean()
    t = len(pairs)
    lo, hi = _percentile_ci(tot / t, alpha)
    return float(delta / t), lo, hi


# --------------------------------------------------------------------------------------------------------------
# Right/wrong changes
# --------------------------------------------------------------------------------------------------------------


class Flips(NamedTuple):
    """How many answers changed correctness: the raw material of McNemar and of "is the loss real"."""

    right_to_wrong: int
    wrong_to_right: int


def _binary_pair(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x, y = _pair(a, b)
    if not (is_binary(x) and is_binary(y)):
        raise StatsInputError("expected right/wrong outcomes (0/1 values)")
    return x.astype(bool), y.astype(bool)


def flips(a: ArrayLike, b: ArrayLike) -> Flips:
    """Examples the original got right and the variant wrong, and the reverse."""
    x, y = _binary_pair(a, b)
    return Flips(int(np.sum(x & ~y)), int(np.sum(~x & y)))


def mcnemar_exact(a_correct: ArrayLike, b_correct: ArrayLike) -> tuple[int, int, float]:
    """``(b01, b10, p)``: exact two-sided McNemar test on the discordant pairs.

    ``b01`` = original wrong, variant right (0→1); ``b10`` = original right, variant wrong (1→0). Under H0 (no
    difference) each discordant pair is a fair coin, so p is the two-sided binomial test of b01 successes in
    b01+b10 trials at 0.5. Concordant pairs carry no information about the difference; with no discordant pair
    at all there is no evidence of one, so p = 1.
    """
    f = flips(a_correct, b_correct)
    b01, b10 = f.wrong_to_right, f.right_to_wrong
    n = b01 + b10
    p = 1.0 if n == 0 else float(sps.binomtest(b01, n, 0.5, alternative="two-sided").pvalue)
    return b01, b10, min(1.0, p)


def agreement(pred_a: Sequence[object], pred_b: Sequence[object]) -> float:
    """Share of examples where both runs gave the same prediction (choice index or generated string).

    Catches changes that accuracy hides: a variant can keep its score while answering different questions right.
    """
    if len(pred_a) != len(pred_b):
        raise StatsInputError(f"paired predictions must have the same length, got {len(pred_a)} and {len(pred_b)}")
    if not pred_a:
        raise StatsInputError("paired predictions are empty")
    return sum(1 for x, y in zip(pred_a, pred_b) if x == y) / len(pred_a)


# --------------------------------------------------------------------------------------------------------------
# Distribution shift over the choices
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChoiceKL:
    """KL(P_a || P_b) between the per-example choice distributions, averaged over examples.

    ``P = softmax(loglikelihoods of the choices)``: the choice-level analogue of llama.cpp's token-level KLD.
    It moves before accuracy does, so it shows a quantized model drifting even where the argmax still agrees.
    ``n_nonfinite`` examples (NaN loglikelihoods, e.g. a broken kernel) are left out of the averages.
    """

    mean_kl: float
    median_kl: float
    max_kl: float
    top_agreement: float
    n: int
    n_nonfinite: int = 0


def _kl_rows(la: np.ndarray, lb: np.ndarray) -> np.ndarray:
    """Per-row KL(softmax(la) || softmax(lb)) for 2-D arrays of equal shape (one row per example)."""
    lpa = special.log_softmax(la, axis=1)
    lpb = special.log_softmax(lb, axis=1)
    pa = np.exp(lpa)
    # terms with P_a = 0 contribute 0 (even where P_b = 0 too); P_a > 0 = P_b gives +inf, as it should
    with np.errstate(invalid="ignore"):
        terms = np.where(pa > 0, pa * (lpa - lpb), 0.0)
    return np.maximum(terms.sum(axis=1), 0.0)  # clamp rounding noise below zero


def _usable(x: np.ndarray) -> np.ndarray:
    """Rows whose softmax is defined: no NaN, no +inf, not every choice at -inf."""
    return ~(np.isnan(x).any(axis=1) | np.isposinf(x).any(axis=1) | np.isneginf(x).all(axis=1))


def choice_kl(lls_a: Sequence[Sequence[float]], lls_b: Sequence[Sequence[float]]) -> ChoiceKL:
    """Mean KL(P_a || P_b) and top-choice agreement over examples with (possibly ragged) choice lists.

    Examples are grouped by their number of choices so each group is one vectorised softmax.
    """
    if len(lls_a) != len(lls_b):
        raise StatsInputError(f"paired loglikelihoods must have the same length, got {len(lls_a)} and {len(lls_b)}")
    if not lls_a:
        raise StatsInputError("paired loglikelihoods are empty")
    groups: dict[int, list[int]] = {}
    for i, (ra, rb) in enumerate(zip(lls_a, lls_b)):
        if len(ra) != len(rb) or len(ra) == 0:
            raise StatsInputError(f"example {i}: the runs scored {len(ra)} and {len(rb)} choices")
        groups.setdefault(len(ra), []).append(i)
    kls: list[np.ndarray] = []
    agree = 0
    bad = 0
    for idx in groups.values():
        la = np.asarray([lls_a[i] for i in idx], dtype=float)
        lb = np.asarray([lls_b[i] for i in idx], dtype=float)
        ok = _usable(la) & _usable(lb)
        bad += int((~ok).sum())
        la, lb = la[ok], lb[ok]
        if la.shape[0]:
            kls.append(_kl_rows(la, lb))
            agree += int(np.sum(np.argmax(la, axis=1) == np.argmax(lb, axis=1)))
    if not kls:
        nan = float("nan")
        return ChoiceKL(nan, nan, nan, nan, 0, bad)
    arr = np.concatenate(kls)
    return ChoiceKL(float(arr.mean()), float(np.median(arr)), float(arr.max()), agree / arr.size, int(arr.size), bad)
