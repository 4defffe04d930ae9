"""The per-example row: one definition that every writer (runner, lm-eval suite) and reader (metrics, baseline,
compare) of ``samples_<task>.jsonl`` goes through.

Why: the rows used to be dicts assembled in four places and read in three, and the JNLI 1.3 tasks crashed because
the runner wrote ``prediction`` while the mcc / macro-F1 aggregators read ``pred``. Field names now exist once, as
dataclass fields and the constants below, so a rename on one side is a type error or a failing import, not a
KeyError after an hour of scoring.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

#: names of the fields that metrics and comparisons read from stored rows
PREDICTION = "prediction"
GOLD = "gold"
GOLDS = "golds"
LOGLIKELIHOODS = "loglikelihoods"


@dataclass
class MCRow:
    """One multiple-choice (loglikelihood) document: the choices' summed log-likelihoods and what they decided."""

    doc_index: int
    doc_id: Any
    prompt: str
    continuations: list[str]
    loglikelihoods: list[float]
    prediction: int | None
    gold: int | None
    acc: float
    acc_norm: float | None = None
    native_index: int | None = None
    shot_ids: list[Any] | None = None
    notes: list[str] | None = None
    #: backend-specific fields kept beside the standard ones (e.g. lm-eval's ``is_greedy``, ``filter``)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return _flatten(self)


@dataclass
class GenRow:
    """One generation document: the greedy output (already cut at ``until``) and its scores against the golds."""

    doc_index: int
    doc_id: Any
    prompt: str
    until: Any
    max_gen_tokens: int | None
    prediction: str | None
    golds: list[str]
    exact_match: float
    f1: float | None = None
    native_index: int | None = None
    shot_ids: list[Any] | None = None
    notes: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return _flatten(self)


def _flatten(row: MCRow | GenRow) -> dict[str, Any]:
    """The JSON object stored per line: the standard fields, then the backend's extra fields (which may not shadow
    a standard field)."""
    out = asdict(row)
    extra = out.pop("extra")
    clash = set(extra) & set(out)
    if clash:
        raise ValueError(f"extra fields {sorted(clash)} would overwrite standard row fields")
    if out.get("acc_norm") is None and isinstance(row, MCRow):
        out.pop("acc_norm")
    if out.get("f1") is None and isinstance(row, GenRow):
        out.pop("f1")
    for optional in ("native_index", "shot_ids", "notes"):  # jbench's own rows have them; lm-eval's do not
        if out.get(optional) is None:
            out.pop(optional)
    return {**out, **extra}


#: every standard field name of either row kind (readers use it to tell standard fields from extras)
STANDARD_FIELDS = frozenset(f.name for cls in (MCRow, GenRow) for f in fields(cls) if f.name != "extra")
