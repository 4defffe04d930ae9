"""jbench's fast scorer as an lm-eval model backend: ``--model jbench``, for *any* lm-eval task.

Why: lm-eval's ``hf`` backend recomputes the (few-shot) context once per choice, and its ``generate`` keeps
finished rows in the batch. This backend keeps lm-eval's request semantics and swaps only the compute for
:class:`jbench.models.hf.HFScorer`: requests sharing a context prefix run it once (packed rows with a block mask, or a
shared KV cache), logits are projected only where they are scored, and finished generations leave the batch.

What is inherited unchanged from lm-eval's ``HFLM`` (this class subclasses it), so results match ``--model hf``:
model/tokenizer loading and every ``hf`` model arg (``pretrained``, ``dtype``, ``revision``, ``peft``, ``gguf_file``,
``add_bos_token``, ``prefix_token_id``, ``max_length``, ``trust_remote_code``, ...), ``tok_encode`` and the joint
``_encode_pair`` split (trailing context spaces move to the continuation; ``cont = enc(ctx+cont)[len(enc(ctx)):]``),
the ``[prefix_token_id]`` (BOS, else EOS) context for empty contexts, chat templates, and the rolling windows of
``loglikelihood_rolling``. Re-implemented on jbench's scorer, with lm-eval's rules:

* loglikelihood: model input ``(ctx + cont)[-(max_length + 1):][:-1]``; returns ``(sum log p, is_greedy)``.
  Log-softmax always runs in float32 (lm-eval uses the model dtype unless ``softmax_dtype`` is set), so bf16/fp16
  models can differ from ``hf`` in the last digits.
* generate_until (greedy requests only): contexts are encoded like ``tok_batch_encode`` (tokenizer defaults, BOS
  per ``add_bos_token``) and left-truncated to ``max_length - max_gen_toks``; a row stops on the model's
  ``generation_config`` EOS ids, after ``max_gen_toks`` tokens, or once its decoded text contains a stop string
  (``until`` + the decoded EOS); the text is decoded with ``skip_special_tokens=True`` and cut at the stop strings.
  One difference is deliberate: ``tok_batch_encode`` decides "does the context already start with BOS?" once per
  *batch* (from its first string); here it is decided per request.

Requests the fast path does not cover go to ``HFLM`` unchanged: seq2seq models, PEFT prompt-learning models
(virtual tokens), sampling or extra generation kwargs (``top_p``, ``num_beams``, ...), a ``generation_config`` that
is not plain greedy, ``think_end_token``, and multi-process (accelerate) rolling loglikelihood.

Loading: lm-eval (0.4.13) finds model backends only in its own registry and has no entry-point plugins, so this
module must be imported before lm-eval looks the name up::

    python -m jbench.lmeval_backend --model jbench --model_args pretrained=/path/to/model,dtype=float32 \\
        --tasks japanese_leaderboard --batch_size 8 --device cpu          # lm-eval's CLI, same arguments

    import jbench.lmeval_backend  # registers "jbench"
    lm_eval.simple_evaluate(model="jbench", model_args="pretrained=/path/to/model", tasks=[...])

Extra model args: ``prefix_sharing`` (default True; False runs jbench's naive path, one sequence per request) and
``max_rows`` (rows per forward; default: jbench's token/memory budget, which ignores lm-eval's ``batch_size``).
"""

from __future__ import annotations

import logging
import sys
from contextlib import AbstractContextManager
from typing import Any, Sequence

import lm_eval.models  # noqa: F401  - registers lm-eval's own backends first (get_model imports them only if empty)
import torch
from lm_eval import utils as lm_utils
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text

from jbench.models.hf import _UNSUPPORTED_GEN_FIELDS, HFScorer

log = logging.getLogger(__name__)

#: generation-config fields that make HF ``generate(do_sample=False)`` something other than plain greedy decoding
#: (beyond what HFScorer implements: repetition_penalty).
_NOT_GREEDY_FIELDS = (*_UNSUPPORTED_GEN_FIELDS, "penalty_alpha", "diversity_penalty", "guidance_scale",
                      "exponential_decay_length_penalty", "renormalize_logits", "epsilon_cutoff", "eta_cutoff")

