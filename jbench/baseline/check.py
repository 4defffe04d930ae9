"""``jbench check``: a stored run against a baseline, in three steps per task: comparability (same task, data,
prompts, shots, metrics; exit 2 otherwise), then either the exact step (every value, prediction and prompt hash
identical, loglikelihoods within ``LL_ATOL``) or the stat step (a drop larger than noise at the run's n explains).

It exists apart from :mod:`jbench.baseline.store` (the file format) and :mod:`jbench.stats` /
:mod:`jbench.metrics` (the bounds and the bootstrap it applies), so that each step of the gate reads on its own.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from jbench import stats
from jbench.baseline.machine import describe_machine, run_machine
from jbench.baseline.report import CheckReport, Incompatibility, Mode, Row
from jbench.baseline.store import (DEFAULT_BASELINES_DIR, Baseline, _data_checksums, _display_path, _example,
                                   _finite, _load_run_checked, _metrics, _shots, load_baseline, prompt_hash,
                                   read_samples)
from jbench.errors import CheckInputError, JBenchError, StatsInputError
from jbench.metrics import gate_bootstrap_stderr
from jbench.records import PREDICTION
from jbench.results import Run, resolve_run
from jbench.textdiff import first_diff

__all__ = ["EXACT_RULE", "LL_ATOL", "MAX_EXAMPLE_DIFFS", "PROPORTION_SCALE", "STAT_RULE", "check_run",
           "describe_prompt_diff", "validate_options", "z_one_sided"]

MAX_EXAMPLE_DIFFS = 5

# Metrics that are a mean of per-example values in [0, 1] (after dividing by the scale): the Wilson rule applies.
# exact_match / f1 are stored on 0-100 like the reference; f1 is a mean of per-example F1 in [0, 1], whose variance
# is at most p(1-p), so the Wilson band is, if anything, wider than needed (never a false alarm from that).
PROPORTION_SCALE: dict[str, float] = {"acc": 1.0, "acc_norm": 1.0, "balanced_acc": 1.0,
                                      "exact_match": 100.0, "f1": 100.0}

#: Exact mode's tolerance on per-example loglikelihoods (absolute, in nats). fp32 CPU kernels are not bit-identical
#: across CPU types (AVX2 / AVX-512 / AMX), thread counts or MKL/oneDNN versions: the committed CI baseline (made on
#: an AMD EPYC) and a run on an Intel Xeon differ in the 7th significant digit (|Δ| ≈ 2e-6 on a -39.8 sum). Measured
#: across kernel paths on one machine (ATen AVX512 / AVX2 / scalar, MKL dispatch, 1 vs 2 threads) the largest
#: |Δ| was a few 1e-6 (see tests/test_gate.py). 1e-4 is the fidelity bound jbench holds against the reference harness,
#: so a difference inside it is not a behaviour change; a changed prompt, token or score moves a loglikelihood by far
#: more (and changes its prompt hash). Metrics and predictions stay exact, so a flipped argmax still fails.
LL_ATOL = 1e-4


# ----------------------------------------------------------------------------------------------------------------
# Options
# ----------------------------------------------------------------------------------------------------------------

def z_one_sided(confidence: float) -> float:
    """:func:`jbench.stats.z_one_sided`, refusing a confidence outside (0.5, 1) as a :class:`CheckInputError`
    that names the option (the CLI prints ``where:``, so the user sees which flag to change)."""
    try:
        return stats.z_one_sided(confidence)
    except StatsInputError as err:
        raise CheckInputError(err.what, where=f"--confidence {confidence}",
                              fix="pass e.g. --confidence 0.95 (a one-sided confidence level, not a "
                                  "percentage)") from err


def validate_options(mode: Any, k: Any, confidence: Any, rtol: Any) -> float:
    """Check the options of :func:`check_run` (so that the API, not only the CLI, refuses nonsense); returns z.
    Each error names its option as ``where`` (the flag and the value given)."""
    if mode not in ("exact", "stat"):
        raise CheckInputError(f"mode must be 'exact' or 'stat', got {mode!r}", where=f"--mode {mode}",
                              fix="use --mode exact (same deterministic setup) or --mode stat (n-aware noise bands)")
    if not (_finite(k) and k > 0):
        raise CheckInputError(f"k must be a positive finite number, got {k!r}", where=f"--k {k}",
                              fix="pass e.g. --k 2 (the band is k combined standard errors)")
    if not (_finite(rtol) and 0 <= rtol < 1):
        raise CheckInputError(f"rtol must be in [0, 1), got {rtol!r}", where=f"--rtol {rtol}",
                              fix="pass e.g. --rtol 0.02 (a relative drop tolerated on top of noise), or 0")
    return z_one_sided(confidence)


# ----------------------------------------------------------------------------------------------------------------
# Exact step helpers: per-example comparison
# ----------------------------------------------------------------------------------------------------------------

def _ll_close(a: Any, b: Any) -> bool:
    """Two loglikelihoods agree: ``==`` (also for -inf), or both finite and within ``LL_ATOL``. NaN never agrees."""
    if a == b:
        return True
    return _finite(a) and _finite(b) and abs(a - b) <= LL_ATOL


def _max_ll_delta(a: Any, b: Any) -> float | None:
    if not (isinstance(a, list) and isinstance(b, list) and len(a) == len(b)):
        return None
    deltas = [abs(x - y) for x, y in zip(a, b) if _finite(x) and _finite(y)]
    return max(deltas, default=0.0)


def describe_prompt_diff(base: str, now: str, context: int = 20) -> str:
    """Where two prompts first differ: 0-based offset, line/column, and a snippet of each side."""
    i = first_diff(base, now)
    line = base.count("\n", 0, i) + 1
    col = i - (base.rfind("\n", 0, i) + 1) + 1
    lo = max(0, i - context)
    return (f"prompt first differs at character {i} (line {line}, column {col}): "
            f"baseline {base[lo:i + context]!r} vs now {now[lo:i + context]!r}")


def _source_prompts(baseline: Baseline, task: str, override: Run | None) -> dict[Any, str]:
    """The baseline's prompts by doc_index, from its source run if that is still on disk (else empty).

    The baseline keeps only prompt hashes (to stay small); a character-level diff needs the text, which the
    source run has. Only prompts whose hash matches the baseline are used, so an overwritten run can't mislead.
    """
    run = override
    if run is None:
        src = baseline.doc.get("source_run")
        candidates = [Path(src)] if src else []
        if src and baseline.path is not None:
            candidates.append(baseline.path.resolve().parent.parent.parent / src)  # <root>/results/baselines/x
        for c in candidates:
            try:
                run = _load_run_checked(resolve_run(c))
                break
            except JBenchError:
                continue
    if run is None:
        return {}
    try:
        rows = read_samples(run, task) or []
    except JBenchError:  # only used to locate a diff: a broken source run just means no character position
        return {}
    return {_key(r.get("doc_index")): r["prompt"] for r in rows if isinstance(r.get("prompt"), str)}


def _key(v: Any) -> Any:
    """A doc_index usable as a dict key even when a hand-edited file holds a list or object there."""
    return v if v is None or isinstance(v, (int, float, str)) else repr(v)


def _compare_examples(task: str, base_ex: list[dict[str, Any]], rows: list[dict[str, Any]],
                      source: dict[Any, str]) -> tuple[list[str], int, float]:
    """The first differing examples (as explanations), how many examples differ in all, and the largest
    |Δ loglikelihood| seen (within tolerance or not; for the report)."""
    max_delta = 0.0
    now_by_index = {_key(r.get("doc_index")): r for r in rows}
    base_by_index = {_key(e.get("doc_index")): e for e in base_ex}
    diffs: list[str] = []
    for e in base_ex:
        di = e.get("doc_index")
        r = now_by_index.get(_key(di))
        where = f"`{task}` doc {e.get('doc_id')!r} (doc_index {di})"
        if r is None:
            diffs.append(f"{where}: missing from the run")
            continue
        now = _example(r)
        parts = []
        if now.get("doc_id") != e.get("doc_id"):
            parts.append(f"doc_id {e.get('doc_id')!r} vs now {now.get('doc_id')!r}")
        if now.get(PREDICTION) != e.get("prediction"):
            parts.append(f"prediction {e.get('prediction')!r} vs now {now.get('prediction')!r}")
        if now.get("prompt_sha") != e.get("prompt_sha"):
            base_prompt = source.get(_key(di))
            if (base_prompt is not None and prompt_hash(base_prompt) == e.get("prompt_sha")
                    and isinstance(r.get("prompt"), str)):
                parts.append(describe_prompt_diff(base_prompt, r["prompt"]))
            else:
                parts.append(f"prompt hash {e.get('prompt_sha')} vs now {now.get('prompt_sha')} "
                             f"({e.get('prompt_chars')} vs {now.get('prompt_chars')} characters; the baseline's "
                             f"source run is not on disk, so the character position cannot be shown)")
        lb, ln = e.get("loglikelihoods"), now.get("loglikelihoods")
        d = _max_ll_delta(lb, ln)
        if d is not None:
            max_delta = max(max_delta, d)
            j = next((j for j, (x, y) in enumerate(zip(lb, ln)) if not _ll_close(x, y)), None)
            if j is not None:
                delta = abs(ln[j] - lb[j]) if _finite(lb[j]) and _finite(ln[j]) else float("nan")
                parts.append(f"loglikelihood[{j}] {lb[j]!r} vs now {ln[j]!r} (|Δ| {delta:.3g} > tolerance "
                             f"{LL_ATOL:g})")
        elif lb != ln:
            parts.append(f"loglikelihoods {lb!r} vs now {ln!r}")
        if parts:
            diffs.append(f"{where}: " + "; ".join(parts))
    extra = [r for r in rows if _key(r.get("doc_index")) not in base_by_index]
    n_diff = len(diffs) + len(extra)
    if len(diffs) > MAX_EXAMPLE_DIFFS:
        diffs = diffs[:MAX_EXAMPLE_DIFFS] + [f"`{task}`: … and {len(diffs) - MAX_EXAMPLE_DIFFS} more differing "
                                             f"example(s)"]
    if extra:
        diffs.append(f"`{task}`: {len(extra)} example(s) not in the baseline, first doc {extra[0].get('doc_id')!r}")
    return diffs, n_diff, max_delta



# ----------------------------------------------------------------------------------------------------------------
# Step 1: comparability
# ----------------------------------------------------------------------------------------------------------------

def _incompatibilities(task: str, b: dict[str, Any], run: Run, mode: Mode) -> list[Incompatibility]:
    cfg = run.config
    out: list[Incompatibility] = []
    fields = [("task version", b.get("version"), run.versions.get(task)),
              ("prompt version", b.get("prompt_version"), (cfg.get("prompt_versions") or {}).get(task)),
              ("num_fewshot (shots)", b.get("num_fewshot"), _shots(cfg, task))]
    for name, base, now in fields:
        if base != now:
            out.append(Incompatibility(task, name, base, now))
    base_data, now_data = b.get("data_sha256") or {}, _data_checksums(cfg, task)
    for path in sorted(set(base_data) | set(now_data), key=str):
        if base_data.get(path) != now_data.get(path):
            out.append(Incompatibility(task, f"data sha256 of {path}", base_data.get(path), now_data.get(path)))
    if mode == "exact":
        n_now = (run.data.get("n_samples") or {}).get(task)
        if b.get("n") is not None and n_now is not None and b.get("n") != n_now:
            out.append(Incompatibility(task, "n (examples; exact mode needs the same --limit, stat mode does not)",
                                       b.get("n"), n_now))
    return out


def _comparable(report: CheckReport, task: str, b: dict[str, Any], run: Run,
                mode: Mode) -> dict[str, dict[str, Any]] | None:
    """Comparability of one task: the run's metrics of it, or None after recording (in ``report``) why the task
    cannot be compared: missing from the run, another task/prompt version, shots or data, a metric missing, and in
    exact mode another n."""
    metrics: dict[str, Any] = b["metrics"]
    if task not in run.results:
        report.incompatible.append(Incompatibility(task, "task", "present", "missing from the run"))
        report.rows += [Row(task, m, v["value"], None, "—", "cannot compare") for m, v in metrics.items()]
        return None
    problems = _incompatibilities(task, b, run, mode)
    now_metrics = _metrics(run.results[task])
    for m in metrics:
        if m not in now_metrics:
            problems.append(Incompatibility(task, f"metric {m}", "present",
                                            f"missing from the run ({run.results[task].get(m)!r})"))
    if problems:
        report.incompatible += problems
        report.rows += [Row(task, m, v["value"], now_metrics.get(m, {}).get("value"), "—", "cannot compare")
                        for m, v in metrics.items()]
        return None
    extra = sorted(set(now_metrics) - set(metrics))
    if extra:
        report.notes.append(f"`{task}`: metric(s) not in the baseline, not checked: {', '.join(extra)}")
    return now_metrics


def _task_samples(report: CheckReport, task: str, b: dict[str, Any], run: Run,
                  mode: Mode) -> tuple[int | None, list[dict[str, Any]] | None]:
    """The run's n for a task and its rows when a step needs them: every row in exact mode (per-example
    comparison), otherwise only to count n or to bootstrap a stderr (and then a missing file is no error)."""
    n_now = (run.data.get("n_samples") or {}).get(task)
    if mode == "stat" and n_now is not None and b.get("n") not in (None, n_now):
        report.notes.append(f"`{task}`: n is {n_now} now vs {b.get('n')} in the baseline (a --limit run?); "
                            f"the bands use the current n")
    rows_now: list[dict[str, Any]] | None = None
    if mode == "exact" and "examples" in b:
        rows_now = read_samples(run, task, required=True)
    elif n_now is None or any(m not in PROPORTION_SCALE for m in b["metrics"]):
        rows_now = read_samples(run, task, required=False)
    if n_now is None and rows_now is not None:
        n_now = len(rows_now)
    return n_now, rows_now


# ----------------------------------------------------------------------------------------------------------------
# Step 2a: exact
# ----------------------------------------------------------------------------------------------------------------

def _exact_task(report: CheckReport, task: str, b: dict[str, Any], now_metrics: dict[str, dict[str, Any]],
                rows_now: list[dict[str, Any]] | None, baseline: Baseline, override: Run | None) -> float | None:
    """Every metric value and stderr ``==``, then every example; returns the largest |Δ loglikelihood| seen (None
    when the baseline holds no loglikelihoods for this task)."""
    for m, bv in b["metrics"].items():
        nv = now_metrics[m]
        finite = _finite(nv["value"]) and (nv["stderr"] is None or _finite(nv["stderr"]))
        same = finite and nv["value"] == bv["value"] and nv["stderr"] == bv.get("stderr")
        report.rows.append(Row(task, m, bv["value"], nv["value"], "exact (Δ = 0)", "pass" if same else "REGRESSION"))
        if not same:
            report.explanations.append(
                f"`{task}` {m}: value {bv['value']!r} vs now {nv['value']!r}, stderr {bv.get('stderr')!r} "
                f"vs now {nv['stderr']!r}" + ("" if finite else " (not a finite number: never a pass)"))
    if "examples" not in b:
        report.notes.append(f"`{task}`: the baseline has no per-example predictions (saved with "
                            f"include_predictions=False); only metric values were compared")
        return None
    assert rows_now is not None  # read_samples(required=True) raised otherwise
    diffs, n_diff, delta = _compare_examples(task, b["examples"], rows_now, {})
    if any("prompt hash" in d for d in diffs):  # only then is the source run worth loading
        diffs, n_diff, delta = _compare_examples(task, b["examples"], rows_now,
                                                 _source_prompts(baseline, task, override))
    report.example_diffs += diffs
    report.rows.append(Row(task, "examples", len(b["examples"]), len(rows_now), f"identical (LL ±{LL_ATOL:g})",
                           "REGRESSION" if n_diff else "pass", f"{n_diff} differ"))
    return delta if any(isinstance(e.get("loglikelihoods"), list) for e in b["examples"]) else None


# ----------------------------------------------------------------------------------------------------------------
# Step 2b: stat
# ----------------------------------------------------------------------------------------------------------------

def _stat_row(task: str, metric: str, base: dict[str, Any], now_v: float, now_se: float | None, n_now: int | None,
              n_base: int | None, *, k: float, z: float, confidence: float, rtol: float,
              rows_now: list[dict[str, Any]] | None, scale: float | None = None) -> tuple[Row, str | None]:
    """One metric under the stat rule; returns the row and, for a regression, the explanation. ``scale`` is the
    proportion scale (100 for JaSQuAD EM/F1; 1 when the run says so, e.g. lm-eval's 0-1 exact_match)."""
    base_v = base["value"]
    pct = f"{confidence:.0%}"
    if not _finite(now_v) or (now_se is not None and not _finite(now_se)):
        what = f"value {now_v!r}" if not _finite(now_v) else f"stderr {now_se!r}"
        why = (f"`{task}` {metric}: {what} in the run: not a finite number, which is never a pass (the run "
               f"produced no usable number where the baseline has {base_v:.4f})")
        return Row(task, metric, base_v, now_v, "finite", "REGRESSION"), why
    scale = scale if scale is not None else PROPORTION_SCALE.get(metric)
    if scale is not None and n_now:
        target = base_v / scale * (1 - rtol)
        upper = stats.wilson_upper(now_v / scale, n_now, z)
        edge = stats.wilson_lowest_passing(target, n_now, z) * scale
        band = f"≥ {edge:.4f} (Wilson {pct}, n={n_now})"
        if now_v >= base_v:
            return Row(task, metric, base_v, now_v, band, "improved" if now_v > base_v else "pass"), None
        if upper < target:
            why = (f"`{task}` {metric}: now {now_v:.4f} at n={n_now}; its one-sided {pct} Wilson upper bound "
                   f"{upper * scale:.4f} is below the baseline {base_v:.4f}"
                   + (f"×(1−{rtol:g}) = {target * scale:.4f}" if rtol else "")
                   + ": the drop is larger than noise at this n explains.")
            return Row(task, metric, base_v, now_v, band, "REGRESSION"), why
        return Row(task, metric, base_v, now_v, band, "pass"), None
    se_base, source = base.get("stderr"), "stderr"
    if now_se is None and rows_now is not None:
        now_se, source = gate_bootstrap_stderr(metric, rows_now), "bootstrap stderr"
    if se_base is None and now_se is not None and n_now and n_base:
        se_base = now_se * math.sqrt(n_now / n_base)  # same metric, same kind of model: variance ∝ 1/n
    if now_se is None or se_base is None:
        if now_v >= base_v:  # no band needed: improvements never fail
            return Row(task, metric, base_v, now_v, "— (no stderr)", "improved" if now_v > base_v else "pass"), None
        return Row(task, metric, base_v, now_v, "— (no stderr)", "unchecked"), None
    width = k * math.sqrt(now_se ** 2 + se_base ** 2)
    edge = base_v - abs(base_v) * rtol - width
    band = f"≥ {edge:.4f} ({k:g}·√(se²+se²) = {width:.4f}, {source})"
    if now_v >= base_v:
        return Row(task, metric, base_v, now_v, band, "improved" if now_v > base_v else "pass"), None
    if now_v < edge:
        why = (f"`{task}` {metric}: now {now_v:.4f} is below {edge:.4f} = baseline {base_v:.4f} − "
               f"{k:g}·√({now_se:.4f}² + {se_base:.4f}²)" + (f" − |baseline|·{rtol:g}" if rtol else "") + ".")
        return Row(task, metric, base_v, now_v, band, "REGRESSION"), why
    return Row(task, metric, base_v, now_v, band, "pass"), None


def _stat_task(report: CheckReport, task: str, b: dict[str, Any], now_metrics: dict[str, dict[str, Any]],
               n_now: int | None, rows_now: list[dict[str, Any]] | None, metric_scale: dict[str, Any], *, k: float,
               z: float, confidence: float, rtol: float) -> None:
    """Every metric under the stat rule; a drop that cannot be judged (no stderr) is not a pass (fail closed)."""
    for m, bv in b["metrics"].items():
        nv = now_metrics[m]
        scale = metric_scale.get(m)
        row, why = _stat_row(task, m, bv, nv["value"], nv["stderr"], n_now, b.get("n"), k=k, z=z,
                             confidence=confidence, rtol=rtol, rows_now=rows_now,
                             scale=scale if _finite(scale) and scale > 0 else None)
        report.rows.append(row)
        if why:
            report.explanations.append(why)
        if row.verdict == "unchecked":
            report.incompatible.append(Incompatibility(
                task, f"{m} stderr (stat mode needs one to judge a drop)", "none",
                "none, and not computable from the run's samples (add the samples file or use --mode exact)"))


# ----------------------------------------------------------------------------------------------------------------
# The check
# ----------------------------------------------------------------------------------------------------------------

STAT_RULE = ("stat: for acc, acc_norm, balanced_acc (0–1) and exact_match, f1 (0–100, divided by 100) a metric "
             "regresses iff the one-sided Wilson upper bound of the current value at the current n (z at "
             "`confidence`) is below baseline×(1−rtol); the band column shows the lowest current value that passes. "
             "Other metrics (mcc, macro_f1, anything with only value±stderr): regression iff now < baseline − "
             "|baseline|·rtol − k·√(se_now² + se_base²), stderr bootstrapped from the samples when results.json has "
             "none. Improvements never fail.")
EXACT_RULE = ("exact: every metric value and stderr must be == the baseline, and every example's prediction and "
              f"prompt hash identical; loglikelihoods within |Δ| ≤ {LL_ATOL:g} (absolute), because fp32 CPU kernels "
              "differ in the last digits across CPU types, thread counts and MKL/oneDNN versions. NaN/inf never "
              "passes.")


def check_run(run_ref: str | os.PathLike[str], baseline_ref: str | os.PathLike[str], *, mode: Mode,
              k: float = 2.0, confidence: float = 0.95, rtol: float = 0.0,
              baselines_dir: Path = DEFAULT_BASELINES_DIR,
              baseline_run: str | os.PathLike[str] | None = None,
              allow_tokenizer_mismatch: bool = False) -> CheckReport:
    """Check a stored run against a baseline (a file, a name under ``baselines_dir``, or another run).

    Inputs first: options (mode, k > 0, confidence in (0.5, 1), 0 <= rtol < 1), the baseline and the run are
    validated; anything unusable raises a :class:`JBenchError` (exit 2) naming the file and field.

    Then the tokenizer: the baseline's ``tokenizer`` identity must equal the run's ``config.tokenizer`` on every
    field of :data:`jbench.models.tokenizer.IDENTITY_FIELDS`, else exit 2 naming the fields, unless
    ``allow_tokenizer_mismatch`` (then the report shows the difference at its top). A baseline saved before
    identities were recorded has none: every field is "unknown" and it is refused the same way (fail closed:
    re-save it, or override).

    Per task of the baseline: comparability (task present, task version, prompt version, shots, data sha256s,
    every metric present; in exact mode also n), any mismatch -> exit 2 naming (task, field, baseline vs now). Then:

    * ``exact``: metric values (and stderrs) ``==``, every example's prediction and prompt hash identical, and its
      loglikelihoods within ``LL_ATOL`` (1e-4 absolute; fp32 CPU kernels are not bit-identical across machines,
      see ``LL_ATOL``). The report names the baseline's machine and this run's, and the largest |Δ| seen. The first
      differing examples are listed; for a changed prompt, the first differing character (offset, line, column,
      snippets) when the baseline's source run (or ``baseline_run``) is on disk.
    * ``stat``: proportion metrics (acc, acc_norm, balanced_acc; exact_match and f1 divided by 100) regress iff
      ``wilson_upper(now, n_now, z) < baseline * (1 - rtol)``, z the one-sided normal quantile at ``confidence``:
      the drop must exceed what noise at the *current* n explains, so a small ``--limit`` run gets a wide band.
      Other metrics (mcc, macro_f1): regress iff ``now < baseline - |baseline|*rtol - k*sqrt(se_now² + se_base²)``
      (stderr bootstrapped from the run's samples if missing; a missing baseline stderr is scaled from the current
      one by sqrt(n_now/n_base)). Improvements never fail.

    In both modes a NaN or inf metric (value or stderr) in the run is a REGRESSION (exit 1): never a pass. A NaN or
    inf per-example loglikelihood, by contrast, makes the samples file unusable (exit 2, naming file, line and
    field), as does any other malformed row (:func:`jbench.baseline.store.read_samples`).

    Steps: inputs (:func:`validate_options`, the baseline, the run), identity (:func:`_identify`), then per task
    comparability (:func:`_comparable`) and the exact (:func:`_exact_task`) or stat (:func:`_stat_task`) step.
    """
    z = validate_options(mode, k, confidence, rtol)
    baseline = load_baseline(baseline_ref, baselines_dir=baselines_dir)
    run = _load_run_checked(run_ref)
    override = _load_run_checked(baseline_run) if baseline_run is not None else None
    report = CheckReport(mode=mode, run=_display_path(run.path),
                         baseline=_display_path(baseline.path) if baseline.path else str(baseline_ref),
                         rule=EXACT_RULE if mode == "exact" else STAT_RULE)
    _identify(report, baseline, run, allow_tokenizer_mismatch)
    metric_scale = run.config.get("metric_scale") or {}
    max_ll_delta: float | None = None
    for task, b in baseline.tasks.items():
        now_metrics = _comparable(report, task, b, run, mode)
        if now_metrics is None:
            continue
        n_now, rows_now = _task_samples(report, task, b, run, mode)
        if mode == "exact":
            delta = _exact_task(report, task, b, now_metrics, rows_now, baseline, override)
            if delta is not None:
                max_ll_delta = max(max_ll_delta or 0.0, delta)
        else:
            _stat_task(report, task, b, now_metrics, n_now, rows_now, metric_scale, k=k, z=z, confidence=confidence,
                       rtol=rtol)
    if max_ll_delta is not None:
        report.notes.append(f"largest per-example loglikelihood |Δ| vs the baseline: {max_ll_delta:.3g} "
                            f"(tolerance {LL_ATOL:g})")
    if mode == "exact" and report.exit_code == 1:
        report.notes.append(f"machines: baseline made on {report.machines[0]}; this run on {report.machines[1]}"
                            if report.machines else "machines: not recorded")
    for task in run.results:
        if task not in baseline.tasks:
            report.notes.append(f"`{task}` is in the run but not in the baseline: not checked")
    return report


def _identify(report: CheckReport, baseline: Baseline, run: Run, allow_tokenizer_mismatch: bool) -> None:
    """What the run and the baseline are: the tokenizer identity (a difference is exit 2 unless allowed), the
    machines (named in exact mode), and notes on a different model or jbench version."""
    from jbench.models.tokenizer import identity_diff

    cfg = run.config
    report.tokenizer_diffs = identity_diff(baseline.doc.get("tokenizer"), cfg.get("tokenizer"))
    report.tokenizer_allowed = bool(allow_tokenizer_mismatch)
    if report.tokenizer_diffs and baseline.doc.get("tokenizer") is None:
        report.tokenizer_diffs.append("the baseline records no tokenizer identity (saved before jbench recorded "
                                      "one): re-save it from a current run")
    if report.mode == "exact":
        report.machines = (describe_machine(baseline.doc.get("machine")), describe_machine(run_machine(cfg)))
    for key, base_value in sorted((baseline.doc.get("model") or {}).items()):
        if cfg.get(key) != base_value:
            report.notes.append(f"model {key} differs: baseline {base_value!r} vs now {cfg.get(key)!r}")
    if baseline.doc.get("jbench_version") != cfg.get("jbench_version"):
        report.notes.append(f"jbench version: baseline {baseline.doc.get('jbench_version')!r} vs now "
                            f"{cfg.get('jbench_version')!r}")
