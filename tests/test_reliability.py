"""Reliability: resumable runs (kill -9, Ctrl-C, torn cache writes), batch-size invariance, stable automatic batch
sizes, out-of-memory retries and the determinism record.

The kill/resume test runs real subprocesses (``python -m jbench.cli eval``) and SIGKILLs one once the request cache
has committed a chunk; everything else runs in-process on the embedded tiny model.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Callable

import pytest

from jbench.cache import CACHE_FILE, RequestCache

# ------------------------------------------------------------------------------------------------- helpers


def cached_rows(db: Path) -> int:
    """Answers committed to a run's request cache, read without disturbing the writer (read-only, no checkpoint)."""
    if not db.exists():
        return 0
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as conn:
            return int(conn.execute("SELECT count(*) FROM answers").fetchone()[0])
    except sqlite3.OperationalError as err:  # created but no table yet, or busy for a moment
        if "no such table" in str(err) or "locked" in str(err) or "unable to open" in str(err):
            return 0
        raise


def kill_when(cmd: list[str], env: dict[str, str], db: Path, min_rows: int, log: Path,
              timeout: float = 300) -> int:
    """Start ``cmd``; SIGKILL it as soon as ``db`` holds at least ``min_rows`` answers; returns the rows then."""
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"the run ended (exit {proc.returncode}) before it could be killed:\n"
                                f"{log.read_text()[-3000:]}")
                if cached_rows(db) >= min_rows:
                    proc.send_signal(signal.SIGKILL)
                    break
                if time.monotonic() > deadline:
                    pytest.fail("no chunk was committed in time")
                time.sleep(0.02)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return cached_rows(db)


def samples_bytes(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.glob("samples_*.jsonl"))}


def results_of(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "results.json").read_text(encoding="utf-8"))


def assert_same_numbers(a: Path, b: Path) -> None:
    """Identical metrics, counts and per-example samples (byte for byte)."""
    ra, rb = results_of(a), results_of(b)
    for key in ("results", "versions", "n_samples", "truncated"):
        assert ra[key] == rb[key], key
    assert samples_bytes(a) == samples_bytes(b) and samples_bytes(a)


# ---------------------------------------------------------------------------------------- kill -9 and resume

KILL_LIMIT = 32
KILL_CHUNK = 4  # documents per chunk = per cache transaction (5 answers each for JCQA)


