"""Suites that run another harness's own task definitions, with jbench's models, data and run store.

``ja_leaderboard``: EleutherAI lm-eval's ``japanese_leaderboard`` tasks, evaluated *by lm-eval*
(``lm_eval.simple_evaluate`` with its ``hf`` model, ``HFLM``), so the numbers are lm-eval's and not a
re-implementation. What jbench adds:

* **data**: the leaderboard YAMLs point at Hub datasets (``Rakuten/JGLUE``, ``kumapo/JAQKET``,
  ``polm-stability/xwinograd-ja``) that cannot be reached offline, and whose loading scripts ``datasets`` 5 no
  longer runs. jbench's loader already yields exactly those datasets' docs (same fields, same order), verified
  against checksums. Each needed split is written as JSON lines to a work dir and a local task YAML
  ``include:``-s the installed leaderboard YAML, overriding only the data source (``dataset_path: json`` with
  absolute ``data_files``), so prompts, ``process_docs``, filters and metrics stay lm-eval's own. That part (the
  task table and the local data and YAMLs) is :mod:`jbench.leaderboard_tasks`; this module runs lm-eval and
  converts its output.
* **model**: jbench's loader (variants, quantization) builds the transformers model; it is handed to ``HFLM`` as an
  object, the only way bnb / torchao variants work on transformers 5.
* **store**: a jbench run directory (``results.json`` + ``samples_<task>.jsonl``) so ``jbench compare``/``check``
  and the card table read it like any other run. Metrics keep lm-eval's names and its 0-1 scale (``exact_match``
  too, unlike jbench's own 0-100): ``config.metric_scale`` says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from jbench.errors import DataError, ModelError, TaskError
from jbench.leaderboard_tasks import (
    JA_LEADERBOARD,
    LOCAL_PREFIX,
    SUITE_NAME,
    LeaderboardTask,
    PreparedTask,
    available_tasks,
    leaderboard_dir,
    missing_reason,
    prepare_tasks,
    resolve_tasks,
    task_yaml,
)
from jbench.models.load import ModelSpec, load_scorer
from jbench.records import GenRow, MCRow
from jbench.results import write_json

# the task table and data preparation live in jbench.leaderboard_tasks; their names stay importable from here
__all__ = [
    "JA_LEADERBOARD",
    "LOCAL_PREFIX",
    "LeaderboardTask",
    "PreparedTask",
    "SUITE_NAME",
    "available_tasks",
    "leaderboard_dir",
    "prepare_tasks",
    "resolve_tasks",
    "run_ja_leaderboard",
    "suite_tables",
    "task_yaml",
]

#: lm-eval's metrics are means of 0/1 per-example scores: full scale 1.0 (jbench's own exact_match is 0-100).
METRIC_SCALE = {"acc": 1.0, "exact_match": 1.0}
#: set for the whole process: everything this suite reads is local, and a silent Hub fallback must fail loudly.
OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_EVALUATE_OFFLINE")


# ------------------------------------------------------------------------------------------------ the model


def set_offline() -> None:
    """HF offline mode for this process: env vars for libraries imported later, module flags for loaded ones."""
    for var in OFFLINE_ENV:
        os.environ[var] = "1"
    hub = sys.modules.get("huggingface_hub.constants")
    if hub is not None and hasattr(hub, "HF_HUB_OFFLINE"):
        hub.HF_HUB_OFFLINE = True
    dcfg = sys.modules.get("datasets.config")
    if dcfg is not None:
        for flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
            if hasattr(dcfg, flag):
                setattr(dcfg, flag, True)


def _hf_tokenizer(scorer: Any, record: dict[str, Any], spec: ModelSpec) -> Any:
    """The HF tokenizer lm-eval's ``hf`` model would load for this model.

    jbench's tokenizer wraps it when it is an HF one (``AutoTokenizer``, same arguments as lm-eval's); for
    ``use_fast=False`` jbench drives sentencepiece itself, so load ``AutoTokenizer(use_fast=False)`` like
    lm-eval's ``use_fast_tokenizer=False`` does."""
    inner = getattr(scorer.tokenizer, "tok", None)
    if inner is not None:
        return inner
    from transformers import AutoTokenizer

    path = str((spec.extra or {}).get("tokenizer") or record.get("model_path") or spec.model)
    try:
        return AutoTokenizer.from_pretrained(path, use_fast=record.get("use_fast") is not False,
                                             trust_remote_code=spec.trust_remote_code, revision=spec.revision)
    except (OSError, ValueError, KeyError, TypeError, ImportError) as err:
        raise ModelError(f"cannot load an HF tokenizer for lm-eval from {path!r}: {err}", where=path,
                         fix="pass a model directory with tokenizer files") from err


