"""lm-evaluation-harness 0.4's output layout for a jbench run, written beside jbench's own results.json.

Why: people who use lm-eval every day read results with its tools: ``lm_eval.utils.make_table``, the result
discovery of ``lm_eval.utils`` (``get_results_filenames`` / ``get_latest_filename`` / ``get_file_task_name``), the
Hub "details" datasets and the Zeno / W&B loggers. jbench's results.json keeps lm-eval 0.3's shape (what the
reference JP harness wrote, read by every jbench reader), so each run also gets ``<run>/lm-eval/``:

* ``results_<date_id>.json``: ``results`` keyed by task with ``metric,filter`` keys (``acc,none``,
  ``acc_stderr,none``; ``"N/A"`` where jbench, like the reference, computes no stderr, as lm-eval writes it),
  ``group_subtasks``, ``configs``, ``versions``, ``n-shot``, ``higher_is_better``, ``n-samples``, ``config``,
  ``git_hash``, ``date`` and the tracker fields (``model_name``, ``task_hashes``, ...);
* ``samples_<task>_<date_id>.jsonl``: one lm-eval sample per document (``doc_id``, ``doc``, ``target``,
  ``arguments``, ``resps``, ``filtered_resps``, ``filter``, ``metrics``, the hashes and the per-example metric
  values), serialised as lm-eval's ``EvaluationTracker.save_results_samples`` does.

A subdirectory, not the run directory itself: jbench's ``samples_<task>.jsonl`` also match lm-eval's
``/samples_`` pattern, and their names would parse as "dates" that sort after every real one, so lm-eval's
discovery would pick them as the latest. ``<run>/lm-eval`` is what ``lm_eval --output_path`` would hold for one
model. This module only builds the content; :func:`jbench.results.write_run` stages and writes it atomically with
the rest of the run.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping, Sequence

from jbench.records import RunRecord
from jbench.report import data_marks

__all__ = ["LMEVAL_DIR", "LmEvalLayout", "build_layout", "date_id", "lmeval_metric_key", "lmeval_samples"]

LMEVAL_DIR = "lm-eval"
FILTER = "none"  # jbench applies no lm-eval filter: the prediction is the answer the metric saw
NO_STDERR = "N/A"  # lm-eval's value for a metric that has no stderr

# lm-eval's names for the aggregations behind jbench's metrics
_AGGREGATION = {"acc": "mean", "acc_norm": "mean", "exact_match": "mean", "f1": "mean", "mcc": "matthews_corrcoef",
                "macro_f1": "f1", "balanced_acc": "balanced_accuracy"}
# per-example value of a corpus-level metric in lm-eval's samples: the (gold, prediction) pair it aggregates
_PAIR_METRICS = ("mcc", "macro_f1", "balanced_acc")


@dataclass
class LmEvalLayout:
    """The files of ``<run>/lm-eval/``: the results file's name and content, and samples file name -> rows."""

    results_name: str
    results: dict[str, Any]
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def date_id(when: datetime) -> str:
    """lm-eval's file timestamp: ``datetime.isoformat()`` with ``:`` replaced by ``-`` (sorts by time)."""
    return when.isoformat().replace(":", "-")


def lmeval_metric_key(metric: str, filter_name: str = FILTER) -> str:
    """``acc`` -> ``acc,none``; ``acc_stderr`` -> ``acc_stderr,none`` (lm-eval 0.4's ``metric,filter`` keys)."""
    return f"{metric},{filter_name}"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _jsonable(obj: Any) -> Any:
    """Plain JSON types (lm-eval's ``handle_non_serializable`` turns anything else into ``str``)."""
    return json.loads(json.dumps(obj, ensure_ascii=False, default=str))


def _sanitize(value: Any) -> Any:
    """lm-eval's ``sanitize_list``: nested lists keep their shape, every leaf becomes a string."""
    if isinstance(value, (list, tuple)):
        return [_sanitize(v) for v in value]
    return str(value)


def _sanitize_model_name(name: str) -> str:
    return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", name)


def _metric_names(metrics: Mapping[str, Any]) -> list[str]:
    return [m for m in metrics if not m.endswith("_stderr") and m != "details"]


def _task_results(task: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"alias": task}
    for m in _metric_names(metrics):
        out[lmeval_metric_key(m)] = metrics[m]
        stderr = metrics.get(f"{m}_stderr")
        out[lmeval_metric_key(f"{m}_stderr")] = NO_STDERR if stderr is None else stderr
    return out


