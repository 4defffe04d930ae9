"""HF -> GGUF export: an f32 GGUF written with the ``gguf`` package, the other types by llama.cpp's quantizer.

Why this module exists: it is the GGUF half of ``jbench quantize`` (:func:`jbench.quantize.quantize` with
``method="gguf"``), apart from the GPTQ / AWQ half because it shares nothing with it but the tokenizer-file copy.
The GGUF converter lives only inside the llama-cpp-python sdist (and pins its own transformers/torch). For the
Llama family the conversion is small, so we write the f32 GGUF ourselves with the ``gguf`` package's writer (the
same tensor names, Q/K row permutation and vocabulary layout as ``convert_hf_to_gguf.py``) and leave every other
type (Q8_0, Q4_K_M, ...) to llama.cpp's own quantizer, ``llama_cpp.llama_model_quantize``; :func:`verify_gguf_f32`
checks the f32 file's logits against HF through llama.cpp.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from jbench.errors import BackendMissing, ModelError
from jbench.model_files import copy_tokenizer_files, read_json_object
from jbench.models.gguf import import_llama_cpp
from jbench.models.quantized import QUANT_HINT

log = logging.getLogger(__name__)

#: HF ``model_type`` -> llama.cpp architecture we can write (both use the Llama tensor layout).
GGUF_ARCHES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2"}


def gguf_ftype(name: str) -> int:
    """llama.cpp ``LLAMA_FTYPE_MOSTLY_<NAME>`` for a GGUF type name such as ``q8_0`` / ``q4_k_m`` / ``f16``."""
    llama_cpp = import_llama_cpp()
    attr = f"LLAMA_FTYPE_MOSTLY_{name.upper()}"
    if not hasattr(llama_cpp, attr):
        prefix = "LLAMA_FTYPE_MOSTLY_"
        known = sorted(a[len(prefix):].lower() for a in dir(llama_cpp) if a.startswith(prefix))
        raise ModelError(f"unknown GGUF type {name!r}", fix=f"choose f32 or one of: {', '.join(known)}")
    return int(getattr(llama_cpp, attr))


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
    cfg = read_json_object(src / "tokenizer_config.json")
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
        for content, i in read_json_object(src / "added_tokens.json").items():
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
    tj = read_json_object(src / "tokenizer.json")
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


__all__ = ["GGUF_ARCHES", "export_gguf", "gguf_ftype", "llama_quantize", "verify_gguf_f32", "write_gguf_f32"]
