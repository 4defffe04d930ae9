"""Tokenizers that encode exactly like the reference harness.

Why this module exists: with transformers 5, ``AutoTokenizer.from_pretrained(path, use_fast=False)`` on a
rinna-style sentencepiece model still returns a ``tokenizers``-backed class. It collapses repeated spaces, adds a
dummy-prefix ``▁`` and maps unknown scripts to one id, whereas the reference (transformers 4.3x slow ``T5Tokenizer``)
ran real sentencepiece: ``▁ ▁`` kept, ``<0xE1><0x83>…`` byte pieces emitted. So for ``use_fast=False`` with a ``.model``
file we drive ``sentencepiece`` ourselves and re-implement the few slow-tokenizer rules around it:

* **encode**: split the text on special / added token strings (leftmost-longest, like HF's ``Trie``), strip the
  whitespace next to them the way transformers < 4.34 did (tokens given as plain strings in the config strip both
  sides; ``AddedToken`` dicts honour their ``lstrip`` / ``rstrip`` flags), map them to their ids, and hand every other
  piece to ``SentencePieceProcessor.encode``. Never adds BOS/EOS.
* **decode**: the 4.3x slow ``_decode``: sentencepiece decodes runs of ordinary pieces (so byte pieces become UTF-8
  text again), special tokens are kept as their strings with the class's spacing rule (``T5Tokenizer`` also strips the
  result), then ``clean_up_tokenization`` unless the config turns it off (its default was ``True`` then).

With ``use_fast`` True/None the HF ``AutoTokenizer`` is used with ``add_special_tokens=False``, as the reference did.
"""

from __future__ import annotations

import json
import logging
import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from jbench.errors import BackendMissing, ModelError
from jbench.model_files import read_json_object

log = logging.getLogger(__name__)

SPIECE_UNDERLINE = "▁"

#: sentencepiece file names used by HF tokenizer classes, most common first.
SP_MODEL_FILES = ("tokenizer.model", "spiece.model", "sentencepiece.model", "sentencepiece.bpe.model", "spm.model")

#: transformers 4.x ``SPECIAL_TOKENS_ATTRIBUTES`` order (decides ids of special tokens missing from the vocab).
#: constructor defaults of the 4.3x slow classes (used when the config does not name the token).
_CLASS_DEFAULTS: dict[str, dict[str, str]] = {
    "T5Tokenizer": {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"},
    "LlamaTokenizer": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
}
#: 4.3x ``LlamaTokenizer.__init__`` wrapped these in ``AddedToken(lstrip=False, rstrip=False)`` (no stripping) and
#: defaulted ``clean_up_tokenization_spaces`` to False; other classes kept plain strings (stripped) and cleaned up.
_WRAPPED_NAMED = {"LlamaTokenizer": ("bos_token", "eos_token", "unk_token", "pad_token"),
                  "CodeLlamaTokenizer": ("bos_token", "eos_token", "unk_token", "pad_token")}
_CLEANUP_DEFAULT = {"LlamaTokenizer": False, "CodeLlamaTokenizer": False}

_NAMED_SPECIALS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def clean_up_tokenization(text: str) -> str:
    """transformers' ``clean_up_tokenization`` (applied by default by 4.3x ``decode``)."""
    return (
        text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
    )


class HarnessTokenizer(ABC):
    """What the harness needs from a tokenizer (see :class:`jbench.models.base.Tokenizer`).

    ``encode`` never adds special tokens; ``decode`` keeps special tokens (generation output is cut at ``until``)."""

    kind: str
    name_or_path: str
    eos_token_id: int | None
    bos_token_id: int | None
    vocab_size: int

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, name_or_path={self.name_or_path!r}, vocab_size={self.vocab_size})"

    @abstractmethod
    def _vocab_bytes(self) -> bytes:
        """A canonical serialisation of the vocabulary (what maps text pieces to ids)."""

    @abstractmethod
    def _specials_bytes(self) -> bytes:
        """A canonical serialisation of the special / added tokens and how they are handled."""

    def identity(self) -> dict[str, Any]:
        """What decides the ids a text becomes: stored in results.json (``config.tokenizer``) so that ``compare`` and
        ``check`` can refuse to set runs side by side whose tokenizers differ (a tokenizer change is not a
        quantization or model effect)."""
        import hashlib

        return {"class": self.class_name, "kind": self.kind, "vocab_size": int(self.vocab_size),
                "vocab_sha256": hashlib.sha256(self._vocab_bytes()).hexdigest(),
                "special_tokens_sha256": hashlib.sha256(self._specials_bytes()).hexdigest()}

    @property
    def class_name(self) -> str:
        return type(self).__name__


