"""The baseline file: what it records, how a run becomes one (``baseline save``), how one is found, read and
validated, and the readers of a run's results.json / samples files that ``check`` shares.

It exists apart from :mod:`jbench.baseline.check` so that the file format (``jbench-baseline/1``) can be read and
changed in one place, without the check's statistics in the way.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jbench.baseline.machine import run_machine
from jbench.errors import BaselineError, CheckInputError
from jbench.records import PREDICTION
from jbench.records import check_run_shape as check_records_shape
from jbench.results import (RESULTS_FILE, Run, StoreError, _atomic_write, load_run, parse_samples, resolve_run,
                            samples_path)

__all__ = ["DEFAULT_BASELINES_DIR", "FORMAT", "NAME_RE", "PROMPT_HASH_CHARS", "Baseline", "build_baseline",
           "check_run_shape", "load_baseline", "prompt_hash", "read_samples", "save_baseline", "validate_baseline"]

FORMAT = "jbench-baseline/1"
DEFAULT_BASELINES_DIR = Path("results/baselines")
PROMPT_HASH_CHARS = 16

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")

_REGENERATE = ("regenerate it with `jbench baseline save RUN --name NAME` (or restore the committed copy with "
               "`git checkout -- <file>`)")
_RERUN = "rerun the evaluation that wrote it (`jbench eval ...`, `--resume` keeps finished work) or pass another run"



def _type_name(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number" if _is_number(v) else type(v).__name__)


def _finite(v: Any) -> bool:
    return _is_number(v) and math.isfinite(v)


def _is_count(v: Any) -> bool:
    """A non-negative int (not a bool): doc indices, n, character counts."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _show(v: Any) -> str:
    """A value for a message: its type and, for a scalar, the value itself (a list or object could be huge)."""
    return _type_name(v) + ("" if isinstance(v, (dict, list, type(None))) else f" ({v!r})")


def _example_problem(ex: dict[str, Any], *, n_choices: int | None = None) -> tuple[str, str] | None:
    """The first malformed per-example field as (field, problem), or None: shared by the baseline's examples and
    the run's sample rows, so that what ``baseline save`` accepts is exactly what ``check`` can use.

    Why each rule: ``doc_index`` keys the comparison (a missing one would compare nothing); ``prediction`` is what
    exact mode compares (a missing one would read as a changed answer, exit 1, not as a broken file); the
    loglikelihoods are compared within a tolerance, which NaN/inf and wrong types defeat; ``n_choices`` (the row's
    own continuations) catches a list cut short; a prediction must index one of the scored choices."""
    if not _is_count(ex.get("doc_index")):
        return "doc_index", f"is {_show(ex.get('doc_index'))}, expected the document's index (a count)"
    if "doc_id" in ex and not (ex["doc_id"] is None or isinstance(ex["doc_id"], (str, int))
                               and not isinstance(ex["doc_id"], bool)):
        return "doc_id", f"is {_show(ex['doc_id'])}, expected a string or an integer"
    if PREDICTION not in ex:
        return PREDICTION, "is missing (every example records what the model answered)"
    pred = ex[PREDICTION]
    if not (pred is None or isinstance(pred, str) or _is_count(pred)):
        return PREDICTION, (f"is {_show(pred)}, expected a choice index (multiple choice), a string (generation) "
                            "or null")
    lls_key = "loglikelihoods"
    if lls_key in ex:
        lls = ex[lls_key]
        if not isinstance(lls, list):
            return lls_key, f"is {_show(lls)}, expected a list of numbers (one per choice)"
        for j, v in enumerate(lls):
            if not _finite(v):
                return f"{lls_key}[{j}]", (f"is {_show(v)}: a loglikelihood must be a finite number (NaN/inf means "
                                           "the model's scores overflowed or the file was edited)")
        if n_choices is not None and len(lls) != n_choices:
            return lls_key, f"has {len(lls)} value(s) for {n_choices} choice(s) (`continuations`)"
        if _is_count(pred) and pred >= len(lls):
            return PREDICTION, f"is choice {pred}, but only {len(lls)} choice(s) were scored (`{lls_key}`)"
    return None



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
                          "prediction": row.get(PREDICTION)}
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


