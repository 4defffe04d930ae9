"""Deterministic tiny stand-in models (no hub access): a tokenizer trained on given texts + a random-init model.

Why: CI and tests need real HF model directories with the same tokenizer *styles* as the reference runs (rinna
GPT-NeoX + unigram sentencepiece, Llama-2 + BPE sentencepiece, Qwen2 + byte-level BPE) that build in seconds and are
byte-identical from run to run, so results and caches can be compared by hash.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal, Sequence

Arch = Literal["gpt_neox", "llama", "qwen2"]

#: bump when the builder's output changes, so cached default models are rebuilt.
BUILDER_VERSION = "1"

#: model sizes: a forward over 300 tokens takes milliseconds on a laptop CPU.
_HIDDEN, _LAYERS, _HEADS, _KV_HEADS, _FFN = 64, 2, 4, 2, 256
_MAX_POS = 2048
#: a larger init range than HF's 0.02 so the random model's distributions are peaked (greedy output and argmax tests
#: are then far from ties).
_INIT_RANGE = 0.2


def _train_sentencepiece(texts: Sequence[str], *, model_type: str, vocab_size: int, seed: int, rinna: bool) -> bytes:
    """Train a sentencepiece model deterministically (one thread, no sampling); returns the serialized model."""
    import sentencepiece as spm

    spm.set_random_generator_seed(seed)
    common: dict[str, Any] = dict(
        model_type=model_type, byte_fallback=True, character_coverage=0.9995, hard_vocab_limit=False,
        num_threads=1, input_sentence_size=0, shuffle_input_sentence=False, minloglevel=2,
        max_sentence_length=1 << 16, split_digits=not rinna,
    )
    if rinna:  # rinna: unigram, no dummy prefix, whitespace kept, nmt_nfkc (newlines become "▁")
        common.update(add_dummy_prefix=False, remove_extra_whitespaces=False, normalization_rule_name="nmt_nfkc",
                      pad_id=0, unk_id=1, bos_id=2, eos_id=3, pad_piece="[PAD]")
    else:  # Llama-2: BPE, dummy prefix, identity normalisation, no pad
        common.update(add_dummy_prefix=True, remove_extra_whitespaces=False, normalization_rule_name="identity",
                      allow_whitespace_only_pieces=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    sentences = [t for t in texts if t.strip()]
    if not sentences:
        raise ValueError("build_tiny_model needs at least one non-blank text")
    size = vocab_size
    for _ in range(3):
        buf = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=buf, vocab_size=size, **common)
            return buf.getvalue()
        except RuntimeError as err:  # the corpus needs more characters than vocab_size allows: grow deterministically
            m = re.search(r"Vocabulary size is smaller than required_chars\. \d+ vs (\d+)", str(err))
            if not m:
                raise
            size = (int(m.group(1)) + 64 + 63) // 64 * 64
    raise RuntimeError("sentencepiece training did not converge on a vocabulary size")


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _added(content: str) -> dict[str, Any]:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False}


def _sp_tokenizer_files(out: Path, arch: Arch, texts: Sequence[str], vocab_size: int, seed: int) -> tuple[int, dict[str, int]]:
    """Write the sentencepiece model + config files; return (vocab size, special ids)."""
    import sentencepiece as spm

    rinna = arch == "gpt_neox"
    proto = _train_sentencepiece(texts, model_type="unigram" if rinna else "bpe", vocab_size=vocab_size, seed=seed,
                                 rinna=rinna)
    sp = spm.SentencePieceProcessor(model_proto=proto)
    if rinna:  # rinna/japanese-gpt-neox style: T5Tokenizer over spiece.model, plain-string specials
        (out / "spiece.model").write_bytes(proto)
        cfg = {"tokenizer_class": "T5Tokenizer", "extra_ids": 0, "additional_special_tokens": [],
               "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "[PAD]",
               "do_lower_case": False, "use_fast": False, "model_max_length": _MAX_POS}
        _write_json(out / "special_tokens_map.json",
                    {k: cfg[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")})
    else:  # Llama-2 style: LlamaTokenizer over tokenizer.model, AddedToken specials, legacy
        (out / "tokenizer.model").write_bytes(proto)
        cfg = {"tokenizer_class": "LlamaTokenizer", "bos_token": _added("<s>"), "eos_token": _added("</s>"),
               "unk_token": _added("<unk>"), "pad_token": None, "legacy": True, "add_bos_token": True,
               "add_eos_token": False, "clean_up_tokenization_spaces": False, "model_max_length": _MAX_POS}
        _write_json(out / "special_tokens_map.json", {k: cfg[k] for k in ("bos_token", "eos_token", "unk_token")})
    _write_json(out / "tokenizer_config.json", cfg)
    ids = {"bos": sp.bos_id(), "eos": sp.eos_id(), "pad": sp.pad_id()}
    return sp.get_piece_size(), ids


def _bytelevel_tokenizer_files(out: Path, texts: Sequence[str], vocab_size: int) -> tuple[int, dict[str, int]]:
    """Qwen2 style: byte-level BPE trained with ``tokenizers``; ``<|endoftext|>`` is EOS (and pad), no BOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer=trainer)
    tok.save(str(out / "tokenizer.json"))
    eos = tok.token_to_id("<|endoftext|>")
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
           "bos_token": None, "unk_token": None, "clean_up_tokenization_spaces": False, "model_max_length": _MAX_POS,
           "added_tokens_decoder": {str(eos): {**_added("<|endoftext|>"), "special": True}}}
    _write_json(out / "tokenizer_config.json", cfg)
    return tok.get_vocab_size(), {"bos": -1, "eos": eos, "pad": eos}