def _is_mc(rows: Sequence[Mapping[str, Any]]) -> bool:
    return bool(rows) and "continuations" in rows[0]


def _target(row: Mapping[str, Any]) -> str:
    """What lm-eval's ``doc_to_target`` would give, as the string its tracker stores: the gold choice index for
    multiple choice, the gold answer (the list of them when there are several) for generation."""
    if "continuations" in row:
        return str(row.get("gold"))
    golds = list(row.get("golds") or [])
    return str(golds[0]) if len(golds) == 1 else str(golds)


def lmeval_samples(rows: Sequence[Mapping[str, Any]], docs: Sequence[Any] | None,
                   metrics: Sequence[str]) -> list[dict[str, Any]]:
    """jbench's per-example rows as lm-eval samples (the file layout of ``save_results_samples``).

    ``docs`` are the rows' source documents (None: a stand-in holding the row's ids). Multiple choice: one request
    per choice, ``[context, continuation]``, answered ``[loglikelihood, is_greedy]`` (``"None"`` where jbench
    does not compute greediness); generation: ``[context, {"until": ..., "max_gen_toks": ...}]`` answered with the
    raw and the cut output. ``doc_id`` is the document's position in the split (lm-eval's meaning)."""
    out = []
    for i, row in enumerate(rows):
        doc = docs[i] if docs is not None and i < len(docs) else {"doc_id": row.get("doc_id"),
                                                                   "doc_index": row.get("doc_index")}
        context = str(row.get("prompt", ""))
        if "continuations" in row:
            lls = list(row.get("loglikelihoods") or [])
            greedy = list(row.get("is_greedy") or [None] * len(lls))
            args = [[context, c] for c in row["continuations"]]
            filtered: list[Any] = [[ll, g] for ll, g in zip(lls, greedy)]
            resps: list[Any] = [[r] for r in filtered]
        else:
            until = row.get("until")
            gen_kwargs = {"until": until if isinstance(until, list) else [until], "do_sample": False,
                          "max_gen_toks": row.get("max_gen_tokens")}
            args = [[context, gen_kwargs]]
            raw = row.get("raw_prediction", row.get("prediction"))
            resps, filtered = [[raw]], [row.get("prediction")]
        target = _target(row)
        sample: dict[str, Any] = {
            "doc_id": row.get("native_index", row.get("doc_index", i)),
            "doc": _jsonable(doc),
            "target": target,
            "arguments": {f"gen_args_{j}": {f"arg_{k}": v for k, v in enumerate(a)} for j, a in enumerate(args)},
            "resps": _sanitize(resps),
            "filtered_resps": _sanitize(filtered),
            "filter": row.get("filter") or FILTER,
            "metrics": list(metrics),
            "doc_hash": _sha(json.dumps(_jsonable(doc), indent=2, ensure_ascii=False)),
            "prompt_hash": _sha(context),
            "target_hash": _sha(target),
        }
        for m in metrics:
            sample[m] = [row.get("gold"), row.get("prediction")] if m in _PAIR_METRICS and m not in row \
                else row.get(m)
        out.append(sample)
    return out


