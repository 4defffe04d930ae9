"""Greedy generation for :class:`jbench.models.hf.HFScorer`: batched, KV-cached, with shared header prefills.

Why a module of its own: generation shares the scorer's forward, header cache and memory budget but none of its
loglikelihood machinery (groups, packed rows, accumulation), so it reads best on its own. It is a mixin:
:class:`GreedyGeneration` holds the methods, and ``HFScorer`` (which sets every attribute declared below) inherits
them. Semantics follow the reference's ``greedy_until``: each row stops on the last token of ``encode(until)`` or
its own cap (the model's real EOS does not stop it); ``generation_config.repetition_penalty`` is applied as HF does.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from jbench.errors import ModelError
from jbench.models.base import GenerationRequest, Tokenizer
from jbench.models.kv_views import Header
from jbench.models.planning import generation_row, generation_text, header_families


class GreedyGeneration:
    """Generation methods of :class:`jbench.models.hf.HFScorer` (see the module docstring)."""

    tokenizer: Tokenizer
    max_length: int
    device: torch.device
    repetition_penalty: float
    generated_tokens_processed: int
    _pad_id: int
    _forward: Callable[..., tuple[torch.Tensor, Any]]
    _header_sharing: Callable[[], bool]
    _run_header: Callable[..., Header]
    _header_past: Callable[[Header, int], Callable[[], Any]]
    _rows_limit: Callable[..., int]
    _oom_retry: Callable[[Callable[[], Any]], Any]

    def _gen_prepare(self, req: GenerationRequest) -> tuple[list[int], int | None, int]:
        """(context ids, stop id, cap) per the reference's ``greedy_until`` (:func:`generation_row`)."""
        return generation_row(self.tokenizer, req, self.max_length)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """Greedy continuation of each context, cut at the first ``until``; in request order."""
        outputs = self._generate_rows([self._gen_prepare(r) for r in requests])
        return [generation_text(self.tokenizer, toks, req.until) for req, toks in zip(requests, outputs)]

    def _penalize(self, logits: torch.Tensor, seen: list[list[int]]) -> torch.Tensor:
        """HF ``RepetitionPenaltyLogitsProcessor`` over each row's context + generated tokens."""
        width = max(len(s) for s in seen)
        idx = torch.tensor([s + [s[0]] * (width - len(s)) for s in seen], dtype=torch.long, device=logits.device)
        score = torch.gather(logits, 1, idx)
        score = torch.where(score < 0, score * self.repetition_penalty, score / self.repetition_penalty)
        return logits.scatter(1, idx, score)

    def _generate_rows(self, rows: list[tuple[list[int], int | None, int]],
                       done: Callable[[int, list[int]], bool] | None = None) -> list[list[int]]:
        """Greedy new tokens for each ``(context ids, stop id, cap)`` row, in row order (cap 0: none).

        Contexts that start with the same header (:func:`header_families`; e.g. a task's description) share one run
        of it; within a family, rows run longest first in left-padded batches sized by :meth:`_rows_limit`.
        ``done(row index, its new tokens)`` may stop a row early."""
        order = [i for i in range(len(rows)) if rows[i][2] > 0]
        if self._header_sharing():  # the last context token stays in the row (its logits start the generation)
            families = [(h, [order[k] for k in idx]) for h, idx in
                        header_families([tuple(rows[i][0][:-1]) for i in order], [len(rows[i][0]) for i in order])]
        else:
            families = [(0, order)]

        def run() -> list[list[int]]:
            outputs: list[list[int]] = [[] for _ in rows]
            with torch.inference_mode():
                for h, idx in families:
                    idx = sorted(idx, key=lambda i: -len(rows[i][0]))
                    header = self._run_header(tuple(rows[idx[0]][0][:h]), generation=True) if h else None
                    start = 0
                    while start < len(idx):
                        first = rows[idx[start]]
                        n = min(self._rows_limit(len(first[0]) + first[2]), len(idx) - start)
                        chunk = idx[start : start + n]
                        start += n
                        row_done = None if done is None else (lambda a, toks, chunk=chunk: done(chunk[a], toks))
                        for i, toks in zip(chunk, self._greedy([rows[i] for i in chunk], row_done, header)):
                            outputs[i] = toks
            return outputs

        return self._oom_retry(run)

    def _greedy(self, rows: list[tuple[list[int], int | None, int]],
                done: Callable[[int, list[int]], bool] | None = None,
                header: Header | None = None) -> list[list[int]]:
        """Batched greedy decoding with left padding; each row stops on its stop id, its cap, or once
        ``done(row, its new tokens)`` is true. With a ``header`` (the first ``h`` tokens of every context, already
        run), only ``context[h:]`` is prefilled, left-padded after the header's cache."""
        h = len(header.tokens) if header else 0
        width = max(len(c) for c, _, _ in rows) - h
        ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (c, _, _) in enumerate(rows):
            ids[i, width - len(c) + h:] = torch.tensor(c[h:], dtype=torch.long)
            attn[i, width - len(c) + h:] = 1
        pos = h + (attn.cumsum(-1) - 1).clamp(min=0)
        self.generated_tokens_processed += int(attn.sum())
        if header:
            attn = torch.cat([torch.ones((len(rows), h), dtype=attn.dtype), attn], dim=1)
            logits, cache = self._forward(ids, attn, pos, 1, past=self._header_past(header, len(rows)), use_cache=True)
        else:
            logits, cache = self._forward(ids, attn, pos, 1, use_cache=True)
        out: list[list[int]] = [[] for _ in rows]
        seen = [list(c) for c, _, _ in rows] if self.repetition_penalty != 1.0 else []
        active = list(range(len(rows)))
        last_pos = pos[:, -1].clone()
        attn = attn.to(self.device)
        while True:
            step = logits[:, -1, :].float()
            if seen:
                step = self._penalize(step, [seen[i] for i in active])
            nxt = step.argmax(dim=-1).tolist()
            still: list[int] = []
            for a, tok in zip(active, nxt):
                out[a].append(int(tok))
                if seen:
                    seen[a].append(int(tok))
                _, stop, cap = rows[a]
                if not (tok == stop or len(out[a]) >= cap or (done is not None and done(a, out[a]))):
                    still.append(a)
            if not still:
                return out
            if len(still) != len(active):
                keep_idx = torch.tensor([active.index(a) for a in still], dtype=torch.long)
                cache.batch_select_indices(keep_idx.to(self.device))
                attn = attn[keep_idx.to(self.device)]
                last_pos = last_pos[keep_idx]
                nxt = [nxt[active.index(a)] for a in still]
                active = still
            step_ids = torch.tensor(nxt, dtype=torch.long)[:, None]
            attn = torch.cat([attn, torch.ones((len(active), 1), dtype=attn.dtype, device=attn.device)], dim=1)
            last_pos = last_pos + 1
            logits, cache = self._forward(step_ids, attn, last_pos[:, None], 1, past=lambda: cache, use_cache=True)
            self.generated_tokens_processed += len(active)

    def greedy_tokens(self, contexts: Sequence[Sequence[int]], caps: Sequence[int], *,
                      done: Callable[[int, list[int]], bool] | None = None) -> list[list[int]]:
        """Greedy new tokens for pre-tokenized, already truncated, non-empty contexts, in input order. Row ``i``
        stops after ``caps[i]`` tokens or once ``done(i, its new tokens)`` is true; the stopping token is kept.
        Finished rows leave the batch (no compute is spent on them)."""
        if any(len(c) == 0 for c in contexts):
            raise ModelError("greedy_tokens needs a non-empty context for every row")
        return self._generate_rows([(list(c), None, int(cap)) for c, cap in zip(contexts, caps)], done)
