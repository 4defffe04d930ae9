"""Every exit path of `jbench check` and `jbench baseline save`, through the real CLI entry point and its error
handler: exit 0 pass, 1 only when a number regressed, 2 for anything the user can fix (one message naming what,
where and what to do). No path may end in a traceback, and a broken input must never read as a regression."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_baseline import JCQA, JSQUAD, make_run

from jbench.baseline import save_baseline

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    """One CLI invocation: ``setup(tmp)`` builds the inputs and returns the arguments."""

    name: str
    setup: Callable[[Path], list[str]]
    code: int
    first_line: str  # a fragment of the first line of the message (stderr for errors, the report title otherwise)
    where: str = ""  # for an error: a fragment of its `where:` line (the file and line, or the option)


def _base(tmp: Path, **kw: Any) -> tuple[Path, Path]:
    """A good run saved as baseline ``b`` under tmp/baselines; returns (run, baselines dir)."""
    run = make_run(tmp, "base", **kw)
    bdir = tmp / "baselines"
    save_baseline(run, "b", baselines_dir=bdir)
    return run, bdir


def _check(tmp: Path, run: Path, *extra: str, mode: str = "stat") -> list[str]:
    return ["check", str(run), "--baseline", "b", "--baselines-dir", str(tmp / "baselines"), "--mode", mode, *extra]


def _edit_results(run: Path, fn: Callable[[dict[str, Any]], Any], *, replace: bool = False) -> Path:
    """Apply ``fn`` to results.json in place (or write what it returns, with ``replace``)."""
    path = run / "results.json"
    rec = json.loads(path.read_text("utf-8"))
    out = fn(rec)
    path.write_text(json.dumps(out if replace else rec), encoding="utf-8")
    return run


def _write_baseline(tmp: Path, text: str) -> None:
    (tmp / "baselines").mkdir(parents=True, exist_ok=True)
    (tmp / "baselines" / "b.json").write_text(text, encoding="utf-8")


def _good_baseline_doc(tmp: Path) -> dict[str, Any]:
    _base(tmp)
    return json.loads((tmp / "baselines" / "b.json").read_text("utf-8"))


def _set_metric(value: float, metric: str = "acc") -> Callable[[dict[str, Any]], None]:
    return lambda rec: rec["results"][JCQA].update({metric: value})


def _drop_line_half(run: Path, task: str = JCQA, line: int = 3) -> None:
    path = run / f"samples_{task}.jsonl"
    lines = path.read_text("utf-8").splitlines()
    lines[line] = lines[line][: len(lines[line]) // 2]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _edit_baseline(t: Path, fn: Callable[[dict[str, Any]], Any]) -> None:
    """Save a good baseline ``b``, then apply ``fn`` to its document and write it back (a hand edit or bad merge)."""
    doc = _good_baseline_doc(t)
    fn(doc)
    _write_baseline(t, json.dumps(doc))


def _jcqa_examples(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return doc["tasks"][JCQA]["examples"]


def _edit_samples(run: Path, fn: Callable[[list[dict[str, Any]]], Any], task: str = JCQA) -> Path:
    """Apply ``fn`` to the rows of a run's samples file and write them back (``json.dumps`` writes NaN as NaN)."""
    path = run / f"samples_{task}.jsonl"
    rows = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    fn(rows)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return run


def _set_ll(value: Any, row: int = 3, j: int | None = 1) -> Callable[[list[dict[str, Any]]], None]:
    """Set one loglikelihood (``j``) of one row, or the whole field when ``j`` is None."""
    def fn(rows: list[dict[str, Any]]) -> None:
        if j is None:
            rows[row]["loglikelihoods"] = value
        else:
            rows[row]["loglikelihoods"][j] = value
    return fn


def _empty_samples(run: Path, task: str = JCQA) -> Path:
    (run / f"samples_{task}.jsonl").write_text("", encoding="utf-8")
    return run


# --- check -------------------------------------------------------------------------------------------------------

def c_pass_stat(t: Path) -> list[str]:
    _base(t)
    return _check(t, make_run(t, "now"))


def c_pass_exact(t: Path) -> list[str]:
    _base(t)
    return _check(t, make_run(t, "now"), mode="exact")


def c_regression_stat(t: Path) -> list[str]:
    _base(t, n=1119, correct=504)
    return _check(t, make_run(t, "now", n=1119, correct=224))


