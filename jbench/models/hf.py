"""Hugging Face ``transformers`` scoring backend with reference (JP-stable ``hf-causal``) semantics.

Loglikelihood: context and continuation are encoded separately (``encode_context`` / ``model_input`` in base.py);
score = sum of log-softmax log-probabilities at the continuation positions of the left-truncated input.

Why two paths:

* the **naive** path (``prefix_sharing=False``) runs one full sequence per request in right-padded batches, exactly as
  the reference does. It is the correctness oracle.
* the **fast** path (default) exploits that multiple-choice requests share their (long, few-shot) context: requests
  are sorted by their model input and neighbours that share a long common prefix form a group
  (:func:`group_by_prefix`), whose prefix runs once. Two ways to do that:

  - ``packed`` (default for HF models with sdpa / eager attention): one row per group = prefix + every member's
    suffix, with a 4-D block mask (a suffix token sees the prefix and its own earlier tokens) and position ids that
    continue the prefix for each suffix. One forward, no cache copies.
  - ``kv`` (fallback, e.g. remote-code models that may ignore a 4-D mask): the prefixes run with a KV cache, the
    cache rows are expanded (index_select) to the members, whose suffixes then run in one batched forward.

  In packed mode there is a second level: groups of *different* documents that start with the same header (the
  task description / instruction, ~80 tokens for JCQA 0.3) form a family (:func:`header_families`); the header
  runs once with a KV cache and the family's packed rows continue it. Generation prefills share headers the same
  way. (``kv`` mode shares within a document only.)

  Logits are projected only at the positions that are scored (``logits_to_keep`` boolean mask, or 1-D positions on
  older transformers), and log-softmax is taken only there. Position ids are always explicit, so padding, packing
  and cache reuse cannot shift rotary positions.

Generation: greedy with a KV cache in left-padded batches with explicit position ids; each row stops on the last
token of ``encode(until)`` or its own token cap (the model's real EOS does not stop it), as the reference's
``model.generate(..., eos_token_id=primary_until)`` did.

This module is the scorer itself; its parts live next to it: :mod:`~jbench.models.hf_loading` (loading the model),
:mod:`~jbench.models.planning` (torch-free: tokenized requests, prefix groups, header families, packed rows),
:mod:`~jbench.models.memory` (batch budget, out-of-memory retry) and :mod:`~jbench.models.kv_views` (KV caches).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Iterator, Sequence

import torch

from jbench.errors import ModelError
from jbench.models.base import LoglikelihoodRequest, ScorerStats
from jbench.models.hf_generation import GreedyGeneration
from jbench.models.hf_loading import (_UNSUPPORTED_GEN_FIELDS, _accepts_kwarg, _is_hf_tokenizer,
                                      _warn_generation_config, config_max_length, load_causal_lm, parse_dtype)
from jbench.models.kv_views import (Header, _cache_is_plain, _cache_kwarg, _output_cache, _read_only_view,
                                    _select_cache)
from jbench.models.memory import MemoryBudget, _is_oom
from jbench.models.planning import (PACKED_ROW_CAP, PACKED_ROW_MIN, Group, Item, group_by_prefix, header_families,
                                    loglikelihood_item, pack_rows, packed_layout, packed_len, split_packed,
                                    tokenize_requests)
from jbench.models.registry import DTYPE_OF_VARIANT
from jbench.models.tokenizer import HarnessTokenizer, load_tokenizer, wrap_hf_tokenizer

# Names other modules import from here (the loader and the planning helpers live in their own modules now).
# ``load_causal_lm``, ``PACKED_ROW_CAP`` and ``PACKED_ROW_MIN`` are looked up in this module's namespace at call
# time, so tests can monkeypatch them here.
__all__ = ["HFScorer", "load_variant", "load_causal_lm", "parse_dtype", "config_max_length", "group_by_prefix",
           "header_families", "PACKED_ROW_CAP", "PACKED_ROW_MIN", "_UNSUPPORTED_GEN_FIELDS", "_cache_kwarg"]

log = logging.getLogger(__name__)


class HFScorer(MemoryBudget, GreedyGeneration):
    """A loaded HF causal LM + harness tokenizer implementing :class:`jbench.models.base.Scorer`."""

    tokenizer: HarnessTokenizer
    max_length: int

    def __init__(self, model: str | os.PathLike[str], *, dtype: str = "float32", device: str = "cpu",
                 batch_size: int | None = None, use_fast: bool | None = None, trust_remote_code: bool = False,
                 revision: str | None = None, max_length: int | None = None, prefix_sharing: bool = True,
                 model_kwargs: dict[str, Any] | None = None) -> None:
        m = load_causal_lm(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code, revision=revision,
                           model_kwargs=model_kwargs)
        tok = load_tokenizer(model, use_fast=use_fast, trust_remote_code=trust_remote_code, revision=revision)
        self._setup(m, tok, batch_size=batch_size, max_length=max_length, prefix_sharing=prefix_sharing,
                    name=str(model))

    @classmethod
    def from_loaded(cls, model: Any, tokenizer: Any, *, batch_size: int | None = None, max_length: int | None = None,
                    prefix_sharing: bool = True, name: str | None = None) -> "HFScorer":
        """Score with an already-loaded model (e.g. a quantized one) and tokenizer (harness or HF tokenizer)."""
        self = cls.__new__(cls)
        tok = wrap_hf_tokenizer(tokenizer) if _is_hf_tokenizer(tokenizer) else tokenizer
        model.eval()
        self._setup(model, tok, batch_size=batch_size, max_length=max_length, prefix_sharing=prefix_sharing,
                    name=name or str(getattr(model, "name_or_path", "")))
        return self

    def _setup(self, model: Any, tokenizer: HarnessTokenizer, *, batch_size: int | None, max_length: int | None,
               prefix_sharing: bool, name: str) -> None:
        if batch_size is not None and batch_size < 1:
            raise ModelError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.config = model.config
        self.max_length = int(max_length) if max_length else config_max_length(self.config)
        self.batch_size = batch_size
        self.prefix_sharing = prefix_sharing
        self.device = next(model.parameters()).device
        self._pad_id = int(tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0)
        self._keep_mode = "mask"  # boolean logits_to_keep; degrades to "index" (1-D positions) or "none"
        self._accepts_logits_to_keep = _accepts_kwarg(model, "logits_to_keep")
        self._cache_kwarg = _cache_kwarg(model)
        self._shareable = _cache_is_plain(self.config)
        self._shared_mode: str | None = None  # "packed" or "kv", decided on first use
        self._header_ok: bool | None = None  # rows may continue a shared header's KV cache (the packed probe says)
        gen_cfg = getattr(model, "generation_config", None)
        self.repetition_penalty = float(getattr(gen_cfg, "repetition_penalty", None) or 1.0)
        _warn_generation_config(gen_cfg)
        self._token_budget, self._mem_budget = self._auto_budgets()
        self._oom_cap: int | None = None  # rows per forward after an out-of-memory retry (see _oom_retry)
        self._last_rows = 0
        self.oom_retries = 0
        self.reset_counters()

    # -- counters ----------------------------------------------------------------------------------------------

    def reset_counters(self) -> None:
        """``tokens_processed``: real (non-pad) tokens run for loglikelihood; ``padded_tokens_processed`` includes
        padding; ``generated_tokens_processed``: tokens run by ``generate``; ``forward_calls``: model calls."""
        self.tokens_processed = 0
        self.padded_tokens_processed = 0
        self.generated_tokens_processed = 0
        self.forward_calls = 0

    def stats(self) -> ScorerStats:
        """Counters and the path taken: the prefix-sharing mode actually used (None until a shared prefix ran, or
        when sharing is off) and whether task headers were shared across documents."""
        sharing = self._shared_mode if self.prefix_sharing and self._shareable else None
        return ScorerStats(tokens_processed=self.tokens_processed,
                           generated_tokens_processed=self.generated_tokens_processed,
                           oom_retries=self.oom_retries, oom_batch_cap=self.oom_batch_cap,
                           batch_sizing=getattr(self, "batch_sizing", None), sharing=sharing,
                           header_sharing=self._header_ok if sharing == "packed" else None,
                           extra={"padded_tokens_processed": self.padded_tokens_processed,
                                  "forward_calls": self.forward_calls})

    # -- forward helpers ---------------------------------------------------------------------------------------------

    def _forward(self, ids: torch.Tensor, attn: torch.Tensor, pos: torch.Tensor, keep: torch.Tensor | int,
                 past: Callable[[], Any] | None = None, use_cache: bool = False) -> tuple[torch.Tensor, Any]:
        """One model call. ``keep`` is either an int (last positions, as in ``generate``; logits ``(B, keep, V)``)
        or a boolean ``(B, T)`` mask (logits ``(K, V)`` at its True positions, row-major). ``past`` builds the
        cache to continue from (a callable, so a retry gets a fresh, unmutated one)."""
        self._last_rows = int(ids.shape[0])
        self.largest_batch = max(self.largest_batch, self._last_rows)
        base: dict[str, Any] = dict(input_ids=ids.to(self.device), attention_mask=attn.to(self.device),
                                    position_ids=pos.to(self.device), use_cache=use_cache)
        if isinstance(keep, int):
            kwargs = dict(base, **{self._cache_kwarg: past() if past else None})
            if self._accepts_logits_to_keep:
                kwargs["logits_to_keep"] = keep
            out = self.model(**kwargs)
            self.forward_calls += 1
            logits = out.logits
            if keep > 0 and logits.shape[1] != keep:
                logits = logits[:, -keep:]
            return logits, _output_cache(out)
        mask = keep.to(self.device)
        while True:
            kwargs = dict(base, **{self._cache_kwarg: past() if past else None})
            cols = mask.any(0).nonzero().squeeze(1)
            if self._keep_mode == "mask":
                kwargs["logits_to_keep"] = mask
            elif self._keep_mode == "index":
                kwargs["logits_to_keep"] = cols
            try:
                out = self.model(**kwargs)
            except (TypeError, IndexError, ValueError, RuntimeError) as err:
                if _is_oom(err) or self._keep_mode == "none":
                    raise
                log.info("logits_to_keep=%s not supported by this model (%s); falling back", self._keep_mode, err)
                self._keep_mode = "index" if self._keep_mode == "mask" else "none"
                continue
            self.forward_calls += 1
            logits = out.logits
            if logits.dim() == 2 and logits.shape[0] == int(mask.sum()):
                pass  # boolean mask honoured
            elif logits.dim() == 3 and logits.shape[:2] == mask.shape:
                logits = logits[mask]  # the model computed every position
            elif logits.dim() == 3 and logits.shape[0] == mask.shape[0] and logits.shape[1] == cols.numel():
                logits = logits[mask[:, cols]]  # 1-D positions honoured
            else:
                raise ModelError(f"unexpected logits shape {tuple(logits.shape)} for input {tuple(mask.shape)}")
            return logits, _output_cache(out)

    @staticmethod
    def _pad_right(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            attn[i, : len(r)] = 1
        return ids, attn

    @staticmethod
    def _accumulate(sums: torch.Tensor, logits: torch.Tensor, keep: torch.Tensor, r_idx: list[int], c_idx: list[int],
                    targets: list[int], owners: list[int]) -> None:
        """Add ``log_softmax(logits)[target]`` at each scored ``(row, col)`` to ``sums[owner]``.

        ``logits`` holds the kept positions of ``keep`` in row-major order; one kept position may score several
        owners (e.g. the shared last context token of a multiple-choice group). log_softmax runs in float32, only at
        kept positions; the sums are float64. A 2-column ``sums`` also counts, in column 1, the scored positions whose
        argmax is not the target (lm-eval's ``is_greedy``; see :meth:`loglikelihood_tokens`)."""
        if not r_idx:
            return
        flat = torch.full(keep.shape, -1, dtype=torch.long)
        flat[keep.cpu()] = torch.arange(int(keep.sum()))
        rows = flat[torch.tensor(r_idx), torch.tensor(c_idx)].to(logits.device)
        lsm = torch.log_softmax(logits.float(), dim=-1)
        tgt = torch.tensor(targets, dtype=torch.long, device=lsm.device)
        vals = lsm[rows, tgt].double().cpu()
        if sums.dim() == 2:
            vals = torch.stack([vals, (lsm[rows].argmax(dim=-1) != tgt).double().cpu()], dim=1)
        sums.index_add_(0, torch.tensor(owners, dtype=torch.long), vals)

    # -- loglikelihood -----------------------------------------------------------------------------------------------

    def _prepare(self, requests: Sequence[LoglikelihoodRequest]) -> list[Item]:
        return tokenize_requests(self.tokenizer, requests, self.max_length)

    def _score_items(self, todo: list[Item], shape: tuple[int, ...]) -> torch.Tensor:
        """Score ``todo`` into a float64 accumulator of ``shape`` (one row per item), shared-prefix or naive, with
        the out-of-memory retry around the whole call."""

        def run() -> torch.Tensor:
            sums = torch.zeros(shape, dtype=torch.float64)
            with torch.inference_mode():
                if self.prefix_sharing and self._shareable:
                    self._score_shared(todo, sums)
                else:
                    self._score_naive(todo, sums)
            return sums

        return self._oom_retry(run)

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[float]:
        """Sum of continuation log-probabilities per request, in request order."""
        items = self._prepare(requests)
        todo = [it for it in items if it.n_cont > 0]  # an empty continuation scores 0, as in the reference

        return [float(x) for x in self._score_items(todo, (len(items),))]

    def _score_naive(self, items: Sequence[Item], sums: torch.Tensor) -> None:
        """Reference path: one full right-padded sequence per request, longest first."""
        order = sorted(items, key=lambda it: -len(it.inp))
        start = 0
        while start < len(order):
            n = min(self._rows_limit(len(order[start].inp)), len(order) - start)
            chunk = order[start : start + n]
            start += n
            ids, attn = self._pad_right([it.inp for it in chunk], self._pad_id)
            pos = torch.arange(ids.shape[1]).expand_as(ids)
            keep = torch.zeros_like(ids, dtype=torch.bool)
            for r, it in enumerate(chunk):
                keep[r, it.first_scored : len(it.inp)] = True
            logits, _ = self._forward(ids, attn, pos, keep)
            r_idx, c_idx, targets, owners = [], [], [], []
            for r, it in enumerate(chunk):
                for k, j in enumerate(range(it.first_scored, len(it.inp))):
                    r_idx.append(r)
                    c_idx.append(j)
                    targets.append(it.targets[k])
                    owners.append(it.index)
            self._accumulate(sums, logits, keep, r_idx, c_idx, targets, owners)
            self.tokens_processed += int(attn.sum())
            self.padded_tokens_processed += ids.numel()

    def _group_batches(self, groups: list[Group]) -> Iterator[list[Group]]:
        """Consecutive groups (longest prefix first) whose prefixes fit one forward; suffixes are chunked later."""
        start = 0
        while start < len(groups):
            p_max = len(groups[start].prefix)
            n = min(self._rows_limit(p_max), len(groups) - start)
            yield groups[start : start + n]
            start += n

    def _score_shared(self, items: Sequence[Item], sums: torch.Tensor) -> None:
        """Fast path: each group's prefix runs once (see the module docstring); in packed mode, the header that
        groups of different documents share (:func:`header_families`) runs once per family too."""
        groups = group_by_prefix(items)
        if self._share_mode() == "packed":
            groups = [part for g in groups for part in split_packed(g, PACKED_ROW_CAP)]
            if self._header_sharing():  # a header never reaches a scored position
                cut = [g.prefix[: min(m.first_scored for m in g.members)] for g in groups]
                families = header_families(cut, [packed_len(g) for g in groups])
            else:
                families = [(0, list(range(len(groups))))]
            for h, idx in families:
                family = sorted((groups[i] for i in idx), key=lambda g: -packed_len(g))
                header = self._run_header(family[0].prefix[:h]) if h else None
                for batch in pack_rows(family, h, self._rows_limit, min(PACKED_ROW_MIN, PACKED_ROW_CAP)):
                    self._run_packed(batch, sums, header)
        else:
            groups.sort(key=lambda g: -len(g.prefix))
            for batch in self._group_batches(groups):
                self._run_group_batch(batch, sums)

    # packed: one row per group = prefix + every member suffix, with a block attention mask -------------------------

    def _share_mode(self) -> str:
        """``"packed"`` (block mask, no cache copies) where the model takes custom 4-D masks (HF sdpa / eager
        attention, checked once on a probe), else ``"kv"`` (prefix KV cache expanded to the members)."""
        if self._shared_mode is None:
            impl = getattr(self.config, "_attn_implementation", None)
            native = type(self.model).__module__.startswith("transformers.")
            self._shared_mode = "packed" if impl in ("sdpa", "eager") and native and self._probe_packed() else "kv"
            log.debug("prefix sharing mode: %s", self._shared_mode)
        return self._shared_mode

    def _probe_packed(self) -> bool:
        """Score a small two-member group packed (without and with a cached header) and naively; a model that
        ignores the 4-D mask differs a lot. Sets ``_header_ok``; returns whether packed rows work at all."""
        vocab = int(getattr(self.config.get_text_config(decoder=True), "vocab_size", 8) or 8)
        pre = [(7 * i + 3) % vocab for i in range(6)]
        items = [Item(0, tuple(pre + [5 % vocab, 9 % vocab, 11 % vocab]), 3, (9 % vocab, 11 % vocab, 13 % vocab)),
                 Item(1, tuple(pre + [6 % vocab, 8 % vocab]), 2, (8 % vocab, 10 % vocab))]
        counters = (self.tokens_processed, self.padded_tokens_processed, self.generated_tokens_processed,
                    self.forward_calls)
        tol = 1e-3 if next(self.model.parameters()).dtype == torch.float32 else 5e-2
        runs = {name: torch.zeros(2, dtype=torch.float64) for name in ("packed", "header", "naive")}
        try:
            with torch.inference_mode():
                self._score_naive(items, runs["naive"])
                self._run_packed([[Group(tuple(pre), items)]], runs["packed"])
                try:
                    self._run_packed([[Group(tuple(pre), items)]], runs["header"],
                                     self._run_header(tuple(pre[:3])))
                    self._header_ok = bool((runs["header"] - runs["naive"]).abs().max() <= tol)
                except Exception as err:  # noqa: BLE001 - any failure means: no shared header
                    log.info("packed rows cannot continue a cached header (%s)", err)
                    self._header_ok = False
        except Exception as err:  # noqa: BLE001 - any failure means: do not use packed rows
            log.info("packed prefix sharing unavailable (%s); using KV-cache expansion", err)
            self._header_ok = False
            return False
        finally:
            (self.tokens_processed, self.padded_tokens_processed, self.generated_tokens_processed,
             self.forward_calls) = counters
        ok = bool((runs["packed"] - runs["naive"]).abs().max() <= tol)
        self._header_ok = bool(self._header_ok) and ok
        if not ok:
            log.info("packed prefix sharing disagrees with the naive path on a probe; using KV-cache expansion")
        return ok

    def _header_sharing(self) -> bool:
        """Whether rows may continue a shared header's cache: prefix sharing is on, rows are packed, and the probe
        showed that a row continuing a cached header scores as the naive path does."""
        if not (self.prefix_sharing and self._shareable) or self._share_mode() != "packed":
            return False
        if self._header_ok is None:
            self._probe_packed()
        return bool(self._header_ok)

    def _run_header(self, tokens: tuple[int, ...], generation: bool = False) -> Header:
        """Run a shared header once (positions ``0 .. h-1``) and keep its KV cache for the rows that continue it."""
        h = len(tokens)
        _, cache = self._forward(torch.tensor([tokens], dtype=torch.long), torch.ones(1, h, dtype=torch.long),
                                 torch.arange(h)[None], 1, use_cache=True)
        if generation:
            self.generated_tokens_processed += h
        else:
            self.tokens_processed += h
            self.padded_tokens_processed += h
        return Header(tuple(tokens), cache)

    def _header_past(self, header: Header, rows: int) -> Callable[[], Any]:
        """The header's cache repeated for ``rows`` rows, built fresh on each call (a retry gets an unmutated one)."""
        sel = torch.zeros(rows, dtype=torch.long, device=self.device)
        return lambda: _select_cache(header.cache, sel)

    def _run_packed(self, rows: list[list[Group]], sums: torch.Tensor, header: Header | None = None) -> None:
        """One forward of packed rows. A group packs as its prefix followed by each member's suffix; a suffix token
        sees its group's prefix and its own earlier tokens only, at position ids continuing the prefix; groups that
        share a row never see each other. With a ``header`` (the first ``h`` tokens of every prefix, already run),
        groups hold ``prefix[h:]`` onwards and every token also sees the header's cache."""
        h = len(header.tokens) if header else 0
        layout = packed_layout(rows, h)
        packed = layout.rows
        width = max(len(t) for t, _, _, _ in packed)
        ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        grp_t = torch.full((len(rows), width), -1, dtype=torch.long)
        seg_t = torch.zeros((len(rows), width), dtype=torch.long)
        pos_t = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (t, gr, sg, ps) in enumerate(packed):
            ids[r, : len(t)] = torch.tensor(t)
            grp_t[r, : len(t)] = torch.tensor(gr)
            seg_t[r, : len(t)] = torch.tensor(sg)
            pos_t[r, : len(t)] = torch.tensor(ps)
        real = grp_t >= 0
        grp_t[~real] = -2 - torch.arange(int((~real).sum()))  # every pad token is its own group: it sees itself only
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        same_group = grp_t[:, :, None] == grp_t[:, None, :]
        visible = same_group & ((seg_t == 0)[:, None, :] | (seg_t[:, :, None] == seg_t[:, None, :]))
        mask = (causal & visible)[:, None]  # (B, 1, q, kv); the diagonal keeps pad rows from being all-masked
        if header:  # every token sees the whole header
            mask = torch.cat([torch.ones(len(rows), 1, width, h, dtype=torch.bool), mask], dim=3)
        if getattr(self.config, "_attn_implementation", None) == "eager":
            dtype = next(self.model.parameters()).dtype
            mask = torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, torch.finfo(dtype).min)
        r_idx, c_idx, targets, owners = layout.scored
        keep = torch.zeros_like(ids, dtype=torch.bool)
        keep[r_idx, c_idx] = True
        if header:  # read-only: each layer's header + row keys are freed after that layer, not kept for the forward
            logits, _ = self._forward(ids, mask, pos_t, keep, past=lambda: _read_only_view(header.cache, len(rows)),
                                      use_cache=True)
        else:
            logits, _ = self._forward(ids, mask, pos_t, keep)
        self._accumulate(sums, logits, keep, r_idx, c_idx, targets, owners)
        self.tokens_processed += int(real.sum())
        self.padded_tokens_processed += ids.numel()

    # kv: prefix forward with a cache, expanded to each member's suffix row ---------------------------------------

    def _run_group_batch(self, groups: list[Group], sums: torch.Tensor) -> None:
        ids, attn = self._pad_right([g.prefix for g in groups], self._pad_id)
        pos = torch.arange(ids.shape[1]).expand_as(ids)
        keep = torch.zeros_like(ids, dtype=torch.bool)
        for r, g in enumerate(groups):
            p = len(g.prefix)
            for m in g.members:
                if m.first_scored < p:
                    keep[r, m.first_scored : min(p, len(m.inp))] = True
        need_cache = any(len(m.inp) > len(g.prefix) for g in groups for m in g.members)
        logits, cache = self._forward(ids, attn, pos, keep, use_cache=need_cache)
        self.tokens_processed += int(attn.sum())
        self.padded_tokens_processed += ids.numel()
        r_idx, c_idx, targets, owners = [], [], [], []
        suffix_rows: list[tuple[int, Item]] = []
        for r, g in enumerate(groups):
            p = len(g.prefix)
            for m in g.members:
                for j in range(m.first_scored, min(p, len(m.inp))):
                    r_idx.append(r)
                    c_idx.append(j)
                    targets.append(m.targets[j - m.first_scored])
                    owners.append(m.index)
                if len(m.inp) > p:
                    suffix_rows.append((r, m))
        self._accumulate(sums, logits, keep, r_idx, c_idx, targets, owners)
        del logits
        if not suffix_rows:
            return
        suffix_rows.sort(key=lambda rm: -(len(rm[1].inp) - len(groups[rm[0]].prefix)))
        start = 0
        p_pad = ids.shape[1]
        while start < len(suffix_rows):
            r0, m0 = suffix_rows[start]
            s_len = len(m0.inp) - len(groups[r0].prefix)
            n = min(self._rows_limit(s_len, p_pad + s_len), len(suffix_rows) - start)
            self._run_suffixes(groups, suffix_rows[start : start + n], cache, attn, sums)
            start += n

    def _run_suffixes(self, groups: list[Group], chunk: list[tuple[int, Item]], cache: Any, prefix_attn: torch.Tensor,
                      sums: torch.Tensor) -> None:
        sel = torch.tensor([r for r, _ in chunk], dtype=torch.long)
        plens = [len(groups[r].prefix) for r, _ in chunk]
        suffixes = [m.inp[p:] for (_, m), p in zip(chunk, plens)]
        ids, s_attn = self._pad_right(suffixes, self._pad_id)
        pos = torch.tensor(plens, dtype=torch.long)[:, None] + torch.arange(ids.shape[1])[None, :]
        attn = torch.cat([prefix_attn[sel], s_attn], dim=1)
        keep = torch.zeros_like(ids, dtype=torch.bool)
        for i, ((_, m), p) in enumerate(zip(chunk, plens)):
            keep[i, max(m.first_scored, p) - p : len(m.inp) - p] = True
        sel_dev = sel.to(self.device)
        logits, _ = self._forward(ids, attn, pos, keep, past=lambda: _select_cache(cache, sel_dev), use_cache=True)
        r_idx, c_idx, targets, owners = [], [], [], []
        for i, ((_, m), p) in enumerate(zip(chunk, plens)):
            for j in range(max(m.first_scored, p), len(m.inp)):
                r_idx.append(i)
                c_idx.append(j - p)
                targets.append(m.targets[j - m.first_scored])
                owners.append(m.index)
        self._accumulate(sums, logits, keep, r_idx, c_idx, targets, owners)
        self.tokens_processed += int(s_attn.sum())
        self.padded_tokens_processed += ids.numel()

    # == token-level entry points ====================================================================================
    # Used by jbench.lmeval_backend (lm-eval's request semantics on this scorer): the caller tokenizes (lm-eval's
    # joint ``_encode_pair``, BOS/prefix token, left truncation of generation contexts) and decides when a generation
    # stops (stop strings, EOS ids); these methods (and ``greedy_tokens``, in hf_generation) only run the model, on
    # the same fast paths as above.

    def loglikelihood_tokens(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[tuple[float, bool]]:
        """``(sum of continuation log-probs, every continuation token is the argmax)`` per pre-tokenized
        ``(context ids, continuation ids)`` pair, in input order; the model input is
        ``(ctx + cont)[-(max_length + 1):][:-1]`` (lm-eval's and the reference's rule). An empty continuation
        scores ``(0.0, True)``. Identical model inputs are scored once, so they tie exactly, as they do in a naive
        batch (argmax tie-breaks then agree with it); different packing would otherwise add float noise."""
        unique: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
        slot: list[int] = []
        items = []
        for ctx, cont in pairs:
            item = loglikelihood_item(len(items), ctx, cont, self.max_length)
            key = (item.inp, item.targets)
            if key not in unique:
                unique[key] = len(items)
                items.append(item)
            slot.append(unique[key])
        todo = [it for it in items if it.n_cont > 0]

        # column 1 counts greedy misses (see _accumulate)
        scored = [(float(ll), miss == 0) for ll, miss in self._score_items(todo, (len(items), 2)).tolist()]
        return [scored[k] for k in slot]


def load_variant(path: str, spec: Any, *, use_fast: bool | None = None) -> HFScorer:
    """Entry point used by :func:`jbench.models.load.load_scorer` for the fp32 / fp16 / bf16 variants.

    ``spec.model_args`` go to ``from_pretrained``; ``spec.extra`` may carry ``dtype`` and ``prefix_sharing``."""
    from jbench.models.model_args import from_pretrained_kwargs

    extra = dict(getattr(spec, "extra", None) or {})
    dtype = DTYPE_OF_VARIANT.get(spec.variant) or extra.get("dtype", "float32")
    scorer = HFScorer(path, dtype=dtype, device=spec.device, batch_size=spec.batch_size, use_fast=use_fast,
                      trust_remote_code=spec.trust_remote_code, revision=spec.revision, max_length=spec.max_length,
                      prefix_sharing=bool(extra.get("prefix_sharing", True)),
                      model_kwargs=from_pretrained_kwargs(getattr(spec, "model_args", None) or {}))
    scorer.max_batch_size = getattr(spec, "max_batch_size", None)
    return scorer
