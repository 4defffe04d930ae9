"""Published numbers as jbench prints its own: the reference card table and the 4-/6-/8-task averages
(:mod:`jbench.report`), one block per source, plus the audit of every average a source prints.

Why reuse :mod:`jbench.report`: a published number and a measured one must be read in the same layout, with the same
average rule (the reference's ``compute_average_from_json``: ``acc*100``, else ``exact_match``, else ``rouge2``).
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from jbench.published.registry import Source, models, sources_for
from jbench.report import AVERAGE_GROUPS, averages, averages_table, card_table, task_average_value

NUMBER_FIELDS = ["model", "source", "kind", "task", "task_version", "prompt_version", "shots", "metric", "value",
                 "stderr", "n", "model_args", "dtype", "use_fast", "settings_unknown", "url", "path", "commit"]
#: |computed − printed| up to half a unit of the printed 2 decimals is the same number; up to 0.02 is explained by
#: rounding each task to 2 decimals before averaging (rinna's tables do that); more cannot come from these numbers.
SAME, ROUNDING = 0.005 + 1e-9, 0.02 + 1e-9


def _flag(value: Any) -> str:
    return "unknown" if value is None else str(value)


def settings_line(s: Source) -> str:
    """One line: prompt version(s), shots per task, dtype, tokenizer, backend, and what the source leaves unstated."""
    pvs = sorted({t.prompt_version for t in s.tasks if t.prompt_version})
    shots = ", ".join(f"{t.task} {_flag(t.shots)}" for t in s.tasks)
    parts = [f"prompt {'/'.join(pvs) if pvs else 'unknown'}", f"shots {shots or '-'}",
             f"dtype {s.dtype or 'unknown'}" + (f" ({s.quantization})" if s.quantization else ""),
             f"use_fast={'unknown' if s.kind == 'card' and s.use_fast is None else _flag(s.use_fast)}"]
    if s.trust_remote_code:
        parts.append("trust_remote_code=True")
    if s.backend:
        parts.append(f"backend {s.backend}")
    line = "; ".join(parts)
    if s.settings_unknown:
        line += f" — SETTINGS UNKNOWN ({', '.join(s.settings_unknown)} not stated): never used for an exact verdict"
    return line


def average_rows(s: Source) -> list[dict[str, Any]]:
    """Per average the source prints: printed, computed from its own per-task numbers, and whether they agree."""
    results = s.results()
    computed: dict[str, float | None] = dict(averages(results)) if results else {}
    if results and "7-task (excl. XLSum)" in s.printed_averages:
        vals = [task_average_value(t, m) for t, m in results.items() if not t.startswith("xlsum_ja")]
        computed["7-task (excl. XLSum)"] = (sum(v for v in vals if v is not None) / len(vals)
                                            if vals and None not in vals else None)
    rows = []
    for name, printed in s.printed_averages.items():
        c = computed.get(name)
        if c is None:
            verdict = "not computable (the source prints no per-task numbers)" if not results else \
                "not computable (a task of the average is missing)"
        elif abs(c - printed) <= SAME:
            verdict = "reproduced"
        elif abs(c - printed) <= ROUNDING:
            verdict = "reproduced up to per-task rounding"
        else:
            verdict = "IRREPRODUCIBLE from its own numbers"
        rows.append({"source": s.id, "model": s.model, "average": name, "printed": printed, "computed": c,
                     "verdict": verdict})
    return rows


def _other_sources_line(s: Source, name: str) -> str | None:
    """For an average the source prints but cannot be recomputed: what the model's other sources give."""
    out = []
    for other in models().get(s.model, []):
        if other is s or not other.tasks:
            continue
        v = averages(other.results()).get(name)
        if v is not None:
            out.append(f"{v:.2f} in {other.id}")
    return f"{name}: " + "; ".join(out) if out else None


def source_block(s: Source, index: int | None = None) -> str:
    """Markdown for one source: provenance, settings, the card table and averages as jbench prints its own."""
    head = f"### {index}. {s.title}" if index is not None else f"### {s.title}"
    prov = f"source: {s.url}" + (f" (path {s.path} at commit {s.commit[:12]})" if s.commit and s.path else "")
    lines = [head, "", prov, f"model args: {s.model_args}" if s.model_args else "model args: not stated",
             f"settings: {settings_line(s)}", f"select with: --source {s.short()}"
             + ("" if s.kind != "card" else f" (or --source {s.id})"), ""]
    results = s.results()
    if results:
        lines += [card_table(results, s.versions()), averages_table(results)]
    else:
        lines.append("(no per-task numbers: the source prints averages only)\n")
    for row in average_rows(s):
        c = "-" if row["computed"] is None else "%.2f" % row["computed"]
        lines.append(f"printed {row['average']} average: {row['printed']:.2f} (computed from its numbers: {c}; "
                     f"{row['verdict']})")
        if row["computed"] is None:
            other = _other_sources_line(s, row["average"])
            if other:
                lines.append(f"  other sources for this model: {other}")
    lines += [f"note: {n}" for n in s.notes]
    return "\n".join(lines).rstrip() + "\n"