def c_regression_exact(t: Path) -> list[str]:
    _base(t)
    return _check(t, make_run(t, "now", edit=lambda rec, jcqa, sq: jcqa[0]["loglikelihoods"].__setitem__(
        1, jcqa[0]["loglikelihoods"][1] - 0.01)), mode="exact")


def c_nan_stat(t: Path) -> list[str]:
    _base(t)
    return _check(t, _edit_results(make_run(t, "now"), _set_metric(math.nan)))


def c_nan_exact(t: Path) -> list[str]:
    _base(t)
    return _check(t, _edit_results(make_run(t, "now"), _set_metric(math.nan)), mode="exact")


def c_inf_stat(t: Path) -> list[str]:
    _base(t)
    return _check(t, _edit_results(make_run(t, "now"), _set_metric(math.inf)))


def c_nan_stderr_stat(t: Path) -> list[str]:
    _base(t)
    return _check(t, _edit_results(make_run(t, "now"), _set_metric(math.nan, "acc_stderr")))


def c_null_metric(t: Path) -> list[str]:
    _base(t)
    return _check(t, _edit_results(make_run(t, "now"), _set_metric(None)))  # type: ignore[arg-type]


def c_missing_metric(t: Path) -> list[str]:
    _base(t)
    return _check(t, _edit_results(make_run(t, "now"), lambda rec: rec["results"][JCQA].pop("acc_norm")))


def c_missing_task(t: Path) -> list[str]:
    _base(t)
    return _check(t, _edit_results(make_run(t, "now"), lambda rec: rec["results"].pop(JSQUAD)))


def c_incomparable(t: Path) -> list[str]:
    _base(t)
    return _check(t, make_run(t, "now", edit=lambda rec, a, b: rec["versions"].update({JCQA: 1.2})))


def c_tokenizer(t: Path) -> list[str]:
    _base(t)
    return _check(t, make_run(t, "now", edit=lambda rec, a, b: rec["config"]["tokenizer"].update(kind="fast")))


def c_old_baseline_no_tokenizer(t: Path) -> list[str]:
    doc = _good_baseline_doc(t)
    del doc["tokenizer"], doc["machine"]
    _write_baseline(t, json.dumps(doc))
    return _check(t, make_run(t, "now"), mode="exact")


def c_baseline_not_json(t: Path) -> list[str]:
    _write_baseline(t, '{"format": "jbench-baseline/1", "tasks": {')
    return _check(t, make_run(t, "now"))


def c_baseline_tasks_int(t: Path) -> list[str]:
    _write_baseline(t, '{"format": "jbench-baseline/1", "tasks": 5}')
    return _check(t, make_run(t, "now"))


def c_baseline_list(t: Path) -> list[str]:
    _write_baseline(t, "[1, 2]")
    return _check(t, make_run(t, "now"))


def c_baseline_format(t: Path) -> list[str]:
    _write_baseline(t, '{"format": "something-else", "tasks": {}}')
    return _check(t, make_run(t, "now"))


def c_baseline_empty_tasks(t: Path) -> list[str]:
    _write_baseline(t, '{"format": "jbench-baseline/1", "tasks": {}}')
    return _check(t, make_run(t, "now"))


def c_baseline_metric_str(t: Path) -> list[str]:
    doc = _good_baseline_doc(t)
    doc["tasks"][JCQA]["metrics"]["acc"] = "0.45"
    _write_baseline(t, json.dumps(doc))
    return _check(t, make_run(t, "now"))


def c_baseline_nan(t: Path) -> list[str]:
    doc = _good_baseline_doc(t)
    doc["tasks"][JCQA]["metrics"]["acc"]["value"] = math.nan
    _write_baseline(t, json.dumps(doc))
    return _check(t, make_run(t, "now"))


def c_baseline_examples_bad(t: Path) -> list[str]:
    doc = _good_baseline_doc(t)
    doc["tasks"][JCQA]["examples"][2] = "oops"
    _write_baseline(t, json.dumps(doc))
    return _check(t, make_run(t, "now"), mode="exact")


def c_baseline_missing(t: Path) -> list[str]:
    return _check(t, make_run(t, "now"))


def c_run_missing(t: Path) -> list[str]:
    _base(t)
    return _check(t, t / "no-such-run")


