"""--apply-chat-template / --system-instruction / --fewshot-as-multiturn (jbench.chat), on chat stand-ins built with
real templates of three kinds: Llama-2 (system folded into the first user turn, BOS written by the template,
sentencepiece path), Qwen2 ChatML (special tokens, its own system turn) and a Gemma-like one that refuses a system
turn. The rendering is checked byte for byte, against lm-eval 0.4.13's own message builders, and down to token ids."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from jbench.data import sample_data_dir

SAMPLE = str(sample_data_dir())
DESCRIPTION_03 = "以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。要求を適切に満たす応答を書きなさい。\n\n"

JCQA_QWEN2 = (
    "<|im_start|>system\n" + DESCRIPTION_03 + "<|im_end|>\n"
    "<|im_start|>user\n### 指示:\n与えられた選択肢の中から、最適な答えを選んでください。出力は以下から選択してください：\n"
    "- 電柱\n- 自動車\n- 一輪車\n- 徒歩\n- ホース\n\n### 入力:\n運転する遠くに行けるものは？\n\n### 応答:\n<|im_end|>\n"
    "<|im_start|>assistant\n自動車<|im_end|>\n"
    "<|im_start|>user\n### 指示:\n与えられた選択肢の中から、最適な答えを選んでください。出力は以下から選択してください：\n"
    "- 妨害運転\n- 悲しい\n- かさぶたができる\n- 危険運転\n- 交通違反\n\n### 入力:\nスピードを超過して警察に捕まることといえば？\n\n"
    "### 応答:\n<|im_end|>\n<|im_start|>assistant\n")

JSQUAD_LLAMA = (
    "<s>[INST] <<SYS>>\nあなたは誠実なアシスタントです。\n\n" + DESCRIPTION_03 + "\n<</SYS>>\n\n"
    "### 指示:\n与えられた文脈から、質問に対する答えを抜き出してください。\n\n### 入力:\n"
    "文脈：味噌汁は、だしに味噌を溶かし、豆腐やわかめなどの具を入れた汁物である。味噌は沸騰させると香りが飛ぶため、"
    "火を止める直前に加えるのがよいとされる。地域によって好まれる味噌は異なり、東海地方では豆味噌がよく使われる。\n"
    "質問：味噌汁はだしに何を溶かした汁物か。\n\n### 応答: [/INST] 味噌 </s>"
    "<s>[INST] ### 指示:\n与えられた文脈から、質問に対する答えを抜き出してください。\n\n### 入力:\n"
    "文脈：冬の間、シベリアから中国大陸にかけての広範囲を冷たく乾燥したシベリア気団が覆っている。"
    "シベリア気団はしばしば南下して寒波をもたらし、日本の日本海側に大雪を降らせるが、チベット高原では高い山脈が邪魔して"
    "気団がそれ以上南下できない。そのチベット高原の南側、インド-フィリピンにかけての上空を亜熱帯ジェット気流が流れる。\n"
    "質問：冬の間、シベリアから中国大陸にかけての広範囲を覆う冷たく乾燥した気団は?\n\n### 応答: [/INST]")


@pytest.fixture(scope="module")
def chat_models(tmp_path_factory: pytest.TempPathFactory, tiny_test_texts: list[str]) -> dict[str, Path]:
    """arch -> a tiny stand-in whose tokenizer has its family's chat template (jbench.tiny.CHAT_TEMPLATES)."""
    from jbench.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("chat-models")
    return {arch: build_tiny_model(root / arch, arch=arch, texts=tiny_test_texts, vocab_size=400, seed=0,
                                   chat_template=True) for arch in ("llama", "qwen2", "gpt_neox")}


def _segment_ids(tok: Any, text: str, specials: dict[str, int]) -> list[int]:
    """What the ids must be: each special-token string one id, every text between them encoded on its own."""
    pattern = "(" + "|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)) + ")"
    ids: list[int] = []
    for piece in re.split(pattern, text):
        if piece in specials:
            ids.append(specials[piece])
        elif piece:
            ids += tok.encode(piece)
    return ids


