"""The harness tokenizer must encode like the reference's slow (sentencepiece) tokenizer, not like transformers 5's
tokenizers-backed stand-in, and decode generation output (byte pieces included) back to text."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sentencepiece as spm

from jbench.errors import ModelError
from jbench.models.tokenizer import HFTokenizer, SentencePieceTokenizer, load_tokenizer

#: double spaces, a tab, newlines, emoji and a script the tiny vocabularies have never seen (byte fallback).
TRAP = "東京  は\t日本の首都です。\n改行\n\n  絵文字😀🎌 と გამარჯობა 世界  "
INST = "<s>[INST] 質問 </s><s>[INST] 答え"


def _sp(model_dir: Path) -> spm.SentencePieceProcessor:
    name = "spiece.model" if (model_dir / "spiece.model").exists() else "tokenizer.model"
    return spm.SentencePieceProcessor(model_file=str(model_dir / name))


@pytest.mark.parametrize("arch", ["gpt_neox", "llama"])
def test_slow_encode_equals_sentencepiece(tiny_models: dict[str, Path], arch: str) -> None:
    tok = load_tokenizer(tiny_models[arch], use_fast=False)
    sp = _sp(tiny_models[arch])
    assert isinstance(tok, SentencePieceTokenizer) and tok.kind == "sentencepiece"
    for text in (TRAP, "a  b", "\n", " ", "", "猫は公園で本を読みます。", "Hello world.  \t"):
        assert tok.encode(text) == sp.encode(text), repr(text)
    ids = tok.encode(TRAP)
    assert any(sp.is_byte(i) for i in ids), "the trap text must exercise byte fallback"


def test_fast_tokenizer_differs_on_trap_text(tiny_models: dict[str, Path]) -> None:
    """The reason the sentencepiece path exists: the fast tokenizer of a rinna-style model is not sentencepiece."""
    d = tiny_models["gpt_neox"]
    fast = load_tokenizer(d, use_fast=True)
    default = load_tokenizer(d)
    assert isinstance(fast, HFTokenizer) and fast.kind == "fast" and default.kind == "fast"
    assert fast.encode(TRAP) != _sp(d).encode(TRAP)
    assert fast.encode(TRAP) == default.encode(TRAP)


def test_use_fast_false_without_sentencepiece_file_uses_autotokenizer(tiny_models: dict[str, Path]) -> None:
    tok = load_tokenizer(tiny_models["qwen2"], use_fast=False)
    assert isinstance(tok, HFTokenizer)
    assert tok.bos_token_id is None and tok.eos_token_id is not None
    assert tok.decode(tok.encode(TRAP)) == TRAP  # byte-level BPE round-trips exactly


@pytest.mark.parametrize("arch", ["gpt_neox", "llama"])
def test_attributes(tiny_models: dict[str, Path], arch: str) -> None:
    tok = load_tokenizer(tiny_models[arch], use_fast=False)
    sp = _sp(tiny_models[arch])
    assert tok.eos_token_id == sp.piece_to_id("</s>") and tok.bos_token_id == sp.piece_to_id("<s>")
    assert tok.vocab_size == sp.get_piece_size() == len(tok)
    assert tok.name_or_path == str(tiny_models[arch])
    assert tok.bos_token_id not in tok.encode("猫") and tok.eos_token_id not in tok.encode("猫")  # never added


@pytest.mark.parametrize("arch", ["gpt_neox", "llama"])
def test_decode_turns_byte_pieces_back_into_text(tiny_models: dict[str, Path], arch: str) -> None:
    tok = load_tokenizer(tiny_models[arch], use_fast=False)
    sp = _sp(tiny_models[arch])
    text = "絵文字😀🎌 と გამარჯობა"
    out = tok.decode(tok.encode(text))
    assert "<0x" not in out and "😀🎌" in out and "გამარჯობა" in out
    expected = sp.decode(sp.encode(TRAP))
    # T5Tokenizer (rinna) strips the decoded text, LlamaTokenizer does not; neither leaves byte pieces.
    assert tok.decode(tok.encode(TRAP)) == (expected.strip() if arch == "gpt_neox" else expected)


def test_llama_special_tokens_in_text_map_to_their_ids(tiny_models: dict[str, Path]) -> None:
    """Llama-2 [INST] prompts carry literal <s>/</s>: split on them (no whitespace stripping for AddedToken dicts
    with lstrip/rstrip false), sentencepiece for the rest -- what SentencePieceBackend does too."""
    from transformers import SentencePieceBackend

    d = tiny_models["llama"]
    tok = load_tokenizer(d, use_fast=False)
    sp = _sp(d)
    bos, eos = tok.bos_token_id, tok.eos_token_id
    expected = [bos, *sp.encode("[INST] 質問 "), eos, bos, *sp.encode("[INST] 答え")]
    assert tok.encode(INST) == expected
    backend = SentencePieceBackend.from_pretrained(str(d), vocab_file=str(d / "tokenizer.model"))
    assert tok.encode(INST) == backend.encode(INST, add_special_tokens=False)
    assert tok.decode(tok.encode(INST)).count("</s>") == 1  # special tokens are kept in decoded text


def test_plain_string_specials_strip_whitespace_like_old_transformers(tiny_models: dict[str, Path]) -> None:
    """rinna's config names its specials as plain strings; transformers < 4.34 (the reference era) then stripped
    the whitespace on both sides of them. transformers 5's SentencePieceBackend no longer does."""
    from transformers import SentencePieceBackend

    d = tiny_models["gpt_neox"]
    tok = load_tokenizer(d, use_fast=False)
    sp = _sp(d)
    assert tok.encode("質問 </s>  答え") == [*sp.encode("質問"), tok.eos_token_id, *sp.encode("答え")]
    backend = SentencePieceBackend.from_pretrained(str(d), vocab_file=str(d / "spiece.model"))
    assert backend.encode("質問 </s>  答え", add_special_tokens=False) != tok.encode("質問 </s>  答え")
    assert tok.encode("a<unk>b") == [*sp.encode("a"), sp.unk_id(), *sp.encode("b")]


