"""Data sources other than the data dir's own files: a Hub dataset repo (``hub:owner/name@revision``) or a local
folder laid out like one, read with the ``datasets`` library.

Users keep benchmark copies on the Hub (a private MARC-ja mirror, JAQKET, parquet exports) in the layouts
``datasets`` understands (``data/validation-*.parquet``, ``dev.jsonl``, a README ``configs:`` block...). Rather
than a new option on every command, a data dir declares such sources in ``jbench-sources.json``, so eval,
compare, prompts and ``jbench data`` all see the same data. ``jbench data --source NAME=SPEC`` writes an entry
after reading it once, pinning the resolved commit and a sha256 over the source files, so later loads (offline
too, from the HF cache) are checked against exactly what was seen::

    {"sources": {"jnli": {"source": "hub:me/jnli-mirror@main", "commit": "<40 hex>", "sha256": "<64 hex>",
                          "columns": {"sentence1": "premise"}, "splits": {"validation": "dev"}}}}

``columns`` maps a field jbench expects to the source's column; ``splits`` maps a jbench split to the source's
split name. Splits the source lacks fall back to the data dir's files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jbench.data.fetch import cache_only, hub_endpoint, hub_error, tqdm_class
from jbench.data.registry import DATASETS, DatasetSpec
from jbench.errors import DataError
from jbench.version import __version__

SOURCES_NAME = "jbench-sources.json"
SPEC_FORMAT = "hub:OWNER/NAME[/SUBDIR][@REVISION] or a local folder (absolute, or relative to the data dir)"
#: files read from a source: the parquet and JSON layouts, plus the README whose ``configs:`` may name them
PATTERNS = ("*.parquet", "*.json", "*.jsonl", "*.json.gz", "*.jsonl.gz", "README.md")
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")

#: fields each dataset's normalizer reads (alternative field sets: any one of them must be present)
REQUIRED_FIELDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "jcommonsenseqa": (("q_id", "question", "choice0", "choice1", "choice2", "choice3", "choice4", "label"),),
    "jnli": (("sentence_pair_id", "yjcaptions_id", "sentence1", "sentence2", "label"),),
    "jsquad": (("id", "title", "context", "question", "answers"),),
    "marc_ja": (("review_id", "sentence", "label"),),
    "xwinograd_ja": (("sentence1", "sentence2", "answer"), ("sentence", "option1", "option2", "answer")),
    "jaqket_v2": (("qid", "question", "answers", "ctxs"),),
}
#: source split names tried for a jbench split when ``splits`` does not say (xwinograd's Hub split is "test")
SPLIT_NAMES: dict[str, tuple[str, ...]] = {"train": ("train",), "validation": ("validation",)}
DATASET_SPLIT_NAMES: dict[str, dict[str, tuple[str, ...]]] = {"xwinograd_ja": {"validation": ("validation", "test")}}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source: a Hub dataset repo (``repo_id``, optional ``subdir`` and ``revision``) or a local folder."""

    text: str
    repo_id: str | None = None
    subdir: str = ""
    revision: str | None = None
    folder: Path | None = None


@dataclass
class SourceEntry:
    """One dataset's entry in ``jbench-sources.json``."""

    source: str
    commit: str | None = None
    sha256: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    splits: dict[str, str] = field(default_factory=dict)
    #: split -> record count accepted although it is not the reference's (a partial mirror, declared with
    #: ``jbench data --source ... --allow-data-mismatch``): loads pass, but every result from it carries the mismatch
    allowed_records: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source}
        out.update({k: v for k, v in (("commit", self.commit), ("sha256", self.sha256), ("columns", self.columns),
                                      ("splits", self.splits), ("allowed_records", self.allowed_records)) if v})
        return out


@dataclass
class SourceSplit:
    """One split read from a source: located records in stored order, and what identifies the bytes."""

    records: list[tuple[str, Any]]
    where: str
    sha256: str
    commit: str | None
    source_split: str


def parse_source(text: str, data_dir: Path) -> SourceSpec:
    """``hub:owner/name[/subdir][@revision]`` or a folder path; anything else is a DataError showing the form."""
    fix = f"write it as {SPEC_FORMAT}, e.g. hub:me/jnli-mirror@main or hub:shunk031/JGLUE/JNLI@refs/convert/parquet"
    if text.startswith("hub:"):
        path, _, revision = text[4:].partition("@")
        parts = path.strip("/").split("/")
        repo_id = "/".join(parts[:2])
        if not _REPO_RE.match(repo_id) or "@" in revision or (revision == "" and "@" in text[4:]) or any(
                p in ("", ".", "..") for p in parts[2:]):
            raise DataError(f"not a valid Hub dataset source: {text!r}", where="data source", fix=fix)
        return SourceSpec(text=text, repo_id=repo_id, subdir="/".join(parts[2:]), revision=revision or None)
    if "://" in text or text.startswith(("hf:", "hf://")):
        raise DataError(f"unsupported data source {text!r}", where="data source", fix=fix)
    folder = Path(text).expanduser()
    folder = folder if folder.is_absolute() else Path(data_dir) / folder
    if not folder.is_dir():
        raise DataError(f"data source folder does not exist: {folder}", where="data source", fix=fix)
    return SourceSpec(text=text, folder=folder)


