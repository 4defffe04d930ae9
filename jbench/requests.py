"""Turning a task's data into the exact requests the reference harness builds (spec §1.2, §1.3, §1.5, §2.6).

Per task: ``rnd = random.Random(42)``; ``rnd.shuffle(validation_docs)``; then, doc by doc in shuffled order, the
*same* ``rnd`` draws that doc's shots (``rnd.sample(train, k)``, or the stratified sampler), so every draw
depends on the shuffle and on all earlier draws. ``--limit`` keeps the first N docs after the shuffle. Only
CPython's ``random`` reproduces this; ``rnd.sample``/``shuffle`` depend on the population size alone, so we
sample indices and render lazily.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from jbench.errors import TaskError
from jbench.prompts import RenderedDoc, fewshot_context, render_doc
from jbench.tasks import TaskSpec

if TYPE_CHECKING:
    from jbench.chat import ChatPrompt

SHUFFLE_SEED = 42
# DYNAMIC_MAX_LENGTH="false" makes the reference use a fixed cap instead of the longest gold answer.
FIXED_MAX_GEN_TOKENS = 256

Encode = Callable[[str], list[int]]


@dataclass
class Instance:
    """One evaluated document: its prompt and what is scored (one row of ``samples_<task>.jsonl``)."""

    task: str
    doc_index: int                 # position after the shuffle
    native_index: int              # position in the data file
    doc_id: str
    context: str
    shot_ids: list[str]
    continuations: list[str] | None = None    # multiple_choice
    gold: int | None = None
    golds: list[str] | None = None            # generate_until
    until: str | None = None
    max_gen_tokens: int | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task": self.task, "doc_index": self.doc_index, "doc_id": self.doc_id,
                               "context": self.context}
        if self.continuations is not None:
            out["continuations"] = self.continuations
        else:
            out["until"] = self.until
            out["max_gen_tokens"] = self.max_gen_tokens
        return out


def dynamic_max_length() -> bool:
    return os.environ.get("DYNAMIC_MAX_LENGTH", "true").lower() != "false"


def apply_limit(n_docs: int, limit: int | float | None) -> int:
    """The reference's limit: a float below 1 is a fraction of the docs, otherwise a count."""
    if limit is None:
        return n_docs
    if isinstance(limit, float) and limit < 1.0:
        return int(n_docs * limit)
    return min(int(limit), n_docs)


def stratified_indices(rnd: random.Random, targets: Sequence[str], k: int) -> list[int]:
    """JP-stable ``_stratified_fewshot_examples`` over train indices grouped by rendered target.

    Strata in first-appearance order; ``n_t = int(count/len * k)``; while the sum is short of k, the first
    stratum with the smallest ``n_t`` gets one more; then ``rnd.sample`` per stratum in order; then shuffle.
    """
    strata: dict[str, list[int]] = {}
    for i, t in enumerate(targets):
        strata.setdefault(t, []).append(i)
    total = len(targets)
    counts = {t: int(len(idx) / total * k) for t, idx in strata.items()}
    while sum(counts.values()) < k:
        smallest = min(counts, key=counts.__getitem__)
        counts[smallest] += 1
    picked: list[int] = []
    for t, idx in strata.items():
        picked += rnd.sample(idx, counts[t])
    rnd.shuffle(picked)
    return picked


class _Train:
    """Train docs rendered on demand (only drawn shots are rendered, except for stratification)."""

    def __init__(self, task: TaskSpec, docs: Sequence[dict[str, Any]]) -> None:
        self.task, self.docs = task, docs
        self._cache: dict[int, RenderedDoc] = {}
        self._targets: list[str] | None = None

    def __len__(self) -> int:
        return len(self.docs)

    def rendered(self, i: int) -> RenderedDoc:
        if i not in self._cache:
            self._cache[i] = render_doc(self.task, self.docs[i], i)
        return self._cache[i]

    def targets(self) -> list[str]:
        if self._targets is None:
            self._targets = [self.rendered(i).target for i in range(len(self.docs))]
        return self._targets

    def draw(self, rnd: random.Random, k: int) -> list[RenderedDoc]:
        if k == 0:
            return []
        if self.task.sampler == "stratified":
            idx = stratified_indices(rnd, self.targets(), k)
        else:
            idx = rnd.sample(range(len(self.docs)), k)
        return [self.rendered(i) for i in idx]