def _task_config(task: str, rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], shots: int | None,
                 version: Any, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A task's ``configs`` entry: the fields of lm-eval's TaskConfig that describe what jbench ran."""
    mc = _is_mc(rows)
    conf: dict[str, Any] = {
        "task": task,
        "dataset_path": f"jbench:{task}",
        "output_type": "multiple_choice" if mc else "generate_until",
        "num_fewshot": shots,
        "metric_list": [{"metric": m, "aggregation": _AGGREGATION.get(m, "mean"), "higher_is_better": True}
                        for m in metrics],
        "repeats": 1,
        "should_decontaminate": False,
        "metadata": {"version": version, "prompt_version": (cfg.get("prompt_versions") or {}).get(task),
                     "harness": "jbench"},
    }
    if not mc and rows:
        until = rows[0].get("until")
        conf["generation_kwargs"] = {"until": until if isinstance(until, list) else [until], "do_sample": False}
    return conf


def _shots(record: RunRecord) -> dict[str, int | None]:
    cfg = record.config
    given = dict(zip(cfg.get("tasks") or [], cfg.get("num_fewshot") or []))
    out: dict[str, int | None] = {}
    ordered = list(cfg.get("num_fewshot") or [])
    for i, task in enumerate(record.results):
        if task in given:
            out[task] = given[task]
        else:  # a name the plan resolved differently: the family's entry, else the same position
            fam = [v for k, v in given.items() if task == k or task.startswith(k + "-")]
            out[task] = fam[0] if len(fam) == 1 else (ordered[i] if len(ordered) == len(record.results) else None)
    return out


def build_layout(record: RunRecord, *, now: datetime | None = None) -> LmEvalLayout:
    """lm-eval 0.4's results file and samples files for ``record``, stamped ``now`` (default: the current time)."""
    now = now or datetime.now()
    stamp = date_id(now)
    cfg = record.config
    shots = _shots(record)
    total = record.timings.get("total_s") if isinstance(record.timings, dict) else None
    start = now.timestamp() - float(total) if isinstance(total, (int, float)) else now.timestamp()
    seeds = cfg.get("seeds") or {}
    samples: dict[str, list[dict[str, Any]]] = {}
    task_hashes: dict[str, str] = {}
    configs: dict[str, Any] = {}
    n_samples: dict[str, Any] = {}
    for task, metrics in record.results.items():
        names = _metric_names(metrics)
        rows = record.rows.get(task, [])
        lm_rows = lmeval_samples(rows, record.docs.get(task), names)
        samples[f"samples_{task}_{stamp}.jsonl"] = lm_rows
        task_hashes[task] = _sha("".join(s["doc_hash"] + s["prompt_hash"] + s["target_hash"] for s in lm_rows))
        configs[task] = _task_config(task, rows, names, shots.get(task), record.versions.get(task), cfg)
        effective = record.n_samples.get(task, len(rows))
        files = (cfg.get("data") or {}).get(task) or []
        original = files[0].get("records") if files and isinstance(files[0], dict) else None
        n_samples[task] = {"original": original if cfg.get("limit") is not None and original else effective,
                           "effective": effective}
    model_name = str(cfg.get("model") or cfg.get("model_path") or "model")
    libraries = (cfg.get("environment") or {}).get("libraries") or {}
    results: dict[str, Any] = {
        "results": {t: _task_results(t, m) for t, m in record.results.items()},
        "group_subtasks": {t: [] for t in record.results},
        "configs": configs,
        "versions": dict(record.versions),
        "n-shot": shots,
        "higher_is_better": {t: {m: True for m in _metric_names(ms)} for t, ms in record.results.items()},
        "n-samples": n_samples,
        "config": {
            "model": model_name,
            "model_args": cfg.get("model_args"),
            "model_dtype": cfg.get("dtype"),
            "model_revision": cfg.get("revision"),
            "batch_size": None if cfg.get("batch_size") is None else str(cfg.get("batch_size")),
            "batch_sizes": [],
            "device": cfg.get("device"),
            "use_cache": None,
            "limit": cfg.get("limit"),
            "bootstrap_iters": 100000,
            "gen_kwargs": None,
            "random_seed": seeds.get("random_seed", seeds.get("python")),
            "numpy_seed": seeds.get("numpy_seed", seeds.get("numpy")),
            "torch_seed": seeds.get("torch_seed"),
            "fewshot_seed": seeds.get("fewshot_seed", seeds.get("shuffle")),
        },
        "git_hash": (cfg.get("git_commit") or "")[:7] or None,
        "date": start,
        "transformers_version": libraries.get("transformers"),
        "upper_git_hash": None,
        "max_length": cfg.get("max_length"),
        "task_hashes": task_hashes,
        "model_source": "jbench",
        "model_name": model_name,
        "model_name_sanitized": _sanitize_model_name(model_name),
        "system_instruction": cfg.get("system_instruction") or cfg.get("system_prompt"),  # chat runs: jbench.chat
        "system_instruction_sha": _sha(cfg.get("system_instruction") or cfg["system_prompt"])
        if cfg.get("system_instruction") or cfg.get("system_prompt") else None,
        "fewshot_as_multiturn": bool(cfg.get("fewshot_as_multiturn", False)),
        "chat_template": cfg.get("chat_template"),
        "chat_template_sha": _sha(cfg["chat_template"]) if cfg.get("chat_template") else None,
        "start_time": start,
        "end_time": now.timestamp(),
        "total_evaluation_time_seconds": None if total is None else str(total),
        # jbench's own facts, under one key lm-eval does not use
        "jbench": {"version": cfg.get("jbench_version"), "run_format": record.format,
                   "results_file": "../results.json", "data_marks": data_marks(cfg.get("data")),
                   "metric_scale": "exact_match and f1 on 0-100, as the reference JP harness"
                   if cfg.get("suite") is None else "lm-eval's 0-1 scale"},
    }
    return LmEvalLayout(f"results_{stamp}.json", _jsonable(results), samples)