# ---------------------------------------------------------------------------------------------- the file


def load_sources(data_dir: Path) -> dict[str, SourceEntry]:
    """The entries of ``data_dir/jbench-sources.json`` (empty if there is none)."""
    path = Path(data_dir) / SOURCES_NAME
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        out = {}
        for name, e in doc["sources"].items():
            if name not in DATASETS:
                raise ValueError(f"unknown dataset {name!r} (use one of: {', '.join(DATASETS)})")
            entry = SourceEntry(source=e["source"], commit=e.get("commit"), sha256=e.get("sha256"),
                                columns=dict(e.get("columns") or {}), splits=dict(e.get("splits") or {}),
                                allowed_records=dict(e.get("allowed_records") or {}))
            if not all(isinstance(v, str) for v in (entry.source, *entry.columns.values(), *entry.splits.values())):
                raise TypeError(f"{name}: source, columns and splits must be strings")
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in entry.allowed_records.values()):
                raise TypeError(f"{name}: allowed_records must map splits to whole numbers")
            out[name] = entry
        return out
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as err:
        raise DataError(f"invalid data sources file ({err})", where=str(path),
                        fix='expected {"sources": {"DATASET": {"source": "hub:owner/name@rev", "columns": {}, '
                            '"splits": {}}}}; or rewrite it with `jbench data --source DATASET=SPEC`') from err


