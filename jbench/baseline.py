"""Benchmark-number regression gate: freeze a run as a reviewable baseline, then check later runs against it.

A baseline (``results/baselines/<name>.json``, committed to git) holds what decides whether two runs are
comparable (task version, prompt version, shots, data sha256s), the numbers themselves (value, stderr, n per
metric), the model identity, and, for ``exact`` mode, one line per example (doc_id, prediction, prompt hash,
loglikelihoods as repr floats) so that a changed prompt or score shows up as a one-line diff in review.

Two check modes:

* ``exact``: for refactors that must not move anything. Every metric value and every per-example prediction
  (and loglikelihood, to the last digit) must be ``==``.
* ``stat``: for changes that may legitimately move numbers a little (library upgrades, another GPU, a quick
  ``--limit`` run). A metric fails only if the drop is larger than noise at the run's n explains; see
  :func:`check_run` for the exact rule. Improvements never fail.

Exit codes: 0 pass, 1 regression, 2 cannot compare (different data, task/prompt version, shots, or a task or
metric missing). 2 wins over 1 because a comparison of different things has to be fixed before any verdict means
anything; regressions found in the comparable tasks are still listed in the report.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any, Literal

from jbench.errors import JBenchError
from jbench.results import Run, StoreError, _atomic_write, load_run, resolve_run

FORMAT = "jbench-baseline/1"
DEFAULT_BASELINES_DIR = Path("results/baselines")
PROMPT_HASH_CHARS = 16
MAX_EXAMPLE_DIFFS = 5
BOOTSTRAP_ITERS = 1000
BOOTSTRAP_SEED = 1234

# Metrics that are a mean of per-example values in [0, 1] (after dividing by the scale): the Wilson rule applies.
# exact_match / f1 are stored on 0-100 like the reference; f1 is a mean of per-example F1 in [0, 1], whose variance
# is at most p(1-p), so the Wilson band is, if anything, wider than needed (never a false alarm from that).
PROPORTION_SCALE: dict[str, float] = {"acc": 1.0, "acc_norm": 1.0, "balanced_acc": 1.0,
                                      "exact_match": 100.0, "f1": 100.0}

Mode = Literal["exact", "stat"]


class BaselineError(JBenchError):
    """A baseline cannot be written, found or read."""


# ----------------------------------------------------------------------------------------------------------------
# Building and saving
# ----------------------------------------------------------------------------------------------------------------

def prompt_hash(prompt: str) -> str:
    """Short sha256 of the prompt: enough to notice any change, small enough to keep one line per example."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:PROMPT_HASH_CHARS]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _metrics(task_results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, value in task_results.items():
        if key.endswith("_stderr") or not _is_number(value):
            continue
        se = task_results.get(f"{key}_stderr")
        out[key] = {"value": value, "stderr": se if _is_number(se) else None}
    return out


def _example(row: dict[str, Any]) -> dict[str, Any]:
    ex: dict[str, Any] = {"doc_index": row.get("doc_index"), "doc_id": row.get("doc_id"),
                          "prediction": row.get("prediction")}
    prompt = row.get("prompt")
    if isinstance(prompt, str):
        ex["prompt_sha"] = prompt_hash(prompt)
        ex["prompt_chars"] = len(prompt)
    if "loglikelihoods" in row:
        ex["loglikelihoods"] = row["loglikelihoods"]
    return ex


def _shots(config: dict[str, Any], task: str) -> Any:
    tasks, shots = config.get("tasks") or [], config.get("num_fewshot") or []
    if isinstance(shots, dict):
        return shots.get(task)
    if task in tasks and len(shots) == len(tasks):
        return shots[tasks.index(task)]
    return None


def _data_checksums(config: dict[str, Any], task: str) -> dict[str, Any]:
    return {f.get("path"): f.get("sha256") for f in (config.get("data") or {}).get(task, []) if isinstance(f, dict)}


def _display_path(p: Path) -> str:
    """Relative to the working directory when inside it (portable in a committed baseline), else absolute."""
    full = p.resolve()
    try:
        return full.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(full)


