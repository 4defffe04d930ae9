"""Make quantized variants of a local HF model: GPTQ / AWQ checkpoints (gptqmodel) and GGUF files (llama.cpp).

Why this module exists: "original vs quantized" comparisons need quantized variants that are reproducible (fixed
seed, fixed calibration text, recorded settings) and that tokenize *exactly* like the original. Three traps shaped it:

* gptqmodel re-saves the tokenizer through transformers 5, which writes only ``tokenizer.json``: the sentencepiece
  ``tokenizer.model`` that ``use_fast=False`` needs is lost. We copy the original tokenizer files over the re-saved
  ones, so the quantized directory tokenizes identically to the original.
* gptqmodel drops calibration samples of <= 10 tokens (most JCommonsenseQA questions), and 7.6 ignores its own
  ``calibration_data_min_length`` argument; we pack consecutive samples (joined by a newline) into samples of at
  least :data:`CALIBRATION_PACK_TOKENS` tokens, so every text given is used.
* The GGUF converter lives only inside the llama-cpp-python sdist (and pins its own transformers/torch). For the
  Llama family the conversion is small, so we write the f32 GGUF ourselves with the ``gguf`` package's writer (the
  same tensor names, Q/K row permutation and vocabulary layout as ``convert_hf_to_gguf.py``) and leave every other
  type (Q8_0, Q4_K_M, ...) to llama.cpp's own quantizer, ``llama_cpp.llama_model_quantize``.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

from jbench.errors import BackendMissing, ModelError
from jbench.logs import captured_output, run_log

log = logging.getLogger(__name__)

Method = Literal["gptq", "awq", "gguf"]

QUANT_HINT = 'pip install "jbench[quant]"'
LLAMACPP_HINT = 'pip install "jbench[llamacpp]"  (compiles llama.cpp: 4-6 min)'

#: tokenizer files copied from the original into every quantized output, so that both tokenize identically.
TOKENIZER_FILES = ("tokenizer.model", "spiece.model", "sentencepiece.model", "sentencepiece.bpe.model", "spm.model",
                   "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt")

#: HF ``model_type`` -> llama.cpp architecture we can write (both use the Llama tensor layout).
GGUF_ARCHES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2"}

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


# ----------------------------------------------------------------------------------------------------------------
# GGUF
# ----------------------------------------------------------------------------------------------------------------


def gguf_ftype(name: str) -> int:
    """llama.cpp ``LLAMA_FTYPE_MOSTLY_<NAME>`` for a GGUF type name such as ``q8_0`` / ``q4_k_m`` / ``f16``."""
    llama_cpp = import_llama_cpp()
    attr = f"LLAMA_FTYPE_MOSTLY_{name.upper()}"
    if not hasattr(llama_cpp, attr):
        prefix = "LLAMA_FTYPE_MOSTLY_"
        known = sorted(a[len(prefix):].lower() for a in dir(llama_cpp) if a.startswith(prefix))
        raise ModelError(f"unknown GGUF type {name!r}", fix=f"choose f32 or one of: {', '.join(known)}")
    return int(getattr(llama_cpp, attr))


def import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as err:
        raise BackendMissing("llama-cpp-python is not installed (needed for GGUF quantization and evaluation)",
                             fix=LLAMACPP_HINT) from err
    return llama_cpp


def export_gguf(src: Path, out: Path, *, types: Sequence[str] = ("f32", "q8_0", "q4_k_m"),
                verify: bool = True) -> tuple[list[Path], float | None]:
    """Write ``<out>/<src.name>-<type>.gguf`` for each type; returns (paths in ``types`` order, the f32 file's max
    |logit difference| against HF when verified, else None)."""
    if not types:
        raise ModelError("no GGUF types asked for", fix='pass e.g. gguf_types=("f32", "q8_0", "q4_k_m")')
    others = [t for t in types if t != "f32"]
    ftypes = {t: gguf_ftype(t) for t in others}  # validate names (and llama-cpp-python presence) before any work
    out.mkdir(parents=True, exist_ok=True)
    stem = src.name or "model"
    f32 = out / f"{stem}-f32.gguf"
    write_gguf_f32(src, f32)
    max_diff = None
    if verify:
        try:
            max_diff = verify_gguf_f32(src, f32)
        except BackendMissing:
            log.warning("llama-cpp-python is not installed: the f32 GGUF was not checked against HF")
    paths = {"f32": f32}
    for t in others:
        p = out / f"{stem}-{t}.gguf"
        llama_quantize(f32, p, ftypes[t])
        paths[t] = p
    if "f32" not in types:
        f32.unlink()
    copy_tokenizer_files(src, out)
    if (src / "generation_config.json").is_file():  # the gguf scorer applies its repetition_penalty, as HF does
        shutil.copy2(src / "generation_config.json", out / "generation_config.json")
    return [paths[t] for t in types], max_diff


def llama_quantize(src: Path, dst: Path, ftype: int, *, nthread: int = 0) -> None:
    """llama.cpp's own quantizer (``llama_model_quantize``): the K-quant mixes and fallbacks are llama.cpp's."""
    llama_cpp = import_llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = nthread
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0 or not dst.is_file():
        raise ModelError(f"llama_model_quantize failed (return code {rc})", where=str(src))


def _hparam(cfg: Any, *names: str, default: Any = None) -> Any:
    for n in names:
        v = getattr(cfg, n, None)
        if v is not None:
            return v
    return default


def _rope_params(cfg: Any) -> dict[str, Any]:
    """transformers 5 moved rope settings into ``rope_parameters``; older configs use rope_theta / rope_scaling."""
    params = dict(getattr(cfg, "rope_parameters", None) or {})
    if "rope_theta" not in params and getattr(cfg, "rope_theta", None) is not None:
        params["rope_theta"] = cfg.rope_theta
    scaling = getattr(cfg, "rope_scaling", None)
    if isinstance(scaling, dict):
        params = {**scaling, **params}
        params.setdefault("rope_type", scaling.get("rope_type", scaling.get("type")))
    return params


def _permute_qk(w: Any, n_head: int) -> Any:
    """HF Llama stores Q/K rows for rotate-half rotary; llama.cpp's ``llama`` arch pairs adjacent dims
    (convert_hf_to_gguf's ``LlamaModel.permute``)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf_f32(src: Path, dst: Path) -> Path:
    """Write an f32 GGUF of a Llama-family (llama / mistral without sliding window / qwen2) HF model."""
    try:
        import gguf
    except ImportError as err:
        raise BackendMissing("the gguf package is not installed", fix=QUANT_HINT) from err
    import numpy as np
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(src)
    model_type = getattr(cfg, "model_type", "")
    arch_name = GGUF_ARCHES.get(model_type)
    if arch_name is None:
        raise ModelError(
            f"GGUF export supports Llama-family models only (llama, mistral, qwen2), not {model_type!r}",
            where=str(src),
            fix="evaluate this model through the gptq/awq/bnb/int8 variants instead (llama.cpp's own converter does "
                "not support e.g. GPT-NeoX with a sentencepiece-unigram tokenizer either)")
    if model_type == "mistral" and getattr(cfg, "sliding_window", None):
        raise ModelError("GGUF export of a sliding-window Mistral is not supported", where=str(src))
    rope = _rope_params(cfg)
    rope_type = str(rope.get("rope_type") or "default")
    if rope_type not in ("default", "linear"):
        raise ModelError(f"GGUF export does not handle rope_type={rope_type!r}", where=str(src),
                         fix="use llama.cpp's convert_hf_to_gguf.py for this model")
    n_layer = int(cfg.num_hidden_layers)
    n_head = int(cfg.num_attention_heads)
    n_kv = int(_hparam(cfg, "num_key_value_heads", default=n_head))
    hidden = int(cfg.hidden_size)
    head_dim = int(_hparam(cfg, "head_dim", default=hidden // n_head))
    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch_name)

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    state = model.state_dict()
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    name_map = gguf.get_tensor_name_map(arch, n_layer)

    dst.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(dst), arch_name)
    w.add_name(src.name)
    w.add_block_count(n_layer)
    w.add_context_length(int(_hparam(cfg, "max_position_embeddings", "n_ctx", default=2048)))
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(int(cfg.intermediate_size))
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(float(rope.get("rope_theta", 10000.0)))
    if rope_type == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(rope["factor"]))
    w.add_layer_norm_rms_eps(float(_hparam(cfg, "rms_norm_eps", default=1e-6)))
    w.add_vocab_size(int(cfg.vocab_size))
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    _add_vocab(w, gguf, src, int(cfg.vocab_size))

    for name, t in state.items():
        if name.endswith("rotary_emb.inv_freq"):
            continue
        if name == "lm_head.weight" and tied:
            continue  # llama.cpp falls back to token_embd for a missing output.weight
        new = name_map.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise ModelError(f"no GGUF tensor name for {name!r}", where=str(src))
        data = t.detach().to(torch.float32).cpu()
        if arch_name == "llama" and name.endswith(("q_proj.weight", "q_proj.bias")):
            data = _permute_qk(data, n_head)
        elif arch_name == "llama" and name.endswith(("k_proj.weight", "k_proj.bias")):
            data = _permute_qk(data, n_kv)
        w.add_tensor(new, np.ascontiguousarray(data.numpy()))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    del model, state
    return dst