#: fields of :meth:`HarnessTokenizer.identity` that must agree for two runs to be comparable
IDENTITY_FIELDS = ("class", "kind", "vocab_size", "vocab_sha256", "special_tokens_sha256")


def identity_diff(a: Any, b: Any) -> list[str]:
    """The identity fields on which two runs' tokenizers differ (``[]``: same tokenizer).

    ``a``/``b`` are ``config.tokenizer`` values from results.json. Runs written before identities were recorded
    hold a bare kind string (``"sentencepiece"``); it is compared as ``{"kind": ...}`` and any missing field is
    reported as unknown, so an old run is never silently taken as like-for-like."""
    def norm(x: Any) -> dict[str, Any]:
        if isinstance(x, dict):
            return x
        return {"kind": x} if isinstance(x, str) else {}

    da, db = norm(a), norm(b)
    out = []
    for f in IDENTITY_FIELDS:
        va, vb = da.get(f), db.get(f)
        if va is None or vb is None:
            if va != vb or va is None:
                out.append(f"tokenizer.{f}: {va if va is not None else 'unknown'} vs "
                           f"{vb if vb is not None else 'unknown'}")
        elif va != vb:
            out.append(f"tokenizer.{f}: {va} vs {vb}")
    return out


# ----------------------------------------------------------------------------------------------------------------
# sentencepiece (reference "slow" tokenization)
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecialToken:
    """A string that is never split and maps to one id; ``lstrip``/``rstrip`` eat whitespace beside it."""

    content: str
    id: int
    lstrip: bool
    rstrip: bool
    special: bool = True  # part of ``all_special_tokens`` (spacing rule in decode)
    in_base_vocab: bool = True  # False: an "added token" beyond the vocabulary (decoded as its own sub-text)


def _token_spec(value: Any, *, legacy_default_strip: bool) -> tuple[str, bool, bool] | None:
    """(content, lstrip, rstrip) from a config value: a plain string or an ``AddedToken`` dict."""
    if value is None:
        return None
    if isinstance(value, str):
        return value, legacy_default_strip, legacy_default_strip
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"], bool(value.get("lstrip", False)), bool(value.get("rstrip", False))
    return None


def _unreadable(path: Path, err: Exception) -> ModelError:
    return ModelError(f"cannot read tokenizer file: {err}", where=str(path))


def _read_json(path: Path) -> dict[str, Any]:
    """A tokenizer JSON file's object (``{}`` when absent); an unreadable or malformed one is a ModelError."""
    return read_json_object(path, on_error=_unreadable)