def _cli_equivalent(spec: ModelSpec, record: dict[str, Any], batch_size: int | str) -> str | None:
    """The ``lm_eval run`` arguments that load the same model (plain-dtype variants only: quantized ones exist only
    as jbench-loaded objects). ``record["use_fast"]`` is the effective choice (the tiny model defaults to False)."""
    from jbench.models.load import DTYPE_OF_VARIANT, model_args_string

    if spec.variant not in DTYPE_OF_VARIANT:
        return None
    args = model_args_string(spec, str(record.get("model_path")), record.get("use_fast"), lm_eval=True)
    return f"--model hf --model_args {args} --batch_size {batch_size} --device {spec.device}"


def _lm_eval_model(spec: ModelSpec, batch_size: int | str | None) -> tuple[Any, dict[str, Any]]:
    """jbench's loader -> lm-eval ``HFLM`` over the same model object; returns it with the model record."""
    from lm_eval.models.huggingface import HFLM

    t0 = time.perf_counter()
    scorer, record = load_scorer(spec)
    load_s = time.perf_counter() - t0
    model = getattr(scorer, "model", None)
    if model is None or not hasattr(model, "config"):
        raise ModelError(f"the {SUITE_NAME} suite needs a transformers model, but variant {spec.variant!r} is "
                         f"served by {type(scorer).__name__}",
                         fix="use an hf / quantized-transformers variant (fp32, bf16, bnb4, int8, gptq, ...); "
                             "GGUF through llama.cpp cannot be handed to lm-eval's hf model")
    from jbench.models.tokenizer import wrap_hf_tokenizer

    tok = _hf_tokenizer(scorer, record, spec)
    bs = batch_size if batch_size is not None else (spec.batch_size if spec.batch_size is not None else 1)
    kwargs: dict[str, Any] = {"batch_size": bs}
    if spec.max_length:
        kwargs["max_length"] = spec.max_length
    lm = HFLM(pretrained=model, tokenizer=tok, **kwargs)
    footprint = getattr(model, "get_memory_footprint", None)
    record["lm_eval_cli"] = _cli_equivalent(spec, record, bs)
    record.update(
        batch_size=bs, max_length=lm.max_length,
        tokenizer=wrap_hf_tokenizer(tok).identity(),  # the tokenizer lm-eval actually used, not jbench's
        resources={"load_s": round(load_s, 3), "size_bytes": int(footprint()) if callable(footprint) else None},
    )
    return lm, record


# --------------------------------------------------------------------------------------- lm-eval -> jbench


