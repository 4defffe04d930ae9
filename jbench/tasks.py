"""Task definitions loaded from the YAML files in ``tasks/``.

A task is data: ``{family}-{version}-{prompt_version}`` (e.g. ``jcommonsenseqa-1.1-0.3``) is one merged dict of
templates and settings. The engine never branches on a task name; adding a prompt version is a YAML edit.
Merge order for one task: family ``defaults`` < version ``defaults`` < family ``prompts[pv]`` < version
``prompts[pv]`` (``vars`` dicts merge key by key).

Every name must also have a row in its family's ``reference`` table: either where it comes from in JP-stable
(``exists``: the reference commits that register the name; ``follows``: the commits whose rendering jbench
reproduces) or ``origin: jbench`` with a ``why``. A name jbench invents can then never pass for a reference one.
"""

from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml

from jbench.errors import TaskError

OutputType = Literal["multiple_choice", "generate_until"]
Sampler = Literal["random", "stratified", "none"]
Origin = Literal["reference", "jbench"]

# Keys a merged task may hold; anything else in a YAML file is a typo and is refused.
_KNOWN_KEYS = {
    "doc_id", "choices", "gold", "golds", "target", "description", "doc_to_text", "fewshot_sep", "until",
    "sampler", "metrics", "vars", "derived", "strict", "fewshot_fit", "default_system_prompt",
}
# Keys of a row of a family's ``reference`` table (one row per task name, keyed "{version}-{pv}").
_REFERENCE_KEYS = {"origin", "exists", "follows", "why"}


@dataclass(frozen=True)
class TaskSpec:
    """One concrete task: everything the request builder and the scorer need, as plain data."""

    name: str
    family: str
    version: str
    prompt_version: str
    dataset: str
    output_type: OutputType
    default_shots: int
    description: str
    doc_to_text: str
    target: str
    fewshot_sep: str
    doc_id: str
    sampler: Sampler
    metrics: tuple[str, ...]
    choices: str | None = None
    gold: str | None = None
    golds: str | None = None
    until: str | None = None
    strict: bool = False
    fewshot_fit: bool = False
    vars: dict[str, Any] = field(default_factory=dict)
    derived: dict[str, str] = field(default_factory=dict)
    source: str = ""
    # The ``SYSTEM_PROMPT`` default of the reference era this name follows (None: jbench.prompts' HEAD default).
    # jnli-1.1-0.6 only ever existed with Llama-2's English default, so it carries that text.
    default_system_prompt: str | None = None
    # "reference": the name exists in JP-stable; "jbench": a jbench addition (no reference counterpart).
    origin: Origin = "reference"
    # Reference commits that register this name ("" for jbench additions), and those whose rendering jbench
    # reproduces for it (the era it follows); for additions ``follows`` says why the name exists.
    era: str = ""
    follows: str = ""

    @property
    def is_reference(self) -> bool:
        """False for jbench additions, which ``jbench tasks`` marks so they are not taken for JP-stable names."""
        return self.origin == "reference"

    @property
    def version_number(self) -> float:
        """The reference prints VERSION as a float (1.1, 1.0, 0.2) in ``versions``."""
        return float(self.version)

    @property
    def is_generation(self) -> bool:
        return self.output_type == "generate_until"


def tasks_dir() -> Path:
    """Where the task YAML files live: ``JBENCH_TASKS_DIR``, the checkout's ``tasks/``, or the installed copy."""
    env = os.environ.get("JBENCH_TASKS_DIR")
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve().parent.parent / "tasks", Path(sys.prefix) / "share" / "jbench" / "tasks"]
    for c in candidates:
        if c.is_dir() and any(c.glob("*.yaml")):
            return c
    raise TaskError(
        "no task definitions found",
        where=", ".join(str(c) for c in candidates),
        fix="reinstall jbench, or point JBENCH_TASKS_DIR at the tasks/ folder of a jbench checkout",
    )


