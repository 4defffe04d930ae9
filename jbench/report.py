"""Result tables and published-style averages.

:func:`card_table` reproduces the reference ``evaluator.make_table`` output byte for byte: it renders with
pytablewriter's ``MarkdownTableWriter``, the library the reference itself uses.

:func:`averages` follows ``scripts/compute_average_from_json.py``: per task ``acc*100`` if present, else
``exact_match``, else ``rouge2``; plain mean over the tasks of a group.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "AVERAGE_GROUPS",
    "TABLE_HEADERS",
    "averages",
    "averages_table",
    "card_table",
    "data_marks",
    "marks_footer",
    "run_tables",
    "header_line",
    "markdown_table",
    "task_average_value",
    "truncation_footer",
]

TABLE_HEADERS = ["Task", "Version", "Metric", "Value", "", "Stderr"]

# Task families of the published averages, in the order the groups extend each other.
AVERAGE_GROUPS: dict[str, tuple[str, ...]] = {
    "4-task": ("jcommonsenseqa", "jnli", "marc_ja", "jsquad"),
    "6-task": ("jcommonsenseqa", "jnli", "marc_ja", "jsquad", "jaqket_v2", "xwinograd_ja"),
    "8-task": ("jcommonsenseqa", "jnli", "marc_ja", "jsquad", "jaqket_v2", "xwinograd_ja", "xlsum_ja", "mgsm"),
}


# --------------------------------------------------------------------------------------------------------------
# Card table (reference make_table)
# --------------------------------------------------------------------------------------------------------------


def card_table(results: Mapping[str, Mapping[str, Any]], versions: Mapping[str, Any],
               marks: Mapping[str, str] | None = None,
               value_marks: Mapping[tuple[str, str], str] | None = None) -> str:
    """The reference's markdown results table, byte-identical (ends with a newline, no blank line after).

    One row per metric in the task's dict order, skipping ``details`` and ``*_stderr`` keys; values as
    ``"%.4f"``, then ``"±"`` and the ``"%.4f"`` stderr if ``<metric>_stderr`` is present and not None, else two
    empty cells. Task and version are blank on a task's 2nd+ rows. Versions are passed through raw (a float such
    as 1.1 prints as in the reference). A task missing from ``versions`` gets an empty version cell.
    """
    marks = marks or {}  # data marks (see data_marks); none for verified data, keeping the reference's bytes
    rows: list[list[Any]] = []
    for task, metrics in results.items():
        name: Any = task + (f" {marks[task]}" if marks.get(task) else "")
        version: Any = versions.get(task, "")
        for metric, value in metrics.items():
            if metric.endswith("_stderr") or metric == "details":
                continue
            stderr = metrics.get(metric + "_stderr")
            cell = "%.4f" % value + (f" {value_marks[(task, metric)]}" if (task, metric) in (value_marks or {})
                                     else "")  # e.g. § = equals a published number (issue 17)
            if stderr is not None:
                rows.append([name, version, metric, cell, "±", "%.4f" % stderr])
            else:
                rows.append([name, version, metric, cell, "", ""])
            name, version = "", ""
    return markdown_table(TABLE_HEADERS, rows)


def header_line(model: str, model_args: str, limit: Any, num_fewshot: Sequence[int] | int, batch_size: Any) -> str:
    """The line printed above the table by the reference ``main.py`` (Python ``str`` of each field)."""
    fewshot = list(num_fewshot) if isinstance(num_fewshot, (list, tuple)) else num_fewshot
    return f"{model} ({model_args}), limit: {limit}, num_fewshot: {fewshot}, batch_size: {batch_size}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """``pytablewriter.MarkdownTableWriter(headers=..., value_matrix=...).dumps()``: the writer the reference's
    ``make_table`` uses, so the card table is byte-identical by construction (tests/test_report.py pins the bytes
    of pytablewriter 1.2.1 as regression goldens, so a release that renders differently is caught).

    Cells may be str, int, float, bool or None. The writer types each cell as the reference does (``"1.0000"`` is
    the integer 1, a column of ``"0.5000"`` prints ``0.5``), pads to East-Asian display width and escapes ``|``.
    """
    from pytablewriter import MarkdownTableWriter

    writer = MarkdownTableWriter()
    writer.headers = list(headers)
    writer.value_matrix = [list(r) for r in rows]
    return writer.dumps()


def _display_width(s: str) -> int:
    """East-Asian display width (wide and full-width characters count 2), as markdown viewers align them."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


