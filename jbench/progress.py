"""Per-task progress bars with ETA on stderr (stdout stays clean for tables and JSON)."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Callable

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)


class TaskProgress:
    """``with TaskProgress() as p: tick = p.task(name, total); tick(n)`` — a no-op when disabled."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._progress: Progress | None = None

    def __enter__(self) -> "TaskProgress":
        if self.enabled:
            console = Console(file=sys.stderr)
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("docs"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=console, transient=False,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.__exit__(exc_type, exc, tb)

    def task(self, name: str, total: int) -> Callable[[int], None]:
        if self._progress is None:
            return lambda n: None
        tid = self._progress.add_task(name, total=total)
        progress = self._progress
        return lambda n: progress.advance(tid, n)
