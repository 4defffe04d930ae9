"""Golden prompt tests: every task's prompts, written by hand from the spec (/work/shared/spec/tasks.md §1.2, §1.3,
§2), compared byte for byte with what jbench renders.

Nothing here is derived from the implementation: descriptions and the query doc's ``doc_to_text`` are literal
strings, and the per-PV "oracle" functions (used for the few-shot docs and the RNG simulations) are independent
re-writings of the spec's template tables. The RNG tests hand-simulate the reference evaluator with CPython's
``random.Random``.

Notation in the literals: ``\\n`` is a newline, ``<NL>`` is the literal 4-character text, ``：`` is the
full-width colon (U+FF1A) and ``:`` the half-width one.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Callable

import pytest

from jbench.errors import TaskError
from jbench.prompts import fewshot_context, render_description, render_doc
from jbench.requests import build_instances, stratified_indices
from jbench.tasks import all_tasks, resolve_task


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Golden strings assume the defaults: SYSTEM_PROMPT unset, DYNAMIC_MAX_LENGTH unset ("true").
    monkeypatch.delenv("SYSTEM_PROMPT", raising=False)
    monkeypatch.delenv("DYNAMIC_MAX_LENGTH", raising=False)


# ---------------------------------------------------------------------------------------------------------------
# Shared literals (spec §2.1: alpaca description of 0.3, Llama-2 description / separator of 0.6)
# ---------------------------------------------------------------------------------------------------------------

ALPACA_DESC = "以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。要求を適切に満たす応答を書きなさい。\n\n"
DEFAULT_SYSTEM_PROMPT = "あなたは役立つアシスタントです。"
LLAMA2_DESC = "<s>[INST] <<SYS>>\nあなたは役立つアシスタントです。\n<</SYS>>\n\n"
# jnli-1.1-0.6 only existed (c517f0e..6af55ef) before a759835 made the default Japanese: Llama-2's English default,
# JNLIWithLlama2.DEFAULT_SYSTEM_PROMPT at c517f0e (two spaces after "safe.", a blank line inside).
LLAMA2_EN_DESC = (
    "<s>[INST] <<SYS>>\nYou are a helpful, respectful and honest assistant. Always answer as helpfully as possible, "
    "while being safe.  Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or "
    "illegal content. Please ensure that your responses are socially unbiased and positive in nature.\n\nIf a "
    "question does not make any sense, or is not factually coherent, explain why instead of answering something not "
    "correct. If you don't know the answer to a question, please don't share false information.\n<</SYS>>\n\n"
)
LLAMA2_SEP = " </s><s>[INST] "

# ---------------------------------------------------------------------------------------------------------------
# Synthetic documents (the data layer's normalised schemas). A = the query doc; B, C = the two shots of the
# 2-shot context; D, E = extra train docs for the RNG simulations.
# ---------------------------------------------------------------------------------------------------------------


def _jcqa(qid: int, q: str, choices: list[str], label: int) -> dict[str, Any]:
    return {"q_id": qid, "question": q, **{f"choice{i}": c for i, c in enumerate(choices)}, "label": label}


JCQA_DOCS = {
    "A": _jcqa(101, "空の色は何色ですか", ["赤", "青", "緑", "黄", "白"], 1),
    "B": _jcqa(7, "猫の鳴き声は", ["ワン", "ニャー", "モー", "メェ", "コケコッコー"], 1),
    "C": _jcqa(8, "日本の首都は", ["大阪", "京都", "名古屋", "東京", "札幌"], 3),
    "D": _jcqa(9, "一週間は何日", ["5日", "6日", "7日", "8日", "9日"], 2),
    "E": _jcqa(10, "水の化学式は", ["H2O", "CO2", "O2", "N2", "NaCl"], 0),
}


def _jnli(pid: str, s1: str, s2: str, label: int) -> dict[str, Any]:
    return {"sentence_pair_id": pid, "yjcaptions_id": f"{pid}-y", "sentence1": s1, "sentence2": s2, "label": label}


JNLI_DOCS = {
    "A": _jnli("0", "男性が自転車に乗っている。", "人が乗り物に乗っている。", 0),
    "B": _jnli("1", "犬が芝生の上を走っている。", "犬が眠っている。", 1),
    "C": _jnli("2", "女性が台所に立っている。", "女性が料理をしている。", 2),
    "D": _jnli("3", "子供がボールで遊んでいる。", "子供が遊んでいる。", 0),
    "E": _jnli("4", "電車が駅に止まっている。", "電車が走っている。", 1),
}

MARC_DOCS = {
    "A": {"review_id": "R100", "sentence": "とても使いやすい商品でした。", "label": 0},
    "B": {"review_id": "R2", "sentence": "すぐに壊れてしまった。", "label": 1},
    "C": {"review_id": "R3", "sentence": "期待通りの品質です。", "label": 0},
    "D": {"review_id": "R4", "sentence": "二度と買わない。", "label": 1},
    "E": {"review_id": "R5", "sentence": "大満足です。", "label": 0},
}


def _jsquad(i: str, title: str, para: str, q: str, answers: list[str]) -> dict[str, Any]:
    return {"id": i, "title": title, "context": f"{title} [SEP] {para}", "question": q,
            "answers": {"text": answers, "answer_start": [0] * len(answers)}}


JSQUAD_DOCS = {
    "A": _jsquad("a1000888p0q0", "日本の首都", "東京は日本の首都である。", "日本の首都はどこ？", ["東京", "東京都"]),
    "B": _jsquad("b1", "富士山", "富士山の標高は3776メートルである。", "富士山の標高は？", ["3776メートル"]),
    "C": _jsquad("c1", "琵琶湖", "琵琶湖は滋賀県にある日本最大の湖である。", "日本最大の湖は？", ["琵琶湖", "びわ湖"]),
    "D": _jsquad("d1", "信濃川", "信濃川は日本一長い川である。", "日本一長い川は？", ["信濃川"]),
    "E": _jsquad("e1", "北海道", "北海道は日本最大の都道府県である。", "日本最大の都道府県は？", ["北海道"]),
}


def _jaqket(qid: str, q: str, answers: list[str], titles: list[str], texts: list[str]) -> dict[str, Any]:
    n = len(texts)
    return {"qid": qid, "question": q, "answers": {"text": answers, "answer_start": [-1] * len(answers)},
            "ctxs": {"id": [str(i) for i in range(n)], "title": titles, "text": texts,
                     "score": [10.0 - i for i in range(n)], "has_answer": [i == 0 for i in range(n)]}}


JAQKET_DOCS = {
    "A": _jaqket("QA-A", "日本一高い山は？", ["富士山"], ["富士山", "山", "静岡県", "日本", "山梨県"],
                 ["富士山は日本一高い。", "山は高い。", "静岡県は東海にある。", "日本は島国だ。", "山梨県にもある。"]),
    "B": _jaqket("QA-B", "日本最大の湖は？", ["琵琶湖"], ["琵琶湖", "湖", "滋賀県", "淡水", "近江"],
                 ["琵琶湖は最大の湖。", "湖は水がある。", "滋賀県の湖。", "淡水の湖。", "近江の海。"]),
    "C": _jaqket("QA-C", "日本の首都は？", ["東京", "東京都"], ["東京", "首都", "関東", "皇居", "江戸"],
                 ["東京は首都である。", "首都は一つ。", "関東地方。", "皇居がある。", "旧名は江戸。"]),
    "D": _jaqket("QA-D", "日本一長い川は？", ["信濃川"], ["信濃川", "川", "新潟", "長野", "千曲川"],
                 ["信濃川は長い。", "川は流れる。", "新潟を流れる。", "長野も流れる。", "上流は千曲川。"]),
    "E": _jaqket("QA-E", "日本最北端の島は？", ["択捉島"], ["択捉島", "島", "北方", "北海道", "千島"],
                 ["択捉島は最北端。", "島は多い。", "北方領土。", "北海道の東。", "千島列島。"]),
}

# ---------------------------------------------------------------------------------------------------------------
# Oracles: the spec's template tables re-written as Python (used for shots B/C and the RNG simulations).
# ---------------------------------------------------------------------------------------------------------------

Doc = dict[str, Any]


def _ch(d: Doc) -> list[str]:
    return [d[f"choice{i}"] for i in range(5)]


def _items(prefix: str, items: list[str]) -> str:
    return "".join(prefix + x for x in items)


JCQA_TEXT: dict[str, Callable[[Doc], str]] = {   # spec §2.1 table
    "0.1": lambda d: "[問題]:" + d["question"] + "\n[選択肢]:[" + ", ".join(_ch(d)) + "]\n[答え]:",
    "0.2": lambda d: ("質問:" + d["question"] + "\n選択肢:"
                      + ",".join(f"{i}.{c}" for i, c in enumerate(_ch(d))) + "\n回答:"),
    "0.2.1": lambda d: "質問：" + d["question"] + "\n選択肢：" + _items("\n- ", _ch(d)) + "\n回答：",
    "0.3": lambda d: ("### 指示:\n与えられた選択肢の中から、最適な答えを選んでください。出力は以下から選択してください："
                      + _items("\n- ", _ch(d)) + "\n\n### 入力:\n" + d["question"] + "\n\n### 応答:\n"),
    "0.4": lambda d: "ユーザー: 質問：" + d["question"] + "<NL>選択肢：" + _items("<NL>- ", _ch(d)) + "<NL>システム: ",
    "0.5": lambda d: "ユーザー: 質問：" + d["question"] + "\n選択肢：" + _items("\n- ", _ch(d)) + "\nシステム: ",
    "0.6": lambda d: ("与えられた5つの選択肢の中から、最適な答えを選んでください。出力は以下から選択してください："
                      + _items("\n- ", _ch(d)) + "\n\n質問：" + d["question"] + " [/INST] "),
}


def jnli_text(version: str, pv: str) -> Callable[[Doc], str]:
    labels = ["entailment", "contradiction", "neutral"] if version == "1.1" else ["含意", "矛盾", "中立"]
    menu = "\n".join(labels)

    def f(d: Doc) -> str:
        p, h = d["sentence1"], d["sentence2"]
        if pv == "0.2":
            return "前提:" + p + "\n仮説:" + h + "\n関係:"
        if pv == "0.3":
            return ("### 指示:\n与えられた前提と仮説の関係を回答してください。\n\n出力は以下から選択してください：\n" + menu
                    + "\n\n### 入力:\n前提：" + p + "\n仮説：" + h + "\n\n### 応答:\n")
        if pv == "0.4":
            # v1.1 = published era (JP-stable 1746e2d, before a5aa8f3): literal "\n" between premise and hypothesis
            # (spec §2.2 history note, §7.6). v1.3 = HEAD: <NL>.
            mid = "\n仮説：" if version == "1.1" else "<NL>仮説："
            return "ユーザー: 前提：" + p + mid + h + "<NL>システム: "
        if pv == "0.5":
            return "ユーザー: 前提：" + p + "\n仮説：" + h + "\nシステム: "
        assert pv == "0.6"
        return ("与えられた前提と仮説の関係を回答してください。\n\n出力は以下から選択してください：\n" + menu
                + "\n\n前提：" + p + "\n仮説：" + h + " [/INST] ")

    return f


MARC_TEXT: dict[str, Callable[[Doc], str]] = {   # spec §2.3 table
    "0.2": lambda d: "製品レビュー:" + d["sentence"] + "\nセンチメント:",
    "0.3": lambda d: ("### 指示:\n以下の製品レビューを、ポジティブまたはネガティブの感情クラスのいずれかに分類してください。"
                      "\n\n### 入力:\n" + d["sentence"] + "\n\n### 応答:\n"),
    "0.4": lambda d: "ユーザー: " + d["sentence"] + "<NL>システム: ",
    "0.5": lambda d: "ユーザー: " + d["sentence"] + "\nシステム: ",
    "0.6": lambda d: ("以下の製品レビューを、ポジティブまたはネガティブの感情クラスのいずれかに分類してください。\n\n"
                      + d["sentence"] + " [/INST] "),
}


def _sq_ctx(d: Doc) -> str:
    return d["context"].split("[SEP]")[-1].strip()   # spec §2.4 helper


def jsquad_text(version: str, pv: str) -> Callable[[Doc], str]:
    def f(d: Doc) -> str:
        t, c, q = d["title"], _sq_ctx(d), d["question"]
        if pv == "0.1":   # same for 1.1 and 1.2 (the spec lists no 1.2 form; the 1.1 form already has the title)
            return "[題名]:" + t + "\n[問題]:" + c + "\n[質問]:" + q + "\n[答え]:"
        if pv == "0.2":
            return ("題名:" + t + "\n" if version == "1.2" else "") + "文章:" + c + "\n質問:" + q + "\n回答:"
        tc = {"0.4": t + "<NL>" + c}.get(pv, t + "\n" + c) if version == "1.2" else c
        if pv == "0.3":
            return ("### 指示:\n与えられた文脈から、質問に対する答えを抜き出してください。\n\n### 入力:\n文脈：" + tc
                    + "\n質問：" + q + "\n\n### 応答:\n")
        if pv == "0.4":
            return "ユーザー: 文脈：" + tc + "<NL>質問：" + q + "<NL>システム: "
        if pv == "0.5":
            return "ユーザー: 文脈：" + tc + "\n質問：" + q + "\nシステム: "
        assert pv == "0.6"
        return "与えられた文脈から、質問に対する答えを抜き出してください。\n\n文脈：" + tc + "\n質問：" + q + " [/INST] "

    return f


def jaqket_text(pv: str, top_k: int | None = None) -> Callable[[Doc], str]:
    def f(d: Doc) -> str:
        # v0.1 slices ctxs[:TOP_K_LIMIT] with TOP_K_LIMIT=10 (spec §2.6); v0.2 uses what the loader kept (5).
        titles, texts, q = d["ctxs"]["title"][:top_k], d["ctxs"]["text"][:top_k], d["question"]
        if pv == "0.1":
            body = "\n".join("[題名]:" + t + "\n[問題]:" + x for t, x in zip(titles, texts))
            return body + "\n[質問]:" + q + "\n[答え]:"
        if pv == "0.2":
            return "文章:" + "\n".join(texts) + "\n質問:" + q + "\n回答:"
        if pv == "0.3":
            return ("### 指示:\n与えられた文脈から、質問に対する答えを抜き出してください。\n\n### 入力:\n文脈："
                    + "\n".join(texts) + "\n質問：" + q + "\n\n### 応答:\n")
        if pv == "0.4":
            return "ユーザー: 文脈：" + "<NL>".join(texts) + "<NL>質問：" + q + "<NL>システム: "
        if pv == "0.5":
            return "ユーザー: 文脈：" + "\n".join(texts) + "\n質問：" + q + "\nシステム: "
        assert pv == "0.6"
        return ("与えられた文脈から、質問に対する答えを抜き出してください。\n\n文脈：" + "\n".join(texts) + "\n質問："
                + q + " [/INST] ")

    return f


# ---------------------------------------------------------------------------------------------------------------
# The golden table: one entry per task.
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Golden:
    docs: dict[str, Doc]
    desc: str                        # DESCRIPTION (literal)
    sep: str                         # FEWSHOT_SEP (literal)
    text_a: str                      # doc_to_text(A) (literal)
    target_a: str                    # few-shot target of A (literal)
    text: Callable[[Doc], str]       # oracle doc_to_text
    target: Callable[[Doc], str]     # oracle few-shot target
    id_of: Callable[[Doc], str]      # doc id the predictions are keyed by
    choices_a: list[str] | None = None   # scored continuations (multiple choice)
    gold_a: int | None = None
    until: str | None = None         # stop string (generation)
    golds_a: list[str] | None = None
    sampler: str = "random"


GOLDEN: dict[str, Golden] = {}

# --- JCommonsenseQA 1.1 (§2.1) ---------------------------------------------------------------------------------
_JCQA_A_CHOICES = ["赤", "青", "緑", "黄", "白"]
_JCQA_ROWS = {
    # pv: (DESCRIPTION, doc_to_text(A), target(A), FEWSHOT_SEP)
    "0.1": ("[問題]に対する[答え]を[選択肢]の中から選んでください。\n\n",
            "[問題]:空の色は何色ですか\n[選択肢]:[赤, 青, 緑, 黄, 白]\n[答え]:",
            "青", "\n\n"),
    "0.2": ("質問と回答の選択肢を入力として受け取り、選択肢から回答を選択してください。なお、回答は選択肢の番号(例:0)でするもの"
            "とします。 \n\n",                                     # <- the space before \n\n
            "質問:空の色は何色ですか\n選択肢:0.赤,1.青,2.緑,3.黄,4.白\n回答:",
            "1", "\n\n"),                                          # <- shot target is the digit, not the text
    "0.2.1": ("与えられた選択肢の中から、最適な答えを選んでください。 \n\n",
              "質問：空の色は何色ですか\n選択肢：\n- 赤\n- 青\n- 緑\n- 黄\n- 白\n回答：",
              "青", "\n\n"),
    "0.3": (ALPACA_DESC,
            "### 指示:\n与えられた選択肢の中から、最適な答えを選んでください。出力は以下から選択してください：\n- 赤\n- 青\n"
            "- 緑\n- 黄\n- 白\n\n### 入力:\n空の色は何色ですか\n\n### 応答:\n",
            "青", "\n\n"),
    "0.4": ("ユーザー: 与えられた選択肢の中から、最適な答えを選んでください。<NL>システム: 分かりました。<NL>",
            "ユーザー: 質問：空の色は何色ですか<NL>選択肢：<NL>- 赤<NL>- 青<NL>- 緑<NL>- 黄<NL>- 白<NL>システム: ",
            "青", "<NL>"),
    "0.5": ("ユーザー: 与えられた選択肢の中から、最適な答えを選んでください。\nシステム: 分かりました。\n",
            "ユーザー: 質問：空の色は何色ですか\n選択肢：\n- 赤\n- 青\n- 緑\n- 黄\n- 白\nシステム: ",
            "青", "\n"),
    "0.6": (LLAMA2_DESC,
            "与えられた5つの選択肢の中から、最適な答えを選んでください。出力は以下から選択してください：\n- 赤\n- 青\n- 緑\n"
            "- 黄\n- 白\n\n質問：空の色は何色ですか [/INST] ",
            "青", LLAMA2_SEP),
}
for _pv, (_desc, _text, _tgt, _sep) in _JCQA_ROWS.items():
    GOLDEN[f"jcommonsenseqa-1.1-{_pv}"] = Golden(
        JCQA_DOCS, _desc, _sep, _text, _tgt, JCQA_TEXT[_pv],
        (lambda d: str(d["label"])) if _pv == "0.2" else (lambda d: _ch(d)[d["label"]]),
        lambda d: str(d["q_id"]), choices_a=_JCQA_A_CHOICES, gold_a=1)   # 0.2 too: continuations = choice texts

# --- JNLI 1.1 (English labels, random) and 1.3 (Japanese labels, stratified) (§2.2) ---------------------------
_JNLI_ROWS = {
    "1.1": {
        "0.2": ("前提と仮説の関係をentailment、contradiction、neutralの中から回答してください。\n\n制約:\n"
                "- 前提から仮説が、論理的知識や常識的知識を用いて導出可能である場合はentailmentと出力\n"
                "- 前提と仮説が両立しえない場合はcontradictionと出力\n- そのいずれでもない場合はneutralと出力\n\n",
                "前提:男性が自転車に乗っている。\n仮説:人が乗り物に乗っている。\n関係:", "\n\n"),
        "0.3": (ALPACA_DESC,
                "### 指示:\n与えられた前提と仮説の関係を回答してください。\n\n出力は以下から選択してください：\nentailment\n"
                "contradiction\nneutral\n\n### 入力:\n前提：男性が自転車に乗っている。\n仮説：人が乗り物に乗っている。\n\n"
                "### 応答:\n", "\n\n"),
        "0.4": ("ユーザー: 与えられた前提と仮説の関係を回答してください。出力は以下から選択してください：<NL>entailment<NL>"
                "contradiction<NL>neutral<NL>システム: 分かりました。<NL>",
                # published-era form: a literal "\n" (not <NL>) between premise and hypothesis (§2.2, §7.6)
                "ユーザー: 前提：男性が自転車に乗っている。\n仮説：人が乗り物に乗っている。<NL>システム: ", "<NL>"),
        "0.5": ("ユーザー: 与えられた前提と仮説の関係を回答してください。出力は以下から選択してください：\nentailment\n"
                "contradiction\nneutral\nシステム: 分かりました。\n",
                "ユーザー: 前提：男性が自転車に乗っている。\n仮説：人が乗り物に乗っている。\nシステム: ", "\n"),
        "0.6": (LLAMA2_EN_DESC,
                "与えられた前提と仮説の関係を回答してください。\n\n出力は以下から選択してください：\nentailment\ncontradiction\n"
                "neutral\n\n前提：男性が自転車に乗っている。\n仮説：人が乗り物に乗っている。 [/INST] ", LLAMA2_SEP),
    },
    "1.3": {
        "0.2": ("前提と仮説の関係を含意、矛盾、中立の中から回答してください。\n\n制約:\n"
                "- 前提から仮説が、論理的知識や常識的知識を用いて導出可能である場合は含意と出力\n"
                "- 前提と仮説が両立しえない場合は矛盾と出力\n- そのいずれでもない場合は中立と出力\n\n",
                "前提:男性が自転車に乗っている。\n仮説:人が乗り物に乗っている。\n関係:", "\n\n"),
        "0.3": (ALPACA_DESC,
                "### 指示:\n与えられた前提と仮説の関係を回答してください。\n\n出力は以下から選択してください：\n含意\n矛盾\n中立"
                "\n\n### 入力:\n前提：男性が自転車に乗っている。\n仮説：人が乗り物に乗っている。\n\n### 応答:\n", "\n\n"),
        "0.4": ("ユーザー: 与えられた前提と仮説の関係を回答してください。出力は以下から選択してください：<NL>含意<NL>矛盾<NL>"
                "中立<NL>システム: 分かりました。<NL>",
                "ユーザー: 前提：男性が自転車に乗っている。<NL>仮説：人が乗り物に乗っている。<NL>システム: ", "<NL>"),
        "0.5": ("ユーザー: 与えられた前提と仮説の関係を回答してください。出力は以下から選択してください：\n含意\n矛盾\n中立\n"
                "システム: 分かりました。\n",
                "ユーザー: 前提：男性が自転車に乗っている。\n仮説：人が乗り物に乗っている。\nシステム: ", "\n"),
        "0.6": (LLAMA2_DESC,
                "与えられた前提と仮説の関係を回答してください。\n\n出力は以下から選択してください：\n含意\n矛盾\n中立\n\n"
                "前提：男性が自転車に乗っている。\n仮説：人が乗り物に乗っている。 [/INST] ", LLAMA2_SEP),
    },
}
_JNLI_LABELS = {"1.1": ["entailment", "contradiction", "neutral"], "1.3": ["含意", "矛盾", "中立"]}
for _ver, _rows in _JNLI_ROWS.items():
    for _pv, (_desc, _text, _sep) in _rows.items():
        _labels = _JNLI_LABELS[_ver]
        GOLDEN[f"jnli-{_ver}-{_pv}"] = Golden(
            JNLI_DOCS, _desc, _sep, _text, _labels[0], jnli_text(_ver, _pv),
            (lambda L: lambda d: L[d["label"]])(_labels), lambda d: d["sentence_pair_id"],
            choices_a=list(_labels), gold_a=0, sampler="stratified" if _ver == "1.3" else "random")

# --- MARC-ja 1.1 (§2.3) ----------------------------------------------------------------------------------------
_MARC_ROWS = {
    "0.2": ("製品レビューをnegativeかpositiveのいずれかのセンチメントに分類してください。出力は小文字化してください。 \n\n",
            "製品レビュー:とても使いやすい商品でした。\nセンチメント:", "\n\n", ["positive", "negative"]),
    "0.3": (ALPACA_DESC,
            "### 指示:\n以下の製品レビューを、ポジティブまたはネガティブの感情クラスのいずれかに分類してください。\n\n"
            "### 入力:\nとても使いやすい商品でした。\n\n### 応答:\n", "\n\n", ["ポジティブ", "ネガティブ"]),
    "0.4": ("ユーザー: 与えられた製品レビューを、ポジティブまたはネガティブの感情クラスのいずれかに分類してください。<NL>"
            "システム: 分かりました。<NL>",
            "ユーザー: とても使いやすい商品でした。<NL>システム: ", "<NL>", ["ポジティブ", "ネガティブ"]),
    "0.5": ("ユーザー: 与えられた製品レビューを、ポジティブまたはネガティブの感情クラスのいずれかに分類してください。\n"
            "システム: 分かりました。\n",
            "ユーザー: とても使いやすい商品でした。\nシステム: ", "\n", ["ポジティブ", "ネガティブ"]),
    "0.6": (LLAMA2_DESC,
            "以下の製品レビューを、ポジティブまたはネガティブの感情クラスのいずれかに分類してください。\n\n"
            "とても使いやすい商品でした。 [/INST] ", LLAMA2_SEP, ["ポジティブ", "ネガティブ"]),
}
for _pv, (_desc, _text, _sep, _labels) in _MARC_ROWS.items():
    GOLDEN[f"marc_ja-1.1-{_pv}"] = Golden(
        MARC_DOCS, _desc, _sep, _text, _labels[0], MARC_TEXT[_pv], (lambda L: lambda d: L[d["label"]])(_labels),
        lambda d: d["review_id"], choices_a=list(_labels), gold_a=0)

# --- JSQuAD 1.1 / 1.2 (§2.4): ctx = context.split("[SEP]")[-1].strip() ------------------------------------------
_JSQ_DESC_01 = "[題名]と[問題]から[質問]に対する[答え]を抜き出しなさい\n\n"
_JSQ_DESC_04 = "ユーザー: 与えられた文脈から、質問に対する答えを抜き出してください。<NL>システム: 分かりました。<NL>"
_JSQ_DESC_05 = "ユーザー: 与えられた文脈から、質問に対する答えを抜き出してください。\nシステム: 分かりました。\n"
_JSQUAD_ROWS = {
    # (version, pv): (DESCRIPTION, doc_to_text(A), FEWSHOT_SEP, until)
    ("1.1", "0.1"): (_JSQ_DESC_01,
                     "[題名]:日本の首都\n[問題]:東京は日本の首都である。\n[質問]:日本の首都はどこ？\n[答え]:", "\n\n", "\n"),
    ("1.2", "0.1"): (_JSQ_DESC_01,
                     "[題名]:日本の首都\n[問題]:東京は日本の首都である。\n[質問]:日本の首都はどこ？\n[答え]:", "\n\n", "\n"),
    ("1.1", "0.2"): ("質問に対する回答を文章から一言で抽出してください。回答は名詞で答えてください。\n\n",
                     "文章:東京は日本の首都である。\n質問:日本の首都はどこ？\n回答:", "\n\n", "\n"),
    ("1.2", "0.2"): ("質問に対する回答を題名と文章から一言で抽出してください。回答は名詞で答えてください。\n\n",
                     "題名:日本の首都\n文章:東京は日本の首都である。\n質問:日本の首都はどこ？\n回答:", "\n\n", "\n"),
    ("1.1", "0.3"): (ALPACA_DESC,
                     "### 指示:\n与えられた文脈から、質問に対する答えを抜き出してください。\n\n### 入力:\n"
                     "文脈：東京は日本の首都である。\n質問：日本の首都はどこ？\n\n### 応答:\n", "\n\n", "\n"),
    ("1.2", "0.3"): (ALPACA_DESC,
                     "### 指示:\n与えられた文脈から、質問に対する答えを抜き出してください。\n\n### 入力:\n"
                     "文脈：日本の首都\n東京は日本の首都である。\n質問：日本の首都はどこ？\n\n### 応答:\n", "\n\n", "\n"),
    ("1.1", "0.4"): (_JSQ_DESC_04,
                     "ユーザー: 文脈：東京は日本の首都である。<NL>質問：日本の首都はどこ？<NL>システム: ", "<NL>", "<NL>"),
    ("1.2", "0.4"): (_JSQ_DESC_04,
                     "ユーザー: 文脈：日本の首都<NL>東京は日本の首都である。<NL>質問：日本の首都はどこ？<NL>システム: ",
                     "<NL>", "<NL>"),
    ("1.1", "0.5"): (_JSQ_DESC_05,
                     "ユーザー: 文脈：東京は日本の首都である。\n質問：日本の首都はどこ？\nシステム: ", "\n", "\n"),
    ("1.2", "0.5"): (_JSQ_DESC_05,
                     "ユーザー: 文脈：日本の首都\n東京は日本の首都である。\n質問：日本の首都はどこ？\nシステム: ", "\n", "\n"),
    ("1.1", "0.6"): (LLAMA2_DESC,
                     "与えられた文脈から、質問に対する答えを抜き出してください。\n\n文脈：東京は日本の首都である。\n"
                     "質問：日本の首都はどこ？ [/INST] ", LLAMA2_SEP, "\n"),
    ("1.2", "0.6"): (LLAMA2_DESC,
                     "与えられた文脈から、質問に対する答えを抜き出してください。\n\n文脈：日本の首都\n東京は日本の首都である。\n"
                     "質問：日本の首都はどこ？ [/INST] ", LLAMA2_SEP, "\n"),
}
for (_ver, _pv), (_desc, _text, _sep, _until) in _JSQUAD_ROWS.items():
    GOLDEN[f"jsquad-{_ver}-{_pv}"] = Golden(
        JSQUAD_DOCS, _desc, _sep, _text, "東京", jsquad_text(_ver, _pv), lambda d: d["answers"]["text"][0],
        lambda d: d["id"], until=_until, golds_a=["東京", "東京都"])

# --- JAQKET v2 0.1 / 0.2 (§2.6): same templates in both versions ------------------------------------------------
_JAQKET_ROWS = {
    "0.1": ("[題名]と[問題]から[質問]に対する[答え]を抜き出しなさい\n\n",
            "[題名]:富士山\n[問題]:富士山は日本一高い。\n[題名]:山\n[問題]:山は高い。\n[題名]:静岡県\n[問題]:静岡県は東海にある。"
            "\n[題名]:日本\n[問題]:日本は島国だ。\n[題名]:山梨県\n[問題]:山梨県にもある。\n[質問]:日本一高い山は？\n[答え]:",
            "\n\n", "\n"),
    "0.2": ("質問に対する回答を文章から一言で抽出してください。回答は名詞で答えてください。\n\n",
            "文章:富士山は日本一高い。\n山は高い。\n静岡県は東海にある。\n日本は島国だ。\n山梨県にもある。\n"
            "質問:日本一高い山は？\n回答:", "\n\n", "\n"),
    "0.3": (ALPACA_DESC,
            "### 指示:\n与えられた文脈から、質問に対する答えを抜き出してください。\n\n### 入力:\n文脈：富士山は日本一高い。\n"
            "山は高い。\n静岡県は東海にある。\n日本は島国だ。\n山梨県にもある。\n質問：日本一高い山は？\n\n### 応答:\n",
            "\n\n", "\n"),
    "0.4": ("ユーザー: 与えられた文脈から、質問に対する答えを抜き出してください。<NL>システム: 分かりました。<NL>",
            "ユーザー: 文脈：富士山は日本一高い。<NL>山は高い。<NL>静岡県は東海にある。<NL>日本は島国だ。<NL>山梨県にもある。"
            "<NL>質問：日本一高い山は？<NL>システム: ", "<NL>", "<NL>"),
    "0.5": ("ユーザー: 与えられた文脈から、質問に対する答えを抜き出してください。\nシステム: 分かりました。\n",
            "ユーザー: 文脈：富士山は日本一高い。\n山は高い。\n静岡県は東海にある。\n日本は島国だ。\n山梨県にもある。\n"
            "質問：日本一高い山は？\nシステム: ", "\n", "\n"),
    "0.6": (LLAMA2_DESC,
            "与えられた文脈から、質問に対する答えを抜き出してください。\n\n文脈：富士山は日本一高い。\n山は高い。\n"
            "静岡県は東海にある。\n日本は島国だ。\n山梨県にもある。\n質問：日本一高い山は？ [/INST] ", LLAMA2_SEP, "\n"),
}
for _ver in ("0.1", "0.2"):
    for _pv, (_desc, _text, _sep, _until) in _JAQKET_ROWS.items():
        GOLDEN[f"jaqket_v2-{_ver}-{_pv}"] = Golden(
            JAQKET_DOCS, _desc, _sep, _text, "富士山", jaqket_text(_pv, 10 if _ver == "0.1" else None),
            lambda d: d["answers"]["text"][0],
            lambda d: d["qid"], until=_until, golds_a=["富士山"])

EXPECTED_NAMES = sorted([*GOLDEN, "xwinograd_ja"])


# ---------------------------------------------------------------------------------------------------------------
# Reference simulation (spec §1.2 / §1.3), written independently of jbench.
# ---------------------------------------------------------------------------------------------------------------


def ref_context(desc: str, sep: str, shots: list[tuple[str, str]], doc_text: str) -> str:
    labeled = sep.join(t + y for t, y in shots) + sep if shots else ""
    return desc + labeled + doc_text


def ref_stratified(rnd: random.Random, train: list[Doc], k: int, target: Callable[[Doc], str]) -> list[Doc]:
    """`_stratified_fewshot_examples` as described in spec §1.2."""
    strata: dict[str, list[Doc]] = {}
    for d in train:
        strata.setdefault(target(d), []).append(d)
    n = {t: int(len(ds) / len(train) * k) for t, ds in strata.items()}   # ratio = count/len; int(ratio*k)
    while sum(n.values()) < k:
        lo = min(n.values())
        first = next(t for t in n if n[t] == lo)
        n[first] += 1
    samples: list[Doc] = []
    for t, ds in strata.items():
        samples += rnd.sample(ds, n[t])
    rnd.shuffle(samples)
    return samples


def ref_evaluate(g: Golden, val: list[Doc], train: list[Doc], k: int, limit: int | float | None = None,
                 fit: tuple[Callable[[str], list[int]], int] | None = None) -> list[tuple[str, str, list[str]]]:
    """(doc id, context, shot ids) per evaluated doc, as the reference evaluator would build them."""
    rnd = random.Random()
    rnd.seed(42)
    docs = list(val)
    rnd.shuffle(docs)
    if limit is not None:
        limit = int(len(docs) * limit) if limit < 1.0 else int(limit)
    out = []
    for d in docs[:limit]:
        n = k
        while True:
            if n == 0:
                shots: list[Doc] = []
            elif g.sampler == "stratified":
                shots = ref_stratified(rnd, train, n, g.target)
            else:
                shots = rnd.sample(train, n)
            ctx = ref_context(g.desc, g.sep, [(g.text(s), g.target(s)) for s in shots], g.text(d))
            if fit is None:
                break
            encode, max_length = fit
            max_answer = max(len(encode(a)) for a in d["answers"]["text"])
            if len(encode(ctx)) <= max_length - max_answer or n == 0:
                break
            n -= 1   # rebuild with one shot fewer: the RNG is consumed again
        out.append((g.id_of(d), ctx, [g.id_of(s) for s in shots]))
    return out


def char_encode(s: str) -> list[int]:
    """Fake tokenizer: one token per character."""
    return list(range(len(s)))


# ---------------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------------


# Golden names that no JP-stable commit registers (checked against TASK_REGISTRY at every jp-stable commit that
# touched lm_eval/tasks): JSQuAD 1.2 (bca52e7) has no 0.1 class, and 0.6 (c517f0e) came after JAQKET v2 0.1 was
# replaced by 0.2 (5921154).
JBENCH_NUMBERED = {"jsquad-1.2-0.1", "jaqket_v2-0.1-0.6"}
REFERENCE_NAMES = sorted(set(EXPECTED_NAMES) - JBENCH_NUMBERED)


def test_task_names_include_the_45_reference_tasks() -> None:
    """All 45 JP-stable names of these families exist (jnli-1.2-*, which lived 2023-10-19..25 only, excepted), as
    origin "reference". Every other name is marked origin "jbench": the two numbered ones above, and those whose
    prompt version is not a JP-stable number (e.g. "youri-chat")."""
    assert len(EXPECTED_NAMES) == 47 and len(REFERENCE_NAMES) == 45
    tasks = all_tasks()
    assert set(EXPECTED_NAMES) <= set(tasks)
    assert {n for n, t in tasks.items() if t.origin == "reference"} == set(REFERENCE_NAMES)
    for name in set(tasks) - set(REFERENCE_NAMES):
        assert tasks[name].origin == "jbench", name
        if name not in JBENCH_NUMBERED:
            assert not re.fullmatch(r"[0-9.]*", tasks[name].prompt_version), name


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_resolve_full_name(name: str) -> None:
    assert resolve_task(name).name == name


# ---------------------------------------------------------------------------------------------------------------
# Per-task goldens
# ---------------------------------------------------------------------------------------------------------------

NAMES = sorted(GOLDEN)


@pytest.mark.parametrize("name", NAMES)
def test_oracle_matches_literal(name: str) -> None:
    """Self-check of this file: the hand-written oracle reproduces the hand-written literal for doc A."""
    g = GOLDEN[name]
    assert g.text(g.docs["A"]) == g.text_a
    assert g.target(g.docs["A"]) == g.target_a


@pytest.mark.parametrize("name", NAMES)
def test_description(name: str) -> None:
    assert render_description(resolve_task(name)) == GOLDEN[name].desc


@pytest.mark.parametrize("name", NAMES)
def test_doc_to_text_target_and_scoring(name: str) -> None:
    g, task = GOLDEN[name], resolve_task(name)
    r = render_doc(task, g.docs["A"], 0)
    assert r.text == g.text_a
    assert r.target == g.target_a
    assert r.doc_id == g.id_of(g.docs["A"])
    if g.choices_a is not None:
        assert not task.is_generation
        assert r.choices == g.choices_a          # continuations, no leading space
        assert r.gold == g.gold_a
    else:
        assert task.is_generation
        assert task.until == g.until
        assert r.golds == g.golds_a


@pytest.mark.parametrize("name", NAMES)
def test_shot_docs(name: str) -> None:
    g, task = GOLDEN[name], resolve_task(name)
    for key in ("B", "C", "D", "E"):
        r = render_doc(task, g.docs[key], 0)
        assert (r.text, r.target) == (g.text(g.docs[key]), g.target(g.docs[key])), key


@pytest.mark.parametrize("name", NAMES)
def test_two_shot_context(name: str) -> None:
    """description + shot1 text+target + FEWSHOT_SEP + shot2 text+target + FEWSHOT_SEP + doc text."""
    g, task = GOLDEN[name], resolve_task(name)
    b, c = g.docs["B"], g.docs["C"]
    expected = g.desc + g.text(b) + g.target(b) + g.sep + g.text(c) + g.target(c) + g.sep + g.text_a
    shots = [render_doc(task, b, 1), render_doc(task, c, 2)]
    assert fewshot_context(task, render_doc(task, g.docs["A"], 0).text, shots) == expected


@pytest.mark.parametrize("name", NAMES)
def test_zero_shot_context_keeps_description(name: str) -> None:
    g, task = GOLDEN[name], resolve_task(name)
    assert fewshot_context(task, render_doc(task, g.docs["A"], 0).text, []) == g.desc + g.text_a


# Fully literal 2-shot contexts (shots B, C; query A) for a few of the trickiest forms.
FULL_LITERAL = {
    "jcommonsenseqa-1.1-0.2":
        "質問と回答の選択肢を入力として受け取り、選択肢から回答を選択してください。なお、回答は選択肢の番号(例:0)でするものとします。"
        " \n\n"
        "質問:猫の鳴き声は\n選択肢:0.ワン,1.ニャー,2.モー,3.メェ,4.コケコッコー\n回答:1"
        "\n\n"
        "質問:日本の首都は\n選択肢:0.大阪,1.京都,2.名古屋,3.東京,4.札幌\n回答:3"
        "\n\n"
        "質問:空の色は何色ですか\n選択肢:0.赤,1.青,2.緑,3.黄,4.白\n回答:",
    "jcommonsenseqa-1.1-0.4":
        "ユーザー: 与えられた選択肢の中から、最適な答えを選んでください。<NL>システム: 分かりました。<NL>"
        "ユーザー: 質問：猫の鳴き声は<NL>選択肢：<NL>- ワン<NL>- ニャー<NL>- モー<NL>- メェ<NL>- コケコッコー<NL>システム: ニャー"
        "<NL>"
        "ユーザー: 質問：日本の首都は<NL>選択肢：<NL>- 大阪<NL>- 京都<NL>- 名古屋<NL>- 東京<NL>- 札幌<NL>システム: 東京"
        "<NL>"
        "ユーザー: 質問：空の色は何色ですか<NL>選択肢：<NL>- 赤<NL>- 青<NL>- 緑<NL>- 黄<NL>- 白<NL>システム: ",
    "jnli-1.1-0.2":
        "前提と仮説の関係をentailment、contradiction、neutralの中から回答してください。\n\n制約:\n"
        "- 前提から仮説が、論理的知識や常識的知識を用いて導出可能である場合はentailmentと出力\n"
        "- 前提と仮説が両立しえない場合はcontradictionと出力\n- そのいずれでもない場合はneutralと出力\n\n"
        "前提:犬が芝生の上を走っている。\n仮説:犬が眠っている。\n関係:contradiction"
        "\n\n"
        "前提:女性が台所に立っている。\n仮説:女性が料理をしている。\n関係:neutral"
        "\n\n"
        "前提:男性が自転車に乗っている。\n仮説:人が乗り物に乗っている。\n関係:",
    "jnli-1.3-0.5":
        "ユーザー: 与えられた前提と仮説の関係を回答してください。出力は以下から選択してください：\n含意\n矛盾\n中立\n"
        "システム: 分かりました。\n"
        "ユーザー: 前提：犬が芝生の上を走っている。\n仮説：犬が眠っている。\nシステム: 矛盾"
        "\n"
        "ユーザー: 前提：女性が台所に立っている。\n仮説：女性が料理をしている。\nシステム: 中立"
        "\n"
        "ユーザー: 前提：男性が自転車に乗っている。\n仮説：人が乗り物に乗っている。\nシステム: ",
    "marc_ja-1.1-0.6":
        "<s>[INST] <<SYS>>\nあなたは役立つアシスタントです。\n<</SYS>>\n\n"
        "以下の製品レビューを、ポジティブまたはネガティブの感情クラスのいずれかに分類してください。\n\n"
        "すぐに壊れてしまった。 [/INST] ネガティブ"
        " </s><s>[INST] "
        "以下の製品レビューを、ポジティブまたはネガティブの感情クラスのいずれかに分類してください。\n\n"
        "期待通りの品質です。 [/INST] ポジティブ"
        " </s><s>[INST] "
        "以下の製品レビューを、ポジティブまたはネガティブの感情クラスのいずれかに分類してください。\n\n"
        "とても使いやすい商品でした。 [/INST] ",
    "jsquad-1.2-0.4":
        "ユーザー: 与えられた文脈から、質問に対する答えを抜き出してください。<NL>システム: 分かりました。<NL>"
        "ユーザー: 文脈：富士山<NL>富士山の標高は3776メートルである。<NL>質問：富士山の標高は？<NL>システム: 3776メートル"
        "<NL>"
        "ユーザー: 文脈：琵琶湖<NL>琵琶湖は滋賀県にある日本最大の湖である。<NL>質問：日本最大の湖は？<NL>システム: 琵琶湖"
        "<NL>"
        "ユーザー: 文脈：日本の首都<NL>東京は日本の首都である。<NL>質問：日本の首都はどこ？<NL>システム: ",
    "jsquad-1.1-0.6":
        "<s>[INST] <<SYS>>\nあなたは役立つアシスタントです。\n<</SYS>>\n\n"
        "与えられた文脈から、質問に対する答えを抜き出してください。\n\n文脈：富士山の標高は3776メートルである。\n"
        "質問：富士山の標高は？ [/INST] 3776メートル"
        " </s><s>[INST] "
        "与えられた文脈から、質問に対する答えを抜き出してください。\n\n文脈：琵琶湖は滋賀県にある日本最大の湖である。\n"
        "質問：日本最大の湖は？ [/INST] 琵琶湖"
        " </s><s>[INST] "
        "与えられた文脈から、質問に対する答えを抜き出してください。\n\n文脈：東京は日本の首都である。\n"
        "質問：日本の首都はどこ？ [/INST] ",
    "jaqket_v2-0.1-0.2":
        "質問に対する回答を文章から一言で抽出してください。回答は名詞で答えてください。\n\n"
        "文章:琵琶湖は最大の湖。\n湖は水がある。\n滋賀県の湖。\n淡水の湖。\n近江の海。\n質問:日本最大の湖は？\n回答:琵琶湖"
        "\n\n"
        "文章:東京は首都である。\n首都は一つ。\n関東地方。\n皇居がある。\n旧名は江戸。\n質問:日本の首都は？\n回答:東京"
        "\n\n"
        "文章:富士山は日本一高い。\n山は高い。\n静岡県は東海にある。\n日本は島国だ。\n山梨県にもある。\n質問:日本一高い山は？\n回答:",
}


@pytest.mark.parametrize("name", sorted(FULL_LITERAL))
def test_two_shot_context_fully_literal(name: str) -> None:
    g, task = GOLDEN[name], resolve_task(name)
    shots = [render_doc(task, g.docs["B"], 1), render_doc(task, g.docs["C"], 2)]
    assert fewshot_context(task, render_doc(task, g.docs["A"], 0).text, shots) == FULL_LITERAL[name]


# ---------------------------------------------------------------------------------------------------------------
# Specific rules
# ---------------------------------------------------------------------------------------------------------------


def test_jcqa_02_shot_targets_are_digits_but_scored_continuations_are_texts() -> None:
    task = resolve_task("jcommonsenseqa-1.1-0.2")
    r = render_doc(task, JCQA_DOCS["C"], 0)
    assert r.target == "3"
    assert r.choices == ["大阪", "京都", "名古屋", "東京", "札幌"]
    assert r.gold == 3


def test_jnli_11_english_vs_13_japanese_labels() -> None:
    for pv in ("0.2", "0.3", "0.4", "0.5", "0.6"):
        r11 = render_doc(resolve_task(f"jnli-1.1-{pv}"), JNLI_DOCS["C"], 0)
        r13 = render_doc(resolve_task(f"jnli-1.3-{pv}"), JNLI_DOCS["C"], 0)
        assert (r11.choices, r11.target) == (["entailment", "contradiction", "neutral"], "neutral")
        assert (r13.choices, r13.target) == (["含意", "矛盾", "中立"], "中立")


@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith("jsquad-")])
def test_jsquad_context_uses_last_sep_piece_stripped(name: str) -> None:
    """ctx = context.split("[SEP]")[-1].strip(): last piece; Python strip() also removes U+3000 and newlines."""
    doc = {**JSQUAD_DOCS["A"], "context": "日本の首都 [SEP] 前半 [SEP]\u3000 東京は日本の首都である。 \n"}
    assert render_doc(resolve_task(name), doc, 0).text == GOLDEN[name].text_a
    no_sep = {**JSQUAD_DOCS["A"], "context": "  東京は日本の首都である。\t"}
    assert render_doc(resolve_task(name), no_sep, 0).text == GOLDEN[name].text_a


def test_jsquad_ctx_keeps_inner_text_verbatim() -> None:
    doc = {**JSQUAD_DOCS["A"], "context": "日本の首都 [SEP] 東京は 日本の\n首都。"}
    assert render_doc(resolve_task("jsquad-1.1-0.2"), doc, 0).text == "文章:東京は 日本の\n首都。\n質問:日本の首都はどこ？\n回答:"


@pytest.mark.parametrize("pv", ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6"])
def test_jaqket_v01_top_k_limit_slices_ten_contexts(pv: str) -> None:
    """v0.1: TOP_K_LIMIT=10 slices ctxs[:10] (spec §2.6). Unreachable with 5-context data, but the rule is there."""
    n = 12
    doc = _jaqket("QA-X", "問？", ["答"], [f"題{i}" for i in range(n)], [f"文{i}。" for i in range(n)])
    r = render_doc(resolve_task(f"jaqket_v2-0.1-{pv}"), doc, 0)
    assert r.text == jaqket_text(pv, 10)(doc)
    assert "文9。" in r.text and "文10。" not in r.text


def test_xwinograd() -> None:
    task = resolve_task("xwinograd_ja")
    doc = {"sentence1": "太郎は次郎を殴った。彼は怒っていた。 ", "sentence2": " 太郎は次郎を殴った。次郎は怒っていた。",
           "answer": "2"}
    r = render_doc(task, doc, 5)
    assert render_description(task) == ""
    assert r.text == ""
    assert r.choices == ["太郎は次郎を殴った。彼は怒っていた。 ", " 太郎は次郎を殴った。次郎は怒っていた。"]   # unstripped
    assert r.gold == 1
    assert render_doc(task, {**doc, "answer": "1"}, 5).gold == 0
    assert fewshot_context(task, r.text, []) == ""
    insts = build_instances(task, [doc, {**doc, "answer": "1"}], None, 0)
    assert [i.context for i in insts] == ["", ""]
    assert sorted(i.gold for i in insts) == [0, 1]
    with pytest.raises(TaskError):   # always 0-shot, no train split
        build_instances(task, [doc], None, 2)


# ---------------------------------------------------------------------------------------------------------------
# SYSTEM_PROMPT (0.6)
# ---------------------------------------------------------------------------------------------------------------

LLAMA_NAMES = [n for n in NAMES if n.endswith("-0.6")]


@pytest.mark.parametrize("name", LLAMA_NAMES)
def test_system_prompt_default(name: str) -> None:
    """The default of the era the task version existed in: English before a759835 (jnli-1.1-0.6 only)."""
    expected = LLAMA2_EN_DESC if name == "jnli-1.1-0.6" else LLAMA2_DESC
    assert render_description(resolve_task(name)) == expected


@pytest.mark.parametrize("name", LLAMA_NAMES)
def test_system_prompt_env_override(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYSTEM_PROMPT", "You are a helpful assistant.\n日本語で答えて")
    task = resolve_task(name)
    desc = "<s>[INST] <<SYS>>\nYou are a helpful assistant.\n日本語で答えて\n<</SYS>>\n\n"
    assert render_description(task) == desc
    g = GOLDEN[name]
    b = g.docs["B"]
    ctx = fewshot_context(task, render_doc(task, g.docs["A"], 0).text, [render_doc(task, b, 1)])
    assert ctx == desc + g.text(b) + g.target(b) + " </s><s>[INST] " + g.text_a


def test_system_prompt_empty_string_is_used_verbatim(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYSTEM_PROMPT", "")
    assert render_description(resolve_task("jnli-1.3-0.6")) == "<s>[INST] <<SYS>>\n\n<</SYS>>\n\n"


# ---------------------------------------------------------------------------------------------------------------
# Doc order and few-shot RNG (spec §1.2)
# ---------------------------------------------------------------------------------------------------------------


def _val_train(g: Golden) -> tuple[list[Doc], list[Doc]]:
    d = g.docs
    return [d["A"], d["B"], d["C"], d["D"]], [d["B"], d["C"], d["D"], d["E"]]


@pytest.mark.parametrize("name", NAMES)
def test_build_instances_matches_reference_simulation(name: str) -> None:
    """Every task, 2 shots: shuffle with Random(42), then the same rnd draws each doc's shots in shuffled order."""
    g, task = GOLDEN[name], resolve_task(name)
    val, train = _val_train(g)
    fit = (char_encode, 10**6) if name.startswith("jaqket_v2-0.2-") else None
    insts = build_instances(task, val, train, 2, encode=char_encode, max_length=10**6)
    expected = ref_evaluate(g, val, train, 2, fit=fit)
    assert [(i.doc_id, i.context, i.shot_ids) for i in insts] == expected
    by_id = {g.id_of(d): d for d in val}
    for inst in insts:
        doc = by_id[inst.doc_id]
        if g.choices_a is not None:
            assert inst.continuations == render_doc(task, doc, 0).choices
        else:
            assert inst.until == g.until
            assert inst.golds == doc["answers"]["text"]
            # §1.5: cap = token length of the longest gold answer (fake tokenizer: characters)
            assert inst.max_gen_tokens == max(len(a) for a in doc["answers"]["text"])