class SentencePieceTokenizer(HarnessTokenizer):
    """Reference slow tokenization (transformers 4.3x ``T5Tokenizer`` / ``LlamaTokenizer``) on top of sentencepiece."""

    kind = "sentencepiece"

    def __init__(self, model_file: str | os.PathLike[str], *, config: dict[str, Any] | None = None,
                 special_tokens_map: dict[str, Any] | None = None, added_tokens: dict[str, int] | None = None,
                 name_or_path: str | None = None) -> None:
        try:
            import sentencepiece as spm
        except ImportError as err:  # pragma: no cover - a hard dependency
            raise BackendMissing("sentencepiece is not installed", fix="pip install sentencepiece") from err
        self.model_file = str(model_file)
        self.sp = spm.SentencePieceProcessor(model_file=self.model_file)
        self.name_or_path = name_or_path or str(Path(model_file).parent)
        cfg = dict(config or {})
        self.tokenizer_class: str = str(cfg.get("tokenizer_class") or "")
        for name, default in _CLASS_DEFAULTS.get(self.tokenizer_class.removesuffix("Fast"), {}).items():
            if name not in cfg and name not in (special_tokens_map or {}):
                cfg[name] = default
        self.legacy: bool = cfg.get("legacy") is not False  # 4.3x: None (unset) meant legacy
        base_class = self.tokenizer_class.removesuffix("Fast")
        self._wrapped_named = _WRAPPED_NAMED.get(base_class, ())
        self.clean_up_tokenization_spaces: bool = bool(
            cfg.get("clean_up_tokenization_spaces", _CLEANUP_DEFAULT.get(base_class, True)))
        self.do_lower_case: bool = bool(cfg.get("do_lower_case", False))
        self.extra_ids: int = int(cfg.get("extra_ids", 0) or 0) if "T5" in self.tokenizer_class else 0
        self._sp_size = self.sp.get_piece_size()
        self.vocab_size = self._sp_size + self.extra_ids
        self.specials: dict[str, SpecialToken] = self._collect_specials(cfg, special_tokens_map or {}, added_tokens or {})
        self._by_id: dict[int, SpecialToken] = {t.id: t for t in self.specials.values()}
        self._split_re = (
            re.compile("|".join(re.escape(s) for s in sorted(self.specials, key=len, reverse=True)))
            if self.specials else None
        )
        self.eos_token_id = self._named_id(cfg, special_tokens_map, "eos_token", self.sp.eos_id())
        self.bos_token_id = self._named_id(cfg, special_tokens_map, "bos_token", self.sp.bos_id())
        self.unk_token_id = self._named_id(cfg, special_tokens_map, "unk_token", self.sp.unk_id())
        self.pad_token_id = self._named_id(cfg, special_tokens_map, "pad_token", self.sp.pad_id())
        self._t5_decode = self.tokenizer_class.startswith("T5")

    @property
    def class_name(self) -> str:
        return f"{self.tokenizer_class or 'SentencePiece'} (sentencepiece)"

    def _vocab_bytes(self) -> bytes:
        return bytes(self.sp.serialized_model_proto()) + f"|extra_ids={self.extra_ids}".encode()

    def _specials_bytes(self) -> bytes:
        rows = sorted((t.content, t.id, t.lstrip, t.rstrip, t.special, t.in_base_vocab) for t in self.specials.values())
        named = (self.eos_token_id, self.bos_token_id, self.unk_token_id, self.pad_token_id)
        rules = (self.legacy, self.clean_up_tokenization_spaces, self.do_lower_case)
        return json.dumps([rows, named, rules], ensure_ascii=False).encode()

    # -- construction helpers ------------------------------------------------------------------------------------

    def _sp_id(self, content: str) -> int | None:
        """Id of ``content`` if it is a piece of the sentencepiece vocabulary."""
        i = self.sp.piece_to_id(content)
        return i if 0 <= i < self._sp_size and self.sp.id_to_piece(i) == content else None

    def _collect_specials(self, cfg: dict[str, Any], stm: dict[str, Any], added: dict[str, int]) -> dict[str, SpecialToken]:
        """Every never-split string with its id, as transformers 4.x built ``unique_no_split_tokens``."""
        decoder = cfg.get("added_tokens_decoder") or {}
        by_content: dict[str, tuple[int, dict[str, Any]]] = {}
        for k, v in decoder.items():
            if isinstance(v, dict) and isinstance(v.get("content"), str):
                by_content[v["content"]] = (int(k), v)
        specs: list[tuple[str, bool, bool, bool]] = []  # content, lstrip, rstrip, special
        for src in (cfg, stm):  # special_tokens_map.json wins, as in transformers 4.x ``from_pretrained``
            for name in _NAMED_SPECIALS:
                s = _token_spec(src.get(name), legacy_default_strip=name not in self._wrapped_named)
                if s:
                    specs.append((*s, True))
            for key in ("additional_special_tokens", "extra_special_tokens"):
                vals = src.get(key) or []
                if isinstance(vals, dict):
                    vals = list(vals.values())
                for v in vals:
                    s = _token_spec(v, legacy_default_strip=True)
                    if s:
                        specs.append((*s, True))
        for i in range(self.extra_ids):
            specs.append((f"<extra_id_{i}>", True, True, True))
        for content, (_, v) in by_content.items():
            specs.append((content, bool(v.get("lstrip")), bool(v.get("rstrip")), bool(v.get("special", True))))
        for content in added:
            specs.append((content, True, True, False))

        out: dict[str, SpecialToken] = {}
        taken = [i for i, _ in by_content.values()] + [int(i) for i in added.values()]
        next_id = max([self.vocab_size - 1, *taken]) + 1
        for content, lstrip, rstrip, special in specs:
            if not content:
                continue
            if content in by_content:  # added_tokens_decoder is authoritative (transformers >= 4.34 files)
                tid, v = by_content[content]
                lstrip, rstrip = bool(v.get("lstrip")), bool(v.get("rstrip"))
                special = special or bool(v.get("special", True))
            elif content in added:
                tid = int(added[content])
            elif (sid := self._sp_id(content)) is not None:
                tid = sid
            elif content.startswith("<extra_id_") and self.extra_ids:
                tid = self._sp_size + self.extra_ids - 1 - int(content[len("<extra_id_"):-1])
            elif content in out:
                continue
            else:
                tid, next_id = next_id, next_id + 1
            prev = out.get(content)
            out[content] = SpecialToken(
                content, tid, lstrip, rstrip,
                special=special or (prev.special if prev else False),
                in_base_vocab=tid < self.vocab_size,
            )
        return out

    def _named_id(self, cfg: dict[str, Any], stm: dict[str, Any] | None, name: str, sp_default: int) -> int | None:
        for src in (stm or {}, cfg):
            s = _token_spec(src.get(name), legacy_default_strip=False)
            if s:
                tok = self.specials.get(s[0])
                return tok.id if tok else self._sp_id(s[0])
        if name in cfg or (stm and name in stm):  # explicitly null
            return None
        return sp_default if sp_default >= 0 else None

    # -- encode --------------------------------------------------------------------------------------------------

    def _split(self, text: str) -> list[str | SpecialToken]:
        """Split on special strings and strip whitespace beside them (transformers 4.x ``tokenize``)."""
        if self._split_re is None:
            return [text] if text else []
        parts: list[str | SpecialToken] = []
        pos = 0
        for m in self._split_re.finditer(text):
            parts.append(text[pos:m.start()])
            parts.append(self.specials[m.group(0)])
            pos = m.end()
        parts.append(text[pos:])
        for i, part in enumerate(parts):
            if isinstance(part, SpecialToken):
                if part.rstrip and i + 1 < len(parts) and isinstance(parts[i + 1], str):
                    parts[i + 1] = parts[i + 1].lstrip()  # type: ignore[union-attr]
                if part.lstrip and i > 0 and isinstance(parts[i - 1], str):
                    parts[i - 1] = parts[i - 1].rstrip()  # type: ignore[union-attr]
        return [p for p in parts if not (isinstance(p, str) and p == "")]

    def _encode_piece(self, text: str) -> list[int]:
        """sentencepiece on one non-special segment; non-legacy mode follows the 4.3x ``legacy=False`` rule."""
        if self.do_lower_case:
            text = text.lower()
        if self.legacy:
            return list(self.sp.encode(text))
        # legacy=False: the whole text got one leading "▁"; later segments must not get sentencepiece's dummy prefix
        is_first = text.startswith(SPIECE_UNDERLINE)
        if is_first:
            text = text[1:]
        pieces = self.sp.encode(text, out_type=str)
        if not is_first and not text.startswith(" ") and pieces and pieces[0].startswith(SPIECE_UNDERLINE):
            pieces = ([pieces[0][1:]] if len(pieces[0]) > 1 else []) + pieces[1:]
        return [self.sp.piece_to_id(p) for p in pieces]

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without BOS/EOS; equals ``SentencePieceProcessor.encode`` on plain text."""
        if not self.legacy:
            text = SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " ")
        ids: list[int] = []
        for part in self._split(text):
            if isinstance(part, SpecialToken):
                ids.append(part.id)
            else:
                ids.extend(self._encode_piece(part))
        return ids

    # -- decode --------------------------------------------------------------------------------------------------

    def _piece(self, i: int) -> str | None:
        tok = self._by_id.get(i)
        if tok is not None:
            return tok.content
        if 0 <= i < self._sp_size:
            return self.sp.id_to_piece(i)
        return None  # out of range (e.g. padded embedding rows): nothing to show

    def _tokens_to_string(self, tokens: list[str]) -> str:
        """4.3x ``convert_tokens_to_string``: specials verbatim, the rest through sentencepiece (bytes -> UTF-8)."""
        out, sub, prev_special = "", [], False
        for i, tok in enumerate(tokens):
            s = self.specials.get(tok)
            if s is not None and s.special:
                if not prev_special and (self._t5_decode or i != 0):
                    out += " "
                out += self.sp.decode(sub) + tok
                prev_special, sub = True, []
            else:
                sub.append(tok)
                prev_special = False
        out += self.sp.decode(sub)
        return out.strip() if self._t5_decode else out

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` with special tokens kept, as transformers 4.3x slow ``decode`` produced it."""
        sub_texts: list[str] = []
        current: list[str] = []
        for i in ids:
            tok = self._piece(int(i))
            if tok is None:
                continue
            st = self.specials.get(tok)
            if st is not None and not st.in_base_vocab:  # "added token": its own sub-text
                if current:
                    sub_texts.append(self._tokens_to_string(current))
                    current = []
                sub_texts.append(tok)
            else:
                current.append(tok)
        if current:
            sub_texts.append(self._tokens_to_string(current))
        text = " ".join(sub_texts)  # spaces_between_special_tokens=True (the 4.3x default)
        return clean_up_tokenization(text) if self.clean_up_tokenization_spaces else text

    def __len__(self) -> int:
        return max([self.vocab_size, *(t.id + 1 for t in self.specials.values())])

    @classmethod
    def from_dir(cls, path: str | os.PathLike[str], model_file: Path) -> "SentencePieceTokenizer":
        d = Path(path)
        return cls(
            model_file,
            config=_read_json(d / "tokenizer_config.json"),
            special_tokens_map=_read_json(d / "special_tokens_map.json"),
            added_tokens={k: int(v) for k, v in _read_json(d / "added_tokens.json").items()},
            name_or_path=str(path),
        )


