"""Coverage of the paired-binary interval by simulation (issue 12: verdicts that hold at any n).

The comparison's right/wrong rows use the continuity-corrected Tango score interval (``stats.tango_interval``).
Its 95% interval must cover the true difference at least 95% of the time, within Monte Carlo error, at small and
large n and at discordance rates from almost none to many, including true differences. Tables are drawn as one
multinomial per (n, p12, p21) with a fixed seed, and each distinct table is computed once (vectorised).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from jbench import stats

SIMS = 4000
NOMINAL = 0.95
#: 3 binomial standard errors of a coverage estimate at the nominal level: a pass is "at least nominal within MC
#: error"; a method 1 point short is still caught (see test_the_check_has_power)
TOL = 3 * math.sqrt(NOMINAL * (1 - NOMINAL) / SIMS)

#: (p12, p21): variant-right-original-wrong and the reverse. Δ = p12 − p21.
CASES = [
    (0.0005, 0.0005),  # almost no discordance, no difference
    (0.001, 0.0),      # almost no discordance, a tiny true difference
    (0.01, 0.01),
    (0.0, 0.02),       # a 2-point loss, every discordant pair a loss
    (0.02, 0.06),      # a 4-point loss with churn both ways
    (0.10, 0.10),
    (0.05, 0.25),      # a 20-point loss (collapse-like)
]
NS = [5, 20, 100, 1000]


def _coverage(n: int, p12: float, p21: float, alpha: float, rng: np.random.Generator,
              interval=stats.tango_interval) -> tuple[float, float, float]:
    """(two-sided, lower-bound, upper-bound) coverage of the (1 − alpha) interval over SIMS tables."""
    counts = rng.multinomial(n, [p12, p21, 1 - p12 - p21], size=SIMS)[:, :2]
    tables, inv = np.unique(counts, axis=0, return_inverse=True)
    lo, hi = interval(tables[:, 0], tables[:, 1], n, alpha)
    lo, hi = np.asarray(lo)[inv.ravel()], np.asarray(hi)[inv.ravel()]
    d = p12 - p21
    eps = 1e-12
    return (float(np.mean((lo <= d + eps) & (d - eps <= hi))), float(np.mean(lo <= d + eps)),
            float(np.mean(d - eps <= hi)))


@pytest.mark.parametrize("n", NS)
def test_tango_95_interval_covers_at_least_nominally(n: int) -> None:
    rng = np.random.default_rng(20240612 + n)
    measured = {}
    for p12, p21 in CASES:
        cov, _, _ = _coverage(n, p12, p21, 0.05, rng)
        measured[(p12, p21)] = cov
    low = {k: v for k, v in measured.items() if v < NOMINAL - TOL}
    assert not low, f"n={n}: coverage below {NOMINAL} - {TOL:.4f}: {low} (all: {measured})"


@pytest.mark.parametrize("n", NS)
def test_tost_bounds_each_cover_one_sided(n: int) -> None:
    # TOST at alpha = 0.05 reads the two bounds of the 90% interval as two one-sided 95% bounds
    rng = np.random.default_rng(777 + n)
    for p12, p21 in CASES:
        _, lower_ok, upper_ok = _coverage(n, p12, p21, 0.10, rng)
        assert lower_ok >= NOMINAL - TOL and upper_ok >= NOMINAL - TOL, (n, p12, p21, lower_ok, upper_ok)


def _wald(n12: np.ndarray, n21: np.ndarray, n: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """The interval the comparison used to have in effect: Δ ± z·sd(d)/√n (a point when nothing changed)."""
    from scipy import stats as sps

    d = (n12 - n21) / n
    se = np.sqrt(np.maximum((n12 + n21) / n - d * d, 0) / n)
    z = sps.norm.ppf(1 - alpha / 2)
    return d - z * se, d + z * se


def test_the_check_has_power() -> None:
    # the same check fails the zero-variance interval at small n with rare discordance
    cov, _, _ = _coverage(20, 0.02, 0.0, 0.05, np.random.default_rng(5), interval=_wald)
    assert cov < NOMINAL - TOL