def build_instances(
    task: TaskSpec,
    validation: Sequence[dict[str, Any]],
    train: Sequence[dict[str, Any]] | None,
    num_fewshot: int,
    *,
    limit: int | float | None = None,
    encode: Encode | None = None,
    max_length: int | None = None,
    chat: "ChatPrompt | None" = None,
) -> list[Instance]:
    """All requests of one task, in shuffled order, exactly as the reference builds them.

    ``encode`` (the model tokenizer, no special tokens) is needed for generation caps and for the
    shrink-until-it-fits loop of ``fewshot_fit`` tasks (JAQKET v2 0.2, which also needs ``max_length``).
    ``chat`` renders each context through the model's chat template (:mod:`jbench.chat`); the documents and shots
    drawn are the same as without it.
    """
    if num_fewshot < 0:
        raise TaskError(f"num_fewshot must be >= 0 for {task.name}, got {num_fewshot}")
    if num_fewshot > 0 and (task.sampler == "none" or not train):
        raise TaskError(f"{task.name} is always 0-shot (it has no train split), but {num_fewshot} shots were asked",
                        fix=f"use num_fewshot 0 for {task.name}")
    if task.fewshot_fit and (encode is None or max_length is None):
        raise TaskError(f"{task.name} shrinks its few-shot prompt to the model's context, so it needs a tokenizer",
                        fix="pass --model (a tokenizer path or hub id) so prompts can be measured")
    order = list(range(len(validation)))
    rnd = random.Random()
    rnd.seed(SHUFFLE_SEED)
    rnd.shuffle(order)
    shots_src = _Train(task, train or [])
    out: list[Instance] = []
    for pos, native in enumerate(order[: apply_limit(len(order), limit)]):
        doc = render_doc(task, validation[native], native)
        inst = _instance(task, pos, native, doc, rnd, shots_src, num_fewshot, encode, max_length, chat)
        out.append(inst)
    return out


def _instance(task: TaskSpec, pos: int, native: int, doc: RenderedDoc, rnd: random.Random, train: _Train,
              k: int, encode: Encode | None, max_length: int | None, chat: "ChatPrompt | None") -> Instance:
    inst = Instance(task=task.name, doc_index=pos, native_index=native, doc_id=doc.doc_id, context="", shot_ids=[])
    if task.is_generation:
        inst.golds, inst.until = doc.golds, task.until
        if not dynamic_max_length():
            inst.max_gen_tokens = FIXED_MAX_GEN_TOKENS
        elif encode is not None:
            inst.max_gen_tokens = max(len(encode(a)) for a in doc.golds or [""])
    else:
        inst.continuations, inst.gold = doc.choices, doc.gold
    n = k
    while True:
        shots = train.draw(rnd, n)
        if chat is None:
            inst.context = fewshot_context(task, doc.text, shots)
        else:
            inst.context, chat_notes = chat.context(task, doc.text, shots)
            inst.notes = [n for n in inst.notes if n not in chat_notes] + chat_notes
        inst.shot_ids = [s.doc_id for s in shots]
        if not task.fewshot_fit:
            break
        assert encode is not None and max_length is not None
        budget = max_length - (inst.max_gen_tokens or 0)
        if len(encode(inst.context)) <= budget:
            break
        if n == 0:
            inst.notes.append(f"0-shot prompt is longer than max_length - answer tokens ({budget}); left-truncated")
            break
        n -= 1
    if n != k:
        inst.notes.append(f"few-shot shrunk from {k} to {n} to fit the context")
    return inst
