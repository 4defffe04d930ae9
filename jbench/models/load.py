"""Model specification and loading: (model, variant) -> a Scorer from the backend registered for the variant.

A run is (model, variant). Backends are looked up in :mod:`jbench.models.registry` and import lazily, so a missing
optional dependency only matters when that variant is asked for, and then gives an install hint instead of a
traceback.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from jbench.errors import ModelError
from jbench.models.base import Scorer
from jbench.models.registry import DTYPE_OF_VARIANT, get_engine

__all__ = ["DTYPE_OF_VARIANT", "TINY", "ModelSpec", "load_scorer", "loaded_record", "model_args_string",
           "resolve_model_path", "tokenizer_identity", "weights_fingerprint"]

TINY = "tiny"


@dataclass
class ModelSpec:
    """What to load. ``model=None`` or ``"tiny"`` means the embedded deterministic tiny model."""

    model: str | None = None
    variant: str = "fp32"
    device: str = "cpu"
    batch_size: int | None = None
    use_fast: bool | None = None
    trust_remote_code: bool = False
    revision: str | None = None
    max_length: int | None = None
    #: ``--model-args``: keyword arguments for the backend's loader (``from_pretrained``, llama.cpp's ``Llama``,
    #: vLLM's ``LLM``), JSON-stable (see :mod:`jbench.models.model_args`); part of the cache key and the run record
    model_args: dict[str, Any] = field(default_factory=dict)
    max_batch_size: int | None = None  # ``--batch-size auto:N``: cap on the automatic rows per forward
    #: backend options that have no flag (``model_kwargs`` from Python is merged into ``model_args``)
    extra: dict[str, Any] = field(default_factory=dict)
    backend: str = "hf"  # the engine (--backend): hf (transformers; llama.cpp for gguf) or vllm

    def __post_init__(self) -> None:
        # the older Python path, ModelSpec(extra={"model_kwargs": {...}}), is folded into model_args, so those
        # arguments are part of the cache key and the run record too
        kwargs = (self.extra or {}).get("model_kwargs")
        if kwargs:
            from jbench.models.model_args import parse_model_args

            self.model_args = {**parse_model_args(kwargs, flag="extra.model_kwargs"), **(self.model_args or {})}
            self.extra = {k: v for k, v in self.extra.items() if k != "model_kwargs"}

    @property
    def is_tiny(self) -> bool:
        return self.model in (None, TINY)

    def slug(self) -> str:
        """A filesystem-friendly default run name: ``<model>-<variant>``.

        A local model also gets a short hash of its absolute path (``<folder>-<hash>-<variant>``): two models in
        folders with the same name must never share a run directory, or the second overwrites the first."""
        from jbench.results import safe_name

        engine = "" if self.backend == "hf" else f"{self.backend}-"  # runs of another engine never share a dir
        if self.is_tiny:
            return f"{TINY}-{engine}{self.variant}"
        raw = str(self.model).rstrip("/")
        local = Path(raw)
        if local.exists():
            digest = hashlib.sha256(str(local.resolve()).encode()).hexdigest()[:6]
            base = f"{safe_name(local.resolve().name)[:150]}-{digest}"
        else:  # a hub id: owner/name is already unique
            base = safe_name(raw.replace("/", "_"))[:180]
        return f"{base}-{engine}{self.variant}"


def weights_fingerprint(path: Path) -> str | None:
    """A cheap content fingerprint of a local model dir (names, sizes, first MiB of each weight file), so cached
    results are never reused for a different checkpoint behind the same path."""
    h = hashlib.sha256()
    if path.is_file():  # a single weights file (.gguf)
        h.update(str(path.stat().st_size).encode())
        with path.open("rb") as fh:
            h.update(fh.read(1 << 20))
        return h.hexdigest()
    if not path.is_dir():
        return None
    for f in sorted(path.iterdir()):
        if f.is_file() and f.suffix in {".safetensors", ".bin", ".gguf", ".pt", ".model", ".json"}:
            h.update(f.name.encode())
            h.update(str(f.stat().st_size).encode())
            with f.open("rb") as fh:
                h.update(fh.read(1 << 20))
    return h.hexdigest()


def resolve_model_path(spec: ModelSpec) -> str:
    if spec.is_tiny:
        from jbench.tiny import tiny_default_model

        return str(tiny_default_model())
    return str(spec.model)


def load_scorer(spec: ModelSpec) -> tuple[Scorer, dict[str, Any]]:
    """Load the scorer for ``spec``; returns it with the model record that goes into results.json."""
    loader = get_engine(spec.backend, spec.variant).load_function()
    path = resolve_model_path(spec)
    use_fast = effective_use_fast(spec)
    commit = hub_commit(spec, path)
    from jbench.hub_reach import cache_only_if_unreachable

    try:  # a Hub model loads at the resolved commit: the recorded commit is the one scored
        with cache_only_if_unreachable():  # an unreachable Hub: the cache only, not retries for every file
            scorer = loader(path, replace(spec, revision=commit) if commit else spec, use_fast=use_fast)
    except (OSError, ValueError, RuntimeError, EOFError) as err:
        # a damaged or incompatible checkpoint (torn download, wrong format, missing shard) is the user's to fix;
        # JBenchErrors raised by the backend pass through unchanged
        raise ModelError(f"cannot load the model as {spec.variant}: {type(err).__name__}: {str(err)[:500]}",
                         where=path, fix="check that the path holds a complete checkpoint of a causal LM (download "
                                         "or save it again), or run with --verbose and see <run>/log.txt") from err
    return scorer, loaded_record(scorer, spec, path=path, commit=commit)


def hub_commit(spec: ModelSpec, path: str) -> str | None:
    """The commit a Hub model id resolves to (None for the tiny model, local paths and in-memory models)."""
    if spec.is_tiny or Path(path).expanduser().exists() or (spec.extra or {}).get("in-memory"):
        return None
    from jbench.models.hub_revision import resolve_commit

    return resolve_commit(path, spec.revision, required=spec.revision is not None)


def effective_use_fast(spec: ModelSpec) -> bool | None:
    """The tokenizer choice a run uses: the embedded tiny model is a sentencepiece model read slow by default."""
    return False if spec.is_tiny and spec.use_fast is None else spec.use_fast


def loaded_record(scorer: Scorer, spec: ModelSpec, *, path: str | None = None,
                  commit: str | None = None) -> dict[str, Any]:
    """The model part of results.json ``config`` for a loaded scorer (also for one loaded by the caller).
    ``commit``: the resolved Hub commit, which then is the weights fingerprint."""
    from jbench.models.hub_revision import hub_fingerprint
    from jbench.models.model_args import requested_batch_size

    path = path if path is not None else resolve_model_path(spec)
    use_fast = effective_use_fast(spec)
    return {
        "model": "tiny (embedded)" if spec.is_tiny else spec.model,
        "model_path": path,
        "model_args": model_args_string(spec, path, use_fast),
        "variant": spec.variant,
        "backend": spec.backend,
        "dtype": DTYPE_OF_VARIANT.get(spec.variant, spec.extra.get("dtype", "float32")),
        "device": spec.device,
        "batch_size": requested_batch_size(spec.batch_size, spec.max_batch_size),
        "model_kwargs": dict(spec.model_args),  # what the loader got from --model-args (model_args: the string)
        "use_fast": use_fast,
        "trust_remote_code": spec.trust_remote_code,
        "revision": spec.revision,
        "revision_commit": commit,
        "max_length": scorer.max_length,
        "tokenizer": tokenizer_identity(scorer.tokenizer),
        "weights_fingerprint": hub_fingerprint(path, commit) if commit else weights_fingerprint(
            Path(path) / str(spec.model_args.get("subfolder") or "")),
        "quantization": getattr(scorer, "quantization", None),
        "engine": getattr(scorer, "engine", None),  # a serving engine's version and settings (--backend vllm)
        "spec": asdict(spec),
    }


def tokenizer_identity(tok: Any) -> dict[str, Any]:
    """``config.tokenizer`` of results.json: the identity of the tokenizer that built every request."""
    ident = getattr(tok, "identity", None)
    if callable(ident):
        return ident()
    return {"class": type(tok).__name__, "kind": getattr(tok, "kind", None)}


def model_args_string(spec: ModelSpec, path: str, use_fast: bool | None, *, lm_eval: bool = False) -> str:
    """The ``model_args`` string of a run: the reference's (``pretrained=...,use_fast=False``, for the table header
    line), or with ``lm_eval=True`` the lm-eval ``hf`` model's (``dtype`` always, ``use_fast_tokenizer``,
    ``max_length``), which loads the same plain-dtype model in lm-eval."""
    args = [f"pretrained={path}"]
    if lm_eval:
        args.append(f"dtype={DTYPE_OF_VARIANT[spec.variant]}")
        if use_fast is False:
            args.append("use_fast_tokenizer=False")
    else:
        if use_fast is not None:
            args.append(f"use_fast={use_fast}")
        if spec.variant in DTYPE_OF_VARIANT and spec.variant != "fp32":
            args.append(f"dtype={DTYPE_OF_VARIANT[spec.variant]}")
        if spec.variant not in DTYPE_OF_VARIANT:
            args.append(f"variant={spec.variant}")
    if spec.trust_remote_code:
        args.append("trust_remote_code=True")
    if spec.revision:
        args.append(f"revision={spec.revision}")
    if lm_eval and spec.max_length:
        args.append(f"max_length={spec.max_length}")
    if spec.model_args:
        from jbench.models.model_args import format_model_args

        args.append(format_model_args(spec.model_args))
    return ",".join(args)
