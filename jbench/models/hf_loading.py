"""Loading a Hugging Face causal LM for :class:`jbench.models.hf.HFScorer`, and reading what the scorer needs to know
about it (dtype names, context length, forward signature, generation config).

Why a module of its own: loading is where a user's mistakes surface (a missing path, an encoder checkpoint, an
unknown dtype), so it owns the clear :class:`~jbench.errors.ModelError` messages; the scorer itself then only deals
with a loaded model. Other modules (quantized variants, ``jbench quantize``) reuse :func:`parse_dtype` and
:func:`load_causal_lm` through :mod:`jbench.models.hf`.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

from jbench.errors import ModelError
from jbench.model_files import non_causal_kind

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")

_DTYPES: dict[str, Any] = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "auto": "auto",
}

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
    kwargs = dict(model_kwargs or {})  # --model-args (attn_implementation, device_map, max_memory, subfolder, ...)
    where_kwargs = {k: kwargs[k] for k in ("subfolder", "cache_dir", "token", "local_files_only") if k in kwargs}
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, revision=revision,
                                            **where_kwargs)
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
    except TypeError as err:  # an argument the model class does not take (from --model-args)
        if not kwargs:
            raise
        raise ModelError(f"cannot load model {path!r} with --model-args {', '.join(kwargs)}: {err}", where=path,
                         fix="pass only from_pretrained / model-config arguments in --model-args") from err
    if "device_map" not in kwargs:
        m = m.to(device)
    m.eval()
    return m


def _refuse_non_causal(config: Any, path: str) -> None:
    """Refuse encoders and encoder-decoders before loading weights (see :func:`jbench.model_files.non_causal_kind`)."""
    model_type = str(getattr(config, "model_type", "") or "")
    kind = non_causal_kind(config.to_dict() if hasattr(config, "to_dict") else dict(vars(config)))
    if kind:
        raise ModelError(f"{path!r} is not a causal language model: it is {kind} model ({type(config).__name__})",
                         where=f"{path} (config.json model_type={model_type!r})",
                         fix="jbench scores decoder-only (causal) LMs only; pass a GPT/Llama/Qwen-style checkpoint")


def _is_hf_tokenizer(tok: Any) -> bool:
    """An HF tokenizer object (needs ``add_special_tokens=False``), as opposed to a harness tokenizer."""
    try:
        from transformers import PreTrainedTokenizerBase
    except ImportError:  # pragma: no cover
        return False
    return isinstance(tok, PreTrainedTokenizerBase)


def _accepts_kwarg(model: Any, name: str) -> bool:
    """Whether ``model.forward`` declares ``name`` or takes ``**kwargs``."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _warn_generation_config(gen_cfg: Any) -> None:
    """Warn about generation-config fields that the reference's ``model.generate`` applied and jbench does not."""
    if gen_cfg is None:
        return
    for name in _UNSUPPORTED_GEN_FIELDS:
        value = getattr(gen_cfg, name, None)
        if value not in (None, 0, [], {}):
            log.warning("generation_config.%s=%r is set; the reference's model.generate applied it, jbench's "
                        "greedy loop does not", name, value)