def test_jcqa_request_through_the_qwen2_template(chat_models: dict[str, Path]) -> None:
    from jbench import api
    from jbench.models.base import model_input
    from jbench.models.tokenizer import load_tokenizer

    inst = api.prompts("jcommonsenseqa-1.1-0.3", num_fewshot=1, limit=1, model=str(chat_models["qwen2"]),
                       data_dir=SAMPLE, apply_chat_template=True)[0]
    assert inst.task == "jcommonsenseqa-1.1-0.3+chat"
    assert inst.context == JCQA_QWEN2
    assert inst.continuations == ["妨害運転", "悲しい", "かさぶたができる", "危険運転", "交通違反"]  # no delimiter
    tok = load_tokenizer(chat_models["qwen2"])
    start, end = tok.tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    ids = tok.encode(inst.context)
    assert ids == _segment_ids(tok, inst.context, {"<|im_start|>": start, "<|im_end|>": end})
    assert ids.count(start) == 5 and ids.count(end) == 4 and ids[0] == start
    # the continuation is scored right after the opened assistant turn: "<|im_start|>assistant\n" ends the context
    tail = [start] + tok.encode("assistant\n")
    assert ids[-len(tail):] == tail
    cont = tok.encode(inst.continuations[0])
    inp, n = model_input(ids, cont, 2048)
    assert inp == ids + cont[:-1] and n == len(cont)


def test_jsquad_request_through_the_llama2_template_on_the_sentencepiece_path(chat_models: dict[str, Path]) -> None:
    from jbench import api
    from jbench.models.tokenizer import SentencePieceTokenizer, load_tokenizer

    model = str(chat_models["llama"])
    inst = api.prompts("jsquad-1.1-0.3", num_fewshot=1, limit=1, model=model, use_fast=False, data_dir=SAMPLE,
                       apply_chat_template=True, system_instruction="あなたは誠実なアシスタントです。")[0]
    assert inst.task == "jsquad-1.1-0.3+chat"
    assert inst.context == JSQUAD_LLAMA
    assert inst.golds == ["シベリア気団"] * 3 and inst.until == "\n"
    tok = load_tokenizer(model, use_fast=False)
    assert isinstance(tok, SentencePieceTokenizer)
    ids = tok.encode(inst.context)
    assert ids == _segment_ids(tok, inst.context, {"<s>": tok.bos_token_id, "</s>": tok.eos_token_id})
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 2 and ids.count(tok.eos_token_id) == 1
    assert inst.max_gen_tokens == len(tok.encode("シベリア気団"))
    # the fast tokenizer (template read by transformers, not from the folder) renders the very same text
    fast = api.prompts("jsquad-1.1-0.3", num_fewshot=1, limit=1, model=model, use_fast=True, data_dir=SAMPLE,
                       apply_chat_template=True, system_instruction="あなたは誠実なアシスタントです。")[0]
    assert fast.context == JSQUAD_LLAMA


class _Recording:
    """Wraps a ChatPrompt to keep what each request was built from (task, question text, drawn shots)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def context(self, task: Any, doc_text: str, shots: Any) -> Any:
        self.calls.append((task, doc_text, list(shots)))
        return self.inner.context(task, doc_text, shots)


def _lm_eval_context(hf_tok: Any, task: Any, doc_text: str, shots: Any, system_instruction: str | None,
                     multiturn: bool) -> str:
    """lm-eval 0.4.13's ConfigurableTask.fewshot_context + HFLM.apply_chat_template, with its own helpers."""
    import jinja2
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.api.utils import Message, maybe_delimit, multiturn_to_singleturn

    from jbench.prompts import render_description

    messages = []
    system = maybe_delimit(system_instruction, render_description(task), task.fewshot_sep)
    if system:
        messages.append(Message("system", system))
    for s in shots:
        messages += ConfigurableTask.build_qa_turn(None, q=s.text, a=s.target, gen_prefix=None, tgt_delim="",
                                                   few_delim=task.fewshot_sep)
    messages += ConfigurableTask.build_qa_turn(None, q=doc_text, gen_prefix=None, tgt_delim="", few_delim="")
    chat = [m.to_dict() for m in messages] if multiturn else multiturn_to_singleturn(messages)
    kw = dict(tokenize=False, add_generation_prompt=True, continue_final_message=False)
    try:
        return hf_tok.apply_chat_template(chat, **kw)
    except jinja2.exceptions.TemplateError:
        return hf_tok.apply_chat_template([m for m in chat if m["role"] != "system"], **kw)