def _many_jcqa(n: int, prefix: str) -> list[Doc]:
    return [_jcqa(i, f"{prefix}問題{i}", [f"{prefix}{i}-{j}" for j in range(5)], i % 5) for i in range(n)]


@pytest.mark.parametrize("k", [0, 1, 3])
def test_shuffle_and_shots_random42(k: int) -> None:
    g, task = GOLDEN["jcommonsenseqa-1.1-0.1"], resolve_task("jcommonsenseqa-1.1-0.1")
    val, train = _many_jcqa(12, "v"), _many_jcqa(20, "t")
    # The reference, by hand:
    rnd = random.Random()
    rnd.seed(42)
    docs = list(val)
    rnd.shuffle(docs)
    expected = []
    for d in docs:
        shots = rnd.sample(train, k) if k else []
        expected.append((str(d["q_id"]), [str(s["q_id"]) for s in shots]))
    insts = build_instances(task, val, train, k)
    assert [(i.doc_id, i.shot_ids) for i in insts] == expected
    assert [i.context for i in insts] == [r[1] for r in ref_evaluate(g, val, train, k)]


def test_limit_keeps_first_n_after_shuffle() -> None:
    g, task = GOLDEN["jcommonsenseqa-1.1-0.3"], resolve_task("jcommonsenseqa-1.1-0.3")
    val, train = _many_jcqa(10, "v"), _many_jcqa(15, "t")
    perm = list(range(10))
    random.Random(42).shuffle(perm)
    full = build_instances(task, val, train, 3)
    assert [i.doc_id for i in full] == [str(p) for p in perm]
    three = build_instances(task, val, train, 3, limit=3)
    assert [i.doc_id for i in three] == [str(p) for p in perm[:3]]
    assert [(i.context, i.shot_ids) for i in three] == [(i.context, i.shot_ids) for i in full[:3]]
    assert [(i.doc_id, i.context, i.shot_ids) for i in three] == ref_evaluate(g, val, train, 3, limit=3)


