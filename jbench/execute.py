"""Carrying out a run plan: hold the run directory, load the scorer, score with the request cache, store the run.

Shared by ``jbench.evaluate`` (and so ``jbench eval``) and the comparison's variant runs. Everything the user can
get wrong was checked before this point (:mod:`jbench.validate`); here the model loads.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from jbench.errors import Interrupted
from jbench.models.base import Scorer
from jbench.plan import RunPlan
from jbench.records import RunRecord


def model_size_bytes(scorer: object) -> int | None:
    """Bytes the weights occupy in memory (results.json ``resources.size_bytes``): the loaded model's parameters and
    buffers (quantized size for on-the-fly variants), else the size of the weights file the backend reports."""
    size = getattr(scorer, "model_size_bytes", None)
    if isinstance(size, int):
        return size
    model = getattr(scorer, "model", None)
    if hasattr(model, "parameters") and hasattr(model, "buffers"):
        return weights_memory_bytes(model)
    footprint = getattr(model, "get_memory_footprint", None)
    return int(footprint()) if callable(footprint) else None


def weights_memory_bytes(model: Any) -> int:
    """Bytes of a torch module's parameters and buffers, as stored.

    Why not ``get_memory_footprint()``: it multiplies each tensor's element count by its *logical* dtype's size,
    and torchao's quantized weights are tensor subclasses whose logical dtype is the float one, so int8 showed the
    fp32 size. A wrapper subclass is measured by the plain tensors it is made of (int8 data + scales)."""
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    def nbytes(t: Any) -> int:
        if is_traceable_wrapper_subclass(t):
            names, _ = t.__tensor_flatten__()
            return sum(nbytes(getattr(t, name)) for name in names)
        return int(t.nelement()) * int(t.element_size())

    return sum(nbytes(t) for t in list(model.parameters()) + list(model.buffers()))


def runtime_resources(scoring: Scorer) -> dict[str, Any]:
    """For results.json ``config.resources``: peak resident memory of this process, tokens through the model (for
    throughput), request-cache hits / misses / rows that failed verification (a resumed run has hits), and
    out-of-memory retries (they change the batch composition, hence possibly the last bits)."""
    import resource

    stats = scoring.stats()
    out: dict[str, Any] = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                           "tokens_processed": stats.tokens_processed + stats.generated_tokens_processed}
    out.update({k: v for k, v in stats.extra.items() if k.startswith("cache_")})
    if stats.oom_retries:
        out["oom_retries"], out["oom_batch_cap"] = stats.oom_retries, stats.oom_batch_cap
    return out


def scoring_path(scoring: Scorer) -> dict[str, Any]:
    """Which scoring path ran (results.json ``config.scoring``): prefix sharing mode and header sharing. The paths
    give the same numbers within 1e-5, but a reader chasing a last-digit difference needs to know."""
    stats = scoring.stats()
    return {"sharing": stats.sharing, "header_sharing": stats.header_sharing}


def execute_plan(plan: RunPlan, run_dir: Path | None, *, show_progress: bool = True, use_cache: bool = True,
                 wait: bool = False, scorer: Scorer | None = None) -> RunRecord:
    """Run ``plan`` and return its record; with a ``run_dir`` the run is stored there (resuming from its cache).

    The run directory is held with an OS lock for the whole run, so two processes can never interleave in it, and
    library logs go to ``<run>/log.txt``. Without a run directory (an in-memory evaluation) nothing is written and
    nothing is cached. ``scorer`` is an already loaded model (else the plan's model is loaded)."""
    from jbench.logs import run_log
    from jbench.results import RunLock

    try:
        if run_dir is None:
            return _execute(plan, None, show_progress=show_progress, use_cache=False, scorer=scorer)
        created = not run_dir.exists()
        with RunLock(run_dir, wait=wait), run_log(run_dir):
            try:
                return _execute(plan, run_dir, show_progress=show_progress, use_cache=use_cache, scorer=scorer)
            except Exception:
                _after_failure(run_dir, created)
                raise
    except KeyboardInterrupt as err:  # run.json stays the interrupted attempt's: `--resume` continues it
        raise Interrupted("interrupted", where=str(run_dir or "(in memory)")) from err


def _after_failure(run_dir: Path, created: bool) -> None:
    """A failed run leaves no trace that could be mistaken for a run: the previous run's plan is put back in
    run.json beside its results.json, and a run directory this attempt created, with no answer cached, is removed."""
    import shutil

    from jbench.cache import CACHE_FILE, RequestCache
    from jbench.plan import PLAN_FILE, stored_plan
    from jbench.results import RESULTS_FILE, write_json

    if (run_dir / RESULTS_FILE).is_file():
        previous = stored_plan(run_dir)
        if previous is not None:
            write_json(run_dir / PLAN_FILE, previous)
        return
    if not created:
        return
    cache = run_dir / CACHE_FILE
    answers = 0
    if cache.exists():
        try:
            store = RequestCache(cache)
            answers = store.count()
            store.close()
        except Exception:  # noqa: BLE001 - an unreadable cache holds nothing worth keeping either
            answers = 0
    if answers == 0:
        shutil.rmtree(run_dir, ignore_errors=True)


def _execute(plan: RunPlan, run_dir: Path | None, *, show_progress: bool, use_cache: bool,
             scorer: Scorer | None) -> RunRecord:
    from jbench.cache import CACHE_FILE, CachingScorer, RequestCache, model_identity
    from jbench.model_files import checkpoint_disk_bytes
    from jbench.models.load import ModelSpec, load_scorer, loaded_record
    from jbench.models.model_args import batch_record
    from jbench.results import write_run
    from jbench.run_identity import cache_summary, resume_message
    from jbench.runner import RunSettings, TaskRun, run_tasks
    from jbench.tasks import resolve_task

    settings = RunSettings(tasks=[TaskRun(resolve_task(n), k) for n, k in zip(plan.tasks, plan.num_fewshot)],
                           data_dir=Path(plan.data_dir), limit=plan.limit,
                           allow_data_mismatch=plan.allow_data_mismatch)
    spec = ModelSpec(**plan.model)
    if run_dir is not None:
        plan.save(run_dir)  # first, so that `--resume` can redo exactly this run if it is interrupted
    t_load = time.perf_counter()
    in_memory = scorer is not None
    if scorer is None:
        scorer, record = load_scorer(spec)
    else:
        record = loaded_record(scorer, spec)
    load_s = time.perf_counter() - t_load
    record["preset"] = plan.preset
    if plan.chat is not None:  # after the load: the template is the tokenizer's; part of the cache key
        from jbench.chat import ChatOptions, chat_prompt

        settings.chat = chat_prompt(scorer.tokenizer, ChatOptions(**plan.chat), where=str(spec.model))
        settings.tasks = [TaskRun(settings.chat.rename(t.task), t.num_fewshot) for t in settings.tasks]
        record.update(settings.chat.record())
    # an in-memory model has no fingerprint: another model of the same class must never be served its answers
    cache = RequestCache(run_dir / CACHE_FILE) if use_cache and run_dir is not None and not in_memory else None
    cached = cache.count() if cache is not None else 0
    if cached and run_dir is not None:  # the true number reused is said at the end (cache_summary)
        print(resume_message(run_dir, plan, cached), file=sys.stderr)
    if spec.batch_size is None and scorer.stats().batch_sizing:
        record["batch_sizing"] = scorer.stats().batch_sizing
    try:
        scoring: Scorer = CachingScorer(scorer, cache, model_identity(record)) if cache else scorer
        record["resources"] = {"load_s": round(load_s, 3), "size_bytes": model_size_bytes(scorer),
                               "disk_bytes": checkpoint_disk_bytes(record.get("model_path"), spec.revision)}
        out = run_tasks(scoring, settings, model_record=record, show_progress=show_progress, run_plan=asdict(plan),
                        resources=lambda: runtime_resources(scoring))
        out.config["scoring"] = scoring_path(scoring)
        out.config["batch"] = batch_record(spec.batch_size, spec.max_batch_size, scorer)  # requested and effective
        if cached and (summary := cache_summary(scoring.stats().extra)):
            print(summary, file=sys.stderr)
    finally:
        if cache:
            cache.close()
    if run_dir is not None:
        write_run(run_dir, out)
    return out
