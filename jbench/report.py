"""Result tables and published-style averages.

:func:`card_table` reproduces the reference ``evaluator.make_table`` output byte for byte. The reference renders
with pytablewriter 1.2.1 ``MarkdownTableWriter``; that library is not a runtime dependency here, so
:class:`_MarkdownTable` re-implements the part of its behaviour that these tables exercise:

* every cell is typed like ``typepy`` does (``"0.3164"`` -> real number, ``"1.0000"`` -> *integer* 1, ``""`` ->
  null string, ``1.0`` -> integer, ``"nan"`` -> NaN, ...), and a column gets a type from the mix of its cells;
* real-number columns are re-formatted with ``max`` decimal places over the column, where a value's places come
  from ``str(float(value))``: so a column holding only ``"0.5000"`` prints ``0.5``, and ``1.0`` prints ``1.0``
  next to ``1.1`` but ``1`` alone;
* width = max(3, header width, widest rendered cell) in East-Asian display cells (wide chars count 2);
* headers are centred (Python ``^`` rule: the extra space goes right), numbers right-aligned, everything else
  left-aligned, the separator row gets ``:`` on right-aligned columns; ``|`` inside cells becomes ``\\|``.

:func:`averages` follows ``scripts/compute_average_from_json.py``: per task ``acc*100`` if present, else
``exact_match``, else ``rouge2``; plain mean over the tasks of a group.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
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
               marks: Mapping[str, str] | None = None) -> str:
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
            if stderr is not None:
                rows.append([name, version, metric, "%.4f" % value, "±", "%.4f" % stderr])
            else:
                rows.append([name, version, metric, "%.4f" % value, "", ""])
            name, version = "", ""
    return markdown_table(TABLE_HEADERS, rows)


def header_line(model: str, model_args: str, limit: Any, num_fewshot: Sequence[int] | int, batch_size: Any) -> str:
    """The line printed above the table by the reference ``main.py`` (Python ``str`` of each field)."""
    fewshot = list(num_fewshot) if isinstance(num_fewshot, (list, tuple)) else num_fewshot
    return f"{model} ({model_args}), limit: {limit}, num_fewshot: {fewshot}, batch_size: {batch_size}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Render like pytablewriter 1.2.1 ``MarkdownTableWriter(headers=..., value_matrix=...).dumps()``.

    Cells may be str, int, float, bool or None (other types are rendered with ``str``). Rows are padded with
    None / truncated to the header length, as the writer's "header aligned" matrix formatting does.
    """
    return _MarkdownTable(list(headers), [list(r) for r in rows]).render()


# --------------------------------------------------------------------------------------------------------------
# pytablewriter / dataproperty / typepy emulation
# --------------------------------------------------------------------------------------------------------------

# typecodes (bit values as in typepy, used for the column-type bitmap rules)
_INTEGER, _REAL, _STRING, _NULL, _INF, _NAN, _BOOL = 1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 5, 1 << 6, 1 << 7
_NUMBER_BITS = _INTEGER | _REAL | _INF | _NAN
_FLOAT_BITS = _REAL | _INF | _NAN
_RE_LINE_BREAK = re.compile(r"\r\n|\n")
_RE_E = re.compile("[eE]")
_RE_SCI_SHORT = re.compile(r"^-?\d+(?:\.\d*)?[eE][+\-]?\d{,2}$")  # real-number level 1 accepts <= 2 exp digits
_RE_SCI_LONG = re.compile(r"^-?\d+(?:\.\d*)?[eE][+\-]?\d{3,}$")  # integer level 1 rejects >= 3 exp digits
_RE_THOUSAND = re.compile(r"\d{1,3}(,\d{1,3})+")


@dataclass
class _Cell:
    typecode: int
    data: Any  # int for _INTEGER, Decimal for _REAL/_INF/_NAN, str for _STRING/_NULL, bool for _BOOL

    def decimal_places(self) -> int | None:
        """dataproperty's ``get_decimal_places`` (0 for integers; digits after '.' of ``str(abs(float(x)))``)."""
        if self.typecode == _INTEGER:
            return 0
        if self.typecode != _REAL:
            return None
        text = str(abs(float(self.data)))
        if "." in text:
            return min(len(text.split(".")[1]), 99)
        m = re.search(r"[\d\.]+[eE]\-\d+", text)
        if m:
            return min(int(re.split(r"[eE]\-", text)[1]), 99)
        return 0


