"""jbench: a reproducible Japanese LLM benchmark harness (JP-stable semantics) with quantization comparisons.

The public API is :func:`evaluate`, :func:`compare` and :func:`check` (see :mod:`jbench.api`) and
:func:`load_runs` (see :mod:`jbench.leaderboard`); they are imported
on first use, so ``import jbench`` stays cheap.
"""

from __future__ import annotations

from typing import Any

from jbench.version import __version__
__all__ = ["__version__", "check", "compare", "evaluate", "load_runs", "run_sweep"]


def __getattr__(name: str) -> Any:
    if name in ("evaluate", "compare", "check"):
        from jbench import api

        return getattr(api, name)
    if name == "load_runs":  # several stored runs as one side-by-side leaderboard DataFrame
        from jbench.leaderboard import load_runs

        return load_runs
    if name == "run_sweep":  # a sweep file on Ray (see jbench.sweep_report)
        from jbench.sweep_report import run_sweep

        return run_sweep
    raise AttributeError(f"module 'jbench' has no attribute {name!r}")
