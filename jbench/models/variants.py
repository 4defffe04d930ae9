"""The variants jbench ships, as data for :mod:`jbench.models.registry`.

Registration is by name and module path only: nothing heavy is imported here, so ``jbench --help`` stays fast and a
missing optional backend only matters when its variant is asked for (then the pip extra to install is named).
"""

from __future__ import annotations

#: variant -> (module providing ``load_variant``, pip extra installing its dependencies, modules it needs)
BUILTIN_BACKENDS: dict[str, tuple[str, str | None, tuple[str, ...]]] = {
    "fp32": ("jbench.models.hf", None, ()),
    "fp16": ("jbench.models.hf", None, ()),
    "bf16": ("jbench.models.hf", None, ()),
    "auto": ("jbench.models.hf", None, ()),  # the checkpoint's own dtype (torch_dtype="auto"), as some reference runs used
    "gptq": ("jbench.models.quantized", "quant", ("gptqmodel", "optimum")),  # pre-quantized GPTQ (gptqmodel + optimum)
    "awq": ("jbench.models.quantized", "quant", ("gptqmodel",)),    # pre-quantized AWQ (gptqmodel torch kernel)
    "bnb4": ("jbench.models.quantized", "quant", ("bitsandbytes",)),  # bitsandbytes 4-bit on the fly (nf4; fp4 option)
    "bnb8": ("jbench.models.quantized", "quant", ("bitsandbytes",)),  # bitsandbytes LLM.int8() on the fly
    "int8": ("jbench.models.quantized", "quant", ("torchao",)),     # weight-only int8 (torchao; extra backend=quanto)
    "int4": ("jbench.models.quantized", "quant", ("torchao",)),     # weight-only int4, group 32 (torchao; or quanto)
    "gguf": ("jbench.models.gguf", "llamacpp", ("llama_cpp",)),     # a .gguf file through llama.cpp
}
