"""The comparison report's four files are written as one unit (:func:`jbench.compare.files.write_report_files`), by
``jbench compare`` and ``jbench sweep`` alike: all four or none, and an earlier report is never half replaced."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jbench.compare.files import REPORT_FILES, write_report_files


class _Report:
    """The four renderers of a ComparisonReport; ``fail_png`` makes the chart fail after the others were written."""

    def __init__(self, text: str, fail_png: bool = False) -> None:
        self.text, self.fail_png = text, fail_png

    def to_markdown(self) -> str:
        return f"# {self.text}"

    def to_json(self) -> str:
        return f'{{"report": "{self.text}"}}'

    def write_html(self, path: Path) -> Path:
        Path(path).write_text(f"<p>{self.text}</p>", encoding="utf-8")
        return Path(path)

    def plot(self, path: Path) -> Path:
        if self.fail_png:
            raise OSError(28, "No space left on device")
        Path(path).write_bytes(b"\x89PNG" + self.text.encode())
        return Path(path)


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir())


def test_writes_all_four_into_a_new_folder(tmp_path: Path) -> None:
    out = write_report_files(_Report("new"), tmp_path / "compare" / "tiny")  # type: ignore[arg-type]
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES)
    assert (out / "compare.md").read_text(encoding="utf-8") == "# new\n"
    assert (out / "compare.json").read_text(encoding="utf-8") == '{"report": "new"}\n'
    assert _siblings(out) == ["tiny"]  # no temporary folder left behind


def test_replaces_an_earlier_report_and_keeps_other_files(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    write_report_files(_Report("old"), out)  # type: ignore[arg-type]
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    write_report_files(_Report("new"), out)  # type: ignore[arg-type]
    assert (out / "compare.html").read_text(encoding="utf-8") == "<p>new</p>"
    assert (out / "compare.png").read_bytes().endswith(b"new")
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine" and _siblings(out) == ["mine"]


def test_a_failure_half_way_leaves_no_partial_report(tmp_path: Path) -> None:
    out = tmp_path / "compare" / "tiny"
    with pytest.raises(OSError, match="No space left"):
        write_report_files(_Report("new", fail_png=True), out)  # type: ignore[arg-type]
    assert not out.exists() and os.listdir(out.parent) == []  # md/json/html were written, then thrown away
    write_report_files(_Report("old"), out)  # type: ignore[arg-type]
    with pytest.raises(OSError):
        write_report_files(_Report("new", fail_png=True), out)  # type: ignore[arg-type]
    assert (out / "compare.md").read_text(encoding="utf-8") == "# old\n"  # the earlier report, whole
    assert (out / "compare.png").read_bytes().endswith(b"old") and _siblings(out) == ["tiny"]
