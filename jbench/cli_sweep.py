"""``jbench sweep SWEEP.yaml``: a grid of models x variants x task sets on Ray (see :mod:`jbench.sweep`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer


def sweep_cmd(
    sweep_file: Annotated[Path, typer.Argument(help="The sweep YAML file: models, variants, task_sets (and "
                                                    "optionally output_dir, data_dir, device, limit, retries, "
                                                    "resources); see README, Sweeps.", show_default=False)],
    address: Annotated[Optional[str], typer.Option(
        "--address", help="Ray cluster to run on (HEAD:6379, or 'auto' for one started with `ray start` on this "
                          "machine). Default: start a local Ray on this machine for the sweep.")] = None,
    output_dir: Annotated[Optional[Path], typer.Option(
        "--output-dir", help="Where runs are stored (default: the file's output_dir, else results). On a cluster "
                             "it must be storage every node sees at the same path.", show_default=False)] = None,
    num_cpus: Annotated[Optional[int], typer.Option(
        "--num-cpus", help="CPUs of the local Ray (default: all of this machine's); not with --address.",
        show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate the file and list the runs with the resources "
                                          "each asks for; start nothing.")] = False,
) -> None:
    """Run a grid of models x variants x task sets on Ray; print one leaderboard of every finished run.

    Each (model, variant) is one Ray task asking for the file's resources (num_gpus, num_cpus, memory); each run
    is stored like a `jbench eval` run in <output-dir>/<model>-<variant>-<task set>. The whole file is validated
    before Ray starts. A rerun skips finished runs and resumes partial ones from their request cache; a run that
    fails is retried (retries, default 2) and, if it still fails, named at the end (exit 2). A model with several
    variants also gets its comparison report in <output-dir>/compare/. Progress: runs done k/N with an ETA.
    """
    from jbench.errors import TaskError

    if num_cpus is not None and (address is not None or num_cpus < 1):
        raise TaskError("--num-cpus sizes a local Ray: it must be at least 1 and cannot go with --address",
                        where=f"--num-cpus {num_cpus}", fix="drop --num-cpus (a cluster has its own CPUs)"
                        if address else "give a positive number")
    if dry_run:
        from jbench.sweep import load_sweep

        sweep = load_sweep(sweep_file, output_dir=output_dir)
        print("| run | model | variant | task set | tasks | num_gpus | num_cpus | memory |")
        print("|---|---|---|---|---|---|---|---|")
        for job in sweep.jobs:
            r = job.resources
            mem = f"{r.memory / 2**30:.1f} GiB" if r.memory else "-"
            for run in job.runs:
                print(f"| {run.name} | {run.model} | {run.variant} | {run.task_set} | {','.join(run.plan['tasks'])} "
                      f"| {r.num_gpus:g} | {r.num_cpus:g} | {mem} |")
        print(f"{len(sweep.runs)} runs as {len(sweep.jobs)} Ray tasks, stored in {sweep.output_dir}", file=sys.stderr)
        return
    from jbench.sweep_report import run_sweep

    result = run_sweep(sweep_file, address=address, output_dir=output_dir, num_cpus=num_cpus)
    if result.table:
        print(result.table, end="")
    for path in result.comparisons:
        print(f"report: {path}/compare.{{md,json,html,png}}", file=sys.stderr)
    for note in result.notes:
        print(f"warning: {note}", file=sys.stderr)
    failure = result.failure()
    if failure is not None:
        raise failure