def c_run_not_json(t: Path) -> list[str]:
    _base(t)
    run = make_run(t, "now")
    (run / "results.json").write_text('{"results": ', encoding="utf-8")
    return _check(t, run)


def c_run_results_list(t: Path) -> list[str]:
    _base(t)
    return _check(t, _edit_results(make_run(t, "now"), lambda rec: rec.update(results=[1, 2])))


def c_run_top_list(t: Path) -> list[str]:
    _base(t)
    return _check(t, _edit_results(make_run(t, "now"), lambda rec: [rec], replace=True))


def c_run_task_entry_str(t: Path) -> list[str]:
    _base(t)
    return _check(t, _edit_results(make_run(t, "now"), lambda rec: rec["results"].update({JCQA: "acc=0.4"})))


def c_run_config_null(t: Path) -> list[str]:
    _base(t)
    return _check(t, _edit_results(make_run(t, "now"), lambda rec: rec.update(config=None)))


def c_run_shots_int(t: Path) -> list[str]:
    _base(t)
    return _check(t, _edit_results(make_run(t, "now"), lambda rec: rec["config"].update(num_fewshot=3)))


def c_samples_cut(t: Path) -> list[str]:
    _base(t)
    run = make_run(t, "now")
    _drop_line_half(run)
    return _check(t, run, mode="exact")


def c_samples_not_object(t: Path) -> list[str]:
    _base(t)
    run = make_run(t, "now")
    with (run / f"samples_{JCQA}.jsonl").open("a", encoding="utf-8") as fh:
        fh.write("[1, 2]\n")
    return _check(t, run, mode="exact")


def c_samples_missing(t: Path) -> list[str]:
    _base(t)
    run = make_run(t, "now")
    (run / f"samples_{JCQA}.jsonl").unlink()
    return _check(t, run, mode="exact")


def c_samples_missing_stat_ok(t: Path) -> list[str]:  # stat mode does not need samples for proportions
    _base(t)
    run = make_run(t, "now")
    (run / f"samples_{JCQA}.jsonl").unlink()
    return _check(t, run, mode="stat")


# check: a malformed baseline example (any mode: the baseline's shape is validated once, before the mode matters)

def c_baseline_lls_short(mode: str) -> Callable[[Path], list[str]]:
    def setup(t: Path) -> list[str]:
        _edit_baseline(t, lambda doc: _jcqa_examples(doc)[3].update(
            loglikelihoods=_jcqa_examples(doc)[3]["loglikelihoods"][:2]))
        return _check(t, make_run(t, "now"), mode=mode)
    return setup


def c_baseline_prediction_missing(mode: str) -> Callable[[Path], list[str]]:
    def setup(t: Path) -> list[str]:
        _edit_baseline(t, lambda doc: _jcqa_examples(doc)[3].pop("prediction"))
        return _check(t, make_run(t, "now"), mode=mode)
    return setup


def c_baseline_fewer_examples(mode: str) -> Callable[[Path], list[str]]:
    def setup(t: Path) -> list[str]:
        _edit_baseline(t, lambda doc: _jcqa_examples(doc).pop())
        return _check(t, make_run(t, "now"), mode=mode)
    return setup


def c_baseline_stderr_negative(mode: str) -> Callable[[Path], list[str]]:
    def setup(t: Path) -> list[str]:
        _edit_baseline(t, lambda doc: doc["tasks"][JCQA]["metrics"]["acc"].update(stderr=-1))
        return _check(t, make_run(t, "now"), mode=mode)
    return setup


def c_baseline_ll_nan(t: Path) -> list[str]:
    _edit_baseline(t, lambda doc: _jcqa_examples(doc)[0]["loglikelihoods"].__setitem__(1, math.nan))
    return _check(t, make_run(t, "now"), mode="exact")


def c_baseline_prediction_out_of_range(t: Path) -> list[str]:
    _edit_baseline(t, lambda doc: _jcqa_examples(doc)[5].update(prediction=7))
    return _check(t, make_run(t, "now"), mode="exact")


def c_baseline_doc_index_repeated(t: Path) -> list[str]:
    _edit_baseline(t, lambda doc: _jcqa_examples(doc)[5].update(doc_index=4))
    return _check(t, make_run(t, "now"), mode="exact")


# check: a malformed samples file in the run

def c_samples_empty(t: Path) -> list[str]:
    _base(t)
    return _check(t, _empty_samples(make_run(t, "now")), mode="exact")


