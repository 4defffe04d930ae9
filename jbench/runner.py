"""A run = tasks × one scorer: build requests, score them, compute metrics, keep every example.

Task order follows the reference: all loglikelihood tasks first, then generation tasks, each group in the order
given. Each task's samples file is written as soon as the task finishes; results.json is written last, so a run
directory with a results.json is always complete.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from jbench import __version__
from jbench.data import load_split
from jbench.metrics import aggregate, exact_match_example, f1_example, multiple_choice_example
from jbench.models.base import GenerationRequest, LoglikelihoodRequest, Scorer, encode_context
from jbench.progress import TaskProgress
from jbench.records import GenRow, MCRow
from jbench.requests import Instance, build_instances
from jbench.results import StagedRun, write_json
from jbench.tasks import TaskSpec

# Documents per scorer call: small enough for a smooth progress bar and bounded memory, large enough that the
# scorer can batch across documents. The request cache commits one chunk per transaction, and the chunk decides
# the batch composition, so a resumed run must use the same value (JBENCH_CHUNK_DOCS overrides it, for tests).
CHUNK_DOCS = 64
CHUNK_DOCS_ENV = "JBENCH_CHUNK_DOCS"


def chunk_docs() -> int:
    """Documents per scorer call: ``$JBENCH_CHUNK_DOCS`` if set, else :data:`CHUNK_DOCS`."""
    raw = os.environ.get(CHUNK_DOCS_ENV)
    if raw is None or raw.strip() == "":
        return CHUNK_DOCS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        from jbench.errors import JBenchError

        raise JBenchError(f"{CHUNK_DOCS_ENV} must be a positive integer, got {raw!r}", where="environment",
                          fix=f"unset {CHUNK_DOCS_ENV} (default {CHUNK_DOCS}) or set it to e.g. 64")
    return value


@dataclass(frozen=True)
class TaskRun:
    task: TaskSpec
    num_fewshot: int


@dataclass
class RunSettings:
    """Everything that decides which requests are built (the scorer decides how they are scored)."""

    tasks: list[TaskRun]
    data_dir: Path
    limit: int | float | None = None
    allow_data_mismatch: bool = False
    seeds: dict[str, int] = field(default_factory=lambda: {"shuffle": 42, "python": 1234, "numpy": 1234})


PLAN_FILE = "run.json"


@dataclass
class RunPlan:
    """What a run was asked to do; stored first in the run directory so ``--resume`` can redo it exactly."""

    model: dict[str, Any]
    tasks: list[str]
    num_fewshot: list[int]
    data_dir: str
    limit: int | float | None = None
    allow_data_mismatch: bool = False
    preset: dict[str, Any] | None = None

    def save(self, run_dir: Path) -> None:
        write_json(run_dir / PLAN_FILE, asdict(self))

    @classmethod
    def load(cls, run_dir: Path) -> "RunPlan":
        import json

        from jbench.errors import StoreError

        path = run_dir / PLAN_FILE
        if not path.is_file():
            raise StoreError("nothing to resume: the run directory has no run.json", where=str(run_dir),
                             fix="start the run with `jbench eval` (it resumes automatically in the same --run-name)")
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as err:
            raise StoreError(f"run.json cannot be read as a run plan: {err}", where=str(path),
                             fix="start the run again with `jbench eval` and the options you want") from err


def ordered(tasks: Sequence[TaskRun]) -> list[TaskRun]:
    """Loglikelihood tasks first, then generation tasks (the reference groups results by request type)."""
    return [t for t in tasks if not t.task.is_generation] + [t for t in tasks if t.task.is_generation]


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment_record() -> dict[str, Any]:
    """Library versions and platform facts that can move numbers (stored in results.json)."""
    import importlib.metadata as md

    libs = {}
    for name in ("torch", "transformers", "tokenizers", "sentencepiece", "numpy", "scikit-learn", "fugashi",
                 "unidic-lite", "neologdn", "emoji", "gptqmodel", "bitsandbytes", "llama-cpp-python", "lm-eval"):
        try:
            libs[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    rec: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform(),
                           "machine": platform.machine(), "libraries": libs}
    try:
        import torch

        rec["torch_deterministic_algorithms"] = torch.are_deterministic_algorithms_enabled()
        rec["torch_num_threads"] = torch.get_num_threads()
        rec["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            rec["cuda_device"] = torch.cuda.get_device_name(0)
            rec["cudnn_deterministic"] = torch.backends.cudnn.deterministic
        rec["torch_backends"] = torch_backend_flags()
    except ImportError:
        pass
    # environment variables that change kernels, thread counts or hashing (only those that are set)
    rec["env"] = {k: os.environ[k] for k in DETERMINISM_ENV if k in os.environ}
    from jbench.baseline import kernel_path_record  # CPU / MKL / oneDNN path: named when an exact check fails

    rec["kernel_path"] = kernel_path_record()
    return rec


DETERMINISM_ENV = ("CUBLAS_WORKSPACE_CONFIG", "CUDA_VISIBLE_DEVICES", "PYTHONHASHSEED", "OMP_NUM_THREADS",
                   "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TOKENIZERS_PARALLELISM", "NVIDIA_TF32_OVERRIDE",
                   "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA",
                   "DNNL_MAX_CPU_ISA", CHUNK_DOCS_ENV)


def torch_backend_flags() -> dict[str, Any]:
    """``torch.backends`` switches that decide which (possibly non-deterministic or reduced-precision) kernels run."""
    import warnings

    import torch

    flags: dict[str, Any] = {}

    def put(name: str, get: Callable[[], Any]) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                value = get()
        except Exception:  # noqa: BLE001 - a flag this torch build lacks is simply not recorded
            return
        flags[name] = value if isinstance(value, (bool, int, float, str, type(None))) else str(value)

    put("deterministic_algorithms", torch.are_deterministic_algorithms_enabled)
    put("deterministic_algorithms_warn_only", torch.is_deterministic_algorithms_warn_only_enabled)
    put("float32_matmul_precision", torch.get_float32_matmul_precision)
    put("num_interop_threads", torch.get_num_interop_threads)
    put("cpu_capability", lambda: torch.backends.cpu.get_cpu_capability())
    put("mkldnn_enabled", lambda: torch.backends.mkldnn.enabled)
    put("cudnn_enabled", lambda: torch.backends.cudnn.enabled)
    put("cudnn_deterministic", lambda: torch.backends.cudnn.deterministic)
    put("cudnn_benchmark", lambda: torch.backends.cudnn.benchmark)
    put("cudnn_allow_tf32", lambda: torch.backends.cudnn.allow_tf32)
    put("cuda_matmul_allow_tf32", lambda: torch.backends.cuda.matmul.allow_tf32)
    put("cuda_matmul_allow_fp16_reduced_precision_reduction",
        lambda: torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction)
    put("cuda_matmul_allow_bf16_reduced_precision_reduction",
        lambda: torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction)
    put("sdp_flash", torch.backends.cuda.flash_sdp_enabled)
    put("sdp_mem_efficient", torch.backends.cuda.mem_efficient_sdp_enabled)
    put("sdp_math", torch.backends.cuda.math_sdp_enabled)
    return flags


def _mc_rows(insts: list[Instance], lls: list[float], strict: bool) -> list[dict[str, Any]]:
    rows, i = [], 0
    for inst in insts:
        conts = inst.continuations or []
        ll = lls[i: i + len(conts)]
        i += len(conts)
        m = multiple_choice_example(ll, int(inst.gold or 0), conts, strict=strict)
        rows.append(MCRow(doc_index=inst.doc_index, doc_id=inst.doc_id, native_index=inst.native_index,
                          shot_ids=inst.shot_ids, prompt=inst.context, continuations=conts, loglikelihoods=ll,
                          prediction=m["pred"], gold=inst.gold, acc=m["acc"], acc_norm=m["acc_norm"],
                          notes=inst.notes).to_json())
    return rows


def _gen_rows(insts: list[Instance], outs: list[str]) -> list[dict[str, Any]]:
    rows = []
    for inst, out in zip(insts, outs):
        golds = inst.golds or []
        rows.append(GenRow(doc_index=inst.doc_index, doc_id=inst.doc_id, native_index=inst.native_index,
                           shot_ids=inst.shot_ids, prompt=inst.context, until=inst.until,
                           max_gen_tokens=inst.max_gen_tokens, prediction=out, golds=golds,
                           exact_match=exact_match_example(out, golds), f1=f1_example(out, golds),
                           notes=inst.notes).to_json())
    return rows


def _count_truncated(scorer: Scorer, insts: list[Instance]) -> int:
    """Prompts longer than the model context (the scorer left-truncates them, as the reference does)."""
    n = 0
    for inst in insts:
        ctx = len(encode_context(scorer.tokenizer, inst.context))
        if inst.continuations is not None:
            longest = max((len(scorer.tokenizer.encode(c)) for c in inst.continuations), default=0)
            n += ctx + longest > scorer.max_length + 1
        else:
            n += ctx > scorer.max_length - (inst.max_gen_tokens or 0)
    return n


def score_task(scorer: Scorer, task: TaskSpec, insts: list[Instance],
               tick: Callable[[int], None] = lambda n: None, chunk_size: int | None = None) -> list[dict[str, Any]]:
    """Score every instance, in chunks of documents so progress and memory stay smooth."""
    rows: list[dict[str, Any]] = []
    size = chunk_size or chunk_docs()
    for start in range(0, len(insts), size):
        chunk = insts[start: start + size]
        if task.is_generation:
            reqs = [GenerationRequest(i.context, i.until or "\n", int(i.max_gen_tokens or 0)) for i in chunk]
            rows += _gen_rows(chunk, scorer.generate(reqs))
        else:
            reqs2 = [LoglikelihoodRequest(i.context, c) for i in chunk for c in (i.continuations or [])]
            rows += _mc_rows(chunk, scorer.loglikelihood(reqs2), task.strict)
        tick(len(chunk))
    return rows


def task_metrics(task: TaskSpec, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate per-example rows into the reference's metric dict (``metric``, ``metric_stderr``)."""
    out: dict[str, Any] = {}
    for name in task.metrics:
        mv = aggregate(name, rows)
        out[name] = mv.value
        if mv.stderr is not None:
            out[f"{name}_stderr"] = mv.stderr
    return out