@pytest.mark.parametrize("arch", ["qwen2", "llama", "gpt_neox"])
@pytest.mark.parametrize("multiturn", [True, False])
def test_contexts_equal_lm_eval_s_for_every_template(chat_models: dict[str, Path], arch: str, multiturn: bool) -> None:
    from jbench.chat import SYSTEM_DROPPED, ChatOptions, chat_prompt
    from jbench.data import load_split
    from jbench.models.tokenizer import load_tokenizer
    from jbench.requests import build_instances
    from jbench.tasks import resolve_task

    tok = load_tokenizer(chat_models[arch])
    system = "日本語で簡潔に答えてください。" if arch != "qwen2" else None  # qwen2: its default system turn
    rec = _Recording(chat_prompt(tok, ChatOptions(system, multiturn), where=arch))
    for name, k in (("jcommonsenseqa-1.1-0.3", 3), ("jsquad-1.1-0.3", 2), ("jnli-1.1-0.4", 2)):
        task = resolve_task(name)
        val = load_split(task.dataset, "validation", Path(SAMPLE)).docs
        train = load_split(task.dataset, "train", Path(SAMPLE)).docs
        rec.calls.clear()
        insts = build_instances(task, val, train, k, limit=3, encode=tok.encode, max_length=2048, chat=rec)
        assert len(insts) == 3 and len(rec.calls) == 3
        for inst, (t, text, shots) in zip(insts, rec.calls):
            assert len(shots) == k
            assert inst.context == _lm_eval_context(tok.tok, t, text, shots, system, multiturn)
            assert (SYSTEM_DROPPED in inst.notes) == (arch == "gpt_neox")


def test_single_turn_keeps_the_plain_prompt_text(chat_models: dict[str, Path]) -> None:
    """--no-fewshot-as-multiturn: one user turn holding exactly the plain prompt minus its description."""
    from jbench import api

    plain = api.prompts("jcommonsenseqa-1.1-0.3", num_fewshot=2, limit=2, data_dir=SAMPLE)
    chat = api.prompts("jcommonsenseqa-1.1-0.3", num_fewshot=2, limit=2, model=str(chat_models["qwen2"]),
                       data_dir=SAMPLE, apply_chat_template=True, fewshot_as_multiturn=False)
    for p, c in zip(plain, chat):
        assert p.shot_ids == c.shot_ids
        user = p.context.removeprefix(DESCRIPTION_03)
        assert c.context == (f"<|im_start|>system\n{DESCRIPTION_03}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
                             "<|im_start|>assistant\n")


def _results(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "results.json").read_text(encoding="utf-8"))


