"""Published against measured: per task Δ, whether |Δ| is within binomial noise at the measured n, and a verdict
(reproduced / consistent / differs / not comparable, with why). Used by ``jbench reproduce`` and by ``jbench check RUN
--baseline published:MODEL[@SOURCE]``; exit codes are check's (:data:`RULE`): 0 every source task the run covers
reproduced, 1 a task differs beyond noise, 2 otherwise (partial, a reduced n, nothing comparable) or bad input. A run
of another model or with other settings than the source's is not comparable (:mod:`jbench.published.comparable`).

The noise rule. For a proportion metric (acc, acc_norm: 0-1; exact_match, f1: 0-100, divided by 100) with
published value p and measured n, a fresh run's value has binomial standard error ``sqrt(p(1-p)/n)``; |Δ| within
``Z * se`` (Z = 1.96, two-sided 95 %) is noise. A full run of the same documents with the same settings should in
principle give the same number; GPU kernels, batch sizes and library versions flip a few argmaxes, which this band
tolerates, while a wrong prompt, tokenizer or dtype moves numbers far beyond it. A ``--limit`` run gets the wider
band of its smaller n and at best the verdict "consistent". F1 per example lies in [0, 1], whose variance is at most
p(1-p): the band is conservative.
Metrics that are not proportions (mcc, rouge2) are shown but not judged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from jbench.published.registry import PublishedTask, Source

Z = 1.96
PROPORTION_SCALE = {"acc": 1.0, "acc_norm": 1.0, "balanced_acc": 1.0, "exact_match": 100.0, "f1": 100.0}
PRIMARY = ("acc", "exact_match", "rouge2")
REPRODUCED, CONSISTENT, DIFFERS, NOT_COMPARABLE = "reproduced", "consistent", "differs", "not comparable"
RULE = ("exit: 0 REPRODUCED (every source task the run covers reproduced at the source's n), 1 DIFFERS (a task "
        "beyond noise), 2 otherwise: PARTIAL (some covered task not comparable), CONSISTENT AT A REDUCED N (a "
        "--limit run within noise: not a reproduction), NOT COMPARABLE (another model, tokenizer, dtype, "
        "max_length, data...).")


@dataclass
class MetricRow:
    metric: str
    published: float
    measured: float | None
    delta: float | None
    band: float | None           # Z * se on the metric's own scale (None: not a proportion, or no n)
    within: bool | None


@dataclass
class TaskVerdict:
    task: str                    # as the source names it
    jbench_task: str | None
    n: int | None                # measured documents
    verdict: str
    why: str = ""
    rows: list[MetricRow] = field(default_factory=list)
    covered: bool = True         # the run was asked to run this task (only covered tasks decide the headline)


@dataclass
class Reproduction:
    """The whole comparison; ``exit_code`` follows ``jbench check`` (see :data:`RULE`)."""

    source: Source
    run: str
    tasks: list[TaskVerdict]
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # run-level reasons that make every task not comparable

    @property
    def covered(self) -> list[TaskVerdict]:
        return [t for t in self.tasks if t.covered]

    @property
    def exit_code(self) -> int:
        verdicts = [t.verdict for t in self.covered]
        if DIFFERS in verdicts:
            return 1
        return 0 if verdicts and all(v == REPRODUCED for v in verdicts) else 2

    @property
    def headline(self) -> str:
        verdicts = [t.verdict for t in self.covered]
        if self.exit_code != 2:
            return "DIFFERS" if self.exit_code == 1 else "REPRODUCED"
        if verdicts and all(v in (REPRODUCED, CONSISTENT) for v in verdicts):
            return "CONSISTENT AT A REDUCED N"
        return "PARTIAL" if any(v in (REPRODUCED, CONSISTENT) for v in verdicts) else "NOT COMPARABLE"

    @property
    def summary(self) -> str:
        cov = self.covered
        if not self.source.tasks:
            avg = ", ".join(f"{k} {v:.2f}" for k, v in self.source.printed_averages.items()) or "none"
            return (f"NOT COMPARABLE: {self.source.id} publishes no per-task number, only averages ({avg})"
                    + (f", and does not state its {', '.join(self.source.settings_unknown)}"
                       if self.source.settings_unknown else "") + ": there is nothing to compare a run with")
        counts = {v: sum(t.verdict == v for t in cov) for v in (REPRODUCED, CONSISTENT, DIFFERS, NOT_COMPARABLE)}
        text = (f"{self.headline}: of the {len(cov)} source task(s) the run covers, {counts[REPRODUCED]} reproduced, "
                f"{counts[CONSISTENT]} consistent at a reduced n only, {counts[DIFFERS]} differ beyond noise, "
                f"{counts[NOT_COMPARABLE]} not comparable")
        if len(self.tasks) > len(cov):
            text += f"; {len(self.tasks) - len(cov)} more source task(s) not covered by the run"
        return text

    def to_markdown(self) -> str:
        s = self.source
        lines = [f"## {s.model}: published ({s.id}) vs measured ({self.run})", "",
                 f"source: {s.url}" + (f" (commit {s.commit[:12]})" if s.commit else ""), "",
                 "| Task | Metric | Published | Measured | Δ | Noise (±1.96·se at n) | n | Verdict |",
                 "|---|---|---:|---:|---:|---|---:|---|"]
        for t in self.tasks:
            verdict = t.verdict + (f": {t.why}" if t.why else "")
            if not t.rows:
                lines.append(f"| {t.task} | - | - | - | - | - | {t.n or '-'} | {verdict} |")
            for i, r in enumerate(t.rows):
                meas = "-" if r.measured is None else f"{r.measured:.4f}"
                delta = "-" if r.delta is None else f"{r.delta:+.4f}"
                band = "-" if r.band is None else f"±{r.band:.4f}" + (
                    "" if r.within is None else f" ({'within' if r.within else 'BEYOND'})")
                lines.append(f"| {t.task if i == 0 else ''} | {r.metric} | {r.published:.4f} | {meas} | {delta} | "
                             f"{band} | {(t.n or '-') if i == 0 else ''} | {verdict if i == 0 else ''} |")
        lines += ["", self.summary]
        lines += [f"not comparable: {p}" for p in self.problems]
        lines += [f"note: {n}" for n in self.notes]
        lines += ["rule: |Δ| within 1.96·sqrt(p(1-p)/n) (p published, n measured; EM/F1 on 0-100) is noise; "
                  "the task verdict follows its acc / exact_match and every other proportion metric.", RULE]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source.id, "model": self.source.model, "run": self.run, "exit_code": self.exit_code,
                "headline": self.headline, "summary": self.summary, "problems": self.problems, "notes": self.notes,
                "tasks": [{"task": t.task, "jbench_task": t.jbench_task, "n": t.n, "covered": t.covered,
                           "verdict": t.verdict, "why": t.why, "metrics": [r.__dict__ for r in t.rows]}
                          for t in self.tasks]}


def band(metric: str, published: float, n: int | None) -> float | None:
    """Z·se on the metric's scale for a proportion metric at n documents (None when not applicable)."""
    scale = PROPORTION_SCALE.get(metric)
    if scale is None or not n:
        return None
    p = min(max(published / scale, 0.0), 1.0)
    return Z * math.sqrt(p * (1 - p) / n) * scale