def _preprocess(value: Any) -> Any:
    """The writer's string preprocessing: tabs -> 2 spaces, line breaks -> ' ', dequote a "..." / '...' pair."""
    if not isinstance(value, str):
        return value
    s = _RE_LINE_BREAK.sub(" ", value.replace("\t", "  "))
    if s and s[0] == s[-1] and s[0] in "'\"" and s.count(s[0]) == 2:
        s = s[1:-1]
    return s


def _to_decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(value)
    except (InvalidOperation, ValueError, TypeError):
        return None


def _is_inf(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        return Decimal(value).is_infinite()
    except OverflowError:
        return True
    except (InvalidOperation, ValueError, TypeError):
        return False


def _is_nan(value: Any) -> bool:
    if isinstance(value, str):
        return False
    try:
        return math.isnan(value)
    except (TypeError, OverflowError, ValueError):
        return False


def _real_l1(value: Any) -> Decimal | None:
    """typepy ``RealNumber(strict_level=1)``: finite, non-integral floats / number strings."""
    if isinstance(value, bool) or isinstance(value, int) or _is_nan(value) or _is_inf(value):
        return None
    if isinstance(value, str) and _RE_E.search(value) and not _RE_SCI_SHORT.search(value):
        return None
    if isinstance(value, float):
        return Decimal(str(value)) if not value.is_integer() else None
    conv = _to_decimal(value)
    if conv is None:
        return None
    try:
        return None if float(conv).is_integer() else conv  # float() of a huge value is inf: "real" in typepy
    except ValueError:  # signalling NaN
        return None


def _integer_l1(value: Any) -> int | None:
    """typepy ``Integer(strict_level=1)``: ints, integral floats, integral number strings ('1.0000' -> 1)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        return int(value) if value.is_integer() else None
    if not isinstance(value, str):
        return None
    if _is_inf(value) or _real_l1(value) is not None or _RE_SCI_LONG.search(value):
        return None
    s = value.replace(",", "") if _RE_THOUSAND.search(value) else value
    d = _to_decimal(s)
    if d is None or not d.is_finite():
        return None
    return int(d)


def _classify(raw: Any, string_hint: bool) -> _Cell:
    """Type one cell as dataproperty's extractor does for pytablewriter (its strict-level map and type order)."""
    # a column whose most common type so far is "string" keeps non-blank strings as strings
    if string_hint and isinstance(raw, str) and raw.strip():
        s = _preprocess(raw)
        if s.strip():
            return _Cell(_STRING, s)
    if raw is None or (isinstance(raw, str) and raw == ""):
        return _Cell(_NULL, "")
    if isinstance(raw, bool):
        return _Cell(_BOOL, raw)
    v = _preprocess(raw)
    i = _integer_l1(v)
    if i is not None:
        return _Cell(_INTEGER, i)
    if _is_inf(v):
        return _Cell(_INF, Decimal("Infinity"))  # the writer maps every infinity to +inf
    if _is_nan(v) or (isinstance(v, str) and (d := _to_decimal(v)) is not None and d.is_nan()):
        return _Cell(_NAN, Decimal("NaN"))
    r = _real_l1(v)
    if r is not None:
        return _Cell(_REAL, r)
    if isinstance(v, str):
        if v.casefold() in ("true", "false"):
            return _Cell(_BOOL, v.casefold() == "true")
        if not v.strip():
            return _Cell(_NULL, v)
        return _Cell(_STRING, v)
    return _Cell(_STRING, str(v))


def _column_typecode(bitmap: int) -> int:
    """dataproperty ``ColumnDataProperty.__get_typecode_from_bitmap``."""

    def mixed(bits: int) -> bool:
        return bool(bitmap & bits and bitmap & ~bits)

    if not mixed(_NUMBER_BITS | _NULL) and (
        bin(bitmap & (_FLOAT_BITS | _NULL)).count("1") >= 2 or bin(bitmap & _NUMBER_BITS).count("1") >= 2
    ):
        return _REAL
    if mixed(_BOOL):
        return _STRING
    for code in (_STRING, _REAL, _INTEGER, _BOOL, _INF, _NAN, _NULL):
        if bitmap & code:
            return code
    return _STRING


def _display_width(s: str) -> int:
    """East-Asian display width with ambiguous characters counted as 1 (pytablewriter's default)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


class _MarkdownTable:
    _MIN_WIDTH = 3

    def __init__(self, headers: list[str], rows: list[list[Any]]) -> None:
        self.headers = [_preprocess(h.strip('"')) if isinstance(h, str) else str(h) for h in headers]
        ncol = len(headers)
        self.rows = [(r + [None] * ncol)[:ncol] for r in rows]
        self.ncol = ncol

    def _type_column(self, values: list[Any]) -> list[_Cell]:
        cells: list[_Cell] = []
        counts: dict[int, int] = {}
        for v in values:
            most_common = max(counts, key=lambda k: counts[k]) if counts else None  # first wins ties
            cell = _classify(v, string_hint=most_common == _STRING)
            counts[cell.typecode] = counts.get(cell.typecode, 0) + 1
            cells.append(cell)
        return cells

    @staticmethod
    def _render(cell: _Cell, col_type: int, places: int | None) -> str:
        """``ColumnDataProperty.dp_to_str``: strings verbatim, numbers in the column's format."""
        if cell.typecode == _STRING:
            return cell.data
        real_fmt = "{:f}" if places is None else "{:.%df}" % places
        fmts = {_INTEGER: "{:d}", _REAL: real_fmt, _INF: real_fmt, _NAN: real_fmt, _BOOL: "{}"}
        data = cell.data
        if col_type != cell.typecode and col_type not in (_STRING, _BOOL):
            # convert to the column type; on failure the cell keeps its own format
            if col_type == _REAL and cell.typecode == _INTEGER:
                data = Decimal(data)
            elif col_type == _INTEGER and cell.typecode == _REAL:
                data = int(data)
            else:
                return fmts.get(cell.typecode, "{:s}").format(data)
        fmt = fmts.get(cell.typecode if col_type == _STRING else col_type, "{:s}")
        try:
            return fmt.format(data)
        except (ValueError, TypeError):
            return str(data)

    def render(self) -> str:
        columns = [self._type_column([r[c] for r in self.rows]) for c in range(self.ncol)]
        texts: list[list[str]] = []
        aligns_col: list[str] = []
        widths: list[int] = []
        col_types: list[int] = []
        for c, cells in enumerate(columns):
            bitmap = 0
            for cell in cells:
                bitmap |= cell.typecode
            col_type = _column_typecode(bitmap)
            dps = [d for cell in cells if (d := cell.decimal_places()) is not None]
            places = min(100, max(dps)) if dps else None
            rendered = [self._render(cell, col_type, places) for cell in cells]
            width = max([self._MIN_WIDTH, _display_width(self.headers[c])] + [_display_width(t) for t in rendered])
            texts.append(rendered)
            widths.append(width)
            col_types.append(col_type)
            aligns_col.append(">" if col_type in (_INTEGER, _REAL) else "<")

        def pad(text: str, align: str, width: int, is_str: bool) -> str:
            # the writer pads by code points, subtracting the wide-character surplus for strings only
            w = max(width - (_display_width(text) - len(text)), 0) if is_str else width
            return ("{:%s%ds}" % (align, w) if w > 0 else "{:%ss}" % align).format(text).replace("|", r"\|")

        lines = ["|" + "|".join(pad(h, "^", widths[c], bool(h)) for c, h in enumerate(self.headers)) + "|"]
        lines.append(
            "|" + "|".join(("-" * (w - 1) + ":") if a == ">" else "-" * w for w, a in zip(widths, aligns_col)) + "|"
        )
        for r in range(len(self.rows)):
            items = []
            for c in range(self.ncol):
                cell = columns[c][r]
                if col_types[c] == _STRING and cell.typecode in (_INTEGER, _REAL):
                    align = ">"
                else:
                    align = aligns_col[c]
                items.append(pad(texts[c][r], align, widths[c], cell.typecode == _STRING))
            lines.append("|" + "|".join(items) + "|")
        return "\n".join(lines) + "\n"


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


def run_tables(record: Mapping[str, Any]) -> str:
    """What ``jbench eval`` and ``jbench table`` print for one run (a results.json): the header line, the card
    table with its data marks and truncation notes, and the averages."""
    cfg = record.get("config", {})
    marks = data_marks(cfg.get("data"))
    header = header_line("hf-causal", cfg.get("model_args", ""), cfg.get("limit"), cfg.get("num_fewshot", []),
                         cfg.get("batch_size"))
    card = (card_table(record.get("results", {}), record.get("versions", {}), marks)
            + truncation_footer(record.get("truncated"), cfg.get("max_length")) + marks_footer(marks))
    return f"{header}\n{card}\n{averages_table(record.get('results', {}), marks) + marks_footer(marks)}"