@pytest.mark.slow
def test_kill9_then_rerun_resumes_with_identical_results(real_data_dir: Path, tmp_path: Path) -> None:
    """JCQA 3-shot on the real data, SIGKILLed once 3 chunks are committed, the WAL's last frame torn, then the
    same command again: it resumes (cache hits) and matches an uninterrupted run in every number and sample."""
    env = {**os.environ, "JBENCH_CHUNK_DOCS": str(KILL_CHUNK), "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "runs"
    base = [sys.executable, "-m", "jbench.cli", "eval", "--tasks", "jcommonsenseqa", "--num-fewshot", "3",
            "--limit", str(KILL_LIMIT), "--data-dir", str(real_data_dir), "--output-dir", str(out), "--no-progress"]
    total = KILL_LIMIT * 5
    # the uninterrupted reference runs alongside the interrupted one (they share nothing but the data)
    with (tmp_path / "ref.log").open("w") as ref_log:
        ref = subprocess.Popen(base + ["--run-name", "ref"], env=env, stdout=ref_log, stderr=subprocess.STDOUT)
        try:
            run_dir = out / "killed"
            db = run_dir / CACHE_FILE
            rows = kill_when(base + ["--run-name", "killed"], env, db, 3 * KILL_CHUNK * 5, tmp_path / "killed.log")
        finally:
            ref.wait(timeout=600)
    assert ref.returncode == 0, (tmp_path / "ref.log").read_text()[-3000:]
    assert 0 < rows < total
    assert not (run_dir / "results.json").exists() and not samples_bytes(run_dir)

    # a torn write: cut the WAL inside its last frame (the kill left it un-checkpointed)
    wal = Path(f"{db}-wal")
    assert wal.is_file() and wal.stat().st_size > 32
    with wal.open("r+b") as fh:
        fh.truncate(wal.stat().st_size - 100)
    torn = cached_rows(db)
    assert 0 < torn < rows  # the last commit was dropped whole, nothing half-written survived

    # rerunning the very same command resumes
    proc = subprocess.run(base + ["--run-name", "killed"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming {run_dir}: {torn} answers" in proc.stderr
    res = results_of(run_dir)["config"]["resources"]
    assert res["cache_hits"] == torn and res["cache_misses"] == total - torn
    assert_same_numbers(out / "ref", run_dir)
    assert results_of(run_dir)["config"]["chunk_docs"] == KILL_CHUNK


def test_ctrl_c_then_resume_flag(real_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str], jbench_main: Callable[..., int]) -> None:
    """In-process: Ctrl-C (KeyboardInterrupt) in the third chunk, then ``jbench eval --resume RUN``."""
    from jbench.cache import CachingScorer

    monkeypatch.setenv("JBENCH_CHUNK_DOCS", "3")
    args = ["--tasks", "jcommonsenseqa,xwinograd_ja", "--num-fewshot", "2,0", "--limit", "9", "--data-dir",
            str(real_data_dir), "--output-dir", str(tmp_path), "--no-progress"]

    def cli(*argv: str) -> int:
        return jbench_main("eval", *argv)

    assert cli(*args, "--run-name", "ref") == 0
    real_ll = CachingScorer.loglikelihood
    calls = {"n": 0}

    def interrupted(self: CachingScorer, requests: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 5:  # jcommonsenseqa's 3 chunks are done, xwinograd_ja's second chunk is interrupted
            raise KeyboardInterrupt
        return real_ll(self, requests)

    monkeypatch.setattr(CachingScorer, "loglikelihood", interrupted)
    assert cli(*args, "--run-name", "cut") == 130
    assert "rerun the same command (or `jbench eval --resume RUN`)" in capsys.readouterr().err
    assert not (tmp_path / "cut" / "results.json").exists()
    # results replace a run's files only when complete: the finished task's answers are in the cache, not yet in
    # the run directory (an earlier good run there would have been left untouched)
    assert list(samples_bytes(tmp_path / "cut")) == []
    monkeypatch.setattr(CachingScorer, "loglikelihood", real_ll)
    stale = tmp_path / "cut" / ".results.json.x1y2.tmp"  # what a kill in the middle of an atomic write leaves
    stale.write_text("{half")
    assert cli("--resume", "cut", "--output-dir", str(tmp_path), "--no-progress") == 0
    assert "resuming" in capsys.readouterr().err
    assert not stale.exists()
    assert_same_numbers(tmp_path / "ref", tmp_path / "cut")
    assert results_of(tmp_path / "cut")["config"]["resources"]["cache_hits"] == 9 * 5 + 3 * 2


# ------------------------------------------------------------------------------- torn writes in the cache

_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from jbench.cache import RequestCache
    cache = RequestCache(Path(sys.argv[1]))
    i = 0
    while True:
        cache.put_many({f"t{i}-{j}": {"t": i, "j": j, "pad": "x" * 300} for j in range(400)})
        i += 1
        print(i, flush=True)
""")


def check_consistent(path: Path, min_groups: int = 0) -> int:
    """Every transaction is in the cache whole or not at all, transactions survive as a prefix, values intact."""
    cache = RequestCache(path)
    try:
        rows = dict(cache.conn.execute("SELECT key, value FROM answers"))
    finally:
        cache.close()
    groups: dict[int, int] = {}
    for key, value in rows.items():
        t, j = (int(x) for x in key[1:].split("-"))
        assert json.loads(value) == {"t": t, "j": j, "pad": "x" * 300}
        groups[t] = groups.get(t, 0) + 1
    assert all(n == 400 for n in groups.values()), groups
    assert sorted(groups) == list(range(len(groups)))
    assert len(groups) >= min_groups
    return len(groups)


@pytest.mark.parametrize("delay", [0.0, 0.013, 0.047])
def test_kill9_inside_a_transaction_never_leaves_half_a_chunk(tmp_path: Path, delay: float) -> None:
    path = tmp_path / CACHE_FILE
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert proc.stdout is not None
    for _ in range(3):
        assert proc.stdout.readline(), "writer died"
    time.sleep(delay)  # writes run back to back: the kill lands inside (or right around) a transaction
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    check_consistent(path, min_groups=3)


def _snapshot_after_crash(tmp_path: Path, n: int) -> Path:
    """A cache with ``n`` committed transactions, copied while its connection is open (as a crash leaves it:
    everything still in the WAL)."""
    live = tmp_path / "live" / CACHE_FILE
    cache = RequestCache(live)
    for i in range(n):
        cache.put_many({f"t{i}-{j}": {"t": i, "j": j, "pad": "x" * 300} for j in range(400)})
    snap = tmp_path / "snap"
    snap.mkdir()
    for suffix in ("", "-wal"):
        shutil.copyfile(f"{live}{suffix}", snap / f"{CACHE_FILE}{suffix}")
    cache.close()
    assert (snap / f"{CACHE_FILE}-wal").stat().st_size > 4096
    return snap / CACHE_FILE


def test_torn_or_garbled_wal_never_poisons_the_cache(tmp_path: Path) -> None:
    snap = _snapshot_after_crash(tmp_path, 6)
    wal_bytes = Path(f"{snap}-wal").read_bytes()
    rnd = random.Random(0)
    cases: list[tuple[str, bytes]] = [("intact", wal_bytes), ("no WAL", b""), ("garbage appended",
                                                                              wal_bytes + os.urandom(5000))]
    cases += [(f"cut at {k}", wal_bytes[:k]) for k in
              sorted({rnd.randrange(1, len(wal_bytes)) for _ in range(12)} | {31, 32, 4096 + 24, len(wal_bytes) - 1})]
    for _ in range(12):
        k = rnd.randrange(32, len(wal_bytes) - 8)
        cases.append((f"garbled at {k}", wal_bytes[:k] + bytes(b ^ 0x5A for b in wal_bytes[k:k + 8])
                      + wal_bytes[k + 8:]))
    seen = set()
    for i, (label, content) in enumerate(cases):
        case = tmp_path / f"case{i}"
        case.mkdir()
        shutil.copyfile(snap, case / CACHE_FILE)
        if content:
            (case / f"{CACHE_FILE}-wal").write_bytes(content)
        try:
            seen.add(check_consistent(case / CACHE_FILE))
        except AssertionError as err:
            raise AssertionError(f"{label}: {err}") from err
    assert 6 in seen and 0 in seen and len(seen) > 2  # the intact WAL keeps all; tears lose a suffix only


def test_unreadable_cache_is_moved_aside(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / CACHE_FILE
    path.write_bytes(b"this is not a sqlite database" * 100)
    cache = RequestCache(path)
    assert cache.count() == 0
    cache.put_many({"k": 1.5})
    assert cache.get_many(["k"]) == {"k": 1.5}
    cache.close()
    assert (tmp_path / f"{CACHE_FILE}.corrupt").read_bytes().startswith(b"this is not")
    assert "moved it to cache.sqlite.corrupt" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ batch-size invariance

INVARIANCE_TASKS = [("jcommonsenseqa", 3), ("xwinograd_ja", 0), ("jsquad", 2)]  # MC few-shot, empty ctx, generation


def _run_with(scorer: Any, data_dir: Path, out: Path, limit: int,
              tasks: list[tuple[str, int]]) -> dict[str, list[dict[str, Any]]]:
    from jbench.results import write_run
    from jbench.runner import RunSettings, TaskRun, run_tasks
    from jbench.tasks import resolve_task

    settings = RunSettings(tasks=[TaskRun(resolve_task(name, "0.3"), k) for name, k in tasks],
                           data_dir=data_dir, limit=limit)
    write_run(out, run_tasks(scorer, settings, model_record={}, show_progress=False))
    rec = results_of(out)
    return {task: [json.loads(line) for line in (out / f"samples_{task}.jsonl").read_text().splitlines()]
            for task in rec["results"]}


def _oom_model(scorer: Any, max_rows: int) -> None:
    import torch

    forward = scorer.model.forward

    def limited(*a: Any, **kw: Any) -> Any:
        if int(kw["input_ids"].shape[0]) > max_rows:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(*a, **kw)

    scorer.model.forward = limited
    assert torch  # (imported for the error type family only)


@pytest.mark.slow
@pytest.mark.parametrize("prefix_sharing", [True, False], ids=["prefix-sharing", "naive"])
def test_batch_size_invariance(overlay_data_dir: Path, tmp_path: Path, prefix_sharing: bool) -> None:
    """Batch sizes 1, 7, 32 (and 32 that runs out of memory above 5 rows): identical predictions on every task
    type, |delta loglikelihood| <= 1e-5 (fp32, CPU). Generation does not depend on prefix sharing, so the naive
    path runs the loglikelihood tasks only. A 1024-token context keeps the JSQuAD prefills cheap (longer prompts are
    left-truncated, which is part of what must not depend on the batch)."""
    from jbench.models.hf import HFScorer
    from jbench.tiny import tiny_default_model

    model = tiny_default_model()
    tasks = INVARIANCE_TASKS if prefix_sharing else INVARIANCE_TASKS[:2]
    runs = {}
    configs = [("1", 1, None), ("7", 7, None), ("32", 32, None)] + ([("32-oom", 32, 5)] if prefix_sharing else [])
    for label, bs, oom in configs:
        scorer = HFScorer(model, batch_size=bs, use_fast=False, prefix_sharing=prefix_sharing, max_length=1024)
        if oom:
            _oom_model(scorer, oom)
        runs[label] = _run_with(scorer, overlay_data_dir, tmp_path / label, limit=8, tasks=tasks)
        if oom:
            assert scorer.oom_retries >= 1 and scorer.oom_batch_cap is not None and scorer.oom_batch_cap <= oom
    ref = runs["1"]
    assert set(ref) == {"jcommonsenseqa-1.1-0.3", "xwinograd_ja", "jsquad-1.1-0.3"}.intersection(
        ["jcommonsenseqa-1.1-0.3", "xwinograd_ja"] + (["jsquad-1.1-0.3"] if prefix_sharing else []))
    worst = 0.0
    for label, rows_by_task in runs.items():
        for task, rows in rows_by_task.items():
            assert [r["prediction"] for r in rows] == [r["prediction"] for r in ref[task]], (label, task)
            for r, r0 in zip(rows, ref[task]):
                if "loglikelihoods" in r:
                    deltas = [abs(a - b) for a, b in zip(r["loglikelihoods"], r0["loglikelihoods"])]
                    worst = max(worst, *deltas)
    assert worst <= 1e-5, worst


# -------------------------------------------------------------------------------- automatic batch size

def test_auto_batch_size_ignores_free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """The automatic budget depends on total memory and the model, never on what happens to be free, so a resumed
    run batches (and rounds) exactly like the run it continues."""
    import psutil

    from jbench.models.hf import HFScorer
    from jbench.tiny import tiny_default_model

    scorer = HFScorer(tiny_default_model(), use_fast=False)
    real = psutil.virtual_memory()
    budgets = []
    for available in (real.total // 50, real.total // 3, real.total):
        monkeypatch.setattr(psutil, "virtual_memory", lambda a=available: real._replace(available=a))
        budgets.append(scorer._auto_budgets())
    assert budgets[0] == budgets[1] == budgets[2]
    assert scorer.batch_sizing["total_memory_bytes"] == real.total
    monkeypatch.setattr(psutil, "virtual_memory", lambda: real._replace(total=1 << 30))
    assert scorer._auto_budgets()[1] != budgets[0][1]  # but it does follow the total


# ----------------------------------------------------------------------------------- determinism record

def test_same_record_same_numbers(real_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import jbench

    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    options = dict(tasks="jcommonsenseqa,xwinograd_ja", num_fewshot="3,0", prompt_version="0.3", limit=6,
                   device="cpu", data_dir=real_data_dir, output_dir=tmp_path, cache=False)
    a = jbench.evaluate(None, run_name="a", **options).to_json()  # type: ignore[arg-type]
    b = jbench.evaluate(None, run_name="b", **options).to_json()  # type: ignore[arg-type]
    env_a, env_b = a["config"]["environment"], b["config"]["environment"]
    assert env_a == env_b
    assert env_a["env"]["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    flags = env_a["torch_backends"]
    for key in ("deterministic_algorithms", "float32_matmul_precision", "cudnn_deterministic", "cudnn_benchmark",
                "cuda_matmul_allow_tf32", "mkldnn_enabled"):
        assert key in flags
    for key in ("seeds", "dtype", "device", "batch_size", "chunk_docs", "batch_sizing"):
        assert a["config"][key] == b["config"][key]
    assert_same_numbers(tmp_path / "a", tmp_path / "b")
