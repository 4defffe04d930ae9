"""The one protocol every backend implements, plus the tokenization rules they all share.

The reference harness (JP-stable ``hf-causal``) encodes context and continuation *separately* without special
tokens, uses ``[eos]`` for an empty context, and left-truncates ``(ctx + cont)[-(max_length + 1):][:-1]``.
Every backend must use exactly these rules, or cross-backend deltas become tokenization artefacts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """Score ``continuation`` given ``context`` (strings; the scorer tokenizes)."""

    context: str
    continuation: str


@dataclass(frozen=True)
class GenerationRequest:
    """Greedy generation from ``context``, stopped at the last token of ``encode(until)`` or after
    ``max_gen_tokens`` new tokens; the decoded text is cut at the first ``until``."""

    context: str
    until: str
    max_gen_tokens: int


@runtime_checkable
class Tokenizer(Protocol):
    """What the harness needs from a tokenizer: no special tokens are ever added by ``encode``."""

    eos_token_id: int | None

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


@dataclass
class ScorerStats:
    """What a scorer reports about how it ran, for results.json ``config.resources`` / ``config.scoring``.

    Why declared: the runner used to read these with ``getattr`` outside the protocol, so a backend could not
    know what it was expected to report."""

    tokens_processed: int = 0             # prompt / continuation tokens through the model
    generated_tokens_processed: int = 0   # decode steps of generation
    oom_retries: int = 0                  # batches halved after out-of-memory (changes batch composition)
    oom_batch_cap: int | None = None      # the rows-per-forward cap those retries left
    batch_sizing: dict[str, Any] | None = None  # how the automatic batch size was chosen
    sharing: str | None = None            # prefix sharing path that ran: "packed", "kv" or None (none)
    header_sharing: bool | None = None    # whether task headers shared across documents ran once
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Scorer(Protocol):
    """A loaded model variant that can score and generate, and say how it did."""

    tokenizer: Tokenizer
    max_length: int

    def stats(self) -> ScorerStats:
        """Counters and the scoring path taken so far (see :class:`ScorerStats`)."""
        ...

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[float]:
        """Sum of log-probabilities of each continuation, in request order."""
        ...

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """Greedy continuation of each context, in request order, already cut at ``until``."""
        ...


def encode_context(tokenizer: Tokenizer, context: str) -> list[int]:
    """Context tokens; an empty context becomes ``[eos]`` (XWinograd), as in the reference."""
    if context == "":
        if tokenizer.eos_token_id is None:
            from jbench.errors import ModelError

            raise ModelError(
                "the tokenizer has no EOS token, but an empty-context request (XWinograd) needs one",
                fix="use a tokenizer with eos_token set, or leave xwinograd_ja out of the task list",
            )
        return [int(tokenizer.eos_token_id)]
    return list(tokenizer.encode(context))


def model_input(context_ids: Sequence[int], continuation_ids: Sequence[int], max_length: int) -> tuple[list[int], int]:
    """Return ``(input_ids, n_cont)``: the left-truncated model input and how many of the last logits positions
    score the continuation (``len(continuation_ids)``, capped by truncation)."""
    whole = list(context_ids) + list(continuation_ids)
    inp = whole[-(max_length + 1):][:-1]
    return inp, min(len(continuation_ids), len(inp))
