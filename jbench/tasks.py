"""Task definitions loaded from the YAML files in ``tasks/``.

A task is data: ``{family}-{version}-{prompt_version}`` (e.g. ``jcommonsenseqa-1.1-0.3``) is one merged dict of
templates and settings. The engine never branches on a task name; adding a prompt version is a YAML edit.
Merge order for one task: family ``defaults`` < version ``defaults`` < family ``prompts[pv]`` < version
``prompts[pv]`` (``vars`` dicts merge key by key).
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

# Keys a merged task may hold; anything else in a YAML file is a typo and is refused.
_KNOWN_KEYS = {
    "doc_id", "choices", "gold", "golds", "target", "description", "doc_to_text", "fewshot_sep", "until",
    "sampler", "metrics", "vars", "derived", "strict", "fewshot_fit",
}


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
            )
    return out


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

    A bare family name (``jcommonsenseqa``) means what the reference's plain name meant (e.g. 1.1-0.1); with a
    prompt version it means the family's default (published-era) task version at that prompt version.
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
