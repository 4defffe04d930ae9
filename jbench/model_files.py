"""Files of a local HF model directory: reading its JSON configs and copying its tokenizer files.

Why this module exists: the tokenizer loader, the quantized-checkpoint loader, ``jbench quantize`` and the GGUF
exporter all read small JSON files next to a model (``tokenizer_config.json``, ``quantize_config.json``, ...) with
the same rules, and both quantizers copy the original tokenizer files into their output. One copy of each, kept
below every module that uses it (it imports nothing from jbench), so no import cycle can form through it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

__all__ = ["TOKENIZER_FILES", "WEIGHT_SUFFIXES", "checkpoint_disk_bytes", "copy_tokenizer_files", "non_causal_kind",
           "read_json_object"]

#: tokenizer files copied from the original into every quantized output, so that both tokenize identically.
TOKENIZER_FILES = ("tokenizer.model", "spiece.model", "sentencepiece.model", "sentencepiece.bpe.model", "spm.model",
                   "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt")


def read_json_object(path: Path, *, on_error: Callable[[Path, Exception], Exception] | None = None
                     ) -> dict[str, Any]:
    """The JSON object in ``path``; ``{}`` when the file is absent or holds something other than an object.

    A file that cannot be read or parsed gives ``{}`` too, unless ``on_error`` is given: then the exception it
    builds from (path, the OSError / JSONDecodeError) is raised, chained to the original one."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        if on_error is None:
            return {}
        raise on_error(path, err) from err
    return data if isinstance(data, dict) else {}


def copy_tokenizer_files(src: Path, out: Path) -> list[str]:
    """Copy the original tokenizer files into ``out`` (overwriting re-saved ones); returns the names copied."""
    out.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in TOKENIZER_FILES:
        f = src / name
        if f.is_file():
            shutil.copy2(f, out / name)
            copied.append(name)
    return copied


def non_causal_kind(config: dict[str, Any]) -> str | None:
    """"an encoder (masked LM)" / "an encoder-decoder" for a config that is not a decoder-only LM, else None.

    Why refuse them: transformers maps some of them to a causal-LM head (``BertLMHeadModel``, ``BartForCausalLM``)
    that loads and scores without error, but with bidirectional attention or half a model, so every number would be
    meaningless. A config whose ``architectures`` name a ``*ForCausalLM`` is decided without importing
    transformers (seconds), so the validation step stays fast."""
    if config.get("is_encoder_decoder"):
        return "an encoder-decoder"
    archs = config.get("architectures") or []
    if isinstance(archs, list) and any(str(a).endswith("ForCausalLM") for a in archs):
        return None
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES as masked
    except ImportError:  # pragma: no cover - very old/new transformers
        masked = {}
    if str(config.get("model_type") or "") in masked and not config.get("is_decoder"):
        return "an encoder (masked LM)"
    return None


#: files that hold weights (what "size on disk" counts; configs and tokenizer files are noise beside them)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


def checkpoint_disk_bytes(model_path: str | None, revision: str | None = None) -> int | None:
    """The checkpoint's real size on disk: the sum of its weight files (a ``.gguf`` file: that file).

    ``model_path`` is a local directory or file, or a Hub id already in the local Hugging Face cache (then the
    cached snapshot is measured; nothing is downloaded). None when the weights cannot be found. An on-the-fly
    variant (int8, bnb4, ...) loads the original's files, so it has the original's size on disk."""
    if not model_path:
        return None
    path = Path(model_path)
    if not path.exists():
        path = _cached_snapshot(model_path, revision) or path
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        return None
    sizes = [f.stat().st_size for f in path.iterdir() if f.suffix in WEIGHT_SUFFIXES and f.is_file()]
    return sum(sizes) if sizes else None


def _cached_snapshot(repo_id: str, revision: str | None) -> Path | None:
    """The local snapshot directory of a Hub model in the Hugging Face cache, or None (no download)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - not a valid repo id, no cache: the size is simply unknown
        return None
    return Path(found).parent if isinstance(found, str) else None