def _rows(t: PublishedTask, measured: dict[str, Any], n: int | None) -> list[MetricRow]:
    rows = []
    for metric, v in t.metrics.items():
        now = measured.get(metric)
        now = now if isinstance(now, (int, float)) else None
        delta = None if now is None else now - v["value"]
        b = band(metric, v["value"], n)
        within = None if b is None or delta is None else (abs(delta) <= b + 1e-12)
        rows.append(MetricRow(metric, v["value"], now, delta, b, within))
    return rows


def _run_n(run: dict[str, Any], task: str) -> int | None:
    n = (run.get("n_samples") or {}).get(task)
    if isinstance(n, dict):
        n = n.get("effective") or n.get("original")
    return n if isinstance(n, int) else None


def _shots_of(run: dict[str, Any], task: str) -> int | None:
    cfg = run.get("config") or {}
    tasks, shots = cfg.get("tasks") or [], cfg.get("num_fewshot") or []
    return shots[tasks.index(task)] if task in tasks and tasks.index(task) < len(shots) else None


def _auto_dtype_note(source: Source, cfg: dict[str, Any]) -> list[str]:
    if source.dtype == "auto" and cfg.get("variant") not in (None, "auto"):
        return [f"the source loaded the checkpoint's own dtype (torch_dtype=auto), the run {cfg.get('dtype')}: "
                "the same only if that is the checkpoint's dtype"]
    return []


def _reduced_n(t: PublishedTask, n: int | None, cfg: dict[str, Any]) -> bool:
    """The run measured fewer documents than the source (or ran with a limit where the source's n is unknown)."""
    if t.n is not None and n is not None:
        return n < t.n
    return cfg.get("limit") is not None


