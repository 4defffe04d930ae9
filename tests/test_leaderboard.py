"""``jbench table A B C [--format md|csv|json|html]`` and ``jbench.load_runs``: one side-by-side leaderboard.

Runs are written from records (no model): this module is part of ``make test-fast``."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest

import jbench
from jbench.leaderboard import ExtraRow, build_leaderboard
from jbench.errors import StoreError
from jbench.records import RunRecord
from jbench.results import write_run

SIX = ("jcommonsenseqa-1.1-0.3", "jnli-1.1-0.3", "marc_ja-1.1-0.3", "jsquad-1.1-0.3", "jaqket_v2-0.1-0.3",
       "xwinograd_ja")


def _write(run_dir: Path, scores: dict[str, float], *, madeup: tuple[str, ...] = (),
           mismatch: tuple[str, ...] = ()) -> Path:
    """A stored run: acc tasks get ``score/100`` as acc, generation tasks ``score`` as exact_match."""
    results = {t: ({"exact_match": v, "f1": v} if t.startswith(("jsquad", "jaqket")) else
                   {"acc": v / 100, "acc_stderr": 0.01}) for t, v in scores.items()}
    data = {t: [{"path": f"{t}.json", "madeup": t in madeup, "mismatch": "sha256 differs" if t in mismatch else None}]
            for t in scores}
    record = RunRecord(results=results, versions={t: 1.1 for t in scores},
                       config={"model": run_dir.name, "tasks": list(scores), "num_fewshot": [3] * len(scores),
                               "data": data}, rows={t: [] for t in scores})
    write_run(run_dir, record)
    return run_dir


@pytest.fixture
def three_runs(tmp_path: Path) -> list[Path]:
    a = _write(tmp_path / "model-a", dict(zip(SIX, (80.0, 50.0, 90.0, 70.0, 60.0, 65.0))))
    b = _write(tmp_path / "model-b", dict(zip(SIX[:4], (70.0, 40.0, 80.0, 60.0))), madeup=("jnli-1.1-0.3",))
    c = _write(tmp_path / "model-c", {"jcommonsenseqa-1.1-0.2": 75.0, "jnli-1.1-0.3": 45.0, "marc_ja-1.1-0.3": 85.0},
               mismatch=("marc_ja-1.1-0.3",))
    return [a, b, c]


def test_csv_is_one_table_with_marks_and_missing_cells(three_runs: list[Path], jbench_main: Callable[..., int],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert jbench_main("table", *map(str, three_runs), "--format", "csv") == 0
    out = capsys.readouterr().out
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["run", "jcommonsenseqa-1.1-0.2", "jcommonsenseqa-1.1-0.3", "jnli-1.1-0.3", "marc_ja-1.1-0.3",
                       "jsquad-1.1-0.3", "jaqket_v2-0.1-0.3", "xwinograd_ja", "4-task average", "6-task average",
                       "marks", "source"]
    assert [r[0] for r in rows[1:]] == ["model-a", "model-b", "model-c"] and len(rows) == 4
    assert rows[1][1:10] == ["", "80.0", "50.0", "90.0", "70.0", "60.0", "65.0", "72.5", repr((80 + 50 + 90 + 70 +
                                                                                               60 + 65) / 6)]
    assert rows[1][10] == "" and rows[1][11] == str(three_runs[0])
    # made-up JNLI marks its cell and the 4-task average; the 6-task average is not computed (tasks missing)
    assert rows[2][1:10] == ["", "70.0", "40.0", "80.0", "60.0", "", "", "62.5", ""]
    assert rows[2][10] == "jnli-1.1-0.3 †; 4-task average †"
    # JCQA at prompt 0.2 is a column of its own; a checksum mismatch is in the marks column
    assert rows[3][1:10] == ["75.0", "", "45.0", "85.0", "", "", "", "", ""] and rows[3][10] == "marc_ja-1.1-0.3 ‡"


def test_csv_reads_as_numbers_in_pandas(three_runs: list[Path], jbench_main: Callable[..., int],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    pd = pytest.importorskip("pandas")
    assert jbench_main("table", *map(str, three_runs), "--format", "csv") == 0
    df = pd.read_csv(io.StringIO(capsys.readouterr().out), index_col="run")
    numeric = [c for c in df.columns if c not in ("marks", "source")]
    assert all(str(df[c].dtype) == "float64" for c in numeric), df.dtypes
    assert df.loc["model-b", "4-task average"] == pytest.approx(62.5)
    assert math.isnan(df.loc["model-b", "jaqket_v2-0.1-0.3"]) and math.isnan(df.loc["model-b", "6-task average"])
    assert df.loc["model-b", "marks"] == "jnli-1.1-0.3 †; 4-task average †"
    pd.testing.assert_frame_equal(df[numeric], jbench.load_runs(three_runs)[numeric])  # same numbers, exactly


def _versioned_runs(root: Path) -> list[Path]:
    """The tester's case: JCQA at prompt 0.2 / 0.3 / 0.4, and the same tasks with the chat prompt."""
    rest = {"jnli-1.1-0.3": 50.0, "marc_ja-1.1-0.3": 90.0, "jsquad-1.1-0.3": 70.0}
    return [_write(root / f"tiny-p0.{v}", {f"jcommonsenseqa-1.1-0.{v}": 60.0 + v, **rest}) for v in (2, 3, 4)] + [
        _write(root / "tiny-chat", {"jcommonsenseqa-1.1-0.3+chat": 40.0, **rest})]