def read_samples(run: Run, task: str, *, required: bool = True) -> list[dict[str, Any]] | None:
    """A task's per-example rows, with a malformed file reported as one error (file, line, what to do).

    ``None`` when the file is absent and ``required`` is False (stat mode only uses samples for n and bootstrap)."""
    path = samples_path(run.path, task)
    if not path.is_file():
        if not required:
            return None
        raise CheckInputError(f"the run has no samples file for task {task} (per-example rows are needed here)",
                              where=str(path), fix=f"{_RERUN}; or save/check with --no-predictions / --mode stat")
    rows: list[dict[str, Any]] = []
    seen: dict[int, int] = {}  # doc_index -> line
    for i, row in parse_samples(path, task, error=CheckInputError, fix=_RERUN):
        _check_row(row, task, path, i)
        if row["doc_index"] in seen:
            raise CheckInputError(f"samples line {i} of task {task}: field `doc_index` {row['doc_index']} repeats "
                                  f"line {seen[row['doc_index']]} (each document is scored once)",
                                  where=f"{path}:{i}", fix=_RERUN)
        seen[row["doc_index"]] = i
        rows.append(row)
    n = (run.data.get("n_samples") or {}).get(task) if isinstance(run.data, dict) else None
    if _is_count(n) and len(rows) != n:
        raise CheckInputError(f"the samples file of task {task} holds {len(rows)} example row(s), but results.json "
                              f"field `n_samples.{task}` says {n}"
                              + (" (the file is empty)" if not rows else "") + ": the run is incomplete or its "
                              "files do not belong together", where=str(path), fix=_RERUN)
    return rows


def _check_row(row: dict[str, Any], task: str, path: Path, line: int) -> None:
    """One sample row has the fields ``check`` and ``baseline save`` read, with usable types and finite numbers."""
    conts = row.get("continuations")
    if conts is not None and not isinstance(conts, list):
        problem: tuple[str, str] | None = ("continuations", f"is {_show(conts)}, expected a list of strings")
    elif row.get("prompt") is not None and not isinstance(row["prompt"], str):
        problem = ("prompt", f"is {_show(row['prompt'])}, expected a string")
    else:
        problem = _example_problem(row, n_choices=len(conts) if isinstance(conts, list) else None)
    if problem is not None:
        field, what = problem
        raise CheckInputError(f"samples line {line} of task {task}: field `{field}` {what}",
                              where=f"{path}:{line}", fix=_RERUN)


def check_run_shape(run: Run) -> None:
    """Raise one :class:`CheckInputError` naming the field if results.json does not have the shape jbench writes."""
    where = str(run.path / RESULTS_FILE)

    def bad(field: str, want: str, got: Any) -> CheckInputError:
        return CheckInputError(f"malformed results.json: field `{field}` should be {want}, got {_type_name(got)}"
                               + (f" ({got!r})" if not isinstance(got, (dict, list, type(None))) else ""),
                               where=where, fix=_RERUN)

    data = run.data
    check_records_shape(data, where, error=CheckInputError, fix=_RERUN)  # the structure every reader relies on
    for task, res in data["results"].items():
        for key, value in res.items():  # NaN/inf is the run's own number (a regression); < 0 is no stderr at all
            if key.endswith("_stderr") and _finite(value) and value < 0:
                raise bad(f"results.{task}.{key}", "a standard error (>= 0)", value)
    for task, n in (data.get("n_samples") or {}).items():
        if n is not None and not (isinstance(n, int) and not isinstance(n, bool) and n >= 0):
            raise bad(f"n_samples.{task}", "a count", n)


def _load_run_checked(ref: str | os.PathLike[str]) -> Run:
    """:func:`load_run` plus a shape check: every way results.json can be unusable is one JBenchError."""
    try:
        run = load_run(ref)
    except StoreError as err:
        if err.fix:
            raise
        raise CheckInputError(err.what, where=err.where, fix=_RERUN) from err  # every message says what to do
    except (OSError, UnicodeDecodeError) as err:
        raise CheckInputError(f"cannot read the run's results.json: {err}", where=str(ref), fix=_RERUN) from err
    check_run_shape(run)
    return run


def build_baseline(run: Run, name: str, *, include_predictions: bool = True) -> dict[str, Any]:
    """The baseline document for a loaded run (what :func:`save_baseline` writes).

    Besides the numbers it records the run's tokenizer identity (``check`` refuses a run whose tokenizer differs)
    and the machine / kernel path (an exact check that fails names both machines)."""
    check_run_shape(run)
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
            rows = sorted(read_samples(run, task) or [], key=lambda r: r["doc_index"])  # validated: unique counts
            entry["examples"] = [_example(r) for r in rows]
            if entry["n"] is None:
                entry["n"] = len(rows)
        tasks[task] = entry
    return {
        "format": FORMAT,
        "name": name,
        "source_run": _display_path(run.path),
        "model": {k: cfg.get(k) for k in ("model", "model_args", "variant", "dtype", "weights_fingerprint")},
        "tokenizer": cfg.get("tokenizer"),
        "machine": run_machine(cfg),
        "limit": cfg.get("limit"),
        "jbench_version": cfg.get("jbench_version"),
        "git_commit": cfg.get("git_commit"),
        "tasks": tasks,
    }