Request = tuple[tuple[str, str] | None, list[int], list[int]]


class JbenchLM(HFLM):
    """lm-eval's ``HFLM`` with loglikelihood and greedy generation computed by jbench's :class:`HFScorer`."""

    def __init__(self, pretrained: Any, prefix_sharing: bool = True, max_rows: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(pretrained=pretrained, **kwargs)
        name = pretrained if isinstance(pretrained, str) else str(getattr(self.model, "name_or_path", ""))
        self.scorer = HFScorer.from_loaded(self.model, self.tokenizer, batch_size=max_rows,
                                           max_length=self.max_length, prefix_sharing=bool(prefix_sharing),
                                           name=name)
        self._virtual_tokens = _prompt_learning(self.model)
        self._not_greedy = _not_plain_greedy(self.model)
        if self._not_greedy:
            log.warning("jbench backend: generation_config.%s is set, so generate_until runs through lm-eval's hf "
                        "path (HF generate); loglikelihood still uses jbench's scorer", self._not_greedy)

    # -- loglikelihood ---------------------------------------------------------------------------------------------

    def _autocast(self) -> AbstractContextManager[Any]:
        """lm-eval's ``mixed_precision_dtype`` autocast, around jbench's forwards too."""
        return torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                              enabled=self.mixed_precision_dtype is not None)

    def _loglikelihood_tokens(self, requests: list[Request], disable_tqdm: bool = False,  # type: ignore[override]
                              override_bs: int | None = None) -> list[tuple[float, bool]]:
        """lm-eval's token-level loglikelihood (same inputs and truncation rule), on jbench's shared-prefix path."""
        if self.backend != "causal" or self._virtual_tokens:
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        pairs: list[tuple[list[int], list[int]]] = []
        truncated = 0
        for _, ctx, cont in requests:
            if not ctx or not cont:
                raise ValueError("lm-eval loglikelihood requests need non-empty context and continuation token "
                                 f"lists (got {len(ctx)} and {len(cont)} tokens)")
            if len(cont) > self.max_length:
                raise ValueError(f"continuation of {len(cont)} tokens exceeds max_length {self.max_length}")
            truncated += len(ctx) + len(cont) > self.max_length + 1
            pairs.append((ctx, cont))
        if truncated:
            log.warning("%d of %d requests exceed max_length %d and were truncated from the left", truncated,
                        len(requests), self.max_length)
        with self._autocast():
            scored = self.scorer.loglikelihood_tokens(pairs)
        for (request_str, _, _), answer in zip(requests, scored):
            if request_str is not None:
                self.cache_hook.add_partial("loglikelihood", request_str, answer)
        return scored

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """lm-eval's rolling windows, all scored in one call (``hf`` scores them ``batch_size`` at a time)."""
        if self.backend != "causal" or self.world_size > 1:
            return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm)
        windows: list[Request] = []
        counts: list[int] = []
        for (string,) in [req.args for req in requests]:
            rolling = [lm_utils.make_disjoint_window(w) for w in lm_utils.get_rolling_token_windows(
                token_list=self.tok_encode(string), prefix_token=self.prefix_token_id, max_seq_len=self.max_length,
                context_len=1)]
            windows.extend((None, ctx, cont) for ctx, cont in rolling)
            counts.append(len(rolling))
        scored = self._loglikelihood_tokens(windows, disable_tqdm=True)
        out: list[float] = []
        pos = 0
        for req, n in zip(requests, counts):
            total = sum(ll for ll, _ in scored[pos : pos + n])
            pos += n
            out.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", (req.args[0],), total)
        return out

    # -- generation ------------------------------------------------------------------------------------------------

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy requests on jbench's loop (finished rows leave the batch); everything else through ``HFLM``."""
        if self.backend != "causal" or self._not_greedy or self._virtual_tokens or self.think_end_token is not None:
            return super().generate_until(requests, disable_tqdm=disable_tqdm)
        eos = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        fast: list[tuple[int, list[int], list[str], int]] = []  # (request index, context ids, stops, cap)
        slow: list[int] = []
        for i, req in enumerate(requests):
            context, gen_kwargs = req.args
            kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            cap = int(kwargs.pop("max_gen_toks"))
            extra = {k: v for k, v in kwargs.items()
                     if not (k == "do_sample" and v is False) and not (k == "temperature" and v == 0.0)}
            if extra or cap <= 0:
                slow.append(i)
                continue
            max_ctx_len = self.max_length - cap
            if max_ctx_len <= 0:
                raise ValueError(f"requested max tokens to generate ({cap}) must be less than the model's maximum "
                                 f"sequence length ({self.max_length})")
            ids, _ = self.tok_batch_encode([context], left_truncate_len=max_ctx_len, truncation=self.truncation)
            ctx_ids = ids[0].tolist()
            if not ctx_ids:
                slow.append(i)
                continue
            fast.append((i, ctx_ids, until, cap))
        results: list[str | None] = [None] * len(requests)
        if fast:
            for (i, _, until, _), text in zip(fast, self._generate_fast(fast)):
                results[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
        if slow:
            for i, text in zip(slow, super().generate_until([requests[i] for i in slow], disable_tqdm=disable_tqdm)):
                results[i] = text
        return [r if r is not None else "" for r in results]

    def _generate_fast(self, fast: Sequence[tuple[int, list[int], list[str], int]]) -> list[str]:
        eos_ids = _eos_ids(self.model)
        stops = [[s for s in until if s] for _, _, until, _ in fast]

        def done(row: int, toks: list[int]) -> bool:
            if toks[-1] in eos_ids:
                return True
            text = self.tok_decode(toks)
            return any(s in text for s in stops[row])

        with self._autocast():
            new = self.scorer.greedy_tokens([ids for _, ids, _, _ in fast], [cap for _, _, _, cap in fast], done=done)
        return [postprocess_generated_text(generation=self.tok_decode(toks), stop=until, think_end_token=None)
                for toks, (_, _, until, _) in zip(new, fast)]

    def get_model_info(self) -> dict[str, Any]:
        from jbench.version import __version__

        info = super().get_model_info()
        info["jbench_backend"] = {"version": __version__, "prefix_sharing": self.scorer.prefix_sharing,
                                  "max_rows": self.scorer.batch_size}
        return info


def _eos_ids(model: Any) -> set[int]:
    """The EOS ids HF ``generate`` stops a row on: ``generation_config.eos_token_id`` (int or list)."""
    cfg = getattr(model, "generation_config", None)
    eos = getattr(cfg, "eos_token_id", None)
    if eos is None:
        return set()
    return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}


