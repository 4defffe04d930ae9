"""Model presets (tasks/presets.yaml, jbench/presets.py): resolution, overrides, local paths, and that every preset
names prompt versions the task YAMLs define, including the card-format "youri-chat" version."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from jbench.presets import (
    PresetError,
    describe,
    load_presets,
    presets_table,
    resolve_preset,
)
from jbench.prompts import fewshot_context, render_doc
from jbench.tasks import all_tasks, resolve_task

# ---------------------------------------------------------------------------------------------------------------
# The file itself
# ---------------------------------------------------------------------------------------------------------------


def test_presets_load_with_one_fallback_last() -> None:
    presets = load_presets()
    assert presets[-1].fallback and presets[-1].name == "fallback"
    assert sum(p.fallback for p in presets) == 1
    assert len({p.name for p in presets}) == len(presets)
    for p in presets:
        assert p.why and p.card.startswith("https://")
        assert p.tokenizer.add_special_tokens is False     # JP-stable never adds BOS (spec §1.4)


def _prompted_families() -> dict[tuple[str, str], set[str]]:
    """(family, task version) -> prompt versions, for families that have prompt versions (not xwinograd_ja)."""
    out: dict[tuple[str, str], set[str]] = {}
    for t in all_tasks().values():
        if t.prompt_version:
            out.setdefault((t.family, t.version), set()).add(t.prompt_version)
    return out


@pytest.mark.parametrize("preset", load_presets(), ids=lambda p: p.name)
def test_preset_prompt_versions_exist_for_every_family(preset) -> None:
    families = _prompted_families()
    assert {f for f, _ in families} >= {"jcommonsenseqa", "jnli", "marc_ja", "jsquad", "jaqket_v2"}
    for pv in filter(None, [preset.prompt_version, preset.card_prompt_version]):
        for (family, version), pvs in families.items():
            assert pv in pvs, f"{preset.name}: prompt {pv} missing for {family}-{version}"
        for family in {f for f, _ in families}:
            assert resolve_task(family, pv).prompt_version == pv


# ---------------------------------------------------------------------------------------------------------------
# Resolution by hub id
# ---------------------------------------------------------------------------------------------------------------

EXPECTED = [
    # model id, preset, prompt version, use_fast, trust_remote_code, dtype
    ("rinna/japanese-gpt-neox-3.6b-instruction-sft", "rinna-neox-3.6b-instruction-sft", "0.4", False, False, "float32"),
    ("rinna/japanese-gpt-neox-3.6b-instruction-sft-v2", "rinna-neox-3.6b-instruction-sft", "0.4", False, False,
     "float32"),
    ("rinna/japanese-gpt-neox-3.6b-instruction-ppo", "rinna-neox-3.6b-instruction-ppo", "0.4", False, False, "auto"),
    ("rinna/bilingual-gpt-neox-4b-instruction-sft", "rinna-bilingual-4b-instruction", "0.5", False, False, "auto"),
    ("rinna/bilingual-gpt-neox-4b-instruction-ppo", "rinna-bilingual-4b-instruction", "0.5", False, False, "auto"),
    ("rinna/japanese-gpt-neox-3.6b", "rinna-neox-3.6b", "0.2", False, False, "float32"),
    ("rinna/bilingual-gpt-neox-4b", "rinna-bilingual-4b", "0.2", False, False, "auto"),
    ("rinna/youri-7b-chat", "rinna-youri-7b-chat", "0.5", True, False, "auto"),
    ("rinna/youri-7b-chat-gptq", "rinna-youri-7b-chat", "0.5", True, False, "auto"),
    ("elyza/ELYZA-japanese-Llama-2-7b-instruct", "elyza-llama2-7b-instruct", "0.6", True, False, "auto"),
    ("elyza/ELYZA-japanese-Llama-2-7b-fast-instruct", "elyza-llama2-7b-instruct", "0.6", True, False, "auto"),
    ("dahara1/ELYZA-japanese-Llama-2-7b-fast-instruct-GPTQ", "elyza-llama2-7b-instruct", "0.6", True, False, "auto"),
    ("dahara1/ELYZA-japanese-Llama-2-7b-instruct-AWQ", "elyza-llama2-7b-instruct", "0.6", True, False, "auto"),
    ("rinna/nekomata-7b-instruction", "rinna-nekomata-instruction", "0.3", None, True, "auto"),
]


@pytest.mark.parametrize("model_id,name,pv,use_fast,trc,dtype", EXPECTED, ids=[e[0] for e in EXPECTED])
def test_exact_ids(model_id: str, name: str, pv: str, use_fast: bool | None, trc: bool, dtype: str) -> None:
    res = resolve_preset(model_id)
    assert (res.name, res.how, res.matched, res.via) == (name, "exact", model_id, "model id")
    assert (res.prompt_version, res.use_fast, res.trust_remote_code, res.dtype) == (pv, use_fast, trc, dtype)
    assert res.add_special_tokens is False and not res.is_fallback and not res.overridden


def test_card_prompt_versions_are_explicit_alternatives() -> None:
    assert resolve_preset("rinna/youri-7b-chat").preset.card_prompt_version == "youri-chat"
    elyza = resolve_preset("dahara1/ELYZA-japanese-Llama-2-7b-fast-instruct-GPTQ")
    assert (elyza.prompt_version, elyza.preset.card_prompt_version) == ("0.6", "0.3")
    assert "[card format: prompt 0.3]" in describe(elyza)


def test_exact_match_ignores_case() -> None:
    res = resolve_preset("Rinna/Japanese-GPT-NeoX-3.6B")
    assert (res.name, res.how) == ("rinna-neox-3.6b", "exact")


@pytest.mark.parametrize("model_id,name", [
    ("someone/bilingual-gpt-neox-4b-instruction-sft-bnb-4bit", "rinna-bilingual-4b-instruction"),
    ("someone/bilingual-gpt-neox-4b-instruction-ppo-4bit", "rinna-bilingual-4b-instruction"),
    ("TheBloke/ELYZA-japanese-Llama-2-7B-instruct-GPTQ", "elyza-llama2-7b-instruct"),
    ("mmnga/ELYZA-japanese-Llama-2-7b-fast-instruct-GPTQ-calib-ja-2k", "elyza-llama2-7b-instruct"),
    ("mmnga/rinna-youri-7b-chat-gguf", "rinna-youri-7b-chat"),
    ("someone/japanese-gpt-neox-3.6b-instruction-ppo-8bit", "rinna-neox-3.6b-instruction-ppo"),
    ("someone/japanese-gpt-neox-3.6b-instruction-sft-v2-gptq", "rinna-neox-3.6b-instruction-sft"),
    ("someone/japanese-gpt-neox-3.6b-gptq", "rinna-neox-3.6b"),
    ("someone/bilingual-gpt-neox-4b-bnb-4bit", "rinna-bilingual-4b"),
])
def test_patterns_catch_repacks(model_id: str, name: str) -> None:
    res = resolve_preset(model_id)
    assert (res.name, res.how) == (name, "pattern")
    assert res.matched in res.preset.patterns
    assert f"(pattern {res.matched})" in describe(res)


def test_fallback_is_flagged_and_never_silent(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="jbench.presets"):
        res = resolve_preset("acme/unknown-ja-7b")
    assert res.is_fallback and res.how == "fallback" and res.matched is None
    assert (res.prompt_version, res.use_fast, res.dtype) == ("0.3", None, "float32")
    line = describe(res)
    assert line.startswith("FALLBACK preset for 'acme/unknown-ja-7b'") and "--prompt-version" in line
    assert any("FALLBACK" in r.getMessage() for r in caplog.records)


def test_fallback_warning_can_be_left_to_the_caller(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="jbench.presets"):
        assert resolve_preset("acme/unknown-ja-7b", warn=False).is_fallback
        resolve_preset("rinna/youri-7b-chat")
    assert not caplog.records


def test_exact_line_format() -> None:
    line = describe(resolve_preset("rinna/japanese-gpt-neox-3.6b-instruction-sft"))
    assert line.startswith("preset rinna-neox-3.6b-instruction-sft (exact id): prompt 0.4, use_fast=False, "
                           "dtype float32 — harness.sh")


# ---------------------------------------------------------------------------------------------------------------
# Overrides
# ---------------------------------------------------------------------------------------------------------------


def test_overrides_win_and_are_recorded() -> None:
    res = resolve_preset("rinna/japanese-gpt-neox-3.6b-instruction-ppo",
                         overrides={"prompt_version": "0.3", "use_fast": True, "dtype": "bf16",
                                    "trust_remote_code": None})
    assert (res.prompt_version, res.use_fast, res.dtype, res.trust_remote_code) == ("0.3", True, "bfloat16", False)
    assert res.overridden == {"prompt_version": ("0.4", "0.3"), "use_fast": (False, True),
                              "dtype": ("auto", "bfloat16")}
    assert res.variant == "bf16"
    assert "[overridden: prompt_version 0.4→0.3, use_fast False→True, dtype auto→bfloat16]" in describe(res)
    record = res.to_record()
    assert record["overridden"]["prompt_version"] == ["0.4", "0.3"]
    json.dumps(record, ensure_ascii=False)


def test_override_equal_to_preset_is_not_a_change() -> None:
    res = resolve_preset("rinna/japanese-gpt-neox-3.6b", overrides={"prompt_version": "0.2", "use_fast": False})
    assert res.overridden == {} and "overridden" not in describe(res)


def test_overrides_apply_to_the_fallback_too() -> None:
    res = resolve_preset("acme/unknown", overrides={"prompt_version": "0.6"}, warn=False)
    assert res.is_fallback and res.prompt_version == "0.6"


@pytest.mark.parametrize("overrides", [{"batch_size": 4}, {"dtype": "int3"}])
def test_bad_overrides_are_refused(overrides: dict) -> None:
    with pytest.raises(PresetError):
        resolve_preset("rinna/youri-7b-chat", overrides=overrides)


# ---------------------------------------------------------------------------------------------------------------
# Local paths
# ---------------------------------------------------------------------------------------------------------------


def _model_dir(path: Path, config: dict | None = None) -> Path:
    path.mkdir(parents=True)
    if config is not None:
        (path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return path


def test_local_path_matches_config_name_or_path(tmp_path: Path) -> None:
    d = _model_dir(tmp_path / "my-4bit-export", {"_name_or_path": "rinna/bilingual-gpt-neox-4b-instruction-sft",
                                                 "torch_dtype": "float16"})
    res = resolve_preset(str(d))
    assert (res.name, res.how, res.via) == ("rinna-bilingual-4b-instruction", "exact", "config.json _name_or_path")
    assert res.checkpoint_dtype == "float16" and res.effective_dtype == "float16" and res.variant == "fp16"
    assert "via config.json _name_or_path 'rinna/bilingual-gpt-neox-4b-instruction-sft'" in describe(res)
    assert "dtype auto (float16)" in describe(res)


def test_config_name_or_path_beats_the_folder_name(tmp_path: Path) -> None:
    d = _model_dir(tmp_path / "japanese-gpt-neox-3.6b", {"_name_or_path": "rinna/youri-7b-chat"})
    assert resolve_preset(str(d)).name == "rinna-youri-7b-chat"


def test_config_name_or_path_that_is_itself_a_path(tmp_path: Path) -> None:
    d = _model_dir(tmp_path / "out", {"_name_or_path": "/scratch/ckpt/ELYZA-japanese-Llama-2-7b-fast-instruct"})
    res = resolve_preset(str(d))
    assert res.name == "elyza-llama2-7b-instruct" and res.via.startswith("config.json _name_or_path")


def test_local_path_without_config_uses_its_last_components(tmp_path: Path) -> None:
    res = resolve_preset(str(_model_dir(tmp_path / "rinna" / "japanese-gpt-neox-3.6b")))
    assert (res.name, res.how, res.via, res.candidate) == ("rinna-neox-3.6b", "exact", "path",
                                                           "rinna/japanese-gpt-neox-3.6b")
    res = resolve_preset(str(_model_dir(tmp_path / "ckpts" / "japanese-gpt-neox-3.6b-instruction-sft")))
    assert (res.name, res.how, res.via) == ("rinna-neox-3.6b-instruction-sft", "exact", "path name")
    res = resolve_preset(str(_model_dir(tmp_path / "q" / "youri-7b-chat-awq-4bit")))
    assert (res.name, res.how) == ("rinna-youri-7b-chat", "pattern")


def test_hub_cache_snapshot_folder(tmp_path: Path) -> None:
    d = _model_dir(tmp_path / "hub" / "models--rinna--japanese-gpt-neox-3.6b-instruction-ppo" / "snapshots" / "abc123")
    res = resolve_preset(str(d))
    assert (res.name, res.via) == ("rinna-neox-3.6b-instruction-ppo", "hub cache folder")


def test_unknown_local_path_falls_back(tmp_path: Path) -> None:
    res = resolve_preset(str(_model_dir(tmp_path / "mystery", {"_name_or_path": "/tmp/tmpabc"})), warn=False)
    assert res.is_fallback and res.checkpoint_dtype is None and res.variant == "fp32"


# ---------------------------------------------------------------------------------------------------------------
# The youri-chat prompt version renders the card's format
# ---------------------------------------------------------------------------------------------------------------

JCQA_SHOT = {"q_id": 1, "question": "電車に乗るときに使うものは？", "choice0": "切符", "choice1": "傘",
             "choice2": "鍋", "choice3": "枕", "choice4": "靴", "label": 0}
JCQA_DOC = {"q_id": 2, "question": "雨の日にさすものは？", "choice0": "箸", "choice1": "傘", "choice2": "本",
            "choice3": "皿", "choice4": "机", "label": 1}

# Hand-written from the rinna/youri-7b-chat card ("How to use"): 設定 = instruction, ユーザー = input,
# システム = output, one "speaker: text" per turn joined by "\n", ending with "\nシステム: ".
JCQA_EXPECTED = (
    "設定: 与えられた選択肢の中から、最適な答えを選んでください。\n"
    "ユーザー: 質問：電車に乗るときに使うものは？\n選択肢：\n- 切符\n- 傘\n- 鍋\n- 枕\n- 靴\n"
    "システム: 切符\n"
    "ユーザー: 質問：雨の日にさすものは？\n選択肢：\n- 箸\n- 傘\n- 本\n- 皿\n- 机\n"
    "システム: "
)


def _card_prompt(context: list[dict[str, str]]) -> str:
    """The card's own assembly, transcribed from its example code."""
    prompt = "\n".join(f"{uttr['speaker']}: {uttr['text']}" for uttr in context)
    return prompt + "\n" + "システム: "