def test_eval_through_the_cli(chat_models: dict[str, Path], tmp_path: Path, jbench_main: Any,
                              capsys: pytest.CaptureFixture[str]) -> None:
    from jbench.cache import model_identity

    out = tmp_path / "runs"
    code = jbench_main("eval", "--model", str(chat_models["qwen2"]), "--apply_chat_template", "--system_instruction",
                       "簡潔に答えてください。", "--tasks", "jcommonsenseqa,jsquad", "--num-fewshot", "1,1",
                       "--limit", "3", "--data-dir", SAMPLE, "--output-dir", str(out), "--no-progress")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "jcommonsenseqa-1.1-0.3+chat" in captured.out and "jsquad-1.1-0.3+chat" in captured.out
    (run,) = out.iterdir()
    assert re.search(r"-chat-[0-9a-f]{6}$", run.name)  # a system instruction: not the default chat settings' run
    data = _results(run)
    assert sorted(data["results"]) == ["jcommonsenseqa-1.1-0.3+chat", "jsquad-1.1-0.3+chat"]
    cfg = data["config"]
    assert cfg["system_instruction"] == "簡潔に答えてください。" and cfg["fewshot_as_multiturn"] is True
    assert cfg["chat_template"] == json.loads((chat_models["qwen2"] / "tokenizer_config.json").read_text())[
        "chat_template"]
    assert cfg["chat_task_suffix"] == "+chat" and len(cfg["chat_template_sha"]) == 64
    assert data["plan"]["chat"] == {"system_instruction": "簡潔に答えてください。", "fewshot_as_multiturn": True}
    rows = [json.loads(line) for line in (run / "samples_jcommonsenseqa-1.1-0.3+chat.jsonl").open(encoding="utf-8")]
    assert len(rows) == 3 and all(r["prompt"].startswith("<|im_start|>system\n簡潔に答えてください。\n\n以下は") for r in rows)
    (lm_eval_file,) = run.glob("lm-eval/**/results_*.json")  # lm-eval 0.4's layout carries the same settings
    lm = json.loads(lm_eval_file.read_text(encoding="utf-8"))
    assert (lm["chat_template"], lm["chat_template_sha"]) == (cfg["chat_template"], cfg["chat_template_sha"])
    assert lm["system_instruction"] == "簡潔に答えてください。" and lm["fewshot_as_multiturn"] is True
    gen = [json.loads(line) for line in (run / "samples_jsquad-1.1-0.3+chat.jsonl").open(encoding="utf-8")]
    assert all("<|im_end|>" not in g["prediction"] for g in gen)  # generation is cut at EOS, as lm-eval does
    # the settings are part of the request-cache key
    ident = {k: cfg.get(k) for k in ("model", "model_path", "variant", "dtype", "device", "tokenizer")}
    with_chat = {**ident, **{k: cfg[k] for k in ("chat_template", "system_instruction", "fewshot_as_multiturn")}}
    assert model_identity(with_chat) != model_identity(ident)
    assert model_identity({**with_chat, "system_instruction": None}) != model_identity(with_chat)
    assert model_identity({**with_chat, "fewshot_as_multiturn": False}) != model_identity(with_chat)

    # the same model without the flag: reference names, another run directory
    code = jbench_main("eval", "--model", str(chat_models["qwen2"]), "--tasks", "jcommonsenseqa", "--num-fewshot",
                       "1", "--limit", "3", "--data-dir", SAMPLE, "--output-dir", str(out), "--no-progress")
    assert code == 0
    assert "tokenizer has a chat template; --apply-chat-template" in capsys.readouterr().err  # lm-eval-like hint
    plain = next(p for p in out.iterdir() if "-chat" not in p.name)
    assert list(_results(plain)["results"]) == ["jcommonsenseqa-1.1-0.3"]
    assert "chat_template" not in _results(plain)["config"]