def _split_key(key: str) -> tuple[str, str]:
    metric, _, filt = key.partition(",")
    return metric, filt


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _task_metrics(raw: dict[str, Any]) -> dict[str, Any]:
    """``{"acc,none": v, "acc_stderr,none": se}`` -> ``{"acc": v, "acc_stderr": se}`` (a non-numeric stderr such
    as lm-eval's "N/A" is left out, as jbench does for a missing one)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        metric, filt = _split_key(key)
        if not filt or metric.endswith("_stderr") or _number(value) is None:
            continue
        out[metric] = value
        se = _number(raw.get(f"{metric}_stderr,{filt}"))
        if se is not None:
            out[f"{metric}_stderr"] = se
    return out


def _gold_index(target: Any, choices: list[str]) -> int:
    if isinstance(target, str) and not target.isdigit():
        return choices.index(target)
    return int(target)


def _doc_id(task: LeaderboardTask, sample: dict[str, Any]) -> str:
    doc = sample.get("doc") or {}
    if task.id_field and task.id_field in doc:
        return str(doc[task.id_field])
    return str(sample["doc_id"])


def mc_row(task: LeaderboardTask, s: dict[str, Any]) -> dict[str, Any]:
    """A lm-eval multiple-choice sample as a jbench sample row (prediction = argmax, ties to the lower index,
    which is what lm-eval's acc uses)."""
    args = [tuple(a) for a in s["arguments"]]
    lls = [float(r[0]) for r in s["filtered_resps"]]
    conts = [str(a[1]) for a in args]
    pred = max(range(len(lls)), key=lambda i: (lls[i], -i)) if lls else None
    return MCRow(doc_index=int(s["doc_id"]), doc_id=_doc_id(task, s), prompt=args[0][0] if args else "",
                 continuations=conts, loglikelihoods=lls, prediction=pred,
                 gold=_gold_index(s["target"], [c.removeprefix("\n") for c in conts]), acc=float(s["acc"]),
                 extra={"is_greedy": [bool(r[1]) for r in s["filtered_resps"]], "filter": s.get("filter"),
                        "lm_eval_prompt_hash": s.get("prompt_hash")}).to_json()


def gen_row(task: LeaderboardTask, s: dict[str, Any], max_gen_toks: int) -> dict[str, Any]:
    """A lm-eval generation sample as a jbench sample row: ``prediction`` is the filtered text the metric saw,
    ``raw_prediction`` the model's output before lm-eval's filters."""
    ctx, gen_kwargs = s["arguments"][0][0], dict(s["arguments"][0][1] or {})
    resps = s.get("resps") or [[None]]
    target = s["target"]
    golds = [str(g) for g in target] if isinstance(target, list) else [str(target)]
    return GenRow(doc_index=int(s["doc_id"]), doc_id=_doc_id(task, s), prompt=ctx, until=gen_kwargs.get("until"),
                  max_gen_tokens=int(gen_kwargs.get("max_gen_toks", max_gen_toks)),
                  prediction=s["filtered_resps"][0], golds=golds, exact_match=float(s["exact_match"]),
                  extra={"raw_prediction": (resps[0] or [None])[0], "filter": s.get("filter"),
                         "lm_eval_prompt_hash": s.get("prompt_hash")}).to_json()


def _sample_rows(task: LeaderboardTask, samples: list[dict[str, Any]], output_type: str,
                 max_gen_toks: int) -> list[dict[str, Any]]:
    filters = list(dict.fromkeys(s.get("filter") for s in samples))
    rows = [s for s in samples if s.get("filter") == filters[0]] if filters else []
    rows.sort(key=lambda s: int(s["doc_id"]))
    if output_type == "multiple_choice":
        return [mc_row(task, s) for s in rows]
    if output_type == "generate_until":
        return [gen_row(task, s, max_gen_toks) for s in rows]
    raise TaskError(f"{task.name}: lm-eval output_type {output_type!r} has no jbench sample format")


def _sample_docs(samples: list[dict[str, Any]]) -> list[Any]:
    """The source documents of :func:`_sample_rows`'s rows, in the same order (first filter, by doc_id)."""
    filters = list(dict.fromkeys(s.get("filter") for s in samples))
    kept = sorted((s for s in samples if filters and s.get("filter") == filters[0]), key=lambda s: int(s["doc_id"]))
    return [s.get("doc") for s in kept]


def _lm_eval_version() -> str:
    import importlib.metadata as md

    try:
        return md.version("lm-eval")
    except md.PackageNotFoundError:  # pragma: no cover - a source checkout
        import lm_eval

        return str(getattr(lm_eval, "__version__", "unknown"))


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, ensure_ascii=False, default=str))


# --------------------------------------------------------------------------------------------------- the run