def validate_baseline(doc: Any, where: str, *, fix: str = _REGENERATE, what: str = "malformed baseline") -> None:
    """Raise one :class:`BaselineError` naming the field if ``doc`` is not a usable baseline.

    Usable means: the right format, at least one task, at least one metric per task, and finite numbers only (a
    NaN or inf in a baseline would make every comparison with it pass or fail meaninglessly)."""
    def bad(field: str, problem: str) -> BaselineError:
        return BaselineError(f"{what}: field `{field}` {problem}", where=where, fix=fix)

    if not isinstance(doc, dict):
        raise bad("(top level)", f"is {_type_name(doc)}, expected an object")
    if doc.get("format") != FORMAT:
        raise BaselineError(f"not a jbench baseline (format {doc.get('format')!r}, expected {FORMAT!r})",
                            where=where, fix=fix)
    tasks = doc.get("tasks")
    if not isinstance(tasks, dict):
        raise bad("tasks", f"is {_type_name(tasks)}" + ("" if isinstance(tasks, list) else f" ({tasks!r})")
                  + ", expected an object mapping task name -> entry")
    if not tasks:
        raise bad("tasks", "is empty: a baseline without tasks would pass any run")
    for key in ("model", "machine"):
        if doc.get(key) is not None and not isinstance(doc[key], dict):
            raise bad(key, f"is {_type_name(doc[key])}, expected an object")
    for task, entry in tasks.items():
        if not isinstance(entry, dict):
            raise bad(f"tasks.{task}", f"is {_type_name(entry)}, expected an object")
        metrics = entry.get("metrics")
        if not isinstance(metrics, dict) or not metrics:
            raise bad(f"tasks.{task}.metrics", "is missing or empty: nothing would be checked"
                      if not metrics else f"is {_type_name(metrics)}, expected an object")
        for m, mv in metrics.items():
            if not isinstance(mv, dict):
                raise bad(f"tasks.{task}.metrics.{m}", f"is {_type_name(mv)}, expected {{\"value\", \"stderr\"}}")
            if not _finite(mv.get("value")):
                raise bad(f"tasks.{task}.metrics.{m}.value", f"is {mv.get('value')!r}: a baseline value must be a "
                          "finite number")
            if mv.get("stderr") is not None and not (_finite(mv["stderr"]) and mv["stderr"] >= 0):
                raise bad(f"tasks.{task}.metrics.{m}.stderr", f"is {mv['stderr']!r}: must be a finite number >= 0 "
                          "(a standard error) or null")
        n = entry.get("n")
        if n is not None and not _is_count(n):
            raise bad(f"tasks.{task}.n", f"is {n!r}, expected a count or null")
        if entry.get("data_sha256") is not None and not isinstance(entry["data_sha256"], dict):
            raise bad(f"tasks.{task}.data_sha256", f"is {_type_name(entry['data_sha256'])}, expected an object")
        if "examples" in entry:
            _validate_examples(entry["examples"], task, n, bad)


