"""Model presets: the prompt version, tokenizer flags and dtype that the reference runs (or the model card) used.

Why: JP-stable scores depend on choices that live outside the task definitions (spec §1.4, §3; anchors §B.4): the
prompt version each model's ``harness.sh`` passed, ``use_fast=False`` for rinna's sentencepiece models, and
``torch_dtype=auto`` versus the fp32 default. A wrong choice silently moves scores by points, so the choices are
data (``tasks/presets.yaml``), resolved here in one place, and always reported -- including when nothing matched
and the fallback is used.

Typical use::

    res = resolve_preset("rinna/japanese-gpt-neox-3.6b-instruction-ppo", overrides={"prompt_version": cli_pv})
    print(describe(res))          # one line, every run
    res.prompt_version, res.use_fast, res.trust_remote_code, res.variant
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml

from jbench.errors import ModelError

log = logging.getLogger(__name__)

PRESETS_FILE = "presets.yaml"
REGEX_PREFIX = "re:"
DTYPES = ("auto", "float32", "float16", "bfloat16")
# jbench variants and torch spellings accepted wherever a dtype is given (CLI overrides, config.json).
_DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16", "float": "float32"}
_VARIANT_OF_DTYPE = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
OVERRIDE_KEYS = ("prompt_version", "use_fast", "trust_remote_code", "dtype", "chat_template")
_PRESET_KEYS = {"name", "match", "tokenizer", "dtype", "prompt_version", "card_prompt_version", "why", "card",
                "source", "notes", "fallback", "chat_template"}
_TOKENIZER_KEYS = {"use_fast", "trust_remote_code", "add_special_tokens"}

How = Literal["exact", "pattern", "fallback"]


class PresetError(ModelError):
    """``tasks/presets.yaml`` is invalid, or an override is not one a preset can take."""


@dataclass(frozen=True)
class TokenizerFlags:
    """How the reference loaded and used the tokenizer (``use_fast=None``: the library default, fast if any)."""

    use_fast: bool | None = None
    trust_remote_code: bool = False
    add_special_tokens: bool = False   # JP-stable's tok_encode never adds BOS/EOS (spec §1.4)


@dataclass(frozen=True)
class Preset:
    """One entry of ``tasks/presets.yaml``: which models it covers and what to run them with, and why."""

    name: str
    match: tuple[str, ...]
    tokenizer: TokenizerFlags
    dtype: str
    prompt_version: str
    why: str
    card: str
    card_prompt_version: str | None = None
    source: str | None = None
    notes: str | None = None
    fallback: bool = False
    # run through the tokenizer's chat template (--apply-chat-template): for chat models that have no reference
    # prompt version, so the prompt_version texts are wrapped in the model's own turns (task names get "+chat")
    chat_template: bool = False

    @property
    def exact_ids(self) -> tuple[str, ...]:
        return tuple(m for m in self.match if _kind(m) == "exact")

    @property
    def patterns(self) -> tuple[str, ...]:
        return tuple(m for m in self.match if _kind(m) != "exact")


@dataclass(frozen=True)
class ResolvedPreset:
    """The outcome of :func:`resolve_preset`: the preset, how it was found, and the effective settings.

    ``overridden`` maps each setting an override changed to ``(preset value, effective value)``, so results and
    the printed line can say both what the preset wanted and what actually ran.
    """

    model_id: str
    preset: Preset
    how: How
    matched: str | None          # the exact id or pattern that matched (None for the fallback)
    via: str                     # which name matched: "model id", "config.json _name_or_path", "path", ...
    candidate: str               # that name
    prompt_version: str
    use_fast: bool | None
    trust_remote_code: bool
    add_special_tokens: bool
    dtype: str
    checkpoint_dtype: str | None = None   # torch_dtype from a local config.json, resolves dtype "auto"
    chat_template: bool = False           # --apply-chat-template by default (see Preset.chat_template)
    overridden: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    @property
    def is_fallback(self) -> bool:
        return self.how == "fallback"

    @property
    def name(self) -> str:
        return self.preset.name

    @property
    def effective_dtype(self) -> str | None:
        """The concrete dtype: ``dtype`` unless it is ``auto``, then the local checkpoint's (None if unknown)."""
        return self.checkpoint_dtype if self.dtype == "auto" else self.dtype

    @property
    def variant(self) -> str | None:
        """The jbench ``--variant`` (fp32/fp16/bf16) for the effective dtype; None when ``auto`` is unresolved
        (a hub id: the loader should pass ``torch_dtype="auto"``)."""
        return _VARIANT_OF_DTYPE.get(self.effective_dtype or "")

    def to_record(self) -> dict[str, Any]:
        """What goes into results.json: enough to tell later which preset ran, how it matched, and what changed."""
        return {
            "preset": self.preset.name, "how": self.how, "matched": self.matched, "via": self.via,
            "candidate": self.candidate, "prompt_version": self.prompt_version,
            "card_prompt_version": self.preset.card_prompt_version,
            "tokenizer": {"use_fast": self.use_fast, "trust_remote_code": self.trust_remote_code,
                          "add_special_tokens": self.add_special_tokens},
            "dtype": self.dtype, "checkpoint_dtype": self.checkpoint_dtype, "chat_template": self.chat_template,
            "overridden": {k: list(v) for k, v in self.overridden.items()},
            "why": self.preset.why, "card": self.preset.card,
        }


