"""Tiny stand-in models: deterministic, the right tokenizer style per architecture, loadable by transformers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from jbench.tiny import build_tiny_model, default_corpus, tiny_default_model


def _digests(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir()) if p.is_file()}


@pytest.mark.parametrize("arch", ["gpt_neox", "llama", "qwen2"])
def test_build_is_deterministic(tiny_models: dict[str, Path], tiny_test_texts: list[str], tmp_path: Path,
                                arch: str) -> None:
    texts = tiny_test_texts
    again = build_tiny_model(tmp_path / arch, arch=arch, texts=texts, vocab_size=400, seed=0)
    first, second = _digests(tiny_models[arch]), _digests(again)
    assert first == second
    assert "model.safetensors" in first
    other = build_tiny_model(tmp_path / f"{arch}-seed1", arch=arch, texts=texts, vocab_size=400, seed=1)
    assert _digests(other)["model.safetensors"] != first["model.safetensors"]


def test_tokenizer_files_per_style(tiny_models: dict[str, Path]) -> None:
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    neox, llama, qwen = tiny_models["gpt_neox"], tiny_models["llama"], tiny_models["qwen2"]
    cfg = json.loads((neox / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "T5Tokenizer" and cfg["extra_ids"] == 0 and cfg["use_fast"] is False
    proto = pb.ModelProto.FromString((neox / "spiece.model").read_bytes())
    assert proto.trainer_spec.model_type == pb.TrainerSpec.UNIGRAM and proto.trainer_spec.byte_fallback
    assert not proto.normalizer_spec.add_dummy_prefix and not proto.normalizer_spec.remove_extra_whitespaces
    sp = spm.SentencePieceProcessor(model_file=str(neox / "spiece.model"))
    assert sp.encode("a  b", out_type=str).count("▁") == 2  # rinna style keeps repeated spaces

    assert json.loads((llama / "tokenizer_config.json").read_text())["tokenizer_class"] == "LlamaTokenizer"
    proto = pb.ModelProto.FromString((llama / "tokenizer.model").read_bytes())
    assert proto.trainer_spec.model_type == pb.TrainerSpec.BPE and proto.normalizer_spec.add_dummy_prefix
    sp = spm.SentencePieceProcessor(model_file=str(llama / "tokenizer.model"))
    assert (sp.id_to_piece(sp.bos_id()), sp.id_to_piece(sp.eos_id())) == ("<s>", "</s>")

    assert (qwen / "tokenizer.json").is_file() and not list(qwen.glob("*.model"))


@pytest.mark.parametrize("arch", ["gpt_neox", "llama", "qwen2"])
def test_models_load_small_and_fast(tiny_models: dict[str, Path], arch: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_models[arch]))
    cfg = model.config
    assert cfg.model_type == arch and cfg.max_position_embeddings == 2048
    assert sum(p.numel() for p in model.parameters()) < 500_000
    ids = torch.randint(0, cfg.vocab_size, (1, 300))
    with torch.inference_mode():
        logits = model(ids).logits  # milliseconds on an idle CPU (not asserted: CI boxes are shared)
    assert logits.shape == (1, 300, cfg.vocab_size) and torch.isfinite(logits).all()


def test_vocab_grows_when_the_corpus_needs_more_characters(tmp_path: Path) -> None:
    """vocab_size is a target: a corpus with more distinct characters than it allows still builds."""
    texts = ["".join(chr(0x4E00 + (i * 7 + j) % 3000) for j in range(12)) for i in range(400)]
    d = build_tiny_model(tmp_path / "wide", arch="gpt_neox", texts=texts, vocab_size=300)
    assert json.loads((d / "config.json").read_text())["vocab_size"] > 300


def test_default_corpus_and_cached_default_model(tmp_path: Path) -> None:
    texts = default_corpus()
    assert texts and all(isinstance(t, str) and t for t in texts)
    first = tiny_default_model(tmp_path)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    again = tiny_default_model(tmp_path)
    assert again == first and (again / "model.safetensors").stat().st_mtime_ns == stamp  # built once
    assert (first / ".complete").is_file() and first.parent == tmp_path
    assert (first / "spiece.model").is_file()


def test_default_model_cache_dir_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JBENCH_CACHE_DIR", str(tmp_path))
    d = tiny_default_model()
    assert d.parent == tmp_path / "tiny"


def test_unknown_arch_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown tiny-model arch"):
        build_tiny_model(tmp_path, arch="mamba", texts=["a"])  # type: ignore[arg-type]
