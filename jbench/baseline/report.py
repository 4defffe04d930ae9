"""The outcome of a check: one row per (task, metric), why each failure failed, and the exit code, rendered as the
markdown table ``jbench check`` prints.

It exists apart from :mod:`jbench.baseline.check` so that the check's steps only fill in a report and the
wording of the table lives in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["CheckReport", "Incompatibility", "Mode", "Row", "Verdict"]

Mode = Literal["exact", "stat"]

Verdict = Literal["pass", "improved", "REGRESSION", "cannot compare", "unchecked"]


@dataclass
class Row:
    """One line of the table: one metric of one task."""

    task: str
    metric: str
    baseline: float | None
    now: float | None
    band: str
    verdict: Verdict
    delta: str | None = None  # Δ column text when it is not now − baseline (e.g. "3 differ")


@dataclass(frozen=True)
class Incompatibility:
    """Why a task cannot be compared: which field, and its value in the baseline and now."""

    task: str
    field: str
    baseline: Any
    now: Any

    def __str__(self) -> str:
        return f"`{self.task}`: {self.field} differs (baseline {self.baseline!r} vs now {self.now!r})"


@dataclass
class CheckReport:
    """The outcome of :func:`check_run`: a table, the reasons behind each failure, and an exit code."""

    mode: Mode
    run: str
    baseline: str
    rule: str
    rows: list[Row] = field(default_factory=list)
    incompatible: list[Incompatibility] = field(default_factory=list)
    explanations: list[str] = field(default_factory=list)
    example_diffs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tokenizer_diffs: list[str] = field(default_factory=list)
    tokenizer_allowed: bool = False
    machines: tuple[str, str] | None = None  # (baseline, now), shown in exact mode

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == "REGRESSION"]

    @property
    def tokenizer_refused(self) -> bool:
        return bool(self.tokenizer_diffs) and not self.tokenizer_allowed

    @property
    def exit_code(self) -> int:
        if self.incompatible or self.tokenizer_refused:
            return 2
        return 1 if self.regressions or self.example_diffs else 0

    @property
    def status(self) -> str:
        return {0: "PASS", 1: "REGRESSION", 2: "CANNOT COMPARE"}[self.exit_code]

    def _fmt(self, v: float | None) -> str:
        if v is None:
            return "—"
        return repr(v) if self.mode == "exact" else f"{v:.4f}"

    def _delta(self, r: Row) -> str:
        if r.delta is not None:
            return r.delta
        if r.baseline is None or r.now is None:
            return "—"
        d = r.now - r.baseline
        return f"{d:+}" if self.mode == "exact" else f"{d:+.4f}"

    def to_markdown(self) -> str:
        out = [f"## jbench check ({self.mode}): {self.status}", "",
               f"run `{self.run}` vs baseline `{self.baseline}`", ""]
        if self.tokenizer_diffs:
            if self.tokenizer_refused:
                out += ["### Tokenizer differs: cannot compare", "",
                        "The run was tokenized differently from the baseline, so any difference could be the "
                        "tokenizer's. Re-save the baseline from a run with this tokenizer, or pass "
                        "--allow-tokenizer-mismatch (allow_tokenizer_mismatch=True) to compare anyway.", ""]
            else:
                out += ["### WARNING: tokenizer differs (compared anyway, allow_tokenizer_mismatch)", "",
                        "Differences below may be the tokenizer's, not the model's.", ""]
            out += [f"- {d}" for d in self.tokenizer_diffs] + [""]
        if self.machines is not None:
            out += [f"baseline machine: {self.machines[0]}", "", f"this run's machine: {self.machines[1]}", ""]
        out += ["| task | metric | baseline | now | Δ | allowed band | verdict |",
               "|---|---|---|---|---|---|---|"]
        for r in self.rows:
            verdict = f"**{r.verdict}**" if r.verdict in ("REGRESSION", "cannot compare") else r.verdict
            out.append(f"| {r.task} | {r.metric} | {self._fmt(r.baseline)} | {self._fmt(r.now)} | {self._delta(r)} "
                       f"| {r.band} | {verdict} |")
        if self.incompatible:
            out += ["", "### Cannot compare", ""] + [f"- {i}" for i in self.incompatible]
        if self.explanations:
            out += ["", "### Regressions", ""] + [f"- {e}" for e in self.explanations]
        if self.example_diffs:
            out += ["", "### Differing examples", ""] + [f"- {d}" for d in self.example_diffs]
        if self.notes:
            out += ["", "### Notes", ""] + [f"- {n}" for n in self.notes]
        out += ["", f"Rule: {self.rule}", ""]
        return "\n".join(out)

