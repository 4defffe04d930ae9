"""``jbench published`` and ``jbench reproduce`` (and ``jbench check --baseline published:...``): typer
declarations and printing over :mod:`jbench.published`. Registered in :mod:`jbench.cli` by one line each."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from jbench.cli_options import BatchOpt, DataDirOpt, DeviceOpt, LimitOpt, OutputDirOpt, ProgressOpt
from jbench.errors import TaskError

FORMATS = ("md", "csv", "json")

FormatOpt = Annotated[str, typer.Option("--format", "-f", help="md (tables as jbench prints its own), csv (one row "
                                        "per number with its provenance) or json.")]
SourceOpt = Annotated[Optional[list[str]], typer.Option(
    "--source", "-s", help="Which published source (one): a file name (result.json, result.jsquad-1.2.json), "
                           "'card', a full source id, or its number in `jbench published MODEL`. Default: the "
                           "reference result file with the most tasks.")]


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise TaskError(f"unknown format {fmt!r}", where=f"--format {fmt}", fix=f"use one of: {', '.join(FORMATS)}")


def published_cmd(
    model: Annotated[Optional[str], typer.Argument(help="A model id, e.g. rinna/japanese-gpt-neox-3.6b. Omitted: "
                                                        "list every model with published numbers.")] = None,
    fmt: FormatOpt = "md",
    averages: Annotated[bool, typer.Option("--averages", help="Audit every average a source prints against its "
                                           "own per-task numbers (the reference's compute_average_from_json); "
                                           "with MODEL, only that model's sources.")]
    = False,
) -> None:
    """Published numbers with their provenance (reference result files, model cards).

    With MODEL: one block per source (URL, path and commit, the settings it used, the card table and the 4-/6-task
    averages exactly as jbench prints its own). Numbers from a card that does not state its settings are marked
    SETTINGS UNKNOWN and never used for an exact verdict."""
    from jbench.published.registry import sources_for
    from jbench.published.render import render_average_audit, render_model, render_models

    _check_format(fmt)
    if averages:
        print(render_average_audit(fmt, model), end="\n" if fmt == "json" else "")
    elif model is None:
        print(render_models(fmt), end="")
    else:
        print(render_model(model, sources_for(model), fmt), end="" if fmt == "md" else "\n")


def reproduce_cmd(
    model: Annotated[str, typer.Argument(help="The model id as `jbench published` lists it.")],
    source: SourceOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the settings that would be used (each read "
                                          "from the source) and stop; no weights are loaded.")] = False,
    checkpoint: Annotated[Optional[str], typer.Option(
        "--checkpoint", help="Load the weights from this local path instead of the Hub id. You state that it is "
                             "MODEL: the verdict then accepts the folder as the source's model.")] = None,
    limit: LimitOpt = None,
    data_dir: DataDirOpt = None,
    output_dir: OutputDirOpt = Path("results"),
    run_name: Annotated[Optional[str], typer.Option("--run-name", help="Default: <model>-<variant>.")] = None,
    device: DeviceOpt = None,
    batch_size: BatchOpt = None,
    progress: ProgressOpt = True,
    fmt: FormatOpt = "md",
) -> None:
    """Evaluate MODEL with exactly one published source's settings and say whether its numbers reproduce.

    Tasks, prompt version, shots, use_fast, dtype and trust_remote_code all come from the source (its harness.sh and
    result file config). Prints published vs measured, Δ, whether |Δ| is within binomial noise at the measured n
    (±1.96·sqrt(p(1-p)/n)), and per task: reproduced, consistent (within noise on fewer documents than the source,
    e.g. --limit), differs, or not comparable (with why: a task jbench does not have, missing or made-up data,
    different shots or task version). Exit 0 only when every task that ran reproduced, 1 a task differs beyond
    noise, 2 otherwise (partial, reduced n, nothing comparable) or bad input, as `jbench check`; docs/reproduce.md
    has the rule. --checkpoint states that a local folder is MODEL."""
    from jbench.published.registry import pick_source
    from jbench.published.reproduce import plan_reproduction, run_reproduction

    _check_format(fmt)
    if source and len(source) > 1:
        raise TaskError(f"--source given {len(source)} times ({', '.join(source)}): reproduce compares with one "
                        "source", where=" ".join(f"--source {x}" for x in source),
                        fix="pass --source once; run reproduce once per source to compare with several")
    src = pick_source(model, source[0] if source else None)
    plan = plan_reproduction(src, data_dir=data_dir, checkpoint=checkpoint)
    if dry_run:
        print(plan.describe())
        plan.require_tasks()  # the same refusal as the real run, after showing why each task is skipped
        return
    print(plan.describe(), file=sys.stderr)
    rep, record = run_reproduction(plan, limit=limit, data_dir=data_dir, output_dir=output_dir, run_name=run_name,
                                   device=device, batch_size=batch_size, progress=progress)
    print(json.dumps(rep.to_json(), indent=2, ensure_ascii=False) if fmt == "json" else rep.to_markdown())
    print(f"run stored in {record.path}", file=sys.stderr)
    raise typer.Exit(rep.exit_code)


def check_published(run: str, baseline: str, report: Path | None = None, mode: str = "stat") -> int:
    """``jbench check RUN --baseline published:MODEL[@SOURCE]``: the reproduction verdict of a stored run; returns
    check's exit code (0 reproduced, 1 differs beyond noise, 2 not comparable, partial or reduced n). ``--mode
    exact`` is refused: a published source has no per-example predictions or loglikelihoods to match."""
    from jbench.published.registry import parse_ref, pick_source
    from jbench.published.verdict import compare
    from jbench.results import load_run, write_report

    if mode != "stat":
        raise TaskError(f"--mode {mode} cannot apply to a published baseline: a published source has only "
                        "aggregate numbers (no per-example predictions or loglikelihoods)",
                        where=f"--mode {mode} --baseline {baseline}",
                        fix="drop --mode (the published comparison is a noise-band verdict), or compare exactly "
                            "with a saved run: `jbench baseline save RUN --name NAME`")
    model, source = parse_ref(baseline)
    src = pick_source(model, source, flag=f"--baseline {baseline}")
    loaded = load_run(run)
    rep = compare(src, loaded.data, str(loaded.path))
    text = rep.to_markdown()
    if report is not None:
        write_report(report, text)
    print(text)
    return rep.exit_code