def test_llama_class_never_strips_its_named_specials(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """4.3x LlamaTokenizer wrapped plain-string bos/eos/unk/pad in AddedToken(lstrip=False, rstrip=False)."""
    d = tmp_path / "plain"
    shutil.copytree(tiny_models["llama"], d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg.update(bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    (d / "special_tokens_map.json").unlink()
    tok = load_tokenizer(d, use_fast=False)
    sp = _sp(d)
    assert tok.encode("質問 </s> 答え") == [*sp.encode("質問 "), tok.eos_token_id, *sp.encode(" 答え")]
    assert not tok.clean_up_tokenization_spaces


def test_t5_decode_rules(tiny_models: dict[str, Path]) -> None:
    """transformers 4.3x slow T5 decode: a space before a special token run, strip, clean_up_tokenization."""
    tok = load_tokenizer(tiny_models["gpt_neox"], use_fast=False)
    eos = tok.eos_token_id
    assert tok.decode([*tok.encode("答え"), eos, *tok.encode("次")]) == "答え</s>次"
    assert tok.decode([*tok.encode("答え"), eos, *tok.encode("次"), eos]) == "答え</s> 次</s>"
    assert tok.decode(tok.encode("Hello world .")) == "Hello world."


def test_non_legacy_config(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """``legacy: false`` (newer Llama configs): no dummy-prefix "▁" on a segment that follows a special token."""
    d = tmp_path / "nonlegacy"
    shutil.copytree(tiny_models["llama"], d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    (d / "tokenizer_config.json").write_text(json.dumps({**cfg, "legacy": False}))
    tok = load_tokenizer(d, use_fast=False)
    sp = _sp(d)
    assert tok.encode("猫は公園") == sp.encode("猫は公園")  # the first segment keeps its prefix
    pieces = sp.encode("猫は公園", out_type=str)
    assert pieces[0].startswith("▁")
    stripped = ([pieces[0][1:]] if len(pieces[0]) > 1 else []) + pieces[1:]
    assert tok.encode("<s>猫は公園") == [tok.bos_token_id, *[sp.piece_to_id(p) for p in stripped]]


def test_missing_path_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError):
        load_tokenizer(tmp_path / "nope", use_fast=False)
    with pytest.raises(ModelError):
        load_tokenizer(tmp_path / "nope")