def test_youri_chat_renders_the_card_format_jcqa() -> None:
    task = resolve_task("jcommonsenseqa", "youri-chat")
    assert task.name == "jcommonsenseqa-1.1-youri-chat"
    shot, doc = render_doc(task, JCQA_SHOT), render_doc(task, JCQA_DOC)
    ctx = fewshot_context(task, doc.text, [shot])
    assert ctx == JCQA_EXPECTED
    assert doc.choices == ["箸", "傘", "本", "皿", "机"] and doc.gold == 1
    options = "\n".join(f"- {c}" for c in ("切符", "傘", "鍋", "枕", "靴"))
    assert ctx == _card_prompt([
        {"speaker": "設定", "text": "与えられた選択肢の中から、最適な答えを選んでください。"},
        {"speaker": "ユーザー", "text": f"質問：電車に乗るときに使うものは？\n選択肢：\n{options}"},
        {"speaker": "システム", "text": "切符"},
        {"speaker": "ユーザー", "text": "質問：雨の日にさすものは？\n選択肢：\n- 箸\n- 傘\n- 本\n- 皿\n- 机"},
    ])
    # 0-shot: the 設定 turn is still there (the description is included even at 0-shot, spec §1.3)
    assert fewshot_context(task, doc.text, []) == (
        "設定: 与えられた選択肢の中から、最適な答えを選んでください。\n"
        "ユーザー: 質問：雨の日にさすものは？\n選択肢：\n- 箸\n- 傘\n- 本\n- 皿\n- 机\nシステム: ")


