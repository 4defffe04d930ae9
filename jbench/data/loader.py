"""Locate, verify and load dataset splits from a data dir.

Every load re-hashes the raw bytes and checks the record count, because a result is only comparable with the
reference harness if the exact upstream files (or a manifest-declared stand-in) produced it. What was verified,
and against what, travels with the docs in ``LoadedSplit.files`` so results can record it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jbench.data import readers, sources
from jbench.data.registry import DATASETS, MANIFEST_NAME, DatasetSpec, FileSpec
from jbench.errors import DataError, NoDataDir

DATA_DIR_ENV = "JBENCH_DATA_DIR"
MARC_OLD_LOADER_COUNT = 5734  # published rinna/open-calm runs; predates JGLUE's id-list processing


@dataclass
class DataFileInfo:
    """What was read and how it was checked. ``path`` is relative to the data dir (posix).

    ``expected``: "official" (registry sha256 or git blob), "manifest" (the data dir's manifest) or
    "unverified" (no checksum known). ``mismatch`` is set only when a mismatch was allowed."""

    path: str
    sha256: str
    records: int
    expected: str
    mismatch: str | None = None
    madeup: bool = False


@dataclass
class LoadedSplit:
    """Normalized docs in the reference loader's native order, plus provenance."""

    dataset: str
    split: str
    docs: list[dict[str, Any]]
    files: list[DataFileInfo]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ManifestEntry:
    """A file declared by ``jbench-manifest.json``: used for fixtures and the bundled sample."""

    sha256: str | None
    records: int | None
    madeup: bool
    description: str


# ------------------------------------------------------------------------------------------------ helpers


def sample_data_dir() -> Path:
    """The bundled sample data dir (real rows + clearly made-up rows, see its manifest and LICENSES.md)."""
    return Path(__file__).resolve().parent.parent / "sample"


def resolve_data_dir(explicit: str | os.PathLike[str] | None) -> Path:
    """``explicit`` > env ``JBENCH_DATA_DIR`` > a DataError saying how to provide one."""
    raw = os.fspath(explicit) if explicit is not None else os.environ.get(DATA_DIR_ENV) or None
    if raw is None:
        raise NoDataDir("no data directory given", where=f"--data-dir (unset) and ${DATA_DIR_ENV} (unset)",
                        fix=f"pass --data-dir DIR or set {DATA_DIR_ENV}=DIR (or run `jbench data --download` to "
                            "fetch the public files into a directory)")
    path = Path(raw).expanduser()
    if not path.is_dir():
        source = "--data-dir" if explicit is not None else DATA_DIR_ENV
        raise DataError(f"data directory does not exist: {path}", where=f"from {source}",
                        fix="create it and run `jbench data --download --data-dir DIR`, or point to an existing one")
    return path


def git_blob_sha1(data: bytes) -> str:
    """``git hash-object``: sha1 of ``b"blob <len>\\0" + data``, the only id known for some upstream files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def load_manifest(data_dir: Path) -> dict[str, ManifestEntry]:
    """Entries of ``data_dir/jbench-manifest.json`` (empty if there is none)."""
    path = data_dir / MANIFEST_NAME
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        default_madeup = bool(doc.get("madeup", False))
        entries = {rel: ManifestEntry(sha256=e.get("sha256"), records=e.get("records"),
                                      madeup=bool(e.get("madeup", default_madeup)),
                                      description=str(e.get("description", "")))
                   for rel, e in doc["files"].items()}
        for rel, e in entries.items():
            if not (e.sha256 is None or isinstance(e.sha256, str)) or not (
                    e.records is None or (isinstance(e.records, int) and not isinstance(e.records, bool))):
                raise TypeError(f"{rel}: sha256 must be a string and records an integer")
        return entries
    except (OSError, ValueError, RecursionError, KeyError, AttributeError, TypeError) as err:
        raise DataError(f"invalid data manifest ({err})", where=str(path),
                        fix='expected {"description": str, "files": {"rel/path": {"sha256", "records", "madeup"}}}'
                        ) from err


def _dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}", fix=f"use one of: {', '.join(DATASETS)}") from None


def _alternatives(spec: DatasetSpec, split: str) -> list[FileSpec]:
    try:
        return spec.splits[split]
    except KeyError:
        raise DataError(f"dataset {spec.name!r} has no split {split!r}",
                        fix=f"use one of: {', '.join(spec.splits)}") from None


def _missing_error(spec: DatasetSpec, split: str, alts: list[FileSpec], data_dir: Path) -> DataError:
    paths = "; ".join(str(data_dir / fs.relpath) for fs in alts)
    urls = ", ".join(fs.url for fs in alts if fs.url)
    fix = spec.how_to_get + (f" [{urls}]" if urls else "")
    return DataError(f"{spec.name} {split}: data file not found", where=f"expected one of: {paths}", fix=fix)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read data file ({err.strerror})", where=str(path)) from err


# ----------------------------------------------------------------------------------------- verification


@dataclass
class FileCheck:
    """Result of comparing bytes with what is expected of them."""

    expected: str
    mismatch: str | None
    madeup: bool
    records: tuple[int, ...] | None
    note: str | None


def verify_bytes(fs: FileSpec, data: bytes, manifest: dict[str, ManifestEntry]) -> FileCheck:
    """Compare ``data`` with the manifest entry for ``fs.relpath`` if any, else with the registry."""
    actual = hashlib.sha256(data).hexdigest()
    entry = manifest.get(fs.relpath)
    if entry is not None:
        bad = None
        if entry.sha256 is not None and entry.sha256 != actual:
            bad = f"sha256 {actual} != {entry.sha256} from {MANIFEST_NAME}"
        note = f"{fs.relpath}: made-up rows, not real benchmark data ({entry.description})" if entry.madeup else None
        records = None if entry.records is None else (entry.records,)
        return FileCheck("manifest", bad, entry.madeup, records, note)
    if fs.sha256 is not None:
        bad = None if actual == fs.sha256 else f"sha256 {actual} != official {fs.sha256}"
        return FileCheck("official", _with_size(bad, fs, data), False, fs.accepted_records(), None)
    if fs.git_blob is not None:
        blob = git_blob_sha1(data)
        bad = None if blob == fs.git_blob else f"git blob {blob} != official {fs.git_blob}"
        return FileCheck("official", _with_size(bad, fs, data), False, fs.accepted_records(), None)
    note = f"{fs.relpath}: no published checksum exists; only parsing and the record count were checked"
    return FileCheck("unverified", None, False, fs.accepted_records(), note)


def _with_size(mismatch: str | None, fs: FileSpec, data: bytes) -> str | None:
    """Add a size hint: a short file is almost always a truncated download."""
    if mismatch is None:
        return None
    hint = f"; file has {len(data):,} bytes"
    if fs.size is not None and len(data) != fs.size:
        hint += f", expected {fs.size:,}" + (" (truncated?)" if len(data) < fs.size else "")
    return mismatch + hint


def _refuse_or_keep(check: FileCheck, where: Path | str, allow_mismatch: bool) -> None:
    if check.mismatch is not None and not allow_mismatch:
        raise DataError(f"checksum mismatch: {check.mismatch}", where=str(where),
                        fix="re-download it (`jbench data --download NAME --force`), or pass --allow-data-mismatch "
                            "(eval, compare, prompts) to use it anyway: the mismatch is recorded in the results "
                            "and every number from it is marked ‡")


def _check_count(check: FileCheck, n: int, where: Path | str, allow_mismatch: bool,
                 fix: str | None = None) -> str | None:
    """None if ``n`` is an accepted count; the mismatch text if allowed; otherwise a DataError (``fix``: advice
    for where the records came from, default: a downloaded file)."""
    if check.records is None or n in check.records:
        return None
    want = " or ".join(f"{c:,}" for c in check.records)
    text = f"record count {n:,} != expected {want}"
    if allow_mismatch:
        return text
    raise DataError(f"record count mismatch: got {n:,} records, expected {want}", where=str(where),
                    fix=fix or "the file is incomplete or a different version; re-download it, or pass "
                               "--allow-data-mismatch (eval, compare, prompts) to use it anyway (its numbers are then "
                               "marked ‡)")


def _load_file(spec: DatasetSpec, fs: FileSpec, data_dir: Path, manifest: dict[str, ManifestEntry],
               allow_mismatch: bool) -> tuple[list[dict[str, Any]], FileCheck, bytes]:
    """Read + verify checksum + parse + normalize one file (the count is checked by the caller)."""
    path = data_dir / fs.relpath
    data = _read_bytes(path)
    check = verify_bytes(fs, data, manifest)
    _refuse_or_keep(check, path, allow_mismatch)
    records = readers.read_records(fs.format, data, str(path))
    return readers.normalize(spec.reader, records), check, data


def _file_info(fs: FileSpec, data: bytes, n: int, check: FileCheck, extra: str | None = None) -> DataFileInfo:
    mismatch = "; ".join(m for m in (check.mismatch, extra) if m) or None
    return DataFileInfo(path=fs.relpath, sha256=hashlib.sha256(data).hexdigest(), records=n,
                        expected=check.expected, mismatch=mismatch, madeup=check.madeup)


# ----------------------------------------------------------------------------------------------- MARC-ja


def _load_aux(spec: DatasetSpec, key: str, data_dir: Path, manifest: dict[str, ManifestEntry],
              allow_mismatch: bool) -> tuple[Any, DataFileInfo, str | None]:
    fs = spec.aux[key]
    path = data_dir / fs.relpath
    if not path.exists():
        raise DataError(f"{spec.name} validation needs JGLUE's {key} (it drops/relabels validation reviews)",
                        where=f"expected: {path}",
                        fix=f"run `jbench data --download {spec.name}` (fetches {fs.url})")
    data = _read_bytes(path)
    check = verify_bytes(fs, data, manifest)
    _refuse_or_keep(check, path, allow_mismatch)
    parsed: Any = readers.read_id_list(data, str(path)) if fs.format == "id_list" else readers.read_label_conv(
        data, str(path))
    extra = _check_count(check, len(parsed), path, allow_mismatch)
    return parsed, _file_info(fs, data, len(parsed), check, extra), check.note


def _marc_validation(spec: DatasetSpec, docs: list[dict[str, Any]], data_dir: Path,
                     manifest: dict[str, ManifestEntry], allow_mismatch: bool,
                     ) -> tuple[list[dict[str, Any]], list[DataFileInfo], list[str]]:
    """Apply (or, for the 5,734-row older-loader file, only audit) JGLUE's validation id lists."""
    filter_ids, finfo, fnote = _load_aux(spec, "filter_review_id_list", data_dir, manifest, allow_mismatch)
    conv, cinfo, cnote = _load_aux(spec, "label_conv_review_id_list", data_dir, manifest, allow_mismatch)
    notes = [n for n in (fnote, cnote) if n]
    processed, dropped, relabelled = readers.apply_marc_id_lists(docs, filter_ids, conv)
    if len(docs) == MARC_OLD_LOADER_COUNT:
        notes.append(f"marc_ja validation has {len(docs):,} rows, the older shunk031 loader's set used by published "
                     f"rinna/open-calm results; kept as-is. JGLUE's lists would drop {dropped} and relabel "
                     f"{relabelled} of these rows.")
        return docs, [finfo, cinfo], notes
    notes.append(f"marc_ja validation: JGLUE filter list dropped {dropped} reviews and the label-conversion list "
                 f"relabelled {relabelled} ({len(docs):,} -> {len(processed):,} rows; 0/0 means the file was "
                 "already processed)")
    return processed, [finfo, cinfo], notes


# ------------------------------------------------------------------------------------------------ public


def load_split(dataset: str, split: str, data_dir: Path, *, allow_mismatch: bool = False) -> LoadedSplit:
    """Read ``dataset``/``split`` from ``data_dir`` in native order, verify checksum and count, normalize.

    The first present alternative in the registry's preference order is used. With ``allow_mismatch`` a
    checksum or count mismatch is recorded in ``DataFileInfo.mismatch`` instead of raising."""
    spec = _dataset(dataset)
    alts = _alternatives(spec, split)
    data_dir = Path(data_dir)
    notes: list[str] = []
    entry = sources.load_sources(data_dir).get(spec.name)
    if entry is not None:
        got = sources.read_split(spec, split, entry, data_dir)
        if got is not None:
            return _load_from_source(spec, split, alts, got, entry, data_dir, allow_mismatch)
        notes.append(f"{spec.name} {split}: not in its source {entry.source}; read from the data dir instead")
    present = [fs for fs in alts if (data_dir / fs.relpath).is_file()]
    if not present:
        err = _missing_error(spec, split, alts, data_dir)
        if entry is None:
            raise err
        raise DataError(f"{spec.name} {split}: not in its source {entry.source} ({sources.SOURCES_NAME}), and no "
                        "data file either", where=err.where,
                        fix=f"if the source names it differently: jbench data --source {spec.name}={entry.source} "
                            f"--map {spec.name}.{split}=SPLIT; or {err.fix}")
    fs = present[0]
    if len(present) > 1:
        notes.append(f"{fs.relpath} used; also present but ignored: {', '.join(o.relpath for o in present[1:])}")
    manifest = load_manifest(data_dir)
    docs, check, data = _load_file(spec, fs, data_dir, manifest, allow_mismatch)
    aux_infos: list[DataFileInfo] = []
    if spec.name == "marc_ja" and split == "validation":
        docs, aux_infos, aux_notes = _marc_validation(spec, docs, data_dir, manifest, allow_mismatch)
        notes += aux_notes
    extra = _check_count(check, len(docs), data_dir / fs.relpath, allow_mismatch)
    notes += [n for n in (check.note,) if n]
    info = _file_info(fs, data, len(docs), check, extra)
    if info.mismatch:
        notes.append(f"{fs.relpath}: MISMATCH ALLOWED: {info.mismatch}")
    return LoadedSplit(dataset=spec.name, split=split, docs=docs, files=[info, *aux_infos], notes=notes)


def _load_from_source(spec: DatasetSpec, split: str, alts: list[FileSpec], got: sources.SourceSplit,
                      entry: sources.SourceEntry, data_dir: Path, allow_mismatch: bool) -> LoadedSplit:
    """Verify a split read from a declared source like a file: pinned sha256 (if any), then the record count."""
    if entry.sha256 is None:
        check = FileCheck("unverified", None, False, alts[0].accepted_records(),
                          f"{got.where}: no sha256 pinned in {sources.SOURCES_NAME}; only the record count was "
                          "checked (`jbench data --source` pins one)")
    else:
        bad = None if got.sha256 == entry.sha256 else f"source sha256 {got.sha256} != {entry.sha256} pinned in " \
                                                        f"{sources.SOURCES_NAME}"
        check = FileCheck("manifest", bad, False, alts[0].accepted_records(), None)
    where = got.where
    _refuse_or_keep(check, where, allow_mismatch)
    docs = readers.normalize(spec.reader, got.records)
    notes = [f"{spec.name} {split}: read from {got.where}"]
    aux_infos: list[DataFileInfo] = []
    if spec.name == "marc_ja" and split == "validation":
        manifest = load_manifest(data_dir)
        docs, aux_infos, aux_notes = _marc_validation(spec, docs, data_dir, manifest, allow_mismatch)
        notes += aux_notes
    declared = entry.allowed_records.get(split) == len(docs)  # a partial mirror declared as such
    fix = (f"the source is incomplete or another version; to use it anyway declare it as a partial mirror: jbench "
           f"data --source {spec.name}={entry.source} --allow-data-mismatch (its numbers are then marked ‡), or "
           "pass --allow-data-mismatch to eval/compare/prompts")
    extra = _check_count(check, len(docs), where, allow_mismatch or declared, fix)
    if extra and declared:
        extra += f" (partial source declared with --allow-data-mismatch in {sources.SOURCES_NAME})"
    notes += [n for n in (check.note,) if n]
    mismatch = "; ".join(m for m in (check.mismatch, extra) if m) or None
    info = DataFileInfo(path=got.where, sha256=got.sha256, records=len(docs), expected=check.expected,
                        mismatch=mismatch)
    if mismatch:
        notes.append(f"{got.where}: MISMATCH ALLOWED: {mismatch}")
    return LoadedSplit(dataset=spec.name, split=split, docs=docs, files=[info, *aux_infos], notes=notes)


def dataset_status(data_dir: Path) -> list[dict[str, Any]]:
    """One row per dataset x split: what is present, its records and whether its checksum matched.

    Loads every present split (with mismatches allowed, so one bad file does not hide the others)."""
    rows = []
    data_dir = Path(data_dir)
    declared = sources.load_sources(data_dir)
    for spec in DATASETS.values():
        for split, alts in spec.splits.items():
            entry = declared.get(spec.name)
            rows.append(_status_row(spec, split, alts, data_dir) if entry is None
                        else _source_status_row(spec, split, entry, data_dir))
    return rows


def _source_status_row(spec: DatasetSpec, split: str, entry: sources.SourceEntry, data_dir: Path
                       ) -> dict[str, Any]:
    """A split declared in ``jbench-sources.json``: loaded through its source (from the HF cache when offline)."""
    row: dict[str, Any] = {
        "name": spec.name, "split": split, "path": entry.source, "present": True, "records": None,
        "checksum": "missing", "expected": None, "madeup": False, "licence": spec.licence,
        "how_to_get": f"declared in {sources.SOURCES_NAME}", "detail": "",
    }
    try:
        loaded = load_split(spec.name, split, data_dir, allow_mismatch=True)
    except DataError as err:
        row.update(present=False, detail=f"cannot load: {err.what}" + (f" ({err.where})" if err.where else ""))
        return row
    main = loaded.files[0]
    row.update(path=main.path, records=main.records, checksum=_checksum_word(main.expected, main.mismatch),
               expected=main.expected, detail="; ".join(loaded.notes))
    return row


def _status_row(spec: DatasetSpec, split: str, alts: list[FileSpec], data_dir: Path) -> dict[str, Any]:
    present = [fs for fs in alts if (data_dir / fs.relpath).is_file()]
    fs = present[0] if present else alts[0]
    row: dict[str, Any] = {
        "name": spec.name, "split": split, "path": str(data_dir / fs.relpath), "present": bool(present),
        "records": None, "checksum": "missing", "expected": None, "madeup": False, "licence": spec.licence,
        "how_to_get": spec.how_to_get, "detail": "",
    }
    if not present:
        return row
    try:
        loaded = load_split(spec.name, split, data_dir, allow_mismatch=True)
    except DataError as err:
        check = verify_bytes(fs, _read_bytes(data_dir / fs.relpath), load_manifest(data_dir))
        row.update(checksum=_checksum_word(check.expected, check.mismatch), expected=check.expected,
                   madeup=check.madeup, detail=f"cannot load: {err.what}" + (f" ({err.where})" if err.where else ""))
        return row
    main = loaded.files[0]
    row.update(records=main.records, checksum=_checksum_word(main.expected, main.mismatch), expected=main.expected,
               madeup=main.madeup, detail="; ".join(loaded.notes))
    return row


def _checksum_word(expected: str, mismatch: str | None) -> str:
    if mismatch is not None and ("sha256" in mismatch or "git blob" in mismatch):
        return "mismatch"
    return "unknown" if expected == "unverified" else "ok"
