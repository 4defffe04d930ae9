"""Download dataset files into a data dir, verified before they become visible.

Hub files (JAQKET) go through ``huggingface_hub`` (token, ``HF_ENDPOINT``, the HF cache, ``HF_HUB_OFFLINE``);
every other URL goes through ``pooch`` (retries, progress bar); see :mod:`jbench.data.fetch`. Each file lands in a
temporary name inside the target directory, is checked against its checksum (the target dir's manifest entry if
it has one, else the registry) and its record count, and only then is atomically renamed into place, so a data dir
never holds a partial or corrupt file under a real name. ``mirror`` (or ``JBENCH_DATA_MIRROR``) replaces every URL,
Hub files included, with ``<mirror>/<relpath>`` (a plain HTTP mirror laid out like a data dir): that serves offline
mirrors and the tests' loopback HTTP server.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from jbench.data import readers
from jbench.data.fetch import fetch_hub_file, fetch_url
from jbench.data.loader import DataFileInfo, FileCheck, load_manifest, verify_bytes
from jbench.data.registry import DATASETS, DatasetSpec, FileSpec
from jbench.errors import DataError

MIRROR_ENV = "JBENCH_DATA_MIRROR"

log = logging.getLogger(__name__)


def _targets(spec: DatasetSpec) -> list[FileSpec]:
    """The files ``--download`` fetches: each split's upstream (first) alternative plus the aux files."""
    return [alts[0] for alts in spec.splits.values()] + list(spec.aux.values())


def _url(fs: FileSpec, mirror: str | None) -> str | None:
    """The URL to fetch: files with no public source (MARC-ja text) stay unobtainable even with a mirror."""
    if fs.url is None:
        return None
    return f"{mirror.rstrip('/')}/{fs.relpath}" if mirror else fs.url


def _fetch(fs: FileSpec, url: str, work_dir: Path, *, use_hub: bool, force: bool, progress: bool) -> Path:
    """The downloaded file (in ``work_dir`` or the HF cache), not yet verified."""
    if use_hub and fs.hub is not None:
        return fetch_hub_file(fs.hub, force=force, progress=progress)
    return fetch_url(url, work_dir, Path(fs.relpath).name, progress=progress)


def _count(spec: DatasetSpec, fs: FileSpec, data: bytes, where: str) -> int:
    """Records the loader would yield from this file (aux lists: their rows)."""
    if fs.format == "id_list":
        return len(readers.read_id_list(data, where))
    if fs.format == "label_conv_csv":
        return len(readers.read_label_conv(data, where))
    return len(readers.normalize(spec.reader, readers.read_records(fs.format, data, where)))


def _info(spec: DatasetSpec, fs: FileSpec, data: bytes, check: FileCheck, where: str) -> DataFileInfo:
    n = _count(spec, fs, data, where)
    if check.records is not None and n not in check.records:
        want = " or ".join(f"{c:,}" for c in check.records)
        raise DataError(f"record count mismatch: got {n:,}, expected {want}", where=where,
                        fix="the source file is a different version; fetch the right one by hand")
    return DataFileInfo(path=fs.relpath, sha256=hashlib.sha256(data).hexdigest(), records=n,
                        expected=check.expected, madeup=check.madeup)


def _download_one(spec: DatasetSpec, fs: FileSpec, url: str, data_dir: Path, *, force: bool, use_hub: bool,
                  progress: bool) -> DataFileInfo:
    target = data_dir / fs.relpath
    manifest = load_manifest(data_dir)
    if target.exists() and not force:
        data = target.read_bytes()
        check = verify_bytes(fs, data, manifest)
        if check.mismatch is not None:
            raise DataError(f"existing file fails its checksum: {check.mismatch}", where=str(target),
                            fix=f"rerun with --force to replace it from {url}")
        log.info("%s already present and verified", fs.relpath)
        return _info(spec, fs, data, check, str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part"))
    try:
        fetched = _fetch(fs, url, work, use_hub=use_hub, force=force, progress=progress)
        data = fetched.read_bytes()
        check = verify_bytes(fs, data, manifest)
        if check.mismatch is not None:
            again = ("rerun with --force (downloads it again past the Hugging Face cache)" if fetched.parent != work
                     else "the server sent different bytes; retry, or use another mirror")
            raise DataError(f"downloaded file fails its checksum: {check.mismatch}", where=url, fix=again)
        info = _info(spec, fs, data, check, url)
        if check.expected == "unverified":
            log.warning("%s: no published checksum; only parsing and record count were checked", fs.relpath)
        staged = work / f"{target.name}.verified"
        if fetched.parent == work:
            os.replace(fetched, staged)
        else:  # a file in the HF cache stays there (the cache is the user's); the data dir gets a copy
            shutil.copyfile(fetched, staged)
        os.replace(staged, target)
        return info
    finally:
        shutil.rmtree(work, ignore_errors=True)


def download_datasets(names: list[str] | None, data_dir: Path, *, mirror: str | None = None,
                      force: bool = False, progress: bool | None = None) -> list[DataFileInfo]:
    """Download ``names`` (all when None) into ``data_dir``; returns what is now present and verified.

    ``progress``: byte progress bars on stderr (default: when stderr is a terminal).

    Files with no public source (MARC-ja text) are skipped with a warning when downloading everything; naming
    such a dataset explicitly raises a DataError after the downloadable files are fetched."""
    for name in names or []:
        if name not in DATASETS:
            raise DataError(f"unknown dataset {name!r}", fix=f"use one of: {', '.join(DATASETS)}")
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    progress = sys.stderr.isatty() if progress is None else progress
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    infos: list[DataFileInfo] = []
    unobtainable: dict[str, list[str]] = {}
    for spec in (DATASETS[n] for n in (list(DATASETS) if names is None else names)):
        for fs in _targets(spec):
            url = _url(fs, mirror)
            if url is None:
                unobtainable.setdefault(spec.name, []).append(fs.relpath)
                log.warning("%s: %s has no public download; %s", spec.name, fs.relpath, spec.how_to_get)
                continue
            infos.append(_download_one(spec, fs, url, data_dir, force=force, use_hub=mirror is None,
                                        progress=progress))
    if names and unobtainable:
        missing = "; ".join(f"{name}: {', '.join(rels)}" for name, rels in unobtainable.items())
        got = ", ".join(i.path for i in infos) or "nothing"
        raise DataError(f"cannot download {missing} (downloaded and verified: {got})",
                        fix=" ".join(DATASETS[name].how_to_get for name in unobtainable))
    return infos
