"""Every task name that `jbench tasks` lists runs end to end through the CLI, as a user would run it.

Why: unit tests of the pieces once missed that all six `jnli-1.3-*` tasks crashed after scoring (the runner wrote
`prediction`, the mcc aggregator read `pred`). The task list is read from the CLI's own output at collection
time, so a task added to `tasks/*.yaml` that cannot run fails here without anyone editing this file.

One `jbench eval` over all names (embedded tiny model, bundled sample, each task's default shots, --limit 3) is
shared by the per-task checks; a subset also runs on each family stand-in (NeoX, Llama, Qwen2 architectures).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from jbench.cli import app


def listed_tasks() -> list[str]:
    """The names in the first column of `jbench tasks` (its markdown table)."""
    out = CliRunner().invoke(app, ["tasks"])
    assert out.exit_code == 0, out.output
    names = []
    for line in out.stdout.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0]:
            names.append(cells[0])
    return names


def test_jbench_additions_are_marked() -> None:
    out = CliRunner().invoke(app, ["tasks"]).stdout
    origin = {c[0]: c[-1] for c in ([x.strip() for x in line.strip("|").split("|")]
                                    for line in out.splitlines()[2:] if line.startswith("|"))}
    assert origin["jsquad-1.2-0.1"] == origin["jaqket_v2-0.1-0.6"] == "jbench addition"
    assert origin["jnli-1.3-youri-chat"] == "jbench addition"
    assert origin["jnli-1.3-0.4"] == origin["jcommonsenseqa-1.1-0.3"] == "reference"


TASKS = listed_tasks()


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "JBENCH_DATA_DIR"}  # the bundled sample
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def _eval(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jbench.cli", "eval", *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def all_tasks_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("every-task")
    proc = _eval(["--tasks", ",".join(TASKS), "--limit", "3", "--output-dir", str(work / "out"), "--run-name",
                  "all", "--no-progress"], work)
    return {"proc": proc, "dir": work / "out" / "all"}


def test_the_list_is_not_empty() -> None:
    assert len(TASKS) >= 50 and len(set(TASKS)) == len(TASKS)


@pytest.mark.slow
def test_eval_of_every_listed_task_exits_0(all_tasks_run: dict[str, Any]) -> None:
    proc = all_tasks_run["proc"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    results = json.loads((all_tasks_run["dir"] / "results.json").read_text(encoding="utf-8"))
    assert sorted(results["results"]) == sorted(TASKS)


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_task_has_finite_metrics_and_samples(all_tasks_run: dict[str, Any], task: str) -> None:
    run_dir: Path = all_tasks_run["dir"]
    assert all_tasks_run["proc"].returncode == 0, all_tasks_run["proc"].stderr[-2000:]
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    metrics = results["results"][task]
    values = {k: v for k, v in metrics.items() if not k.endswith("_stderr")}
    assert values, f"{task} has no metric"
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in values.values()), metrics
    rows = [json.loads(line) for line in (run_dir / f"samples_{task}.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == results["n_samples"][task] == 3
    assert all("prediction" in r for r in rows)
    # the bundled sample has made-up rows for some tasks: the card marks them, never silently
    marked = any(f.get("madeup") for f in results["config"]["data"][task])
    table = all_tasks_run["proc"].stdout
    assert (f"{task} †" in table) == marked


# --- family stand-ins: a subset of task versions on each architecture --------------------------------------------

FAMILY_SUBSET = ["jnli-1.3-0.4", "jcommonsenseqa-1.1-0.6", "jsquad-1.1-0.3", "xwinograd_ja", "marc_ja-1.1-0.2",
                 "jaqket_v2-0.2-0.3"]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["gpt_neox", "llama", "qwen2"])
def test_task_subset_runs_on_each_family(arch: str, tiny_models: dict[str, Path], sample_dir: Path,
                                        tmp_path: Path) -> None:
    subset = [t for t in FAMILY_SUBSET if t in TASKS]
    assert len(subset) == len(FAMILY_SUBSET), sorted(set(FAMILY_SUBSET) - set(TASKS))
    model = tmp_path / arch
    shutil.copytree(tiny_models[arch], model)
    proc = _eval(["--model", str(model), "--tasks", ",".join(subset), "--limit", "2", "--data-dir", str(sample_dir),
                  "--output-dir",
                  str(tmp_path / "out"), "--run-name", arch, "--no-progress"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    results = json.loads((tmp_path / "out" / arch / "results.json").read_text(encoding="utf-8"))
    assert sorted(results["results"]) == sorted(subset)
    assert isinstance(results["config"]["tokenizer"], dict) and results["config"]["tokenizer"]["vocab_sha256"]