# --------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------


def presets_path() -> Path:
    """``presets.yaml`` sits with the task YAMLs (checkout ``tasks/`` or the installed ``share/jbench/tasks``)."""
    from jbench.tasks import tasks_dir

    return tasks_dir() / PRESETS_FILE


def _kind(pattern: str) -> Literal["exact", "glob", "regex"]:
    if pattern.startswith(REGEX_PREFIX):
        return "regex"
    return "glob" if any(c in pattern for c in "*?[") else "exact"


def _norm_dtype(value: Any, where: str) -> str:
    dtype = _DTYPE_ALIASES.get(str(value), str(value))
    if dtype not in DTYPES:
        raise PresetError(f"unknown dtype {value!r}", where=where,
                          fix=f"use one of: {', '.join(DTYPES)} (or fp32/fp16/bf16)")
    return dtype


def _parse(raw: dict[str, Any], where: str) -> Preset:
    if not isinstance(raw, dict):
        raise PresetError("each preset must be a mapping", where=where)
    unknown = set(raw) - _PRESET_KEYS
    if unknown:
        raise PresetError(f"unknown key(s) {sorted(unknown)} in preset {raw.get('name')!r}", where=where,
                          fix=f"use only: {', '.join(sorted(_PRESET_KEYS))}")
    missing = [k for k in ("name", "match", "tokenizer", "dtype", "prompt_version", "why", "card") if k not in raw]
    if missing:
        raise PresetError(f"preset {raw.get('name')!r} lacks {missing}", where=where)
    tok = raw["tokenizer"] or {}
    if set(tok) - _TOKENIZER_KEYS:
        raise PresetError(f"unknown tokenizer key(s) {sorted(set(tok) - _TOKENIZER_KEYS)} in {raw['name']!r}",
                          where=where, fix=f"use only: {', '.join(sorted(_TOKENIZER_KEYS))}")
    if tok.get("add_special_tokens", False):
        raise PresetError(f"preset {raw['name']!r} sets add_special_tokens: true", where=where,
                          fix="JP-stable encodes with add_special_tokens=False (spec §1.4); keep it false")
    match = tuple(str(m) for m in (raw["match"] or ()))
    for m in match:
        if _kind(m) == "regex":
            try:
                re.compile(m[len(REGEX_PREFIX):])
            except re.error as err:
                raise PresetError(f"bad regex {m!r} in preset {raw['name']!r}: {err}", where=where) from err
    return Preset(
        name=str(raw["name"]), match=match,
        tokenizer=TokenizerFlags(use_fast=tok.get("use_fast"), trust_remote_code=bool(tok.get("trust_remote_code")),
                                 add_special_tokens=False),
        dtype=_norm_dtype(raw["dtype"], where), prompt_version=str(raw["prompt_version"]), why=str(raw["why"]),
        card=str(raw["card"]),
        card_prompt_version=None if raw.get("card_prompt_version") is None else str(raw["card_prompt_version"]),
        source=raw.get("source"), notes=raw.get("notes"), fallback=bool(raw.get("fallback", False)),
        chat_template=_flag_value(raw.get("chat_template", False), "chat_template", raw["name"], where),
    )