def test_youri_chat_renders_jsquad_with_newline_stop() -> None:
    task = resolve_task("jsquad", "youri-chat")
    doc = {"id": "a1", "title": "東京", "context": "東京 [SEP] 東京は日本の首都である。", "question": "日本の首都は？",
           "answers": {"text": ["東京"], "answer_start": [0]}}
    r = render_doc(task, doc)
    assert fewshot_context(task, r.text, []) == (
        "設定: 与えられた文脈から、質問に対する答えを抜き出してください。\n"
        "ユーザー: 文脈：東京は日本の首都である。\n質問：日本の首都は？\nシステム: ")
    assert task.until == "\n" and r.golds == ["東京"]
    titled = render_doc(resolve_task("jsquad-1.2-youri-chat"), doc)
    assert titled.text == "ユーザー: 文脈：東京\n東京は日本の首都である。\n質問：日本の首都は？\nシステム: "


def test_youri_chat_jnli_lists_the_version_labels() -> None:
    from jbench.prompts import render_description

    assert render_description(resolve_task("jnli-1.1-youri-chat")).endswith(
        "選択してください：\nentailment\ncontradiction\nneutral\n")
    assert render_description(resolve_task("jnli-1.3-youri-chat")).endswith("選択してください：\n含意\n矛盾\n中立\n")


