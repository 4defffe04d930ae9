"""Published numbers as extra rows of the side-by-side leaderboard (``jbench table``): under the runs, one row per
published source of a run's model, on the averages' 0-100 scale, so measured and published read in one table.

Which sources: those with a task of the same name as one of the run's (same task version and prompt version),
plus any source that prints only averages (e.g. a model card's 4-/6-task averages). A source whose settings are
unknown carries the mark ``?``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jbench.leaderboard import AVERAGE_COLUMNS, ExtraRow
from jbench.published.registry import PublishedError, Source, model_of_run, sources_for
from jbench.report import task_average_value

UNKNOWN_MARK = "?"
UNKNOWN_NOTE = ("published with settings the source does not state (prompt version, shots, dtype…): not an exact "
                "target")
_GROUP_COLUMN = {"4-task": AVERAGE_COLUMNS["4-task"], "6-task": AVERAGE_COLUMNS["6-task"],
                 "8-task": AVERAGE_COLUMNS["8-task"]}


def _row(s: Source, tasks: set[str] | None) -> ExtraRow:
    values: dict[str, float | None] = {}
    for t in s.tasks:
        if tasks is None or t.task in tasks:
            row = {m: v["value"] for m, v in t.metrics.items()}
            try:
                values[t.task] = task_average_value(t.task, row)
            except (TypeError, ValueError):
                values[t.task] = None
    for name, value in s.printed_averages.items():
        if name in _GROUP_COLUMN:
            values[_GROUP_COLUMN[name]] = value
    marks = {k: UNKNOWN_MARK for k in values} if s.settings_unknown else {}
    label = f"published {s.short()}: {s.model}"
    return ExtraRow(label=label, values=values, marks=marks, source=s.url,
                    notes={UNKNOWN_MARK: UNKNOWN_NOTE} if s.settings_unknown else {})


def published_rows(runs: Sequence[Any]) -> list[ExtraRow]:
    """Extra rows for the published sources of the runs' models (loaded ``Run`` objects or references)."""
    from jbench.results import load_run

    out: list[ExtraRow] = []
    seen: set[str] = set()
    for ref in runs:
        run = ref if hasattr(ref, "config") else load_run(ref)
        model = model_of_run(run.config)
        try:
            sources = sources_for(model) if model else []
        except PublishedError:
            continue
        names = set(run.results)
        for s in sources:
            if s.id in seen:
                continue
            if any(t.task in names for t in s.tasks):
                out.append(_row(s, names))
            elif not s.tasks and s.printed_averages:
                out.append(_row(s, None))
            else:
                continue
            seen.add(s.id)
    return out
