"""Real tiny-model runs through the CLI: ``--wandb-args`` in W&B's offline mode (read back from the run files),
lm-eval's ``make_table`` on the run's lm-eval layout, and ``jbench table A B C --format csv`` (issue 16)."""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jbench.data import sample_data_dir
from jbench.lmeval_layout import LMEVAL_DIR

if os.environ.get("CI"):  # CI installs the wandb extra: its absence there is a failure, never a skip
    import lm_eval.utils as lm_utils
    import wandb
else:
    wandb = pytest.importorskip("wandb")
    lm_utils = pytest.importorskip("lm_eval.utils")

TASKS = "jcommonsenseqa,jnli,marc_ja,jsquad"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jbench.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


def _eval(out: Path, name: str, tasks: str, *extra: str, env: dict[str, str] | None = None) -> Path:
    proc = _cli("eval", "--model", "tiny", "--tasks", tasks, "--limit", "4", "--data-dir", str(sample_data_dir()),
                "--output-dir", str(out), "--run-name", name, "--no-progress", *extra, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("wandb-runs")
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(root / "wb"), "WANDB_SILENT": "true", "WANDB_CONSOLE": "off"}
    (root / "wb").mkdir()
    # config as a dict literal (with a comma inside) and tags as a list: both used to be mangled or fail at the end
    a = _eval(root / "runs", "tiny-a", TASKS, "--wandb-args", "project=jbench-test,name=tiny-a-wb,job_type=eval,"
              "config={'lr': 0.5, 'note': 'a,b'},tags=['x','y']", env=env)
    b = _eval(root / "runs", "tiny-b", "jcommonsenseqa,jnli")
    c = _eval(root / "runs", "tiny-c", "jcommonsenseqa-1.1-0.2,xwinograd_ja")
    offline = sorted((root / "wb" / "wandb").glob("offline-run-*"))
    return {"a": a, "b": b, "c": c, "wandb_runs": offline}


