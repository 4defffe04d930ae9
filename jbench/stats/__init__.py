"""Statistics for comparisons and the regression gate (numpy/scipy; of jbench only its error types).

Two runs of the same benchmark answer *the same questions*, so every comparison here is paired: the per-example
difference ``d_i = b_i - a_i`` is the unit of analysis. Pairing removes the (large) between-question variance
that an unpaired comparison of two accuracies carries, which is why a 0.5-point quantization loss can be real
even when both runs' own error bars overlap.

Conventions (used throughout and in the report):

* ``a`` is the original, ``b`` the variant; ``delta = mean(b) - mean(a)``, so a loss is negative.
* Values are whatever scale the caller passes in; :mod:`jbench.compare` passes *points* (acc x 100, EM 0-100),
  and the TOST ``margin`` is on that same scale.
* Paired *binary* outcomes (acc, exact match: each example right or wrong) get the continuity-corrected Tango
  (1998) score interval for the difference of paired proportions (:func:`tango_interval`), and TOST is run on
  that interval (:func:`tost_paired_binary`). Why not the bootstrap or a t-interval: when the runs agree on
  every example both collapse to the point 0 and call any n "equivalent"; the score interval keeps the width
  that n examples can actually rule out (0 discordant pairs of 50 still allow ±6 points), and its coverage is
  at least nominal at n = 5 as at n = 5,000 (see ``tests/test_stats_coverage.py``).
* Other metrics keep the percentile interval of a paired bootstrap that resamples *examples* (pairs), the same
  indices for both runs, and Schuirmann's paired t TOST; see :func:`tost_from_summary` for the verdicts.
* The regression gate (``jbench check --mode stat``) is one-sided and unpaired: the Wilson score upper bound of
  the current proportion (:func:`wilson_upper`, :func:`wilson_lowest_passing`, :func:`z_one_sided`).

Unusable input raises :class:`jbench.errors.StatsInputError`, a ``ValueError`` that the CLI reports as exit 2.

Layout: :mod:`~jbench.stats.paired` (bootstrap, flips, McNemar, agreement, choice KL),
:mod:`~jbench.stats.equivalence` (TOST, Tango, MOVER, collapse) and :mod:`~jbench.stats.gate` (Wilson bounds of
``jbench check``); every public name is re-exported here, so ``from jbench import stats; stats.tango_ci(...)``
is the way to use them.
"""

from __future__ import annotations

from jbench.stats.equivalence import (BETTER, EQUIVALENT, INCONCLUSIVE, WORSE, TostResult, chance_level, collapsed,
                                      mover_average, paired_binary_counts, tango_ci, tango_interval,
                                      tost_equivalence, tost_from_interval, tost_from_summary, tost_paired_binary,
                                      zero_change_bound)
from jbench.stats.gate import wilson_lowest_passing, wilson_upper, z_one_sided
from jbench.stats.paired import (BOOTSTRAP_METHOD, MOVER_METHOD, SCORE_METHOD, T_METHOD, TANGO_CC, ChoiceKL, Flips,
                                 agreement, bootstrap_means, choice_kl, flips, is_binary, mcnemar_exact,
                                 paired_bootstrap_average_ci, paired_bootstrap_ci)

__all__ = [
    "BETTER",
    "BOOTSTRAP_METHOD",
    "EQUIVALENT",
    "INCONCLUSIVE",
    "MOVER_METHOD",
    "SCORE_METHOD",
    "TANGO_CC",
    "T_METHOD",
    "WORSE",
    "ChoiceKL",
    "Flips",
    "TostResult",
    "agreement",
    "bootstrap_means",
    "chance_level",
    "choice_kl",
    "collapsed",
    "flips",
    "is_binary",
    "mcnemar_exact",
    "mover_average",
    "paired_binary_counts",
    "paired_bootstrap_average_ci",
    "paired_bootstrap_ci",
    "tango_ci",
    "tango_interval",
    "tost_equivalence",
    "tost_from_interval",
    "tost_from_summary",
    "tost_paired_binary",
    "wilson_lowest_passing",
    "wilson_upper",
    "z_one_sided",
    "zero_change_bound",
]