# ----------------------------------------------------------------------------------------------------------------
# HF (fast or other) tokenizers
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class HFTokenizer(HarnessTokenizer):
    """Wraps any HF tokenizer: ``encode(add_special_tokens=False)`` and ``decode`` keeping special tokens."""

    tok: Any
    kind: str = "fast"
    name_or_path: str = ""
    clean_up_tokenization_spaces: bool = True
    eos_token_id: int | None = field(init=False)
    bos_token_id: int | None = field(init=False)
    vocab_size: int = field(init=False)

    def __post_init__(self) -> None:
        self.name_or_path = self.name_or_path or str(getattr(self.tok, "name_or_path", ""))
        self.eos_token_id = _maybe_int(getattr(self.tok, "eos_token_id", None))
        self.bos_token_id = _maybe_int(getattr(self.tok, "bos_token_id", None))
        self.vocab_size = int(getattr(self.tok, "vocab_size", 0) or len(self.tok))

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        text = self.tok.decode(list(map(int, ids)), skip_special_tokens=False, clean_up_tokenization_spaces=False)
        return clean_up_tokenization(text) if self.clean_up_tokenization_spaces else text

    def __len__(self) -> int:
        return len(self.tok)

    def __repr__(self) -> str:  # the dataclass repr would print the whole vocabulary
        return HarnessTokenizer.__repr__(self)

    @property
    def class_name(self) -> str:
        return type(self.tok).__name__

    def _vocab_bytes(self) -> bytes:
        get_vocab = getattr(self.tok, "get_vocab", None)
        vocab = get_vocab() if callable(get_vocab) else {}
        return json.dumps(sorted(vocab.items(), key=lambda kv: kv[1]), ensure_ascii=False).encode()

    def _specials_bytes(self) -> bytes:
        added = getattr(self.tok, "added_tokens_decoder", {}) or {}
        rows = sorted((int(i), str(getattr(t, "content", t)), bool(getattr(t, "lstrip", False)),
                       bool(getattr(t, "rstrip", False)), bool(getattr(t, "special", False)))
                      for i, t in added.items())
        named = (self.eos_token_id, self.bos_token_id)
        return json.dumps([rows, named, self.clean_up_tokenization_spaces], ensure_ascii=False).encode()