def build_baseline(run: Run, name: str, *, include_predictions: bool = True) -> dict[str, Any]:
    """The baseline document for a loaded run (what :func:`save_baseline` writes)."""
    cfg = run.config
    n_samples = run.data.get("n_samples") or {}
    tasks: dict[str, Any] = {}
    for task, res in run.results.items():
        entry: dict[str, Any] = {
            "version": run.versions.get(task),
            "prompt_version": (cfg.get("prompt_versions") or {}).get(task),
            "num_fewshot": _shots(cfg, task),
            "n": n_samples.get(task),
            "data_sha256": _data_checksums(cfg, task),
            "metrics": _metrics(res),
        }
        if include_predictions:
            rows = sorted(run.samples(task), key=lambda r: (r.get("doc_index") is None, r.get("doc_index") or 0))
            entry["examples"] = [_example(r) for r in rows]
            if entry["n"] is None:
                entry["n"] = len(rows)
        tasks[task] = entry
    return {
        "format": FORMAT,
        "name": name,
        "source_run": _display_path(run.path),
        "model": {k: cfg.get(k) for k in ("model", "model_args", "variant", "dtype", "weights_fingerprint")},
        "limit": cfg.get("limit"),
        "jbench_version": cfg.get("jbench_version"),
        "git_commit": cfg.get("git_commit"),
        "tasks": tasks,
    }