def test_float_limit_is_a_fraction() -> None:
    g, task = GOLDEN["marc_ja-1.1-0.2"], resolve_task("marc_ja-1.1-0.2")
    val = [{"review_id": f"V{i}", "sentence": f"レビュー{i}", "label": i % 2} for i in range(10)]
    train = [{"review_id": f"T{i}", "sentence": f"訓練{i}", "label": (i // 3) % 2} for i in range(8)]
    half = build_instances(task, val, train, 3, limit=0.5)          # int(10 * 0.5) = 5
    assert len(half) == 5
    assert [(i.doc_id, i.context, i.shot_ids) for i in half] == ref_evaluate(g, val, train, 3, limit=0.5)
    assert len(build_instances(task, val, train, 3, limit=0.25)) == 2   # int(2.5)
    assert len(build_instances(task, val, train, 3, limit=4)) == 4
    assert len(build_instances(task, val, train, 3, limit=1.0)) == 1    # 1.0 is not < 1: a count


# --- JNLI 1.3 stratified sampler ---------------------------------------------------------------------------------

# Train labels; targets by first appearance: 中立 (idx 0,5), 含意 (1,2,4,6,8,9), 矛盾 (3,7) -> counts 2/6/2 of 10.
STRAT_LABELS = [2, 0, 0, 1, 0, 2, 0, 1, 0, 0]
STRAT_TRAIN = [_jnli(f"t{i}", f"前提{i}。", f"仮説{i}。", lab) for i, lab in enumerate(STRAT_LABELS)]
STRAT_TARGETS = [["含意", "矛盾", "中立"][lab] for lab in STRAT_LABELS]
STRATA = {"中立": [0, 5], "含意": [1, 2, 4, 6, 8, 9], "矛盾": [3, 7]}
# n_t = int(count/10 * k), then +1 to the first stratum (dict order) holding the minimum while the sum is < k:
STRAT_COUNTS = {
    # k=3: int(0.6)=0, int(1.8)=1, int(0.6)=0 -> sum 1; +1 中立 (first min) -> 2; +1 矛盾 (the only 0) -> 3
    3: {"中立": 1, "含意": 1, "矛盾": 1},
    # k=4: int(0.8)=0, int(2.4)=2, int(0.8)=0 -> sum 2; +1 中立 -> 3; +1 矛盾 -> 4
    4: {"中立": 1, "含意": 2, "矛盾": 1},
    # k=5: int(1.0)=1, int(3.0)=3, int(1.0)=1 -> sum 5, no increments
    5: {"中立": 1, "含意": 3, "矛盾": 1},
    # k=7: int(1.4)=1, int(4.2)=4, int(1.4)=1 -> sum 6; +1 中立 (tie 1/1 with 矛盾, first wins) -> 7
    7: {"中立": 2, "含意": 4, "矛盾": 1},
}


@pytest.mark.parametrize("k", sorted(STRAT_COUNTS))
def test_stratified_counts_by_hand(k: int) -> None:
    computed = {t: int(len(ix) / 10 * k) for t, ix in STRATA.items()}
    while sum(computed.values()) < k:
        lo = min(computed.values())
        computed[next(t for t in computed if computed[t] == lo)] += 1
    assert computed == STRAT_COUNTS[k]


@pytest.mark.parametrize("k", sorted(STRAT_COUNTS))
@pytest.mark.parametrize("seed", [42, 0, 7])
def test_stratified_indices_step_by_step(k: int, seed: int) -> None:
    # Hand simulation: rnd.sample per stratum in first-appearance order with the counts above, then rnd.shuffle.
    rnd = random.Random(seed)
    samples: list[int] = []
    for t in ("中立", "含意", "矛盾"):
        samples += rnd.sample(STRATA[t], STRAT_COUNTS[k][t])
    rnd.shuffle(samples)
    after = rnd.random()

    mine = random.Random(seed)
    assert stratified_indices(mine, STRAT_TARGETS, k) == samples
    assert mine.random() == after              # the same number of RNG draws


@pytest.mark.parametrize("k", [3, 5])
def test_jnli_13_build_instances_stratified(k: int) -> None:
    name = "jnli-1.3-0.3"
    g, task = GOLDEN[name], resolve_task(name)
    val = [_jnli(f"v{i}", f"検証前提{i}。", f"検証仮説{i}。", i % 3) for i in range(6)]
    # Reference by hand: shuffle with rnd(42), then per doc the stratified draw from the same rnd.
    rnd = random.Random()
    rnd.seed(42)
    docs = list(val)
    rnd.shuffle(docs)
    expected = []
    for d in docs:
        samples: list[Doc] = []
        for t in ("中立", "含意", "矛盾"):
            samples += rnd.sample([STRAT_TRAIN[i] for i in STRATA[t]], STRAT_COUNTS[k][t])
        rnd.shuffle(samples)
        expected.append((d["sentence_pair_id"], [s["sentence_pair_id"] for s in samples]))
    insts = build_instances(task, val, STRAT_TRAIN, k)
    assert [(i.doc_id, i.shot_ids) for i in insts] == expected
    assert [(i.doc_id, i.context, i.shot_ids) for i in insts] == ref_evaluate(g, val, STRAT_TRAIN, k)
    # Each drawn set has the stratum counts of STRAT_COUNTS[k].
    label_of = {d["sentence_pair_id"]: STRAT_TARGETS[i] for i, d in enumerate(STRAT_TRAIN)}
    for inst in insts:
        got = {t: sum(label_of[s] == t for s in inst.shot_ids) for t in STRATA}
        assert got == STRAT_COUNTS[k]


def test_jnli_11_is_not_stratified() -> None:
    name = "jnli-1.1-0.2"
    g, task = GOLDEN[name], resolve_task(name)
    val = [_jnli(f"v{i}", f"検証前提{i}。", f"検証仮説{i}。", i % 3) for i in range(6)]
    rnd = random.Random()
    rnd.seed(42)
    docs = list(val)
    rnd.shuffle(docs)
    expected = [(d["sentence_pair_id"], [s["sentence_pair_id"] for s in rnd.sample(STRAT_TRAIN, 3)]) for d in docs]
    insts = build_instances(task, val, STRAT_TRAIN, 3)
    assert [(i.doc_id, i.shot_ids) for i in insts] == expected


# --- JAQKET v2 0.2: shrink until it fits -------------------------------------------------------------------------


def _uniform_jaqket(n: int, prefix: str) -> list[Doc]:
    """Docs whose rendered lengths are all equal, so the number of shots that fit does not depend on the draw."""
    return [_jaqket(f"{prefix}{i:02d}", f"{prefix}問{i:02d}？", [f"答{i:02d}"], [f"題{j}" for j in range(5)],
                    [f"{prefix}文{i:02d}{j}。" for j in range(5)]) for i in range(n)]


JQ_VAL, JQ_TRAIN = _uniform_jaqket(4, "V"), _uniform_jaqket(12, "T")


def _jq_lengths(name: str) -> tuple[int, int, int]:
    """(0-shot context length, added length per shot, longest answer) in characters, computed from the oracle."""
    g = GOLDEN[name]
    zero = len(g.desc + g.text(JQ_VAL[0]))
    per_shot = len(g.text(JQ_TRAIN[0]) + g.target(JQ_TRAIN[0]) + g.sep)
    return zero, per_shot, len(JQ_VAL[0]["answers"]["text"][0])


@pytest.mark.parametrize("pv", ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6"])
@pytest.mark.parametrize("fits", [0, 1, 2])
def test_jaqket_02_shrinks_one_shot_at_a_time(pv: str, fits: int) -> None:
    name = f"jaqket_v2-0.2-{pv}"
    g, task = GOLDEN[name], resolve_task(name)
    zero, per_shot, ans = _jq_lengths(name)
    max_length = zero + fits * per_shot + ans          # exactly `fits` shots fit: len(ctx) <= max_length - ans
    k = 3
    # Hand simulation: n = 3, 2, ... with a fresh rnd.sample(train, n) on every retry from the same rnd.
    rnd = random.Random()
    rnd.seed(42)
    docs = list(JQ_VAL)
    rnd.shuffle(docs)
    expected = []
    for d in docs:
        n = k
        while True:
            shots = rnd.sample(JQ_TRAIN, n) if n else []
            ctx = ref_context(g.desc, g.sep, [(g.text(s), g.target(s)) for s in shots], g.text(d))
            if len(ctx) <= max_length - ans:
                break
            n -= 1
        assert n == fits
        expected.append((d["qid"], ctx, [s["qid"] for s in shots]))
    insts = build_instances(task, JQ_VAL, JQ_TRAIN, k, encode=char_encode, max_length=max_length)
    assert [(i.doc_id, i.context, i.shot_ids) for i in insts] == expected
    assert all(len(i.shot_ids) == fits for i in insts)
    assert expected == ref_evaluate(g, JQ_VAL, JQ_TRAIN, k, fit=(char_encode, max_length))


def test_jaqket_02_retry_is_not_a_prefix_of_the_first_draw() -> None:
    """The retry re-samples (RNG consumed again); truncating the first draw would give other shots."""
    name = "jaqket_v2-0.2-0.2"
    zero, per_shot, ans = _jq_lengths(name)
    insts = build_instances(resolve_task(name), JQ_VAL, JQ_TRAIN, 3, encode=char_encode,
                            max_length=zero + per_shot + ans)
    rnd = random.Random()
    rnd.seed(42)
    rnd.shuffle(list(JQ_VAL))
    first3 = [s["qid"] for s in rnd.sample(JQ_TRAIN, 3)]
    first2 = [s["qid"] for s in rnd.sample(JQ_TRAIN, 2)]
    then1 = [s["qid"] for s in rnd.sample(JQ_TRAIN, 1)]
    assert insts[0].shot_ids == then1 == ["T10"]
    assert (first3, first2) == (["T03", "T11", "T02"], ["T11", "T01"])   # none of them is a prefix of another


@pytest.mark.parametrize("pv", ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6"])
def test_jaqket_01_does_not_shrink(pv: str) -> None:
    name = f"jaqket_v2-0.1-{pv}"
    g, task = GOLDEN[name], resolve_task(name)
    zero, per_shot, ans = _jq_lengths(name)
    max_length = zero + ans            # only 0-shot would fit
    insts = build_instances(task, JQ_VAL, JQ_TRAIN, 3, encode=char_encode, max_length=max_length)
    assert all(len(i.shot_ids) == 3 for i in insts)
    assert all(len(i.context) > max_length - ans for i in insts)
    assert [(i.doc_id, i.context, i.shot_ids) for i in insts] == ref_evaluate(g, JQ_VAL, JQ_TRAIN, 3)


# --- Generation budget (§1.5) ------------------------------------------------------------------------------------


def test_generation_cap_is_longest_gold_and_dynamic_max_length_false(monkeypatch: pytest.MonkeyPatch) -> None:
    task = resolve_task("jsquad-1.1-0.2")
    val, train = [JSQUAD_DOCS["A"]], [JSQUAD_DOCS["B"], JSQUAD_DOCS["C"]]
    assert build_instances(task, val, train, 2, encode=char_encode)[0].max_gen_tokens == 3   # "東京都"
    monkeypatch.setenv("DYNAMIC_MAX_LENGTH", "false")
    assert build_instances(task, val, train, 2, encode=char_encode)[0].max_gen_tokens == 256