def _add_vocab(w: Any, gguf: Any, src: Path, vocab_size: int) -> None:
    """Tokenizer metadata as convert_hf_to_gguf writes it: sentencepiece ``llama`` (tokens, scores, types) when a
    ``tokenizer.model`` exists, else byte-level BPE ``gpt2`` (tokens, types, merges) from ``tokenizer.json``."""
    sp_file = src / "tokenizer.model"
    cfg = _read_json(src / "tokenizer_config.json")
    decoder = {int(k): v for k, v in (cfg.get("added_tokens_decoder") or {}).items() if isinstance(v, dict)}
    if sp_file.is_file():
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(sp_file))
        tokens = [f"[PAD{i}]".encode() for i in range(vocab_size)]
        scores = [-10000.0] * vocab_size
        types = [gguf.TokenType.UNUSED] * vocab_size
        for i in range(min(sp.get_piece_size(), vocab_size)):
            tokens[i] = sp.id_to_piece(i).encode("utf-8")
            scores[i] = sp.get_score(i)
            types[i] = (gguf.TokenType.UNKNOWN if sp.is_unknown(i) else gguf.TokenType.CONTROL if sp.is_control(i)
                        else gguf.TokenType.UNUSED if sp.is_unused(i) else gguf.TokenType.BYTE if sp.is_byte(i)
                        else gguf.TokenType.NORMAL)
        for content, i in _read_json(src / "added_tokens.json").items():
            if int(i) < vocab_size:
                tokens[int(i)], scores[int(i)], types[int(i)] = content.encode(), -1000.0, gguf.TokenType.USER_DEFINED
        for i, v in decoder.items():
            if i < vocab_size:
                special = bool(v.get("special")) or _looks_special(v["content"])
                tokens[i] = (v["content"] if special else v["content"].replace("\u2581", " ")).encode()
                scores[i] = -1000.0
                types[i] = gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        gguf.SpecialVocab(src, n_vocab=len(tokens)).add_to_gguf(w, quiet=True)
        return
    tj = _read_json(src / "tokenizer.json")
    model = tj.get("model") or {}
    if model.get("type") != "BPE" or "ByteLevel" not in json.dumps(tj.get("pre_tokenizer") or tj.get("decoder")):
        raise ModelError("GGUF export needs a sentencepiece tokenizer.model or a byte-level BPE tokenizer.json",
                         where=str(src), fix="copy the original model's tokenizer.model into the model directory")
    vocab: dict[str, int] = dict(model.get("vocab") or {})
    added = {t["content"]: (int(t["id"]), bool(t.get("special"))) for t in tj.get("added_tokens") or []}
    rev = {i: s for s, i in vocab.items()}
    tokens_s: list[str] = []
    types = []
    for i in range(vocab_size):
        a = next(((c, sp) for c, (j, sp) in added.items() if j == i), None)
        if a is not None:
            tokens_s.append(a[0])
            types.append(gguf.TokenType.CONTROL if a[1] or _looks_special(a[0]) else gguf.TokenType.USER_DEFINED)
        elif i in rev:
            tokens_s.append(rev[i])
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens_s.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2" if w.arch == "qwen2" else "default")
    w.add_token_list(tokens_s)
    w.add_token_types(types)
    gguf.SpecialVocab(src, load_merges=True, n_vocab=len(tokens_s)).add_to_gguf(w, quiet=True)


