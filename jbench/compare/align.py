"""Joining runs for a comparison: which tasks both runs have, the same documents asked the same way, the same
tokenizer, and the labels the report uses.

It exists apart from :mod:`jbench.compare.analysis` because these are comparability checks, not statistics: each
failure is a :class:`jbench.errors.ComparisonError` (exit 2) raised before any number is computed.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from jbench.compare.model import task_family
from jbench.errors import ComparisonError, TokenizerMismatchError
from jbench.records import GOLD, GOLDS
from jbench.results import Run, load_run
from jbench.textdiff import first_diff

__all__ = ["align", "as_run", "check_task_sets", "check_tokenizers", "labels_for", "short_model"]


def _fewshot(run: Run) -> dict[str, Any]:
    tasks, shots = run.config.get("tasks"), run.config.get("num_fewshot")
    if isinstance(tasks, list) and isinstance(shots, list) and len(tasks) == len(shots):
        return dict(zip(tasks, shots))
    return {}


def check_task_sets(original: Run, variant: Run, label: str, tasks: list[str], notes: list[str]) -> list[str]:
    """Tasks both runs have; a task present under another version or prompt version is an error."""
    vtasks = list(variant.results)
    common = []
    for t in tasks:
        if t in variant.results:
            common.append(t)
            continue
        others = [v for v in vtasks if task_family(v) == task_family(t) and v not in original.results]
        if others:
            raise ComparisonError(
                f"task {task_family(t)} was run as {t} in the original but as {', '.join(others)} in {label}: "
                "different task or prompt versions score different prompts and cannot be compared",
                where=f"{original.path} vs {variant.path}",
                fix=f"rerun {label} with --tasks {t} (or the original with the variant's task name)")
        notes.append(f"{label}: task {t} is missing from run {variant.path.name}; it is left out for this variant")
    ov, vv = original.versions, variant.versions
    ofs, vfs = _fewshot(original), _fewshot(variant)
    opv = original.config.get("prompt_versions") or {}
    vpv = variant.config.get("prompt_versions") or {}
    for t in common:
        for what, od, vd in (("task version", ov, vv), ("number of few-shot examples", ofs, vfs),
                             ("prompt version", opv, vpv)):
            if t in od and t in vd and od[t] != vd[t]:
                raise ComparisonError(
                    f"{t}: the {what} differs (original {od[t]!r}, {label} {vd[t]!r}), so the runs did not "
                    "score the same prompts", where=f"{original.path} vs {variant.path}",
                    fix=f"rerun {label} with the original's settings for {t}")
    if not common:
        raise ComparisonError(f"{label} shares no task with the original",
                              where=f"{original.path} vs {variant.path}",
                              fix="compare runs of the same tasks (see the 'results' keys of each results.json)")
    return common


def _keyed(rows: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """Rows by doc_id; a repeated doc_id gets its occurrence number (both runs enumerate the same data order)."""
    seen: Counter[Any] = Counter()
    out: dict[Any, dict[str, Any]] = {}
    for row in rows:
        doc = row.get("doc_id", row.get("doc_index"))
        doc = str(doc)
        key = doc if seen[doc] == 0 else f"{doc}#{seen[doc]}"
        seen[doc] += 1
        out[key] = row
    return out


def _diff_snippet(x: str, y: str) -> str:
    i = first_diff(x, y)
    return f"at character {i}: {x[max(0, i - 20): i + 30]!r} vs {y[max(0, i - 20): i + 30]!r}"


def align(task: str, orig: list[dict[str, Any]], var: list[dict[str, Any]], label: str, original: Run,
           variant: Run) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    ka, kb = _keyed(orig), _keyed(var)
    where = f"{original.path / f'samples_{task}.jsonl'} vs {variant.path / f'samples_{task}.jsonl'}"
    if ka.keys() != kb.keys():
        only_a = [k for k in ka if k not in kb]
        only_b = [k for k in kb if k not in ka]
        raise ComparisonError(
            f"{task}: the runs scored different documents (original {len(ka)}, {label} {len(kb)}; "
            f"{len(only_a)} only in the original, e.g. {only_a[:3]}; {len(only_b)} only in {label}, "
            f"e.g. {only_b[:3]})", where=where,
            fix="rerun both with the same data files and the same --limit (a paired comparison needs the same "
                "questions)")
    pa, pb = [], []
    bad: list[str] = []
    for key in ka:  # the original's order
        ra, rb = ka[key], kb[key]
        if ra.get("prompt") != rb.get("prompt"):
            bad.append(f"doc {key}: prompt differs {_diff_snippet(str(ra.get('prompt')), str(rb.get('prompt')))}")
        elif ra.get("continuations") != rb.get("continuations"):
            bad.append(f"doc {key}: answer choices differ ({ra.get('continuations')} vs {rb.get('continuations')})")
        elif ra.get(GOLD) != rb.get(GOLD) or ra.get(GOLDS) != rb.get(GOLDS):
            bad.append(f"doc {key}: gold answer differs")
        pa.append(ra)
        pb.append(rb)
    if bad:
        raise ComparisonError(
            f"{task}: {len(bad)} of {len(ka)} documents were not asked the same way in {label} "
            f"(first: {bad[0]})", where=where,
            fix="rerun both with the same task version, prompt version, few-shot count and seed, and the same "
                "SYSTEM_PROMPT / DYNAMIC_MAX_LENGTH settings and max length")
    return pa, pb



def labels_for(original: Run, variants: list[Run]) -> tuple[str, list[str]]:
    def base(run: Run) -> str:
        return str(run.config.get("variant") or run.path.name)

    olabel = base(original)
    raw = [base(v) for v in variants]
    counts = Counter(raw + [olabel])
    labels = [f"{lab} ({v.path.name})" if counts[lab] > 1 else lab for lab, v in zip(raw, variants)]
    if len(set(labels)) != len(labels):  # same variant name and the same directory name: number them
        labels = [f"{lab} #{i + 1}" for i, lab in enumerate(labels)]
    return olabel, labels


def short_model(model: str) -> str:
    return Path(model).name if model.startswith(("/", ".", "~")) else model


def as_run(run: Run | str | os.PathLike[str]) -> Run:
    return run if isinstance(run, Run) else load_run(run)


def check_tokenizers(orig: Run, vruns: list[Run], labels: list[str], allow: bool) -> dict[str, list[str]]:
    """Variant label -> tokenizer identity fields that differ from the original's; raises unless ``allow``.

    Uses :func:`jbench.models.tokenizer.identity_diff`, which also reports a field that a run does not record
    (runs from before identities were stored), so an unknown tokenizer is never taken as the same one. A run
    compared with itself (same directory) is trivially like for like.
    """
    from jbench.models.tokenizer import identity_diff

    out: dict[str, list[str]] = {}
    where: dict[str, Path] = {}
    for run, label in zip(vruns, labels):
        if run.path.resolve() == orig.path.resolve():
            continue
        diff = identity_diff(orig.config.get("tokenizer"), run.config.get("tokenizer"))
        if diff:
            out[label], where[label] = diff, run.path
    if out and not allow:
        detail = "; ".join(f"{label} ({where[label]}): " + ", ".join(d) for label, d in out.items())
        raise TokenizerMismatchError(
            f"the tokenizer of {len(out)} variant run(s) differs from the original's "
            f"(field: original vs variant): {detail}. Their scores would mix a tokenization change with the "
            "quantization effect" + (" ('unknown': that run's results.json does not record the field, e.g. a run "
                                     "from before jbench recorded tokenizer identities)"
                                     if any("unknown" in x for d in out.values() for x in d) else ""),
            where=str(orig.path),
            fix="rerun the variant with the original's tokenizer settings (same tokenizer files and use_fast), or "
                "compare anyway with --allow-tokenizer-mismatch (allow_tokenizer_mismatch=True); the report then "
                "shows the difference at the top")
    return out

