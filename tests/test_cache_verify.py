"""The request cache verifies what it hands back (issue 12 item 5).

A number read from the cache is published as if it had been computed, so each row carries a checksum of its key
and value: an edited, damaged or unverifiable row is a miss (recomputed, rewritten, counted), never a wrong number
and never a crash. A database another process holds locked is waited for or reported as locked (exit 2), and is
never moved aside as if it were corrupt.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Callable, Sequence

import pytest

from jbench.cache import CACHE_FILE, CachingScorer, RequestCache, row_checksum
from jbench.models.base import GenerationRequest, LoglikelihoodRequest
from jbench.results import StoreError

REQS = [LoglikelihoodRequest("質問：猫はどこにいますか？\n答え：", x)
        for x in ("公園", "学校", "駅", "海")]


class CountingScorer:
    """A deterministic stand-in scorer that records which requests it was asked to compute."""

    max_length = 128
    tokenizer: Any = None

    def __init__(self) -> None:
        self.computed: list[str] = []

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[float]:
        self.computed += [r.continuation for r in requests]
        return [-0.1234567890123 * (1 + len(r.context) + 7 * len(r.continuation)) for r in requests]

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        self.computed += [r.context for r in requests]
        return [r.context[::-1] for r in requests]


def _scored(path: Path) -> tuple[list[float], CachingScorer, CountingScorer]:
    inner = CountingScorer()
    cache = RequestCache(path)
    try:
        scoring = CachingScorer(inner, cache, "model-id")
        return scoring.loglikelihood(REQS), scoring, inner
    finally:
        cache.close()


def _rows(path: Path) -> dict[str, tuple[str, str | None]]:
    with closing(sqlite3.connect(path)) as conn:
        return {k: (v, s) for k, v, s in conn.execute("SELECT key, value, sum FROM answers")}


def _set_value(path: Path, key: str, value: str) -> None:
    """Edit a value in place, as a user with the sqlite3 shell would; the file itself stays sound."""
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE answers SET value = ? WHERE key = ?", (value, key))
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_every_row_has_a_checksum_of_key_and_value(tmp_path: Path) -> None:
    path = tmp_path / CACHE_FILE
    _scored(path)
    rows = _rows(path)
    assert len(rows) == len(REQS)
    assert all(s == row_checksum(k, v) for k, (v, s) in rows.items())


@pytest.mark.parametrize("edit", ["other number", "invalid json", "wrong type", "value of another key"])
def test_a_bad_row_is_recomputed_and_rewritten(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               edit: str) -> None:
    path = tmp_path / CACHE_FILE
    first, _, _ = _scored(path)
    rows = _rows(path)
    keys = sorted(rows)
    victim = keys[1]
    new = {"other number": json.dumps(json.loads(rows[victim][0]) + 0.01), "invalid json": "{-1.5",
           "wrong type": '"-1.5"', "value of another key": rows[keys[0]][0]}[edit]
    _set_value(path, victim, new)

    again, scoring, inner = _scored(path)
    assert again == first  # bit-identical to the uninterrupted run, not the edited number
    # the whole call (a runner chunk) is recomputed: the same batch as the uninterrupted run, so the same bits
    assert len(inner.computed) == len(REQS)
    assert (scoring.corrupt, scoring.unverified, scoring.hits, scoring.misses) == (1, 0, 0, len(REQS))
    err = capsys.readouterr().err
    assert err.count("fail verification") == 1 and "Traceback" not in err
    assert _rows(path)[victim] == rows[victim]  # rewritten with a good checksum

    third, scoring, inner = _scored(path)
    assert third == first and inner.computed == [] and scoring.corrupt == 0


@pytest.mark.parametrize("text", ["nope{", '"-1.5"', "null", "true"])
def test_a_forged_checksum_over_a_bad_value_is_still_a_miss(tmp_path: Path, text: str) -> None:
    """Invalid JSON, or a value that is no loglikelihood, is recomputed even when its checksum matches."""
    path = tmp_path / CACHE_FILE
    first, _, _ = _scored(path)
    victim = sorted(_rows(path))[0]
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE answers SET value = ?, sum = ? WHERE key = ?", (text, row_checksum(victim, text), victim))
    again, scoring, _ = _scored(path)
    assert again == first and scoring.corrupt == 1


def test_generation_answers_are_verified_too(tmp_path: Path) -> None:
    path = tmp_path / CACHE_FILE
    reqs = [GenerationRequest("猫は", ["\n"], 8), GenerationRequest("犬は", ["\n"], 8)]

    def run() -> tuple[list[str], CachingScorer]:
        cache = RequestCache(path)
        try:
            scoring = CachingScorer(CountingScorer(), cache, "model-id")
            return scoring.generate(reqs), scoring
        finally:
            cache.close()

    first, _ = run()
    victim = sorted(_rows(path))[0]
    _set_value(path, victim, json.dumps("edited"))
    again, scoring = run()
    assert again == first and scoring.corrupt == 1


def test_a_cache_from_before_checksums_is_migrated_and_not_trusted(tmp_path: Path) -> None:
    """Old rows have no checksum, so nothing says they are right: they are recomputed (counted as ``unverified``,
    not ``corrupt``), and rewritten with a checksum, so only the first resume pays for it."""
    path = tmp_path / CACHE_FILE
    first, _, _ = _scored(path)
    old = {k: v for k, (v, _) in _rows(path).items()}
    path.unlink()
    with closing(sqlite3.connect(path)) as conn, conn:  # the schema before checksums, one value edited
        conn.execute("CREATE TABLE answers (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        victim = sorted(old)[0]
        old[victim] = "-0.5"
        conn.executemany("INSERT INTO answers VALUES (?, ?)", list(old.items()))
    again, scoring, inner = _scored(path)
    assert again == first
    assert (scoring.unverified, scoring.corrupt, len(inner.computed)) == (len(REQS), 0, len(REQS))
    assert all(s == row_checksum(k, v) for k, (v, s) in _rows(path).items())
    third, scoring, inner = _scored(path)
    assert third == first and inner.computed == [] and scoring.unverified == 0


# ---------------------------------------------------------------------------------------------------- locks

_HOLDER = textwrap.dedent("""
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("PRAGMA locking_mode=EXCLUSIVE")  # as a process that keeps the file to itself
    conn.execute("BEGIN EXCLUSIVE")
    conn.execute("INSERT OR REPLACE INTO answers (key, value, sum) VALUES ('held', '1', NULL)")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    conn.execute("COMMIT")
    conn.close()
