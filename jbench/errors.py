"""Error types. Every user-facing failure is a JBenchError carrying what went wrong, where, and what to do,
so the CLI can print one clear message and exit non-zero instead of a traceback."""

from __future__ import annotations


class JBenchError(Exception):
    """Base class: ``str(err)`` is the complete user-facing message."""

    exit_code: int = 2

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None) -> None:
        self.what, self.where, self.fix = what, where, fix
        parts = [what]
        if where:
            parts.append(f"  where: {where}")
        if fix:
            parts.append(f"  what to do: {fix}")
        super().__init__("\n".join(parts))


class DataError(JBenchError):
    """A data file is missing, corrupt, of the wrong schema or fails its checksum."""


class TaskError(JBenchError):
    """Unknown task / version / prompt version, or an invalid task definition."""


class ModelError(JBenchError):
    """A model or tokenizer cannot be loaded or used as asked."""


class BackendMissing(ModelError):
    """An optional backend dependency is not installed."""
