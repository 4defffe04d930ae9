"""The run store: ``results/<run>/results.json`` plus one ``samples_<task>.jsonl`` per task, and the same run in
lm-eval 0.4's layout under ``results/<run>/lm-eval/`` (see :mod:`jbench.lmeval_layout`).

Every file is written to a temporary sibling, fsynced and renamed over the target, so a crash (or a full disk)
never leaves a half-written file where a finished one is expected. Loading a run back is one call.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from jbench.errors import JBenchError, StoreError

if TYPE_CHECKING:
    import pandas

    from jbench.records import RunRecord

__all__ = ["RESULTS_FILE", "Run", "RunLock", "StagedRun", "StoreError", "check_plain_name", "load_run",
           "load_samples_frame", "resolve_run", "resolve_run_dir", "samples_path", "write_json", "write_jsonl",
           "parse_samples", "write_run"]

RESULTS_FILE = "results.json"
LOCK_FILE = ".lock"
STAGING_DIR = ".staging"


NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")


def check_plain_name(name: str, what: str, option: str) -> None:
    """Run and baseline names are names, not paths: ``../x`` or ``/tmp/x`` would write outside the store, and
    spaces, newlines or 300 characters make a directory nobody can type. Letters, digits and ``. _ + -``, first a
    letter or digit, at most 200 characters."""
    if not NAME_RE.fullmatch(name or ""):
        raise StoreError(f"invalid {what} {name[:80]!r}{'...' if len(name) > 80 else ''}: it must be a plain name "
                         "(letters, digits and . _ + -, starting with a letter or digit, at most 200 characters)",
                         where=f"{option} {name[:80]}", fix="use a plain name such as 'tiny-fp32'; to store runs "
                                                            "elsewhere, use --output-dir")


def safe_name(text: str) -> str:
    """``text`` made into a valid run name (default names come from model folders, which may hold anything)."""
    name = re.sub(r"[^A-Za-z0-9._+-]+", "_", text).lstrip("._+-")[:200]
    return name or "model"


def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` can only be read by setting it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _atomic_write(path: Path, chunks: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; result files are meant to be read by teammates and CI artefact steps, so they get
        # the permissions an ordinary open() would give (0666 less the umask), like cache.sqlite does
        os.fchmod(fd, 0o666 & ~_umask())
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


def write_report(path: Path, text: str) -> None:
    """Write a ``--report`` file (atomically: never half a report); an unwritable path is the user's to fix."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, [text + "\n"])
    except OSError as err:
        raise JBenchError(f"cannot write the report: {err.strerror or err}", where=str(path),
                          fix="pass a writable --report path") from err


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    _atomic_write(path, (json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def samples_path(run_dir: Path, task: str) -> Path:
    return run_dir / f"samples_{task}.jsonl"


class StagedRun:
    """A run's new result files, kept aside until the run is complete.

    Why: a rerun that fails half-way must leave the previous good results.json *and* its samples intact, and a
    results.json must never sit beside samples of another run. Samples are written to ``<run>/.staging/`` as each
    task finishes; :meth:`publish` then swaps them in and writes results.json last."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.stage = run_dir / STAGING_DIR
        if self.stage.exists():
            import shutil

            shutil.rmtree(self.stage, ignore_errors=True)  # an earlier attempt that died; its answers are cached
        try:
            self.stage.mkdir(parents=True)
        except OSError as err:
            raise StoreError(f"cannot write the run directory: {err.strerror or err}", where=str(run_dir),
                             fix="choose a writable --output-dir") from err

    def write_samples(self, task: str, rows: Iterable[dict[str, Any]]) -> None:
        write_jsonl(samples_path(self.stage, task), rows)

    def write_tree(self, name: str, files: dict[str, Any]) -> None:
        """A staged subdirectory ``name`` of whole files (file name -> JSON object, or a list of rows for a
        ``.jsonl``), e.g. the lm-eval layout; :meth:`publish` swaps it in with the rest."""
        for fname, content in files.items():
            target = self.stage / name / fname
            if fname.endswith(".jsonl"):
                write_jsonl(target, content)
            else:
                write_json(target, content)

    def publish(self, record: dict[str, Any]) -> None:
        """Replace the previous results with the new ones: results.json goes first (so a crash in between leaves
        an unfinished run, never a mixed one), then the samples and staged subdirectories, then the new
        results.json."""
        import shutil

        (self.run_dir / RESULTS_FILE).unlink(missing_ok=True)
        for tree in [p for p in self.stage.iterdir() if p.is_dir()]:
            shutil.rmtree(self.run_dir / tree.name, ignore_errors=True)
            os.replace(tree, self.run_dir / tree.name)
        new = {p.name for p in self.stage.glob("samples_*.jsonl")}
        for old in self.run_dir.glob("samples_*.jsonl"):
            if old.name not in new:
                old.unlink(missing_ok=True)  # a task of the replaced run that this run did not evaluate
        for name in sorted(new):
            os.replace(self.stage / name, self.run_dir / name)
        write_json(self.run_dir / RESULTS_FILE, record)
        self.discard()

    def discard(self) -> None:
        import shutil

        shutil.rmtree(self.stage, ignore_errors=True)


class RunLock:
    """One process at a time per run directory (an OS lock, released by the kernel if the process dies).

    Why: two runs started together on one run name used to leave a run.json of one run beside the results.json of
    the other. The holder's pid and command line are written into the lock file so the second process can say
    who holds it."""

    def __init__(self, run_dir: Path, *, wait: bool = False) -> None:
        self.run_dir, self.wait = run_dir, wait
        self.path = run_dir / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        import fcntl
        import sys

        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise StoreError(f"cannot write the run directory: {err.strerror or err}", where=str(self.run_dir),
                             fix="choose a writable --output-dir") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder()
            if not self.wait:
                os.close(fd)
                raise StoreError(f"the run directory is in use by another jbench process ({holder})",
                                 where=str(self.run_dir),
                                 fix="wait for that run to finish (or pass --wait), or choose another --run-name")
            print(f"waiting for {holder} to release {self.run_dir} ...", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}: {' '.join(sys.argv)[:500]}\n".encode())
        self._fd = fd
        return self

    def _holder(self) -> str:
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            text = ""
        return text or "unknown process"

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


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
        return [row for _, row in parse_samples(path, task)]


_RERUN_FIX = "rerun the run (`jbench eval --resume RUN` reuses its cached answers)"


def parse_samples(path: Path, task: str, *, error: type[JBenchError] = StoreError,
                  fix: str = _RERUN_FIX) -> list[tuple[int, dict[str, Any]]]:
    """Every (line number, row) of a samples file; an unreadable file, a line that is not JSON (cut short or
    edited) or not an object is one ``error`` naming the file and line. Readers that check more (``check``,
    ``baseline save``) validate the rows' fields on top of this."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise error(f"cannot read the samples file of task {task}: {err}", where=str(path), fix=fix) from err
    rows: list[tuple[int, dict[str, Any]]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise error(f"samples line {number} of task {task} is not valid JSON ({err.msg}, column {err.colno}): "
                        "the file was cut short or edited", where=f"{path}:{number}", fix=fix) from err
        if not isinstance(row, dict):
            kind = {list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
                type(row), "a number" if isinstance(row, (int, float)) else type(row).__name__)
            raise error(f"samples line {number} of task {task} is {kind}, not an object (one example per line)",
                        where=f"{path}:{number}", fix=fix)
        rows.append((number, row))
    return rows


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
    """A stored run; a results.json that is not JSON, not an object, of a newer format, or with a field of the wrong
    type (``{"results": 5}``) is a StoreError (exit 2) naming the field."""
    from jbench.records import check_run_format, check_run_shape

    path = resolve_run(ref)
    try:
        data = json.loads((path / RESULTS_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise StoreError(f"results.json is not valid JSON: {err}", where=str(path / RESULTS_FILE),
                         fix="the run did not finish writing or the file was edited: rerun it (`jbench eval "
                             "--resume RUN` reuses its cached answers)") from err
    check_run_format(data, str(path / RESULTS_FILE))
    check_run_shape(data, str(path / RESULTS_FILE))
    return Run(path, data)


def write_run(run_dir: Path, record: "RunRecord") -> None:
    """The one writer of a run directory (runner and lm-eval suite alike): every task's samples file, the same
    run in lm-eval 0.4's layout (``lm-eval/``) and results.json, replacing the previous run's files only once all of them are written (see :class:`StagedRun`)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for tmp in run_dir.glob(".*.tmp"):  # temp files of atomic writes a killed run left behind
        tmp.unlink(missing_ok=True)
    from jbench.lmeval_layout import LMEVAL_DIR, build_layout

    staged = StagedRun(run_dir)
    try:
        for task, rows in record.rows.items():
            staged.write_samples(task, rows)
        layout = build_layout(record)  # lm-eval 0.4's files, in <run>/lm-eval/ (see jbench.lmeval_layout)
        staged.write_tree(LMEVAL_DIR, {layout.results_name: layout.results, **layout.samples})
    except BaseException:
        staged.discard()
        raise
    staged.publish(record.to_json())
    record.path = run_dir


def load_samples_frame(ref: str | os.PathLike[str], tasks: list[str] | None = None) -> "pandas.DataFrame":
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
