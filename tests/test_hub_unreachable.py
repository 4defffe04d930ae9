"""An unreachable Hub (closed port, unknown host name) through real ``jbench`` processes: one message, exit 2, in a
few seconds -- not huggingface_hub's ``Retrying in 8s [Retry 5/5]`` lines for half a minute -- and a model that is
in the HF cache still loads, from the cache only. Never the internet."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

MODEL = "rinna/japanese-gpt-neox-3.6b"  # a Hub id that is not in the test's empty HF cache


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more: connection refused


@pytest.fixture(params=["closed-port", "unknown-host"])
def unreachable(request: pytest.FixtureRequest) -> str:
    return closed_port_url() if request.param == "closed-port" else "http://nonexistent.invalid"


def run_jbench(tmp_path: Path, endpoint: str, *args: str, cache: Path | None = None) -> tuple[int, str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "JBENCH_VERBOSE"))}
    env.update(HF_HUB_OFFLINE="0", HF_ENDPOINT=endpoint, HF_HUB_CACHE=str(cache or tmp_path / "hf-cache"),
               HF_TOKEN_PATH=str(tmp_path / "no-token"), HF_DATASETS_CACHE=str(tmp_path / "ds-cache"))
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "jbench", *args], env=env, capture_output=True, text=True,
                          timeout=300)
    return proc.returncode, proc.stderr + proc.stdout, time.monotonic() - start


def assert_one_fast_error(rc: int, out: str, elapsed: float, message: str) -> None:
    assert rc == 2, out
    assert out.count("error:") == 1 and message in out, out
    assert "Retrying" not in out and "thrown while requesting" not in out and "Traceback" not in out, out
    assert elapsed < 15, f"{elapsed:.1f} s"  # was ~27 s of back-off (1+2+4+8+8 s) before failing


def test_eval_of_an_uncached_hub_model_fails_at_once(unreachable: str, real_data_dir: Path, tmp_path: Path) -> None:
    rc, out, elapsed = run_jbench(tmp_path, unreachable, "eval", "--model", MODEL, "--tasks", "jcommonsenseqa",
                                  "--limit", "2", "--data-dir", str(real_data_dir), "--output-dir",
                                  str(tmp_path / "runs"))
    assert_one_fast_error(rc, out, elapsed, f"cannot reach the Hub at {unreachable}")
    assert f"{MODEL}@main is not in the local Hugging Face cache" in out and "hf download" in out
    assert "warning: cannot resolve" not in out  # no second message before the error
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("results.json"))


def test_hub_data_downloads_and_sources_fail_at_once(unreachable: str, tmp_path: Path) -> None:
    rc, out, elapsed = run_jbench(tmp_path, unreachable, "data", "--download", "jaqket_v2", "--data-dir",
                                  str(tmp_path / "data"), "--no-progress")
    assert_one_fast_error(rc, out, elapsed, f"cannot reach the Hub at {unreachable}")
    rc, out, elapsed = run_jbench(tmp_path, unreachable, "data", "--source", "jnli=hub:me/jnli-mirror@main",
                                  "--data-dir", str(tmp_path / "data"))
    assert_one_fast_error(rc, out, elapsed, "cannot get dataset repo me/jnli-mirror: cannot reach the Hub")
    assert not (tmp_path / "data" / "jbench-sources.json").exists()


def test_a_cached_hub_model_loads_from_the_cache_without_retries(real_data_dir: Path, tmp_path: Path) -> None:
    """The Hub is down but the model is in the HF cache (refs/main -> snapshots/<commit>): the run works, records
    that commit, and huggingface_hub never retries a file it does not have (the tiny model has no tokenizer.json)."""
    from jbench.tiny import tiny_default_model

    commit = "c0ffee" + "0" * 34
    cache = tmp_path / "hf-cache"
    snapshot = cache / "models--me--tiny" / "snapshots" / commit
    shutil.copytree(tiny_default_model(), snapshot)
    (cache / "models--me--tiny" / "refs").mkdir()
    (cache / "models--me--tiny" / "refs" / "main").write_text(commit)
    rc, out, _ = run_jbench(tmp_path, closed_port_url(), "eval", "--model", "me/tiny", "--tasks", "jcommonsenseqa",
                            "--num-fewshot", "0", "--limit", "2", "--data-dir", str(real_data_dir), "--output-dir",
                            str(tmp_path / "runs"), "--run-name", "r", "--no-progress", cache=cache)
    assert rc == 0, out
    assert "Retrying" not in out and "thrown while requesting" not in out and "error:" not in out, out
    model = json.loads((tmp_path / "runs" / "r" / "results.json").read_text(encoding="utf-8"))["config"]
    assert model["revision_commit"] == commit
    log = (tmp_path / "runs" / "r" / "log.txt").read_text(encoding="utf-8")
    assert "Retrying" not in log and "loads from the local cache" in log


@pytest.mark.parametrize("verbose", [False, True])
def test_huggingface_hub_lines_reach_stderr_only_with_verbose(verbose: bool) -> None:
    """huggingface_hub adds its own stderr handler when its (lazy) logging module is imported; jbench removes it, so
    its retry lines go to log.txt, and to stderr once (through jbench) with --verbose."""
    code = ("import jbench.logs as L; L.setup(False)\n"
            "from huggingface_hub import hf_hub_download  # imports huggingface_hub.utils.logging\n"
            "import logging; logging.getLogger('huggingface_hub.utils._http').warning('Retrying in 8s [Retry 5/5].')")
    env = {**os.environ, "JBENCH_VERBOSE": "1" if verbose else "0"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("Retrying in 8s") == (1 if verbose else 0), proc.stderr