def _dumps(obj: Any, indent: int = 0, one_line_items: bool = False) -> str:
    """JSON with sorted keys and 2-space indent, except that each item of an ``examples`` list is one line.

    One line per example keeps a 1,000-example task at 1,000 lines and makes a changed prediction a one-line diff.
    Floats are written by ``repr`` (json's default), which round-trips exactly.
    """
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {_dumps(obj[k], indent + 1, k == 'examples')}"
                 for k in sorted(obj)]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and obj and (one_line_items or any(isinstance(v, (dict, list)) for v in obj)):
        if one_line_items:
            items = [inner + json.dumps(v, ensure_ascii=False, sort_keys=True) for v in obj]
        else:
            items = [inner + _dumps(v, indent + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False, sort_keys=True)


def save_baseline(run_ref: str | os.PathLike[str], name: str, *, baselines_dir: Path = DEFAULT_BASELINES_DIR,
                  include_predictions: bool = True) -> Path:
    """Write ``<baselines_dir>/<name>.json`` from a stored run (atomically; overwrites: git shows the change)."""
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise BaselineError(f"invalid baseline name {name!r}", fix="use a plain name such as 'tiny-fp32'")
    run = load_run(run_ref)
    doc = build_baseline(run, name, include_predictions=include_predictions)
    path = Path(baselines_dir) / f"{name}.json"
    _atomic_write(path, [_dumps(doc), "\n"])
    return path


@dataclass(frozen=True)
class Baseline:
    """A loaded baseline and where it came from (to find the source run's prompts for a diff)."""

    doc: dict[str, Any]
    path: Path | None

    @property
    def tasks(self) -> dict[str, Any]:
        return self.doc.get("tasks", {})


def load_baseline(ref: str | os.PathLike[str], *, baselines_dir: Path = DEFAULT_BASELINES_DIR) -> Baseline:
    """A baseline file, a baseline name under ``baselines_dir``, or a stored run (compared as if just saved)."""
    p = Path(ref)
    candidates = [p] if p.suffix == ".json" and p.name != "results.json" else []
    candidates.append(Path(baselines_dir) / f"{ref}.json")
    for c in candidates:
        if c.is_file():
            try:
                doc = json.loads(c.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise BaselineError(f"baseline is not valid JSON: {err}", where=str(c)) from err
            if doc.get("format") != FORMAT:
                raise BaselineError(f"not a jbench baseline (format {doc.get('format')!r}, expected {FORMAT!r})",
                                    where=str(c))
            return Baseline(doc, c)
    try:
        run = load_run(ref)
    except StoreError:
        raise BaselineError(f"no baseline or run named {ref!s}",
                            where=", ".join(str(c) for c in candidates),
                            fix="save one with `jbench baseline save <run> --name NAME` (see results/baselines/)")
    return Baseline(build_baseline(run, run.path.name), None)


# ----------------------------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------------------------

def z_one_sided(confidence: float) -> float:
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0.5, 1), got {confidence}")
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


def _mcc(gold: Any, pred: Any, k: int) -> float:
    import numpy as np

    c = np.bincount(gold * k + pred, minlength=k * k).reshape(k, k).astype(float)
    s, correct = c.sum(), np.trace(c)
    t, p = c.sum(axis=1), c.sum(axis=0)
    den = math.sqrt(max(s * s - float(p @ p), 0.0) * max(s * s - float(t @ t), 0.0))
    return 0.0 if den == 0 else float(correct * s - float(p @ t)) / den


def _macro_f1(gold: Any, pred: Any, k: int) -> float:
    import numpy as np

    c = np.bincount(gold * k + pred, minlength=k * k).reshape(k, k).astype(float)
    tp, t, p = np.diag(c), c.sum(axis=1), c.sum(axis=0)
    present = (t + p) > 0  # sklearn's default: labels seen in gold or prediction
    f1 = np.divide(2 * tp, t + p, out=np.zeros_like(tp), where=present)
    return float(f1[present].mean()) if present.any() else 0.0


def bootstrap_stderr(metric: str, rows: list[dict[str, Any]]) -> float | None:
    """Bootstrap stderr of mcc / macro_f1 from (gold, prediction) rows, for results that carry no stderr.

    Deterministic (fixed seed) so that a check is reproducible. None when the metric or rows don't allow it.
    """
    import numpy as np

    fn = {"mcc": _mcc, "macro_f1": _macro_f1}.get(metric)
    pairs = [(r.get("gold"), r.get("prediction")) for r in rows]
    if fn is None or len(pairs) < 2 or not all(isinstance(g, int) and isinstance(p, int) and g >= 0 and p >= 0
                                                for g, p in pairs):
        return None
    gold = np.array([g for g, _ in pairs])
    pred = np.array([p for _, p in pairs])
    k = int(max(gold.max(), pred.max())) + 1
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    stats = [fn(gold[idx], pred[idx], k) for idx in rng.integers(0, len(pairs), size=(BOOTSTRAP_ITERS, len(pairs)))]
    return float(np.std(stats, ddof=1))


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------

Verdict = Literal["pass", "improved", "REGRESSION", "cannot compare", "unchecked"]


@dataclass
class Row:
    """One line of the table: one metric of one task."""

    task: str
    metric: str
    baseline: float | None
    now: float | None
    band: str
    verdict: Verdict
    delta: str | None = None  # Δ column text when it is not now − baseline (e.g. "3 differ")


@dataclass(frozen=True)
class Incompatibility:
    """Why a task cannot be compared: which field, and its value in the baseline and now."""

    task: str
    field: str
    baseline: Any
    now: Any

    def __str__(self) -> str:
        return f"`{self.task}`: {self.field} differs (baseline {self.baseline!r} vs now {self.now!r})"


@dataclass
class CheckReport:
    """The outcome of :func:`check_run`: a table, the reasons behind each failure, and an exit code."""

    mode: Mode
    run: str
    baseline: str
    rule: str
    rows: list[Row] = field(default_factory=list)
    incompatible: list[Incompatibility] = field(default_factory=list)
    explanations: list[str] = field(default_factory=list)
    example_diffs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == "REGRESSION"]

    @property
    def exit_code(self) -> int:
        if self.incompatible:
            return 2
        return 1 if self.regressions or self.example_diffs else 0

    @property
    def status(self) -> str:
        return {0: "PASS", 1: "REGRESSION", 2: "CANNOT COMPARE"}[self.exit_code]

    def _fmt(self, v: float | None) -> str:
        if v is None:
            return "—"
        return repr(v) if self.mode == "exact" else f"{v:.4f}"

    def _delta(self, r: Row) -> str:
        if r.delta is not None:
            return r.delta
        if r.baseline is None or r.now is None:
            return "—"
        d = r.now - r.baseline
        return f"{d:+}" if self.mode == "exact" else f"{d:+.4f}"

    def to_markdown(self) -> str:
        out = [f"## jbench check ({self.mode}): {self.status}", "",
               f"run `{self.run}` vs baseline `{self.baseline}`", "",
               "| task | metric | baseline | now | Δ | allowed band | verdict |",
               "|---|---|---|---|---|---|---|"]
        for r in self.rows:
            verdict = f"**{r.verdict}**" if r.verdict in ("REGRESSION", "cannot compare") else r.verdict
            out.append(f"| {r.task} | {r.metric} | {self._fmt(r.baseline)} | {self._fmt(r.now)} | {self._delta(r)} "
                       f"| {r.band} | {verdict} |")
        if self.incompatible:
            out += ["", "### Cannot compare", ""] + [f"- {i}" for i in self.incompatible]
        if self.explanations:
            out += ["", "### Regressions", ""] + [f"- {e}" for e in self.explanations]
        if self.example_diffs:
            out += ["", "### Differing examples", ""] + [f"- {d}" for d in self.example_diffs]
        if self.notes:
            out += ["", "### Notes", ""] + [f"- {n}" for n in self.notes]
        out += ["", f"Rule: {self.rule}", ""]
        return "\n".join(out)


