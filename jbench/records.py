"""The typed contract between modules: the per-example row (``samples_<task>.jsonl``) and the run record
(results.json), each written and read through one definition by every writer (runner, lm-eval suite) and reader
(metrics, baseline, compare).

Why: the rows used to be dicts assembled in four places and read in three, and the JNLI 1.3 tasks crashed because
the runner wrote ``prediction`` while the mcc / macro-F1 aggregators read ``pred``. Field names now exist once, as
dataclass fields and the constants below, so a rename on one side is a type error or a failing import, not a
KeyError after an hour of scoring.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

#: names of the fields that metrics and comparisons read from stored rows
PREDICTION = "prediction"
GOLD = "gold"
GOLDS = "golds"


@dataclass(kw_only=True)
class _Row:
    """What every stored row has: where the document sits, the prompt the model saw, and what it answered."""

    doc_index: int
    doc_id: Any
    prompt: str
    prediction: Any
    native_index: int | None = None
    shot_ids: list[Any] | None = None
    notes: list[str] | None = None
    #: backend-specific fields kept beside the standard ones (e.g. lm-eval's ``is_greedy``, ``filter``)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return _flatten(self)


@dataclass(kw_only=True)
class MCRow(_Row):
    """One multiple-choice (loglikelihood) document: the choices' summed log-likelihoods and what they decided
    (``prediction`` is the argmax choice index)."""

    prediction: int | None
    continuations: list[str]
    loglikelihoods: list[float]
    gold: int | None
    acc: float
    acc_norm: float | None = None


@dataclass(kw_only=True)
class GenRow(_Row):
    """One generation document: the greedy output (``prediction``, already cut at ``until``) and its scores against
    the golds."""

    prediction: str | None
    until: Any
    max_gen_tokens: int | None
    golds: list[str]
    exact_match: float
    f1: float | None = None


def _flatten(row: _Row) -> dict[str, Any]:
    """The JSON object stored per line: the standard fields, then the backend's extra fields (which may not shadow
    a standard field)."""
    out = asdict(row)
    extra = out.pop("extra")
    clash = set(extra) & set(out)
    if clash:
        raise ValueError(f"extra fields {sorted(clash)} would overwrite standard row fields")
    for optional in ("native_index", "shot_ids", "notes", "acc_norm", "f1"):  # jbench's rows have them; lm-eval's
        if out.get(optional) is None:                                          # do not
            out.pop(optional, None)
    return {**out, **extra}


# ----------------------------------------------------------------------------------------------------------------
# the run record (results.json)
# ----------------------------------------------------------------------------------------------------------------

#: the results.json format this jbench writes; readers accept it and the unversioned files of earlier releases
RUN_FORMAT = "jbench-run/1"
KNOWN_RUN_FORMATS = (RUN_FORMAT,)


@dataclass
class RunRecord:
    """One evaluated run: metrics per task, the config and provenance that produced them, and every example.

    ``to_json()`` is results.json (lm-eval-like top-level keys, plus ``format``); ``rows`` (task -> per-example rows,
    see :class:`MCRow` / :class:`GenRow`) are the ``samples_<task>.jsonl`` files, and ``path`` the run directory
    when the run was stored (None for an in-memory evaluation)."""

    results: dict[str, dict[str, Any]]
    versions: dict[str, Any]
    config: dict[str, Any]
    n_samples: dict[str, int] = field(default_factory=dict)
    truncated: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] | None = None
    format: str = RUN_FORMAT
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict, repr=False)
    path: Path | None = None
    #: task -> the source document of each row (aligned with ``rows``), for lm-eval's samples files (their ``doc``
    #: field); kept in memory only, never in results.json
    docs: dict[str, list[Any]] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"results": self.results, "versions": self.versions, "config": self.config,
                               "n_samples": self.n_samples, "truncated": self.truncated, "notes": self.notes,
                               "timings": self.timings}
        if self.plan is not None:
            out["plan"] = self.plan  # what was asked: `compare` reuses a stored run only if it asked the same
        out["format"] = self.format
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any], *, where: str = "results.json",
                  rows: dict[str, list[dict[str, Any]]] | None = None, path: Path | None = None) -> "RunRecord":
        """A stored results.json; a format newer than this jbench knows is refused (exit 2), and files from before
        the format key existed are read as they are."""
        check_run_format(data, where)
        known = {f.name for f in fields(cls)} - {"rows", "path", "docs"}
        return cls(**{k: v for k, v in data.items() if k in known}, rows=rows or {}, path=path)


def check_run_format(data: Any, where: str) -> None:
    """Raise a StoreError (exit 2) for a results.json this jbench cannot read: not an object, or a newer format."""
    from jbench.errors import StoreError

    if not isinstance(data, dict):
        raise StoreError(f"malformed results.json: field `(top level)` should be an object, got a "
                         f"{type(data).__name__}", where=where,
                         fix="point at a run directory written by jbench")
    fmt = data.get("format")
    if fmt is not None and fmt not in KNOWN_RUN_FORMATS:
        raise StoreError(f"results.json has format {fmt!r}, which this jbench does not know "
                         f"(it reads {', '.join(KNOWN_RUN_FORMATS)} and unversioned older files)", where=where,
                         fix="upgrade jbench to the version that wrote this run, or rerun it with this one")


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number" if isinstance(v, (int, float)) else type(v).__name__)


def check_run_shape(data: Any, where: str, *, error: type[Exception] | None = None,
                    fix: str = "rerun the run (`jbench eval --resume RUN` reuses its cached answers)") -> None:
    """Raise one ``error`` (default StoreError, exit 2) naming the field when results.json does not have the shape
    every reader relies on (``results`` an object of objects; ``versions``, ``config``, ``n_samples`` objects;
    the config's ``tasks``/``num_fewshot``/``data`` lists or objects). Why here: :func:`jbench.results.load_run`
    calls it, so ``table``, ``check``, ``published`` and the API never index into a hand-edited file's wrong
    types (a TypeError traceback); ``check`` adds its own number checks on top."""
    from jbench.errors import StoreError

    err_cls = error or StoreError

    def bad(field: str, want: str, got: Any) -> Exception:
        shown = "" if isinstance(got, (dict, list, type(None))) else f" ({got!r})"
        return err_cls(f"malformed results.json: field `{field}` should be {want}, got {_kind(got)}{shown}",
                       where=where, fix=fix)

    if not isinstance(data, dict):
        raise bad("(top level)", "an object", data)
    if not isinstance(data.get("results"), dict):
        raise bad("results", "an object mapping task name -> metrics", data.get("results"))
    for task, res in data["results"].items():
        if not isinstance(res, dict):
            raise bad(f"results.{task}", "an object mapping metric -> value", res)
    for key in ("versions", "config", "n_samples"):
        if key in data and not isinstance(data[key], dict):
            raise bad(key, "an object", data[key])
    cfg = data.get("config") or {}
    for key, types, want in (("tasks", (list,), "a list"), ("num_fewshot", (list, dict), "a list or an object"),
                             ("prompt_versions", (dict,), "an object"), ("data", (dict,), "an object"),
                             ("metric_scale", (dict,), "an object"), ("environment", (dict,), "an object")):
        if cfg.get(key) is not None and not isinstance(cfg[key], types):
            raise bad(f"config.{key}", want, cfg[key])
    for task, files in (cfg.get("data") or {}).items():
        if files is not None and not isinstance(files, list):
            raise bad(f"config.data.{task}", "a list of files", files)
