"""Benchmark-number regression gate: freeze a run as a reviewable baseline, then check later runs against it.

A baseline (``results/baselines/<name>.json``, committed to git) holds what decides whether two runs are
comparable (task version, prompt version, shots, data sha256s), the numbers themselves (value, stderr, n per
metric), the model identity, and, for ``exact`` mode, one line per example (doc_id, prediction, prompt hash,
loglikelihoods as repr floats) so that a changed prompt or score shows up as a one-line diff in review.

Two check modes:

* ``exact``: for refactors that must not move anything. Every metric value and every per-example prediction and
  prompt hash must be ``==``; per-example loglikelihoods must agree within ``LL_ATOL`` (absolute), because fp32 CPU
  kernels are not bit-identical across CPU types, thread counts and math-library versions (see ``LL_ATOL``).
* ``stat``: for changes that may legitimately move numbers a little (library upgrades, another GPU, a quick
  ``--limit`` run). A metric fails only if the drop is larger than noise at the run's n explains; see
  :func:`check_run` for the exact rule. Improvements never fail.

The gate fails closed. Exit codes:

* 0: pass.
* 1: a number regressed, and only that: a metric dropped (stat), moved (exact), or is NaN/inf in the run (a run
  that produced no usable number where the baseline has one is the worst regression there is, not a format error).
* 2: cannot compare, or the input is unusable: different data, task/prompt version, shots or tokenizer; a task or
  metric missing from the run; a malformed or non-finite baseline; a malformed results.json or samples file; an
  invalid option. Malformed inputs raise :class:`jbench.errors.JBenchError` (one message: what, where, what to do).
  2 wins over 1 because a comparison of different things has to be fixed before any verdict means anything;
  regressions found in the comparable tasks are still listed in the report.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any, Literal

from jbench.errors import JBenchError
from jbench.records import GOLD, PREDICTION
from jbench.results import RESULTS_FILE, Run, StoreError, _atomic_write, load_run, resolve_run, samples_path

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

#: Exact mode's tolerance on per-example loglikelihoods (absolute, in nats). fp32 CPU kernels are not bit-identical
#: across CPU types (AVX2 / AVX-512 / AMX), thread counts or MKL/oneDNN versions: the committed CI baseline (made on
#: an AMD EPYC) and a run on an Intel Xeon differ in the 7th significant digit (|Δ| ≈ 2e-6 on a -39.8 sum). Measured
#: across kernel paths on one machine (ATen AVX512 / AVX2 / scalar, MKL dispatch, 1 vs 2 threads) the largest
#: |Δ| was a few 1e-6 (see tests/test_gate.py). 1e-4 is the fidelity bound jbench holds against the reference harness,
#: so a difference inside it is not a behaviour change; a changed prompt, token or score moves a loglikelihood by far
#: more (and changes its prompt hash). Metrics and predictions stay exact, so a flipped argmax still fails.
LL_ATOL = 1e-4

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")

Mode = Literal["exact", "stat"]

_REGENERATE = ("regenerate it with `jbench baseline save RUN --name NAME` (or restore the committed copy with "
               "`git checkout -- <file>`)")
_RERUN = "rerun the evaluation that wrote it (`jbench eval ...`, `--resume` keeps finished work) or pass another run"


class BaselineError(JBenchError):
    """A baseline cannot be written, found or read."""


class CheckInputError(JBenchError):
    """An input of ``check`` / ``baseline save`` is unusable: a malformed run or samples file, or an invalid option.

    Exit 2 (never 1): exit 1 means that a number regressed, and CI must not report a broken file as a regression."""


def _type_name(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number" if _is_number(v) else type(v).__name__)


def _finite(v: Any) -> bool:
    return _is_number(v) and math.isfinite(v)


# ----------------------------------------------------------------------------------------------------------------
# The machine (CPU / BLAS path) a run was made on
# ----------------------------------------------------------------------------------------------------------------

#: environment variables that switch the CPU kernels (ISA dispatch, thread counts, MKL reproducibility mode)
KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR",
              "MKL_DEBUG_CPU_TYPE", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


def _cpu_info() -> tuple[str | None, list[str]]:
    """CPU model name and the ISA extensions that matter for fp32 kernels, from /proc/cpuinfo (Linux)."""
    model, flags = None, []
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return (platform.processor() or None), flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            have = set(value.split())
            flags = [f for f in _ISA_FLAGS if f in have]
    return model or platform.processor() or None, flags


def kernel_path_record() -> dict[str, Any]:
    """Which CPU / math-library path this process's fp32 kernels take: what decides the last digits of a
    loglikelihood. Stored in results.json (``config.environment.kernel_path``) and in baselines, so that an exact
    check names both machines when it fails."""
    cpu, isa = _cpu_info()
    rec: dict[str, Any] = {"cpu": cpu, "isa": isa, "arch": platform.machine(),
                           "env": {k: os.environ[k] for k in KERNEL_ENV if k in os.environ}}
    try:
        import torch
    except ImportError:
        return rec
    rec["torch"] = torch.__version__
    rec["num_threads"] = torch.get_num_threads()
    try:
        rec["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        rec["cpu_capability"] = None
    config = ""
    try:
        config = torch.__config__.show()
    except (AttributeError, RuntimeError):
        pass
    mkl = re.search(r"Math Kernel Library Version ([\w.]+)", config)
    onednn = re.search(r"(?:MKL-DNN|oneDNN) (v[\w.]+)", config)
    rec["mkl"] = mkl.group(1) if mkl else ("available" if torch.backends.mkl.is_available() else None)
    rec["onednn"] = onednn.group(1) if onednn else None
    return rec


def _run_machine(cfg: dict[str, Any]) -> dict[str, Any] | None:
    """The kernel path a run recorded; for runs made before it was recorded, what ``environment`` has."""
    env = cfg.get("environment")
    if not isinstance(env, dict):
        return None
    kp = env.get("kernel_path")
    if isinstance(kp, dict):
        return kp
    libs = env.get("libraries") if isinstance(env.get("libraries"), dict) else {}
    return {"cpu": None, "arch": env.get("machine"), "torch": libs.get("torch"),
            "num_threads": env.get("torch_num_threads"),
            "env": env.get("env") if isinstance(env.get("env"), dict) else {}}


def describe_machine(rec: Any) -> str:
    """One line naming a machine's CPU and kernel path (for reports)."""
    if not isinstance(rec, dict):
        return "not recorded (made before jbench recorded machines)"
    parts = [str(rec.get("cpu") or "CPU model not recorded")]
    if isinstance(rec.get("isa"), list) and rec["isa"]:
        parts.append("+".join(str(f) for f in rec["isa"]))
    for key, label in (("cpu_capability", "ATen"), ("torch", "torch"), ("mkl", "MKL"), ("onednn", "oneDNN")):
        if rec.get(key):
            parts.append(f"{label} {rec[key]}")
    if rec.get("num_threads") is not None:
        parts.append(f"{rec['num_threads']} thread" + ("" if rec["num_threads"] == 1 else "s"))
    env = rec.get("env") if isinstance(rec.get("env"), dict) else {}
    parts += [f"{k}={v}" for k, v in sorted(env.items())]
    return ", ".join(parts)


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
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CheckInputError(f"cannot read the samples file of task {task}: {err}", where=str(path),
                              fix=_RERUN) from err
    rows: list[dict[str, Any]] = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise CheckInputError(f"samples line {i} of task {task} is not valid JSON ({err.msg}, column "
                                  f"{err.colno}): the file was cut short or edited", where=f"{path}:{i}",
                                  fix=_RERUN) from err
        if not isinstance(row, dict):
            raise CheckInputError(f"samples line {i} of task {task} is {_type_name(row)}, not an object (one "
                                  f"example per line)", where=f"{path}:{i}", fix=_RERUN)
        rows.append(row)
    return rows


