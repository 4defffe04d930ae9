"""Era-correct rendering of the Llama-2 chat (0.6) task versions, and task-name provenance (issue 12, items 8-9).

The golden contexts below were produced by running JP-stable's own code (``Task.fewshot_context`` inside the
evaluator's loop: ``Random(42)`` shuffle of the validation docs, the same ``rnd`` drawing 2 shots per doc) at the
commit named in each comment, on the synthetic documents in this file, with ``SYSTEM_PROMPT`` unset. They are the
first two requests of each task. jnli-1.1-0.6 existed only from c517f0e (2023-10-10) to 6af55ef (2023-10-24),
before a759835 (2023-11-09) made the default system prompt Japanese, so its golden carries Llama-2's English one.
"""

from __future__ import annotations

from typing import Any

import pytest

from jbench.prompts import DEFAULT_SYSTEM_PROMPT, render_description
from jbench.requests import build_instances
from jbench.tasks import all_tasks, resolve_task


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYSTEM_PROMPT", raising=False)


# JNLIWithLlama2.DEFAULT_SYSTEM_PROMPT at c517f0e..9b42d41 (identical in every 0.6 class then); note the two
# spaces after "while being safe." and the blank line, both from the reference's triple-quoted string.
LLAMA2_EN_SYSTEM_PROMPT = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being safe."
    "  Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or illegal "
    "content. Please ensure that your responses are socially unbiased and positive in nature.\n\nIf a question "
    "does not make any sense, or is not factually coherent, explain why instead of answering something not "
    "correct. If you don't know the answer to a question, please don't share false information."
)

DOCS: dict[str, dict[str, list[dict[str, Any]]]] = {
 "jnli": {
  "validation": [
   {
    "sentence_pair_id": "0",
    "yjcaptions_id": "0-y",
    "sentence1": "男性が自転車に乗っている。",
    "sentence2": "人が乗り物に乗っている。",
    "label": 0
   },
   {
    "sentence_pair_id": "1",
    "yjcaptions_id": "1-y",
    "sentence1": "犬が芝生の上を走っている。",
    "sentence2": "犬が眠っている。",
    "label": 1
   },
   {
    "sentence_pair_id": "2",
    "yjcaptions_id": "2-y",
    "sentence1": "女性が台所に立っている。",
    "sentence2": "女性が料理をしている。",
    "label": 2
   }
  ],
  "train": [
   {
    "sentence_pair_id": "10",
    "yjcaptions_id": "10-y",
    "sentence1": "子供がボールで遊んでいる。",
    "sentence2": "子供が遊んでいる。",
    "label": 0
   },
   {
    "sentence_pair_id": "11",
    "yjcaptions_id": "11-y",
    "sentence1": "電車が駅に止まっている。",
    "sentence2": "電車が走っている。",
    "label": 1
   },
   {
    "sentence_pair_id": "12",
    "yjcaptions_id": "12-y",
    "sentence1": "男性が本を読んでいる。",
    "sentence2": "男性が新聞を読んでいる。",
    "label": 2
   },
   {
    "sentence_pair_id": "13",
    "yjcaptions_id": "13-y",
    "sentence1": "猫が寝ている。",
    "sentence2": "動物が寝ている。",
    "label": 0
   }
  ]
 },
 "marc_ja": {
  "validation": [
   {
    "review_id": "R100",
    "sentence": "とても使いやすい商品でした。",
    "label": 0
   },
   {
    "review_id": "R101",
    "sentence": "すぐに壊れてしまった。",
    "label": 1
   },
   {
    "review_id": "R102",
    "sentence": "期待通りの品質です。",
    "label": 0
   }
  ],
  "train": [
   {
    "review_id": "R2",
    "sentence": "二度と買わない。",
    "label": 1
   },
   {
    "review_id": "R3",
    "sentence": "大満足です。",
    "label": 0
   },
   {
    "review_id": "R4",
    "sentence": "色が写真と違う。",
    "label": 1
   },
   {
    "review_id": "R5",
    "sentence": "また買います。",
    "label": 0
   }
  ]
 },
 "jcommonsenseqa": {
  "validation": [
   {
    "q_id": 101,
    "question": "空の色は何色ですか",
    "choice0": "赤",
    "choice1": "青",
    "choice2": "緑",
    "choice3": "黄",
    "choice4": "白",
    "label": 1
   },
   {
    "q_id": 102,
    "question": "一週間は何日",
    "choice0": "5日",
    "choice1": "6日",
    "choice2": "7日",
    "choice3": "8日",
    "choice4": "9日",
    "label": 2
   },
   {
    "q_id": 103,
    "question": "水の化学式は",
    "choice0": "H2O",
    "choice1": "CO2",
    "choice2": "O2",
    "choice3": "N2",
    "choice4": "NaCl",
    "label": 0
   }
  ],
  "train": [
   {
    "q_id": 7,
    "question": "猫の鳴き声は",
    "choice0": "ワン",
    "choice1": "ニャー",
    "choice2": "モー",
    "choice3": "メェ",
    "choice4": "コケコッコー",
    "label": 1
   },
   {
    "q_id": 8,
    "question": "日本の首都は",
    "choice0": "大阪",
    "choice1": "京都",
    "choice2": "名古屋",
    "choice3": "東京",
    "choice4": "札幌",
    "label": 3
   },
   {
    "q_id": 9,
    "question": "一年は何か月",
    "choice0": "10",
    "choice1": "11",
    "choice2": "12",
    "choice3": "13",
    "choice4": "14",
    "label": 2
   },
   {
    "q_id": 10,
    "question": "太陽が昇る方角は",
    "choice0": "東",
    "choice1": "西",
    "choice2": "南",
    "choice3": "北",
    "choice4": "上",
    "label": 0
   }
  ]
 }
}