def c_samples_lls_str(t: Path) -> list[str]:
    _base(t)
    return _check(t, _edit_samples(make_run(t, "now"), _set_ll("x", j=None)), mode="exact")


def c_samples_ll(value: float) -> Callable[[Path], list[str]]:
    def setup(t: Path) -> list[str]:
        _base(t)
        return _check(t, _edit_samples(make_run(t, "now"), _set_ll(value)), mode="exact")
    return setup


def c_samples_lls_short(t: Path) -> list[str]:
    _base(t)
    return _check(t, _edit_samples(make_run(t, "now"), lambda rows: rows[3].update(
        loglikelihoods=rows[3]["loglikelihoods"][:2], prediction=0)), mode="exact")


def c_samples_row_dropped(t: Path) -> list[str]:
    _base(t)
    return _check(t, _edit_samples(make_run(t, "now"), lambda rows: rows.pop(10)), mode="exact")


def c_samples_prediction_missing(t: Path) -> list[str]:
    _base(t)
    return _check(t, _edit_samples(make_run(t, "now"), lambda rows: rows[3].pop("prediction")), mode="exact")


def c_samples_doc_index_repeated(t: Path) -> list[str]:
    _base(t)
    return _check(t, _edit_samples(make_run(t, "now"), lambda rows: rows[5].update(doc_index=4)), mode="exact")


def c_run_stderr_negative(t: Path) -> list[str]:
    _base(t)
    return _check(t, _edit_results(make_run(t, "now"), _set_metric(-0.5, "acc_stderr")))


def c_confidence(value: str) -> Callable[[Path], list[str]]:
    def setup(t: Path) -> list[str]:
        _base(t)
        return _check(t, make_run(t, "now"), "--confidence", value)
    return setup


def c_k(value: str) -> Callable[[Path], list[str]]:
    def setup(t: Path) -> list[str]:
        _base(t)
        return _check(t, make_run(t, "now"), "--k", value)
    return setup


def c_rtol(value: str) -> Callable[[Path], list[str]]:
    def setup(t: Path) -> list[str]:
        _base(t)
        return _check(t, make_run(t, "now"), "--rtol", value)
    return setup


def c_mode_unknown(t: Path) -> list[str]:
    _base(t)
    return _check(t, make_run(t, "now"), mode="fuzzy")


def c_usage_no_baseline_option(t: Path) -> list[str]:
    return ["check", str(make_run(t, "now"))]


# --- baseline save -----------------------------------------------------------------------------------------------

def _save(t: Path, run: Path | str, name: str = "b", *extra: str) -> list[str]:
    return ["baseline", "save", str(run), "--name", name, "--baselines-dir", str(t / "baselines"), *extra]


def s_ok(t: Path) -> list[str]:
    return _save(t, make_run(t, "run"))


def s_ok_no_predictions_without_samples(t: Path) -> list[str]:
    run = make_run(t, "run")
    (run / f"samples_{JCQA}.jsonl").unlink()
    return _save(t, run, "b", "--no-predictions")


def s_name(name: str) -> Callable[[Path], list[str]]:
    return lambda t: _save(t, make_run(t, "run"), name)


def s_run_missing(t: Path) -> list[str]:
    return _save(t, t / "nope")


def s_run_nan(t: Path) -> list[str]:
    return _save(t, _edit_results(make_run(t, "run"), _set_metric(math.nan)))


def s_run_inf_stderr(t: Path) -> list[str]:
    return _save(t, _edit_results(make_run(t, "run"), _set_metric(-math.inf, "acc_stderr")))


def s_run_no_results(t: Path) -> list[str]:
    return _save(t, _edit_results(make_run(t, "run"), lambda rec: rec.update(results={})))


def s_run_task_no_metrics(t: Path) -> list[str]:
    return _save(t, _edit_results(make_run(t, "run"), lambda rec: rec["results"].update({JCQA: {"alias": "x"}})))


def s_run_malformed(t: Path) -> list[str]:
    return _save(t, _edit_results(make_run(t, "run"), lambda rec: rec.update(n_samples=[40, 20])))


def s_run_not_json(t: Path) -> list[str]:
    run = make_run(t, "run")
    (run / "results.json").write_text("not json", encoding="utf-8")
    return _save(t, run)


