"""Tiny models for the quantization tests (shared by test_quantized / test_gguf / test_quantize).

Why not the default tiny model: it has hidden size 64, and the quantized kernels need more: gptqmodel's CPU int4
kernel needs in_features divisible by group_size (128), AWQ's clip search needs out_features divisible by 64, and
llama.cpp's K-quants need rows of 256. So: the tiny Llama's tokenizer (BPE sentencepiece, Llama-2 style) with a
hidden-256 Llama body, built deterministically and cached by content hash under $JBENCH_CACHE_DIR (or ~/.cache)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile

import pytest
from pathlib import Path

BUILD_VERSION = "3"

_SUBJECTS = ("猫", "犬", "先生", "子ども", "東京の人", "私の友達", "学生", "鳥")
_PLACES = ("公園", "学校", "図書館", "駅", "海", "山", "家", "店")
_ACTS = ("本を読みます", "ご飯を食べます", "歌を歌います", "走ります", "写真を撮ります", "寝ます")

#: a fixed Japanese corpus (tokenizer training, the short training run and GPTQ/AWQ calibration), independent of
#: jbench.tiny.default_corpus so that the measured deltas and the bounds set from them stay put.
CORPUS: list[str] = [
    text
    for i, s in enumerate(_SUBJECTS)
    for j, p in enumerate(_PLACES)
    for text in (f"{s}は{p}で{_ACTS[(i + j) % len(_ACTS)]}。",
                 f"質問：{s}はどこで{_ACTS[(i + j) % len(_ACTS)].removesuffix('ます')}ますか？\n答え：{p}")
]
HIDDEN, LAYERS, HEADS, KV_HEADS, FFN, INIT = 256, 2, 4, 2, 512, 0.02
#: a short training run so the model has real (peaked, structured) distributions, as a trained LM does: a random
#: init is either near-uniform (small init: every delta ~0) or hypersensitive (large init: 8-bit deltas ~0.2 nats).
TRAIN_STEPS, TRAIN_LR, TRAIN_BATCH, TRAIN_LEN = 60, 5e-3, 8, 32


def cache_root() -> Path:
    env = os.environ.get("JBENCH_CACHE_DIR")
    return (Path(env) if env else Path.home() / ".cache" / "jbench") / "test-quant"


def tiny_llama256(root: Path | None = None) -> Path:
    """A ~1 M-parameter Llama (hidden 256, 2 layers, GQA 4/2) with the tiny model's Japanese BPE tokenizer."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, LlamaConfig

    from jbench.tiny import build_tiny_model

    texts = CORPUS
    key = json.dumps({"v": BUILD_VERSION, "texts": texts, "tf": transformers.__version__,
                      "dims": [HIDDEN, LAYERS, HEADS, KV_HEADS, FFN, INIT],
                      "train": [TRAIN_STEPS, TRAIN_LR, TRAIN_BATCH, TRAIN_LEN]}, ensure_ascii=False, sort_keys=True)
    final = (root or cache_root()) / ("llama256-" + hashlib.sha256(key.encode()).hexdigest()[:12])
    if (final / ".complete").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".llama256-", dir=final.parent))
    try:
        build_tiny_model(tmp, arch="llama", texts=texts, seed=0)
        base = json.loads((tmp / "config.json").read_text())
        cfg = LlamaConfig(vocab_size=base["vocab_size"], hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                          num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, intermediate_size=FFN,
                          max_position_embeddings=2048, initializer_range=INIT, bos_token_id=base["bos_token_id"],
                          eos_token_id=base["eos_token_id"], pad_token_id=None, tie_word_embeddings=False)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        _train(model, tmp, texts)
        model.eval()
        for f in ("model.safetensors", "config.json", "generation_config.json"):
            (tmp / f).unlink(missing_ok=True)
        model.save_pretrained(tmp)
        (tmp / ".complete").write_text("ok\n")
        try:
            tmp.rename(final)
        except OSError:
            if not (final / ".complete").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _train(model, tok_dir: Path, texts: list[str]) -> None:
    """A few AdamW steps on the corpus (one long token stream cut into windows), seeded."""
    import random

    import torch

    from jbench.models.tokenizer import load_tokenizer

    tok = load_tokenizer(tok_dir, use_fast=False)
    stream: list[int] = []
    for t in texts:
        stream += tok.encode(t) + [int(tok.eos_token_id)]
    windows = [stream[i:i + TRAIN_LEN] for i in range(0, len(stream) - TRAIN_LEN, TRAIN_LEN // 2)]
    rng = random.Random(0)
    opt = torch.optim.AdamW(model.parameters(), lr=TRAIN_LR, weight_decay=0.0)
    model.train()
    for _ in range(TRAIN_STEPS):
        batch = torch.tensor(rng.sample(windows, min(TRAIN_BATCH, len(windows))))
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()


#: (context, continuation) pairs in the style of the Japanese tasks (no leading space on continuations).
LL_PAIRS = [
    ("質問：猫はどこで本を読みますか？\n答え：", "公園"),
    ("質問：猫はどこで本を読みますか？\n答え：", "学校"),
    ("質問：犬はどこでご飯を食べますか？\n答え：", "図書館"),
    ("質問：犬はどこでご飯を食べますか？\n答え：", "駅"),
    ("先生は学校で", "歌を歌います。"),
    ("私の友達は海で", "写真を撮ります。"),
    ("", "鳥は山で寝ます。"),
    ("学生は店で", "走ります。"),
]


# -- shared by test_quantize.py and test_quantized.py: the requests, the model and its fp32 reference scores -------

from jbench.models.base import LoglikelihoodRequest  # noqa: E402

REQS = [LoglikelihoodRequest(c, x) for c, x in LL_PAIRS]


@pytest.fixture(scope="module")
def src() -> Path:
    return tiny_llama256()


@pytest.fixture(scope="module")
def ref(src: Path) -> list[float]:
    from jbench.models.hf import HFScorer

    return HFScorer(src, use_fast=False).loglikelihood(REQS)
