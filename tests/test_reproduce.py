"""Issue 17 end to end: `jbench reproduce` with the embedded tiny model as a stand-in, registered through a test
registry file ($JBENCH_PUBLISHED_EXTRA) whose numbers are the tiny model's own; then `jbench check RUN --baseline
published:tiny` passes, and fails once the registered numbers change. Never needs the Hub."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from jbench.published import registry

LIMIT = "20"


def _source(acc: float, xw: float) -> dict:
    return {"id": "test:tiny", "model": "tiny", "kind": "test", "title": "stand-in for a published result",
            "url": "file:///stand-in", "model_args": "pretrained=tiny,use_fast=False", "dtype": "float32",
            "use_fast": False, "tasks": [
                {"task": "jcommonsenseqa-1.1-0.2", "family": "jcommonsenseqa", "version": 1.1, "prompt_version": "0.2",
                 "shots": 3, "n": int(LIMIT), "jbench_task": "jcommonsenseqa-1.1-0.2",
                 "metrics": {"acc": {"value": acc}}},
                {"task": "jnli-1.1-0.2", "family": "jnli", "version": 1.1, "prompt_version": "0.2", "shots": 3,
                 "jbench_task": "jnli-1.1-0.2", "metrics": {"acc": {"value": 0.5}}},
                {"task": "xwinograd_ja", "family": "xwinograd_ja", "version": 1.0, "shots": 0, "n": int(LIMIT),
                 "jbench_task": "xwinograd_ja", "metrics": {"acc": {"value": xw}}},
                {"task": "xlsum_ja", "family": "xlsum_ja", "version": 1.0, "shots": 1, "jbench_task": None,
                 "metrics": {"rouge2": {"value": 5.0}}}]}


@pytest.fixture(scope="module")
def stand_in_run(tmp_path_factory: pytest.TempPathFactory, real_data_dir: Path) -> tuple[Path, dict]:
    """The tiny model's numbers at --limit 20 on the real data, made once (as a user would: jbench eval). The
    stand-in source says it measured those 20 documents (n=20), so a --limit 20 run covers its full set."""
    import jbench

    out = tmp_path_factory.mktemp("stand-in")
    rec = jbench.evaluate("tiny", tasks=["jcommonsenseqa-1.1-0.2", "xwinograd_ja"], num_fewshot=[3, 0],
                          limit=int(LIMIT), data_dir=real_data_dir, output_dir=out, run_name="tiny-fp32",
                          use_fast=False)
    return out / "tiny-fp32", rec.results


def _register(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, acc: float, xw: float) -> Path:
    path = tmp_path / "published-extra.json"
    path.write_text(json.dumps({"sources": [_source(acc, xw)]}), encoding="utf-8")
    monkeypatch.setenv(registry.EXTRA_ENV, str(path))
    return path


def test_reproduce_end_to_end(stand_in_run: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              jbench_main: Callable[..., int], capsys: pytest.CaptureFixture[str],
                              real_data_dir: Path, sample_dir: Path) -> None:
    _, res = stand_in_run
    _register(tmp_path, monkeypatch, res["jcommonsenseqa-1.1-0.2"]["acc"], res["xwinograd_ja"]["acc"])
    code = jbench_main("reproduce", "tiny", "--limit", LIMIT, "--data-dir", str(real_data_dir), "--output-dir",
                       str(tmp_path / "runs"), "--no-progress")
    out = capsys.readouterr().out
    assert code == 0, out
    assert "| jcommonsenseqa-1.1-0.2 | acc |" in out and "reproduced: exactly" in out
    assert "not comparable: missing data (jnli train" in out  # the real data has no JNLI train split
    assert "not comparable: jbench has no xlsum_ja task" in out
    assert ("REPRODUCED: of the 2 source task(s) the run covers, 2 reproduced, 0 consistent at a reduced n only, 0 "
            "differ beyond noise, 0 not comparable; 2 more source task(s) not covered by the run") in out
    # the same again as JSON, loading the weights through --checkpoint (the request cache answers)
    code = jbench_main("reproduce", "tiny", "--checkpoint", "tiny", "--format", "json", "--limit", LIMIT,
                       "--data-dir", str(real_data_dir), "--output-dir", str(tmp_path / "runs"), "--no-progress")
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["exit_code"] == 0 and doc["source"] == "test:tiny"
    assert [t["verdict"] for t in doc["tasks"]] == ["reproduced", "not comparable", "reproduced", "not comparable"]
    # the bundled sample is made-up data: nothing is comparable, exit 2
    code = jbench_main("reproduce", "tiny", "--limit", "5", "--data-dir", str(sample_dir), "--output-dir",
                       str(tmp_path / "runs2"),
                       "--run-name", "sample", "--no-progress")
    out = capsys.readouterr().out
    assert code == 2 and "made-up data" in out and "not the official data files" in out


def test_check_against_published_passes_then_fails(stand_in_run: tuple[Path, dict], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch, jbench_main: Callable[..., int],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, res = stand_in_run
    acc, xw = res["jcommonsenseqa-1.1-0.2"]["acc"], res["xwinograd_ja"]["acc"]
    _register(tmp_path, monkeypatch, acc, xw)
    assert jbench_main("check", str(run_dir), "--baseline", "published:tiny") == 0
    assert "reproduced: exactly" in capsys.readouterr().out
    report = tmp_path / "check.md"
    assert jbench_main("check", str(run_dir), "--baseline", "published:tiny@test", "--report", str(report)) == 0
    assert "REPRODUCED" in report.read_text(encoding="utf-8")
    # a change far beyond the noise at n=20 (±0.16): the published acc moves by 0.6
    _register(tmp_path, monkeypatch, min(acc + 0.6, 1.0), xw)
    assert jbench_main("check", str(run_dir), "--baseline", "published:tiny") == 1
    assert "differs: acc beyond noise" in capsys.readouterr().out
    assert jbench_main("check", str(run_dir), "--baseline", "published:nobody/none") == 2
    assert "no published numbers for 'nobody/none'" in capsys.readouterr().err


def test_table_and_card_marks_show_the_published_numbers(stand_in_run: tuple[Path, dict], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         jbench_main: Callable[..., int],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, res = stand_in_run
    _register(tmp_path, monkeypatch, res["jcommonsenseqa-1.1-0.2"]["acc"], 0.123)
    assert jbench_main("table", str(run_dir)) == 0
    out = capsys.readouterr().out
    assert " §|" in out and "§ equals a published number to 4 decimals (jcommonsenseqa-1.1-0.2 acc: test:tiny)" in out
    assert "| published test: tiny |" in out and "12.30" in out  # the published row under the run
    assert jbench_main("table", str(run_dir), "--no-published") == 0
    assert "published test" not in capsys.readouterr().out
    monkeypatch.delenv(registry.EXTRA_ENV)
    assert jbench_main("table", str(run_dir)) == 0
    assert "§" not in capsys.readouterr().out


def test_comparison_report_shows_the_published_original(stand_in_run: tuple[Path, dict], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from jbench.compare.render import ComparisonReport

    run_dir, res = stand_in_run
    _register(tmp_path, monkeypatch, res["jcommonsenseqa-1.1-0.2"]["acc"], res["xwinograd_ja"]["acc"])

    class _Original:
        path, run = str(run_dir), "tiny-fp32"

    report = ComparisonReport.__new__(ComparisonReport)
    object.__setattr__(report, "original", _Original())  # only the original is read by this section
    lines = report._published_lines()
    assert lines[0] == "## Original vs published"
    assert any(ln.startswith("| jcommonsenseqa-1.1-0.2 | acc | ") and "reproduced" in ln for ln in lines)


def test_reduced_n_and_a_stated_checkpoint(stand_in_run: tuple[Path, dict], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch, jbench_main: Callable[..., int],
                                          capsys: pytest.CaptureFixture[str], real_data_dir: Path) -> None:
    """Fewer documents than the source: "consistent at n=10", exit 2, never reproduced. A local folder counts as
    the source's model only where the user says so (reproduce --checkpoint); `check` of that run does not know it."""
    run_dir, res = stand_in_run
    _register(tmp_path, monkeypatch, res["jcommonsenseqa-1.1-0.2"]["acc"], res["xwinograd_ja"]["acc"])
    code = jbench_main("reproduce", "tiny", "--limit", "10", "--data-dir", str(real_data_dir), "--output-dir",
                       str(tmp_path / "runs"), "--run-name", "lim10", "--no-progress")
    out = capsys.readouterr().out
    assert code == 2 and "CONSISTENT AT A REDUCED N" in out and "within noise at n=10 only (the source: n=20)" in out
    assert "| reproduced" not in out
    folder = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))["config"]["model_path"]
    code = jbench_main("reproduce", "tiny", "--checkpoint", folder, "--limit", LIMIT, "--data-dir",
                       str(real_data_dir), "--output-dir", str(tmp_path / "runs"), "--run-name", "ckpt",
                       "--no-progress")
    out = capsys.readouterr().out
    assert code == 0 and "REPRODUCED: of the 2 source task(s)" in out, out
    assert jbench_main("check", str(tmp_path / "runs" / "ckpt"), "--baseline", "published:tiny") == 2
    assert f"another model (the run is of {folder}, the source of tiny)" in capsys.readouterr().out
