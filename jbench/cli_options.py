"""Typer option declarations shared by several ``jbench`` commands (eval and compare take the same run options),
declared once so a flag means the same thing, with the same help, everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from jbench.plan import FALLBACK_PROMPT_VERSION

DataDirOpt = Annotated[Optional[Path], typer.Option(
    "--data-dir", help="Folder with the raw data files (default: $JBENCH_DATA_DIR; with the embedded tiny model "
                       "and no data dir, the bundled sample).", show_default=False)]
ModelOpt = Annotated[Optional[str], typer.Option(
    "--model", "-m", help="Local path or hub id of a causal LM. Omitted or 'tiny': the embedded tiny model "
                          "(built offline, deterministically, in seconds).")]
LimitOpt = Annotated[Optional[float], typer.Option(
    "--limit", help="Keep the first N documents after the shuffle (a value below 1 is a fraction).")]
TasksOpt = Annotated[Optional[list[str]], typer.Option(
    "--tasks", "-t", help="Comma-separated task or family names; repeatable (the lists are joined). Default: "
                          "the 6-task suite jcommonsenseqa,jnli,marc_ja,jsquad,jaqket_v2,xwinograd_ja.")]
ShotsOpt = Annotated[Optional[str], typer.Option(
    "--num-fewshot", help="Shots per task, comma-separated in task order, or one value for all "
                          "(default: 3,3,3,2,1,0 for the suite, else each task's default).")]
PromptOpt = Annotated[Optional[str], typer.Option(
    "--prompt-version", "-p", help="Prompt version for family names (e.g. 0.3). Default: the model preset's, "
                                   f"else {FALLBACK_PROMPT_VERSION}. A full task name (jnli-1.3-0.4) already names "
                                   "its prompt version.")]
BatchOpt = Annotated[Optional[int], typer.Option(
    "--batch-size", help="Requests per forward pass. Default: automatic (the scorer packs rows by token count and "
                         "halves the batch on out-of-memory).")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="cpu (default), cuda, cuda:1, mps.")]
OutputDirOpt = Annotated[Path, typer.Option("--output-dir", help="Where runs are stored.")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars with ETA on stderr.")]
TokenizerMismatchOpt = Annotated[bool, typer.Option(
    "--allow-tokenizer-mismatch", help="Compare even if the tokenizer identities differ (or one is not recorded); "
                                       "the report then shows the difference at its top. Without it, that is an "
                                       "error.")]
BaselinesDirOpt = Annotated[Path, typer.Option("--baselines-dir", help="Where baselines live.")]