def model_blocks(model: str, sources: list[Source]) -> str:
    parts = [f"## {model}: {len(sources)} published source{'s' if len(sources) != 1 else ''}\n"]
    parts += [source_block(s, i) for i, s in enumerate(sources, 1)]
    return "\n".join(parts)


def number_rows(sources: list[Source]) -> list[dict[str, Any]]:
    """One row per published number, every field of its provenance (csv/json output)."""
    rows = []
    for s in sources:
        for t in s.tasks:
            for metric, v in t.metrics.items():
                rows.append({"model": s.model, "source": s.id, "kind": s.kind, "task": t.task,
                             "task_version": t.version, "prompt_version": t.prompt_version, "shots": t.shots,
                             "metric": metric, "value": v["value"], "stderr": v.get("stderr"), "n": t.n,
                             "model_args": s.model_args, "dtype": s.dtype, "use_fast": s.use_fast,
                             "settings_unknown": ";".join(s.settings_unknown), "url": s.url, "path": s.path,
                             "commit": s.commit})
        for name, value in s.printed_averages.items():
            rows.append({"model": s.model, "source": s.id, "kind": s.kind, "task": f"{name} average",
                         "task_version": None, "prompt_version": None, "shots": None, "metric": "average",
                         "value": value, "stderr": None, "n": None, "model_args": s.model_args, "dtype": s.dtype,
                         "use_fast": s.use_fast, "settings_unknown": ";".join(s.settings_unknown), "url": s.url,
                         "path": s.path, "commit": s.commit})
    return rows


def to_csv(rows: list[dict[str, Any]], fields: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r.get(k) for k in fields})
    return buf.getvalue()


def render_model(model: str, sources: list[Source], fmt: str) -> str:
    model = sources[0].model if sources else model  # the registry's spelling, whatever case the user typed
    if fmt == "csv":
        return to_csv(number_rows(sources), NUMBER_FIELDS)
    if fmt == "json":
        return json.dumps({"model": model, "sources": [
            {**s.to_json(), "averages": {k: v for k, v in averages(s.results()).items()} if s.tasks else {},
             "printed_average_checks": average_rows(s)} for s in sources]}, ensure_ascii=False, indent=2)
    return model_blocks(model, sources)


def render_models(fmt: str) -> str:
    """Every model with published numbers and its sources."""
    table = models()
    rows = [{"model": m, "sources": len(ss), "ids": " ; ".join(f"{s.short()} ({s.kind})" for s in ss),
             "tasks": len({t.family for s in ss for t in s.tasks}),
             "settings": "known" if any(s.settings_known for s in ss) else "unknown",
             "on_hub": any(s.on_hub for s in ss)} for m, ss in sorted(table.items(), key=lambda kv: kv[0].lower())]
    if fmt == "csv":
        return to_csv(rows, ["model", "sources", "ids", "tasks", "settings", "on_hub"])
    if fmt == "json":
        return json.dumps({"models": [{**r, "source_ids": [s.id for s in table[r["model"]]]} for r in rows]},
                          ensure_ascii=False, indent=2)
    out = ["| Model | Sources | Task families | Settings | On the Hub |", "|---|---|---|---|---|"]
    out += [f"| {r['model']} | {r['ids']} | {r['tasks']} | {r['settings']} | {'yes' if r['on_hub'] else 'no'} |"
            for r in rows]
    n_numbers = sum(len(t.metrics) for ss in table.values() for s in ss for t in s.tasks)
    out.append(f"\n{len(rows)} models, {sum(len(v) for v in table.values())} sources, {n_numbers} per-task numbers. "
               "`jbench published MODEL` prints one model's numbers; `jbench published --averages` audits every "
               "printed average.")
    return "\n".join(out) + "\n"


def render_average_audit(fmt: str, model: str | None = None) -> str:
    """Every average (only ``model``'s sources when given): what each source prints against what its own numbers
    give (compute_average_from_json), and every reference result file's own 4-/6-/8-task averages."""
    rows: list[dict[str, Any]] = []
    for ss in ([sources_for(model)] if model is not None else models().values()):
        for s in ss:
            printed = average_rows(s)
            for r in printed:
                other = _other_sources_line(s, r["average"]) if r["computed"] is None else None
                if other:
                    r["verdict"] += f"; the model's other sources give {other.split(': ', 1)[1]}"
            rows += printed
            if not s.printed_averages and s.tasks:
                for name, v in averages(s.results()).items():
                    if v is not None and name in AVERAGE_GROUPS:
                        rows.append({"source": s.id, "model": s.model, "average": name, "printed": None,
                                     "computed": v, "verdict": "computed (the source prints no average)"})
    if fmt == "csv":
        return to_csv(rows, ["model", "source", "average", "printed", "computed", "verdict"])
    if fmt == "json":
        return json.dumps({"averages": rows}, ensure_ascii=False, indent=2)
    out = ["| Model | Source | Average | Printed | Computed | Verdict |", "|---|---|---|---|---|---|"]
    for r in rows:
        p = "-" if r["printed"] is None else "%.2f" % r["printed"]
        c = "-" if r["computed"] is None else "%.2f" % r["computed"]
        out.append(f"| {r['model']} | {r['source']} | {r['average']} | {p} | {c} | {r['verdict']} |")
    return "\n".join(out) + "\n"