#: chat templates of the chat stand-ins (``build_tiny_model(chat_template=True)``), one per way a template treats the
#: system turn: Llama-2's (folded into the first user turn; BOS written by the template), Qwen2's ChatML (its own
#: turn, with a default when absent; needs the <|im_start|>/<|im_end|> special tokens) and a Gemma-like one on the
#: rinna layout that refuses a system turn (raise_exception), as lm-eval's fallback must handle.
CHAT_TEMPLATES: dict[str, str] = {
    "llama": (
        "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
        "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
        "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if loop.index0 == 0 and system_message != false %}"
        "{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}"
        "{% else %}{% set content = message['content'] %}{% endif %}"
        "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}"
        "{% endfor %}"),
    "qwen2": (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"),
    "gpt_neox": (
        "{% for message in messages %}{% if message['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "{{ ('ユーザー' if message['role'] == 'user' else 'システム') + ': ' + message['content'] + '\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ 'システム: ' }}{% endif %}"),
}


def _add_chat_template(out: Path, arch: Arch, vocab: int, ids: dict[str, int]) -> tuple[int, dict[str, int]]:
    """Give the tokenizer its arch's :data:`CHAT_TEMPLATES` entry (Qwen2: plus the ChatML special tokens, with
    <|im_end|> as EOS as in Qwen2-Instruct); returns the new (vocab size, special ids)."""
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["chat_template"] = CHAT_TEMPLATES[arch]
    if arch == "qwen2":
        from tokenizers import AddedToken, Tokenizer

        tok = Tokenizer.from_file(str(out / "tokenizer.json"))
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<|im_start|>", "<|im_end|>")])
        tok.save(str(out / "tokenizer.json"))
        for t in ("<|im_start|>", "<|im_end|>"):
            cfg["added_tokens_decoder"][str(tok.token_to_id(t))] = {**_added(t), "special": True}
        cfg["eos_token"] = "<|im_end|>"
        vocab, ids = tok.get_vocab_size(), {**ids, "eos": tok.token_to_id("<|im_end|>")}
    _write_json(cfg_path, cfg)
    return vocab, ids


def _model_config(arch: Arch, vocab: int, ids: dict[str, int], head_dim: int = _HIDDEN // _HEADS) -> Any:
    """A small config of the given architecture (rotary everywhere, 2048 positions). ``head_dim`` other than the
    default 16 widens the model to two heads of that size (vLLM's CPU attention needs head_dim >= 32)."""
    from transformers import GPTNeoXConfig, LlamaConfig, Qwen2Config

    bos = ids["bos"] if ids["bos"] >= 0 else None
    pad = ids["pad"] if ids["pad"] >= 0 else None
    heads, kv_heads = (_HEADS, _KV_HEADS) if head_dim == _HIDDEN // _HEADS else (2, 1)
    common = dict(vocab_size=vocab, hidden_size=heads * head_dim, num_hidden_layers=_LAYERS,
                  num_attention_heads=heads, intermediate_size=_FFN, max_position_embeddings=_MAX_POS,
                  initializer_range=_INIT_RANGE, bos_token_id=bos, eos_token_id=ids["eos"], pad_token_id=pad)
    if arch == "gpt_neox":
        return GPTNeoXConfig(**common, use_parallel_residual=False, tie_word_embeddings=False)
    if arch == "llama":
        return LlamaConfig(**common, num_key_value_heads=kv_heads, tie_word_embeddings=False)
    if arch == "qwen2":
        return Qwen2Config(**common, num_key_value_heads=kv_heads, tie_word_embeddings=True)
    raise ValueError(f"unknown tiny-model arch {arch!r}; expected gpt_neox, llama or qwen2")


def build_tiny_model(out_dir: Path, *, arch: Arch = "gpt_neox", texts: Sequence[str], vocab_size: int = 1000,
                     seed: int = 0, head_dim: int = _HIDDEN // _HEADS, chat_template: bool = False) -> Path:
    """Train a tokenizer on ``texts`` and save a random-init ``arch`` model with it into ``out_dir``
    (``head_dim=64``: the vLLM stand-ins, 2 heads of 64).

    Deterministic: the same arguments give byte-identical files. ``vocab_size`` is a target: sentencepiece may
    stop below it on a small corpus, and it is raised when the corpus has more distinct characters than it allows."""
    import torch
    from transformers import AutoModelForCausalLM

    if arch not in ("gpt_neox", "llama", "qwen2"):
        raise ValueError(f"unknown tiny-model arch {arch!r}; expected gpt_neox, llama or qwen2")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if arch == "qwen2":
        vocab, ids = _bytelevel_tokenizer_files(out, texts, vocab_size)
    else:
        vocab, ids = _sp_tokenizer_files(out, arch, texts, vocab_size, seed)
    if chat_template:  # the chat stand-ins: a real template of the arch's family (see CHAT_TEMPLATES)
        vocab, ids = _add_chat_template(out, arch, vocab, ids)
    config = _model_config(arch, vocab, ids, head_dim)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.eval()
    model.save_pretrained(out)
    return out


# ----------------------------------------------------------------------------------------------------------------
# the cached default model
# ----------------------------------------------------------------------------------------------------------------

_FALLBACK_SUBJECTS = ("猫", "犬", "先生", "子ども", "東京の人", "私の友達", "学生", "鳥")
_FALLBACK_PLACES = ("公園", "学校", "図書館", "駅", "海", "山", "家", "店")
_FALLBACK_ACTS = ("本を読みます", "ご飯を食べます", "歌を歌います", "走ります", "写真を撮ります", "寝ます")


def _fallback_corpus() -> list[str]:
    """A small template corpus so the default model can always be built (no data files present)."""
    out = []
    for i, s in enumerate(_FALLBACK_SUBJECTS):
        for j, p in enumerate(_FALLBACK_PLACES):
            a = _FALLBACK_ACTS[(i + j) % len(_FALLBACK_ACTS)]
            out.append(f"{s}は{p}で{a}。")
            out.append(f"質問：{s}はどこで{a}か？\n答え：{p}")
    return out


def _jcqa_texts(path: Path, limit: int) -> list[str]:
    texts: list[str] = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            d = json.loads(line)
            texts.append(d["question"])
            texts.extend(str(d[f"choice{i}"]) for i in range(5) if f"choice{i}" in d)
            if len(texts) >= limit:
                break
    return texts


def _strings(value: Any) -> list[str]:
    """Every string inside a document (nested dicts/lists), in field order."""
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, dict):
        return [t for v in value.values() for t in _strings(v)]
    if isinstance(value, list):
        return [t for v in value for t in _strings(v)]
    return []


def default_corpus(limit: int = 3000) -> list[str]:
    """Texts for the embedded tiny model: every text field of the bundled sample (``jbench/sample``), in a fixed
    order. Only bundled files are read, so the model is the same on every machine whatever the data dir holds."""
    from jbench.data import DATASETS, load_split, sample_data_dir

    texts: list[str] = []
    for name in sorted(DATASETS):
        for split in ("train", "validation"):
            try:
                docs = load_split(name, split, sample_data_dir()).docs
            except Exception:  # noqa: BLE001 - a dataset without this split in the sample
                continue
            for doc in docs:
                texts += [t for k, v in doc.items() if k not in ("id", "qid", "review_id") for t in _strings(v)]
    return texts[:limit] or _fallback_corpus()


def _default_cache_root() -> Path:
    env = os.environ.get("JBENCH_CACHE_DIR")
    return Path(env) / "tiny" if env else Path.home() / ".cache" / "jbench" / "tiny"


def tiny_default_model(cache_dir: Path | None = None, *, arch: Arch = "gpt_neox", vocab_size: int = 2000,
                       seed: int = 0) -> Path:
    """Build (once) and return the default tiny model, cached by a content hash of everything that shapes it."""
    import transformers

    texts = default_corpus()
    key = json.dumps({"v": BUILDER_VERSION, "arch": arch, "vocab": vocab_size, "seed": seed, "texts": texts,
                      "transformers": transformers.__version__}, ensure_ascii=False, sort_keys=True)
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir is not None else _default_cache_root()
    final = root / digest
    if (final / ".complete").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    if final.exists():  # a half-written copy from an interrupted build
        shutil.rmtree(final, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=root))
    try:
        build_tiny_model(tmp, arch=arch, texts=texts, vocab_size=vocab_size, seed=seed)
        (tmp / ".complete").write_text(digest + "\n")
        try:
            tmp.rename(final)
        except OSError:  # another process won the race; use its copy
            if not (final / ".complete").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