# ----------------------------------------------------------------------------------------------------------------
# Checking
# ----------------------------------------------------------------------------------------------------------------

def _same(a: Any, b: Any) -> bool:
    """``==``, except that two NaNs (an undefined mcc, say) count as the same value."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _first_diff(a: str, b: str) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def describe_prompt_diff(base: str, now: str, context: int = 20) -> str:
    """Where two prompts first differ: 0-based offset, line/column, and a snippet of each side."""
    i = _first_diff(base, now)
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
                run = load_run(resolve_run(c))
                break
            except StoreError:
                continue
    if run is None:
        return {}
    try:
        rows = run.samples(task)
    except StoreError:
        return {}
    return {r.get("doc_index"): r["prompt"] for r in rows if isinstance(r.get("prompt"), str)}


def _compare_examples(task: str, base_ex: list[dict[str, Any]], rows: list[dict[str, Any]],
                      source: dict[Any, str]) -> tuple[list[str], int]:
    """The first differing examples (as explanations) and how many examples differ in all."""
    now_by_index = {r.get("doc_index"): r for r in rows}
    base_by_index = {e.get("doc_index"): e for e in base_ex}
    diffs: list[str] = []
    for e in base_ex:
        di = e.get("doc_index")
        r = now_by_index.get(di)
        where = f"`{task}` doc {e.get('doc_id')!r} (doc_index {di})"
        if r is None:
            diffs.append(f"{where}: missing from the run")
            continue
        now = _example(r)
        parts = []
        if now.get("doc_id") != e.get("doc_id"):
            parts.append(f"doc_id {e.get('doc_id')!r} vs now {now.get('doc_id')!r}")
        if now.get("prediction") != e.get("prediction"):
            parts.append(f"prediction {e.get('prediction')!r} vs now {now.get('prediction')!r}")
        if now.get("prompt_sha") != e.get("prompt_sha"):
            base_prompt = source.get(di)
            if base_prompt is not None and prompt_hash(base_prompt) == e.get("prompt_sha"):
                parts.append(describe_prompt_diff(base_prompt, r["prompt"]))
            else:
                parts.append(f"prompt hash {e.get('prompt_sha')} vs now {now.get('prompt_sha')} "
                             f"({e.get('prompt_chars')} vs {now.get('prompt_chars')} characters; the baseline's "
                             f"source run is not on disk, so the character position cannot be shown)")
        lb, ln = e.get("loglikelihoods"), now.get("loglikelihoods")
        if lb != ln:
            if isinstance(lb, list) and isinstance(ln, list) and len(lb) == len(ln):
                j = next(j for j, (x, y) in enumerate(zip(lb, ln)) if x != y)
                parts.append(f"loglikelihood[{j}] {lb[j]!r} vs now {ln[j]!r}")
            else:
                parts.append(f"loglikelihoods {lb!r} vs now {ln!r}")
        if parts:
            diffs.append(f"{where}: " + "; ".join(parts))
    extra = [r for r in rows if r.get("doc_index") not in base_by_index]
    n_diff = len(diffs) + len(extra)
    if len(diffs) > MAX_EXAMPLE_DIFFS:
        diffs = diffs[:MAX_EXAMPLE_DIFFS] + [f"`{task}`: … and {len(diffs) - MAX_EXAMPLE_DIFFS} more differing "
                                             f"example(s)"]
    if extra:
        diffs.append(f"`{task}`: {len(extra)} example(s) not in the baseline, first doc {extra[0].get('doc_id')!r}")
    return diffs, n_diff


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


def _stat_row(task: str, metric: str, base: dict[str, Any], now_v: float, now_se: float | None, n_now: int | None,
              n_base: int | None, *, k: float, z: float, confidence: float, rtol: float,
              rows_now: list[dict[str, Any]] | None, scale: float | None = None) -> tuple[Row, str | None]:
    """One metric under the stat rule; returns the row and, for a regression, the explanation. ``scale`` is the
    proportion scale (100 for JaSQuAD EM/F1; 1 when the run says so, e.g. lm-eval's 0-1 exact_match)."""
    base_v = base["value"]
    pct = f"{confidence:.0%}"
    scale = scale if scale is not None else PROPORTION_SCALE.get(metric)
    if scale is not None and n_now:
        target = base_v / scale * (1 - rtol)
        upper = wilson_upper(now_v / scale, n_now, z)
        edge = wilson_lowest_passing(target, n_now, z) * scale
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
        now_se, source = bootstrap_stderr(metric, rows_now), "bootstrap stderr"
    if se_base is None and now_se is not None and n_now and n_base:
        se_base = now_se * math.sqrt(n_now / n_base)  # same metric, same kind of model: variance ∝ 1/n
    if now_se is None or se_base is None:
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


STAT_RULE = ("stat: for acc, acc_norm, balanced_acc (0–1) and exact_match, f1 (0–100, divided by 100) a metric "
             "regresses iff the one-sided Wilson upper bound of the current value at the current n (z at "
             "`confidence`) is below baseline×(1−rtol); the band column shows the lowest current value that passes. "
             "Other metrics (mcc, macro_f1, anything with only value±stderr): regression iff now < baseline − "
             "|baseline|·rtol − k·√(se_now² + se_base²), stderr bootstrapped from the samples when results.json has "
             "none. Improvements never fail.")
EXACT_RULE = ("exact: every metric value and stderr must be == the baseline, and every example's prediction, prompt "
              "hash and loglikelihoods identical (to the last digit).")


def check_run(run_ref: str | os.PathLike[str], baseline_ref: str | os.PathLike[str], *, mode: Mode,
              k: float = 2.0, confidence: float = 0.95, rtol: float = 0.0,
              baselines_dir: Path = DEFAULT_BASELINES_DIR,
              baseline_run: str | os.PathLike[str] | None = None) -> CheckReport:
    """Check a stored run against a baseline (a file, a name under ``baselines_dir``, or another run).

    Per task of the baseline: first comparability (task present, task version, prompt version, shots, data
    sha256s; in exact mode also n), any mismatch -> exit 2 naming (task, field, baseline vs now). Then:

    * ``exact``: metric values (and stderrs) ``==``, and every example's prediction, prompt hash and
      loglikelihoods identical. The first differing examples are listed; for a changed prompt, the first differing
      character (offset, line, column, snippets) when the baseline's source run (or ``baseline_run``) is on disk.
    * ``stat``: proportion metrics (acc, acc_norm, balanced_acc; exact_match and f1 divided by 100) regress iff
      ``wilson_upper(now, n_now, z) < baseline * (1 - rtol)``, z the one-sided normal quantile at ``confidence``:
      the drop must exceed what noise at the *current* n explains, so a small ``--limit`` run gets a wide band.
      Other metrics (mcc, macro_f1): regress iff ``now < baseline - |baseline|*rtol - k*sqrt(se_now² + se_base²)``
      (stderr bootstrapped from the run's samples if missing; a missing baseline stderr is scaled from the current
      one by sqrt(n_now/n_base)). Improvements never fail.
    """
    if mode not in ("exact", "stat"):
        raise ValueError(f"mode must be 'exact' or 'stat', got {mode!r}")
    z = z_one_sided(confidence)
    run = load_run(run_ref)
    baseline = load_baseline(baseline_ref, baselines_dir=baselines_dir)
    override = load_run(baseline_run) if baseline_run is not None else None
    report = CheckReport(mode=mode, run=_display_path(run.path),
                         baseline=_display_path(baseline.path) if baseline.path else str(baseline_ref),
                         rule=EXACT_RULE if mode == "exact" else STAT_RULE)
    cfg = run.config
    for key, base_value in sorted((baseline.doc.get("model") or {}).items()):
        if cfg.get(key) != base_value:
            report.notes.append(f"model {key} differs: baseline {base_value!r} vs now {cfg.get(key)!r}")
    if baseline.doc.get("jbench_version") != cfg.get("jbench_version"):
        report.notes.append(f"jbench version: baseline {baseline.doc.get('jbench_version')!r} vs now "
                            f"{cfg.get('jbench_version')!r}")
    n_samples = run.data.get("n_samples") or {}
    for task, b in baseline.tasks.items():
        metrics: dict[str, Any] = b.get("metrics") or {}
        if task not in run.results:
            report.incompatible.append(Incompatibility(task, "task", "present", "missing from the run"))
            report.rows += [Row(task, m, v["value"], None, "—", "cannot compare") for m, v in metrics.items()]
            continue
        problems = _incompatibilities(task, b, run, mode)
        now_metrics = _metrics(run.results[task])
        for m in metrics:
            if m not in now_metrics:
                problems.append(Incompatibility(task, f"metric {m}", "present", "missing from the run"))
        if problems:
            report.incompatible += problems
            report.rows += [Row(task, m, v["value"], now_metrics.get(m, {}).get("value"), "—", "cannot compare")
                            for m, v in metrics.items()]
            continue
        extra = sorted(set(now_metrics) - set(metrics))
        if extra:
            report.notes.append(f"`{task}`: metric(s) not in the baseline, not checked: {', '.join(extra)}")
        n_now = n_samples.get(task)
        if mode == "stat" and n_now is not None and b.get("n") not in (None, n_now):
            report.notes.append(f"`{task}`: n is {n_now} now vs {b.get('n')} in the baseline (a --limit run?); "
                                f"the bands use the current n")
        rows_now: list[dict[str, Any]] | None = None
        if mode == "exact" or n_now is None or any(m not in PROPORTION_SCALE for m in metrics):
            try:
                rows_now = run.samples(task)
            except StoreError:
                rows_now = None
            if n_now is None and rows_now is not None:
                n_now = len(rows_now)
        for m, bv in metrics.items():
            nv = now_metrics[m]
            if mode == "exact":
                same = _same(nv["value"], bv["value"]) and _same(nv["stderr"], bv.get("stderr"))
                report.rows.append(Row(task, m, bv["value"], nv["value"], "exact (Δ = 0)",
                                       "pass" if same else "REGRESSION"))
                if not same:
                    report.explanations.append(
                        f"`{task}` {m}: value {bv['value']!r} vs now {nv['value']!r}, stderr {bv.get('stderr')!r} "
                        f"vs now {nv['stderr']!r}")
            else:
                row, why = _stat_row(task, m, bv, nv["value"], nv["stderr"], n_now, b.get("n"), k=k, z=z,
                                     confidence=confidence, rtol=rtol, rows_now=rows_now,
                                     scale=(run.config.get("metric_scale") or {}).get(m))
                report.rows.append(row)
                if why:
                    report.explanations.append(why)
                if row.verdict == "unchecked":
                    report.notes.append(f"`{task}` {m}: no stderr in the baseline or the run and none computable, "
                                        f"so it was not checked")
        if mode == "exact":
            if "examples" not in b:
                report.notes.append(f"`{task}`: the baseline has no per-example predictions (saved with "
                                    f"include_predictions=False); only metric values were compared")
            elif rows_now is None:
                report.incompatible.append(Incompatibility(task, "samples file", "present", "missing from the run"))
            else:
                diffs, n_diff = _compare_examples(task, b["examples"], rows_now, {})
                if any("prompt hash" in d for d in diffs):  # only then is the source run worth loading
                    diffs, n_diff = _compare_examples(task, b["examples"], rows_now,
                                                      _source_prompts(baseline, task, override))
                report.example_diffs += diffs
                report.rows.append(Row(task, "examples", len(b["examples"]), len(rows_now), "all identical",
                                       "REGRESSION" if n_diff else "pass", f"{n_diff} differ"))
    for task in run.results:
        if task not in baseline.tasks:
            report.notes.append(f"`{task}` is in the run but not in the baseline: not checked")
    return report
