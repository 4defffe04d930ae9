"""The comparison's statistics: per-task paired scores, intervals, TOST verdicts, flips, agreement, KL, collapse
flags, and the 4-/6-task averages, for each variant against the original.

It exists apart from :mod:`jbench.compare.render` so that the numbers are computed in one place with no formatting
in the way; the runs are joined (and refused when not comparable) by :mod:`jbench.compare.align` first.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from jbench import stats
from jbench.compare.align import align, as_run, check_task_sets, check_tokenizers, labels_for, short_model
from jbench.compare.model import AVERAGES, MIN_N_CONSTANT_COLLAPSE, RunCard, TaskComparison, task_family
from jbench.compare.render import ComparisonReport
from jbench.errors import ComparisonError, StatsInputError
from jbench.records import GOLD, PREDICTION
from jbench.results import Run

__all__ = ["chance_line", "compare_runs"]


@dataclass
class _Paired:
    """Aligned per-example scores (points) of one task for the original and one variant."""

    task: str
    metric: str
    a: np.ndarray
    b: np.ndarray
    ci: tuple[float, float] = (float("nan"), float("nan"))       # the task's (1 − alpha) interval of Δ
    tost_ci: tuple[float, float] = (float("nan"), float("nan"))  # its (1 − 2·alpha) interval (TOST)
    method: str = stats.BOOTSTRAP_METHOD


def _is_mc(rows: list[dict[str, Any]]) -> bool:
    return bool(rows) and "loglikelihoods" in rows[0]


def _metric_values(rows: list[dict[str, Any]], metric: str, task: str) -> np.ndarray:
    try:
        return np.asarray([float(r[metric]) for r in rows], dtype=float) * 100.0
    except (KeyError, TypeError, ValueError) as err:
        raise ComparisonError(f"{task}: sample rows lack a numeric {metric!r}") from err


#: gold labels whose counts a chi-square test calls non-uniform at this level are "imbalanced"
IMBALANCE_P = 0.01


def chance_line(rows: list[dict[str, Any]]) -> tuple[float, str]:
    """The score (points) a model reaches without doing the task, and how to label it.

    Guessing uniformly gives 1/k. When the gold labels of the evaluated examples are imbalanced (JNLI's
    entailment is over half of its data; the answer counts differ from uniform by a chi-square test at
    :data:`IMBALANCE_P`), always answering the majority class scores more than 1/k, so that rate is the line a
    working model must clear: ``(55.3, "majority class 55%")``; else ``(33.3, "chance 1/3")``.
    """
    from collections import Counter

    from scipy.stats import chisquare

    ks = [max(1, len(r.get("continuations") or r["loglikelihoods"])) for r in rows]
    uniform = 100.0 * float(np.mean([stats.chance_level(k) for k in ks]))
    golds = [r.get(GOLD) for r in rows]
    if len(set(ks)) != 1:  # ragged choice lists: no single 1/k to name
        return uniform, f"chance {uniform:.0f}%"
    k = ks[0]
    if k > 1 and len(rows) >= k and all(isinstance(g, int) and not isinstance(g, bool) and 0 <= g < k
                                        for g in golds):
        counts = Counter(golds)
        top = max(counts.values())
        rate = 100.0 * top / len(rows)
        if rate > uniform and float(chisquare([counts.get(i, 0) for i in range(k)]).pvalue) < IMBALANCE_P:
            return rate, f"majority class {rate:.0f}%"
    return uniform, f"chance 1/{k}"


def _collapse(value: float, chance: float, rows: list[dict[str, Any]], mc: bool,
              chance_label: str = "") -> tuple[bool, str | None]:
    if mc:
        if stats.collapsed(value, chance):
            return True, f"at or below {chance_label}" if chance_label else f"at or below chance ({chance:.1f})"
        preds = {r.get(PREDICTION) for r in rows}
        golds = {r.get(GOLD) for r in rows}
        if len(rows) >= MIN_N_CONSTANT_COLLAPSE and len(preds) == 1 and len(golds) > 1:
            return True, f"always answers choice {next(iter(preds))}"
        return False, None
    if stats.collapsed(value, 0.0):
        empty = all(not str(r.get(PREDICTION) or "").strip() for r in rows)
        return True, "exact match 0" + (" (all generations empty)" if empty else "")
    return False, None


def _compare_task(task: str, ra: list[dict[str, Any]], rb: list[dict[str, Any]], label: str, *, margin: float,
                  alpha: float, iters: int, seed: int, notes: list[str]) -> tuple[TaskComparison, _Paired]:
    mc = _is_mc(ra)
    if mc != _is_mc(rb):
        raise ComparisonError(f"{task}: one run stored multiple-choice rows and the other generation rows")
    metric = "acc" if mc else "exact_match"
    a, b = _metric_values(ra, metric, task), _metric_values(rb, metric, task)
    n = a.size
    ma, mb = stats.bootstrap_means(a, b, iters=iters, rng=np.random.default_rng(seed))
    q = (alpha / 2, 1 - alpha / 2)
    orig, val = float(a.mean()), float(b.mean())
    binary = stats.is_binary(a / 100) and stats.is_binary(b / 100)
    ci_d, tost, method = _task_interval(a, b, binary, ma, mb, margin=margin, alpha=alpha)

    mcn = r2w = w2r = None
    if binary:
        b01, b10, mcn = stats.mcnemar_exact(a / 100, b / 100)
        r2w, w2r = b10, b01
    if mc:
        agree = stats.agreement([r.get(PREDICTION) for r in ra], [r.get(PREDICTION) for r in rb])
    else:
        agree = stats.agreement([str(r.get(PREDICTION) or "").strip() for r in ra],
                                [str(r.get(PREDICTION) or "").strip() for r in rb])
    kl = top = None
    chance: float
    if mc:
        ckl = stats.choice_kl([r["loglikelihoods"] for r in ra], [r["loglikelihoods"] for r in rb])
        kl, top = ckl.mean_kl, ckl.top_agreement
        if ckl.n_nonfinite:
            notes.append(f"{label} / {task}: {ckl.n_nonfinite} examples with non-finite loglikelihoods are left "
                         "out of the KL")
        chance, chance_label = chance_line(ra)
    else:
        chance, chance_label = 0.0, ""
    is_coll, reason = _collapse(val, chance, rb, mc, chance_label)
    orig_coll, orig_reason = _collapse(orig, chance, ra, mc, chance_label)
    if orig_coll:
        msg = f"{task}: the original itself is collapsed ({orig_reason}); differences on it say little"
        if msg not in notes:
            notes.append(msg)
    row = TaskComparison(
        task=task, variant=label, kind="task", metric=metric, n=n, original=orig, value=val, delta=val - orig,
        ci_low=float(ci_d[0]), ci_high=float(ci_d[1]),
        original_ci=tuple(float(v) for v in np.quantile(ma, q)),  # type: ignore[arg-type]
        value_ci=tuple(float(v) for v in np.quantile(mb, q)),  # type: ignore[arg-type]
        tost=tost, mcnemar_p=mcn, right_to_wrong=r2w, wrong_to_right=w2r, agreement=agree, mean_kl=kl,
        top_agreement=top, chance=chance, chance_label=chance_label or None, collapsed=is_coll, collapse_reason=reason, original_collapsed=orig_coll,
        ci_method=method)
    return row, _Paired(task, metric, a, b, (row.ci_low, row.ci_high), (tost.lo, tost.hi), method)


def _task_interval(a: np.ndarray, b: np.ndarray, binary: bool, ma: np.ndarray, mb: np.ndarray, *, margin: float,
                   alpha: float) -> tuple[tuple[float, float], stats.TostResult, str]:
    """The (1 − alpha) interval of Δ, the TOST on the (1 − 2·alpha) one, and the method's name, for one task.

    Right/wrong outcomes: the continuity-corrected Tango score interval (correct coverage at any n, and not a
    point when no answer changed). Other metrics: the paired bootstrap and a paired t TOST, except that when no
    example's score changed at all (both collapse to the point 0) the exact bound on how many could have
    changed unseen is used instead: values are points in [0, 100], so |Δ| ≤ 100 × that share.
    """
    if binary:
        tost = stats.tost_paired_binary(a, b, margin, alpha, scale=100.0)
        _, lo, hi = stats.tango_ci(a, b, alpha=alpha, scale=100.0)
        return (lo, hi), tost, stats.SCORE_METHOD
    d = b - a
    if not np.any(d):
        half, half2 = (100.0 * stats.zero_change_bound(a.size, x) for x in (alpha / 2, alpha))
        method = "exact bound (no example changed)"
        return (-half, half), stats.tost_from_interval(0.0, -half2, half2, margin, alpha, a.size, method), method
    lo, hi = np.quantile(mb - ma, (alpha / 2, 1 - alpha / 2))
    return (float(lo), float(hi)), stats.tost_equivalence(a, b, margin, alpha), stats.BOOTSTRAP_METHOD


def _compare_average(name: str, paired: list[_Paired], label: str, *, margin: float, alpha: float, iters: int,
                     seed: int) -> TaskComparison:
    """An average of task means: Δ interval and TOST from the per-task intervals (MOVER), bootstrap for the bars.

    Why not a bootstrap of averages (or a pooled standard error) for Δ: when every task agrees on every example
    both are the point 0, and 4 tasks × 5 examples would be "equivalent". MOVER (:func:`stats.mover_average`)
    rebuilds the average's interval from each task's own interval (Tango score for right/wrong tasks), so it is
    at least as wide as those allow and exactly the task's interval for one task. The bootstrap of averages
    still gives each run's own score interval (``original_ci``/``value_ci``, the chart's error bars).
    """
    rng = np.random.default_rng(seed)
    t = len(paired)
    sum_a, sum_b = np.zeros(iters), np.zeros(iters)
    for p in paired:
        ma, mb = stats.bootstrap_means(p.a, p.b, iters=iters, rng=rng)
        sum_a += ma
        sum_b += mb
    avg_a, avg_b = sum_a / t, sum_b / t
    q = (alpha / 2, 1 - alpha / 2)
    orig = float(np.mean([p.a.mean() for p in paired]))
    val = float(np.mean([p.b.mean() for p in paired]))
    deltas = [float(p.b.mean() - p.a.mean()) for p in paired]
    _, lo, hi = stats.mover_average(deltas, [p.ci[0] for p in paired], [p.ci[1] for p in paired])
    _, tlo, thi = stats.mover_average(deltas, [p.tost_ci[0] for p in paired], [p.tost_ci[1] for p in paired])
    method = f"{stats.MOVER_METHOD} of {' + '.join(sorted({p.method for p in paired}))}"
    n = sum(p.a.size for p in paired)
    tost = stats.tost_from_interval(val - orig, tlo, thi, margin, alpha, n, method)
    return TaskComparison(
        task=name, variant=label, kind="average", metric="avg points", n=n,
        original=orig, value=val, delta=val - orig, ci_low=lo, ci_high=hi,
        original_ci=tuple(float(v) for v in np.quantile(avg_a, q)),  # type: ignore[arg-type]
        value_ci=tuple(float(v) for v in np.quantile(avg_b, q)),  # type: ignore[arg-type]
        tost=tost, ci_method=method)



def compare_runs(original: Run | str | os.PathLike[str], variants: Sequence[Run | str | os.PathLike[str]], *,
                 margin: float = 1.0, iters: int = 10_000, seed: int = 0, alpha: float = 0.05,
                 tasks: Sequence[str] | None = None, allow_tokenizer_mismatch: bool = False) -> ComparisonReport:
    """Compare each variant run with the original run, task by task and on the 4-/6-task averages.

    ``margin`` (points) is the equivalence margin of the TOST verdict; ``iters``/``seed`` drive the paired
    bootstrap (the report is deterministic for a seed); ``alpha`` sets the CI level (1 − alpha) and the TOST
    level. ``tasks`` restricts the comparison to these task names or families. Raises
    :class:`ComparisonError` if a variant did not score the same documents with the same prompts, and
    :class:`TokenizerMismatchError` if its tokenizer identity differs from the original's, unless
    ``allow_tokenizer_mismatch`` (then the report lists the differences at the top).
    """
    orig = as_run(original)
    vruns = [as_run(v) for v in variants]
    if not vruns:
        raise ComparisonError("no variant run to compare with the original",
                              fix="pass at least one quantized run besides the original")
    if not margin > 0:
        raise ComparisonError(f"the equivalence margin must be positive, got {margin}")
    if iters < 100:
        raise ComparisonError(f"{iters} bootstrap iterations are too few for a 95% interval; use at least 1000")
    order = [t for t in (orig.config.get("tasks") or []) if t in orig.results]
    order += [t for t in orig.results if t not in order]
    if tasks:
        wanted = set(tasks)
        order = [t for t in order if t in wanted or task_family(t) in wanted]
        if not order:
            raise ComparisonError(f"the original run has none of the tasks {sorted(wanted)}",
                                  where=str(orig.path), fix=f"choose among: {', '.join(orig.results)}")
    if not order:
        raise ComparisonError("the original run has no task results", where=str(orig.path))
    olabel, labels = labels_for(orig, vruns)
    tok_diffs = check_tokenizers(orig, vruns, labels, allow_tokenizer_mismatch)
    notes: list[str] = []
    omodel = str(orig.config.get("model", "?"))
    for run, label in zip(vruns, labels):
        vm = str(run.config.get("model", "?"))
        if vm != omodel:
            notes.append(f"{label} is a run of model {vm}, the original of {omodel}")

    common = {label: check_task_sets(orig, run, label, order, notes) for run, label in zip(vruns, labels)}
    orig_samples: dict[str, list[dict[str, Any]]] = {}
    rows: list[TaskComparison] = []
    paired: dict[str, dict[str, _Paired]] = {label: {} for label in labels}
    per_task: dict[str, list[TaskComparison]] = {t: [] for t in order}
    for run, label in zip(vruns, labels):
        for task in common[label]:
            if task not in orig_samples:
                orig_samples[task] = orig.samples(task)
                if not orig_samples[task]:
                    raise ComparisonError(f"{task}: the original run stored no samples",
                                          where=str(orig.path / f"samples_{task}.jsonl"))
            ra, rb = align(task, orig_samples[task], run.samples(task), label, orig, run)
            try:
                row, pr = _compare_task(task, ra, rb, label, margin=margin, alpha=alpha, iters=iters, seed=seed,
                                        notes=notes)
            except StatsInputError as err:  # e.g. a hand-edited samples file scoring a different number of choices
                raise ComparisonError(f"{task}: {err.what}", where=f"{orig.path} vs {run.path}",
                                      fix="rerun both runs with the same task and data (their samples files "
                                          "disagree)") from err
            per_task[task].append(row)
            paired[label][task] = pr
    for task in order:
        rows += per_task[task]

    for name, families in AVERAGES.items():
        for label in labels:
            by_family: dict[str, list[_Paired]] = {}
            for task, pr in paired[label].items():
                by_family.setdefault(task_family(task), []).append(pr)
            missing = [f for f in families if f not in by_family]
            ambiguous = [f for f in families if len(by_family.get(f, [])) > 1]
            if missing:
                if not tasks and len(missing) < len(families):
                    notes.append(f"{label}: no {name} (missing {', '.join(missing)})")
                continue
            if ambiguous:
                notes.append(f"{label}: no {name}: several tasks of {', '.join(ambiguous)} (choose with tasks=)")
                continue
            rows.append(_compare_average(name, [by_family[f][0] for f in families], label, margin=margin,
                                         alpha=alpha, iters=iters, seed=seed))

    cards = [RunCard.from_run(run, label) for run, label in zip(vruns, labels)]
    present = [t for t in order if per_task[t]]
    return ComparisonReport(model=short_model(omodel), original=RunCard.from_run(orig, olabel), variants=cards,
                            rows=rows, tasks=present, margin=float(margin), alpha=float(alpha), iters=int(iters),
                            seed=int(seed), notes=notes, tokenizer_mismatches=tok_diffs)