def test_bad_inputs_exit_2(chat_models: dict[str, Path], tmp_path: Path, jbench_main: Any,
                           capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "runs")
    common = ("--tasks", "jcommonsenseqa", "--limit", "2", "--data-dir", SAMPLE, "--output-dir", out, "--no-progress")
    # the embedded tiny model has no template
    assert jbench_main("eval", "--apply-chat-template", *common) == 2
    assert "the embedded tiny model has no chat template" in capsys.readouterr().err
    # a local folder without one: refused before the model loads
    bare = tmp_path / "bare"
    shutil.copytree(chat_models["qwen2"], bare)
    cfg = json.loads((bare / "tokenizer_config.json").read_text(encoding="utf-8"))
    del cfg["chat_template"]
    (bare / "tokenizer_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    assert jbench_main("eval", "--model", str(bare), "--apply-chat-template", *common) == 2
    assert "the model's tokenizer has no chat template" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert jbench_main("prompts", "--task", "jcommonsenseqa-1.1-0.3", "--model", str(bare), "--apply-chat-template",
                       "--data-dir", SAMPLE, "--limit", "1") == 2
    assert "the model's tokenizer has no chat template" in capsys.readouterr().err
    # lm-eval: "When fewshot_as_multiturn is True, apply_chat_template must be set"; a system instruction too
    assert jbench_main("eval", "--model", str(chat_models["qwen2"]), "--fewshot_as_multiturn", *common) == 2
    assert "--fewshot-as-multiturn needs --apply-chat-template" in capsys.readouterr().err
    assert jbench_main("eval", "--model", str(chat_models["qwen2"]), "--system-instruction", "x", *common) == 2
    assert "--system-instruction needs --apply-chat-template" in capsys.readouterr().err
    assert jbench_main("prompts", "--task", "jcommonsenseqa-1.1-0.3", "--apply-chat-template", "--data-dir",
                       SAMPLE) == 2
    assert "add --model" in capsys.readouterr().err
    assert jbench_main("eval", "--resume", "x", "--apply-chat-template", "--output-dir", out) == 2
    assert "--apply-chat-template" in capsys.readouterr().err


def test_a_preset_can_choose_the_chat_template(chat_models: dict[str, Path], tmp_path: Path, jbench_main: Any,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from jbench import presets, tasks

    tasks_copy = tmp_path / "tasks"
    shutil.copytree(tasks.tasks_dir(), tasks_copy)
    entries = yaml.safe_load((tasks_copy / "presets.yaml").read_text(encoding="utf-8"))
    entries.insert(0, {"name": "test-chat", "match": [chat_models["qwen2"].name], "tokenizer": {"use_fast": True},
                       "dtype": "float32", "prompt_version": "0.3", "chat_template": True, "why": "test preset",
                       "card": "https://example.invalid/card"})
    (tasks_copy / "presets.yaml").write_text(yaml.safe_dump(entries, allow_unicode=True), encoding="utf-8")
    monkeypatch.setenv("JBENCH_TASKS_DIR", str(tasks_copy))
    res = presets.resolve_preset(str(chat_models["qwen2"]), warn=False)
    assert res.name == "test-chat" and res.chat_template and res.to_record()["chat_template"] is True
    assert "chat template" in presets.describe(res) and "+ chat template" in presets.presets_table()
    out = tmp_path / "runs"
    common = ("--model", str(chat_models["qwen2"]), "--tasks", "jcommonsenseqa", "--num-fewshot", "0", "--limit",
              "2", "--data-dir", SAMPLE, "--output-dir", str(out), "--no-progress")
    assert jbench_main("eval", *common) == 0
    assert "jcommonsenseqa-1.1-0.3+chat" in capsys.readouterr().out
    assert jbench_main("eval", *common, "--no-apply-chat-template") == 0  # the user overrides the preset
    captured = capsys.readouterr()
    assert "jcommonsenseqa-1.1-0.3 " in captured.out and "+chat" not in captured.out
    assert "chat_template True→False" in captured.err
    # a preset value that is not a YAML boolean is refused (a string "no" would read as true)
    entries[0]["chat_template"] = "no"
    bad = tmp_path / "bad-presets.yaml"  # another path: presets are cached per path
    bad.write_text(yaml.safe_dump(entries, allow_unicode=True), encoding="utf-8")
    with pytest.raises(presets.PresetError, match="chat_template must be true or false"):
        presets.load_presets(bad)


def test_generation_is_cut_at_the_eos_text(chat_models: dict[str, Path]) -> None:
    """lm-eval adds EOS to `until`; jbench's scorer stops only at `until`, so the chat path cuts at the EOS text."""
    from jbench.chat import ChatOptions, chat_prompt
    from jbench.models.tokenizer import load_tokenizer
    from jbench.requests import Instance
    from jbench.runner import score_task
    from jbench.tasks import resolve_task

    chat = chat_prompt(load_tokenizer(chat_models["qwen2"]), ChatOptions(), where="qwen2")
    assert chat.eos_text == "<|im_end|>"  # Qwen2-Instruct's end of turn

    class Stub:
        def generate(self, reqs: Any) -> list[str]:
            return ["シベリア気団<|im_end|>\n<|im_start|>user"] * len(reqs)

    task = chat.rename(resolve_task("jsquad-1.1-0.3"))
    inst = Instance(task=task.name, doc_index=0, native_index=0, doc_id="d", context="x", shot_ids=[],
                    golds=["シベリア気団"], until="\n", max_gen_tokens=8)
    (row,) = score_task(Stub(), task, [inst], cut=chat.cut)  # type: ignore[arg-type]
    assert row["prediction"] == "シベリア気団" and row["exact_match"] == 1.0
    (raw,) = score_task(Stub(), task, [inst])  # type: ignore[arg-type]
    assert raw["prediction"].startswith("シベリア気団<|im_end|>")
