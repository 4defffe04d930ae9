"""Memory budget and out-of-memory retry for the HF scorer: how many rows one forward may hold, and what happens
when the device runs out anyway.

Why a module of its own: batch sizing is a reproducibility rule, not a speed trick -- the budget comes only from
stable facts (the device's total memory, the model's size and shape), never from the memory that happens to be free,
so a resumed or repeated run batches, and therefore scores, exactly as an uninterrupted one. The retry is the one
place that may change the batch at run time, and it records that it did (``oom_retries``, ``oom_batch_cap``).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, TypeVar

import torch

from jbench.errors import ModelError

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: on CPU, forwards bigger than this many (padded) tokens are no faster per token, only hungrier.
CPU_TOKEN_CAP = 2048
GPU_TOKEN_CAP = 65536


def _is_oom(err: BaseException) -> bool:
    """An out-of-memory error from torch (CUDA/MPS/XPU) or the CPU allocator."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                              or "cannot allocate memory" in text)


class MemoryBudget:
    """Batch sizing and the out-of-memory retry, mixed into :class:`jbench.models.hf.HFScorer` (which sets the
    attributes declared here in its ``_setup``)."""

    model: Any
    config: Any
    device: torch.device
    name: str
    max_length: int
    batch_size: int | None
    max_batch_size: int | None = None  # --batch-size auto:N: the automatic size never exceeds N rows
    largest_batch: int = 0  # the most rows one forward held (recorded as the effective batch size)
    batch_sizing: dict[str, Any]
    oom_retries: int
    tokens_processed: int
    padded_tokens_processed: int
    generated_tokens_processed: int
    forward_calls: int
    _token_budget: int
    _mem_budget: float
    _oom_cap: int | None
    _last_rows: int

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
        rows = min(rows, self.max_batch_size or rows)
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
