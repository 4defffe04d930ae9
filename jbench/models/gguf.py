"""``gguf`` variant: a ``.gguf`` file evaluated with llama.cpp's own kernels (llama-cpp-python), HF-scorer semantics.

Why a separate backend rather than transformers' ``gguf_file=``: transformers *dequantizes* GGUF weights to float and
runs its own matmuls, so it measures the rounding of the weights but not llama.cpp's quantized kernels (which also
quantize activations for K-quant dot products). "What does quantization cost in llama.cpp" needs llama.cpp.

Rules shared with :class:`jbench.models.hf.HFScorer` so that deltas are quantization, not plumbing (the request
types and tokenization rules are the same code, :mod:`jbench.models.planning`):

* prompts are tokenized by the **original model's tokenizer** (``spec.extra["tokenizer"]``, else tokenizer files next
  to the .gguf, which ``jbench quantize`` copies there; only then the GGUF's own vocabulary), with the same
  ``encode_context`` / ``model_input`` rules; the GGUF vocabulary is checked against that tokenizer id by id
  (``vocab_check``; a warning when they disagree, because the same ids would then mean different tokens);
* loglikelihood = sum of log-softmax (float64) of llama.cpp's logits at the continuation positions;
* generation = greedy, stop on the last token of ``encode(until)`` or the cap, decode, cut at ``until``; the original
  model's ``generation_config.repetition_penalty`` is applied as HF does.

llama.cpp's default f16 KV cache alone moves logits (max |Δlogit| 3e-2 on a random-init tiny Llama, |ΔLL| ~1e-3 on
the trained test model); we default to an **f32 KV cache** (``spec.extra["kv_type"]``: ``f32`` | ``f16`` | ``q8_0``)
so an f32 GGUF reproduces HF fp32 to ~1e-5 and the measured delta is the weight quantization.

Prefix sharing: requests are sorted by token sequence and each evaluation keeps the KV cache of the longest common
prefix with the previous one (``n_tokens`` rewind; ``Llama.eval`` drops the rest of the cache), so a few-shot context
runs once per question and each choice only runs its own tokens.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from jbench.errors import BackendMissing, ModelError
from jbench.models.base import GenerationRequest, LoglikelihoodRequest, ScorerStats
from jbench.models.planning import Item, generation_row, generation_text, tokenize_requests

log = logging.getLogger(__name__)

LLAMACPP_HINT = 'pip install "jbench[llamacpp]"  (compiles llama.cpp: 4-6 min)'

#: text used to compare the two tokenizations (informational; the id-by-id vocabulary check is what matters).
PROBE_TEXT = "質問：猫はどこで本を読みますか？\n答え：公園で読みます。 Hello, world! 123 ４５６"

_KV_TYPES = {"f32": "GGML_TYPE_F32", "f16": "GGML_TYPE_F16", "q8_0": "GGML_TYPE_Q8_0"}

#: start small: the scores buffer is n_ctx x n_vocab floats; it grows on demand up to ``max_length``.
_INITIAL_N_CTX = 512


def import_llama_cpp() -> Any:
    """The ``llama_cpp`` module (the gguf variant and ``jbench quantize --method gguf`` both need it)."""
    try:
        import llama_cpp
    except ImportError as err:
        raise BackendMissing("llama-cpp-python is not installed (needed for GGUF quantization and evaluation)",
                             fix=LLAMACPP_HINT) from err
    return llama_cpp


@dataclass
class VocabCheck:
    """How the GGUF vocabulary compares with the tokenizer used for prompts.

    ``agreement`` is the fraction of compared ids whose token strings are equal (1.0 = the ids mean the same tokens);
    ``probe_equal`` says whether both tokenizers split :data:`PROBE_TEXT` identically (informational: prompts are
    always tokenized by the HF tokenizer)."""

    tokenizer_source: str
    gguf_n_vocab: int
    tokenizer_n_vocab: int
    compared: int = 0
    mismatches: int = 0
    examples: list[tuple[int, str, str]] = field(default_factory=list)
    probe_equal: bool | None = None

    @property
    def agreement(self) -> float:
        return 1.0 - self.mismatches / self.compared if self.compared else 1.0


class LlamaCppTokenizer:
    """The GGUF's own vocabulary as a harness tokenizer (fallback when the original tokenizer is not available)."""

    kind = "gguf"

    def __init__(self, llm: Any, name_or_path: str) -> None:
        self._llm = llm
        self.name_or_path = name_or_path
        self.eos_token_id: int | None = _valid_id(llm.token_eos())
        self.bos_token_id: int | None = _valid_id(llm.token_bos())
        self.vocab_size = int(llm.n_vocab())

    def encode(self, text: str) -> list[int]:
        # special=True: like HF encode(add_special_tokens=False), special-token strings in the text map to their ids
        return [int(t) for t in self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)] if text else []

    def decode(self, ids: Sequence[int]) -> str:
        return self._llm.detokenize([int(i) for i in ids], special=True).decode("utf-8", errors="replace")


