"""``jbench data``: show what a data dir holds, download the public files, declare Hub or folder sources."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from jbench.cli_options import DataDirOpt


def data_cmd(
    data_dir: DataDirOpt = None,
    download: Annotated[Optional[list[str]], typer.Option(
        "--download", help="Download these datasets (repeatable; 'all' for every downloadable file). Hub files "
                           "(JAQKET) go through huggingface_hub, so HF_TOKEN / `hf auth login`, HF_ENDPOINT and the "
                           "HF cache apply and HF_HUB_OFFLINE=1 reads only the cache; other files are fetched with "
                           "retries ($JBENCH_DOWNLOAD_RETRIES, default 3).")] = None,
    mirror: Annotated[Optional[str], typer.Option(
        "--mirror", help="Base URL replacing the public hosts, Hub included (or $JBENCH_DATA_MIRROR): a plain "
                         "HTTP server laid out like a data dir.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even if a verified file exists.")] = False,
    source: Annotated[Optional[list[str]], typer.Option(
        "--source", help="DATASET=SPEC (repeatable): read DATASET from a Hub dataset repo, "
                         "SPEC = hub:OWNER/NAME@REVISION (or hub:OWNER/NAME/SUBDIR@REVISION; no @REVISION: main), or from "
                         "a local folder, through the `datasets` "
                         "library (parquet or JSON files). It is read and checked now, then recorded with its commit "
                         "and sha256 in the data dir's jbench-sources.json, which every command then uses.")] = None,
    maps: Annotated[Optional[list[str]], typer.Option(
        "--map", help="DATASET.KEY=VALUE for a --source (repeatable): KEY a field jbench needs and VALUE the "
                      "source's column (jnli.sentence1=premise), or KEY train/validation and VALUE the source's "
                      "split name (jnli.validation=dev).")] = None,
    allow_data_mismatch: Annotated[bool, typer.Option(
        "--allow-data-mismatch", help="With --source: declare a partial or different mirror anyway. A split whose "
                                      "record count is not the reference's is recorded (allowed_records in "
                                      "jbench-sources.json); runs on it then need no flag but carry the mismatch, "
                                      "and their numbers are marked ‡ like those of a mismatched data file.")] = False,
    progress: Annotated[Optional[bool], typer.Option(
        "--progress/--no-progress", help="Download progress bars on stderr (default: when stderr is a "
                                         "terminal).")] = None,
) -> None:
    """Show each dataset's files, record counts and checksum status; optionally download the public ones or
    declare a Hub dataset repo as a dataset's source."""
    from jbench.data import dataset_status, download_datasets, resolve_data_dir

    show = sys.stderr.isatty() if progress is None else progress
    if download or source:
        ddir = Path(data_dir or os.environ.get("JBENCH_DATA_DIR") or "data")
        ddir.mkdir(parents=True, exist_ok=True)
    else:
        ddir = resolve_data_dir(data_dir)
    if source:
        _declare(ddir, source, maps or [], show, allow_data_mismatch)
    elif maps or allow_data_mismatch:
        from jbench.errors import DataError

        option = "--map" if maps else "--allow-data-mismatch"
        raise DataError(f"{option} only applies together with --source", where=option,
                        fix="add --source DATASET=SPEC for the dataset it applies to (a downloaded file that fails "
                            "its checks is used anyway with eval/compare/prompts --allow-data-mismatch)")
    if download:
        names = None if "all" in download else list(download)
        for info in download_datasets(names, ddir, mirror=mirror, force=force, progress=show):
            print(f"downloaded {info.path}  sha256={info.sha256}  records={info.records}", file=sys.stderr)
    rows = dataset_status(ddir)
    cols = list(rows[0]) if rows else []
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")


def _declare(ddir: Path, items: list[str], maps: list[str], progress: bool, allow_mismatch: bool) -> None:
    from jbench.data.declare import declare_source, parse_maps, parse_pair

    pairs = [parse_pair(item, "--source", "jnli=hub:me/jnli-mirror@main") for item in items]
    mapped = parse_maps(maps, {name for name, _ in pairs})
    for name, spec in pairs:
        columns, splits = mapped.get(name, ({}, {}))
        for loaded in declare_source(ddir, name, spec, columns=columns, splits=splits, progress=progress,
                                     allow_mismatch=allow_mismatch):
            info = loaded.files[0]
            flag = f"  MISMATCH ALLOWED (‡): {info.mismatch}" if info.mismatch else ""
            print(f"source {name} {loaded.split}: {info.path}  records={info.records}  sha256={info.sha256}{flag}",
                  file=sys.stderr)