# ---------------------------------------------------------------------------------------------------------------
# Table and file validation
# ---------------------------------------------------------------------------------------------------------------


def test_presets_table_has_a_row_per_preset_with_card_links() -> None:
    table = presets_table()
    lines = table.splitlines()
    presets = load_presets()
    assert lines[0].startswith("| Model | Prompt |") and len(lines) == 2 + len(presets)
    for line in lines:     # escaped pipes inside regexes must not add columns
        assert line.replace("\\|", "").count("|") == 6
    for p in presets[:-1]:
        assert f"]({p.card})" in table
    assert "fallback" in lines[-1]
    assert "0.6 (card: 0.3)" in table and "0.5 (card: youri-chat)" in table


@pytest.mark.parametrize("body,message", [
    ("- name: a\n  match: [x/y]\n  tokenizer: {}\n  dtype: auto\n  prompt_version: '0.3'\n  why: w\n  card: c\n",
     "fallback"),
    ("- name: fallback\n  fallback: true\n  match: []\n  tokenizer: {}\n  dtype: auto\n  prompt_version: '0.3'\n"
     "  why: w\n  card: c\n  colour: red\n", "unknown key"),
    ("- name: fallback\n  fallback: true\n  match: []\n  tokenizer: {add_special_tokens: true}\n  dtype: auto\n"
     "  prompt_version: '0.3'\n  why: w\n  card: c\n", "add_special_tokens"),
])
def test_invalid_preset_files_are_refused(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "presets.yaml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(PresetError, match=message):
        load_presets(path)
