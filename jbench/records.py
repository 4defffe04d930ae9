"""The per-example row: one definition that every writer (runner, lm-eval suite) and reader (metrics, baseline,
compare) of ``samples_<task>.jsonl`` goes through.

Why: the rows used to be dicts assembled in four places and read in three, and the JNLI 1.3 tasks crashed because
the runner wrote ``prediction`` while the mcc / macro-F1 aggregators read ``pred``. Field names now exist once, as
dataclass fields and the constants below, so a rename on one side is a type error or a failing import, not a
KeyError after an hour of scoring.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
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