def _prompt_learning(model: Any) -> bool:
    """A PEFT prompt-tuning/prefix model prepends virtual tokens, which lm-eval's hf path accounts for; LoRA-style
    adapters do not change positions and stay on the fast path."""
    config = getattr(model, "active_peft_config", None)
    return bool(getattr(config, "is_prompt_learning", False))


def _not_plain_greedy(model: Any) -> str | None:
    """The first ``generation_config`` field that makes HF ``generate(do_sample=False)`` differ from plain greedy
    decoding (beam search, n-gram bans, forced tokens, ...), or None."""
    cfg = getattr(model, "generation_config", None)
    if cfg is None:
        return None
    if int(getattr(cfg, "num_beams", 1) or 1) > 1:
        return "num_beams"
    for name in _NOT_GREEDY_FIELDS:
        value = getattr(cfg, name, None)
        if value not in (None, 0, 0.0, False, [], {}):
            return name
    return None


# `python -m jbench.lmeval_backend` runs this file as __main__; main() then imports the real module, which registers
# the class once (registering both copies under one name would be an lm-eval registry conflict).
if __name__ != "__main__":
    register_model("jbench")(JbenchLM)


def main(argv: Sequence[str] | None = None) -> None:
    """lm-eval's own CLI with the ``jbench`` backend registered (arguments exactly as for ``lm_eval``)."""
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm-eval", *(sys.argv[1:] if argv is None else argv)]
    cli_evaluate()


if __name__ == "__main__":
    import importlib

    importlib.import_module("jbench.lmeval_backend").main()
