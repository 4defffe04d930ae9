"""Provenance of a run: the code, libraries, platform and kernel switches that can move a number.

Why one module: results.json of both the runner and the lm-eval suite path, and the quantizer's record, carry the
same facts; they are gathered here once, so the two run writers cannot drift apart.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

#: libraries whose versions are recorded in every results.json
LIBRARIES = ("torch", "transformers", "tokenizers", "sentencepiece", "numpy", "scikit-learn", "fugashi",
             "unidic-lite", "neologdn", "emoji", "gptqmodel", "bitsandbytes", "llama-cpp-python", "lm-eval")


def library_versions(names: Iterable[str]) -> dict[str, str]:
    """Installed versions of ``names`` (distribution names); packages that are not installed are left out."""
    import importlib.metadata as md

    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment_record() -> dict[str, Any]:
    """Library versions and platform facts that can move numbers (stored in results.json)."""
    rec: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform(),
                           "machine": platform.machine(), "libraries": library_versions(LIBRARIES)}
    try:
        import torch

        rec["torch_deterministic_algorithms"] = torch.are_deterministic_algorithms_enabled()
        rec["torch_num_threads"] = torch.get_num_threads()
        rec["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            rec["cuda_device"] = torch.cuda.get_device_name(0)
            rec["cudnn_deterministic"] = torch.backends.cudnn.deterministic
        rec["torch_backends"] = torch_backend_flags()
    except ImportError:
        pass
    # environment variables that change kernels, thread counts or hashing (only those that are set)
    rec["env"] = {k: os.environ[k] for k in DETERMINISM_ENV if k in os.environ}
    from jbench.baseline import kernel_path_record  # CPU / MKL / oneDNN path: named when an exact check fails

    rec["kernel_path"] = kernel_path_record()
    return rec


DETERMINISM_ENV = ("CUBLAS_WORKSPACE_CONFIG", "CUDA_VISIBLE_DEVICES", "PYTHONHASHSEED", "OMP_NUM_THREADS",
                   "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TOKENIZERS_PARALLELISM", "NVIDIA_TF32_OVERRIDE",
                   "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA",
                   "DNNL_MAX_CPU_ISA", "JBENCH_CHUNK_DOCS")


def torch_backend_flags() -> dict[str, Any]:
    """``torch.backends`` switches that decide which (possibly non-deterministic or reduced-precision) kernels run."""
    import warnings

    import torch

    flags: dict[str, Any] = {}

    def put(name: str, get: Callable[[], Any]) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                value = get()
        except Exception:  # noqa: BLE001 - a flag this torch build lacks is simply not recorded
            return
        flags[name] = value if isinstance(value, (bool, int, float, str, type(None))) else str(value)

    put("deterministic_algorithms", torch.are_deterministic_algorithms_enabled)
    put("deterministic_algorithms_warn_only", torch.is_deterministic_algorithms_warn_only_enabled)
    put("float32_matmul_precision", torch.get_float32_matmul_precision)
    put("num_interop_threads", torch.get_num_interop_threads)
    put("cpu_capability", lambda: torch.backends.cpu.get_cpu_capability())
    put("mkldnn_enabled", lambda: torch.backends.mkldnn.enabled)
    put("cudnn_enabled", lambda: torch.backends.cudnn.enabled)
    put("cudnn_deterministic", lambda: torch.backends.cudnn.deterministic)
    put("cudnn_benchmark", lambda: torch.backends.cudnn.benchmark)
    put("cudnn_allow_tf32", lambda: torch.backends.cudnn.allow_tf32)
    put("cuda_matmul_allow_tf32", lambda: torch.backends.cuda.matmul.allow_tf32)
    put("cuda_matmul_allow_fp16_reduced_precision_reduction",
        lambda: torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction)
    put("cuda_matmul_allow_bf16_reduced_precision_reduction",
        lambda: torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction)
    put("sdp_flash", torch.backends.cuda.flash_sdp_enabled)
    put("sdp_mem_efficient", torch.backends.cuda.mem_efficient_sdp_enabled)
    put("sdp_math", torch.backends.cuda.math_sdp_enabled)
    return flags


def run_provenance() -> dict[str, Any]:
    """The tail of every results.json ``config``: which jbench, which commit, which machine and libraries."""
    from jbench.version import __version__

    return {"jbench_version": __version__, "git_commit": git_commit(), "environment": environment_record()}
