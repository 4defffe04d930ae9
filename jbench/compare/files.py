"""Writing a comparison report's four files (``compare.{md,json,html,png}``) as one unit.

Why a module of its own: ``jbench compare`` and ``jbench sweep`` write the same report, and a failure half way (a
full disk, a matplotlib error) must never leave a folder whose markdown is new and whose chart is from an earlier
comparison. Every file is written into a temporary folder next to the target first; only when all four exist are
they renamed into place (each rename is atomic, and they sit on one file system).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jbench.compare.render import ComparisonReport

log = logging.getLogger(__name__)

REPORT_FILES = ("compare.md", "compare.json", "compare.html", "compare.png")


def write_report_files(report: "ComparisonReport", out: str | os.PathLike[str]) -> Path:
    """Write ``compare.{md,json,html,png}`` of ``report`` into the folder ``out`` (made if missing; other files in
    it are left alone) and return it. Raises :class:`OSError` with nothing of this report in ``out`` when a file
    cannot be written; an earlier report there is then kept whole."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        (tmp / "compare.md").write_text(report.to_markdown() + "\n", encoding="utf-8")
        (tmp / "compare.json").write_text(report.to_json() + "\n", encoding="utf-8")
        report.write_html(tmp / "compare.html")
        report.plot(tmp / "compare.png")
        if not out.exists():
            tmp.rename(out)  # the whole folder at once
            return out
        for name in REPORT_FILES:
            os.replace(tmp / name, out / name)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.debug("wrote the comparison report in %s", out)
    return out
