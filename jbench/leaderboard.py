"""One side-by-side leaderboard of several runs: rows are runs, columns are tasks and the published averages.

Why: the model cards' own tables are "Model | JCQA | JNLI | ... | 4-task average | 6-task average" across models,
and comparing runs one card table at a time is what users had to do by hand. A cell is a task's contribution to
the published averages (``acc*100``, else ``exact_match``, else ``rouge2``; see
:func:`jbench.report.task_average_value`), so every number sits on the scale of the averages beside it.

Columns are task *names*: one per distinct (family, task version, prompt version, ``+chat`` suffix), e.g.
``jcommonsenseqa-1.1-0.3`` and ``jcommonsenseqa-1.1-0.3+chat`` are two columns, in every run alike (a run that
evaluated two versions fills two columns). So a column never mixes numbers of different prompts, and csv / json /
:func:`load_runs` columns keep the same names whatever runs are listed. Marks: ``†`` made-up data, ``‡`` a data
file that failed its checksum (from each run's ``config.data``), ``—`` a task the run did not evaluate.

Averages follow the reference: a run's 4-/6-task average is the mean over its *own* member tasks, computed only when
it has exactly one task of every member family, and carries its members' marks. Averages over different task names
are not comparable, so when the rows of an average column do not all average the same task names, every average
whose set of task names is not shared by a strict majority of that column's computed averages is marked ``≠`` (two
runs at prompt 0.2 and 0.3: both marked; three at 0.3 and one at 0.2: only the 0.2 run).

Rows need not come from runs: :class:`ExtraRow` (a label, per-column values and marks) adds e.g. published numbers.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jbench.errors import JBenchError, StoreError
from jbench.report import AVERAGE_GROUPS, MADEUP_MARK, MISMATCH_MARK, data_marks, task_average_value

if TYPE_CHECKING:
    import pandas

__all__ = ["FORMATS", "MISSING_MARK", "VERSIONS_MARK", "ExtraRow", "Leaderboard", "LeaderboardRow",
           "build_leaderboard", "check_run_values", "load_runs", "load_table_run"]

FORMATS = ("md", "csv", "json", "html")
MISSING_MARK = "—"
VERSIONS_MARK = "≠"
MARK_NOTES = {
    MADEUP_MARK: "made-up rows (the bundled demo sample), not benchmark data: not comparable to any published number",
    MISMATCH_MARK: "a data file failed its checksum (--allow-data-mismatch): not the reference data",
    MISSING_MARK: "not evaluated in this run; an average is not computed when a member task is missing (or was "
                  "evaluated in two versions)",
    VERSIONS_MARK: "averaged over task / prompt versions (see the row's columns) that no strict majority of this "
                   "column's averages shares: not comparable with the unmarked averages (nor with each other)",
}
#: average columns, in the order of report.AVERAGE_GROUPS ("8-task" only when some row has xlsum_ja / mgsm)
AVERAGE_COLUMNS = {group: f"{group} average" for group in AVERAGE_GROUPS}


@dataclass
class ExtraRow:
    """A row that is not a stored run (e.g. a model card's published numbers).

    ``values``: column -> number on the averages' scale (0-100), keyed by task name (``jnli-1.1-0.3``: it joins the
    runs' column of that name) or average column (``4-task average``); a bare family key (``jnli``, version unknown)
    is a column of its own. A missing average is computed from the row's tasks when all are there.
    ``marks``: column -> mark string shown after the value (explained by ``notes``: mark -> text)."""

    label: str
    values: Mapping[str, float | None]
    marks: Mapping[str, str] = field(default_factory=dict)
    source: str = ""
    notes: Mapping[str, str] = field(default_factory=dict)


@dataclass
class LeaderboardRow:
    """One row: label, column -> value (None = missing), column -> marks, column -> the task behind the value."""

    label: str
    values: dict[str, float | None]
    marks: dict[str, str]
    tasks: dict[str, str]
    source: str
    info: dict[str, Any] = field(default_factory=dict)

    def cell(self, column: str) -> str:
        """The cell as printed: ``"75.00 †"``, or ``"—"`` when there is no value."""
        value = self.values.get(column)
        marks = self.marks.get(column, "")
        if value is None:
            return MISSING_MARK if not marks or marks == MISSING_MARK else f"{MISSING_MARK} {marks}"
        return f"{value:.2f}" + (f" {marks}" if marks else "")


@dataclass
class Leaderboard:
    """The table; render it with :meth:`render` (md, csv, json, html) or :meth:`to_frame`."""

    columns: list[str]
    rows: list[LeaderboardRow]
    notes: dict[str, str]

    def used_notes(self) -> dict[str, str]:
        marks = " ".join(r.marks.get(c, "") for r in self.rows for c in self.columns)
        missing = any(r.values.get(c) is None for r in self.rows for c in self.columns)
        return {m: t for m, t in self.notes.items() if m in marks or (m == MISSING_MARK and missing)}

    def render(self, fmt: str) -> str:
        if fmt not in FORMATS:
            raise JBenchError(f"unknown table format {fmt!r}", where=f"--format {fmt}",
                              fix=f"use one of: {', '.join(FORMATS)}")
        return {"md": self.to_markdown, "csv": self.to_csv, "json": self.to_json, "html": self.to_html}[fmt]()

    def _matrix(self) -> list[list[str]]:
        return [[r.label] + [r.cell(c) for c in self.columns] for r in self.rows]

    def to_markdown(self) -> str:
        headers = ["Run"] + self.columns
        matrix = self._matrix()
        widths = [max([3, _width(h)] + [_width(row[i]) for row in matrix]) for i, h in enumerate(headers)]

        def line(cells: list[str]) -> str:
            out = []
            for i, (text, w) in enumerate(zip(cells, widths)):
                pad = " " * (w - _width(text))
                out.append(f" {text}{pad} " if i == 0 else f" {pad}{text} ")
            return "|" + "|".join(out) + "|"

        sep = "|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
        notes = "".join(f"{m} {t}\n" for m, t in self.used_notes().items())
        return "\n".join([line(headers), sep] + [line(r) for r in matrix]) + "\n" + notes

    def row_marks(self, row: LeaderboardRow) -> str:
        """A row's marks as one text, ``"jnli-1.1-0.3 †; 4-task average †≠"`` (csv and :meth:`to_frame`)."""
        return "; ".join(f"{c} {m}" for c in self.columns if (m := row.marks.get(c)))

    def to_csv(self) -> str:
        """Plain numbers (full precision; empty where missing), so pandas / spreadsheets type them as numbers; the
        marks go in a ``marks`` column (explained in no footer: see the md format), then ``source``."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["run", *self.columns, "marks", "source"])
        for r in self.rows:
            writer.writerow([r.label, *["" if (v := r.values.get(c)) is None else repr(float(v)) for c in self.columns],
                             self.row_marks(r), r.source])
        return buf.getvalue()

    def to_json(self) -> str:
        rows = [{"label": r.label, "source": r.source, **r.info,
                 "cells": {c: {"value": r.values.get(c), "marks": r.marks.get(c, ""), "task": r.tasks.get(c)}
                           for c in self.columns}} for r in self.rows]
        return json.dumps({"columns": self.columns, "rows": rows, "notes": self.used_notes()}, indent=2,
                          ensure_ascii=False) + "\n"

    def to_html(self) -> str:
        esc = html.escape
        head = "".join(f"<th>{esc(h)}</th>" for h in ["Run"] + self.columns)
        body = []
        for r in self.rows:
            cells = "".join(f'<td class="num">{esc(r.cell(c))}</td>' for c in self.columns)
            body.append(f'<tr><th scope="row" title="{esc(r.source)}">{esc(r.label)}</th>{cells}</tr>')
        notes = "".join(f"<li>{esc(m)} {esc(t)}</li>" for m, t in self.used_notes().items())
        return ('<table class="jbench-leaderboard">\n<thead><tr>' + head + "</tr></thead>\n<tbody>\n"
                + "\n".join(body) + "\n</tbody>\n</table>\n" + (f"<ul class=\"notes\">{notes}</ul>\n" if notes else ""))

    def to_frame(self) -> "pandas.DataFrame":
        """Numbers (NaN where missing), indexed by run label; ``marks`` (``"jnli-1.1-0.3 †; marc_ja-1.1-0.3 ‡"``)
        and ``source`` (the run directory) as the last columns: the csv format as a DataFrame."""
        import pandas as pd

        data = [{**{c: r.values.get(c) for c in self.columns}, "marks": self.row_marks(r), "source": r.source}
                for r in self.rows]
        frame = pd.DataFrame(data, index=pd.Index([r.label for r in self.rows], name="run"),
                             columns=[*self.columns, "marks", "source"])
        return frame.astype({c: float for c in self.columns})


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _family(task: str) -> str | None:
    for fam in AVERAGE_GROUPS["8-task"]:
        if task == fam or task.startswith(fam + "-"):
            return fam
    return None


_RERUN_FIX = ("the file was edited or written by another tool: rerun the run (`jbench eval --resume RUN` reuses "
              "its cached answers)")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_run_values(run: Any) -> None:
    """Raise one :class:`StoreError` (exit 2) naming the field if a stored run cannot be tabled: every metric must be
    a number (``*_stderr`` may be null; ``details`` is free). :func:`jbench.results.load_run` checks the file's
    shape; this adds the values (and the shape again for in-memory ``RunRecord`` objects). Why: a results.json
    edited to ``"acc": "NaN"`` used to crash the table with a traceback (exit 1)."""
    path = getattr(run, "path", None)
    where = str(path / "results.json") if path is not None else "the run's results"

    def bad(field: str, want: str, got: Any) -> StoreError:
        shown = f" ({got!r})" if not isinstance(got, (dict, list, type(None))) else ""
        kind = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
            type(got), "a number" if _is_number(got) else type(got).__name__)  # the words of load_run's checks
        return StoreError(f"malformed results.json: field `{field}` should be {want}, got {kind}{shown}",
                          where=where, fix=_RERUN_FIX)

    results, data = run.results, getattr(run, "data", None)
    if isinstance(data, dict) and not isinstance(data.get("results"), dict):
        raise bad("results", "an object mapping task name -> metrics", data.get("results"))
    for key, value in (("versions", getattr(run, "versions", {})), ("config", run.config)):
        if value is not None and not isinstance(value, dict):
            raise bad(key, "an object", value)
    for task, metrics in results.items():
        if not isinstance(metrics, dict):
            raise bad(f"results.{task}", "an object mapping metric -> value", metrics)
        for metric, value in metrics.items():
            if metric == "details" or _is_number(value) or (value is None and metric.endswith("_stderr")):
                continue
            raise bad(f"results.{task}.{metric}", "a number", value)


def load_table_run(ref: str | os.PathLike[str]) -> Any:
    """:func:`jbench.results.load_run` plus :func:`check_run_values`: every way a run cannot be tabled is exit 2."""
    from jbench.results import load_run

    run = load_run(ref)
    check_run_values(run)
    return run


def _run_row(run: Any, label: str) -> LeaderboardRow:
    """A stored run (``jbench.results.Run``) as a row keyed by task name (its column)."""
    results = run.results
    marks = data_marks(run.config.get("data"))
    values, row_marks, tasks = {}, {}, {}
    for task, metrics in results.items():
        try:
            value = task_average_value(task, metrics)
        except (ValueError, TypeError):
            value = None
        values[task] = value if value is None or math.isfinite(value) else None  # NaN: not a number to rank
        row_marks[task] = marks.get(task, "")
        tasks[task] = task
    cfg = run.config
    info = {"model": cfg.get("model"), "variant": cfg.get("variant"), "prompt_versions": cfg.get("prompt_versions")}
    return LeaderboardRow(label, values, row_marks, tasks, str(run.path), info)


def _columns(rows: Sequence[LeaderboardRow]) -> list[str]:
    """Task columns, one per distinct task name: families in the averages' order (a family's names sorted), then
    other tasks in the order first seen."""
    names: list[str] = []
    for row in rows:
        names += [t for t in row.tasks if t not in names]
    ordered = [t for fam in AVERAGE_GROUPS["8-task"] for t in sorted(n for n in names if _family(n) == fam)]
    return ordered + [t for t in names if _family(t) is None]


def _average(row: LeaderboardRow, group: str) -> tuple[float | None, str, tuple[str, ...]]:
    """The row's average over ``group`` (None if a member is missing, ambiguous or has no value), its marks and its
    member task names."""
    members = []
    for fam in AVERAGE_GROUPS[group]:
        hits = [t for t in row.tasks if t == fam or t.startswith(fam + "-")]
        if len(hits) != 1 or row.values.get(hits[0]) is None:
            return None, MISSING_MARK, ()
        members.append(hits[0])
    total = 0.0
    for t in members:
        total += row.values[t]  # type: ignore[operator]
    marks = "".join(m for m in (MADEUP_MARK, MISMATCH_MARK) if any(m in row.marks.get(t, "") for t in members))
    return total / len(members), marks, tuple(members)


def _mark_version_mismatches(rows: list[LeaderboardRow], column: str, members: dict[int, tuple[str, ...]]) -> None:
    """``≠`` on each computed average of ``column`` whose member task names are not shared by a strict majority of
    the column's computed averages (nothing when they all agree)."""
    counts = Counter(members.values())
    if len(counts) < 2:
        return
    top, n = counts.most_common(1)[0]
    majority = top if 2 * n > len(members) else None
    for i, names in members.items():
        if names != majority:
            rows[i].marks[column] = rows[i].marks.get(column, "") + VERSIONS_MARK