def s_samples_cut(t: Path) -> list[str]:
    run = make_run(t, "run")
    _drop_line_half(run, JSQUAD, 0)
    return _save(t, run)


def s_samples_missing(t: Path) -> list[str]:
    run = make_run(t, "run")
    (run / f"samples_{JSQUAD}.jsonl").unlink()
    return _save(t, run)


def s_samples_empty(t: Path) -> list[str]:
    return _save(t, _empty_samples(make_run(t, "run")))


def s_samples_ll(value: float) -> Callable[[Path], list[str]]:
    return lambda t: _save(t, _edit_samples(make_run(t, "run"), _set_ll(value)))


def s_samples_lls_str(t: Path) -> list[str]:
    return _save(t, _edit_samples(make_run(t, "run"), _set_ll("x", j=None)))


def s_samples_prediction_list(t: Path) -> list[str]:
    return _save(t, _edit_samples(make_run(t, "run"), lambda rows: rows[0].update(prediction=["東京0"]), JSQUAD))


def s_samples_doc_index_str(t: Path) -> list[str]:
    return _save(t, _edit_samples(make_run(t, "run"), lambda rows: rows[2].update(doc_index="2")))


def s_run_stderr_negative(t: Path) -> list[str]:
    return _save(t, _edit_results(make_run(t, "run"), _set_metric(-0.5, "acc_stderr")))


def s_dir_is_file(t: Path) -> list[str]:
    (t / "baselines").write_text("a file, not a directory", encoding="utf-8")
    return _save(t, make_run(t, "run"))