GOLDEN: dict[str, list[tuple[str, list[str]]]] = {
    # jnli-1.1-0.6: JP-stable c517f0e (identical at 6af55ef, the last commit with jnli-1.1)
    "jnli-1.1-0.6": [
        ("<s>[INST] <<SYS>>\n" + LLAMA2_EN_SYSTEM_PROMPT + "\n<</SYS>>\n\n与えられた前提と仮説の関係を回答してください。\n\n出力は以下から選択してください：\nentailment\ncontradiction\nneutral\n\n前提：子供がボールで遊んでいる。\n仮説：子供が遊んでいる。 [/INST] entailment </s><s>[INST] 与えられた前提と仮説の関係を回答してください。\n\n出力は以下から選択してください：\nentailment\ncontradiction\nneutral\n\n前提：男性が本を読んでいる。\n仮説：男性が新聞を読んでいる。 [/INST] neutral </s><s>[INST] 与えられた前提と仮説の関係を回答してください。\n\n出力は以下から選択してください：\nentailment\ncontradiction\nneutral\n\n前提：犬が芝生の上を走っている。\n仮説：犬が眠っている。 [/INST] ",
         ["entailment", "contradiction", "neutral"]),
        ("<s>[INST] <<SYS>>\n" + LLAMA2_EN_SYSTEM_PROMPT + "\n<</SYS>>\n\n与えられた前提と仮説の関係を回答してください。\n\n出力は以下から選択してください：\nentailment\ncontradiction\nneutral\n\n前提：男性が本を読んでいる。\n仮説：男性が新聞を読んでいる。 [/INST] neutral </s><s>[INST] 与えられた前提と仮説の関係を回答してください。\n\n出力は以下から選択してください：\nentailment\ncontradiction\nneutral\n\n前提：子供がボールで遊んでいる。\n仮説：子供が遊んでいる。 [/INST] entailment </s><s>[INST] 与えられた前提と仮説の関係を回答してください。\n\n出力は以下から選択してください：\nentailment\ncontradiction\nneutral\n\n前提：男性が自転車に乗っている。\n仮説：人が乗り物に乗っている。 [/INST] ",
         ["entailment", "contradiction", "neutral"]),
    ],
    # jnli-1.3-0.6: JP-stable effdbea (HEAD; identical since a759835)
    "jnli-1.3-0.6": [
        ("<s>[INST] <<SYS>>\nあなたは役立つアシスタントです。\n<</SYS>>\n\n与えられた前提と仮説の関係を回答してください。\n\n出力は以下から選択してください：\n含意\n矛盾\n中立\n\n前提：電車が駅に止まっている。\n仮説：電車が走っている。 [/INST] 矛盾 </s><s>[INST] 与えられた前提と仮説の関係を回答してください。\n\n出力は以下から選択してください：\n含意\n矛盾\n中立\n\n前提：子供がボールで遊んでいる。\n仮説：子供が遊んでいる。 [/INST] 含意 </s><s>[INST] 与えられた前提と仮説の関係を回答してください。\n\n出力は以下から選択してください：\n含意\n矛盾\n中立\n\n前提：犬が芝生の上を走っている。\n仮説：犬が眠っている。 [/INST] ",
         ["含意", "矛盾", "中立"]),
        ("<s>[INST] <<SYS>>\nあなたは役立つアシスタントです。\n<</SYS>>\n\n与えられた前提と仮説の関係を回答してください。\n\n出力は以下から選択してください：\n含意\n矛盾\n中立\n\n前提：電車が駅に止まっている。\n仮説：電車が走っている。 [/INST] 矛盾 </s><s>[INST] 与えられた前提と仮説の関係を回答してください。\n\n出力は以下から選択してください：\n含意\n矛盾\n中立\n\n前提：子供がボールで遊んでいる。\n仮説：子供が遊んでいる。 [/INST] 含意 </s><s>[INST] 与えられた前提と仮説の関係を回答してください。\n\n出力は以下から選択してください：\n含意\n矛盾\n中立\n\n前提：男性が自転車に乗っている。\n仮説：人が乗り物に乗っている。 [/INST] ",
         ["含意", "矛盾", "中立"]),
    ],
    # marc_ja-1.1-0.6: JP-stable effdbea (HEAD; identical since a759835)
    "marc_ja-1.1-0.6": [
        ("<s>[INST] <<SYS>>\nあなたは役立つアシスタントです。\n<</SYS>>\n\n以下の製品レビューを、ポジティブまたはネガティブの感情クラスのいずれかに分類してください。\n\n二度と買わない。 [/INST] ネガティブ </s><s>[INST] 以下の製品レビューを、ポジティブまたはネガティブの感情クラスのいずれかに分類してください。\n\n色が写真と違う。 [/INST] ネガティブ </s><s>[INST] 以下の製品レビューを、ポジティブまたはネガティブの感情クラスのいずれかに分類してください。\n\nすぐに壊れてしまった。 [/INST] ",
         ["ポジティブ", "ネガティブ"]),
        ("<s>[INST] <<SYS>>\nあなたは役立つアシスタントです。\n<</SYS>>\n\n以下の製品レビューを、ポジティブまたはネガティブの感情クラスのいずれかに分類してください。\n\n色が写真と違う。 [/INST] ネガティブ </s><s>[INST] 以下の製品レビューを、ポジティブまたはネガティブの感情クラスのいずれかに分類してください。\n\n二度と買わない。 [/INST] ネガティブ </s><s>[INST] 以下の製品レビューを、ポジティブまたはネガティブの感情クラスのいずれかに分類してください。\n\nとても使いやすい商品でした。 [/INST] ",
         ["ポジティブ", "ネガティブ"]),
    ],
    # jcommonsenseqa-1.1-0.6: JP-stable effdbea (HEAD; identical since a759835)
    "jcommonsenseqa-1.1-0.6": [
        ("<s>[INST] <<SYS>>\nあなたは役立つアシスタントです。\n<</SYS>>\n\n与えられた5つの選択肢の中から、最適な答えを選んでください。出力は以下から選択してください：\n- ワン\n- ニャー\n- モー\n- メェ\n- コケコッコー\n\n質問：猫の鳴き声は [/INST] ニャー </s><s>[INST] 与えられた5つの選択肢の中から、最適な答えを選んでください。出力は以下から選択してください：\n- 10\n- 11\n- 12\n- 13\n- 14\n\n質問：一年は何か月 [/INST] 12 </s><s>[INST] 与えられた5つの選択肢の中から、最適な答えを選んでください。出力は以下から選択してください：\n- 5日\n- 6日\n- 7日\n- 8日\n- 9日\n\n質問：一週間は何日 [/INST] ",
         ["5日", "6日", "7日", "8日", "9日"]),
        ("<s>[INST] <<SYS>>\nあなたは役立つアシスタントです。\n<</SYS>>\n\n与えられた5つの選択肢の中から、最適な答えを選んでください。出力は以下から選択してください：\n- 10\n- 11\n- 12\n- 13\n- 14\n\n質問：一年は何か月 [/INST] 12 </s><s>[INST] 与えられた5つの選択肢の中から、最適な答えを選んでください。出力は以下から選択してください：\n- ワン\n- ニャー\n- モー\n- メェ\n- コケコッコー\n\n質問：猫の鳴き声は [/INST] ニャー </s><s>[INST] 与えられた5つの選択肢の中から、最適な答えを選んでください。出力は以下から選択してください：\n- 赤\n- 青\n- 緑\n- 黄\n- 白\n\n質問：空の色は何色ですか [/INST] ",
         ["赤", "青", "緑", "黄", "白"]),
    ],
}



