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


class StoreError(JBenchError):
    """A run directory (or a file in it) cannot be written, read or locked."""


class InputErrors(JBenchError):
    """Every problem found by the validation step before any weights load, reported together: a user who fixes
    one mistake should not have to pay for a model load to learn about the next one."""

    def __init__(self, problems: list[JBenchError]) -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:
            p = self.problems[0]
            super().__init__(p.what, where=p.where, fix=p.fix)
            return
        lines = [f"{len(self.problems)} problems found before loading the model:"]
        for i, p in enumerate(self.problems, 1):
            lines.append(f"  {i}. {p.what}")
            if p.where:
                lines.append(f"     where: {p.where}")
            if p.fix:
                lines.append(f"     what to do: {p.fix}")
        JBenchError.__init__(self, "\n".join(lines))