def _merge(*layers: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if key in ("vars", "derived") and isinstance(value, dict):
                out[key] = {**out.get(key, {}), **value}
            else:
                out[key] = value
    return out


def _task_name(family: str, version: str, pv: str) -> str:
    return family if pv == "" else f"{family}-{version}-{pv}"


def _build_family(path: Path) -> dict[str, TaskSpec]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise TaskError(f"task file is not valid YAML: {err}", where=str(path)) from err
    where = str(path)
    for key in ("family", "dataset", "output_type", "versions"):
        if key not in raw:
            raise TaskError(f"task file lacks the required key {key!r}", where=where)
    family = raw["family"]
    fam_prompts: dict[str, dict] = {str(k): v or {} for k, v in (raw.get("prompts") or {}).items()}
    reference: dict[str, dict] = {str(k): v or {} for k, v in (raw.get("reference") or {}).items()}
    out: dict[str, TaskSpec] = {}
    for version, vdef in raw["versions"].items():
        version, vdef = str(version), vdef or {}
        ver_prompts: dict[str, dict] = {str(k): v or {} for k, v in (vdef.get("prompts") or {}).items()}
        for pv in list(dict.fromkeys([*fam_prompts, *ver_prompts])):
            merged = _merge(raw.get("defaults", {}), vdef.get("defaults", {}), fam_prompts.get(pv, {}),
                            ver_prompts.get(pv, {}))
            unknown = set(merged) - _KNOWN_KEYS
            if unknown:
                raise TaskError(f"unknown key(s) {sorted(unknown)} in task {family} {version}/{pv}", where=where,
                                fix=f"use only: {', '.join(sorted(_KNOWN_KEYS))}")
            name = _task_name(family, version, pv)
            missing = [k for k in ("description", "doc_to_text", "target", "fewshot_sep", "doc_id") if k not in merged]
            if raw["output_type"] == "multiple_choice":
                missing += [k for k in ("choices", "gold") if k not in merged]
            else:
                missing += [k for k in ("golds", "until") if k not in merged]
            if missing:
                raise TaskError(f"task {name} lacks {missing}", where=where)
            ref = _reference_row(reference, f"{version}-{pv}" if pv else version, name, where)
            out[name] = TaskSpec(
                name=name, family=family, version=version, prompt_version=pv, dataset=raw["dataset"],
                output_type=raw["output_type"], default_shots=int(raw.get("default_shots", 0)),
                description=merged["description"], doc_to_text=merged["doc_to_text"], target=merged["target"],
                fewshot_sep=merged["fewshot_sep"], doc_id=merged["doc_id"],
                sampler=merged.get("sampler", "random"), metrics=tuple(merged.get("metrics", ())),
                choices=merged.get("choices"), gold=merged.get("gold"), golds=merged.get("golds"),
                until=merged.get("until"), strict=bool(merged.get("strict", False)),
                fewshot_fit=bool(merged.get("fewshot_fit", False)), vars=dict(merged.get("vars", {})),
                derived=dict(merged.get("derived", {})), source=path.name,
                default_system_prompt=merged.get("default_system_prompt"), origin=ref["origin"],
                era=str(ref.get("exists", "")), follows=str(ref.get("follows") or ref.get("why", "")),
            )
    stale = set(reference) - {t.name.removeprefix(f"{family}-") if t.prompt_version else t.version
                              for t in out.values()}
    if stale:
        raise TaskError(f"reference table rows {sorted(stale)} name no task of {family}", where=where)
    return out


def _reference_row(table: dict[str, dict], key: str, name: str, where: str) -> dict[str, Any]:
    """The provenance row of one task name; a name without one is refused (it must say where it comes from)."""
    if key not in table:
        raise TaskError(f"task {name} has no row {key!r} in the family's reference table", where=where,
                        fix="add `origin: jbench` with a `why`, or the JP-stable commits (`exists`, `follows`)")
    row = {"origin": "reference", **table[key]}
    unknown = set(row) - _REFERENCE_KEYS
    if unknown:
        raise TaskError(f"unknown key(s) {sorted(unknown)} in reference row {key!r}", where=where,
                        fix=f"use only: {', '.join(sorted(_REFERENCE_KEYS))}")
    if row["origin"] == "reference" and not (row.get("exists") and row.get("follows")):
        raise TaskError(f"reference row {key!r} needs `exists` and `follows`", where=where)
    if row["origin"] == "jbench" and not row.get("why"):
        raise TaskError(f"reference row {key!r} (a jbench addition) needs a `why`", where=where)
    if row["origin"] not in ("reference", "jbench"):
        raise TaskError(f"reference row {key!r}: origin must be reference or jbench, not {row['origin']!r}",
                        where=where)
    return row


@dataclass(frozen=True)
class Family:
    """A task family's registry-level facts (for plain-name resolution and listings)."""

    name: str
    title: str
    default_version: str
    plain_name: str
    default_shots: int


@lru_cache(maxsize=4)
def _load(directory: str) -> tuple[dict[str, TaskSpec], dict[str, Family]]:
    tasks: dict[str, TaskSpec] = {}
    families: dict[str, Family] = {}
    for path in sorted(Path(directory).glob("*.yaml")):
        if path.name == "presets.yaml":
            continue
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if "family" not in raw:
            continue
        fam = raw["family"]
        families[fam] = Family(fam, raw.get("title", fam), str(raw.get("default_version")),
                               str(raw.get("plain_name", "")), int(raw.get("default_shots", 0)))
        tasks.update(_build_family(path))
    return tasks, families


def all_tasks() -> dict[str, TaskSpec]:
    """Every concrete task, by the name the reference prints."""
    return _load(str(tasks_dir()))[0]


def families() -> dict[str, Family]:
    return _load(str(tasks_dir()))[1]


def resolve_task(name: str, prompt_version: str | None = None) -> TaskSpec:
    """A full name (``jnli-1.3-0.4``), or a family name with an optional prompt version.

    A bare family name means what the same plain name means at JP-stable HEAD effdbea (``plain_name``: e.g.
    ``jnli`` is jnli-1.3-0.2, ``jaqket_v2`` is jaqket_v2-0.2-0.1), so a name typed into both harnesses runs the
    same task. With a prompt version it means the family's ``default_version`` (the published-results era, e.g.
    jnli-1.1) at that prompt version: that is what the default suite and the model presets run.
    """
    tasks, fams = all_tasks(), families()
    if name in tasks and (prompt_version is None or tasks[name].prompt_version in ("", prompt_version)):
        return tasks[name]
    if name in fams:
        fam = fams[name]
        if prompt_version is None:
            full = _task_name(name, *fam.plain_name.split("-", 1)) if "-" in fam.plain_name else name
        else:
            full = _task_name(name, fam.default_version, prompt_version)
            if full not in tasks and name in tasks:  # a family without prompt versions (xwinograd_ja)
                full = name
        if full in tasks:
            return tasks[full]
        versions = sorted({t.prompt_version for t in tasks.values() if t.family == name})
        raise TaskError(f"task {name!r} has no prompt version {prompt_version!r}",
                        fix=f"available prompt versions for {name}: {', '.join(versions)}")
    near = difflib.get_close_matches(name, [*tasks, *fams], n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(near)}? " if near else ""
    raise TaskError(f"unknown task {name!r}", fix=f"{hint}run `jbench tasks` for the full list")
