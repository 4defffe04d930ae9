"""Content-hashed request cache (sqlite), so an interrupted run resumes where it stopped.

Key = sha256 of (model identity incl. variant, dtype, device and tokenizer; request kind; request text and
generation settings). The runner hands the scorer fixed chunks of documents and the cache commits each chunk's
answers in one transaction, so a kill -9 loses at most the chunk in flight, and a resumed run recomputes that
chunk with exactly the same batch composition — giving bit-identical numbers to an uninterrupted run. sqlite's
journal guarantees a torn write never leaves a half-written row behind: a WAL whose tail was cut or garbled is
replayed only up to its last intact commit, so at worst the last chunks are recomputed. A cache file that sqlite
cannot read at all ("file is not a database", "malformed") is moved aside (``cache.sqlite.corrupt``) and the run
starts from an empty cache.

Stored answers are verified, because a number read back from the cache is published as if it had been computed:
every row carries ``sum`` = sha256(key + NUL + value text). A row whose checksum does not match, whose value is not
valid JSON, or whose value has the wrong type for its request kind is a miss: the answer is recomputed, the row is
rewritten, and :attr:`CachingScorer.corrupt` counts it (one warning line on stderr). The whole call it came in
(one runner chunk) is recomputed with it, so that the batch -- and so every bit of the answer -- is the uninterrupted
run's: recomputed alone, a loglikelihood differs in the 8th digit (other padding, other kernel blocking).
Rows written before the checksum existed (``sum`` is NULL after the column is added to an old cache) cannot be
verified and are treated the same way -- recomputed, not trusted -- but counted apart in
:attr:`CachingScorer.unverified`.

A cache that another process holds locked is waited for (sqlite busy timeout, :data:`BUSY_TIMEOUT_S`) and then
reported as a :class:`StoreError` (exit 2) saying it is locked; it is never moved aside, since the file is fine and
moving it under its holder would split one run's answers across two files.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from jbench.models.base import GenerationRequest, LoglikelihoodRequest, Scorer, ScorerStats, Tokenizer
from jbench.results import StoreError
from jbench.run_identity import NEUTRAL_MODEL_ARGS

CACHE_FILE = "cache.sqlite"

#: seconds to wait for another process's lock before reporting the cache as locked (sqlite's busy timeout).
BUSY_TIMEOUT_S = 30.0

# What identifies a model's numbers; anything else in the record (timings, paths to outputs) must not matter.
IDENTITY_KEYS = ("model", "model_path", "variant", "dtype", "device", "use_fast", "trust_remote_code", "revision",
                 "max_length", "tokenizer", "weights_fingerprint")
#: identity parts that only some runs have: the chat template settings (``--apply-chat-template``)
OPTIONAL_IDENTITY_KEYS = ("chat_template", "system_instruction", "fewshot_as_multiturn")

# sqlite primary result codes (``err.sqlite_errorcode & 0xff``)
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_CORRUPT, _SQLITE_NOTADB = 5, 6, 11, 26


def model_identity(record: dict[str, Any]) -> str:
    ident = {k: record.get(k) for k in IDENTITY_KEYS}
    for key in OPTIONAL_IDENTITY_KEYS:  # only when set, so runs without them keep their cache keys
        if record.get(key) is not None:
            ident[key] = record[key]
    if record.get("backend", "hf") != "hf":  # another engine's numbers differ in the last bits; hf keys stay as before
        ident["backend"] = record["backend"]
    kwargs = {k: v for k, v in (record.get("model_kwargs") or {}).items() if k not in NEUTRAL_MODEL_ARGS}
    if kwargs:  # --model-args (attn_implementation, ...) can change the numbers; placement/memory ones cannot
        ident["model_kwargs"] = kwargs
    return hashlib.sha256(json.dumps(ident, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def row_checksum(key: str, value_text: str) -> str:
    """sha256 of key NUL value (the stored JSON text): binds the answer to its request, so neither an edited value
    nor a value copied onto another key passes."""
    return hashlib.sha256(f"{key}\0{value_text}".encode()).hexdigest()


class _Unreadable(sqlite3.DatabaseError):
    """The file opened but fails sqlite's own consistency check."""


