"""Choosing the device a run uses: ``--device auto`` (the default) picks cuda, else mps, else cpu.

Why: a user on a GPU box used to run on CPU without being told. The choice is resolved once, when the plan is made,
so the plan, the run record (``config.device``) and the request-cache identity hold the concrete device: an
``auto`` that resolves to ``cpu`` keys exactly the caches and run directories that ``--device cpu`` made before.
The default dtype of a model without a preset follows the device: the checkpoint's own (``auto``) on a GPU, fp32 on
CPU as the reference ran (:func:`default_variant_for`).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

AUTO = "auto"
#: devices on which a model without a preset loads in its checkpoint's dtype (fp32 would double or quadruple memory)
GPU_KINDS = ("cuda", "mps", "xpu")


def resolve_device(requested: str | None) -> tuple[str, str]:
    """``(device, why)``: ``requested`` unchanged unless it is None or ``auto``, then the first of cuda, mps, cpu
    that this torch build and machine offer. ``why`` is the one line printed for the user."""
    if requested not in (None, AUTO):
        return str(requested), "as given"
    if "torch" not in sys.modules and sys.platform != "darwin" and not _torch_build_has_gpu():
        # a CPU-only torch build can offer neither CUDA nor ROCm: no need to import torch (seconds) to know it,
        # which keeps --dry-run free of model libraries
        return "cpu", _NO_GPU
    import torch

    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        try:
            name = torch.cuda.get_device_name(0)
        except Exception:  # noqa: BLE001 - the name is only for the message
            name = "unknown GPU"
        return "cuda", f"auto: {count} CUDA device{'s' if count != 1 else ''} visible, cuda:0 is {name}"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps", "auto: Apple MPS available"
    return "cpu", _NO_GPU


_NO_GPU = "auto: no CUDA or MPS device visible; pass --device cuda to insist on a GPU"


def _torch_build_has_gpu() -> bool:
    """Whether the installed torch was built with CUDA or ROCm, read from its ``version.py`` without importing
    it (True when in doubt, so the caller asks torch itself)."""
    import importlib.util
    import re

    try:
        spec = importlib.util.find_spec("torch")
        origin = spec.origin if spec is not None else None
        if origin is None:
            return False  # no torch at all: nothing can run on a GPU
        text = (Path(origin).parent / "version.py").read_text(encoding="utf-8")
    except (OSError, ImportError, ValueError):
        return True
    builds = re.findall(r"^(cuda|hip)\s*(?::[^=]*)?=\s*(.+)$", text, flags=re.M)
    if {name for name, _ in builds} != {"cuda", "hip"}:
        return True
    return any(value.strip() != "None" for _, value in builds)


def is_gpu(device: str) -> bool:
    return device.split(":", 1)[0] in GPU_KINDS


def default_variant_for(device: str, preset_variant: str | None, *, has_preset: bool) -> tuple[str | None, str | None]:
    """The variant to use when ``--variant`` is not given, and a note to print when the device changed it.

    Presets keep their dtype (it is what the reference ran). A model without a preset loads in fp32 on CPU (the
    reference's default) but in its checkpoint's own dtype on a GPU: a 70B model in fp32 needs ~280 GB."""
    if has_preset or not is_gpu(device):
        return preset_variant, None
    return AUTO, (f"dtype: auto (the checkpoint's own) on {device}, since no preset names this model; pass "
                  "--variant fp32 for the reference's fp32")
