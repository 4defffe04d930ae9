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
"""

from __future__ import annotations

import functools
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch

from jbench.errors import ModelError
from jbench.models.base import GenerationRequest, LoglikelihoodRequest, encode_context, model_input
from jbench.models.tokenizer import HarnessTokenizer, load_tokenizer, wrap_hf_tokenizer

log = logging.getLogger(__name__)

_T = TypeVar("_T")

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")

_DTYPES: dict[str, Any] = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "auto": "auto",
}

#: on CPU, forwards bigger than this many (padded) tokens are no faster per token, only hungrier.
CPU_TOKEN_CAP = 2048
GPU_TOKEN_CAP = 65536
#: longest packed row (prefix + member suffixes): its attention mask and scores grow with the square of it.
PACKED_ROW_CAP = 4096
#: packed rows are at least this wide, so that several short groups (XWinograd's sentence pairs) fill one row
#: instead of each padding a row to the longest group's width; attention over a row this wide is cheap next to
#: the linear layers, whose cost is per token, padding included.
PACKED_ROW_MIN = 256
#: a header (the tokens every prompt of a family starts with) shorter than this is not worth its own forward and
#: the cache copies: it simply stays in each row.
MIN_HEADER = 16

#: generation-config fields the reference's ``model.generate`` would also have applied; we implement only
#: ``repetition_penalty`` and warn about the rest.
_UNSUPPORTED_GEN_FIELDS = ("no_repeat_ngram_size", "bad_words_ids", "min_length", "min_new_tokens", "suppress_tokens",
                           "begin_suppress_tokens", "forced_bos_token_id", "forced_eos_token_id", "sequence_bias",
                           "max_new_tokens", "encoder_repetition_penalty")


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype | str:
    """``"float32"|"float16"|"bfloat16"|"auto"`` (and short aliases) -> what ``from_pretrained(dtype=...)`` takes."""
    if isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}", fix="use one of float32, float16, bfloat16, auto")
    return _DTYPES[key]


def config_max_length(config: Any) -> int:
    """The reference's ``max_length``: ``config.n_ctx``, else ``config.max_position_embeddings``."""
    for name in ("n_ctx", "max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    log.warning("model config has neither n_ctx nor max_position_embeddings; using max_length=2048")
    return 2048


def load_causal_lm(model: str | os.PathLike[str], *, dtype: str | torch.dtype = "float32", device: str = "cpu",
                   trust_remote_code: bool = False, revision: str | None = None,
                   model_kwargs: dict[str, Any] | None = None) -> Any:
    """``AutoModelForCausalLM.from_pretrained`` with clear :class:`ModelError` messages, in eval mode on ``device``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = str(model)
    if not Path(path).expanduser().exists() and not _HUB_ID.fullmatch(path):
        raise ModelError(f"model path does not exist: {path}", where=path,
                         fix="pass an existing model directory or a cached hub id")
    kwargs = dict(model_kwargs or {})
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, revision=revision)
    except (OSError, ValueError, KeyError) as err:
        raise ModelError(f"cannot load a model config from {path!r}: {err}", where=path,
                         fix="pass a local model directory with config.json (the hub is not reachable offline)") from err
    _refuse_non_causal(config, path)
    try:
        m = AutoModelForCausalLM.from_pretrained(path, config=config, dtype=parse_dtype(dtype),
                                                 trust_remote_code=trust_remote_code, revision=revision, **kwargs)
    except ValueError as err:
        if "Unrecognized configuration class" in str(err) or "AutoModelForCausalLM" in str(err):
            raise ModelError(f"{path!r} is not a causal language model ({type(config).__name__})", where=path,
                             fix="jbench scores decoder-only (causal) LMs only") from err
        raise ModelError(f"cannot load model {path!r}: {err}", where=path) from err
    except OSError as err:
        raise ModelError(f"cannot load model weights from {path!r}: {err}", where=path) from err
    if "device_map" not in kwargs:
        m = m.to(device)
    m.eval()
    return m


def _refuse_non_causal(config: Any, path: str) -> None:
    """Refuse encoders (BERT-style) and encoder-decoders before loading weights: transformers maps some of them to a
    causal-LM head (``BertLMHeadModel``, ``BartForCausalLM``) that loads and scores without error, but with
    bidirectional attention or half a model, so every number would be meaningless."""
    model_type = str(getattr(config, "model_type", "") or "")
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES as masked
    except ImportError:  # pragma: no cover - very old/new transformers
        masked = {}
    encoder = model_type in masked and not bool(getattr(config, "is_decoder", False))
    if encoder or bool(getattr(config, "is_encoder_decoder", False)):
        kind = "an encoder-decoder" if getattr(config, "is_encoder_decoder", False) else "an encoder (masked LM)"
        raise ModelError(f"{path!r} is not a causal language model: it is {kind} model ({type(config).__name__})",
                         where=f"{path} (config.json model_type={model_type!r})",
                         fix="jbench scores decoder-only (causal) LMs only; pass a GPT/Llama/Qwen-style checkpoint")


# ----------------------------------------------------------------------------------------------------------------
# request bookkeeping
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    """One tokenized loglikelihood request: logits at positions ``L-n_cont .. L-1`` of ``inp`` score ``targets``."""

    index: int
    inp: tuple[int, ...]
    n_cont: int
    targets: tuple[int, ...]

    @property
    def first_scored(self) -> int:
        return len(self.inp) - self.n_cont


@dataclass
class _Group:
    """Items whose model inputs share ``prefix`` (run once); member suffixes are ``inp[len(prefix):]``."""

    prefix: tuple[int, ...]
    members: list[_Item] = field(default_factory=list)


def _lcp(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """Longest common prefix length by binary search on tuple slices (compared in C)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def group_by_prefix(items: Sequence[_Item]) -> list[_Group]:
    """Partition items into groups whose common prefix runs once, minimising the tokens run.

    Items are sorted by token sequence, so inputs sharing a context (or, for XWinograd's empty context, the leading
    words of the two sentences) become neighbours. A sorted range either stays one group (prefix = the range's
    minimum neighbour LCP ``m``; cost ``m + sum(L - m)``) or splits where the neighbour LCP equals ``m``, whichever
    runs fewer tokens (a range with ``m == 0`` must split; a single item is its own prefix)."""
    order = sorted(items, key=lambda it: it.inp)
    if not order:
        return []
    adj = [_lcp(order[i].inp, order[i + 1].inp) for i in range(len(order) - 1)]
    lens = [len(it.inp) for it in order]
    spans = _solve_spans(adj, lens, 0, len(order), 0)[1]
    return [_Group(order[lo].inp[:p], order[lo:hi]) for lo, hi, p in spans]


def _solve_spans(adj: list[int], lens: list[int], lo: int, hi: int, depth: int) -> tuple[int, list[tuple[int, int, int]]]:
    """(tokens run, [(lo, hi, prefix_len)]) for the sorted range ``[lo, hi)`` (see :func:`group_by_prefix`)."""
    if hi - lo == 1:
        return lens[lo], [(lo, hi, lens[lo])]
    m = min(adj[lo : hi - 1])
    keep_cost = m + sum(lens[lo:hi]) - (hi - lo) * m
    if m > 0 and depth > 200:  # pathological nesting: stop refining
        return keep_cost, [(lo, hi, m)]
    split_cost, spans, start = 0, [], lo
    for i in range(lo, hi):
        if i == hi - 1 or adj[i] == m:
            c, sp = _solve_spans(adj, lens, start, i + 1, depth + 1)
            split_cost += c
            spans.extend(sp)
            start = i + 1
    if m > 0 and keep_cost <= split_cost:
        return keep_cost, [(lo, hi, m)]
    return split_cost, spans


@dataclass
class _Header:
    """Leading tokens shared by every row of a family of forwards, run once; rows attend to its KV cache."""

    tokens: tuple[int, ...]
    cache: Any


def header_families(prefixes: Sequence[tuple[int, ...]], lens: Sequence[int]) -> list[tuple[int, list[int]]]:
    """Partition rows into ``(header length, row indices)`` families: the rows of a family all start with the same
    ``header length`` tokens (their ``prefixes``, already cut where the row's first scored position begins), which
    then run once for the whole family instead of once per row.

    Why: a task's prompts share a description / instruction across documents (and, by chance, a first few-shot
    example), but per-document grouping (:func:`group_by_prefix`) only shares within a document. The rows are sorted
    and split by the same token-count rule as the groups (``lens`` = tokens each row would run); families of one row
    or with a header under :data:`MIN_HEADER` tokens go, together, into a last family with no header (length 0)."""
    order = sorted(range(len(prefixes)), key=lambda i: prefixes[i])
    if not order:
        return []
    adj = [_lcp(prefixes[order[k]], prefixes[order[k + 1]]) for k in range(len(order) - 1)]
    spans = _solve_spans(adj, [lens[i] for i in order], 0, len(order), 0)[1]
    families, rest = [], []
    for lo, hi, h in spans:
        if hi - lo >= 2 and h >= MIN_HEADER:
            families.append((h, sorted(order[lo:hi])))
        else:
            rest.extend(order[lo:hi])
    if rest:
        families.append((0, sorted(rest)))
    return families


# ----------------------------------------------------------------------------------------------------------------
# the scorer
# ----------------------------------------------------------------------------------------------------------------


class HFScorer:
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
        self._shareable = self._cache_is_plain()
        self._shared_mode: str | None = None  # "packed" or "kv", decided on first use
        self._header_ok: bool | None = None  # rows may continue a shared header's KV cache (the packed probe says)
        gen_cfg = getattr(model, "generation_config", None)
        self.repetition_penalty = float(getattr(gen_cfg, "repetition_penalty", None) or 1.0)
        self._warn_generation_config(gen_cfg)
        self._token_budget, self._mem_budget = self._auto_budgets()
        self._oom_cap: int | None = None  # rows per forward after an out-of-memory retry (see _oom_retry)
        self._last_rows = 0
        self.oom_retries = 0
        self.reset_counters()

    # -- counters and sizing ---------------------------------------------------------------------------------------

    def reset_counters(self) -> None:
        """``tokens_processed``: real (non-pad) tokens run for loglikelihood; ``padded_tokens_processed`` includes
        padding; ``generated_tokens_processed``: tokens run by ``generate``; ``forward_calls``: model calls."""
        self.tokens_processed = 0
        self.padded_tokens_processed = 0
        self.generated_tokens_processed = 0
        self.forward_calls = 0

    def _cache_is_plain(self) -> bool:
        """Prefix sharing expands plain KV caches; sliding-window / hybrid / recurrent layers fall back to naive."""
        cfg = self.config.get_text_config(decoder=True) if hasattr(self.config, "get_text_config") else self.config
        types = getattr(cfg, "layer_types", None)
        if types and any(t != "full_attention" for t in types):
            return False
        if getattr(cfg, "use_sliding_window", False) and getattr(cfg, "sliding_window", None):
            return False
        return not getattr(cfg, "is_encoder_decoder", False)

    def _sizes(self) -> tuple[float, float, int]:
        """(KV-cache bytes per token, transient activation bytes per token, attention heads) -- rough, for sizing."""
        cfg = self.config.get_text_config(decoder=True) if hasattr(self.config, "get_text_config") else self.config
        hidden = int(getattr(cfg, "hidden_size", 1024) or 1024)
        layers = int(getattr(cfg, "num_hidden_layers", 24) or 24)
        heads = int(getattr(cfg, "num_attention_heads", 16) or 16)
        kv_heads = int(getattr(cfg, "num_key_value_heads", heads) or heads)
        ffn = int(getattr(cfg, "intermediate_size", 4 * hidden) or 4 * hidden)
        vocab = int(getattr(cfg, "vocab_size", 32000) or 32000)
        elt = next(self.model.parameters()).element_size()
        kv = elt * 2.0 * layers * hidden * kv_heads / heads
        act = elt * (8.0 * hidden + 2.0 * ffn) + 8.0 * vocab
        return kv, act, heads

    def _auto_budgets(self) -> tuple[int, float]:
        """(tokens per forward, bytes per forward) for the automatic batch size.

        Derived only from stable facts -- the device's *total* memory, the model's own size and shape -- never from
        the memory that happens to be free: free memory changes from run to run, a different batch composition
        changes the last bits of the scores, and a resumed (or repeated) run would then not reproduce an
        uninterrupted one. If the budget is too optimistic for a busy device, out-of-memory errors halve the batch
        (see ``_oom_retry``)."""
        weights = float(sum(t.numel() * t.element_size() for t in self.model.parameters())
                        + sum(t.numel() * t.element_size() for t in self.model.buffers()))
        if self.device.type == "cuda":
            total = float(torch.cuda.get_device_properties(self.device).total_memory)
            mem, cap = 0.5 * max(0.9 * total - weights, 0.0), GPU_TOKEN_CAP
        else:
            try:
                import psutil

                total = float(psutil.virtual_memory().total)
            except ImportError:  # pragma: no cover - psutil ships with accelerate
                total = float(16 << 30)
            mem, cap = min(0.25 * max(total - weights, 0.0), float(8 << 30)), CPU_TOKEN_CAP
        mem = max(mem, float(64 << 20))
        kv, act, _ = self._sizes()
        tokens = int(max(64, min(cap, mem / (kv + act))))
        self.batch_sizing = {"basis": "total device memory, model size and sequence lengths",
                             "total_memory_bytes": int(total), "weights_bytes": int(weights),
                             "token_budget": tokens, "memory_budget_bytes": int(mem)}
        return tokens, mem

    def _rows_limit(self, q_len: int, kv_len: int | None = None) -> int:
        """Rows per forward of ``q_len`` new tokens attending to ``kv_len`` positions: the manual ``batch_size``,
        else what the token budget (compute) and the memory budget (KV, activations, score matrices) allow."""
        if self.batch_size is not None:
            return min(self.batch_size, self._oom_cap or self.batch_size)
        kv_len = max(kv_len or q_len, q_len)
        kv, act, heads = self._sizes()
        per_row = kv * kv_len + act * q_len + 4.0 * heads * q_len * kv_len
        rows = max(1, min(self._token_budget // max(1, q_len), int(self._mem_budget // per_row)))
        return min(rows, self._oom_cap or rows)

    # -- out of memory: halve the batch and retry (reliability) ----------------------------------------------------

    def _oom_retry(self, run: Callable[[], _T]) -> _T:
        """``run()``; on an out-of-memory error, cap the rows per forward at half of the failing forward's and run
        the whole call again (from scratch, so no partial sums survive), down to one row; then a clear ModelError.
        The cap stays for the scorer's lifetime (``oom_retries`` / ``oom_batch_cap`` are recorded in results)."""
        while True:
            counters = (self.tokens_processed, self.padded_tokens_processed, self.generated_tokens_processed,
                        self.forward_calls)
            try:
                return run()
            except (RuntimeError, MemoryError) as err:
                if not _is_oom(err):
                    raise
                failed = max(1, self._last_rows)
                detail = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            (self.tokens_processed, self.padded_tokens_processed, self.generated_tokens_processed,
             self.forward_calls) = counters
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if failed <= 1:
                raise ModelError(f"out of memory on {self.device} even with batch size 1 ({detail})",
                                 where=f"model {self.name}, max_length {self.max_length}",
                                 fix="free memory on the device (other processes), use a smaller variant "
                                     "(--variant fp16/bf16 or a quantized one) or a bigger device")
            self._oom_cap = failed // 2
            self.oom_retries += 1
            log.warning("out of memory with %d rows per forward on %s; retrying with %d", failed, self.device,
                        self._oom_cap)

    @property
    def oom_batch_cap(self) -> int | None:
        """Rows per forward after out-of-memory retries (None: never ran out of memory)."""
        return self._oom_cap

    def _warn_generation_config(self, gen_cfg: Any) -> None:
        if gen_cfg is None:
            return
        for name in _UNSUPPORTED_GEN_FIELDS:
            value = getattr(gen_cfg, name, None)
            if value not in (None, 0, [], {}):
                log.warning("generation_config.%s=%r is set; the reference's model.generate applied it, jbench's "
                            "greedy loop does not", name, value)

    # -- forward helpers ---------------------------------------------------------------------------------------------

    def _forward(self, ids: torch.Tensor, attn: torch.Tensor, pos: torch.Tensor, keep: torch.Tensor | int,
                 past: Callable[[], Any] | None = None, use_cache: bool = False) -> tuple[torch.Tensor, Any]:
        """One model call. ``keep`` is either an int (last positions, as in ``generate``; logits ``(B, keep, V)``)
        or a boolean ``(B, T)`` mask (logits ``(K, V)`` at its True positions, row-major). ``past`` builds the
        cache to continue from (a callable, so a retry gets a fresh, unmutated one)."""
        self._last_rows = int(ids.shape[0])
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

    def _prepare(self, requests: Sequence[LoglikelihoodRequest]) -> list[_Item]:
        ctx_cache: dict[str, list[int]] = {}
        cont_cache: dict[str, list[int]] = {}
        items = []
        for i, req in enumerate(requests):
            ctx = ctx_cache.get(req.context)
            if ctx is None:
                ctx = ctx_cache[req.context] = encode_context(self.tokenizer, req.context)
            cont = cont_cache.get(req.continuation)
            if cont is None:
                cont = cont_cache[req.continuation] = list(self.tokenizer.encode(req.continuation))
            inp, n_cont = model_input(ctx, cont, self.max_length)
            whole = (ctx + cont)[-(self.max_length + 1):]
            targets = tuple(whole[len(whole) - n_cont:]) if n_cont else ()
            items.append(_Item(i, tuple(inp), n_cont, targets))
        return items

    def _score_items(self, todo: list[_Item], shape: tuple[int, ...]) -> torch.Tensor:
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

    def _score_naive(self, items: Sequence[_Item], sums: torch.Tensor) -> None:
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

    def _group_batches(self, groups: list[_Group]) -> Iterator[list[_Group]]:
        """Consecutive groups (longest prefix first) whose prefixes fit one forward; suffixes are chunked later."""
        start = 0
        while start < len(groups):
            p_max = len(groups[start].prefix)
            n = min(self._rows_limit(p_max), len(groups) - start)
            yield groups[start : start + n]
            start += n

    def _score_shared(self, items: Sequence[_Item], sums: torch.Tensor) -> None:
        """Fast path: each group's prefix runs once (see the module docstring); in packed mode, the header that
        groups of different documents share (:func:`header_families`) runs once per family too."""
        groups = group_by_prefix(items)
        if self._share_mode() == "packed":
            groups = [part for g in groups for part in _split_packed(g, PACKED_ROW_CAP)]
            if self._header_sharing():  # a header never reaches a scored position
                cut = [g.prefix[: min(m.first_scored for m in g.members)] for g in groups]
                families = header_families(cut, [_packed_len(g) for g in groups])
            else:
                families = [(0, list(range(len(groups))))]
            for h, idx in families:
                family = sorted((groups[i] for i in idx), key=lambda g: -_packed_len(g))
                header = self._run_header(family[0].prefix[:h]) if h else None
                for batch in self._packed_batches(family, h):
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
        items = [_Item(0, tuple(pre + [5 % vocab, 9 % vocab, 11 % vocab]), 3, (9 % vocab, 11 % vocab, 13 % vocab)),
                 _Item(1, tuple(pre + [6 % vocab, 8 % vocab]), 2, (8 % vocab, 10 % vocab))]
        counters = (self.tokens_processed, self.padded_tokens_processed, self.generated_tokens_processed,
                    self.forward_calls)
        tol = 1e-3 if next(self.model.parameters()).dtype == torch.float32 else 5e-2
        runs = {name: torch.zeros(2, dtype=torch.float64) for name in ("packed", "header", "naive")}
        try:
            with torch.inference_mode():
                self._score_naive(items, runs["naive"])
                self._run_packed([[_Group(tuple(pre), items)]], runs["packed"])
                try:
                    self._run_packed([[_Group(tuple(pre), items)]], runs["header"],
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

    def _run_header(self, tokens: tuple[int, ...], generation: bool = False) -> _Header:
        """Run a shared header once (positions ``0 .. h-1``) and keep its KV cache for the rows that continue it."""
        h = len(tokens)
        _, cache = self._forward(torch.tensor([tokens], dtype=torch.long), torch.ones(1, h, dtype=torch.long),
                                 torch.arange(h)[None], 1, use_cache=True)
        if generation:
            self.generated_tokens_processed += h
        else:
            self.tokens_processed += h
            self.padded_tokens_processed += h
        return _Header(tuple(tokens), cache)

    def _header_past(self, header: _Header, rows: int) -> Callable[[], Any]:
        """The header's cache repeated for ``rows`` rows, built fresh on each call (a retry gets an unmutated one)."""
        sel = torch.zeros(rows, dtype=torch.long, device=self.device)
        return lambda: _select_cache(header.cache, sel)

    def _packed_batches(self, groups: list[_Group], h: int = 0) -> Iterator[list[list[_Group]]]:
        """Forwards of packed rows, each row a list of groups. Groups come longest first; the first one of a forward
        sets the row width (at least :data:`PACKED_ROW_MIN`) and each later group goes into the first row with room
        left (first-fit decreasing), so short groups share a row instead of each padding one to the width
        (XWinograd's sentence pairs, the short documents of a task). A forward closes at the rows limit. ``h``:
        tokens of a shared header (not in the rows)."""
        start = 0
        while start < len(groups):
            width = max(_packed_len(groups[start]) - h, min(PACKED_ROW_MIN, PACKED_ROW_CAP))
            limit = self._rows_limit(width, width + h)
            rows: list[list[_Group]] = []
            room: list[int] = []
            i = start
            while i < len(groups):
                need = _packed_len(groups[i]) - h
                slot = next((k for k, left in enumerate(room) if left >= need), None)
                if slot is None:
                    if len(rows) == limit:
                        break
                    rows.append([])
                    room.append(width)
                    slot = len(rows) - 1
                rows[slot].append(groups[i])
                room[slot] -= need
                i += 1
            yield rows
            start = i

    def _run_packed(self, rows: list[list[_Group]], sums: torch.Tensor, header: _Header | None = None) -> None:
        """One forward of packed rows. A group packs as its prefix followed by each member's suffix; a suffix token
        sees its group's prefix and its own earlier tokens only, at position ids continuing the prefix; groups that
        share a row never see each other. With a ``header`` (the first ``h`` tokens of every prefix, already run),
        groups hold ``prefix[h:]`` onwards and every token also sees the header's cache."""
        h = len(header.tokens) if header else 0
        packed: list[tuple[list[int], list[int], list[int], list[int]]] = []  # per row: tokens, group, segment, pos
        places: list[tuple[int, int, _Item, int, int]] = []  # (row, prefix length p, item, prefix base, offset)
        n_seg = 0
        for r, row in enumerate(rows):
            toks: list[int] = []
            grp: list[int] = []
            seg: list[int] = []
            pos: list[int] = []
            for g in row:
                n_seg += 1
                gid, p = n_seg, len(g.prefix)
                base = len(toks) - h  # prefix position j (h <= j < p) sits at row index base + j
                toks.extend(g.prefix[h:])
                grp.extend([gid] * (p - h))
                seg.extend([0] * (p - h))
                pos.extend(range(h, p))
                for m in g.members:
                    places.append((r, p, m, base, len(toks) - p))  # member position j >= p sits at j + offset
                    if len(m.inp) > p:
                        n_seg += 1
                        toks.extend(m.inp[p:])
                        grp.extend([gid] * (len(m.inp) - p))
                        seg.extend([n_seg] * (len(m.inp) - p))
                        pos.extend(range(p, len(m.inp)))
            packed.append((toks, grp, seg, pos))
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
        # scored positions: member position j (first_scored <= j < L) -> row index base + j (prefix) or j + offset
        r_idx, c_idx, targets, owners = [], [], [], []
        for r, p, m, base, offset in places:
            for j in range(m.first_scored, len(m.inp)):
                r_idx.append(r)
                c_idx.append(base + j if j < p else j + offset)
                targets.append(m.targets[j - m.first_scored])
                owners.append(m.index)
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

    def _run_group_batch(self, groups: list[_Group], sums: torch.Tensor) -> None:
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
        suffix_rows: list[tuple[int, _Item]] = []
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

    def _run_suffixes(self, groups: list[_Group], chunk: list[tuple[int, _Item]], cache: Any, prefix_attn: torch.Tensor,
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

    # -- generation --------------------------------------------------------------------------------------------------

    def _gen_prepare(self, req: GenerationRequest) -> tuple[list[int], int | None, int]:
        """(context ids, stop id, cap) per the reference's ``greedy_until``."""
        cap = max(0, int(req.max_gen_tokens))
        until_ids = self.tokenizer.encode(req.until) if req.until else []
        stop = int(until_ids[-1]) if until_ids else self.tokenizer.eos_token_id
        ctx = encode_context(self.tokenizer, req.context)[cap - self.max_length :]  # the reference's slice, verbatim
        if not ctx:
            ctx = encode_context(self.tokenizer, "")
        return ctx, stop, cap

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """Greedy continuation of each context, cut at the first ``until``; in request order."""
        outputs = self._generate_rows([self._gen_prepare(r) for r in requests])
        texts = []
        for req, toks in zip(requests, outputs):
            s = self.tokenizer.decode(toks) if toks else ""
            texts.append(s.split(req.until)[0] if req.until else s)
        return texts

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
                header: _Header | None = None) -> list[list[int]]:
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

    # == token-level entry points ====================================================================================
    # Used by jbench.lmeval_backend (lm-eval's request semantics on this scorer): the caller tokenizes (lm-eval's
    # joint ``_encode_pair``, BOS/prefix token, left truncation of generation contexts) and decides when a generation
    # stops (stop strings, EOS ids); these methods only run the model, on the same fast paths as above.

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
            inp, n_cont = model_input(ctx, cont, self.max_length)
            whole = (list(ctx) + list(cont))[-(self.max_length + 1):]
            key = (tuple(inp), tuple(whole[len(whole) - n_cont:]) if n_cont else ())
            if key not in unique:
                unique[key] = len(items)
                items.append(_Item(len(items), key[0], n_cont, key[1]))
            slot.append(unique[key])
        todo = [it for it in items if it.n_cont > 0]

        # column 1 counts greedy misses (see _accumulate)
        scored = [(float(ll), miss == 0) for ll, miss in self._score_items(todo, (len(items), 2)).tolist()]
        return [scored[k] for k in slot]

    def greedy_tokens(self, contexts: Sequence[Sequence[int]], caps: Sequence[int], *,
                      done: Callable[[int, list[int]], bool] | None = None) -> list[list[int]]:
        """Greedy new tokens for pre-tokenized, already truncated, non-empty contexts, in input order. Row ``i``
        stops after ``caps[i]`` tokens or once ``done(i, its new tokens)`` is true; the stopping token is kept.
        Finished rows leave the batch (no compute is spent on them)."""
        if any(len(c) == 0 for c in contexts):
            raise ModelError("greedy_tokens needs a non-empty context for every row")
        return self._generate_rows([(list(c), None, int(cap)) for c, cap in zip(contexts, caps)], done)


def load_variant(path: str, spec: Any, *, use_fast: bool | None = None) -> HFScorer:
    """Entry point used by :func:`jbench.models.load.load_scorer` for the fp32 / fp16 / bf16 variants.

    ``spec.extra`` may carry ``dtype``, ``prefix_sharing`` and ``model_kwargs``."""
    from jbench.models.load import DTYPE_OF_VARIANT

    extra = dict(getattr(spec, "extra", None) or {})
    dtype = DTYPE_OF_VARIANT.get(spec.variant) or extra.get("dtype", "float32")
    return HFScorer(path, dtype=dtype, device=spec.device, batch_size=spec.batch_size, use_fast=use_fast,
                    trust_remote_code=spec.trust_remote_code, revision=spec.revision, max_length=spec.max_length,
                    prefix_sharing=bool(extra.get("prefix_sharing", True)), model_kwargs=extra.get("model_kwargs"))


def _is_oom(err: BaseException) -> bool:
    """An out-of-memory error from torch (CUDA/MPS/XPU) or the CPU allocator."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                              or "cannot allocate memory" in text)


def _accepts_kwarg(model: Any, name: str) -> bool:
    """Whether ``model.forward`` declares ``name`` or takes ``**kwargs``."""
    import inspect

    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _cache_kwarg(model: Any) -> str:
    """The name under which ``model.forward`` takes the KV cache: ``cache`` where it declares it (transformers 5
    renamed ``past_key_values``; the old name warns, and goes away in 5.40), else ``past_key_values`` (older
    transformers, remote-code models)."""
    import inspect

    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def _output_cache(out: Any) -> Any:
    """The KV cache a forward returned, read by its field name (``out.past_key_values`` is a deprecated alias that
    warns on transformers with the ``cache`` field); None when the forward kept no cache."""
    keys = out.keys() if hasattr(out, "keys") else ()
    for name in ("cache", "past_key_values"):
        if name in keys:
            return out[name]
    return None


def _packed_len(g: _Group) -> int:
    return len(g.prefix) + sum(max(0, len(m.inp) - len(g.prefix)) for m in g.members)


def _split_packed(g: _Group, cap: int) -> list[_Group]:
    """Split a group whose packed row would exceed ``cap`` tokens into groups with the same prefix (each re-runs
    it), so that many items sharing a short prefix (e.g. only XWinograd's [eos]) never make one huge row."""
    if _packed_len(g) <= cap:
        return [g]
    p = len(g.prefix)
    parts: list[_Group] = []
    cur: list[_Item] = []
    size = p
    for m in g.members:
        s = max(0, len(m.inp) - p)
        if cur and size + s > cap:
            parts.append(_Group(g.prefix, cur))
            cur, size = [], p
        cur.append(m)
        size += s
    parts.append(_Group(g.prefix, cur))
    return parts


def _is_hf_tokenizer(tok: Any) -> bool:
    """An HF tokenizer object (needs ``add_special_tokens=False``), as opposed to a harness tokenizer."""
    try:
        from transformers import PreTrainedTokenizerBase
    except ImportError:  # pragma: no cover
        return False
    return isinstance(tok, PreTrainedTokenizerBase)


def _read_only_view(cache: Any, rows: int) -> Any:
    """``cache`` (one row) as seen by ``rows`` rows -- expanded views, no copies -- in a cache that a forward reads
    but never extends: a plain cache would keep every layer's concatenated header + row keys and values until the
    forward ends (~200 MB more peak memory on a 100M model's packed JCQA forwards), although a scoring forward
    needs each layer's only while that layer runs."""
    if getattr(cache, "layers", None) is None:  # legacy tuple cache: plain copies
        return _select_cache(cache, torch.zeros(rows, dtype=torch.long, device=cache[0][0].device))
    return _read_only_cache_class()(ddp_cache_data=[(layer.keys.expand(rows, *layer.keys.shape[1:]),
                                                     layer.values.expand(rows, *layer.values.shape[1:]))
                                                    for layer in cache.layers])


@functools.cache
def _read_only_cache_class() -> type:
    """A ``DynamicCache`` whose ``update`` returns past + new keys/values without storing them."""
    from transformers import DynamicCache

    class ReadOnlyCache(DynamicCache):
        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any,
                   **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            layer = self.layers[layer_idx]
            return torch.cat([layer.keys, key_states], dim=-2), torch.cat([layer.values, value_states], dim=-2)

    return ReadOnlyCache


def _select_cache(cache: Any, idx: torch.Tensor) -> Any:
    """A new cache holding rows ``idx`` of ``cache`` (rows may repeat); ``cache`` itself is left untouched so that
    several suffix chunks can reuse one prefix run."""
    from transformers import DynamicCache

    layers = getattr(cache, "layers", None)
    if layers is None:  # legacy tuple-of-tuples cache
        return tuple((k.index_select(0, idx), v.index_select(0, idx)) for k, v in cache)
    return DynamicCache(ddp_cache_data=[(layer.keys.index_select(0, idx), layer.values.index_select(0, idx))
                                        for layer in layers])
