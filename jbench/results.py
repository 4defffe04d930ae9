"""The run store: ``results/<run>/results.json`` plus one ``samples_<task>.jsonl`` per task.

Every file is written to a temporary sibling, fsynced and renamed over the target, so a crash (or a full disk)
never leaves a half-written file where a finished one is expected. Loading a run back is one call.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from jbench.errors import JBenchError

RESULTS_FILE = "results.json"


class StoreError(JBenchError):
    """A run directory cannot be written or read."""


def _atomic_write(path: Path, chunks: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for chunk in chunks:
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise StoreError(f"could not write {path.name}: {err.strerror or err}", where=str(path),
                         fix="free some disk space or choose another --output-dir, then rerun (finished work is "
                             "kept in the request cache)") from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    """Pretty JSON like the reference (``indent=2, ensure_ascii=False``), atomically."""
    _atomic_write(path, [json.dumps(obj, indent=2, ensure_ascii=False), "\n"])


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    _atomic_write(path, (json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def samples_path(run_dir: Path, task: str) -> Path:
    return run_dir / f"samples_{task}.jsonl"


@dataclass(frozen=True)
class Run:
    """A stored run: its directory and parsed results.json."""

    path: Path
    data: dict[str, Any]

    @property
    def results(self) -> dict[str, dict[str, Any]]:
        return self.data.get("results", {})

    @property
    def versions(self) -> dict[str, Any]:
        return self.data.get("versions", {})

    @property
    def config(self) -> dict[str, Any]:
        return self.data.get("config", {})

    def samples(self, task: str) -> list[dict[str, Any]]:
        path = samples_path(self.path, task)
        if not path.exists():
            raise StoreError(f"run has no samples for task {task}", where=str(path))
        with path.open(encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]


def resolve_run(ref: str | os.PathLike[str], results_dir: Path | None = None) -> Path:
    """A run directory, a results.json path, or a run name under ``results_dir`` (default ``results/``)."""
    p = Path(ref)
    if p.is_file() and p.name == RESULTS_FILE:
        return p.parent
    if (p / RESULTS_FILE).is_file():
        return p
    base = results_dir or Path(os.environ.get("JBENCH_RESULTS_DIR", "results"))
    if (base / str(ref) / RESULTS_FILE).is_file():
        return base / str(ref)
    raise StoreError(f"no finished run found at {ref!s}", where=f"{p} (and {base / str(ref)})",
                     fix="pass a run directory that holds results.json (see `ls results/`)")


def resolve_run_dir(ref: str | os.PathLike[str], results_dir: Path) -> Path:
    """A run directory that may be unfinished (for ``--resume``): a path, or a name under ``results_dir``."""
    for cand in (Path(ref), results_dir / str(ref)):
        if cand.is_dir():
            return cand
    raise StoreError(f"no run directory {ref!s}", where=f"{Path(ref)} (and {results_dir / str(ref)})",
                     fix="pass the directory printed when the run started (results/<run>)")


def load_run(ref: str | os.PathLike[str]) -> Run:
    path = resolve_run(ref)
    try:
        data = json.loads((path / RESULTS_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise StoreError(f"results.json is not valid JSON: {err}", where=str(path / RESULTS_FILE)) from err
    return Run(path, data)


def load_samples_frame(ref: str | os.PathLike[str], tasks: list[str] | None = None) -> "pandas.DataFrame":  # noqa: F821
    """Every per-example row of a run as one pandas DataFrame (one call, as users expect).

    Columns: task, doc_index, doc_id, prediction, gold, the per-example metric values, and the rest of each
    sample record (prompt, continuations, loglikelihoods, ...).
    """
    import pandas as pd

    run = load_run(ref)
    frames = []
    for task in tasks or list(run.results):
        rows = run.samples(task)
        frame = pd.DataFrame(rows)
        frame.insert(0, "task", task)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