def _looks_special(token: str) -> bool:
    return (token.startswith("<|") and token.endswith("|>")) or token in ("<pad>", "<mask>")


def verify_gguf_f32(src: Path, gguf_path: Path, *, n_tokens: int = 48, tol: float = 1e-3) -> float:
    """Max |logit difference| between HF (f32) and llama.cpp on the f32 GGUF over one probe sequence; raises when it
    exceeds ``tol`` times the logits' scale (a wrong permutation or tensor mapping gives differences of O(1))."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    llama_cpp = import_llama_cpp()
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    vocab = int(model.config.vocab_size)
    ids = [int(x) for x in np.random.default_rng(0).integers(3, vocab, size=n_tokens)]
    with torch.inference_mode():
        ref = model(torch.tensor([ids])).logits[0].double().numpy()
    del model
    # f32 KV cache: llama.cpp's default f16 cache alone moves logits by up to ~3e-2
    llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=max(64, n_tokens), logits_all=True, verbose=False,
                          n_threads=max(1, (os.cpu_count() or 2) // 2), type_k=llama_cpp.GGML_TYPE_F32,
                          type_v=llama_cpp.GGML_TYPE_F32)
    try:
        llm.eval(ids)
        got = np.asarray(llm.scores[: len(ids)], dtype=np.float64)
    finally:
        llm.close()
    diff = float(np.abs(got - ref).max())
    scale = float(np.abs(ref).max()) or 1.0
    log.info("GGUF f32 check: max |logit diff| vs HF = %.2e (logit scale %.2f)", diff, scale)
    if diff > tol * max(1.0, scale):
        raise ModelError(f"the f32 GGUF does not reproduce the HF model (max |logit diff| {diff:.3g})",
                         where=str(gguf_path), fix="report this model's config; its layout is not handled")
    return diff


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _sha256_texts(texts: Sequence[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for pkg in ("torch", "transformers", "gptqmodel", "gguf", "llama-cpp-python"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def default_out_dir(src: Path, method: str, bits: int = 4, group_size: int = 128) -> Path:
    """A conventional output location next to the source: ``<src>-gptq-4bit-128g`` / ``<src>-gguf``."""
    src = Path(src)
    suffix = "gguf" if method == "gguf" else f"{method}-{bits}bit-{group_size}g"
    return src.with_name(f"{src.name}-{suffix}")


__all__ = ["quantize", "load_calibration", "export_gguf", "write_gguf_f32", "llama_quantize", "verify_gguf_f32",
           "copy_tokenizer_files", "default_out_dir", "QuantizeRecord"]