def check_run_shape(run: Run) -> None:
    """Raise one :class:`CheckInputError` naming the field if results.json does not have the shape jbench writes."""
    where = str(run.path / RESULTS_FILE)

    def bad(field: str, want: str, got: Any) -> CheckInputError:
        return CheckInputError(f"malformed results.json: field `{field}` should be {want}, got {_type_name(got)}"
                               + (f" ({got!r})" if not isinstance(got, (dict, list, type(None))) else ""),
                               where=where, fix=_RERUN)

    data = run.data
    if not isinstance(data, dict):
        raise bad("(top level)", "an object", data)
    if not isinstance(data.get("results"), dict):
        raise bad("results", "an object mapping task name -> metrics", data.get("results"))
    for task, res in data["results"].items():
        if not isinstance(res, dict):
            raise bad(f"results.{task}", "an object mapping metric -> value", res)
    for key in ("versions", "config", "n_samples"):
        if key in data and not isinstance(data[key], dict):
            raise bad(key, "an object", data[key])
    for task, n in (data.get("n_samples") or {}).items():
        if n is not None and not (isinstance(n, int) and not isinstance(n, bool) and n >= 0):
            raise bad(f"n_samples.{task}", "a count", n)
    cfg = data.get("config") or {}
    for key, types, want in (("tasks", (list,), "a list"), ("num_fewshot", (list, dict), "a list or an object"),
                             ("prompt_versions", (dict,), "an object"), ("data", (dict,), "an object"),
                             ("metric_scale", (dict,), "an object"), ("environment", (dict,), "an object")):
        if cfg.get(key) is not None and not isinstance(cfg[key], types):
            raise bad(f"config.{key}", want, cfg[key])
    for task, files in (cfg.get("data") or {}).items():
        if files is not None and not isinstance(files, list):
            raise bad(f"config.data.{task}", "a list of files", files)


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
            rows = read_samples(run, task) or []
            rows = sorted(rows, key=lambda r: (not _is_number(r.get("doc_index")), r.get("doc_index")
                                               if _is_number(r.get("doc_index")) else 0))
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
        "machine": _run_machine(cfg),
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
            if mv.get("stderr") is not None and not _finite(mv["stderr"]):
                raise bad(f"tasks.{task}.metrics.{m}.stderr", f"is {mv['stderr']!r}: must be a finite number or null")
        n = entry.get("n")
        if n is not None and not (isinstance(n, int) and not isinstance(n, bool) and n >= 0):
            raise bad(f"tasks.{task}.n", f"is {n!r}, expected a count or null")
        if entry.get("data_sha256") is not None and not isinstance(entry["data_sha256"], dict):
            raise bad(f"tasks.{task}.data_sha256", f"is {_type_name(entry['data_sha256'])}, expected an object")
        examples = entry.get("examples")
        if examples is None:
            continue
        if not isinstance(examples, list):
            raise bad(f"tasks.{task}.examples", f"is {_type_name(examples)}, expected a list")
        for i, ex in enumerate(examples):
            if not isinstance(ex, dict):
                raise bad(f"tasks.{task}.examples[{i}]", f"is {_type_name(ex)}, expected an object")
            lls = ex.get("loglikelihoods")
            if lls is not None and not (isinstance(lls, list) and all(_is_number(v) for v in lls)):
                raise bad(f"tasks.{task}.examples[{i}].loglikelihoods", "must be a list of numbers")


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