def _valid_id(i: int) -> int | None:
    return int(i) if i is not None and int(i) >= 0 else None


class GGUFScorer:
    """llama.cpp-backed :class:`jbench.models.base.Scorer` with the HF scorer's tokenization and semantics."""

    def __init__(self, gguf_path: str | os.PathLike[str], *, tokenizer: Any | None = None,
                 tokenizer_source: str | None = None, max_length: int | None = None, kv_type: str = "f32",
                 n_threads: int | None = None, n_gpu_layers: int = 0, repetition_penalty: float = 1.0,
                 n_batch: int = 512, llama_kwargs: dict[str, Any] | None = None) -> None:
        self.llama_cpp = import_llama_cpp()
        self.llama_kwargs = dict(llama_kwargs or {})  # --model-args for Llama(...): flash_attn, use_mmap, seed...
        self.path = str(gguf_path)
        if kv_type not in _KV_TYPES:
            raise ModelError(f"unknown kv_type {kv_type!r}", fix=f"choose one of {', '.join(_KV_TYPES)}")
        self.kv_type = kv_type
        # half the logical CPUs (llama-cpp-python's own default for generation): ggml's threads spin-wait, and with
        # every core busy (or hyper-threads) a tiny model ran 100x slower on 2 threads than on 1
        self.n_threads = int(n_threads or max(1, (os.cpu_count() or 2) // 2))
        self.n_gpu_layers = int(n_gpu_layers)
        self.n_batch = int(n_batch)
        self.repetition_penalty = float(repetition_penalty or 1.0)
        self._llm: Any = None
        self._n_ctx = 0
        self._evaluated: list[int] = []
        self._open(_INITIAL_N_CTX)
        self.metadata: dict[str, str] = dict(getattr(self._llm, "metadata", {}) or {})
        self.n_ctx_train = int(self._llm._model.n_ctx_train())
        self.max_length = int(max_length) if max_length else (self.n_ctx_train if self.n_ctx_train > 0 else 2048)
        self.n_vocab = int(self._llm.n_vocab())
        if tokenizer is None:
            self.tokenizer: Any = LlamaCppTokenizer(self._llm, self.path)
            self.tokenizer_source = "gguf"
            log.warning("no original tokenizer given for %s: prompts are tokenized with the GGUF's own vocabulary "
                        "(llama.cpp), which can split text differently from the HF tokenizer; pass "
                        "extra.tokenizer=<original model dir> for comparable results", self.path)
            self.vocab_check = VocabCheck("gguf", self.n_vocab, self.n_vocab)
        else:
            self.tokenizer = tokenizer
            self.tokenizer_source = tokenizer_source or str(getattr(tokenizer, "name_or_path", ""))
            self.vocab_check = check_vocab(self._llm, tokenizer, self.tokenizer_source)
        self.vocab_agreement = self.vocab_check.agreement
        self.quantization = {
            "variant": "gguf", "file": self.path, "file_type": _file_type_name(self.metadata.get("general.file_type")),
            "architecture": self.metadata.get("general.architecture"), "kv_type": self.kv_type,
            "tokenizer": self.tokenizer_source, "vocab_agreement": self.vocab_agreement,
            "n_threads": self.n_threads,
        }
        self.reset_counters()

    # -- llama.cpp context ---------------------------------------------------------------------------------------

    def _open(self, n_ctx: int) -> None:
        """(Re)create the llama.cpp context with ``n_ctx`` positions (the model file is mmapped: cheap)."""
        lc = self.llama_cpp
        if self._llm is not None:
            self._finalizer()
        kv = getattr(lc, _KV_TYPES[self.kv_type])
        try:
            self._llm = lc.Llama(model_path=self.path, n_ctx=n_ctx, n_batch=min(self.n_batch, n_ctx),
                                 n_ubatch=min(self.n_batch, n_ctx), logits_all=True, verbose=False,
                                 n_threads=self.n_threads, n_threads_batch=self.n_threads,
                                 n_gpu_layers=self.n_gpu_layers, type_k=kv, type_v=kv, **self.llama_kwargs)
        except (ValueError, RuntimeError, TypeError) as err:
            raise ModelError(f"llama.cpp cannot load {self.path}: {err}", where=self.path,
                             fix="check that the file is a GGUF model of an architecture this llama.cpp "
                                 "supports") from err
        # close while the interpreter is intact (Llama.__del__ at shutdown raises "NoneType is not callable")
        self._finalizer = weakref.finalize(self, self._llm.close)
        self._n_ctx = n_ctx
        self._evaluated = []

    def _ensure_ctx(self, need: int) -> None:
        if need <= self._n_ctx:
            return
        if need > self.max_length:  # cannot happen with model_input's truncation; guard anyway
            raise ModelError(f"an input of {need} tokens exceeds max_length={self.max_length}")
        n = min(self.max_length, max(need, 2 * self._n_ctx))
        n = min(self.max_length, -(-n // 256) * 256)
        tok = self.tokenizer if self.tokenizer_source != "gguf" else None
        self._open(n)
        if tok is None:  # the fallback tokenizer holds the old Llama object
            self.tokenizer = LlamaCppTokenizer(self._llm, self.path)

    def _eval_to(self, tokens: Sequence[int]) -> None:
        """Make the context hold exactly ``tokens`` with logits for every position, reusing the KV cache of the
        longest common prefix with what was evaluated last."""
        tokens = list(tokens)
        self._ensure_ctx(len(tokens))
        prev = self._evaluated
        n = min(len(prev), len(tokens))
        lcp = 0
        while lcp < n and prev[lcp] == tokens[lcp]:
            lcp += 1
        llm = self._llm
        llm.n_tokens = lcp  # eval() removes KV entries from n_tokens on, then appends the rest
        if lcp < len(tokens):
            llm.eval(tokens[lcp:])
            self.tokens_processed += len(tokens) - lcp
            self.forward_calls += 1
        self._evaluated = tokens

    def _logits(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self._llm.scores[start:stop], dtype=np.float64)

    def reset_counters(self) -> None:
        """``tokens_processed``: tokens llama.cpp evaluated (shared prefixes counted once)."""
        self.tokens_processed = 0
        self.generated_tokens_processed = 0
        self.forward_calls = 0

    def stats(self) -> ScorerStats:
        """llama.cpp evaluates one sequence at a time, reusing the KV cache of the common prefix with the previous
        one (the "lcp" sharing path)."""
        return ScorerStats(tokens_processed=self.tokens_processed,
                           generated_tokens_processed=self.generated_tokens_processed, sharing="lcp",
                           extra={"forward_calls": self.forward_calls})

    def close(self) -> None:
        """Free llama.cpp's model and context now (also done at garbage collection / exit)."""
        if self._llm is not None:
            self._finalizer()
            self._llm = None

    # -- loglikelihood ---------------------------------------------------------------------------------------------

    def _prepare(self, requests: Sequence[LoglikelihoodRequest]) -> list[Item]:
        """The HF scorer's tokenized requests (:func:`tokenize_requests`), checked against the GGUF vocabulary."""
        items = tokenize_requests(self.tokenizer, requests, self.max_length)
        bad = [t for it in items for t in it.inp if not 0 <= t < self.n_vocab]
        if bad:
            raise ModelError(f"token id {bad[0]} is outside the GGUF vocabulary ({self.n_vocab} tokens)",
                             where=self.path, fix="the tokenizer does not belong to this GGUF model")
        return items

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[float]:
        """Sum of continuation log-probabilities per request, in request order."""
        items = self._prepare(requests)
        out = [0.0] * len(items)  # an empty continuation scores 0, as in the reference
        for it in sorted((it for it in items if it.n_cont > 0), key=lambda it: it.inp):
            self._eval_to(it.inp)
            logits = self._logits(it.first_scored, len(it.inp))
            lse = _logsumexp(logits)
            out[it.index] = float(sum(logits[k, t] - lse[k] for k, t in enumerate(it.targets)))
        return out

    # -- generation ------------------------------------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """Greedy continuation of each context, cut at the first ``until``; in request order."""
        texts = []
        for req in requests:
            ctx, stop, cap = generation_row(self.tokenizer, req, self.max_length)  # the HF scorer's rules
            toks = self._greedy(ctx, stop, cap) if cap > 0 else []
            texts.append(generation_text(self.tokenizer, toks, req.until))
        return texts

    def _greedy(self, ctx: list[int], stop: int | None, cap: int) -> list[int]:
        seq = list(ctx)
        out: list[int] = []
        while True:
            self._eval_to(seq)
            step = np.asarray(self._llm.scores[len(seq) - 1], dtype=np.float32).copy()
            if self.repetition_penalty != 1.0:
                step = _penalize(step, seq, self.repetition_penalty)
            tok = int(np.argmax(step))
            out.append(tok)
            seq.append(tok)
            self.generated_tokens_processed += 1
            if tok == stop or len(out) >= cap or len(seq) >= self.max_length:
                return out


def _file_type_name(value: str | None) -> str | None:
    """``general.file_type`` (a LLAMA_FTYPE number) as a name such as ``MOSTLY_Q4_K_M``."""
    if value is None:
        return None
    try:
        import gguf

        return gguf.LlamaFileType(int(value)).name
    except (ImportError, ValueError):
        return str(value)


def _logsumexp(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=-1)
    return m + np.log(np.exp(x - m[:, None]).sum(axis=-1))


def _penalize(logits: np.ndarray, seen: Sequence[int], penalty: float) -> np.ndarray:
    """HF ``RepetitionPenaltyLogitsProcessor``."""
    idx = np.unique(np.asarray(seen, dtype=np.int64))
    s = logits[idx]
    logits[idx] = np.where(s < 0, s * penalty, s / penalty)
    return logits


# ----------------------------------------------------------------------------------------------------------------
# vocabulary agreement
# ----------------------------------------------------------------------------------------------------------------


def tokenizer_pieces(tokenizer: Any) -> list[str] | None:
    """Token strings of a harness tokenizer by id (sentencepiece pieces, or the HF vocabulary's strings)."""
    sp = getattr(tokenizer, "sp", None)
    if sp is not None:
        n = len(tokenizer) if hasattr(tokenizer, "__len__") else int(sp.get_piece_size())
        pieces = [sp.id_to_piece(i) if i < sp.get_piece_size() else "" for i in range(n)]
        for st in getattr(tokenizer, "specials", {}).values():
            if 0 <= st.id < n:
                pieces[st.id] = st.content
        return pieces
    hf = getattr(tokenizer, "tok", None)
    if hf is not None and hasattr(hf, "convert_ids_to_tokens"):
        n = len(hf)
        return [str(t) if t is not None else "" for t in hf.convert_ids_to_tokens(list(range(n)))]
    return None


def check_vocab(llm: Any, tokenizer: Any, source: str) -> VocabCheck:
    """Compare the GGUF's token strings with the tokenizer's for every id both have; warn on disagreement."""
    n_gguf = int(llm.n_vocab())
    pieces = tokenizer_pieces(tokenizer)
    n_tok = len(pieces) if pieces is not None else int(getattr(tokenizer, "vocab_size", 0) or 0)
    check = VocabCheck(source, n_gguf, n_tok)
    if pieces is not None:
        for i in range(min(n_gguf, len(pieces))):
            g = llm._model.token_get_text(i)
            h = pieces[i]
            if g == h or (not h and g.startswith("[PAD")):
                check.compared += 1
                continue
            # user-defined added tokens are stored with "▁" replaced by " " (convert_hf_to_gguf does the same)
            if g == h.replace("\u2581", " "):
                check.compared += 1
                continue
            check.compared += 1
            check.mismatches += 1
            if len(check.examples) < 5:
                check.examples.append((i, h, g))
        if len(pieces) > n_gguf:
            check.mismatches += len(pieces) - n_gguf
            check.compared += len(pieces) - n_gguf
    try:
        ours = list(tokenizer.encode(PROBE_TEXT))
        theirs = [int(t) for t in llm.tokenize(PROBE_TEXT.encode("utf-8"), add_bos=False, special=True)]
        check.probe_equal = ours == theirs
    except Exception:  # noqa: BLE001 - informational only
        check.probe_equal = None
    if check.mismatches:
        log.warning("the GGUF vocabulary disagrees with the tokenizer %s on %d of %d ids (e.g. %s): the same ids "
                    "may mean different tokens, so scores are not comparable with the original model",
                    source, check.mismatches, check.compared, check.examples[:3])
    elif check.probe_equal is False:
        log.info("the GGUF vocabulary matches %s id by id, but llama.cpp's own tokenizer splits the probe text "
                 "differently; prompts are tokenized with %s, so this does not affect scores", source, source)
    return check


# ----------------------------------------------------------------------------------------------------------------
# loader entry point
# ----------------------------------------------------------------------------------------------------------------


def resolve_gguf_file(path: str, spec: Any) -> Path:
    """``path`` itself when it is a file; in a directory ``spec.extra["gguf_file"]`` or its only ``*.gguf``."""
    p = Path(path)
    name = (spec.extra or {}).get("gguf_file")
    if p.is_dir():
        if name:
            p = p / name
        else:
            files = sorted(p.glob("*.gguf"))
            if len(files) != 1:
                raise ModelError(f"{path} holds {len(files)} .gguf files; say which one", where=path,
                                 fix="pass the .gguf file itself, or extra gguf_file=<name>"
                                     + (f" (one of: {', '.join(f.name for f in files)})" if files else ""))
            p = files[0]
    if not p.is_file():
        raise ModelError("GGUF file not found", where=str(p), fix="pass the path of a .gguf file")
    return p


def _has_tokenizer_files(d: Path) -> bool:
    names = ("tokenizer.json", "tokenizer.model", "spiece.model", "tokenizer_config.json")
    return any((d / f).is_file() for f in names)


def _repetition_penalty(tok_dir: Path | None) -> float:
    if tok_dir is None:
        return 1.0
    f = tok_dir / "generation_config.json"
    try:
        return float(json.loads(f.read_text(encoding="utf-8")).get("repetition_penalty") or 1.0) if f.is_file() else 1.0
    except (OSError, ValueError):
        return 1.0


def load_variant(path: str, spec: Any, *, use_fast: bool | None) -> GGUFScorer:
    """The ``gguf`` variant: ``path`` is a .gguf file (or a directory with one); ``spec.extra``: ``tokenizer``
    (original model dir), ``gguf_file``, ``kv_type`` (f32), ``n_threads``, ``n_gpu_layers``. ``spec.model_args`` go to
    llama.cpp's ``Llama(...)``, except ``n_threads``, ``n_gpu_layers`` and ``n_batch``, which jbench's own settings
    take (n_ctx, logits_all and the KV type stay jbench's: they were refused before loading)."""
    lc = import_llama_cpp()
    llama_kwargs = dict(getattr(spec, "model_args", None) or {})
    known = inspect.signature(lc.Llama.__init__).parameters  # Llama(**kwargs) would silently drop a misspelt one
    unknown = sorted(k for k in llama_kwargs if k not in known or k in ("self", "kwargs"))
    if unknown:
        raise ModelError(f"llama.cpp's Llama() takes no argument {', '.join(unknown)} (from --model-args)",
                         where=f"--model-args {', '.join(unknown)}",
                         fix="pass Llama() arguments such as flash_attn, use_mmap, n_gpu_layers, n_threads, n_batch")
    extra = {**dict(spec.extra or {}), **{k: llama_kwargs.pop(k) for k in ("n_threads", "n_gpu_layers", "n_batch")
                                         if k in llama_kwargs}}
    gguf_file = resolve_gguf_file(path, spec)
    tok_path = extra.get("tokenizer")
    tokenizer = None
    tok_dir: Path | None = None
    if tok_path:
        tok_dir = Path(str(tok_path))
    elif _has_tokenizer_files(gguf_file.parent):
        tok_dir = gguf_file.parent
    if tok_dir is not None:
        from jbench.models.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(str(tok_dir), use_fast=use_fast, trust_remote_code=spec.trust_remote_code)
    scorer = GGUFScorer(gguf_file, tokenizer=tokenizer, tokenizer_source=str(tok_dir) if tok_dir else None,
                        max_length=spec.max_length, kv_type=str(extra.get("kv_type", "f32")),
                        n_threads=extra.get("n_threads"), n_gpu_layers=int(extra.get("n_gpu_layers", 0)),
                        n_batch=int(extra.get("n_batch", 512)), llama_kwargs=llama_kwargs,
                        repetition_penalty=_repetition_penalty(tok_dir))
    return scorer
