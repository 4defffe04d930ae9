"""Registers the quantized variants with :mod:`jbench.models.load` (imported by ``jbench.models``).

Registration is by name only: nothing heavy is imported here, so ``jbench --help`` stays fast and a missing optional
backend only matters when its variant is asked for (then ``BackendMissing`` carries the pip extra to install).
"""

from __future__ import annotations

from jbench.models.load import register_variant

#: variant -> (module under jbench.models, pip extra providing its dependencies)
QUANTIZED_VARIANTS: dict[str, tuple[str, str]] = {
    "gptq": ("quantized", "quant"),   # pre-quantized GPTQ checkpoint (gptqmodel + optimum)
    "awq": ("quantized", "quant"),    # pre-quantized AWQ checkpoint (gptqmodel torch kernel)
    "bnb4": ("quantized", "quant"),   # bitsandbytes 4-bit on the fly (nf4; extra quant_type=fp4, double_quant)
    "bnb8": ("quantized", "quant"),   # bitsandbytes LLM.int8() on the fly
    "int8": ("quantized", "quant"),   # weight-only int8 (torchao; extra backend=quanto)
    "int4": ("quantized", "quant"),   # weight-only int4, group 32 (torchao; extra backend=quanto)
    "gguf": ("gguf", "llamacpp"),     # a .gguf file through llama.cpp (llama-cpp-python)
}


#: variant -> importable modules its backend needs (checked before any weights load, without importing them)
REQUIRES: dict[str, tuple[str, ...]] = {
    "gptq": ("gptqmodel", "optimum"),
    "awq": ("gptqmodel",),
    "bnb4": ("bitsandbytes",),
    "bnb8": ("bitsandbytes",),
    "int8": ("torchao",),
    "int4": ("torchao",),
    "gguf": ("llama_cpp",),
}


def missing_modules(variant: str) -> list[str]:
    """The modules ``variant`` needs that are not installed (found by ``importlib.util.find_spec``, no import)."""
    import importlib.util

    out = []
    for mod in REQUIRES.get(variant, ()):
        try:
            found = importlib.util.find_spec(mod) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(mod)
    return out


def register_all() -> None:
    for name, (module, extra) in QUANTIZED_VARIANTS.items():
        register_variant(name, module, extra)


register_all()