# ----------------------------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------------------------

def z_one_sided(confidence: float) -> float:
    """The one-sided normal quantile at ``confidence`` (which must be in (0.5, 1): below 0.5 the band would sit
    above the baseline and fail every run)."""
    if not (_is_number(confidence) and 0.5 < confidence < 1.0):
        raise CheckInputError(f"confidence must be in (0.5, 1), got {confidence!r}",
                              fix="pass e.g. --confidence 0.95 (a one-sided confidence level, not a percentage)")
    return NormalDist().inv_cdf(confidence)


def validate_options(mode: Any, k: Any, confidence: Any, rtol: Any) -> float:
    """Check the options of :func:`check_run` (so that the API, not only the CLI, refuses nonsense); returns z."""
    if mode not in ("exact", "stat"):
        raise CheckInputError(f"mode must be 'exact' or 'stat', got {mode!r}",
                              fix="use --mode exact (same deterministic setup) or --mode stat (n-aware noise bands)")
    if not (_finite(k) and k > 0):
        raise CheckInputError(f"k must be a positive finite number, got {k!r}",
                              fix="pass e.g. --k 2 (the band is k combined standard errors)")
    if not (_finite(rtol) and 0 <= rtol < 1):
        raise CheckInputError(f"rtol must be in [0, 1), got {rtol!r}",
                              fix="pass e.g. --rtol 0.02 (a relative drop tolerated on top of noise), or 0")
    return z_one_sided(confidence)


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
    pairs = [(r.get(GOLD), r.get(PREDICTION)) for r in rows]
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
    tokenizer_diffs: list[str] = field(default_factory=list)
    tokenizer_allowed: bool = False
    machines: tuple[str, str] | None = None  # (baseline, now), shown in exact mode

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == "REGRESSION"]

    @property
    def tokenizer_refused(self) -> bool:
        return bool(self.tokenizer_diffs) and not self.tokenizer_allowed

    @property
    def exit_code(self) -> int:
        if self.incompatible or self.tokenizer_refused:
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
               f"run `{self.run}` vs baseline `{self.baseline}`", ""]
        if self.tokenizer_diffs:
            if self.tokenizer_refused:
                out += ["### Tokenizer differs: cannot compare", "",
                        "The run was tokenized differently from the baseline, so any difference could be the "
                        "tokenizer's. Re-save the baseline from a run with this tokenizer, or pass "
                        "--allow-tokenizer-mismatch (allow_tokenizer_mismatch=True) to compare anyway.", ""]
            else:
                out += ["### WARNING: tokenizer differs (compared anyway, allow_tokenizer_mismatch)", "",
                        "Differences below may be the tokenizer's, not the model's.", ""]
            out += [f"- {d}" for d in self.tokenizer_diffs] + [""]
        if self.machines is not None:
            out += [f"baseline machine: {self.machines[0]}", "", f"this run's machine: {self.machines[1]}", ""]
        out += ["| task | metric | baseline | now | Δ | allowed band | verdict |",
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
    if not _finite(now_v) or (now_se is not None and not _finite(now_se)):
        what = f"value {now_v!r}" if not _finite(now_v) else f"stderr {now_se!r}"
        why = (f"`{task}` {metric}: {what} in the run: not a finite number, which is never a pass (the run "
               f"produced no usable number where the baseline has {base_v:.4f})")
        return Row(task, metric, base_v, now_v, "finite", "REGRESSION"), why
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

    In both modes a NaN or inf metric (value or stderr) in the run is a REGRESSION (exit 1): never a pass.
    """
    from jbench.models.tokenizer import identity_diff

    z = validate_options(mode, k, confidence, rtol)
    baseline = load_baseline(baseline_ref, baselines_dir=baselines_dir)
    run = _load_run_checked(run_ref)
    override = _load_run_checked(baseline_run) if baseline_run is not None else None
    report = CheckReport(mode=mode, run=_display_path(run.path),
                         baseline=_display_path(baseline.path) if baseline.path else str(baseline_ref),
                         rule=EXACT_RULE if mode == "exact" else STAT_RULE)
    cfg = run.config
    report.tokenizer_diffs = identity_diff(baseline.doc.get("tokenizer"), cfg.get("tokenizer"))
    report.tokenizer_allowed = bool(allow_tokenizer_mismatch)
    if report.tokenizer_diffs and baseline.doc.get("tokenizer") is None:
        report.tokenizer_diffs.append("the baseline records no tokenizer identity (saved before jbench recorded "
                                      "one): re-save it from a current run")
    if mode == "exact":
        report.machines = (describe_machine(baseline.doc.get("machine")), describe_machine(_run_machine(cfg)))
    for key, base_value in sorted((baseline.doc.get("model") or {}).items()):
        if cfg.get(key) != base_value:
            report.notes.append(f"model {key} differs: baseline {base_value!r} vs now {cfg.get(key)!r}")
    if baseline.doc.get("jbench_version") != cfg.get("jbench_version"):
        report.notes.append(f"jbench version: baseline {baseline.doc.get('jbench_version')!r} vs now "
                            f"{cfg.get('jbench_version')!r}")
    n_samples = run.data.get("n_samples") or {}
    max_ll_delta: float | None = None
    for task, b in baseline.tasks.items():
        metrics: dict[str, Any] = b["metrics"]
        if task not in run.results:
            report.incompatible.append(Incompatibility(task, "task", "present", "missing from the run"))
            report.rows += [Row(task, m, v["value"], None, "—", "cannot compare") for m, v in metrics.items()]
            continue
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
            continue
        extra = sorted(set(now_metrics) - set(metrics))
        if extra:
            report.notes.append(f"`{task}`: metric(s) not in the baseline, not checked: {', '.join(extra)}")
        n_now = n_samples.get(task)
        if mode == "stat" and n_now is not None and b.get("n") not in (None, n_now):
            report.notes.append(f"`{task}`: n is {n_now} now vs {b.get('n')} in the baseline (a --limit run?); "
                                f"the bands use the current n")
        rows_now: list[dict[str, Any]] | None = None
        if mode == "exact" and "examples" in b:
            rows_now = read_samples(run, task, required=True)
        elif n_now is None or any(m not in PROPORTION_SCALE for m in metrics):
            rows_now = read_samples(run, task, required=False)
        if n_now is None and rows_now is not None:
            n_now = len(rows_now)
        for m, bv in metrics.items():
            nv = now_metrics[m]
            if mode == "exact":
                finite = _finite(nv["value"]) and (nv["stderr"] is None or _finite(nv["stderr"]))
                same = finite and nv["value"] == bv["value"] and nv["stderr"] == bv.get("stderr")
                report.rows.append(Row(task, m, bv["value"], nv["value"], "exact (Δ = 0)",
                                       "pass" if same else "REGRESSION"))
                if not same:
                    report.explanations.append(
                        f"`{task}` {m}: value {bv['value']!r} vs now {nv['value']!r}, stderr {bv.get('stderr')!r} "
                        f"vs now {nv['stderr']!r}" + ("" if finite else " (not a finite number: never a pass)"))
            else:
                scale = (cfg.get("metric_scale") or {}).get(m)
                row, why = _stat_row(task, m, bv, nv["value"], nv["stderr"], n_now, b.get("n"), k=k, z=z,
                                     confidence=confidence, rtol=rtol, rows_now=rows_now,
                                     scale=scale if _finite(scale) and scale > 0 else None)
                report.rows.append(row)
                if why:
                    report.explanations.append(why)
                if row.verdict == "unchecked":  # a drop that cannot be judged is not a pass (fail closed)
                    report.incompatible.append(Incompatibility(
                        task, f"{m} stderr (stat mode needs one to judge a drop)", "none",
                        "none, and not computable from the run's samples (add the samples file or use --mode exact)"))
        if mode == "exact":
            if "examples" not in b:
                report.notes.append(f"`{task}`: the baseline has no per-example predictions (saved with "
                                    f"include_predictions=False); only metric values were compared")
            else:
                assert rows_now is not None  # read_samples(required=True) raised otherwise
                diffs, n_diff, delta = _compare_examples(task, b["examples"], rows_now, {})
                if any("prompt hash" in d for d in diffs):  # only then is the source run worth loading
                    diffs, n_diff, delta = _compare_examples(task, b["examples"], rows_now,
                                                             _source_prompts(baseline, task, override))
                if any(isinstance(e.get("loglikelihoods"), list) for e in b["examples"]):
                    max_ll_delta = max(max_ll_delta or 0.0, delta)
                report.example_diffs += diffs
                report.rows.append(Row(task, "examples", len(b["examples"]), len(rows_now),
                                       f"identical (LL ±{LL_ATOL:g})", "REGRESSION" if n_diff else "pass",
                                       f"{n_diff} differ"))
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