def save_sources(data_dir: Path, entries: dict[str, SourceEntry]) -> Path:
    """Write ``jbench-sources.json`` atomically (a reader never sees half a file)."""
    path = Path(data_dir) / SOURCES_NAME
    text = json.dumps({"sources": {k: v.to_json() for k, v in sorted(entries.items())}}, ensure_ascii=False,
                      indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


# ------------------------------------------------------------------------------------------- resolving


def _resolve(spec: SourceSpec, entry: SourceEntry, progress: bool) -> tuple[Path, str | None]:
    """The local folder holding the source's files, and its commit (Hub sources only)."""
    if spec.folder is not None:
        return spec.folder, None
    from huggingface_hub import snapshot_download

    assert spec.repo_id is not None
    revision = entry.commit or spec.revision or "main"
    patterns = [f"{spec.subdir}/{p}" if spec.subdir else p for p in PATTERNS]
    offline = cache_only()
    try:
        folder = snapshot_download(spec.repo_id, repo_type="dataset", revision=revision, allow_patterns=patterns,
                                   endpoint=hub_endpoint(), local_files_only=offline, library_name="jbench",
                                   library_version=__version__, tqdm_class=tqdm_class(progress))
    except Exception as err:  # noqa: BLE001 - every library failure becomes one DataError
        raise hub_error(err, f"cannot get dataset repo {spec.repo_id}",
                        f"{spec.text} (revision {revision})") from err
    root = Path(folder)
    commit = root.name if _COMMIT_RE.match(root.name) else entry.commit
    sub = root / spec.subdir if spec.subdir else root
    if not sub.is_dir():
        raise DataError(f"{spec.repo_id}@{revision} has no folder {spec.subdir!r} with parquet/JSON files",
                        where=spec.text, fix="check the sub-folder name on the Hub")
    return sub, commit


def _source_files(folder: Path) -> list[Path]:
    return sorted({p for pat in PATTERNS for p in folder.rglob(pat) if p.is_file() and ".cache" not in p.parts})


def tree_sha256(folder: Path) -> str:
    """One sha256 over every parquet/JSON file of a source (relative path and bytes, in path order)."""
    h = hashlib.sha256()
    for p in _source_files(folder):
        h.update(p.relative_to(folder).as_posix().encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


#: (folder, file stats) -> (DatasetDict, sha256): train and validation, and every command step, read a source once
_READ_CACHE: dict[tuple[str, tuple[tuple[str, int, int], ...]], tuple[Any, str]] = {}


def _read(folder: Path, where: str, progress: bool) -> tuple[Any, str]:
    stats = tuple((str(p), st.st_size, st.st_mtime_ns) for p in _source_files(folder) for st in (p.stat(),))
    key = (str(folder.resolve()), stats)
    if key not in _READ_CACHE:
        _READ_CACHE.clear()  # one source at a time is enough; do not pin every source ever read in memory
        _READ_CACHE[key] = (_load(folder, where, progress), tree_sha256(folder))
    return _READ_CACHE[key]


def _load(folder: Path, where: str, progress: bool) -> Any:
    """The folder as a ``datasets.DatasetDict``; a layout ``datasets`` cannot read is a DataError."""
    import datasets

    (datasets.enable_progress_bars if progress else datasets.disable_progress_bars)()
    try:
        return datasets.load_dataset(str(folder), cache_dir=os.environ.get("HF_DATASETS_CACHE"))
    except Exception as err:  # noqa: BLE001 - datasets raises many types for unreadable layouts
        raise DataError(f"the datasets library cannot read this source ({type(err).__name__}: {err})", where=where,
                        fix="it needs parquet or JSON(-lines) files in a layout `datasets.load_dataset` reads, "
                            "e.g. data/validation-00000-of-00001.parquet or validation.jsonl") from err


def _source_split(name: str, split: str, entry: SourceEntry, available: list[str]) -> str | None:
    if split in entry.splits:
        return entry.splits[split]
    names = DATASET_SPLIT_NAMES.get(name, {}).get(split, SPLIT_NAMES.get(split, (split,)))
    return next((n for n in names if n in available), None)


def _renamed(columns: list[str], mapping: dict[str, str]) -> dict[str, str]:
    """jbench field -> the source column it is read from. A mapped column is renamed (several fields mapped to one
    column each get a copy, e.g. JNLI's sentence_pair_id and yjcaptions_id from one ``id``); a field that is mapped
    wins over a source column that happens to carry the same name."""
    mapped = set(mapping.values())
    out = {c: c for c in columns if c not in mapped and c not in mapping}
    out.update({field_name: column for field_name, column in mapping.items() if column in columns})
    return out


def _check_columns(spec: DatasetSpec, entry: SourceEntry, columns: list[str], where: str, cli_hint: str) -> None:
    """Every field the dataset needs must be a column (after ``columns`` renames); else name the missing one."""
    missing_mapped = [c for c in entry.columns.values() if c not in columns]
    if missing_mapped:
        raise DataError(f"{spec.name}: the source has no column {missing_mapped[0]!r} (named in its column map)",
                        where=where, fix=f"its columns are: {', '.join(columns)}")
    renamed = set(_renamed(columns, entry.columns))
    options = REQUIRED_FIELDS[spec.name]
    if any(all(f in renamed for f in need) for need in options):
        return
    need = min(options, key=lambda fields: sum(f not in renamed for f in fields))
    field_name = next(f for f in need if f not in renamed)
    raise DataError(f"{spec.name}: the source has no column {field_name!r} (jbench needs "
                    f"{', '.join(need)})", where=where,
                    fix=f"map one of its columns ({', '.join(columns)}) to it: {cli_hint} --map "
                        f"{spec.name}.{field_name}=COLUMN, or add it under \"columns\" in {SOURCES_NAME}")


def read_split(spec: DatasetSpec, split: str, entry: SourceEntry, data_dir: Path, *,
               progress: bool = False) -> SourceSplit | None:
    """``split`` of ``spec`` from its declared source, or None when the source has no such split."""
    source = parse_source(entry.source, data_dir)
    folder, commit = _resolve(source, entry, progress)
    label = (f"hub:{source.repo_id}{'/' + source.subdir if source.subdir else ''}@{commit or source.revision}"
             if source.repo_id else str(folder))
    dsd, sha256 = _read(folder, label, progress)
    available = list(dsd.keys())
    name = _source_split(spec.name, split, entry, available)
    if name is None or name not in available:
        if split in entry.splits:
            raise DataError(f"{spec.name}: the source has no split {entry.splits[split]!r} (mapped from {split})",
                            where=label, fix=f"its splits are: {', '.join(available)}")
        return None
    where = f"{label}#{name}"
    hint = f"jbench data --source {spec.name}={entry.source}"
    ds = dsd[name]
    _check_columns(spec, entry, list(ds.column_names), where, hint)
    names = _renamed(list(ds.column_names), entry.columns)
    rows = [{field_name: row[column] for field_name, column in names.items()} for row in ds.to_list()]
    log.info("%s %s: %d rows from %s", spec.name, split, len(rows), where)
    return SourceSplit(records=[(f"{where}: row {i}", r) for i, r in enumerate(rows)], where=where,
                       sha256=sha256, commit=commit, source_split=name)
