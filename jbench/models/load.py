"""Model specification and loading: (model, variant) -> a Scorer from the backend registered for the variant.

A run is (model, variant). Backends are looked up in :mod:`jbench.models.registry` and import lazily, so a missing
optional dependency only matters when that variant is asked for, and then gives an install hint instead of a
traceback.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jbench.errors import ModelError
from jbench.models.base import Scorer
from jbench.models.registry import DTYPE_OF_VARIANT, get_backend

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
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_tiny(self) -> bool:
        return self.model in (None, TINY)

    def slug(self) -> str:
        """A filesystem-friendly default run name: ``<model>-<variant>``.

        A local model also gets a short hash of its absolute path (``<folder>-<hash>-<variant>``): two models in
        folders with the same name must never share a run directory, or the second overwrites the first."""
        from jbench.results import safe_name

        if self.is_tiny:
            return f"{TINY}-{self.variant}"
        raw = str(self.model).rstrip("/")
        local = Path(raw)
        if local.exists():
            digest = hashlib.sha256(str(local.resolve()).encode()).hexdigest()[:6]
            base = f"{safe_name(local.resolve().name)[:150]}-{digest}"
        else:  # a hub id: owner/name is already unique
            base = safe_name(raw.replace("/", "_"))[:180]
        return f"{base}-{self.variant}"


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
    loader = get_backend(spec.variant).load_function()
    path = resolve_model_path(spec)
    use_fast = effective_use_fast(spec)
    try:
        scorer = loader(path, spec, use_fast=use_fast)
    except (OSError, ValueError, RuntimeError, EOFError) as err:
        # a damaged or incompatible checkpoint (torn download, wrong format, missing shard) is the user's to fix;
        # JBenchErrors raised by the backend pass through unchanged
        raise ModelError(f"cannot load the model as {spec.variant}: {type(err).__name__}: {str(err)[:500]}",
                         where=path, fix="check that the path holds a complete checkpoint of a causal LM (download "
                                         "or save it again), or run with --verbose and see <run>/log.txt") from err
    return scorer, loaded_record(scorer, spec, path=path)


def effective_use_fast(spec: ModelSpec) -> bool | None:
    """The tokenizer choice a run uses: the embedded tiny model is a sentencepiece model read slow by default."""
    return False if spec.is_tiny and spec.use_fast is None else spec.use_fast


def loaded_record(scorer: Scorer, spec: ModelSpec, *, path: str | None = None) -> dict[str, Any]:
    """The model part of results.json ``config`` for a loaded scorer (also for one loaded by the caller)."""
    path = path if path is not None else resolve_model_path(spec)
    use_fast = effective_use_fast(spec)
    return {
        "model": "tiny (embedded)" if spec.is_tiny else spec.model,
        "model_path": path,
        "model_args": model_args_string(spec, path, use_fast),
        "variant": spec.variant,
        "dtype": DTYPE_OF_VARIANT.get(spec.variant, spec.extra.get("dtype", "float32")),
        "device": spec.device,
        "batch_size": spec.batch_size if spec.batch_size is not None else "auto",
        "use_fast": use_fast,
        "trust_remote_code": spec.trust_remote_code,
        "revision": spec.revision,
        "max_length": scorer.max_length,
        "tokenizer": tokenizer_identity(scorer.tokenizer),
        "weights_fingerprint": weights_fingerprint(Path(path)),
        "quantization": getattr(scorer, "quantization", None),
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
    return ",".join(args)
