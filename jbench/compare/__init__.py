"""Original-vs-quantized comparison: how much did quantization cost, on which task, and is the loss real?

Runs are joined example by example (by ``doc_id``) and every statistic is paired (see :mod:`jbench.stats`).
Before any number is computed the runs are checked to have scored *the same thing*: the same task versions and
few-shot counts, the same documents, the same prompts, choices and gold answers, and the same tokenizer (its
identity in ``config.tokenizer``). Anything else would make a "quantization loss" that is really a prompt, data or
tokenizer difference, so it is an error, not a warning (a tokenizer difference can be let through explicitly with
``allow_tokenizer_mismatch=True``; the report then says so at the top).

Intervals: right/wrong metrics get the continuity-corrected Tango score interval of the paired difference and a
TOST on it (:func:`jbench.stats.tost_paired_binary`), other metrics the paired bootstrap and a paired t TOST, and
the averages combine the per-task intervals (:func:`jbench.stats.mover_average`). Each row names its method
(``ci_method``).

Entry point: :func:`compare_runs` → :class:`ComparisonReport` (``to_markdown``, ``to_json``, ``write_html``,
``plot``).

Layout: :mod:`~jbench.compare.model` (the report's data), :mod:`~jbench.compare.align` (joining runs; every
comparability check), :mod:`~jbench.compare.analysis` (the statistics), :mod:`~jbench.compare.render` (markdown,
HTML), :mod:`~jbench.compare.chart` (the PNG chart, in the Japanese font of :mod:`jbench.jafont`). The error classes live in :mod:`jbench.errors` and are re-exported here.
"""

from __future__ import annotations

from jbench.compare.analysis import compare_runs
from jbench.compare.model import AVERAGES, MIN_N_CONSTANT_COLLAPSE, RunCard, TaskComparison, task_family
from jbench.compare.render import ComparisonReport
from jbench.errors import ComparisonError, TokenizerMismatchError

__all__ = ["AVERAGES", "MIN_N_CONSTANT_COLLAPSE", "ComparisonError", "ComparisonReport", "RunCard", "TaskComparison",
           "TokenizerMismatchError", "compare_runs", "task_family"]
