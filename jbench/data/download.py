"""Download dataset files into a data dir, verified before they become visible.

Each file is streamed to a temporary file in the target directory, checked against its checksum (the target
dir's manifest entry if it has one, else the registry), and only then atomically renamed into place, so a data
dir never holds a partial or corrupt file under a real name. ``mirror`` (or ``JBENCH_DATA_MIRROR``) replaces
every URL with ``<mirror>/<relpath>`` (a mirror laid out like a data dir): that serves offline mirrors and the
tests' loopback HTTP server.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from jbench.version import __version__
from jbench.data import readers
from jbench.data.loader import DataFileInfo, FileCheck, load_manifest, verify_bytes
from jbench.data.registry import DATASETS, DatasetSpec, FileSpec
from jbench.errors import DataError

MIRROR_ENV = "JBENCH_DATA_MIRROR"
CHUNK = 1 << 20
TIMEOUT_S = 60.0

log = logging.getLogger(__name__)


def _targets(spec: DatasetSpec) -> list[FileSpec]:
    """The files ``--download`` fetches: each split's upstream (first) alternative plus the aux files."""
    return [alts[0] for alts in spec.splits.values()] + list(spec.aux.values())


def _url(fs: FileSpec, mirror: str | None) -> str | None:
    """The URL to fetch: files with no public source (MARC-ja text) stay unobtainable even with a mirror."""
    if fs.url is None:
        return None
    return f"{mirror.rstrip('/')}/{fs.relpath}" if mirror else fs.url


def _fetch(url: str, dest: Path) -> None:
    """Stream ``url`` into ``dest``; a short body (vs Content-Length) is an error, not a file."""
    req = urllib.request.Request(url, headers={"User-Agent": f"jbench/{__version__}"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp, dest.open("wb") as out:
            expected = resp.headers.get("Content-Length")
            got = 0
            while chunk := resp.read(CHUNK):
                out.write(chunk)
                got += len(chunk)
    except urllib.error.HTTPError as err:
        raise DataError(f"download failed: HTTP {err.code} {err.reason}", where=url,
                        fix="check the URL / mirror (JBENCH_DATA_MIRROR) or fetch the file by hand") from err
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DataError(f"download failed: {reason}", where=url,
                        fix="check your network or use a mirror (--mirror / JBENCH_DATA_MIRROR)") from err
    if expected is not None and expected.isdigit() and got != int(expected):
        raise DataError(f"download truncated: got {got:,} of {int(expected):,} bytes", where=url,
                        fix="retry the download")


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
        raise DataError(f"record count mismatch: got {n:,}, expected {check.records}", where=where,
                        fix="the source file is a different version; fetch the right one by hand")
    return DataFileInfo(path=fs.relpath, sha256=hashlib.sha256(data).hexdigest(), records=n,
                        expected=check.expected, madeup=check.madeup)


def _download_one(spec: DatasetSpec, fs: FileSpec, url: str, data_dir: Path, force: bool) -> DataFileInfo:
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
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _fetch(url, tmp)
        data = tmp.read_bytes()
        check = verify_bytes(fs, data, manifest)
        if check.mismatch is not None:
            raise DataError(f"downloaded file fails its checksum: {check.mismatch}", where=url,
                            fix="the server sent different bytes; retry, or use another mirror")
        info = _info(spec, fs, data, check, url)
        if check.expected == "unverified":
            log.warning("%s: no published checksum; only parsing and record count were checked", fs.relpath)
        os.replace(tmp, target)
        return info
    finally:
        tmp.unlink(missing_ok=True)


def download_datasets(names: list[str] | None, data_dir: Path, *, mirror: str | None = None,
                      force: bool = False) -> list[DataFileInfo]:
    """Download ``names`` (all when None) into ``data_dir``; returns what is now present and verified.

    Files with no public source (MARC-ja text) are skipped with a warning when downloading everything; naming
    such a dataset explicitly raises a DataError after the downloadable files are fetched."""
    for name in names or []:
        if name not in DATASETS:
            raise DataError(f"unknown dataset {name!r}", fix=f"use one of: {', '.join(DATASETS)}")
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
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
            infos.append(_download_one(spec, fs, url, data_dir, force))
    if names and unobtainable:
        missing = "; ".join(f"{name}: {', '.join(rels)}" for name, rels in unobtainable.items())
        got = ", ".join(i.path for i in infos) or "nothing"
        raise DataError(f"cannot download {missing} (downloaded and verified: {got})",
                        fix=" ".join(DATASETS[name].how_to_get for name in unobtainable))
    return infos