def _validate_examples(examples: Any, task: str, n: int | None,
                       bad: Callable[[str, str], BaselineError]) -> None:
    """A task's ``examples`` in a baseline: one object per document (``n`` of them), each with the fields exact
    mode compares, and the same number of loglikelihoods in each (every jbench task scores a fixed set of choices
    per document, so an example whose list differs from the others' was cut or edited). Checked in every mode: a
    baseline that cannot serve both modes is broken, and saying so once is simpler than per mode."""
    field = f"tasks.{task}.examples"
    if not isinstance(examples, list):
        raise bad(field, f"is {_type_name(examples)}, expected a list")
    if n is not None and len(examples) != n:
        raise bad(field, f"holds {len(examples)} example(s), but `tasks.{task}.n` is {n}: examples were lost "
                  "or added by hand")
    seen: dict[int, int] = {}
    for i, ex in enumerate(examples):
        if not isinstance(ex, dict):
            raise bad(f"{field}[{i}]", f"is {_type_name(ex)}, expected an object")
        problem = _example_problem(ex)
        if problem is None and "prompt_sha" in ex and not isinstance(ex["prompt_sha"], str):
            problem = ("prompt_sha", f"is {_show(ex['prompt_sha'])}, expected a hex string")
        if problem is None and "prompt_chars" in ex and not _is_count(ex["prompt_chars"]):
            problem = ("prompt_chars", f"is {_show(ex['prompt_chars'])}, expected a count")
        if problem is not None:
            raise bad(f"{field}[{i}].{problem[0]}", problem[1])
        if ex["doc_index"] in seen:
            raise bad(f"{field}[{i}].doc_index", f"is {ex['doc_index']}, the same as {field}[{seen[ex['doc_index']]}]"
                      " (each document is recorded once)")
        seen[ex["doc_index"]] = i
    lengths = [len(ex["loglikelihoods"]) if "loglikelihoods" in ex else None for ex in examples]
    if len(set(lengths)) > 1:
        usual = max(set(lengths), key=lambda v: (lengths.count(v), -lengths.index(v)))
        i = next(i for i, v in enumerate(lengths) if v != usual)
        got = "is missing" if lengths[i] is None else f"has {lengths[i]} value(s)"
        want = "none" if usual is None else f"{usual} (one per choice)"
        raise bad(f"{field}[{i}].loglikelihoods", f"{got}, while {lengths.count(usual)} other example(s) of the "
                  f"task have {want}: the list was cut or edited")


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
    """Write ``<baselines_dir>/<name>.json`` from a stored run (atomically; overwrites: git shows the change).

    Refuses (exit 2) a bad name, a malformed run, and a run whose metrics are NaN/inf or absent: a baseline is what
    later runs are held to, so it must hold finite numbers for every task it names."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise BaselineError(f"invalid baseline name {name!r}: letters, digits and . _ + - only, starting with a "
                            f"letter or digit (it becomes a file name)", fix="use a plain name such as 'tiny-fp32'")
    run = _load_run_checked(run_ref)
    where = str(run.path / RESULTS_FILE)
    if not run.results:
        raise BaselineError("the run has no results (field `results` is empty): nothing to save", where=where,
                            fix=_RERUN)
    for task, res in run.results.items():
        for key, value in res.items():
            if _is_number(value) and not math.isfinite(value):
                raise BaselineError(f"cannot save this run as a baseline: field `results.{task}.{key}` is {value!r} "
                                    f"(a baseline must hold finite numbers)", where=where,
                                    fix="rerun the evaluation (find why it produced a non-finite number), then save")
    doc = build_baseline(run, name, include_predictions=include_predictions)
    validate_baseline(doc, where, what="cannot save this run as a baseline",
                      fix="rerun the evaluation so that every task has finite metrics, then save again")
    path = Path(baselines_dir) / f"{name}.json"
    try:
        _atomic_write(path, [_dumps(doc), "\n"])
    except OSError as err:  # e.g. --baselines-dir is a file: mkdir fails before the atomic write's own handling
        raise BaselineError(f"cannot write the baseline: {err.strerror or err}", where=str(path),
                            fix="pass a writable directory as --baselines-dir") from err
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
    """A baseline file, a baseline name under ``baselines_dir``, or a stored run (compared as if just saved).

    Every way the file can be unusable (not JSON, wrong shape, NaN/inf numbers) is one :class:`BaselineError`."""
    p = Path(ref)
    candidates = [p] if p.suffix == ".json" and p.name != RESULTS_FILE else []
    candidates.append(Path(baselines_dir) / f"{ref}.json")
    for c in candidates:
        if c.is_file():
            try:
                doc = json.loads(c.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise BaselineError(f"baseline is not valid JSON: {err}", where=str(c), fix=_REGENERATE) from err
            except (OSError, UnicodeDecodeError) as err:
                raise BaselineError(f"cannot read the baseline: {err}", where=str(c), fix=_REGENERATE) from err
            validate_baseline(doc, str(c))
            return Baseline(doc, c)
    try:
        resolve_run(ref)
    except StoreError:
        raise BaselineError(f"no baseline or run named {ref!s}",
                            where=", ".join(str(c) for c in candidates),
                            fix="save one with `jbench baseline save <run> --name NAME` (see results/baselines/)")
    run = _load_run_checked(ref)
    doc = build_baseline(run, run.path.name)
    validate_baseline(doc, str(run.path / RESULTS_FILE), what="this run cannot serve as a baseline",
                      fix="rerun it so that every task has finite metrics, or compare against another run")
    return Baseline(doc, None)