@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_first_requests_match_the_reference_of_their_era(name: str) -> None:
    task = resolve_task(name)
    docs = DOCS[task.family]
    insts = build_instances(task, docs["validation"], docs["train"], 2, limit=2)
    assert [(i.context, i.continuations) for i in insts] == [(c, list(k)) for c, k in GOLDEN[name]]


def test_jnli_11_06_defaults_to_the_english_llama2_system_prompt() -> None:
    desc = f"<s>[INST] <<SYS>>\n{LLAMA2_EN_SYSTEM_PROMPT}\n<</SYS>>\n\n"
    assert render_description(resolve_task("jnli-1.1-0.6")) == desc


def test_system_prompt_env_var_overrides_every_era(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference reads $SYSTEM_PROMPT in every era, so setting it makes 1.1-0.6 and 1.3-0.6 agree."""
    monkeypatch.setenv("SYSTEM_PROMPT", "あなたは役立つアシスタントです。")
    for name in ("jnli-1.1-0.6", "jnli-1.3-0.6"):
        assert render_description(resolve_task(name)) == "<s>[INST] <<SYS>>\nあなたは役立つアシスタントです。\n<</SYS>>\n\n"


def test_only_pre_a759835_versions_carry_an_era_default() -> None:
    """Every other 0.6 task existed at HEAD (a759835..effdbea), so it keeps the Japanese default."""
    llama = {n: t for n, t in all_tasks().items() if t.prompt_version == "0.6"}
    assert {n for n, t in llama.items() if t.default_system_prompt is not None} == {"jnli-1.1-0.6"}
    for name, task in llama.items():
        expected = LLAMA2_EN_SYSTEM_PROMPT if name == "jnli-1.1-0.6" else DEFAULT_SYSTEM_PROMPT
        assert render_description(task) == f"<s>[INST] <<SYS>>\n{expected}\n<</SYS>>\n\n", name


# ---------------------------------------------------------------------------------------------------------------
# Bare names and provenance. Registry facts verified by loading lm_eval.tasks.TASK_REGISTRY at every jp-stable
# commit that touched lm_eval/tasks (2023-04-28 .. effdbea).
# ---------------------------------------------------------------------------------------------------------------

# What each bare name means at JP-stable HEAD effdbea (register_tasks(): the first class of the module found).
HEAD_BARE = {
    "jcommonsenseqa": "jcommonsenseqa-1.1-0.1",
    "jnli": "jnli-1.3-0.2",              # JNLIWithFintanPrompt, VERSION 1.3 since c79c7a7 (main line 9b42d41)
    "marc_ja": "marc_ja-1.1-0.2",
    "jsquad": "jsquad-1.1-0.1",
    "jaqket_v2": "jaqket_v2-0.2-0.1",    # JAQKETV2, VERSION 0.2 since 5921154 (2023-08-15), so also at 2f1583c
    "xwinograd_ja": "xwinograd_ja",
}


@pytest.mark.parametrize("bare", sorted(HEAD_BARE))
def test_bare_names_resolve_as_at_reference_head(bare: str) -> None:
    assert resolve_task(bare).name == HEAD_BARE[bare]


@pytest.mark.parametrize("bare", ["jcommonsenseqa", "jnli", "marc_ja", "jsquad", "jaqket_v2"])
def test_bare_name_with_prompt_version_keeps_the_published_era_version(bare: str) -> None:
    """The default suite and the presets pass a prompt version: that keeps jnli-1.1 / jaqket_v2-0.1 (published)."""
    expected = {"jnli": "1.1", "jaqket_v2": "0.1"}.get(bare, "1.1")
    assert resolve_task(bare, "0.3").name == f"{bare}-{expected}-0.3"


# Names jbench defines that no JP-stable commit registers.
JBENCH_ADDITIONS = {
    "jsquad-1.2-0.1",          # 1.2 (bca52e7) has classes for 0.2-0.6 only
    "jaqket_v2-0.1-0.6",       # 0.6 (c517f0e) came after 0.1 was replaced by 0.2 (5921154)
    *(n for n in all_tasks() if n.endswith("-youri-chat")),
}


def test_jbench_additions_are_marked() -> None:
    tasks = all_tasks()
    assert {n for n, t in tasks.items() if t.origin == "jbench"} == JBENCH_ADDITIONS
    for name in JBENCH_ADDITIONS:
        assert not tasks[name].is_reference and tasks[name].era == "" and tasks[name].follows, name


def test_every_reference_name_says_which_era_it_follows() -> None:
    for name, task in all_tasks().items():
        if task.is_reference:
            assert task.era and task.follows, name
    assert resolve_task("jnli-1.1-0.6").era.startswith("c517f0e")
    assert resolve_task("jnli-1.1-0.4").follows.startswith("245c286")


def test_a_name_without_a_reference_row_is_refused(tmp_path: Any) -> None:
    """Fail closed: a new prompt version must say whether it is a JP-stable name or a jbench addition."""
    import yaml

    from jbench.errors import TaskError
    from jbench.tasks import _build_family, tasks_dir

    raw = yaml.safe_load((tasks_dir() / "marc_ja.yaml").read_text(encoding="utf-8"))
    del raw["reference"]["1.1-0.3"]
    path = tmp_path / "marc_ja.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    with pytest.raises(TaskError, match="marc_ja-1.1-0.3 has no row"):
        _build_family(path)
    raw["reference"]["1.1-0.3"] = {"origin": "jbench"}
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    with pytest.raises(TaskError, match="needs a `why`"):
        _build_family(path)