def _flag_value(value: Any, key: str, name: str, where: str) -> bool:
    """A yes/no preset key; anything but a YAML boolean is refused (``"no"`` as a string would read as true)."""
    if not isinstance(value, bool):
        raise PresetError(f"preset {name!r}: {key} must be true or false, got {value!r}", where=where)
    return value


@lru_cache(maxsize=4)
def _load(path: str) -> tuple[Preset, ...]:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise PresetError(f"cannot read the presets: {err}", where=path) from err
    if not isinstance(raw, list) or not raw:
        raise PresetError("presets.yaml must be a non-empty list of presets", where=path)
    presets = tuple(_parse(entry, path) for entry in raw)
    names = [p.name for p in presets]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PresetError(f"duplicate preset name(s) {dupes}", where=path)
    fallbacks = [p for p in presets if p.fallback]
    if len(fallbacks) != 1 or not presets[-1].fallback or presets[-1].match:
        raise PresetError("presets.yaml needs exactly one fallback preset, last, with an empty match list",
                          where=path, fix="end the list with `- name: fallback` / `fallback: true` / `match: []`")
    return presets


def load_presets(path: str | Path | None = None) -> list[Preset]:
    """All presets in file order (the fallback last). Cached per path."""
    return list(_load(str(path or presets_path())))


# --------------------------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------------------------


