"""A run = tasks × one scorer: build requests, score them, compute metrics, keep every example.

Task order follows the reference: all loglikelihood tasks first, then generation tasks, each group in the order
given. The runner writes nothing: it returns a :class:`~jbench.records.RunRecord`, which
:func:`jbench.results.write_run` stores (or an in-memory evaluation keeps).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from jbench.data import load_split
from jbench.metrics import aggregate, exact_match_example, f1_example, multiple_choice_example
from jbench.models.base import GenerationRequest, LoglikelihoodRequest, Scorer, encode_context
from jbench.progress import TaskProgress
from jbench.provenance import run_provenance
from jbench.records import GenRow, MCRow, RunRecord
from jbench.requests import Instance, build_instances
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
    chat: Any = None  # a jbench.chat.ChatPrompt: contexts rendered through the model's chat template
    seeds: dict[str, int] = field(default_factory=lambda: {"shuffle": 42, "python": 1234, "numpy": 1234})


def ordered(tasks: Sequence[TaskRun]) -> list[TaskRun]:
    """Loglikelihood tasks first, then generation tasks (the reference groups results by request type)."""
    return [t for t in tasks if not t.task.is_generation] + [t for t in tasks if t.task.is_generation]


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
               tick: Callable[[int], None] = lambda n: None, chunk_size: int | None = None,
               cut: Callable[[str], str] | None = None) -> list[dict[str, Any]]:
    """Score every instance, in chunks of documents so progress and memory stay smooth (``cut``: applied to each
    generated answer, e.g. the chat path's cut at EOS)."""
    rows: list[dict[str, Any]] = []
    size = chunk_size or chunk_docs()
    for start in range(0, len(insts), size):
        chunk = insts[start: start + size]
        if task.is_generation:
            reqs = [GenerationRequest(i.context, i.until or "\n", int(i.max_gen_tokens or 0)) for i in chunk]
            outs = scorer.generate(reqs)
            rows += _gen_rows(chunk, [cut(o) for o in outs] if cut else outs)
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


def run_tasks(scorer: Scorer, settings: RunSettings, *, model_record: dict[str, Any], show_progress: bool = True,
              run_plan: dict[str, Any] | None = None,
              resources: Callable[[], dict[str, Any]] | None = None) -> RunRecord:
    """Evaluate every task; returns the run record with every example. Writes nothing: storing a run is
    :func:`jbench.results.write_run`'s job (an in-memory evaluation needs no run directory)."""
    chunk = chunk_docs()
    results: dict[str, Any] = {}
    versions: dict[str, float] = {}
    n_samples: dict[str, int] = {}
    rows_of: dict[str, list[dict[str, Any]]] = {}
    docs_of: dict[str, list[Any]] = {}  # each row's source document, for the lm-eval samples files
    data: dict[str, Any] = {}
    timings: dict[str, float] = {}
    truncated: dict[str, int] = {}
    notes: list[str] = []
    t_run = time.perf_counter()
    prepared = []
    for tr in ordered(settings.tasks):  # load and build everything first: bad input fails before model time
        task = tr.task
        val = load_split(task.dataset, "validation", settings.data_dir, allow_mismatch=settings.allow_data_mismatch)
        train = (load_split(task.dataset, "train", settings.data_dir, allow_mismatch=settings.allow_data_mismatch)
                 if tr.num_fewshot > 0 else None)
        insts = build_instances(task, val.docs, train.docs if train else None, tr.num_fewshot,
                                limit=settings.limit, encode=scorer.tokenizer.encode, max_length=scorer.max_length,
                                chat=settings.chat)
        if any(inst.context == "" for inst in insts):
            encode_context(scorer.tokenizer, "")  # an empty context needs EOS: fail now, not after other tasks
        data[task.name] = [asdict(f) for f in val.files + (train.files if train else [])]
        notes += [f"{task.name}: {n}" for n in val.notes + (train.notes if train else [])]
        notes += [f"{task.name}: {n}" for n in (settings.chat.run_notes(insts) if settings.chat is not None else [])]
        prepared.append((tr, insts))
        docs_of[task.name] = [val.docs[i.native_index] for i in insts]
    with TaskProgress(enabled=show_progress) as progress:
        for tr, insts in prepared:
            task = tr.task
            t0 = time.perf_counter()
            tick = progress.task(task.name, len(insts))
            rows = score_task(scorer, task, insts, tick, chunk_size=chunk,
                              cut=settings.chat.cut if settings.chat is not None else None)
            rows_of[task.name] = rows
            results[task.name] = task_metrics(task, rows)
            versions[task.name] = task.version_number
            n_samples[task.name] = len(rows)
            truncated[task.name] = _count_truncated(scorer, insts)
            timings[task.name] = round(time.perf_counter() - t0, 3)
    scoring_s = sum(timings.values())
    if resources is not None:
        res = {**model_record.get("resources", {}), **resources()}
        tokens = res.pop("tokens_processed", 0)
        res["scoring_s"] = round(scoring_s, 3)
        res["tokens_per_s"] = round(tokens / scoring_s, 1) if tokens and scoring_s > 0 else None
        model_record = {**model_record, "resources": res}
    config = {
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
        **run_provenance(),
    }
    return RunRecord(results=results, versions=versions, config=config, n_samples=n_samples, truncated=truncated,
                     notes=notes, timings={"tasks_s": timings, "total_s": round(time.perf_counter() - t_run, 3)},
                     plan=run_plan, rows=rows_of, docs=docs_of)