def _maybe_int(x: Any) -> int | None:
    return None if x is None else int(x)


def find_sp_model(path: str | os.PathLike[str]) -> Path | None:
    """The sentencepiece model file of a local model directory, if it has one."""
    d = Path(path)
    if not d.is_dir():
        return None
    cfg = _read_json(d / "tokenizer_config.json")
    names = [str(cfg["vocab_file"])] if isinstance(cfg.get("vocab_file"), str) else []
    for name in (*names, *SP_MODEL_FILES):
        p = d / Path(name).name
        if p.is_file():
            return p
    models = sorted(d.glob("*.model"))
    return models[0] if len(models) == 1 else None


def wrap_hf_tokenizer(tok: Any, *, kind: str | None = None) -> HFTokenizer:
    """Wrap an already-loaded HF tokenizer (used by :meth:`HFScorer.from_loaded`)."""
    if kind is None:
        kind = "fast" if bool(getattr(tok, "is_fast", False)) else "slow"
    init = dict(getattr(tok, "init_kwargs", {}) or {})
    init.setdefault("tokenizer_class", type(tok).__name__)
    return HFTokenizer(tok, kind=kind, clean_up_tokenization_spaces=_cleanup_flag(init))


def load_tokenizer(path_or_id: str | os.PathLike[str], *, use_fast: bool | None = None, trust_remote_code: bool = False,
                   revision: str | None = None) -> HarnessTokenizer:
    """Load the tokenizer the reference would have used for ``use_fast``.

    ``use_fast=False`` + a sentencepiece ``.model`` file -> :class:`SentencePieceTokenizer` (kind ``"sentencepiece"``),
    because transformers 5 no longer has slow sentencepiece classes. Otherwise the HF ``AutoTokenizer``."""
    path = str(path_or_id)
    if use_fast is False:
        sp_file = find_sp_model(path)
        if sp_file is None and not Path(path).exists():
            sp_file = _hub_sp_model(path, revision)
        if sp_file is not None:
            tok = SentencePieceTokenizer.from_dir(sp_file.parent, sp_file)
            tok.name_or_path = path
            return tok
    try:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(path, use_fast=use_fast is not False, trust_remote_code=trust_remote_code,
                                           revision=revision)
    except (OSError, ValueError, KeyError, TypeError, ImportError) as err:
        raise ModelError(f"cannot load a tokenizer from {path!r}: {err}", where=path,
                         fix="pass a local model directory (with tokenizer files) or a cached hub id") from err
    kind = "fast" if bool(getattr(hf, "is_fast", False)) else "slow"
    if use_fast is False and kind == "fast":
        log.warning("use_fast=False asked for %s but transformers returned a fast tokenizer (%s); "
                    "tokenization may differ from the reference's slow tokenizer", path, type(hf).__name__)
    cfg = _read_json(Path(path) / "tokenizer_config.json") if Path(path).is_dir() else {}
    return HFTokenizer(hf, kind=kind, name_or_path=path, clean_up_tokenization_spaces=_cleanup_flag(cfg))


def _cleanup_flag(cfg: dict[str, Any]) -> bool:
    """``clean_up_tokenization_spaces`` as transformers 4.3x resolved it (config, else the class default)."""
    default = _CLEANUP_DEFAULT.get(str(cfg.get("tokenizer_class") or "").removesuffix("Fast"), True)
    return bool(cfg.get("clean_up_tokenization_spaces", default))


def _hub_sp_model(repo_id: str, revision: str | None) -> Path | None:
    """A cached hub snapshot's sentencepiece file (offline lookup only; no downloads are attempted)."""
    try:
        from huggingface_hub import snapshot_download

        d = snapshot_download(repo_id, revision=revision, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached / not a repo id: fall through to AutoTokenizer's error
        return None
    return find_sp_model(d)
