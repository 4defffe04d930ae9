"""jbench: a reproducible Japanese LLM benchmark harness (JP-stable semantics) with quantization comparisons.

The public API is :func:`evaluate`, :func:`compare` and :func:`check` (see :mod:`jbench.api`); they are imported
on first use, so ``import jbench`` stays cheap.
"""

from __future__ import annotations

from typing import Any

from jbench.version import __version__
__all__ = ["__version__", "check", "compare", "evaluate"]


def __getattr__(name: str) -> Any:
    if name in ("evaluate", "compare", "check"):
        from jbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'jbench' has no attribute {name!r}")
