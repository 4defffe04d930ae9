"""Error types. Every user-facing failure is a JBenchError carrying what went wrong, where, and what to do,
so the CLI can print one clear message and exit non-zero instead of a traceback."""

from __future__ import annotations


class JBenchError(Exception):
    """Base class: ``str(err)`` is the complete user-facing message."""

    exit_code: int = 2
    #: the message was already shown (by a child process): the CLI only exits with the code, so the user sees one
    already_reported: bool = False

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None) -> None:
        self.what, self.where, self.fix = what, where, fix
        parts = [what]
        if where:
            parts.append(f"  where: {where}")
        if fix:
            parts.append(f"  what to do: {fix}")
        super().__init__("\n".join(parts))

    def with_where(self, where: str) -> "JBenchError":
        """The same error (same class) reported at another place, e.g. the option that led to it."""
        err = JBenchError.__new__(type(self))
        JBenchError.__init__(err, self.what, where=where, fix=self.fix)
        return err


class DataError(JBenchError):
    """A data file is missing, corrupt, of the wrong schema or fails its checksum."""


class NoDataDir(DataError):
    """No data directory was given: every data file is then missing, and this one message says what to do."""


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


class Interrupted(JBenchError):
    """Ctrl-C during a run. Raised as a JBenchError because click would turn a KeyboardInterrupt into a bare
    "Aborted!" with exit code 1; ``main`` prints how to resume and exits 130."""

    exit_code = 130


# Analysis errors (compare, baseline/check, stats, metrics). They used to live in jbench.compare and jbench.baseline,
# which still re-export them. The stats/metrics ones also subclass ValueError / KeyError, the types those modules
# raised before, so library callers that catch those keep working while the CLI prints one message and exits 2.


class ComparisonError(JBenchError):
    """The runs cannot be compared example by example (different tasks, documents or prompts)."""


class TokenizerMismatchError(ComparisonError):
    """A variant's requests were built by a different tokenizer than the original's (or one of the runs does not
    record which): its differences would mix tokenization with quantization. Exit 2, like every input error."""


class BaselineError(JBenchError):
    """A baseline cannot be written, found or read."""


class CheckInputError(JBenchError):
    """An input of ``check`` / ``baseline save`` is unusable: a malformed run or samples file, or an invalid option.

    Exit 2 (never 1): exit 1 means that a number regressed, and CI must not report a broken file as a regression."""


class StatsInputError(JBenchError, ValueError):
    """A statistic was asked of unusable input: unpaired or empty samples, a level or margin out of range, or
    outcomes that are not what the method needs (e.g. 0/1 for McNemar)."""


class MetricError(JBenchError, ValueError):
    """A metric cannot be computed from the rows or data given (no examples, no choices, a gold index out of
    range, no gold answer)."""


class MetricFieldError(JBenchError, KeyError):
    """A metric name is unknown, or the per-example rows lack a field the metric reads."""

    def __str__(self) -> str:  # KeyError would repr() the message (quotes and escaped newlines)
        return str(self.args[0]) if self.args else ""


class ChildRunFailed(JBenchError):
    """A run in a child process failed; the child printed its own one-line error, so nothing more is printed."""

    already_reported = True
