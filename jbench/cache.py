"""Content-hashed request cache (sqlite), so an interrupted run resumes where it stopped.

Key = sha256 of (model identity incl. variant, dtype, device and tokenizer; request kind; request text and
generation settings). The runner hands the scorer fixed chunks of documents and the cache commits each chunk's
answers in one transaction, so a kill -9 loses at most the chunk in flight, and a resumed run recomputes that
chunk with exactly the same batch composition — giving bit-identical numbers to an uninterrupted run. sqlite's
journal guarantees a torn write never leaves a half-written row behind: a WAL whose tail was cut or garbled is
replayed only up to its last intact commit, so at worst the last chunks are recomputed. A cache file that sqlite
cannot read at all is moved aside (``cache.sqlite.corrupt``) and the run starts from an empty cache.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any, Sequence

from jbench.models.base import GenerationRequest, LoglikelihoodRequest, Scorer, Tokenizer
from jbench.results import StoreError

CACHE_FILE = "cache.sqlite"

# What identifies a model's numbers; anything else in the record (timings, paths to outputs) must not matter.
IDENTITY_KEYS = ("model", "model_path", "variant", "dtype", "device", "use_fast", "trust_remote_code", "revision",
                 "max_length", "tokenizer", "weights_fingerprint")


def model_identity(record: dict[str, Any]) -> str:
    ident = {k: record.get(k) for k in IDENTITY_KEYS}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class RequestCache:
    """A sqlite key-value store: request hash -> JSON value."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        try:
            self.conn = self._open()
        except sqlite3.DatabaseError as err:  # not a database / malformed: the cache only saves time, start afresh
            aside = path.with_name(path.name + ".corrupt")
            for suffix in ("", "-wal", "-shm"):
                src = Path(str(path) + suffix)
                if src.exists():
                    src.replace(Path(str(aside) + suffix))
            print(f"warning: the request cache {path} is unreadable ({err}); moved it to {aside.name} and starting "
                  "with an empty cache (answers are recomputed)", file=sys.stderr)
            try:
                self.conn = self._open()
            except sqlite3.Error as err2:
                raise self._error("cannot open the request cache", err2) from err2
        except sqlite3.Error as err:
            raise self._error("cannot open the request cache", err) from err

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            check = conn.execute("PRAGMA quick_check").fetchone()
            if not check or check[0] != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check[0] if check else 'no answer'}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _error(self, what: str, err: sqlite3.Error) -> StoreError:
        text = str(err).lower()
        if "full" in text:
            fix = "free some disk space or choose another --output-dir, then rerun (answers already cached are kept)"
        elif "locked" in text or "busy" in text:
            fix = "another jbench run is using this run directory: wait for it, or choose another --run-name"
        else:
            fix = "check that the run directory is writable, or run with --no-cache"
        return StoreError(f"{what}: {err}", where=str(self.path), fix=fix)

    def count(self) -> int:
        """How many answers are stored."""
        return int(self.conn.execute("SELECT count(*) FROM answers").fetchone()[0])

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        try:
            for start in range(0, len(keys), 500):
                part = list(keys[start: start + 500])
                marks = ",".join("?" * len(part))
                for k, v in self.conn.execute(f"SELECT key, value FROM answers WHERE key IN ({marks})", part):
                    found[k] = json.loads(v)
        except sqlite3.Error as err:
            raise self._error("cannot read the request cache", err) from err
        return found

    def put_many(self, items: dict[str, Any]) -> None:
        """All of a chunk's answers in one transaction: either all land or none do."""
        try:
            with self.conn:
                self.conn.execute("BEGIN")
                self.conn.executemany("INSERT OR REPLACE INTO answers (key, value) VALUES (?, ?)",
                                      [(k, json.dumps(v)) for k, v in items.items()])
        except sqlite3.Error as err:
            raise self._error("cannot write the request cache", err) from err

    def close(self) -> None:
        self.conn.close()


class CachingScorer:
    """Wraps any Scorer; answers cached requests from sqlite and scores only the rest."""

    def __init__(self, inner: Scorer, cache: RequestCache, identity: str) -> None:
        self.inner, self.cache, self.identity = inner, cache, identity
        self.hits = 0
        self.misses = 0

    @property
    def tokenizer(self) -> Tokenizer:
        return self.inner.tokenizer

    @property
    def max_length(self) -> int:
        return self.inner.max_length

    def _key(self, kind: str, payload: list[Any]) -> str:
        blob = json.dumps([self.identity, kind, payload], ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _run(self, kind: str, requests: Sequence[Any], payloads: list[list[Any]], compute: Any) -> list[Any]:
        keys = [self._key(kind, p) for p in payloads]
        found = self.cache.get_many(keys)
        todo = [i for i, k in enumerate(keys) if k not in found]
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        if todo:
            fresh = compute([requests[i] for i in todo])
            new = {keys[i]: v for i, v in zip(todo, fresh)}
            self.cache.put_many(new)
            found.update(new)
        return [found[k] for k in keys]

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[float]:
        return self._run("ll", requests, [[r.context, r.continuation] for r in requests], self.inner.loglikelihood)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        return self._run("gen", requests, [[r.context, r.until, r.max_gen_tokens] for r in requests],
                         self.inner.generate)