def run_tasks(scorer: Scorer, settings: RunSettings, run_dir: Path, *, model_record: dict[str, Any],
              show_progress: bool = True, run_plan: dict[str, Any] | None = None,
              resources: Callable[[], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Evaluate every task and write the run directory; returns the results.json content.

    The new samples and results.json replace the previous ones only once every task has finished (see
    :class:`jbench.results.StagedRun`), so a failed rerun leaves the earlier results as they were."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for tmp in run_dir.glob(".*.tmp"):  # temp files of atomic writes a killed run left behind
        tmp.unlink(missing_ok=True)
    chunk = chunk_docs()
    results: dict[str, Any] = {}
    versions: dict[str, float] = {}
    n_samples: dict[str, int] = {}
    data: dict[str, Any] = {}
    timings: dict[str, float] = {}
    truncated: dict[str, int] = {}
    notes: list[str] = []
    t_run = time.perf_counter()
    plan = ordered(settings.tasks)
    prepared = []
    for tr in plan:  # load and build everything first: bad input fails before any model time is spent
        task = tr.task
        val = load_split(task.dataset, "validation", settings.data_dir, allow_mismatch=settings.allow_data_mismatch)
        train = (load_split(task.dataset, "train", settings.data_dir, allow_mismatch=settings.allow_data_mismatch)
                 if tr.num_fewshot > 0 else None)
        insts = build_instances(task, val.docs, train.docs if train else None, tr.num_fewshot,
                                limit=settings.limit, encode=scorer.tokenizer.encode, max_length=scorer.max_length)
        if any(inst.context == "" for inst in insts):
            encode_context(scorer.tokenizer, "")  # an empty context needs EOS: fail now, not after other tasks
        data[task.name] = [asdict(f) for f in val.files + (train.files if train else [])]
        notes += [f"{task.name}: {n}" for n in val.notes + (train.notes if train else [])]
        prepared.append((tr, insts))
    staged = StagedRun(run_dir)
    try:
        with TaskProgress(enabled=show_progress) as progress:
            for tr, insts in prepared:
                task = tr.task
                t0 = time.perf_counter()
                tick = progress.task(task.name, len(insts))
                rows = score_task(scorer, task, insts, tick, chunk_size=chunk)
                staged.write_samples(task.name, rows)
                results[task.name] = task_metrics(task, rows)
                versions[task.name] = task.version_number
                n_samples[task.name] = len(rows)
                truncated[task.name] = _count_truncated(scorer, insts)
                timings[task.name] = round(time.perf_counter() - t0, 3)
    except BaseException:
        staged.discard()  # the previous results stay as they were; finished answers are in the request cache
        raise
    scoring_s = sum(timings.values())
    if resources is not None:
        res = {**model_record.get("resources", {}), **resources()}
        tokens = res.pop("tokens_processed", 0)
        res["scoring_s"] = round(scoring_s, 3)
        res["tokens_per_s"] = round(tokens / scoring_s, 1) if tokens and scoring_s > 0 else None
        model_record = {**model_record, "resources": res}
    record = {
        "results": results,
        "versions": versions,
        "config": {
            **model_record,
            # as given (the header line prints the CLI's list); results come in the reference's grouped order
            "tasks": [t.task.name for t in settings.tasks],
            "num_fewshot": [t.num_fewshot for t in settings.tasks],
            "prompt_versions": {t.task.name: t.task.prompt_version for t in settings.tasks},
            "limit": settings.limit,
            "system_prompt": os.environ.get("SYSTEM_PROMPT"),
            "dynamic_max_length": os.environ.get("DYNAMIC_MAX_LENGTH", "true"),
            "data": data,
            "allow_data_mismatch": settings.allow_data_mismatch,
            "seeds": settings.seeds,
            "chunk_docs": chunk,
            "jbench_version": __version__,
            "git_commit": git_commit(),
            "environment": environment_record(),
        },
        "n_samples": n_samples,
        "truncated": truncated,
        "notes": notes,
        "timings": {"tasks_s": timings, "total_s": round(time.perf_counter() - t_run, 3)},
    }
    if run_plan is not None:
        record["plan"] = run_plan  # what was asked: a later `compare` reuses this run only if it asked the same
    staged.publish(record)
    return record