def compare(source: Source, run: dict[str, Any], run_name: str, skipped: dict[str, str] | None = None, *,
            stated_model: str | None = None) -> Reproduction:
    """Compare one stored run (its results.json content) with a published source. ``skipped``: tasks the caller
    could not run, with why (e.g. missing data). ``stated_model``: the user said the run's weights are this model
    (``reproduce --checkpoint``). A run of another model, tokenizer setting, dtype, quantization, max_length or
    loader arguments than the source's is not comparable on any task."""
    from jbench.published.comparable import data_problem, model_problem, settings_problems

    skipped = skipped or {}
    results = run.get("results") or {}
    cfg = run.get("config") or {}
    asked = set(cfg.get("tasks") or results)
    problems = [p for p in [model_problem(source, cfg, stated_model)] if p] + settings_problems(source, cfg)
    out = Reproduction(source=source, run=run_name, tasks=[], notes=_auto_dtype_note(source, cfg),
                       problems=problems)

    def add(t: PublishedTask, jt: str | None, n: int | None, verdict: str, why: str,
            rows: list[MetricRow] | None = None) -> None:
        out.tasks.append(TaskVerdict(t.task, jt, n, verdict, why, rows or [], covered=jt in asked))

    for t in source.tasks:
        jt = t.jbench_task
        if source.settings_unknown:
            now = results.get(jt or "") or next((v for k, v in results.items() if k.split("-")[0] == t.family), {})
            n = _run_n(run, jt or "")
            add(t, jt, n, NOT_COMPARABLE, "settings unknown (" + ", ".join(source.settings_unknown)
                + " not stated by the source)", _rows(t, now, n) if now else [])
            continue
        if jt is None:
            add(t, None, None, NOT_COMPARABLE, f"jbench has no {t.family} task")
            continue
        if jt in skipped:
            add(t, jt, None, NOT_COMPARABLE, skipped[jt])
            continue
        if jt not in results:
            other = [k for k in results if k.split("-")[0] == t.family]
            why = (f"different task version (the run has {', '.join(other)}, the source {t.task})" if other
                   else "not in the run" if jt not in asked else "missing data (the run has no such task)")
            add(t, jt, None, NOT_COMPARABLE, why)
            continue
        n = _run_n(run, jt)
        rows = _rows(t, results[jt], n)
        problem = ("the run's settings differ from the source's (see below)" if problems
                   else data_problem(run, jt))
        shots = _shots_of(run, jt)
        if not problem and t.shots is not None and shots is not None and shots != t.shots:
            problem = f"different shots (the run {shots}, the source {t.shots})"
        judged = [r for r in rows if r.within is not None]
        if problem:
            add(t, jt, n, NOT_COMPARABLE, problem, rows)
        elif not judged:
            add(t, jt, n, NOT_COMPARABLE, "no proportion metric to judge", rows)
        elif not all(r.within for r in judged):
            add(t, jt, n, DIFFERS, ", ".join(r.metric for r in judged if not r.within) + " beyond noise", rows)
        elif _reduced_n(t, n, cfg):
            add(t, jt, n, CONSISTENT, f"within noise at n={n} only (the source: n={t.n or 'unknown'}); a subset "
                "cannot reproduce the full-set number", rows)
        else:
            exact = all(r.measured is not None and "%.4f" % r.measured == "%.4f" % r.published for r in rows)
            add(t, jt, n, REPRODUCED, "exactly" if exact else "within noise", rows)
    return out


def compare_run(run: dict[str, Any], run_name: str) -> Reproduction | None:
    """The run against the published source of its model that shares the most task names with it (sources with
    known settings first); None when the model has no published number for any of the run's tasks."""
    from jbench.published.registry import PublishedError, model_of_run, sources_for

    model = model_of_run(run.get("config") or {})
    try:
        sources = sources_for(model) if model else []
    except PublishedError:
        return None
    names = set(run.get("results") or {})
    scored = [(sum(t.task in names for t in s.tasks), s.settings_known, -i, s) for i, s in enumerate(sources)]
    best = max(scored, key=lambda x: x[:3], default=None)
    if best is None or best[0] == 0:
        return None
    rep = compare(best[3], run, run_name)
    rep.tasks = [t for t in rep.tasks if t.jbench_task in names]  # only what the run measured
    return rep


def published_lines(run: dict[str, Any], run_name: str) -> list[str]:
    """Markdown lines for reports: per task, the measured score beside the published one (points), Δ, and the
    verdict; empty when the model has no published number for the run's tasks."""
    rep = compare_run(run, run_name)
    if rep is None or not rep.tasks:
        return []
    lines = [f"Published source: {rep.source.id} ({rep.source.url}).", "",
             "| task | metric | measured | published | Δ | within noise | verdict |",
             "|---|---|---:|---:|---:|---|---|"]
    for t in rep.tasks:
        for r in t.rows:
            if r.metric not in PRIMARY:
                continue
            scale = 100.0 if r.metric in ("acc", "acc_norm") else 1.0
            meas = "-" if r.measured is None else f"{r.measured * scale:.2f}"
            delta = "-" if r.delta is None else f"{r.delta * scale:+.2f}"
            noise = "-" if r.within is None else ("yes" if r.within else "NO") + f" (±{(r.band or 0) * scale:.2f})"
            lines.append(f"| {t.task} | {r.metric} | {meas} | {r.published * scale:.2f} | {delta} | {noise} | "
                         f"{t.verdict}{': ' + t.why if t.why else ''} |")
    return lines
