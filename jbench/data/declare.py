"""Declare a data source for a dataset (``jbench data --source NAME=SPEC --map NAME.KEY=VALUE``).

The source is read once, each split verified like a file (schema, record count), and only then written to the
data dir's ``jbench-sources.json`` with its resolved commit and content sha256 pinned, so every later load (eval,
compare, offline from the HF cache) reads exactly the data that was checked here. A failed declaration leaves the
file as it was.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from jbench.data.loader import LoadedSplit, load_split
from jbench.data.registry import DATASETS
from jbench.data.sources import (REQUIRED_FIELDS, SOURCES_NAME, SourceEntry, load_sources, parse_source,
                                 read_split, save_sources)
from jbench.errors import DataError

log = logging.getLogger(__name__)


def parse_pair(text: str, option: str, example: str) -> tuple[str, str]:
    """``KEY=VALUE`` with both sides non-empty."""
    key, eq, value = text.partition("=")
    if not eq or not key.strip() or not value.strip():
        raise DataError(f"{option} expects KEY=VALUE, got {text!r}", where=option, fix=f"e.g. {option} {example}")
    return key.strip(), value.strip()


def parse_maps(maps: list[str], declared: set[str]) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    """``NAME.KEY=VALUE`` items -> {NAME: (columns, splits)}. KEY is a jbench split (train, validation: VALUE is
    the source's split name) or a field the dataset needs (VALUE is the source's column)."""
    out: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
    for item in maps:
        target, value = parse_pair(item, "--map", "jnli.sentence1=premise or jnli.validation=dev")
        name, dot, key = target.partition(".")
        if not dot or name not in DATASETS:
            raise DataError(f"--map {item!r}: expected DATASET.KEY=VALUE with a known dataset", where="--map",
                            fix=f"datasets: {', '.join(DATASETS)}; e.g. --map jnli.sentence1=premise")
        if name not in declared:
            raise DataError(f"--map {item!r} names {name}, which this command gives no --source", where="--map",
                            fix=f"add --source {name}=SPEC (the map is stored with that source)")
        fields = sorted({f for need in REQUIRED_FIELDS[name] for f in need})
        columns, splits = out.setdefault(name, ({}, {}))
        earlier = splits.get(key, columns.get(key))
        if earlier is not None and earlier != value:
            raise DataError(f"--map {name}.{key} is given twice ({earlier!r} and {value!r})", where="--map",
                            fix=f"keep one --map {name}.{key}=...; one source column may feed several fields, but "
                                "a field reads one column")
        if key in DATASETS[name].splits:
            splits[key] = value
        elif key in fields:
            columns[key] = value
        else:
            raise DataError(f"--map {item!r}: {name} has no split or field {key!r}", where="--map",
                            fix=f"splits: {', '.join(DATASETS[name].splits)}; fields: {', '.join(fields)}")
    return out


def declare_source(data_dir: Path, name: str, text: str, *, columns: dict[str, str] | None = None,
                   splits: dict[str, str] | None = None, progress: bool = False,
                   allow_mismatch: bool = False) -> list[LoadedSplit]:
    """Read ``name`` from source ``text``, verify every split it has, pin commit + sha256, save. Returns the
    verified splits (those the source lacks still come from the data dir's files).

    ``allow_mismatch`` declares a partial mirror: a split whose record count is not the reference's is accepted,
    its count stored as ``allowed_records`` so later loads pass without the flag, each carrying the mismatch
    (results mark its numbers ‡, as for a mismatched data file)."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}", where="--source", fix=f"use one of: {', '.join(DATASETS)}")
    data_dir = Path(data_dir)
    parse_source(text, data_dir)
    before = load_sources(data_dir)
    had_file = (data_dir / SOURCES_NAME).exists()
    entry = SourceEntry(source=text, columns=dict(columns or {}), splits=dict(splits or {}))
    spec = DATASETS[name]
    pinned = entry
    found = []
    for split in spec.splits:
        got = read_split(spec, split, pinned, data_dir, progress=progress)
        if got is None:
            continue
        if pinned.commit is None and pinned.sha256 is None:
            pinned = replace(pinned, commit=got.commit, sha256=got.sha256)
        found.append(split)
    if not found:
        raise DataError(f"{name}: the source has none of the splits {', '.join(spec.splits)}", where=text,
                        fix=f"map one: --map {name}.validation=SPLIT (the source's split name)")
    save_sources(data_dir, {**before, name: pinned})
    try:
        loaded = [load_split(name, split, data_dir, allow_mismatch=allow_mismatch) for split in found]
        partial = {got.split: got.files[0].records for got in loaded
                   if got.files[0].mismatch and "record count" in got.files[0].mismatch}
        if partial:
            save_sources(data_dir, {**before, name: replace(pinned, allowed_records=partial)})
            log.warning("%s: declared as a partial source (%s): results from it are marked ‡", name,
                        ", ".join(f"{split} {n:,} records" for split, n in partial.items()))
        return loaded
    except BaseException:
        if had_file:
            save_sources(data_dir, before)
        else:
            (data_dir / SOURCES_NAME).unlink(missing_ok=True)
        log.info("%s: declaration failed; %s restored", name, SOURCES_NAME)
        raise
