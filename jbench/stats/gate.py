"""The one-sided bounds of the regression gate (``jbench check --mode stat``): Wilson score upper bounds of a
proportion and the normal quantile they use.

One of the three modules of :mod:`jbench.stats` (which re-exports every public name). Unlike the rest of the
package these are unpaired: the gate compares a run with stored baseline numbers, not example by example. They
used to live in ``jbench.baseline``.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from jbench.errors import StatsInputError

__all__ = ["wilson_lowest_passing", "wilson_upper", "z_one_sided"]


def z_one_sided(confidence: float) -> float:
    """The one-sided normal quantile at ``confidence`` (which must be in (0.5, 1): below 0.5 the band would sit
    above the baseline and fail every run)."""
    if not (isinstance(confidence, (int, float)) and not isinstance(confidence, bool) and 0.5 < confidence < 1.0):
        raise StatsInputError(f"confidence must be in (0.5, 1), got {confidence!r}")
    return NormalDist().inv_cdf(confidence)


def wilson_upper(p: float, n: int, z: float) -> float:
    """One-sided Wilson score upper bound of a proportion ``p`` observed on ``n`` examples."""
    p = min(max(p, 0.0), 1.0)
    z2 = z * z
    centre = p + z2 / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return min(1.0, (centre + half) / (1 + z2 / n))


def wilson_lowest_passing(target: float, n: int, z: float) -> float:
    """Smallest observed proportion whose Wilson upper bound still reaches ``target``.

    The Wilson upper bound u of p solves ``p = u - z*sqrt(u(1-u)/n)`` (u >= p) and grows with p, so the edge of the
    allowed band is that expression at u = target (clipped at 0).
    """
    t = min(max(target, 0.0), 1.0)
    return max(0.0, t - z * math.sqrt(t * (1 - t) / n))