def run_ja_leaderboard(spec: ModelSpec, data_dir: Path, run_dir: Path, *, tasks: list[str] | None = None,
                       limit: int | float | None = None, batch_size: int | str | None = None,
                       allow_data_mismatch: bool = False, work_dir: Path | None = None,
                       preset: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run lm-eval's ``japanese_leaderboard`` tasks on ``spec`` from local data; write a jbench run directory.

    ``tasks``: names for :func:`resolve_tasks`; default: every task whose data files are in ``data_dir`` (the
    others, e.g. xlsum / mgsm, are skipped with a note on stderr). Shots are each task's own default. ``batch_size``
    defaults to ``spec.batch_size``, else 1 (lm-eval's default; "auto" probes large batches, slow on CPU).
    ``work_dir`` keeps the JSON-lines data and local task YAMLs (default: a temporary dir removed afterwards).
    Returns the results.json content."""
    data_dir = Path(data_dir)
    if tasks:
        chosen = resolve_tasks(tasks)
        skipped: dict[str, str] = {}
        for t in chosen:
            why = missing_reason(t, data_dir)
            if why is not None:
                raise DataError(f"{t.name} cannot run: {why}", fix="provide the data or leave the task out")
    else:
        chosen, skipped = available_tasks(data_dir)
        if not chosen:
            raise DataError(f"no japanese_leaderboard task has its data in {data_dir}",
                            fix="pass --data-dir with the JGLUE / XWinograd / JAQKET files (jbench data --download)")
    notes = [f"{name}: skipped, {why}" for name, why in skipped.items()]
    for note in notes:
        print(f"{SUITE_NAME}: {note}", file=sys.stderr)
    set_offline()
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
        return _run(spec, data_dir, run_dir, chosen, notes, limit=limit, batch_size=batch_size,
                    allow_data_mismatch=allow_data_mismatch, work_dir=work_dir, preset=preset)
    with tempfile.TemporaryDirectory(prefix="jbench-ja-leaderboard-") as tmp:
        return _run(spec, data_dir, run_dir, chosen, notes, limit=limit, batch_size=batch_size,
                    allow_data_mismatch=allow_data_mismatch, work_dir=Path(tmp), preset=preset)


def _run(spec: ModelSpec, data_dir: Path, run_dir: Path, chosen: list[LeaderboardTask], notes: list[str], *,
         limit: int | float | None, batch_size: int | str | None, allow_data_mismatch: bool, work_dir: Path,
         preset: dict[str, Any] | None) -> dict[str, Any]:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from jbench.provenance import run_provenance
    from jbench.records import RunRecord
    from jbench.results import write_run

    t_run = time.perf_counter()
    # data first: a missing or corrupt file fails before any model time is spent
    prepared = prepare_tasks(chosen, data_dir, work_dir, allow_mismatch=allow_data_mismatch)
    notes = notes + [n for p in prepared for n in p.notes]
    lm, record = _lm_eval_model(spec, batch_size)
    t_eval = time.perf_counter()
    # include_defaults=False: the local YAMLs include the leaderboard files by absolute path, so indexing lm-eval's
    # thousands of built-in task files (~10-30 s) buys nothing
    manager = TaskManager(include_path=str(work_dir / "tasks"), include_defaults=False)
    res = simple_evaluate(model=lm, tasks=[p.task.local_name for p in prepared], task_manager=manager, limit=limit,
                          log_samples=True)
    eval_s = time.perf_counter() - t_eval
    if res is None:  # pragma: no cover - only non-zero ranks of a distributed run get None
        raise ModelError("lm-eval returned no results (not rank 0 of a distributed run?)")

    results: dict[str, Any] = {}
    versions: dict[str, Any] = {}
    n_samples: dict[str, int] = {}
    rows_of: dict[str, list[dict[str, Any]]] = {}
    docs_of: dict[str, list[Any]] = {}
    shots: list[int] = []
    for p in prepared:
        local, name = p.task.local_name, p.task.name
        output_type = str(res["configs"][local].get("output_type"))
        rows = rows_of[name] = _sample_rows(p.task, res["samples"][local], output_type,
                                            int(getattr(lm, "max_gen_toks", 256)))
        docs_of[name] = _sample_docs(res["samples"][local])  # the lm-eval layout's `doc`, in row order
        results[name] = _task_metrics(res["results"][local])
        versions[name] = res["versions"].get(local)
        n_samples[name] = len(rows)
        shots.append(int(res["n-shot"].get(local) or 0))
    lm_eval_record = {k: v for k, v in res.items() if k != "samples"}

    record["resources"] = {**record.get("resources", {}), "scoring_s": round(eval_s, 3), "tokens_per_s": None,
                           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if preset is not None:
        record["preset"] = preset
    run = RunRecord(
        results=results,
        versions=versions,
        config={
            **record,
            "suite": SUITE_NAME,
            "engine": f"lm-eval {_lm_eval_version()}",
            "lm_eval_model": "hf (HFLM over jbench's loaded model object)",
            "metric_scale": dict(METRIC_SCALE),
            "tasks": [p.task.name for p in prepared],
            "num_fewshot": shots,
            "prompt_versions": {p.task.name: SUITE_NAME for p in prepared},
            "limit": limit,
            "data": {p.task.name: p.data for p in prepared},
            "allow_data_mismatch": allow_data_mismatch,
            "lm_eval_tasks": {p.task.name: {"local_task": p.task.local_name,
                                            "include": str(leaderboard_dir() / p.task.yaml_file),
                                            "yaml_sha256": hashlib.sha256(
                                                (leaderboard_dir() / p.task.yaml_file).read_bytes()).hexdigest()}
                              for p in prepared},
            "seeds": {k: lm_eval_record.get("config", {}).get(k)
                      for k in ("random_seed", "numpy_seed", "torch_seed", "fewshot_seed")},
            **run_provenance(),
        },
        n_samples=n_samples,
        notes=notes,
        timings={"eval_s": round(eval_s, 3), "total_s": round(time.perf_counter() - t_run, 3)},
        rows=rows_of,
        docs=docs_of,
    )
    write_run(run_dir, run)  # the same writer as every other run
    write_json(run_dir / "lm_eval_results.json", _jsonable(lm_eval_record))
    return run.to_json()


def suite_tables(out: dict[str, Any]) -> str:
    """The header line and card table for a suite run (values on lm-eval's 0-1 scale, printed as is)."""
    from jbench.report import card_table, header_line

    cfg = out["config"]
    return (header_line("hf (lm-eval)", cfg.get("model_args", ""), cfg.get("limit"), cfg.get("num_fewshot", []),
                        cfg.get("batch_size")) + "\n" + card_table(out["results"], out["versions"]))
