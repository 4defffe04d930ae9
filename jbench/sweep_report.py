"""A sweep end to end (:func:`run_sweep`: read and validate the file, run on Ray, summarize), and what it leaves
besides its runs: one leaderboard of every finished run (:mod:`jbench.leaderboard`, the same
table as ``jbench table``) and, for each model with more than one variant, the comparison report of its variants
against its original (:func:`jbench.compare.compare_runs`, the same report as ``jbench compare``)."""

from __future__ import annotations

import logging
from pathlib import Path

import os
from dataclasses import dataclass, field

from jbench.errors import JBenchError
from jbench.sweep import Sweep, SweepError, load_sweep, original_variant
from jbench.sweep_ray import RunOutcome, execute_sweep

log = logging.getLogger(__name__)



@dataclass
class SweepResult:
    """A finished sweep: one outcome per run, the leaderboard (markdown), the comparison reports written."""

    sweep: Sweep
    outcomes: list[RunOutcome]
    table: str
    comparisons: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def failure(self) -> SweepError | None:
        """One error naming every run that still failed after its retries (None when all finished)."""
        if not self.failed:
            return None
        lines = [f"{len(self.failed)} of {len(self.outcomes)} runs failed (a user error on a node is not retried; "
                 "anything else was retried up to `retries` times):"]
        for o in self.failed:
            first = (o.error or "unknown error").strip().splitlines()
            lines.append(f"  {o.name}: " + " / ".join(x.strip() for x in first[:3]))
        return SweepError("\n".join(lines), where=str(self.sweep.output_dir),
                          fix="fix what the messages say (each run's log is in <output_dir>/<run>/log.txt), then "
                              "rerun the same sweep: finished runs are skipped, partial ones resume from their cache")


def run_sweep(path: str | os.PathLike[str], *, address: str | None = None,
              output_dir: str | os.PathLike[str] | None = None, num_cpus: int | None = None) -> SweepResult:
    """Run the sweep file at ``path`` on Ray (``address``, else a local Ray with ``num_cpus`` CPUs) and return its
    result; the leaderboard covers every finished run and a comparison report is written for each model with
    several variants. Runs that failed are in ``result.failed`` (``result.failure()`` is the error to raise)."""
    sweep = load_sweep(Path(path), output_dir=None if output_dir is None else Path(output_dir))
    outcomes = execute_sweep(sweep, address=address, num_cpus=num_cpus)
    written, notes = write_comparisons(sweep, outcomes)
    return SweepResult(sweep, outcomes, leaderboard(sweep, outcomes), written, notes)


def leaderboard(sweep: Sweep, outcomes: list[RunOutcome]) -> str:
    """The markdown leaderboard of the finished runs, in sweep order (empty when none finished)."""
    from jbench.leaderboard import build_leaderboard

    ok = {o.name for o in outcomes if o.status in ("done", "skipped")}
    dirs = [sweep.output_dir / r.name for r in sweep.runs if r.name in ok]
    return build_leaderboard(dirs).to_markdown() if dirs else ""


def _report_name(sweep: Sweep, run_name: str, original: str) -> str:
    """The report folder ``jbench compare --original <dtype>`` would use for this original (the effective dtype,
    :func:`jbench.run_identity.comparison_dtype`, and the settings tags), so both commands name reports alike."""
    from jbench.plan import RunPlan
    from jbench.run_identity import comparison_dtype, report_name

    plan = RunPlan(**next(r.plan for r in sweep.runs if r.name == run_name))
    return report_name(plan, comparison_dtype(original, plan.model.get("variant")))


def write_comparisons(sweep: Sweep, outcomes: list[RunOutcome]) -> tuple[list[Path], list[str]]:
    """For each model and task set with an original and at least one other finished variant, the comparison
    report in ``<output_dir>/compare/<report name of the original>-<task set>/compare.{md,json,html,png}``
    (``tiny-fp32-core``: the folder ``jbench compare --original fp32`` names, then the task set). Returns the folders
    written and one note per report that could not be made (the runs themselves stay valid)."""
    from jbench.compare import compare_runs
    from jbench.compare.files import write_report_files

    ok = {o.name for o in outcomes if o.status in ("done", "skipped")}
    written: list[Path] = []
    notes: list[str] = []
    runs = {(r.model, r.variant, r.task_set): r.name for r in sweep.runs}
    sets = list(dict.fromkeys(r.task_set for r in sweep.runs))
    for model, variants in sweep.models.items():
        if len(variants) < 2:
            continue
        base = original_variant(variants)
        for set_name in sets:
            orig = runs.get((model, base, set_name))
            others = [runs[(model, v, set_name)] for v in variants
                      if v != base and runs.get((model, v, set_name)) in ok]
            if orig not in ok or not others:
                continue
            out = sweep.output_dir / "compare" / f"{_report_name(sweep, orig, base)}-{set_name}"
            try:
                report = compare_runs(sweep.output_dir / str(orig), [sweep.output_dir / n for n in others])
                write_report_files(report, out)  # all four or none
            except JBenchError as err:
                notes.append(f"no comparison for {model} ({set_name}): {err.what}")
                continue
            except OSError as err:
                notes.append(f"cannot write the comparison of {model} ({set_name}): {err.strerror or err} ({out})")
                continue
            written.append(out)
    return written, notes
