"""Make quantized variants of a local HF model: GPTQ / AWQ checkpoints (gptqmodel) and GGUF files (llama.cpp).

Why this module exists: "original vs quantized" comparisons need quantized variants that are reproducible (fixed
seed, fixed calibration text, recorded settings) and that tokenize *exactly* like the original. Two gptqmodel
traps shaped it:

* gptqmodel re-saves the tokenizer through transformers 5, which writes only ``tokenizer.json``: the sentencepiece
  ``tokenizer.model`` that ``use_fast=False`` needs is lost. We copy the original tokenizer files over the re-saved
  ones, so the quantized directory tokenizes identically to the original.
* gptqmodel drops calibration samples of <= 10 tokens (most JCommonsenseQA questions), and 7.6 ignores its own
  ``calibration_data_min_length`` argument; we pack consecutive samples (joined by a newline) into samples of at
  least :data:`CALIBRATION_PACK_TOKENS` tokens, so every text given is used.

The GGUF half (HF -> f32 GGUF with the ``gguf`` package, other types by llama.cpp's quantizer) lives in
:mod:`jbench.gguf_export`, the tokenizer-file copy in :mod:`jbench.model_files`; their names stay importable from
here.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

from jbench.errors import ModelError
from jbench.gguf_export import (GGUF_ARCHES, export_gguf, gguf_ftype, llama_quantize, verify_gguf_f32,
                                write_gguf_f32)
from jbench.logs import captured_output, run_log
from jbench.model_files import TOKENIZER_FILES, copy_tokenizer_files
from jbench.models.gguf import LLAMACPP_HINT, import_llama_cpp
from jbench.models.quantized import QUANT_HINT

log = logging.getLogger(__name__)

Method = Literal["gptq", "awq", "gguf"]

#: calibration texts are packed into samples of at least this many tokens (gptqmodel drops samples of <= 10).
CALIBRATION_PACK_TOKENS = 64


@dataclass
class QuantizeRecord:
    """What was done, written next to the output as ``jbench_quantize.json`` (provenance for results)."""

    method: str
    source: str
    outputs: list[str]
    bits: int | None = None
    group_size: int | None = None
    desc_act: bool | None = None
    n_samples: int | None = None
    dtype: str | None = None
    seed: int = 0
    calibration_sha256: str | None = None
    gguf_types: list[str] = field(default_factory=list)
    gguf_f32_max_abs_logit_diff: float | None = None
    seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------------
# public entry point
# ----------------------------------------------------------------------------------------------------------------


def quantize(src: Path, out: Path, *, method: Method, bits: int = 4, group_size: int = 128, desc_act: bool = False,
             calibration: Sequence[str] | Path | None = None, n_samples: int = 64, seed: int = 0,
             gguf_types: Sequence[str] = ("f32", "q8_0", "q4_k_m"), verify: bool = True,
             dtype: str = "float32") -> list[Path]:
    """Quantize the local HF model ``src`` into ``out`` and return the paths made.

    * ``gptq`` / ``awq``: ``out`` is a model directory (loadable by the ``gptq`` / ``awq`` variants); returns
      ``[out]``. Calibration: a list of texts, or a text file with one sample per line; at most ``n_samples`` are
      used (a seeded sample when more are given). ``None`` uses the tiny model's default Japanese corpus.
      ``dtype`` is the precision of everything left unquantized (embeddings, lm_head, norms, and the compute):
      gptqmodel's own choice on a bf16-capable CPU is bfloat16, which would add bf16 rounding of those tensors to
      the measured "cost of GPTQ"; float32 isolates the weight quantization (``float16`` mimics published
      GPTQ checkpoints). AWQ's kernel has no float32 path: float32 becomes float16 there.
    * ``gguf``: ``out`` is a directory receiving ``<src name>-<type>.gguf`` for each of ``gguf_types`` (in order)
      plus the original tokenizer files; ``f32`` is written directly, the others by llama.cpp's quantizer from it.
      ``verify`` compares the f32 file's logits with the HF model's through llama.cpp (when installed).
    """
    src, out = Path(src), Path(out)
    if not (src / "config.json").is_file():
        raise ModelError("the model to quantize must be a local HF model directory with config.json", where=str(src))
    t0 = time.perf_counter()
    if method in ("gptq", "awq"):
        texts = load_calibration(calibration, n_samples=n_samples, seed=seed)
        paths = _quantize_gptqmodel(src, out, method=method, bits=bits, group_size=group_size, desc_act=desc_act,
                                    texts=texts, seed=seed, dtype=dtype)
        record = QuantizeRecord(method=method, source=str(src), outputs=[str(p) for p in paths], bits=bits,
                                dtype="float16" if method == "awq" and dtype in ("float32", "fp32") else dtype,
                                group_size=group_size, desc_act=desc_act if method == "gptq" else None,
                                n_samples=len(texts), seed=seed, calibration_sha256=_sha256_texts(texts))
    elif method == "gguf":
        types = [t.lower() for t in gguf_types]
        paths, max_diff = export_gguf(src, out, types=types, verify=verify)
        record = QuantizeRecord(method=method, source=str(src), outputs=[str(p) for p in paths], seed=seed,
                                gguf_types=types, gguf_f32_max_abs_logit_diff=max_diff)
    else:
        raise ModelError(f"unknown quantization method {method!r}", fix="choose gptq, awq or gguf")
    record.seconds = round(time.perf_counter() - t0, 2)
    record.versions = _versions()
    out.mkdir(parents=True, exist_ok=True)
    (out / "jbench_quantize.json").write_text(json.dumps(asdict(record), ensure_ascii=False, indent=2) + "\n",
                                              encoding="utf-8")
    return paths


def load_calibration(calibration: Sequence[str] | Path | str | None, *, n_samples: int = 64,
                     seed: int = 0) -> list[str]:
    """Calibration texts: a list as given, or a file with one sample per line; blank ones dropped; when there are
    more than ``n_samples``, a ``random.Random(seed)`` sample keeping the original order (reproducible)."""
    if calibration is None:
        from jbench.tiny import default_corpus

        log.warning("no calibration text given: using the default tiny-model corpus (JCommonsenseQA train text "
                    "when available); pass task train texts for meaningful GPTQ/AWQ quality")
        texts = default_corpus()
    elif isinstance(calibration, (str, os.PathLike)):
        p = Path(calibration)
        if not p.is_file():
            raise ModelError("calibration file not found", where=str(p),
                             fix="pass a text file with one calibration sample per line, or a list of strings")
        texts = p.read_text(encoding="utf-8").splitlines()
    else:
        texts = [str(t) for t in calibration]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ModelError("the calibration set is empty", fix="pass at least one non-blank calibration text")
    if n_samples > 0 and len(texts) > n_samples:
        keep = sorted(random.Random(seed).sample(range(len(texts)), n_samples))
        texts = [texts[i] for i in keep]
    return texts


# ----------------------------------------------------------------------------------------------------------------
# GPTQ / AWQ through gptqmodel
# ----------------------------------------------------------------------------------------------------------------


def _quantize_gptqmodel(src: Path, out: Path, *, method: str, bits: int, group_size: int, desc_act: bool,
                        texts: list[str], seed: int, dtype: str = "float32") -> list[Path]:
    from jbench.models.quantized import gptqmodel_env, import_gptqmodel

    if bits not in (2, 3, 4, 8):
        raise ModelError(f"{method} supports bits 2, 3, 4 or 8, not {bits}")
    check_layer_shapes(src, method, group_size)
    _prepare_out_dir(out)
    gptqmodel_env()
    # gptqmodel prints a ~400-line banner and progress on stdout (logbar, print, C): stdout carries jbench's
    # output only, so all of it goes to <out>/log.txt (shown on stderr with --verbose)
    with run_log(out), captured_output("gptqmodel"):
        _run_gptqmodel(import_gptqmodel(method), src, out, method=method, bits=bits, group_size=group_size,
                       desc_act=desc_act, texts=texts, seed=seed, dtype=dtype)
    copy_tokenizer_files(src, out)
    return [out]


def _run_gptqmodel(gm: Any, src: Path, out: Path, *, method: str, bits: int, group_size: int, desc_act: bool,
                   texts: list[str], seed: int, dtype: str) -> None:
    """Load, quantize (seeded) and save with gptqmodel."""
    import numpy as np
    import torch

    _redirect_gptqmodel_logs(out / "logs")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # offload_to_disk=False: with it, GPT-NeoX saving fails ("Offloaded tensor 'lm_head.weight' not found"), and tiny
    # or CPU-sized models gain nothing from it.
    if method == "gptq":
        qcfg = gm.GPTQConfig(bits=bits, group_size=group_size, desc_act=desc_act, offload_to_disk=False)
        kwargs: dict[str, Any] = {}
    else:
        qcfg = gm.AWQConfig(bits=bits, group_size=group_size, offload_to_disk=False)
        # without an explicit backend gptqmodel 7.6 refuses on CPU ("AWQ: CUDA is not available")
        kwargs = {"backend": gm.BACKEND.AWQ_TORCH} if not torch.cuda.is_available() else {}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        from jbench.models.hf import parse_dtype

        torch_dtype = parse_dtype(dtype)
        if method == "awq" and torch_dtype == torch.float32:
            # gptqmodel's AWQ torch kernel supports only float16/bfloat16; float16 (AWQ's usual checkpoint dtype) keeps
            # 3 more mantissa bits than bfloat16 for the tensors left unquantized
            log.info("AWQ quantizes in float16 (gptqmodel's AWQ kernel has no float32 path)")
            torch_dtype = torch.float16
        model = gm.GPTQModel.load(str(src), qcfg, device=device,
                                  **({"dtype": torch_dtype} if isinstance(torch_dtype, torch.dtype) else {}))
        model.quantize(pack_calibration(texts, src), batch_size=1, **kwargs)
        model.save(str(out))
    except (ValueError, RuntimeError, OSError, KeyError, NotImplementedError, AssertionError) as err:
        raise ModelError(f"{method.upper()} quantization with gptqmodel failed: {err}", where=str(src),
                         fix="check that the architecture is supported by gptqmodel; on CPU set "
                             "GPTQMODEL_CPU_WORKERS to the number of cores") from err


def _redirect_gptqmodel_logs(target: Path) -> None:
    """gptqmodel 7.6 writes per-run logs to ``./logs`` (relative to the working directory, i.e. into whatever
    checkout runs it); keep them with the output instead."""
    try:
        from gptqmodel.looper import loop_processor
    except ImportError:
        return
    if hasattr(loop_processor, "_PROJECT_LOG_DIR"):
        loop_processor._PROJECT_LOG_DIR = target


def _prepare_out_dir(out: Path) -> None:
    """An output directory must be new, empty, or a previous ``jbench quantize`` output (then it is replaced)."""
    if out.is_file():
        raise ModelError("the output path is a file", where=str(out), fix="pass a directory")
    if out.is_dir() and any(out.iterdir()):
        # only a log (and gptqmodel's logs/) left: an earlier attempt of ours that failed
        ours = (out / "jbench_quantize.json").is_file() or {p.name for p in out.iterdir()} <= {"log.txt", "logs"}
        if not ours:
            raise ModelError("the output directory is not empty and was not made by jbench quantize", where=str(out),
                             fix="pass a new or empty directory")
        shutil.rmtree(out)


def check_layer_shapes(src: Path, method: str, group_size: int) -> None:
    """Fail early (before a minutes-long run) on shapes the kernels cannot handle: gptqmodel's CPU int4 kernel needs
    every linear layer's in_features divisible by ``group_size`` (otherwise quantizing succeeds and *inference*
    fails), and its AWQ clip search needs out_features divisible by 64."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(src)
    cfg = cfg.get_text_config(decoder=True) if hasattr(cfg, "get_text_config") else cfg
    hidden = int(getattr(cfg, "hidden_size", 0) or 0)
    heads = int(getattr(cfg, "num_attention_heads", 0) or 0)
    if not hidden or not heads:
        return
    kv = int(getattr(cfg, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(cfg, "head_dim", None) or hidden // heads)
    ffn = int(getattr(cfg, "intermediate_size", None) or 4 * hidden)
    ins = {"hidden_size": hidden, "intermediate_size": ffn, "heads x head_dim": heads * head_dim}
    if group_size > 0:
        bad = {k: v for k, v in ins.items() if v % group_size}
        if bad:
            ok = [g for g in (128, 64, 32) if all(v % g == 0 for v in ins.values())]
            raise ModelError(f"group_size={group_size} does not divide the layer widths {bad}", where=str(src),
                             fix=f"use group_size {ok[0] if ok else -1}" + (" (or -1: per channel)" if ok else ""))
    if method == "awq":
        outs = {"hidden_size": hidden, "intermediate_size": ffn, "heads x head_dim": heads * head_dim,
                "kv_heads x head_dim": kv * head_dim}
        bad = {k: v for k, v in outs.items() if v % 64}
        if bad:
            raise ModelError(f"AWQ (gptqmodel) needs layer output widths divisible by 64, not {bad}",
                             where=str(src), fix="use GPTQ for this model")


def pack_calibration(texts: Sequence[str], src: Path, min_tokens: int = CALIBRATION_PACK_TOKENS) -> list[str]:
    """Join consecutive texts with a newline until each sample has at least ``min_tokens`` tokens (the last one may
    be shorter; it is merged into its predecessor when that leaves it above gptqmodel's 10-token floor)."""
    from jbench.models.tokenizer import load_tokenizer

    tok = load_tokenizer(src, use_fast=None)
    packs: list[str] = []
    cur: list[str] = []
    n = 0
    for t in texts:
        cur.append(t)
        n += len(tok.encode(t)) + 1
        if n >= min_tokens:
            packs.append("\n".join(cur))
            cur, n = [], 0
    if cur:
        if packs and n <= 10:
            packs[-1] = packs[-1] + "\n" + "\n".join(cur)
        else:
            packs.append("\n".join(cur))
    return packs


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------


def _sha256_texts(texts: Sequence[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()


def _versions() -> dict[str, str]:
    from jbench.provenance import library_versions

    return library_versions(("torch", "transformers", "gptqmodel", "gguf", "llama-cpp-python"))


def default_out_dir(src: Path, method: str, bits: int = 4, group_size: int = 128) -> Path:
    """A conventional output location next to the source: ``<src>-gptq-4bit-128g`` / ``<src>-gguf``."""
    src = Path(src)
    suffix = "gguf" if method == "gguf" else f"{method}-{bits}bit-{group_size}g"
    return src.with_name(f"{src.name}-{suffix}")


# the GGUF half (jbench.gguf_export), the model-file helpers and the install hints stay importable from here
__all__ = ["quantize", "load_calibration", "export_gguf", "write_gguf_f32", "llama_quantize", "verify_gguf_f32",
           "copy_tokenizer_files", "default_out_dir", "QuantizeRecord", "GGUF_ARCHES", "LLAMACPP_HINT", "QUANT_HINT",
           "TOKENIZER_FILES", "gguf_ftype", "import_llama_cpp"]

