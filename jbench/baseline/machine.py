"""Which machine and CPU kernel path a run was made on (CPU model, ISA extensions, torch / MKL / oneDNN, thread
counts, kernel-switching environment variables).

It exists apart from the baseline file format because it is about the environment, not the baseline: results.json
records it at run time (``config.environment.kernel_path``, via :mod:`jbench.provenance`) and an exact check that
fails names both machines from it.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Any

__all__ = ["KERNEL_ENV", "describe_machine", "kernel_path_record", "run_machine"]


#: environment variables that switch the CPU kernels (ISA dispatch, thread counts, MKL reproducibility mode)
KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR",
              "MKL_DEBUG_CPU_TYPE", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


def _cpu_info() -> tuple[str | None, list[str]]:
    """CPU model name and the ISA extensions that matter for fp32 kernels, from /proc/cpuinfo (Linux)."""
    model, flags = None, []
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return (platform.processor() or None), flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            have = set(value.split())
            flags = [f for f in _ISA_FLAGS if f in have]
    return model or platform.processor() or None, flags


def kernel_path_record() -> dict[str, Any]:
    """Which CPU / math-library path this process's fp32 kernels take: what decides the last digits of a
    loglikelihood. Stored in results.json (``config.environment.kernel_path``) and in baselines, so that an exact
    check names both machines when it fails."""
    cpu, isa = _cpu_info()
    rec: dict[str, Any] = {"cpu": cpu, "isa": isa, "arch": platform.machine(),
                           "env": {k: os.environ[k] for k in KERNEL_ENV if k in os.environ}}
    try:
        import torch
    except ImportError:
        return rec
    rec["torch"] = torch.__version__
    rec["num_threads"] = torch.get_num_threads()
    try:
        rec["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        rec["cpu_capability"] = None
    config = ""
    try:
        config = torch.__config__.show()
    except (AttributeError, RuntimeError):
        pass
    mkl = re.search(r"Math Kernel Library Version ([\w.]+)", config)
    onednn = re.search(r"(?:MKL-DNN|oneDNN) (v[\w.]+)", config)
    rec["mkl"] = mkl.group(1) if mkl else ("available" if torch.backends.mkl.is_available() else None)
    rec["onednn"] = onednn.group(1) if onednn else None
    return rec


def run_machine(cfg: dict[str, Any]) -> dict[str, Any] | None:
    """The kernel path a run recorded; for runs made before it was recorded, what ``environment`` has."""
    env = cfg.get("environment")
    if not isinstance(env, dict):
        return None
    kp = env.get("kernel_path")
    if isinstance(kp, dict):
        return kp
    libs = env.get("libraries") if isinstance(env.get("libraries"), dict) else {}
    return {"cpu": None, "arch": env.get("machine"), "torch": libs.get("torch"),
            "num_threads": env.get("torch_num_threads"),
            "env": env.get("env") if isinstance(env.get("env"), dict) else {}}


def describe_machine(rec: Any) -> str:
    """One line naming a machine's CPU and kernel path (for reports)."""
    if not isinstance(rec, dict):
        return "not recorded (made before jbench recorded machines)"
    parts = [str(rec.get("cpu") or "CPU model not recorded")]
    if isinstance(rec.get("isa"), list) and rec["isa"]:
        parts.append("+".join(str(f) for f in rec["isa"]))
    for key, label in (("cpu_capability", "ATen"), ("torch", "torch"), ("mkl", "MKL"), ("onednn", "oneDNN")):
        if rec.get(key):
            parts.append(f"{label} {rec[key]}")
    if rec.get("num_threads") is not None:
        parts.append(f"{rec['num_threads']} thread" + ("" if rec["num_threads"] == 1 else "s"))
    env = rec.get("env") if isinstance(rec.get("env"), dict) else {}
    parts += [f"{k}={v}" for k, v in sorted(env.items())]
    return ", ".join(parts)