def test_prompt_versions_and_chat_are_separate_columns(tmp_path: Path, jbench_main: Callable[..., int],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    runs = _versioned_runs(tmp_path)
    assert jbench_main("table", *map(str, runs), "--format", "md") == 0
    out = capsys.readouterr().out
    header = [c.strip() for c in out.splitlines()[0].strip("|").split("|")]
    assert header[:5] == ["Run", "jcommonsenseqa-1.1-0.2", "jcommonsenseqa-1.1-0.3", "jcommonsenseqa-1.1-0.3+chat",
                          "jcommonsenseqa-1.1-0.4"]
    cells = {ln.split("|")[1].strip(): [c.strip() for c in ln.strip("|").split("|")[1:]]
             for ln in out.splitlines() if ln.startswith("| tiny-")}
    assert cells["tiny-p0.2"][:4] == ["62.00", "—", "—", "—"]
    assert cells["tiny-p0.4"][:4] == ["—", "—", "—", "64.00"]
    assert cells["tiny-chat"][:4] == ["—", "—", "40.00", "—"]
    # every row averages other JCQA prompts than the others (no majority): every average is marked ≠ and explained
    assert cells["tiny-p0.3"][-2] == (f"{(63 + 50 + 90 + 70) / 4:.2f} ≠")
    assert all(c[-2].endswith("≠") for c in cells.values()) and {c[-1] for c in cells.values()} == {"—"}
    note = "≠ averaged over task / prompt versions (see the row's columns) that no strict majority"
    assert any(line.startswith(note) for line in out.splitlines())
    # a run that evaluated two versions splits the same way (one column per task name, as between runs)
    both = _write(tmp_path / "both", {"jcommonsenseqa-1.1-0.2": 70.0, "jcommonsenseqa-1.1-0.3": 71.0})
    df = jbench.load_runs([runs[1], both])
    assert df.loc["both", "jcommonsenseqa-1.1-0.2"] == 70.0 and df.loc["both", "jcommonsenseqa-1.1-0.3"] == 71.0
    assert df.loc["tiny-p0.3", "jcommonsenseqa-1.1-0.3"] == 63.0 and math.isnan(df.loc["tiny-p0.3",
                                                                                          "jcommonsenseqa-1.1-0.2"])


def test_only_the_minority_average_is_marked(tmp_path: Path, jbench_main: Callable[..., int],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    runs = _versioned_runs(tmp_path)
    same = [_write(tmp_path / f"more-0.3-{i}", {"jcommonsenseqa-1.1-0.3": 60.0, "jnli-1.1-0.3": 50.0,
                                               "marc_ja-1.1-0.3": 90.0, "jsquad-1.1-0.3": 70.0}) for i in range(2)]
    assert jbench_main("table", str(runs[1]), *map(str, same), str(runs[0]), "--format", "json") == 0
    data = json.loads(capsys.readouterr().out)
    avg = {r["label"]: r["cells"]["4-task average"] for r in data["rows"]}
    assert [avg[n]["marks"] for n in ("tiny-p0.3", "more-0.3-0", "more-0.3-1")] == ["", "", ""]
    assert avg["tiny-p0.2"] == {"value": pytest.approx((62 + 50 + 90 + 70) / 4), "marks": "≠", "task": None}
    assert "≠" in data["notes"]
    df = jbench.load_runs([runs[1], *same, runs[0]])
    assert df.loc["tiny-p0.2", "marks"] == "4-task average ≠" and df.loc["tiny-p0.3", "marks"] == ""


@pytest.mark.parametrize("fmt", ["md", "json", "html"])
def test_every_format_prints_the_same_table(three_runs: list[Path], fmt: str, jbench_main: Callable[..., int],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert jbench_main("table", *map(str, three_runs), "--format", fmt) == 0
    out = capsys.readouterr().out
    if fmt == "md":
        lines = out.splitlines()
        assert lines[0].split("|")[1].strip() == "Run" and "4-task average" in lines[0]
        assert lines[1].startswith("|-----") and lines[1].endswith(":|")
        assert len([line for line in lines if line.startswith("| model-")]) == 3
        assert "62.50 †" in lines[3] and "85.00 ‡" in lines[4]
        assert any(line.startswith("† made-up rows") for line in lines)
        assert any(line.startswith("‡ a data file failed its checksum") for line in lines)
        assert any(line.startswith("— not evaluated") for line in lines)
    elif fmt == "json":
        data = json.loads(out)
        assert [r["label"] for r in data["rows"]] == ["model-a", "model-b", "model-c"]
        cell = data["rows"][1]["cells"]["jnli-1.1-0.3"]
        assert cell == {"value": 40.0, "marks": "†", "task": "jnli-1.1-0.3"}
        assert data["rows"][2]["cells"]["jcommonsenseqa-1.1-0.2"]["value"] == 75.0
        assert data["rows"][2]["cells"]["jcommonsenseqa-1.1-0.3"] == {"value": None, "marks": "", "task": None}
        assert data["rows"][2]["cells"]["4-task average"]["value"] is None
        assert set(data["notes"]) == {"†", "‡", "—"}
    else:
        assert out.startswith('<table class="jbench-leaderboard">') and out.count("<tr>") == 4
        assert "<td class=\"num\">62.50 †</td>" in out and "<li>‡ a data file" in out


def test_load_runs_returns_the_same_table(three_runs: list[Path]) -> None:
    df = jbench.load_runs(three_runs)
    assert list(df.index) == ["model-a", "model-b", "model-c"]
    assert df.loc["model-a", "6-task average"] == pytest.approx((80 + 50 + 90 + 70 + 60 + 65) / 6)
    assert df.loc["model-b", "4-task average"] == pytest.approx(62.5)
    assert math.isnan(df.loc["model-c", "jsquad-1.1-0.3"]) and math.isnan(df.loc["model-b", "6-task average"])
    assert df.loc["model-b", "marks"] == "jnli-1.1-0.3 †; 4-task average †"
    assert df.loc["model-c", "marks"] == "marc_ja-1.1-0.3 ‡"
    assert str(df["jnli-1.1-0.3"].dtype) == "float64"


def test_extra_rows_join_the_table(three_runs: list[Path]) -> None:
    extra = ExtraRow("rinna/japanese-gpt-neox-3.6b (card)",
                     {**{t: v for t, v in zip(SIX, (80.0, 40.0, 90.0, 60.0))}, "4-task average": 67.0},
                     marks={"4-task average": "*"}, source="model card", notes={"*": "published number"})
    board = build_leaderboard(three_runs[:1], [extra])
    rows = list(csv.reader(io.StringIO(board.render("csv"))))
    assert rows[2][0] == "rinna/japanese-gpt-neox-3.6b (card)"
    assert rows[2][1:5] == ["80.0", "40.0", "90.0", "60.0"] and rows[2][7] == "67.0"
    assert rows[2][9] == "4-task average *" and "* published number" in board.render("md")
    # a bare family key has no version: a column of its own, never merged into a versioned one
    bare = build_leaderboard(three_runs[:1], [ExtraRow("bare", {"jnli": 41.0})])
    assert bare.columns[:3] == ["jcommonsenseqa-1.1-0.3", "jnli", "jnli-1.1-0.3"]
    computed = build_leaderboard([], [ExtraRow("x", {"jcommonsenseqa": 80.0, "jnli": 40.0, "marc_ja": 90.0,
                                                     "jsquad": 60.0})])
    assert computed.rows[0].values["4-task average"] == pytest.approx(67.5)


def test_one_run_without_format_keeps_the_card_table(three_runs: list[Path], jbench_main: Callable[..., int],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert jbench_main("table", str(three_runs[0])) == 0
    out = capsys.readouterr().out
    assert "|Version|" in out.replace(" ", "") and "**4-task average**" in out
    assert jbench_main("table", str(three_runs[0]), "--format", "csv") == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("model-a,80.0,50.0,")


def test_bad_inputs_exit_2(three_runs: list[Path], tmp_path: Path, jbench_main: Callable[..., int],
                           capsys: pytest.CaptureFixture[str]) -> None:
    assert jbench_main("table", str(three_runs[0]), str(tmp_path / "nope"), "--format", "csv") == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "no finished run found" in captured.err and "nope" in captured.err
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    assert jbench_main("table", str(three_runs[0]), str(empty)) == 2
    assert "no finished run found" in capsys.readouterr().err
    assert jbench_main("table", *map(str, three_runs), "--format", "xlsx") == 2
    err = capsys.readouterr().err
    assert "unknown table format 'xlsx'" in err and "md, csv, json, html" in err
    (three_runs[1] / "results.json").write_text("{not json", encoding="utf-8")
    assert jbench_main("table", *map(str, three_runs), "--format", "md") == 2
    assert "results.json is not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize(("metrics", "field", "got"), [({"acc": "NaN"}, "acc", "got a string ('NaN')"),
                                                       ({"acc": 0.5, "acc_stderr": "x"}, "acc_stderr",
                                                        "got a string ('x')"),
                                                       ({"acc": None}, "acc", "got null"),
                                                       ({"acc": True}, "acc", "got a boolean (True)"),
                                                       ("0.5", None, "got a string ('0.5')")])
def test_malformed_values_exit_2_naming_the_field(metrics: object, field: str | None, got: str,
                                                  three_runs: list[Path], jbench_main: Callable[..., int],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = three_runs[1] / "results.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["results"]["jnli-1.1-0.3"] = metrics
    path.write_text(json.dumps(data), encoding="utf-8")
    name = "results.jnli-1.1-0.3" + (f".{field}" if field else "")
    for args in ([*map(str, three_runs), "--format", "csv"], [str(three_runs[1])], [str(three_runs[1]), "--format",
                                                                                     "md"]):
        assert jbench_main("table", *args) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and "Traceback" not in captured.err
        assert f"malformed results.json: field `{name}` should be" in captured.err and got in captured.err
        assert str(path) in captured.err and "rerun the run" in captured.err
    with pytest.raises(StoreError, match="malformed results.json"):
        jbench.load_runs(three_runs)
