"""Model specification and loading: one place that maps (model, variant) to a Scorer backend.

A run is (model, variant). Backends import lazily so that a missing optional dependency only matters when that
variant is asked for, and then gives an install hint instead of a traceback.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from jbench.errors import BackendMissing, ModelError
from jbench.models.base import Scorer

TINY = "tiny"

# variant -> (backend module under jbench.models, pip extra that provides its dependencies)
VARIANTS: dict[str, tuple[str, str | None]] = {
    "fp32": ("hf", None),
    "fp16": ("hf", None),
    "bf16": ("hf", None),
    "auto": ("hf", None),       # the checkpoint's own dtype (torch_dtype="auto"), as some reference runs used
}

DTYPE_OF_VARIANT = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "auto": "auto"}


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
        if self.is_tiny:
            return f"{TINY}-{self.variant}"
        raw = str(self.model).rstrip("/")
        local = Path(raw)
        if local.exists():
            digest = hashlib.sha256(str(local.resolve()).encode()).hexdigest()[:6]
            base = f"{local.resolve().name or 'model'}-{digest}"
        else:  # a hub id: owner/name is already unique
            base = raw
        return f"{base.replace('/', '_').replace(':', '_')}-{self.variant}"


def register_variant(name: str, module: str, extra: str | None) -> None:
    """Backends of quantized variants register themselves here (see jbench/models/__init__)."""
    VARIANTS[name] = (module, extra)


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
    if spec.variant not in VARIANTS:
        raise ModelError(f"unknown variant {spec.variant!r}", fix=f"choose one of: {', '.join(VARIANTS)}")
    module_name, extra = VARIANTS[spec.variant]
    try:
        module = importlib.import_module(f"jbench.models.{module_name}")
    except ImportError as err:
        hint = f'pip install "jbench[{extra}]"' if extra else "pip install jbench"
        raise BackendMissing(f"the {spec.variant} backend needs a package that is not installed ({err.name})",
                             fix=hint) from err
    path = resolve_model_path(spec)
    use_fast = False if spec.is_tiny and spec.use_fast is None else spec.use_fast
    loader: Callable[..., Scorer] = getattr(module, "load_variant")
    try:
        scorer = loader(path, spec, use_fast=use_fast)
    except (OSError, ValueError, RuntimeError, EOFError) as err:
        # a damaged or incompatible checkpoint (torn download, wrong format, missing shard) is the user's to fix;
        # JBenchErrors raised by the backend pass through unchanged
        raise ModelError(f"cannot load the model as {spec.variant}: {type(err).__name__}: {str(err)[:500]}",
                         where=path, fix="check that the path holds a complete checkpoint of a causal LM (download "
                                         "or save it again), or run with --verbose and see <run>/log.txt") from err
    record = {
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
    return scorer, record


def tokenizer_identity(tok: Any) -> dict[str, Any]:
    """``config.tokenizer`` of results.json: the identity of the tokenizer that built every request."""
    ident = getattr(tok, "identity", None)
    if callable(ident):
        return ident()
    return {"class": type(tok).__name__, "kind": getattr(tok, "kind", None)}


def model_args_string(spec: ModelSpec, path: str, use_fast: bool | None) -> str:
    """The reference's ``model_args`` string (``pretrained=...,use_fast=False``) for the table header line."""
    args = [f"pretrained={path}"]
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
    return ",".join(args)


# Quantized variants register themselves by name (nothing heavy is imported until a variant is used).
import jbench.models.variants  # noqa: E402,F401  (registration side effect)
