"""``jbench eval --wandb-args project=...,name=...``: a finished run logged to Weights & Biases.

Why: llm-jp-eval users read their runs in W&B, and lm-eval users pass ``--wandb_args`` with this syntax. What is
logged follows llm-jp-eval's tables, so existing dashboards and reports find the same keys:

* ``leaderboard_table``: one row, the run's side-by-side leaderboard row (task families and the 4-/6-task
  averages on the averages' 0-100 scale, marks in a ``marks`` column), the row ``jbench table`` prints;
* ``radar_table``: ``category, score`` per task family (llm-jp-eval's radar chart input);
* ``card_table``: the card table (``Task, Version, Metric, Value, Stderr, marks``);
* ``output_table``: one row per evaluated example (``run_name, model_name, target_dataset, num_few_shots, id,
  input, pred, true`` and the per-example metric values), llm-jp-eval's per-example table;
* the run summary: ``<task>/<metric>`` values and ``<N>-task average``; the run config: model, variant, tasks,
  shots, prompt versions, limit, data marks and jbench's version.

wandb is an optional extra (``pip install 'jbench[wandb]'``); :func:`parse_wandb_args` (:mod:`jbench.wandb_args`)
checks before any model loads that it is importable, the keys are ``wandb.init`` arguments with usable values and,
unless offline, that an API key is available. ``WANDB_MODE=offline`` logs to local files.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from jbench.leaderboard import build_leaderboard
from jbench.records import RunRecord
from jbench.report import data_marks
from jbench.wandb_args import WandbError, import_wandb, parse_wandb_args  # noqa: F401 - re-exported for the CLI

__all__ = ["WandbError", "log_run", "parse_wandb_args"]

log = logging.getLogger(__name__)


def _card_rows(record: RunRecord, marks: Mapping[str, str]) -> list[list[Any]]:
    rows = []
    for task, metrics in record.results.items():
        for metric, value in metrics.items():
            if metric.endswith("_stderr") or metric == "details":
                continue
            rows.append([task, record.versions.get(task), metric, value, metrics.get(f"{metric}_stderr"),
                         marks.get(task, "")])
    return rows


def _output_rows(record: RunRecord, run_name: str) -> tuple[list[str], list[list[Any]]]:
    """llm-jp-eval's ``output_table`` columns, then every per-example metric jbench keeps."""
    shots = dict(zip(record.config.get("tasks") or [], record.config.get("num_fewshot") or []))
    metric_cols: list[str] = []
    for metrics in record.results.values():
        metric_cols += [m for m in metrics if not m.endswith("_stderr") and m != "details" and m not in metric_cols]
    columns = ["run_name", "model_name", "target_dataset", "num_few_shots", "data_type", "id", "input", "pred",
               "true", *metric_cols]
    model = str(record.config.get("model") or "")
    out = []
    for task, rows in record.rows.items():
        for row in rows:
            if "continuations" in row:
                conts = row.get("continuations") or []
                pred_i, gold_i = row.get("prediction"), row.get("gold")
                pred = conts[pred_i] if isinstance(pred_i, int) and 0 <= pred_i < len(conts) else pred_i
                true = conts[gold_i] if isinstance(gold_i, int) and 0 <= gold_i < len(conts) else gold_i
            else:
                pred, true = row.get("prediction"), " | ".join(str(g) for g in row.get("golds") or [])
            out.append([run_name, model, task, shots.get(task), "validation", str(row.get("doc_id")),
                        row.get("prompt"), None if pred is None else str(pred), None if true is None else str(true),
                        *[row.get(m) if isinstance(row.get(m), (int, float)) else None for m in metric_cols]])
    return columns, out


def log_run(record: RunRecord, args: Mapping[str, Any]) -> str:
    """Log ``record`` (a stored run) to W&B with ``wandb.init(**args)``; returns the W&B run's local directory.

    Raises :class:`WandbError` if wandb is missing or the W&B run cannot be started (network, login): the
    run's results are already stored, so the message says so."""
    wandb = import_wandb()
    if record.path is None:
        raise WandbError("only a stored run can be logged to W&B", fix="evaluate with an output directory")
    marks = data_marks(record.config.get("data"))
    cfg = record.config
    config = {"model": cfg.get("model"), "model_args": cfg.get("model_args"), "variant": cfg.get("variant"),
              "dtype": cfg.get("dtype"), "tasks": list(record.results), "num_fewshot": cfg.get("num_fewshot"),
              "prompt_versions": cfg.get("prompt_versions"), "limit": cfg.get("limit"), "data_marks": marks,
              "jbench_version": cfg.get("jbench_version"), "git_commit": cfg.get("git_commit"),
              "run_dir": str(record.path)}
    init_args = {"job_type": "eval", **args}
    init_args.setdefault("name", record.path.name)
    user_config = init_args.get("config")  # the user's keys join jbench's (a dict) or are read from a file first
    init_args["config"] = {**config, **user_config} if isinstance(user_config, dict) else (user_config or config)
    try:
        run = wandb.init(**init_args)
        if isinstance(user_config, str):
            run.config.update({k: v for k, v in config.items() if k not in run.config}, allow_val_change=True)
    except Exception as err:  # noqa: BLE001 - wandb raises its own types for login / network / bad arguments
        raise WandbError(f"could not start the W&B run: {err}", where="--wandb-args",
                         fix=f"the results are stored in {record.path}; check `wandb login` and the network (or "
                             "set WANDB_MODE=offline), then log them again with the same --wandb-args") from err
    try:
        board = build_leaderboard([record], labels=[str(init_args["name"])])
        out_columns, out_rows = _output_rows(record, str(init_args["name"]))
        row = board.rows[0]
        run.log({
            "leaderboard_table": wandb.Table(
                columns=["run_name", "model_name", *board.columns, "marks"],
                data=[[row.label, str(cfg.get("model") or ""), *[row.values.get(c) for c in board.columns],
                       "; ".join(f"{c} {m}" for c in board.columns if (m := row.marks.get(c)))]]),
            "radar_table": wandb.Table(columns=["category", "score"],
                                       data=[[c, row.values.get(c)] for c in board.columns
                                             if not c.endswith("average") and row.values.get(c) is not None]),
            "card_table": wandb.Table(columns=["Task", "Version", "Metric", "Value", "Stderr", "marks"],
                                      data=_card_rows(record, marks)),
            "output_table": wandb.Table(columns=out_columns, data=out_rows),
        })
        summary: dict[str, Any] = {f"{task}/{m}": v for task, metrics in record.results.items()
                                   for m, v in metrics.items() if isinstance(v, (int, float))}
        summary.update({c: row.values.get(c) for c in board.columns if c.endswith("average")})
        run.summary.update(summary)
        where = str(getattr(run, "dir", "") or "")
    finally:
        run.finish()
    log.info("logged %s to W&B (%s)", record.path, where)
    return where
