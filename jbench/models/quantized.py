"""Quantized variants loaded through transformers, scored by :class:`jbench.models.hf.HFScorer` (same tokenization,
truncation, prefix sharing and greedy loop as the original model, so a delta is the quantization and nothing else).

Variants (``load_variant(path, spec, *, use_fast)``):

* ``gptq``  pre-quantized GPTQ checkpoint through gptqmodel (its own or auto-gptq format, ``model.safetensors`` or
  ``gptq_model-4bit-128g.safetensors`` style names; a lone safetensors file of another name is linked as
  ``model.safetensors`` in a cache directory, because gptqmodel only looks for those two basenames);
* ``awq``   pre-quantized AWQ checkpoint through gptqmodel's torch kernel (CPU or GPU);
* ``bnb4`` / ``bnb8``  bitsandbytes on the fly: nf4 by default (``extra.quant_type="fp4"``,
  ``extra.double_quant=True``), LLM.int8() with the usual 6.0 outlier threshold (``extra.int8_threshold``);
* ``int8`` / ``int4``  weight-only on CPU/GPU. Default backend torchao (``extra.backend="quanto"`` for
  optimum-quanto): ``Int8WeightOnlyConfig`` (per-channel symmetric int8, a real int8 matmul kernel) and
  ``IntxWeightOnlyConfig(int4, PerGroup(32), ASYMMETRIC)`` -- asymmetric (zero point) like GPTQ/AWQ/tinygemm int4,
  because symmetric int4 wastes one of its 16 levels (``extra.int4_mapping=symmetric`` to compare); torchao's
  ``Int4WeightOnlyConfig`` has no CPU path in 0.18. quanto int8 is as good as torchao's, but quanto int4 (group
  128, its only choice through QuantoConfig) cost 6x more loglikelihood than torchao int4 g32 on the test model,
  and its int4 matmul cannot run under ``torch.inference_mode`` (we wrap its forward in ``no_grad``).

Every variant keeps ``lm_head`` (and embeddings) unquantized, as transformers' quantizers, GPTQ and AWQ all do, so the
variants differ in *how* the same linear layers are quantized. Models are loaded in float32 unless
``extra.dtype`` says otherwise (the fp32 original is the reference).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Callable

from jbench.errors import BackendMissing, ModelError
from jbench.model_files import read_json_object

log = logging.getLogger(__name__)

QUANT_HINT = 'pip install "jbench[quant]"'


# ----------------------------------------------------------------------------------------------------------------
# shared helpers
# ----------------------------------------------------------------------------------------------------------------


def _missing(variant: str, package: str, err: ImportError) -> BackendMissing:
    return BackendMissing(f"the {variant} variant needs {package}, which is not installed ({err})", fix=QUANT_HINT)


def gptqmodel_env() -> None:
    """Environment gptqmodel 7.6 needs on small CPU machines; must be set before it is imported.

    * ``GPTQMODEL_CPU_WORKERS``: on 2 cores its default pool asks for more workers than exist ("Virtual pool
      'model_loader:cpu' requests 2 workers but parent 'cpu' only has 1");
    * ``GPTQMODEL_TORCH_EXTENSIONS_DIR``: the ~35 s JIT build of its CPU packer is cached under $JBENCH_CACHE_DIR
      when that is set (else gptqmodel's own ~/.cache/gptqmodel);
    * offline: nothing may reach the hub."""
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, os.cpu_count() or 2)))
    cache = os.environ.get("JBENCH_CACHE_DIR")
    if cache:
        os.environ.setdefault("GPTQMODEL_TORCH_EXTENSIONS_DIR", str(Path(cache) / "gptqmodel" / "torch_extensions"))
    os.environ.setdefault("GPTQMODEL_OFFLINE", "1")


def import_gptqmodel(variant: str) -> Any:
    """``gptqmodel`` (with the environment set), or :class:`BackendMissing` with the install hint."""
    gptqmodel_env()
    try:
        import gptqmodel
    except ImportError as err:
        raise _missing(variant, "gptqmodel", err) from err
    return gptqmodel


def _dtype(spec: Any) -> Any:
    from jbench.models.hf import parse_dtype

    return parse_dtype(str((spec.extra or {}).get("dtype", "float32")))


def _device(spec: Any) -> str:
    return str(spec.device or "cpu")


def _model_args(spec: Any) -> dict[str, Any]:
    """``--model-args`` for ``from_pretrained`` (conflicting keys were refused before loading)."""
    from jbench.models.model_args import from_pretrained_kwargs

    return from_pretrained_kwargs(getattr(spec, "model_args", None) or {})


def _from_pretrained(path: str, spec: Any, quantization_config: Any, variant: str) -> Any:
    """``AutoModelForCausalLM.from_pretrained`` with a quantization config, errors turned into ModelError."""
    from transformers import AutoModelForCausalLM

    device = _device(spec)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=_dtype(spec), quantization_config=quantization_config, device_map=device,
            trust_remote_code=spec.trust_remote_code, revision=spec.revision, **_model_args(spec))
    except ImportError as err:  # transformers checks the backend package itself
        raise BackendMissing(f"the {variant} variant needs a package that is not installed: {err}",
                             fix=QUANT_HINT) from err
    except (OSError, ValueError, RuntimeError, TypeError, NotImplementedError) as err:
        raise ModelError(f"cannot load {path!r} as {variant}: {err}", where=path) from err
    return model.eval()


# ----------------------------------------------------------------------------------------------------------------
# bitsandbytes
# ----------------------------------------------------------------------------------------------------------------


def checkpoint_dtype(path: str, spec: Any) -> Any:
    """The torch dtype the checkpoint's config names (``auto``: the original ran in it, so bnb4 computes in it
    too); float32 when the config names none."""
    import torch
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=spec.trust_remote_code, revision=spec.revision)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot read the config of {path!r}: {err}", where=path) from err
    named = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(named, torch.dtype):
        return named
    return getattr(torch, str(named).removeprefix("torch."), torch.float32) if named else torch.float32


def _bnb_config(variant: str, spec: Any, path: str) -> tuple[Any, dict[str, Any]]:

    try:
        import bitsandbytes  # noqa: F401 - presence check with a clear hint
        from transformers import BitsAndBytesConfig
    except ImportError as err:
        raise _missing(variant, "bitsandbytes", err) from err
    extra = spec.extra or {}
    if variant == "bnb8":
        threshold = float(extra.get("int8_threshold", 6.0))
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=threshold), {
            "method": "bitsandbytes LLM.int8()", "int8_threshold": threshold}
    qtype = str(extra.get("quant_type", extra.get("bnb_4bit_quant_type", "nf4"))).lower()
    if qtype not in ("nf4", "fp4"):
        raise ModelError(f"unknown bnb 4-bit quant_type {qtype!r}", fix="use quant_type=nf4 or fp4")
    double = _truthy(extra.get("double_quant", extra.get("bnb_4bit_use_double_quant", False)))
    compute = _dtype(spec) if _dtype(spec) != "auto" else checkpoint_dtype(path, spec)
    cfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=qtype, bnb_4bit_use_double_quant=double,
                             bnb_4bit_compute_dtype=compute)
    return cfg, {"method": f"bitsandbytes {qtype}", "double_quant": double, "compute_dtype": str(compute)}


def _truthy(v: Any) -> bool:
    return v if isinstance(v, bool) else str(v).strip().lower() in ("1", "true", "yes", "on")


def _load_bnb(path: str, spec: Any, variant: str) -> tuple[Any, dict[str, Any]]:
    cfg, info = _bnb_config(variant, spec, path)
    model = _from_pretrained(path, spec, cfg, variant)
    if variant == "bnb8":
        info.update(_int8_path(spec))
        model = _without_cast_warning(model)
    return model, info


#: what bitsandbytes' MatMul8bitLt logs (``logging``, not ``warnings``) on every int8 matmul with fp32/bf16 inputs
_CAST_MESSAGE = "MatMul8bitLt: inputs will be cast from"


class _DropCastWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_CAST_MESSAGE)


def _int8_path(spec: Any) -> dict[str, Any]:
    """How LLM.int8() runs here, recorded once instead of bnb's per-matmul log line.

    Measured on the test model (tests/test_quantized.py): the int8 matmul kernel (``torch._int_mm`` on AVX-512,
    an exact fp32 matmul otherwise) gives bit-identical loglikelihoods either way, and the fp16 cast of the inputs
    costs ~0.002 nats; the error of LLM.int8() is its per-token int8 quantization of the activations."""
    out: dict[str, Any] = {"inputs_cast_to": "float16 (for the per-token int8 quantization of activations)"}
    if _device(spec) == "cpu":
        try:
            from bitsandbytes.backends.cpu import ops as cpu_ops

            fast = bool(getattr(cpu_ops, "_has_avx512", False))
        except ImportError:
            fast = False
        out["int8_matmul"] = "torch._int_mm (AVX-512)" if fast else "fp32 matmul of the int8 values (exact)"
    return out


def _without_cast_warning(model: Any) -> Any:
    """Drop bnb's "inputs will be cast ... to float16" line (200 per run) during this model's forward only; the
    fact is recorded once in the quantization info (``inputs_cast_to``). Other bnb messages still show."""
    bnb_log = logging.getLogger("bitsandbytes.autograd._functions")
    forward = model.forward

    @functools.wraps(forward)  # keeps the signature HFScorer inspects (logits_to_keep, cache argument name)
    def quiet_forward(*args: Any, **kwargs: Any) -> Any:
        drop = _DropCastWarning()
        bnb_log.addFilter(drop)
        try:
            return forward(*args, **kwargs)
        finally:
            bnb_log.removeFilter(drop)

    model.forward = quiet_forward
    return model


# ----------------------------------------------------------------------------------------------------------------
# weight-only int8 / int4 (torchao, or optimum-quanto)
# ----------------------------------------------------------------------------------------------------------------

#: int4 group size for torchao's IntxWeightOnlyConfig (32 divides every hidden size in practice).
INT4_GROUP_SIZE = 32


def _load_weight_only(path: str, spec: Any, variant: str) -> tuple[Any, dict[str, Any]]:
    extra = spec.extra or {}
    backend = str(extra.get("backend", "torchao")).lower()
    if backend == "torchao":
        import torch

        try:
            from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, MappingType, PerGroup
            from transformers import TorchAoConfig
        except ImportError as err:
            raise _missing(variant, "torchao", err) from err
        group = int(extra.get("group_size", INT4_GROUP_SIZE))
        if variant == "int8":
            qcfg, info = Int8WeightOnlyConfig(), {"method": "torchao Int8WeightOnlyConfig (per-channel)"}
        else:
            sym = str(extra.get("int4_mapping", "asymmetric")).lower() == "symmetric"
            mapping = MappingType.SYMMETRIC if sym else MappingType.ASYMMETRIC
            qcfg = IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(group), mapping_type=mapping)
            info = {"method": f"torchao IntxWeightOnlyConfig(int4, PerGroup({group}), {mapping.name.lower()})",
                    "group_size": group}
        return _from_pretrained(path, spec, TorchAoConfig(quant_type=qcfg), variant), {"backend": "torchao", **info}
    if backend == "quanto":
        try:
            import optimum.quanto  # noqa: F401
            from transformers import QuantoConfig
        except ImportError as err:
            raise _missing(variant, "optimum-quanto", err) from err
        cfg = QuantoConfig(weights="int8" if variant == "int8" else "int4")
        model = _outside_inference_mode(_from_pretrained(path, spec, cfg, variant))
        return model, {"backend": "quanto", "method": f"optimum-quanto q{variant} weights"}
    raise ModelError(f"unknown {variant} backend {backend!r}", fix="use backend=torchao or backend=quanto")


def _outside_inference_mode(model: Any) -> Any:
    """quanto's int4 matmul is an autograd Function that fails under ``torch.inference_mode`` ("Cannot set
    version_counter for inference tensor"), which HFScorer uses; run the forward under ``no_grad`` instead."""
    import functools

    import torch

    forward = model.forward

    @functools.wraps(forward)  # keeps the signature, which HFScorer reads to pick the cache argument's name
    def no_grad_forward(*args: Any, **kwargs: Any) -> Any:
        with torch.inference_mode(False), torch.no_grad():
            return forward(*args, **kwargs)

    model.forward = no_grad_forward
    return model


# ----------------------------------------------------------------------------------------------------------------
# GPTQ / AWQ (gptqmodel)
# ----------------------------------------------------------------------------------------------------------------


def quant_settings(d: Path) -> dict[str, Any]:
    """The checkpoint's quantization settings: ``quantize_config.json`` (auto-gptq / gptqmodel) merged under
    ``config.json``'s ``quantization_config`` (transformers); empty when the directory is not quantized."""
    from_config = read_json_object(d / "config.json").get("quantization_config") or {}
    return {**read_json_object(d / "quantize_config.json"), **from_config}


def resolve_gptq_dir(path: str, spec: Any, variant: str = "gptq") -> Path:
    """A directory gptqmodel can load: ``path`` itself, or a cache directory of symlinks whose weight file is named
    ``model.safetensors``.

    gptqmodel 7.6 looks only for ``gptq_model-{bits}bit-{group_size}g`` and ``model`` (``.safetensors`` or a sharded
    ``.safetensors.index.json``); auto-gptq cards also used names such as ``<repo>-4bit-128g.safetensors`` (their
    ``model_basename``), and refuses ``.bin``."""
    d = Path(path)
    if not d.is_dir():
        raise ModelError(f"a {variant} checkpoint must be a local directory", where=path)
    q = quant_settings(d)
    if not q:
        raise ModelError(f"{path} is not a {variant.upper()} checkpoint (no quantize_config.json and no "
                         "quantization_config in config.json)", where=path,
                         fix=f"make one with `jbench quantize --method {variant}`, or pick another variant")
    method = str(q.get("quant_method", q.get("method", "gptq"))).lower()
    if method != variant:
        raise ModelError(f"{path} holds a {method} checkpoint, not {variant}", where=path,
                         fix=f"use --variant {method}")
    bits, group = q.get("bits", 4), q.get("group_size", 128)
    known = [f"gptq_model-{bits}bit-{group}g", "model"]
    for base in known:
        if (d / f"{base}.safetensors").is_file() or (d / f"{base}.safetensors.index.json").is_file():
            return d
    extra = spec.extra or {}
    wanted = extra.get("model_basename") or q.get("model_file_base_name")
    candidates = sorted(d.glob("*.safetensors"))
    if wanted:
        candidates = [c for c in candidates if c.stem == wanted] or candidates
    if len(candidates) == 1:
        return _shadow_dir(d, candidates[0])
    bins = sorted(p.name for p in d.iterdir() if p.suffix in (".bin", ".pt", ".pth"))
    if not candidates and bins:
        raise ModelError(
            f"{path} has only pickled weights ({', '.join(bins)}); gptqmodel loads safetensors only", where=path,
            fix="convert once: python -c \"import torch; from safetensors.torch import save_file; "
                f"save_file(torch.load('{bins[0]}', weights_only=True), 'model.safetensors')\" in that directory")
    names = ", ".join(c.name for c in candidates) or "none"
    raise ModelError(f"cannot tell which weight file of {path} to load (safetensors files: {names})", where=path,
                     fix="rename the weight file to model.safetensors, or pass extra model_basename=<file stem>")


def _shadow_dir(d: Path, weights: Path) -> Path:
    """Symlink every file of ``d`` into a cache directory, with ``weights`` as ``model.safetensors``."""
    st = weights.stat()
    key = hashlib.sha256(f"{d.resolve()}|{weights.name}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    root = Path(os.environ.get("JBENCH_CACHE_DIR") or Path.home() / ".cache" / "jbench")
    shadow = root / "gptq-links" / key
    shadow.mkdir(parents=True, exist_ok=True)
    for f in d.iterdir():
        if f.is_file() and f != weights:
            link = shadow / f.name
            if not link.exists():
                link.symlink_to(f.resolve())
    link = shadow / "model.safetensors"
    if not link.exists():
        link.symlink_to(weights.resolve())
    log.info("gptqmodel only loads model.safetensors / gptq_model-<bits>bit-<group>g.safetensors: linked %s as %s",
             weights, link)
    return shadow


def _load_gptqmodel(path: str, spec: Any, variant: str) -> tuple[Any, dict[str, Any]]:
    # GPTQModel.load rather than AutoModelForCausalLM: it also reads auto-gptq checkpoints that have only a
    # quantize_config.json (transformers would load those as a plain model), and it needs no optimum
    gm = import_gptqmodel(variant)
    qdir = resolve_gptq_dir(path, spec, variant)
    extra = spec.extra or {}
    backend = extra.get("gptq_backend")
    kwargs: dict[str, Any] = _model_args(spec)  # passed on to from_pretrained by gptqmodel
    if backend:
        name = str(backend).upper()
        if not hasattr(gm.BACKEND, name):
            raise ModelError(f"unknown gptqmodel backend {backend!r}",
                             fix=f"one of: {', '.join(b.name for b in gm.BACKEND)}")
        kwargs["backend"] = getattr(gm.BACKEND, name)
    device = _device(spec)
    try:
        wrapped = gm.GPTQModel.load(str(qdir), device=device, dtype=_dtype(spec), **kwargs)
    except (ValueError, RuntimeError, ImportError, ModuleNotFoundError, NotImplementedError, TypeError,
            AssertionError) as err:
        kernel, torch_backend = ("AWQ", "AWQ_TORCH") if variant == "awq" else ("GPTQ", "GPTQ_TORCH")
        raise ModelError(f"gptqmodel cannot load {path!r} on {device}: {type(err).__name__}: {err}", where=path,
                         fix=f"no usable {kernel} kernel for this checkpoint on {device}: try extra "
                             f"gptq_backend={torch_backend} with dtype=bfloat16 (pure torch, slow), another device, "
                             "or the bnb4/int4 variants") from err
    model = getattr(wrapped, "model", wrapped)
    q = quant_settings(qdir)
    kernels = sorted({type(m).__name__ for m in model.modules()
                      if type(m).__module__.startswith("gptqmodel.nn_modules")})
    info = {"method": f"gptqmodel {variant}", "bits": q.get("bits"), "group_size": q.get("group_size"),
            "desc_act": q.get("desc_act"), "sym": q.get("sym"), "kernels": kernels, "checkpoint": str(qdir)}
    return model.eval(), info


# ----------------------------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------------------------

_LOADERS: dict[str, Callable[[str, Any, str], tuple[Any, dict[str, Any]]]] = {
    "gptq": _load_gptqmodel,
    "awq": _load_gptqmodel,
    "bnb4": _load_bnb,
    "bnb8": _load_bnb,
    "int8": _load_weight_only,
    "int4": _load_weight_only,
}

VARIANT_NAMES = tuple(_LOADERS)


def load_model(path: str, spec: Any) -> tuple[Any, dict[str, Any]]:
    """(quantized transformers model in eval mode, description of what was done) for ``spec.variant``."""
    loader = _LOADERS.get(spec.variant)
    if loader is None:
        raise ModelError(f"jbench.models.quantized does not provide variant {spec.variant!r}",
                         fix=f"one of: {', '.join(_LOADERS)}")
    from jbench.logs import captured_output

    with captured_output(spec.variant):  # gptqmodel and friends print banners and kernel choices to stdout
        return loader(path, spec, spec.variant)


def load_variant(path: str, spec: Any, *, use_fast: bool | None) -> Any:
    """Load ``path`` as ``spec.variant`` and wrap it in an HFScorer; the tokenizer is ``extra.tokenizer`` (the
    original model directory) when given, else the one in ``path``."""
    from jbench.models.hf import HFScorer
    from jbench.models.tokenizer import load_tokenizer

    model, info = load_model(path, spec)
    tok_path = str((spec.extra or {}).get("tokenizer") or path)
    tok = load_tokenizer(tok_path, use_fast=use_fast, trust_remote_code=spec.trust_remote_code,
                         revision=None if tok_path != path else spec.revision)
    scorer = HFScorer.from_loaded(model, tok, batch_size=spec.batch_size, max_length=spec.max_length, name=path)
    scorer.max_batch_size = getattr(spec, "max_batch_size", None)
    info = {"variant": spec.variant, "tokenizer": tok_path, **info}
    scorer.quantization = info  # type: ignore[attr-defined]
    log.info("loaded %s as %s: %s", path, spec.variant, info)
    return scorer