""")


def _hold(path: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path), str(seconds)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


@pytest.fixture
def existing_cache(tmp_path: Path) -> Path:
    path = tmp_path / CACHE_FILE
    _scored(path)
    return path


def test_a_locked_cache_is_reported_as_locked_never_moved_aside(existing_cache: Path) -> None:
    proc = _hold(existing_cache, 30)
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreError, match="locked") as err:
            RequestCache(existing_cache, timeout=0.5).close()
        assert time.monotonic() - t0 < 10
        assert "another process holds it" in str(err.value) and err.value.exit_code == 2
        assert "--run-name" in (err.value.fix or "")
    finally:
        proc.kill()
        proc.wait()
    assert not list(existing_cache.parent.glob("*.corrupt*"))
    assert len(_rows(existing_cache)) == len(REQS)  # the holder's file is untouched


def test_a_locked_cache_is_waited_for(existing_cache: Path) -> None:
    proc = _hold(existing_cache, 1.0)
    try:
        cache = RequestCache(existing_cache, timeout=30)  # opens once the holder commits and lets go
        try:
            assert cache.count() == len(REQS) + 1
        finally:
            cache.close()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not list(existing_cache.parent.glob("*.corrupt*"))


def test_a_write_blocked_by_another_connection_waits_then_lands(existing_cache: Path) -> None:
    """Same process, second connection holding ``BEGIN EXCLUSIVE``: put_many waits for the busy timeout."""
    holder = sqlite3.connect(existing_cache, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    cache = RequestCache(existing_cache, timeout=30)
    release = threading.Timer(0.5, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        cache.put_many({"k": 1.5})
        assert cache.get_many(["k"]) == {"k": 1.5}
    finally:
        release.join()
        cache.close()
        holder.close()
    assert not list(existing_cache.parent.glob("*.corrupt*"))


def test_a_write_that_stays_blocked_is_a_locked_store_error(existing_cache: Path) -> None:
    holder = sqlite3.connect(existing_cache, isolation_level=None)
    cache = RequestCache(existing_cache, timeout=0.2)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="locked"):
            cache.put_many({"k": 1.5})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        cache.close()
    assert not list(existing_cache.parent.glob("*.corrupt*"))


def test_only_an_unreadable_file_is_moved_aside(tmp_path: Path) -> None:
    """A malformed database (valid header, garbage pages) is moved aside, like a file that is not a database."""
    path = tmp_path / CACHE_FILE
    cache = RequestCache(path)
    cache.put_many({f"k{i}": "x" * 500 for i in range(200)})
    cache.close()
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'answers'").fetchone()[0]
        page = conn.execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(path.read_bytes())
    data[(root - 1) * page: (root - 1) * page + 12] = b"\xff" * 12  # the table's b-tree page header
    path.write_bytes(bytes(data))
    cache = RequestCache(path)
    try:
        assert cache.count() == 0
    finally:
        cache.close()
    assert (tmp_path / f"{CACHE_FILE}.corrupt").is_file()


# ------------------------------------------------------------------------------------- end to end (CLI, resume)


def test_an_edited_answer_is_recomputed_on_resume(sample_dir: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str],
                                                  jbench_main: Callable[..., int]) -> None:
    """The issue's case: a loglikelihood edited in place (integrity_check still ok) moved acc on resume. Now the
    resumed run recomputes it and matches the uninterrupted run byte for byte."""

    args = ["--tasks", "xwinograd_ja", "--limit", "6", "--data-dir", str(sample_dir), "--output-dir",
            str(tmp_path), "--no-progress"]

    def cli(*argv: str) -> int:
        return jbench_main("eval", *argv)

    assert cli(*args, "--run-name", "ref") == 0
    db = tmp_path / "ref" / CACHE_FILE
    rows = _rows(db)
    key, (value, _) = sorted(rows.items())[0]
    _set_value(db, key, json.dumps(json.loads(value) + 5.0))  # enough to flip a 2-way choice
    samples = {p.name: p.read_bytes() for p in (tmp_path / "ref").glob("samples_*.jsonl")}
    results = json.loads((tmp_path / "ref" / "results.json").read_text())["results"]
    capsys.readouterr()

    assert cli(*args, "--run-name", "ref") == 0
    err = capsys.readouterr().err
    assert err.count("fail verification") == 1 and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in (tmp_path / "ref").glob("samples_*.jsonl")} == samples
    assert json.loads((tmp_path / "ref" / "results.json").read_text())["results"] == results
    assert _rows(db)[key][0] == value


def test_placement_model_args_leave_the_cache_identity_alone() -> None:
    """--model-args low_cpu_mem_usage=True keeps the run name (settings_tag), so it must keep the cached answers
    too; an argument that can change numbers still gets its own identity, and no model args keep the old key."""
    from jbench.cache import model_identity

    base = {"model": "m", "model_path": "/m", "variant": "fp32", "dtype": "float32", "device": "cpu"}
    plain = model_identity(base)
    assert model_identity({**base, "model_kwargs": {}}) == plain
    assert model_identity({**base, "model_kwargs": {"low_cpu_mem_usage": True, "device_map": "auto",
                                                    "max_memory": {"0": "20GiB"}}}) == plain
    eager = model_identity({**base, "model_kwargs": {"attn_implementation": "eager"}})
    assert eager != plain
    assert model_identity({**base, "model_kwargs": {"attn_implementation": "eager", "low_cpu_mem_usage": True}}) \
        == eager
    # the key for runs without model args is what it always was
    import hashlib
    ident = {k: base.get(k) for k in ("model", "model_path", "variant", "dtype", "device", "use_fast",
                                      "trust_remote_code", "revision", "max_length", "tokenizer", "weights_fingerprint")}
    assert plain == hashlib.sha256(json.dumps(ident, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