def _looks_like_path(model_id: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything on disk, absolute, relative-dotted or deeper is a path."""
    if Path(model_id).expanduser().exists():
        return True
    return model_id.startswith(("/", "./", "../", "~", ".\\")) or model_id.count("/") > 1 or "\\" in model_id


def _path_tail(path: str) -> list[tuple[str, str]]:
    """Names a path may carry: a hub-cache folder ``models--org--name``, then ``parent/name``, then ``name``."""
    parts = [p for p in re.split(r"[\\/]+", path.rstrip("/\\")) if p and p not in (".", "..", "~")]
    out: list[tuple[str, str]] = []
    for part in parts:
        m = re.fullmatch(r"models--([^/]+?)--(.+)", part)
        if m:
            out.append((f"{m.group(1)}/{m.group(2)}", "hub cache folder"))
    if len(parts) >= 2:
        out.append((f"{parts[-2]}/{parts[-1]}", "path"))
    if parts:
        out.append((parts[-1], "path name"))
    return out


def _local_config(path: Path) -> dict[str, Any]:
    cfg = path / "config.json"
    try:
        data = json.loads(cfg.read_text(encoding="utf-8")) if cfg.is_file() else {}
    except (OSError, ValueError):
        log.warning("cannot read %s; matching the preset on the path only", cfg)
        return {}
    return data if isinstance(data, dict) else {}


def _candidates(model_id: str) -> tuple[list[tuple[str, str]], str | None]:
    """The names to match, most authoritative first, and a local checkpoint's torch_dtype (if any)."""
    if not _looks_like_path(model_id):
        return [(model_id, "model id")], None
    path = Path(model_id).expanduser()
    out: list[tuple[str, str]] = []
    config = _local_config(path) if path.is_dir() else {}
    name_or_path = config.get("_name_or_path")
    if isinstance(name_or_path, str) and name_or_path.strip():
        name_or_path = name_or_path.strip()
        if _looks_like_path(name_or_path):
            out += [(c, f"config.json _name_or_path ({how})") for c, how in _path_tail(name_or_path)]
        else:
            out.append((name_or_path, "config.json _name_or_path"))
    out += _path_tail(model_id)
    ckpt_dtype = config.get("torch_dtype") or config.get("dtype")
    dtype = _DTYPE_ALIASES.get(str(ckpt_dtype), str(ckpt_dtype)) if ckpt_dtype else None
    return list(dict.fromkeys(out)), dtype if dtype in _VARIANT_OF_DTYPE else None


def _name_part(s: str) -> str:
    return s.rsplit("/", 1)[-1]


def _matches(candidate: str, pattern: str) -> bool:
    """Case-insensitive. A bare name (a folder name) also matches the name part of an ``org/name`` id or glob."""
    c = candidate.lower()
    kind = _kind(pattern)
    if kind == "regex":
        return re.fullmatch(pattern[len(REGEX_PREFIX):], candidate, flags=re.IGNORECASE) is not None
    p = pattern.lower()
    bare = "/" not in c and "/" in p
    if kind == "exact":
        return c == p or (bare and c == _name_part(p))
    return fnmatch.fnmatchcase(c, p) or (bare and fnmatch.fnmatchcase(c, _name_part(p)))


def _group(via: str) -> str:
    """Candidates from one source (the id, config.json, the hub-cache folder, the path) form one group."""
    return "path" if via in ("path", "path name") else via.split(" (")[0]


def _find(presets: list[Preset], candidates: list[tuple[str, str]]) -> tuple[Preset, How, str, str, str] | None:
    """Source by source, most authoritative first; within a source, exact ids (of every preset) before patterns
    (in file order), so ``ckpts/<exact name>`` is an exact match on its folder name, not a pattern match."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for cand, via in candidates:
        groups.setdefault(_group(via), []).append((cand, via))
    for group in groups.values():
        for cand, via in group:
            for preset in presets:
                for m in preset.exact_ids:
                    if _matches(cand, m):
                        return preset, "exact", m, via, cand
        for cand, via in group:
            for preset in presets:
                for m in preset.patterns:
                    if _matches(cand, m):
                        return preset, "pattern", m, via, cand
    return None


def _apply_overrides(preset: Preset, overrides: dict[str, Any] | None
                     ) -> tuple[dict[str, Any], dict[str, tuple[Any, Any]]]:
    """Effective values (preset, then non-None overrides) and what the overrides changed: (old, new) per key."""
    values: dict[str, Any] = {
        "prompt_version": preset.prompt_version, "use_fast": preset.tokenizer.use_fast,
        "trust_remote_code": preset.tokenizer.trust_remote_code, "dtype": preset.dtype,
        "chat_template": preset.chat_template,
    }
    changed: dict[str, tuple[Any, Any]] = {}
    unknown = set(overrides or {}) - set(OVERRIDE_KEYS)
    if unknown:
        raise PresetError(f"unknown preset override(s) {sorted(unknown)}",
                          fix=f"overridable: {', '.join(OVERRIDE_KEYS)}")
    for key, value in (overrides or {}).items():
        if value is None:          # "not given on the command line": the preset decides
            continue
        if key == "dtype":
            value = _norm_dtype(value, "override")
        elif key == "prompt_version":
            value = str(value)
        else:
            value = bool(value)
        if value != values[key]:
            changed[key] = (values[key], value)
        values[key] = value
    return values, changed


def resolve_preset(model_id: str, *, overrides: dict[str, Any] | None = None, warn: bool = True,
                   presets: list[Preset] | None = None) -> ResolvedPreset:
    """Find the preset for a hub id or a local path, and apply overrides (which win and are recorded).

    A local path matches through its config.json ``_name_or_path``, a hub-cache folder name, or its last path
    component(s). With nothing matching, the fallback preset is returned with ``is_fallback`` set and (unless
    ``warn=False``, for callers that print :func:`describe` themselves) a warning is logged: never silent.
    ``overrides`` may hold ``prompt_version``, ``use_fast``, ``trust_remote_code``, ``dtype``; None means unset.
    """
    presets = presets if presets is not None else load_presets()
    candidates, ckpt_dtype = _candidates(str(model_id))
    found = _find([p for p in presets if not p.fallback], candidates)
    if found is None:
        preset, how, matched, via, cand = presets[-1], "fallback", None, "nothing matched", str(model_id)
    else:
        preset, how, matched, via, cand = found
    values, changed = _apply_overrides(preset, overrides)
    res = ResolvedPreset(
        model_id=str(model_id), preset=preset, how=how, matched=matched, via=via, candidate=cand,
        prompt_version=values["prompt_version"], use_fast=values["use_fast"],
        trust_remote_code=values["trust_remote_code"], add_special_tokens=preset.tokenizer.add_special_tokens,
        dtype=values["dtype"], checkpoint_dtype=ckpt_dtype, chat_template=values["chat_template"],
        overridden=changed,
    )
    if res.is_fallback and warn:
        log.warning("%s", describe(res))
    return res


# --------------------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------------------


def _flag(value: bool | None) -> str:
    return "default" if value is None else str(value)


def _settings(res: ResolvedPreset) -> str:
    parts = [f"prompt {res.prompt_version}", f"use_fast={_flag(res.use_fast)}"]
    if res.trust_remote_code:
        parts.append("trust_remote_code=True")
    dtype = res.dtype if res.dtype != "auto" or not res.checkpoint_dtype else f"auto ({res.checkpoint_dtype})"
    parts.append(f"dtype {dtype}")
    if res.chat_template:
        parts.append("chat template (task names get +chat)")
    return ", ".join(parts)


def describe(res: ResolvedPreset) -> str:
    """One human line for every run, e.g. ``preset rinna-neox-3.6b-instruction-sft (exact id): prompt 0.4,
    use_fast=False, dtype float32 — why…``; the fallback line says so in capitals and what to do."""
    extra = ""
    if res.overridden:
        extra += " [overridden: " + ", ".join(f"{k} {old}→{new}" for k, (old, new) in res.overridden.items()) + "]"
    if res.preset.card_prompt_version and res.preset.card_prompt_version != res.prompt_version:
        extra += f" [card format: prompt {res.preset.card_prompt_version}]"
    if res.is_fallback:
        return (f"FALLBACK preset for {res.model_id!r} (no preset matches): {_settings(res)}{extra} — "
                f"{res.preset.why}; set --prompt-version / --use-fast / --variant if the card says otherwise")
    how = "exact id" if res.how == "exact" else f"pattern {res.matched}"
    if res.via != "model id":
        how += f", via {res.via} {res.candidate!r}"
    return f"preset {res.preset.name} ({how}): {_settings(res)}{extra} — {res.preset.why}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def presets_table(presets: list[Preset] | None = None) -> str:
    """Markdown table "model → prompt version → why" with card links, for ``jbench presets`` and the README."""
    presets = presets if presets is not None else load_presets()
    rows = ["| Model | Prompt | Tokenizer | dtype | Why |", "|---|---|---|---|---|"]
    for p in presets:
        if p.fallback:
            model = "*any other model* (**fallback**, always reported)"
        else:
            ids = ", ".join(p.exact_ids) or p.name
            n = len(p.patterns)
            model = f"[{ids}]({p.card})" + (f" + {n} pattern{'s' if n > 1 else ''} (repacks)" if n else "")
        prompt = p.prompt_version + (f" (card: {p.card_prompt_version})" if p.card_prompt_version else "") + (
            " + chat template" if p.chat_template else "")
        tok = f"use_fast={_flag(p.tokenizer.use_fast)}" + (", trust_remote_code" if p.tokenizer.trust_remote_code
                                                          else "")
        why = p.why + (f" ([source]({p.source}))" if p.source else "")
        rows.append(f"| {_cell(model)} | {_cell(prompt)} | {_cell(tok)} | {p.dtype} | {_cell(why)} |")
    return "\n".join(rows)
