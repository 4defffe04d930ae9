"""Runs kept apart (issue 13): one process per run directory, results replaced only when complete, default run
names that cannot collide between models, and result files readable by teammates (umask, not 0600)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jbench.errors import StoreError
from jbench.models.load import ModelSpec
from jbench.results import RunLock, StagedRun, check_plain_name, write_json


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "JBENCH_DATA_DIR"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def _eval(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jbench.cli", "eval", "--no-progress", *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("name", ["../x", "/tmp/x", "a/b", "..", ".", "", ".hidden", "a\\b"])
def test_run_names_are_names(name: str) -> None:
    with pytest.raises(StoreError, match="invalid run name"):
        check_plain_name(name, "run name", "--run-name")
    check_plain_name("tiny-fp32_v2.1", "run name", "--run-name")


def _hold(run_dir: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process that holds ``run_dir``'s lock for ``seconds`` (returned once it holds it)."""
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from jbench.results import RunLock\n"
                               "with RunLock(Path(sys.argv[1])):\n print('held', flush=True); "
                               "time.sleep(float(sys.argv[2]))", str(run_dir), str(seconds)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_a_held_run_directory_is_refused_with_the_holder_named(tmp_path: Path) -> None:
    holder = _hold(tmp_path / "run", 30)
    try:
        with pytest.raises(StoreError, match="in use by another jbench process") as err:
            with RunLock(tmp_path / "run"):
                pass
        assert f"pid {holder.pid}" in str(err.value) and "--wait" in str(err.value)
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path / "run"):  # the kernel released the dead holder's lock
        pass


def test_wait_waits_for_the_holder(tmp_path: Path) -> None:
    holder = _hold(tmp_path / "run", 1.5)
    try:
        t0 = time.monotonic()
        with RunLock(tmp_path / "run", wait=True):
            assert time.monotonic() - t0 > 0.5
    finally:
        holder.wait()


@pytest.mark.slow
def test_two_runs_on_one_run_name_cannot_interleave(tmp_path: Path, sample_dir: Path) -> None:
    """Two different `jbench eval` started together on the same run name: one runs, the other exits 2 naming the
    holder; run.json and results.json then describe the same run."""
    common = ["--data-dir", str(sample_dir), "--output-dir", str(tmp_path / "out"), "--run-name", "same"]
    env = _env()
    a = subprocess.Popen([sys.executable, "-m", "jbench.cli", "eval", "--no-progress", "--tasks", "jcommonsenseqa",
                          "--limit", "20", *common], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "out" / "same" / ".lock"
    deadline = time.monotonic() + 120
    while not (lock.exists() and lock.read_text()) and time.monotonic() < deadline and a.poll() is None:
        time.sleep(0.05)
    b = _eval("--tasks", "xwinograd_ja", "--limit", "5", *common, cwd=tmp_path)
    out_a, err_a = a.communicate(timeout=600)
    assert a.returncode == 0, err_a
    if b.returncode == 0:
        pytest.skip("the first run finished before the second started (machine too fast to overlap them)")
    assert b.returncode == 2 and "in use by another jbench process" in b.stderr and "Traceback" not in b.stderr
    run = tmp_path / "out" / "same"
    plan = json.loads((run / "run.json").read_text(encoding="utf-8"))
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    assert plan["tasks"] == results["plan"]["tasks"] == ["jcommonsenseqa-1.1-0.3"]


@pytest.mark.slow
def test_a_failed_rerun_leaves_the_previous_results_intact(tmp_path: Path, sample_dir: Path) -> None:
    common = ["--data-dir", str(sample_dir), "--output-dir", str(tmp_path / "out"), "--run-name", "r"]
    assert _eval("--tasks", "jcommonsenseqa,xwinograd_ja", "--limit", "3", *common, cwd=tmp_path).returncode == 0
    run = tmp_path / "out" / "r"
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.name.startswith(("results", "samples_"))}
    assert "results.json" in before and len(before) == 3
    # the rerun dies in the middle of scoring (after its first task): nothing it made replaces the old files
    env = _env()
    code = ("import os, sys\nimport jbench.runner as r\nreal = r.score_task\nn = [0]\n"
            "def fail(*a, **k):\n    n[0] += 1\n    if n[0] > 1: raise RuntimeError('killed mid-run')\n"
            "    return real(*a, **k)\nr.score_task = fail\nfrom jbench.cli import main\nsys.argv = sys.argv[1:]\nmain()")
    proc = subprocess.run([sys.executable, "-c", code, "jbench", "eval", "--no-progress", "--tasks",
                           "jnli,xwinograd_ja", "--limit", "3", *common], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode != 0 and "killed mid-run" in proc.stderr
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.name.startswith(("results", "samples_"))}
    assert after == before
    assert not (run / ".staging").exists()


def test_staged_run_replaces_only_on_publish(tmp_path: Path) -> None:
    run = tmp_path / "r"
    run.mkdir()
    write_json(run / "results.json", {"old": True})
    (run / "samples_a.jsonl").write_text("old\n")
    (run / "samples_gone.jsonl").write_text("old\n")
    staged = StagedRun(run)
    staged.write_samples("a", [{"new": 1}])
    assert json.loads((run / "results.json").read_text()) == {"old": True}
    assert (run / "samples_a.jsonl").read_text() == "old\n"
    staged.publish({"new": True})
    assert json.loads((run / "results.json").read_text()) == {"new": True}
    assert json.loads((run / "samples_a.jsonl").read_text()) == {"new": 1}
    assert not (run / "samples_gone.jsonl").exists() and not (run / ".staging").exists()


def test_result_files_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "results.json", {})
        assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        write_json(tmp_path / "private.json", {})
        assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_default_run_names_differ_for_same_named_folders(tmp_path: Path) -> None:
    for d in ("a/model", "b/model"):
        (tmp_path / d).mkdir(parents=True)
    one = ModelSpec(model=str(tmp_path / "a" / "model")).slug()
    two = ModelSpec(model=str(tmp_path / "b" / "model")).slug()
    assert one != two and one.startswith("model-") and one.endswith("-fp32")
    assert ModelSpec(model=str(tmp_path / "a" / "model") + "/").slug() == one  # same folder, same name
    assert ModelSpec().slug() == "tiny-fp32"
    assert ModelSpec(model="rinna/japanese-gpt-neox-3.6b", variant="bnb4").slug() == \
        "rinna_japanese-gpt-neox-3.6b-bnb4"