def _is_unreadable(err: sqlite3.Error) -> bool:
    """True only for a file sqlite cannot use as a database ("file is not a database", "database disk image is
    malformed", a failed quick_check) -- the only case where moving it aside is right. A locked or busy database,
    a full disk or a permission problem is not that."""
    if isinstance(err, _Unreadable):
        return True
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(err).lower()
    return "not a database" in text or "malformed" in text


def _is_locked(err: sqlite3.Error) -> bool:
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None and (code & 0xFF) in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return True
    text = str(err).lower()
    return "locked" in text or "busy" in text


class RequestCache:
    """A sqlite key-value store: request hash -> JSON value, each row with a checksum."""

    def __init__(self, path: Path, *, timeout: float = BUSY_TIMEOUT_S) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.timeout = timeout
        #: rows read back without a checksum (written before the column existed), since this object was opened
        self.unverified = 0
        try:
            self.conn = self._open()
        except sqlite3.Error as err:
            if not _is_unreadable(err):
                raise self._error("cannot open the request cache", err) from err
            self._move_aside(err)
            try:
                self.conn = self._open()
            except sqlite3.Error as err2:
                raise self._error("cannot open the request cache", err2) from err2

    def _move_aside(self, err: sqlite3.Error) -> None:
        """The cache only saves time: an unreadable file is kept for inspection and the run starts afresh."""
        aside = self.path.with_name(self.path.name + ".corrupt")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                src.replace(Path(str(aside) + suffix))
        print(f"warning: the request cache {self.path} is unreadable ({err}); moved it to {aside.name} and starting "
              "with an empty cache (answers are recomputed)", file=sys.stderr)

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), timeout=self.timeout, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT NOT NULL, sum TEXT)")
            columns = {row[1] for row in conn.execute("PRAGMA table_info(answers)")}
            if "sum" not in columns:  # a cache from before checksums: its rows read back as unverified
                conn.execute("ALTER TABLE answers ADD COLUMN sum TEXT")
            check = conn.execute("PRAGMA quick_check").fetchone()
            if not check or check[0] != "ok":
                raise _Unreadable(f"quick_check: {check[0] if check else 'no answer'}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _error(self, what: str, err: sqlite3.Error) -> StoreError:
        text = str(err).lower()
        if _is_locked(err):
            return StoreError(f"{what}: the database is locked: another process holds it ({err}; waited "
                              f"{self.timeout:g} s)", where=str(self.path),
                              fix="another jbench run is probably using this run directory: wait for it to finish, "
                                  "or choose another --run-name")
        if "full" in text:
            fix = "free some disk space or choose another --output-dir, then rerun (answers already cached are kept)"
        else:
            fix = "check that the run directory is writable, or run with --no-cache"
        return StoreError(f"{what}: {err}", where=str(self.path), fix=fix)

    def count(self) -> int:
        """How many answers are stored."""
        try:
            return int(self.conn.execute("SELECT count(*) FROM answers").fetchone()[0])
        except sqlite3.Error as err:
            raise self._error("cannot read the request cache", err) from err

    def read(self, keys: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
        """(verified answers, keys of rows that are present but fail verification: checksum mismatch, invalid
        JSON, or no checksum at all -- the caller recomputes those)."""
        found: dict[str, Any] = {}
        bad: list[str] = []
        try:
            for start in range(0, len(keys), 500):
                part = list(keys[start: start + 500])
                marks = ",".join("?" * len(part))
                for k, v, s in self.conn.execute(f"SELECT key, value, sum FROM answers WHERE key IN ({marks})", part):
                    if s is None:
                        self.unverified += 1
                        bad.append(k)
                        continue
                    if not isinstance(v, str) or s != row_checksum(k, v):
                        bad.append(k)
                        continue
                    try:
                        found[k] = json.loads(v)
                    except ValueError:  # a matching checksum over invalid JSON: written wrong, never trusted
                        bad.append(k)
        except sqlite3.Error as err:
            raise self._error("cannot read the request cache", err) from err
        return found, bad

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        """The verified answers among ``keys`` (rows failing verification are left out, i.e. misses)."""
        return self.read(keys)[0]

    def put_many(self, items: dict[str, Any]) -> None:
        """All of a chunk's answers in one transaction: either all land or none do."""
        rows = []
        for k, v in items.items():
            text = json.dumps(v)
            rows.append((k, text, row_checksum(k, text)))
        try:
            with self.conn:
                self.conn.execute("BEGIN")
                self.conn.executemany("INSERT OR REPLACE INTO answers (key, value, sum) VALUES (?, ?, ?)", rows)
        except sqlite3.Error as err:
            raise self._error("cannot write the request cache", err) from err

    def close(self) -> None:
        self.conn.close()


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


#: what a stored answer of each request kind must look like; anything else is recomputed
_VALID: dict[str, Callable[[Any], bool]] = {"ll": _is_number, "gen": lambda v: isinstance(v, str)}


class CachingScorer:
    """Wraps any Scorer; answers cached requests from sqlite and scores only the rest.

    Counters (for results.json ``config.resources``): ``hits``, ``misses`` (every recomputed request, bad rows
    included), ``corrupt`` (rows present but failing verification: checksum mismatch, invalid JSON, wrong type) and
    ``unverified`` (rows from a cache written before checksums existed, recomputed rather than trusted)."""

    def __init__(self, inner: Scorer, cache: RequestCache, identity: str) -> None:
        self.inner, self.cache, self.identity = inner, cache, identity
        self.hits = 0
        self.misses = 0
        self.corrupt = 0
        self.unverified = 0
        self._warned = False
        self._noted_old = False

    @property
    def tokenizer(self) -> Tokenizer:
        return self.inner.tokenizer

    @property
    def max_length(self) -> int:
        return self.inner.max_length

    def stats(self) -> ScorerStats:
        """The wrapped scorer's stats (what it computed this time), plus the cache's counters."""
        inner = self.inner.stats()
        inner.extra = {**inner.extra, "cache_hits": self.hits, "cache_misses": self.misses,
                       "cache_corrupt": self.corrupt, "cache_unverified": self.unverified}
        return inner

    def _key(self, kind: str, payload: list[Any]) -> str:
        blob = json.dumps([self.identity, kind, payload], ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _run(self, kind: str, requests: Sequence[Any], payloads: list[list[Any]], compute: Any) -> list[Any]:
        keys = [self._key(kind, p) for p in payloads]
        before = self.cache.unverified
        found, bad = self.cache.read(keys)
        wrong_type = [k for k, v in found.items() if not _VALID[kind](v)]
        for k in wrong_type:
            del found[k]
        unverified = self.cache.unverified - before
        corrupt = len(bad) + len(wrong_type) - unverified
        self.unverified += unverified
        self.corrupt += corrupt
        if corrupt:
            self._warn()
        if unverified and not self._noted_old:
            self._noted_old = True
            print(f"note: the request cache {self.cache.path} was written before answers carried checksums; its "
                  "answers are recomputed once and stored with one", file=sys.stderr)
        if bad or wrong_type:
            # recompute the whole call, not just the bad rows: the runner calls once per fixed chunk, so this is
            # the batch composition of the uninterrupted run, and the answers come back bit-identical to it
            found = {}
        todo = [i for i, k in enumerate(keys) if k not in found]
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        if todo:
            fresh = compute([requests[i] for i in todo])
            new = {keys[i]: v for i, v in zip(todo, fresh)}
            self.cache.put_many(new)
            found.update(new)
        return [found[k] for k in keys]

    def _warn(self) -> None:
        if not self._warned:
            self._warned = True
            print(f"warning: the request cache {self.cache.path} holds answers that fail verification (edited or "
                  "damaged rows); they are recomputed and rewritten, and counted in results.json "
                  "config.resources", file=sys.stderr)

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[float]:
        return self._run("ll", requests, [[r.context, r.continuation] for r in requests], self.inner.loglikelihood)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        return self._run("gen", requests, [[r.context, r.until, r.max_gen_tokens] for r in requests],
                         self.inner.generate)