# --------------------------------------------------------------------------------------------------------------
# Averages (scripts/compute_average_from_json.py)
# --------------------------------------------------------------------------------------------------------------


def task_average_value(task_name: str, metrics: Mapping[str, Any]) -> float | None:
    """A task's contribution to the published averages: ``acc*100``, else ``exact_match`` (already 0-100), else
    ``rouge2``; None if the task has none of them. ``task_name`` is only for error messages."""
    for key, scale in (("acc", 100), ("exact_match", 1), ("rouge2", 1)):
        if key in metrics:
            value = metrics[key]
            if value is None:
                raise ValueError(f"task {task_name!r}: metric {key!r} is None")
            return value * scale if scale != 1 else value
    return None


def _family_of(task_name: str, family: str) -> bool:
    return task_name == family or task_name.startswith(family + "-")


def _group_members(results: Mapping[str, Mapping[str, Any]], families: Sequence[str]) -> list[str] | None:
    """The result keys for each family, in ``results`` order; None if a family is missing or ambiguous."""
    chosen: dict[str, str] = {}
    for fam in families:
        hits = [t for t in results if _family_of(t, fam)]
        if len(hits) != 1:
            return None
        chosen[fam] = hits[0]
    keep = set(chosen.values())
    return [t for t in results if t in keep]


def averages(results: Mapping[str, Mapping[str, Any]]) -> dict[str, float | None]:
    """``{"4-task": x, "6-task": y, "8-task": z}``: plain means of :func:`task_average_value` over each group.

    Tasks are matched by family (``jsquad`` matches ``jsquad`` and ``jsquad-1.1-0.2``). An average is None when a
    member family is missing, appears more than once (e.g. two JSQuAD versions), or has no usable metric. Values
    are summed in ``results`` order (left to right), as the reference script iterates the result file.
    """
    out: dict[str, float | None] = {}
    for group, families in AVERAGE_GROUPS.items():
        members = _group_members(results, families)
        if members is None:
            out[group] = None
            continue
        vals = [task_average_value(t, results[t]) for t in members]
        if any(v is None for v in vals):
            out[group] = None
            continue
        total: Any = 0
        for v in vals:
            total = total + v
        out[group] = total / len(vals)
    return out


#: families jbench can evaluate itself; the others of AVERAGE_GROUPS (xlsum_ja, mgsm) only come from lm-eval suites
JBENCH_FAMILIES = AVERAGE_GROUPS["6-task"]


def averages_table(results: Mapping[str, Mapping[str, Any]], marks: Mapping[str, str] | None = None) -> str:
    """Markdown table: one row per family (its task key and contribution, ``"%.2f"``) and one per average.

    Missing contributions and undefined averages show as ``-``. Families jbench cannot run (xlsum_ja, mgsm) and
    the 8-task average appear only when the results hold such a task. A task's ``marks`` (see :func:`data_marks`)
    follow its score, and every average that includes a marked task carries the marks too.
    """
    marks = marks or {}
    extra = [f for f in AVERAGE_GROUPS["8-task"] if f not in JBENCH_FAMILIES
             and any(_family_of(t, f) for t in results)]
    families: list[str] = list(JBENCH_FAMILIES) + extra
    rows: list[list[str]] = []
    for fam in families:
        hits = [t for t in results if _family_of(t, fam)]
        if len(hits) == 1:
            v = task_average_value(hits[0], results[hits[0]])
            rows.append([fam, hits[0], "-" if v is None else "%.2f" % v + _mark_suffix(marks, hits)])
        elif hits:
            rows.append([fam, ", ".join(hits), "- (ambiguous)"])
        else:
            rows.append([fam, "-", "-"])
    for group, value in averages(results).items():
        if group == "8-task" and not extra:
            continue
        members = _group_members(results, AVERAGE_GROUPS[group]) or []
        rows.append([f"**{group} average**", "", "-" if value is None else "%.2f" % value
                     + _mark_suffix(marks, members)])
    return _simple_markdown(["Family", "Task", "Score"], rows)


MADEUP_MARK = "†"
MISMATCH_MARK = "‡"
_MARK_TEXT = {MADEUP_MARK: "made-up rows (the bundled demo sample), not benchmark data: not comparable to any "
                           "published number",
              MISMATCH_MARK: "a data file failed its checksum (--allow-data-mismatch): not the reference data"}


