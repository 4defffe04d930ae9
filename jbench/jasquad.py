"""The JaSQuAD metric (JSQuAD / JAQKET): the reference's answer normalisation (emoji removal + neologdn), MeCab
tokens, and per-example exact match and token F1, max over gold answers.

It exists apart from :mod:`jbench.metrics` (which aggregates it, and re-exports these names) because it is the one
metric with its own text pipeline and its own dependencies (fugashi, neologdn, emoji).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from jbench.errors import MetricError

__all__ = ["MECAB_MAX_CHARS", "PUNCT_TOKENS", "exact_match_example", "f1_example", "jasquad_normalize",
           "jasquad_tokens"]


_EMOJI_RE = re.compile(
    "["
    "\U0001f600-\U0001f64f"  # emoticons
    "\U0001f300-\U0001f5ff"  # symbols & pictographs
    "\U0001f680-\U0001f6ff"  # transport & map symbols
    "\U0001f1e0-\U0001f1ff"  # flags
    "\U00002702-\U000027b0"  # dingbats
    "]+",
    flags=re.UNICODE,
)

# Tokens that are exactly one of these characters are dropped before F1 (the reference list, which has "》" but
# not "《", plus string.punctuation).
_JA_PUNCT = (
    "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿"
    "–—‘’‛“”„‟…‧﹏."
)
PUNCT_TOKENS: frozenset[str] = frozenset(_JA_PUNCT + string.punctuation)


@lru_cache(maxsize=1)
def _tagger() -> Any:
    """One shared MeCab tagger: constructing it loads the dictionary (slow); parsing is stateless, so reuse
    gives the same tokens as the reference's per-call construction."""
    from fugashi import Tagger

    return Tagger("-Owakati")


def jasquad_normalize(s: str) -> str:
    """The reference ``normalize_answer``: drop emoji, ``neologdn.normalize``, collapse whitespace.

    No lower-casing, no article or punctuation removal (punctuation is handled at token level for F1 only).
    """
    import emoji
    import neologdn

    s = s.encode("utf-8", "replace").decode("utf-8")  # a lone surrogate (possible in JSON data) -> "?"
    s = "".join("" if emoji.is_emoji(c) else c for c in s)
    s = _EMOJI_RE.sub("", s)
    return " ".join(neologdn.normalize(s).split())


#: MeCab (fugashi) crashes the process on one parse of ~2 MB, or of ~200,000 characters with no token boundary;
#: longer strings are tokenized in pieces (the reference would have crashed on them, shorter ones are unchanged).
MECAB_MAX_CHARS = 50_000


def _mecab_pieces(s: str) -> list[str]:
    """``s`` cut into pieces of at most MECAB_MAX_CHARS, preferably after a space."""
    if len(s) <= MECAB_MAX_CHARS:
        return [s]
    pieces, start = [], 0
    while start < len(s):
        end = min(start + MECAB_MAX_CHARS, len(s))
        if end < len(s):
            cut = s.rfind(" ", start + 1, end)
            end = cut + 1 if cut > start else end
        pieces.append(s[start:end])
        start = end
    return pieces


def jasquad_tokens(s: str) -> list[str]:
    """F1 tokens: MeCab wakati tokens of the *normalized* string, minus single-punctuation tokens."""
    tagger = _tagger()
    return [t for piece in _mecab_pieces(jasquad_normalize(s)) for t in tagger.parse(piece).split()
            if t not in PUNCT_TOKENS]


def _as_golds(golds: str | Sequence[str]) -> list[str]:
    out = [golds] if isinstance(golds, str) else list(golds)
    if not out:
        raise MetricError("JaSQuAD metric needs at least one gold answer (the reference max() would fail too)")
    return out


def exact_match_example(pred: str, golds: str | Sequence[str]) -> float:
    """1.0 if the normalized prediction equals any normalized gold answer, else 0.0."""
    p = jasquad_normalize(pred)
    return float(max(p == jasquad_normalize(g) for g in _as_golds(golds)))


def _f1_single(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    common = Counter(pred_tokens) & Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    # same operation order as the SQuAD script, for identical bits
    precision = 1.0 * num_same / len(pred_tokens)
    recall = 1.0 * num_same / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


def f1_example(pred: str, golds: str | Sequence[str]) -> float:
    """SQuAD token F1 over MeCab tokens (see :func:`jasquad_tokens`), max over gold answers; 0 without overlap."""
    pt = jasquad_tokens(pred)
    return float(max(_f1_single(pt, jasquad_tokens(g)) for g in _as_golds(golds)))