def build_leaderboard(runs: Sequence[Any] = (), extra_rows: Sequence[ExtraRow] = (),
                      *, labels: Sequence[str] | None = None) -> Leaderboard:
    """The leaderboard of stored runs (directories or names under results/, or loaded ``Run`` / ``RunRecord``
    objects), then ``extra_rows``.

    Every run is checked with :func:`check_run_values` (a malformed one is a StoreError, exit 2). Labels default to
    the run directory names (the path where two runs share a name)."""
    loaded = [ref if hasattr(ref, "results") and hasattr(ref, "config") else load_table_run(ref) for ref in runs]
    for run in loaded:
        check_run_values(run)
    names = list(labels) if labels is not None else [
        r.path.name if r.path is not None else str(r.config.get("model") or "run") for r in loaded]
    if labels is None:
        dupes = {n for n in names if names.count(n) > 1}
        names = [str(r.path) if n in dupes else n for n, r in zip(names, loaded)]
    raw = [_run_row(run, name) for run, name in zip(loaded, names)]
    raw += [LeaderboardRow(e.label, dict(e.values), dict(e.marks), {k: k for k in e.values
                                                                    if k not in AVERAGE_COLUMNS.values()},
                           e.source) for e in extra_rows]
    task_columns = _columns(raw)
    groups = [g for g in AVERAGE_GROUPS if g != "8-task"
              or any(_family(t) in ("xlsum_ja", "mgsm") for r in raw for t in r.tasks)]
    out_rows = []
    computed: dict[str, dict[int, tuple[str, ...]]] = {g: {} for g in groups}  # group -> row -> member names
    for i, row in enumerate(raw):
        values: dict[str, float | None] = {}
        marks: dict[str, str] = {}
        tasks: dict[str, str] = {}
        for task in row.tasks:
            values[task], tasks[task] = row.values.get(task), task
            if row.marks.get(task):
                marks[task] = row.marks[task]
        for group in groups:
            col = AVERAGE_COLUMNS[group]
            given = row.values.get(col) if col in row.values else None
            if given is not None:  # a printed average (published rows): its members are not ours to compare
                values[col] = given
                if row.marks.get(col):
                    marks[col] = row.marks[col]
            else:
                values[col], avg_marks, members = _average(row, group)
                if values[col] is not None:
                    computed[group][i] = members
                    if avg_marks:
                        marks[col] = avg_marks
        out_rows.append(LeaderboardRow(row.label, values, marks, tasks, row.source, row.info))
    for group, members in computed.items():
        _mark_version_mismatches(out_rows, AVERAGE_COLUMNS[group], members)
    notes = dict(MARK_NOTES)
    for e in extra_rows:
        notes.update(e.notes)
    return Leaderboard(task_columns + [AVERAGE_COLUMNS[g] for g in groups], out_rows, notes)


def load_runs(runs: Sequence[str | os.PathLike[str]], extra_rows: Sequence[ExtraRow] = ()) -> "pandas.DataFrame":
    """The leaderboard of ``runs`` (and ``extra_rows``) as a DataFrame: one row per run, one float column per task
    name (``jnli-1.1-0.3``; different prompt versions are different columns) and average (NaN where missing), then
    ``marks`` (``"jnli-1.1-0.3 †; 4-task average †≠"``) and ``source``. The same table as ``jbench table --format
    csv``."""
    if isinstance(runs, (str, os.PathLike)):
        runs = [runs]
    return build_leaderboard(runs, extra_rows).to_frame()