CASES = [
    # check: verdicts
    Case("check pass (stat)", c_pass_stat, 0, "jbench check (stat): PASS"),
    Case("check pass (exact)", c_pass_exact, 0, "jbench check (exact): PASS"),
    Case("check regression (stat)", c_regression_stat, 1, "jbench check (stat): REGRESSION"),
    Case("check regression (exact, LL moved 0.01)", c_regression_exact, 1, "jbench check (exact): REGRESSION"),
    Case("check NaN metric (stat)", c_nan_stat, 1, "jbench check (stat): REGRESSION"),
    Case("check NaN metric (exact)", c_nan_exact, 1, "jbench check (exact): REGRESSION"),
    Case("check inf metric (stat)", c_inf_stat, 1, "jbench check (stat): REGRESSION"),
    Case("check NaN stderr (stat)", c_nan_stderr_stat, 1, "jbench check (stat): REGRESSION"),
    Case("check null metric", c_null_metric, 2, "jbench check (stat): CANNOT COMPARE"),
    Case("check metric missing", c_missing_metric, 2, "jbench check (stat): CANNOT COMPARE"),
    Case("check task missing", c_missing_task, 2, "jbench check (stat): CANNOT COMPARE"),
    Case("check task version differs", c_incomparable, 2, "jbench check (stat): CANNOT COMPARE"),
    Case("check tokenizer differs", c_tokenizer, 2, "jbench check (stat): CANNOT COMPARE"),
    Case("check old baseline without tokenizer", c_old_baseline_no_tokenizer, 2,
         "jbench check (exact): CANNOT COMPARE"),
    # check: unusable baseline
    Case("baseline not JSON", c_baseline_not_json, 2, "error: baseline is not valid JSON"),
    Case("baseline tasks: 5", c_baseline_tasks_int, 2, "error: malformed baseline: field `tasks` is a number (5)"),
    Case("baseline is a list", c_baseline_list, 2, "error: malformed baseline: field `(top level)` is a list"),
    Case("baseline wrong format", c_baseline_format, 2, "error: not a jbench baseline (format 'something-else'"),
    Case("baseline no tasks", c_baseline_empty_tasks, 2, "error: malformed baseline: field `tasks` is empty"),
    Case("baseline metric is a string", c_baseline_metric_str, 2,
         f"error: malformed baseline: field `tasks.{JCQA}.metrics.acc` is a string"),
    Case("baseline NaN value", c_baseline_nan, 2,
         f"error: malformed baseline: field `tasks.{JCQA}.metrics.acc.value` is nan"),
    Case("baseline example not an object", c_baseline_examples_bad, 2,
         f"error: malformed baseline: field `tasks.{JCQA}.examples[2]` is a string"),
    Case("baseline missing", c_baseline_missing, 2, "error: no baseline or run named b"),
    # check: unusable run
    Case("run missing", c_run_missing, 2, "error: no finished run found at"),
    Case("run results.json not JSON", c_run_not_json, 2, "error: results.json is not valid JSON"),
    Case("run results is a list", c_run_results_list, 2,
         "error: malformed results.json: field `results` should be an object mapping task name -> metrics"),
    Case("run top level is a list", c_run_top_list, 2,
         "error: malformed results.json: field `(top level)` should be an object, got a list"),
    Case("run task entry is a string", c_run_task_entry_str, 2,
         f"error: malformed results.json: field `results.{JCQA}` should be an object"),
    Case("run config null", c_run_config_null, 2, "error: malformed results.json: field `config` should be"),
    Case("run num_fewshot is a number", c_run_shots_int, 2,
         "error: malformed results.json: field `config.num_fewshot` should be a list or an object, got a number (3)"),
    Case("samples line cut in half (exact)", c_samples_cut, 2,
         f"error: samples line 4 of task {JCQA} is not valid JSON"),
    Case("samples line not an object (exact)", c_samples_not_object, 2,
         f"error: samples line 41 of task {JCQA} is a list, not an object"),
    Case("samples file missing (exact)", c_samples_missing, 2, f"error: the run has no samples file for task {JCQA}"),
    Case("samples file missing (stat, not needed)", c_samples_missing_stat_ok, 0, "jbench check (stat): PASS"),
    # check: a malformed baseline example, in either mode (exit 2 naming the baseline file and field, never 1)
    *[Case(f"baseline example loglikelihoods cut to 2 of 5 ({m})", c_baseline_lls_short(m), 2,
           f"error: malformed baseline: field `tasks.{JCQA}.examples[3].loglikelihoods` has 2 value(s), while 39 "
           "other example(s) of the task have 5", "b.json") for m in ("exact", "stat")],
    *[Case(f"baseline example prediction missing ({m})", c_baseline_prediction_missing(m), 2,
           f"error: malformed baseline: field `tasks.{JCQA}.examples[3].prediction` is missing", "b.json")
      for m in ("exact", "stat")],
    *[Case(f"baseline fewer examples than n ({m})", c_baseline_fewer_examples(m), 2,
           f"error: malformed baseline: field `tasks.{JCQA}.examples` holds 39 example(s), but `tasks.{JCQA}.n` is "
           "40", "b.json") for m in ("exact", "stat")],
    *[Case(f"baseline stderr -1 ({m})", c_baseline_stderr_negative(m), 2,
           f"error: malformed baseline: field `tasks.{JCQA}.metrics.acc.stderr` is -1", "b.json")
      for m in ("exact", "stat")],
    Case("baseline example loglikelihood NaN", c_baseline_ll_nan, 2,
         f"error: malformed baseline: field `tasks.{JCQA}.examples[0].loglikelihoods[1]` is a number (nan)",
         "b.json"),
    Case("baseline example prediction out of range", c_baseline_prediction_out_of_range, 2,
         f"error: malformed baseline: field `tasks.{JCQA}.examples[5].prediction` is choice 7, but only 5",
         "b.json"),
    Case("baseline example doc_index repeated", c_baseline_doc_index_repeated, 2,
         f"error: malformed baseline: field `tasks.{JCQA}.examples[5].doc_index` is 4, the same as", "b.json"),
    # check: a malformed samples file in the run (exit 2 naming the samples file, line and field, never 1)
    Case("samples file empty, n_samples 40 (exact)", c_samples_empty, 2,
         f"error: the samples file of task {JCQA} holds 0 example row(s), but results.json field "
         f"`n_samples.{JCQA}` says 40 (the file is empty)", f"samples_{JCQA}.jsonl"),
    Case("samples loglikelihoods is a string (exact)", c_samples_lls_str, 2,
         f"error: samples line 4 of task {JCQA}: field `loglikelihoods` is a string ('x')",
         f"samples_{JCQA}.jsonl:4"),
    Case("samples loglikelihood NaN (exact)", c_samples_ll(math.nan), 2,
         f"error: samples line 4 of task {JCQA}: field `loglikelihoods[1]` is a number (nan)",
         f"samples_{JCQA}.jsonl:4"),
    Case("samples loglikelihood -inf (exact)", c_samples_ll(-math.inf), 2,
         f"error: samples line 4 of task {JCQA}: field `loglikelihoods[1]` is a number (-inf)",
         f"samples_{JCQA}.jsonl:4"),
    Case("samples loglikelihoods cut to 2 of 5 choices (exact)", c_samples_lls_short, 2,
         f"error: samples line 4 of task {JCQA}: field `loglikelihoods` has 2 value(s) for 5 choice(s)",
         f"samples_{JCQA}.jsonl:4"),
    Case("samples row count != n_samples (exact)", c_samples_row_dropped, 2,
         f"error: the samples file of task {JCQA} holds 39 example row(s), but results.json field "
         f"`n_samples.{JCQA}` says 40", f"samples_{JCQA}.jsonl"),
    Case("samples prediction missing (exact)", c_samples_prediction_missing, 2,
         f"error: samples line 4 of task {JCQA}: field `prediction` is missing", f"samples_{JCQA}.jsonl:4"),
    Case("samples doc_index repeated (exact)", c_samples_doc_index_repeated, 2,
         f"error: samples line 6 of task {JCQA}: field `doc_index` 4 repeats line 5", f"samples_{JCQA}.jsonl:6"),
    Case("run stderr negative", c_run_stderr_negative, 2,
         f"error: malformed results.json: field `results.{JCQA}.acc_stderr` should be a standard error (>= 0), "
         "got a number (-0.5)", "results.json"),
    # check: options
    Case("--confidence 1.5", c_confidence("1.5"), 2, "error: confidence must be in (0.5, 1), got 1.5",
         "--confidence 1.5"),
    Case("--confidence 0.3", c_confidence("0.3"), 2, "error: confidence must be in (0.5, 1), got 0.3",
         "--confidence 0.3"),
    Case("--confidence nan", c_confidence("nan"), 2, "error: confidence must be in (0.5, 1), got nan",
         "--confidence nan"),
    Case("--k -1", c_k("-1"), 2, "error: k must be a positive finite number, got -1.0", "--k -1.0"),
    Case("--k inf", c_k("inf"), 2, "error: k must be a positive finite number, got inf", "--k inf"),
    Case("--rtol -0.1", c_rtol("-0.1"), 2, "error: rtol must be in [0, 1), got -0.1", "--rtol -0.1"),
    Case("--mode fuzzy", c_mode_unknown, 2, "got 'fuzzy'", "--mode fuzzy"),
    Case("usage: no --baseline", c_usage_no_baseline_option, 2, "Usage:"),
    # baseline save
    Case("save ok", s_ok, 0, "b.json"),
    Case("save --no-predictions without samples", s_ok_no_predictions_without_samples, 0, "b.json"),
    Case("save name with a slash", s_name("../evil"), 2, "error: invalid baseline name '../evil'"),
    Case("save hidden name", s_name(".hidden"), 2, "error: invalid baseline name '.hidden'"),
    Case("save name with a space", s_name("a b"), 2, "error: invalid baseline name 'a b'"),
    Case("save empty name", s_name(""), 2, "error: invalid baseline name ''"),
    Case("save run missing", s_run_missing, 2, "error: no finished run found at"),
    Case("save run NaN metric", s_run_nan, 2,
         f"error: cannot save this run as a baseline: field `results.{JCQA}.acc` is nan"),
    Case("save run -inf stderr", s_run_inf_stderr, 2,
         f"error: cannot save this run as a baseline: field `results.{JCQA}.acc_stderr` is -inf"),
    Case("save run without results", s_run_no_results, 2, "error: the run has no results"),
    Case("save task without metrics", s_run_task_no_metrics, 2,
         f"error: cannot save this run as a baseline: field `tasks.{JCQA}.metrics` is missing or empty"),
    Case("save malformed run", s_run_malformed, 2, "error: malformed results.json: field `n_samples` should be"),
    Case("save run not JSON", s_run_not_json, 2, "error: results.json is not valid JSON"),
    Case("save samples cut", s_samples_cut, 2, f"error: samples line 1 of task {JSQUAD} is not valid JSON"),
    Case("save samples missing", s_samples_missing, 2, f"error: the run has no samples file for task {JSQUAD}"),
    # baseline save: a run whose samples would make a baseline that fails good runs is refused (exit 2)
    Case("save samples empty", s_samples_empty, 2,
         f"error: the samples file of task {JCQA} holds 0 example row(s), but results.json field "
         f"`n_samples.{JCQA}` says 40 (the file is empty)", f"samples_{JCQA}.jsonl"),
    Case("save samples loglikelihood NaN", s_samples_ll(math.nan), 2,
         f"error: samples line 4 of task {JCQA}: field `loglikelihoods[1]` is a number (nan)",
         f"samples_{JCQA}.jsonl:4"),
    Case("save samples loglikelihood inf", s_samples_ll(math.inf), 2,
         f"error: samples line 4 of task {JCQA}: field `loglikelihoods[1]` is a number (inf)",
         f"samples_{JCQA}.jsonl:4"),
    Case("save samples loglikelihoods is a string", s_samples_lls_str, 2,
         f"error: samples line 4 of task {JCQA}: field `loglikelihoods` is a string ('x')",
         f"samples_{JCQA}.jsonl:4"),
    Case("save samples prediction is a list", s_samples_prediction_list, 2,
         f"error: samples line 1 of task {JSQUAD}: field `prediction` is a list", f"samples_{JSQUAD}.jsonl:1"),
    Case("save samples doc_index is a string", s_samples_doc_index_str, 2,
         f"error: samples line 3 of task {JCQA}: field `doc_index` is a string ('2')", f"samples_{JCQA}.jsonl:3"),
    Case("save run stderr negative", s_run_stderr_negative, 2,
         f"error: malformed results.json: field `results.{JCQA}.acc_stderr` should be a standard error (>= 0)",
         "results.json"),
    Case("save into a file", s_dir_is_file, 2, "error: cannot write the baseline"),
]