def _wandb_records(path: Path) -> Iterator[Any]:
    """The protobuf records of an offline ``run-<id>.wandb`` file (a LevelDB-style log: 32 KiB blocks of
    [crc32, length, type] chunks after a 7-byte W&B header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4: pos + 7])
        buf += data[pos + 7: pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record
        elif kind == 0 and length == 0:
            buf = b""


def test_wandb_offline_run_holds_the_tables_and_averages(runs: dict[str, Any]) -> None:
    assert len(runs["wandb_runs"]) == 1
    run_dir = runs["wandb_runs"][0]
    results = json.loads((runs["a"] / "results.json").read_text(encoding="utf-8"))
    tables = {p.name.split("_0_")[0]: json.loads(p.read_text(encoding="utf-8"))
              for p in (run_dir / "files" / "media" / "table").glob("*.table.json")}
    assert set(tables) == {"leaderboard_table", "radar_table", "card_table", "output_table"}
    board = tables["leaderboard_table"]
    assert board["columns"][:2] == ["run_name", "model_name"] and "4-task average" in board["columns"]
    assert board["data"][0][0] == "tiny-a-wb"
    avg = board["data"][0][board["columns"].index("4-task average")]
    jcqa = board["data"][0][board["columns"].index("jcommonsenseqa-1.1-0.3")]
    assert jcqa == pytest.approx(results["results"]["jcommonsenseqa-1.1-0.3"]["acc"] * 100)
    card = tables["card_table"]
    assert card["columns"] == ["Task", "Version", "Metric", "Value", "Stderr", "marks"]
    assert ["jnli-1.1-0.3", "acc"] in [[r[0], r[2]] for r in card["data"]]
    out = tables["output_table"]
    assert len(out["data"]) == sum(results["n_samples"].values()) == 16
    assert {"run_name", "target_dataset", "num_few_shots", "input", "pred", "true", "acc", "exact_match"} <= set(
        out["columns"])
    assert {r[out["columns"].index("target_dataset")] for r in out["data"]} == set(results["results"])
    summary: dict[str, Any] = {}
    config: dict[str, Any] = {}
    tags: list[str] = []
    for record in _wandb_records(next(run_dir.glob("run-*.wandb"))):
        if record.WhichOneof("record_type") == "summary":
            summary.update({item.key: json.loads(item.value_json) for item in record.summary.update if item.key})
        elif record.WhichOneof("record_type") == "run":
            config.update({item.key: json.loads(item.value_json) for item in record.run.config.update if item.key})
            tags = list(record.run.tags)
    # the user's config={...} joins jbench's run config; tags arrive as a list
    assert config["lr"] == 0.5 and config["note"] == "a,b"
    assert config["model"] == results["config"]["model"] and config["tasks"] == list(results["results"])
    assert tags == ["x", "y"]
    assert summary["4-task average"] == pytest.approx(avg)
    assert summary["jnli-1.1-0.3/acc"] == pytest.approx(results["results"]["jnli-1.1-0.3"]["acc"])


def test_make_table_on_a_real_run(runs: dict[str, Any]) -> None:
    files = [str(p) for p in (runs["a"] / LMEVAL_DIR).iterdir()]
    latest = lm_utils.get_latest_filename(lm_utils.get_results_filenames(files))
    table = lm_utils.make_table(json.loads(Path(latest).read_text(encoding="utf-8")))
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.strip().splitlines()[2:]]
    assert len(rows) == 8  # acc + acc_norm for 3 tasks, exact_match + f1 for jsquad
    assert all(r[3] and r[7] == "±" and r[8] for r in rows), table
    assert len(lm_utils.get_sample_results_filenames(files)) == 4


def test_table_of_three_real_runs_as_csv(runs: dict[str, Any]) -> None:
    proc = _cli("table", str(runs["a"]), str(runs["b"]), str(runs["c"]), "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.reader(io.StringIO(proc.stdout)))
    assert [r[0] for r in rows] == ["run", "tiny-a", "tiny-b", "tiny-c"]
    assert rows[0][1:] == ["jcommonsenseqa-1.1-0.2", "jcommonsenseqa-1.1-0.3", "jnli-1.1-0.3", "marc_ja-1.1-0.3",
                           "jsquad-1.1-0.3", "xwinograd_ja", "4-task average", "6-task average", "marks", "source"]
    assert rows[2][4:9] == ["", "", "", "", ""]  # tiny-b: no marc_ja / jsquad / xwinograd: no average
    assert rows[3][1] != "" and rows[3][2] == ""  # tiny-c's JCQA at prompt 0.2 is its own column
    assert float(rows[1][7]) > 0 and rows[1][8] == ""
    assert "†" in rows[1][9] and rows[1][10] == str(runs["a"])  # the bundled sample is made-up: marked apart


def test_missing_wandb_exits_2_before_the_model_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      jbench_main: Callable[..., int],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    code = jbench_main("eval", "--model", "tiny", "--tasks", "jnli", "--limit", "2", "--data-dir",
                       str(sample_data_dir()), "--output-dir", str(tmp_path), "--wandb-args", "project=x")
    err = capsys.readouterr().err
    assert code == 2 and "needs the wandb package" in err and "pip install 'jbench[wandb]'" in err
    assert "Traceback" not in err and not any(tmp_path.iterdir())


@pytest.mark.parametrize(("args", "message"), [
    ("project", "is not key=value"),
    ("project=x,colour=blue", "colour is not wandb.init argument"),
    ("project=jb,config=no-such-file.yaml", "config=no-such-file.yaml is neither a dict literal nor an existing"),
    ("project=jb,config={'a':1", "is not a valid dict literal"),
    ("project=jb,config=[1,2]", "is neither a dict literal"),
    ("project=jb,mode=onlin", "mode=onlin should be one of online, offline, disabled, shared"),
    ("project=jb,tags={'a':1}", "tags={'a':1} should be a list of strings"),
    ("project=jb,save_code=maybe", "save_code=maybe should be true or false")])
def test_bad_wandb_args_exit_2(args: str, message: str, tmp_path: Path, jbench_main: Callable[..., int],
                               capsys: pytest.CaptureFixture[str]) -> None:
    code = jbench_main("eval", "--model", "tiny", "--tasks", "jnli", "--limit", "2", "--data-dir",
                       str(sample_data_dir()), "--output-dir", str(tmp_path), "--wandb-args", args)
    assert code == 2 and message in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_online_without_an_api_key_fails_before_the_model_loads(tmp_path: Path) -> None:
    """No key (HOME without a netrc, WANDB_API_KEY empty) while online: exit 2 naming the key, before any model time
    and without network (a model path that does not exist shows the check runs first)."""
    env = {"WANDB_MODE": "online", "HOME": str(tmp_path), "WANDB_API_KEY": "", "WANDB_IDENTITY_TOKEN_FILE": "",
           "NETRC": str(tmp_path / "no-netrc")}
    for model in ("tiny", str(tmp_path / "no-such-model")):
        proc = _cli("eval", "--model", model, "--tasks", "jnli", "--limit", "2", "--data-dir", str(sample_data_dir()),
                    "--output-dir", str(tmp_path / "out"), "--no-progress", "--wandb-args",
                    "project=jb,config={'a':1}", env=env)
        assert proc.returncode == 2, proc.stderr
        assert "no API key is available" in proc.stderr and "where: WANDB_API_KEY" in proc.stderr
        assert "wandb login" in proc.stderr and "WANDB_MODE=offline" in proc.stderr
        assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()
