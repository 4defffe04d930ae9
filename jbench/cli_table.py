"""``jbench table``: stored runs as tables (the CLI body; registered in :mod:`jbench.cli`)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from jbench.errors import JBenchError


def table_cmd(
    runs: Annotated[list[str], typer.Argument(help="Run directories (or names under results/).")],
    fmt: Annotated[Optional[str], typer.Option(
        "--format", help="md, csv, json or html: one side-by-side leaderboard (rows = runs; one column per task "
                         "name, so each task / prompt version and +chat prompt is its own column; then the "
                         "4-/6-task averages, on the averages' 0-100 scale). md / html mark cells inline († "
                         "made-up data, ‡ checksum mismatch, ≠ an average over other versions than the other "
                         "rows', — not evaluated); csv / json hold plain numbers (empty / null where missing) and "
                         "the marks apart (csv: a `marks` column). Default: md; a single run without --format "
                         "prints its card table and averages instead, as `jbench eval` does.")] = None,
    published: Annotated[bool, typer.Option(
        "--published/--no-published", help="Add a row per published source of each run's model (`jbench "
                                            "published`), under the runs.")] = True,
) -> None:
    """Print stored runs side by side (one leaderboard), or one run's card table and averages."""
    from jbench.leaderboard import FORMATS, build_leaderboard, load_table_run

    if fmt is not None and fmt not in FORMATS:
        raise JBenchError(f"unknown table format {fmt!r}", where=f"--format {fmt}",
                          fix=f"use one of: {', '.join(FORMATS)}")
    from jbench.published.rows import published_rows

    loaded = [load_table_run(r) for r in runs]  # malformed results.json: exit 2 naming the field
    extra = published_rows(loaded) if published else []  # published numbers of the runs' models (issue 17)
    if fmt is None and len(runs) == 1:
        from jbench.report import run_tables

        print(run_tables(loaded[0].data))
        if extra:
            print("measured vs published (jbench published MODEL for the sources):")
            print(build_leaderboard(loaded, extra).render("md"), end="")
        return
    print(build_leaderboard(loaded, extra).render(fmt or "md"), end="")