def _run_main(args: list[str], capsys: pytest.CaptureFixture[str],
              monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    """``jbench.cli.main`` in-process: the real console entry point, with its JBenchError handler."""
    from jbench import cli

    monkeypatch.setattr(sys, "argv", ["jbench", *args])
    try:
        cli.main()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    out = capsys.readouterr()
    return code, out.out, out.err


def _first_line(code: int, out: str, err: str) -> str:
    text = err if err.strip() else out
    return next(line for line in text.splitlines() if line.strip()).lstrip("# ").strip()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_exit_path(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no default results/ or results/baselines/ of the checkout can leak in
    args = case.setup(tmp_path)
    capsys.readouterr()
    code, out, err = _run_main(args, capsys, monkeypatch)
    both = out + err
    assert "Traceback" not in both, both
    assert code == case.code, both
    assert case.first_line in _first_line(code, out, err), both
    if code == 2 and err.startswith("error:"):  # a user-fixable error: one message with where and what to do
        # (cli.py's own --mode pre-check, a TaskError without a fix, is the one exception until the CLI leaves
        # the check to check_run)
        assert "what to do:" in err or "--mode must be" in err, err
        assert err.count("error:") == 1, err
        if case.where:  # the `where:` line names the file (and line) or the option
            where = next((line for line in err.splitlines() if line.startswith("  where: ")), "")
            assert where.endswith(case.where), err


@pytest.mark.parametrize("case", [c for c in CASES if c.name in (
    "check NaN metric (stat)", "baseline tasks: 5", "samples line cut in half (exact)", "--confidence 1.5",
    "check tokenizer differs", "save run NaN metric")], ids=lambda c: c.name)
def test_exit_paths_through_a_real_process(case: Case, tmp_path: Path) -> None:
    """The same paths through ``python -m jbench.cli``: what CI sees, including the interpreter's own handling."""
    args = case.setup(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "jbench.cli", *args], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)
    both = proc.stdout + proc.stderr
    assert "Traceback" not in both, both
    assert proc.returncode == case.code, both
    assert case.first_line in _first_line(proc.returncode, proc.stdout, proc.stderr), both


def test_check_run_api_validates_options(tmp_path: Path) -> None:
    """The API refuses what the CLI refuses (a script calling check_run gets the same JBenchError, exit 2)."""
    from jbench.baseline import check_run
    from jbench.errors import JBenchError

    run, bdir = _base(tmp_path)
    for kw in ({"mode": "fuzzy"}, {"mode": "stat", "confidence": 1.5}, {"mode": "stat", "k": 0.0},
               {"mode": "stat", "rtol": math.nan}, {"mode": "exact", "confidence": 0.5}):
        with pytest.raises(JBenchError) as err:
            check_run(run, "b", baselines_dir=bdir, **kw)  # type: ignore[arg-type]
        assert err.value.exit_code == 2 and err.value.fix