def data_marks(data: Mapping[str, Any] | None) -> dict[str, str]:
    """Per task, the marks its numbers carry, from results.json ``config.data`` (the files each task read):
    ``†`` made-up rows, ``‡`` a file whose checksum did not match. Tasks on verified data get none."""
    out: dict[str, str] = {}
    for task, files in (data or {}).items():
        files = files if isinstance(files, list) else []
        mark = (MADEUP_MARK if any(isinstance(f, dict) and f.get("madeup") for f in files) else "") + \
               (MISMATCH_MARK if any(isinstance(f, dict) and f.get("mismatch") for f in files) else "")
        if mark:
            out[task] = mark
    return out


def _mark_suffix(marks: Mapping[str, str], tasks: Sequence[str]) -> str:
    found = "".join(m for m in (MADEUP_MARK, MISMATCH_MARK) if any(m in marks.get(t, "") for t in tasks))
    return f" {found}" if found else ""


def marks_footer(marks: Mapping[str, str]) -> str:
    """The footnotes that explain the marks in use (empty when no number is marked)."""
    used = [m for m in (MADEUP_MARK, MISMATCH_MARK) if any(m in v for v in marks.values())]
    lines = []
    for m in used:
        tasks = ", ".join(t for t, v in marks.items() if m in v)
        lines.append(f"{m} {_MARK_TEXT[m]} ({tasks})")
    return "\n".join(lines) + ("\n" if lines else "")


def truncation_footer(truncated: Mapping[str, Any] | None, max_length: Any = None) -> str:
    """Notes printed under the card table for tasks whose prompts did not fit the model context, e.g.
    ``note: 3 prompts of jsquad-1.1-0.2 were longer than the model context (2048 tokens) and were left-truncated,
    as the reference does``. Empty when nothing was truncated (the card table itself stays byte-identical)."""
    ctx = f" ({max_length} tokens)" if max_length else ""
    lines = []
    for task, n in (truncated or {}).items():
        if not isinstance(n, int) or n <= 0:
            continue
        verb = "were" if n != 1 else "was"
        lines.append(f"note: {n} prompt{'s' if n != 1 else ''} of {task} {verb} longer than the model context{ctx} "
                     f"and {verb} left-truncated, as the reference does")
    return "\n".join(lines) + ("\n" if lines else "")


def _simple_markdown(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max([3, _display_width(h)] + [_display_width(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "|" + "|".join(" " + c + " " * (w - _display_width(c)) + " " for c, w in zip(cells, widths)) + "|"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep] + [line(r) for r in rows]) + "\n"


def _published_marks(record: Mapping[str, Any], marks: Mapping[str, str]) -> tuple[dict[tuple[str, str], str],
                                                                                   str]:
    """``§`` on every value that equals, to 4 decimals, a published number of the same model, task and metric
    (``jbench published``), and its footnote naming the source. Never on made-up or mismatched data."""
    from jbench.published.registry import EXACT_MARK, EXACT_MARK_TEXT, exact_matches, model_of_run

    found = exact_matches(model_of_run(record.get("config", {})), record.get("results", {}))
    found = {k: v for k, v in found.items() if not marks.get(k[0])}
    if not found:
        return {}, ""
    where = "; ".join(f"{t} {m}: {src}" for (t, m), src in found.items())
    return {k: EXACT_MARK for k in found}, f"{EXACT_MARK} {EXACT_MARK_TEXT} ({where})\n"


def run_tables(record: Mapping[str, Any]) -> str:
    """What ``jbench eval`` and ``jbench table`` print for one run (a results.json): the header line, the card
    table with its data marks and truncation notes, and the averages."""
    cfg = record.get("config", {})
    marks = data_marks(cfg.get("data"))
    header = header_line("hf-causal", cfg.get("model_args", ""), cfg.get("limit"), cfg.get("num_fewshot", []),
                         cfg.get("batch_size"))
    published, published_note = _published_marks(record, marks)
    card = (card_table(record.get("results", {}), record.get("versions", {}), marks, published)
            + truncation_footer(record.get("truncated"), cfg.get("max_length")) + marks_footer(marks)
            + published_note)
    return f"{header}\n{card}\n{averages_table(record.get('results', {}), marks) + marks_footer(marks)}"
