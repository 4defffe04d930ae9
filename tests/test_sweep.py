"""``jbench sweep`` (issue 15): a grid of models x variants x task sets on Ray.

The end-to-end test starts a real local Ray (2 CPUs, so 2 workers) through the real CLI in a subprocess, runs three
tiny-model runs, SIGKILLs the worker of one run mid-run (after it has committed answers to its request cache) and
checks that Ray's retry resumes it: the sweep completes with numbers identical to serial ``jbench.evaluate`` runs,
and a rerun skips everything. The bad-input tests start nothing: the whole file is validated before Ray starts."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest
import yaml

if os.environ.get("CI"):
    import ray  # noqa: F401 - in CI a missing Ray (the dev extra installs it) is a failure, never a skip
else:
    pytest.importorskip("ray", reason="jbench sweep needs the sweep extra (make install EXTRAS=...,sweep)")

CHUNK = "2"   # documents per cache commit: a long window to kill a run mid-way (serial runs use the same)
LIMIT = 12    # documents per task
KILLED_SET = {"tasks": ["jcommonsenseqa", "jnli", "marc_ja", "xwinograd_ja", "jsquad"], "num_fewshot": [1, 1, 1, 0, 1]}


def _write(path: Path, doc: object) -> Path:
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _base(tmp_path: Path, sample_dir: Path, **over: object) -> dict:
    doc = {"output_dir": str(tmp_path / "out"), "data_dir": str(sample_dir), "limit": 8, "variants": ["fp32"],
           "models": ["tiny"], "task_sets": {"core": {"tasks": ["jcommonsenseqa"], "num_fewshot": 1}}}
    doc.update(over)
    return doc


# --- bad input: one message (file, field, fix), exit 2, nothing started -------------------------------------------

def _bad(jbench_main: Callable[..., int], capsys: pytest.CaptureFixture[str], path: Path, *frags: str) -> str:
    code = jbench_main("sweep", str(path), "--num-cpus", "1")
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("error: ") == 1 and "Traceback" not in err, err
    assert "what to do: " in err and "where: " in err, err
    for frag in frags:
        assert frag in err, f"{frag!r} not in:\n{err}"
    assert "sweep: " not in err  # nothing was planned to run: Ray never started
    if "ray" in sys.modules:
        assert not sys.modules["ray"].is_initialized()
    return err


def test_sweep_bad_yaml_is_one_message_with_the_line(jbench_main: Callable[..., int], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path / "s.yaml", "models: [tiny\nvariants: fp32\n")
    _bad(jbench_main, capsys, path, "not valid YAML", f"{path}:")
    _bad(jbench_main, capsys, _write(tmp_path / "list.yaml", "- tiny\n"), "must be a YAML mapping")
    _bad(jbench_main, capsys, tmp_path / "missing.yaml", "the sweep file does not exist")
    import jbench
    from jbench.errors import JBenchError

    with pytest.raises(JBenchError, match="not valid YAML"):  # the Python API validates the same way
        jbench.run_sweep(path)


def test_sweep_unknown_model_variant_and_task_are_reported_together(
        jbench_main: Callable[..., int], tmp_path: Path, sample_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = _base(tmp_path, sample_dir, models=["tiny", "no-such-model-dir", {"model": "tiny-2", "variants": ["int3"]}],
                task_sets={"core": {"tasks": ["jcommonsenseqa", "jcommonsensqa"]}})
    err = _bad(jbench_main, capsys, _write(tmp_path / "s.yaml", doc),
               "problems found", "model path does not exist: no-such-model-dir", "models[1] (no-such-model-dir)",
               "unknown variant 'int3'", "models[2] (tiny-2) variant int3", "task_sets.core", "jcommonsensqa")
    assert err.count("jcommonsensqa") >= 1 and err.count("unknown variant") == 1  # one line per problem, not per run
    assert not (tmp_path / "out").exists()


def test_sweep_schema_errors_name_the_field(jbench_main: Callable[..., int], tmp_path: Path, sample_dir: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    doc = _base(tmp_path, sample_dir, modles=["x"], retries=-1, device="tpu",
                resources={"num_gpus": -1, "memory": "lots", "gpus": 1})
    _bad(jbench_main, capsys, _write(tmp_path / "s.yaml", doc), "unknown key 'modles'", "retries must be",
         "resources.num_gpus", "resources.memory is not a size: 'lots'", "unknown key 'gpus'", "unknown device 'tpu'")
    doc = _base(tmp_path, sample_dir)
    del doc["variants"]
    _bad(jbench_main, capsys, _write(tmp_path / "s2.yaml", doc), "no variants for tiny", "variants: [auto]")
    doc = _base(tmp_path, sample_dir, models=[{"model": "tiny", "variants": ["gptq"]}])
    _bad(jbench_main, capsys, _write(tmp_path / "s3.yaml", doc), "needs its quantized checkpoint", "quantized")
    doc = _base(tmp_path, sample_dir, task_sets={"core": {"tasks": ["jnli"], "num_fewshot": 999}})
    _bad(jbench_main, capsys, _write(tmp_path / "s4.yaml", doc), "999 shots", "task_sets.core")


def test_sweep_num_cpus_cannot_go_with_an_address(jbench_main: Callable[..., int], tmp_path: Path,
                                                  sample_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path / "s.yaml", _base(tmp_path, sample_dir))
    code = jbench_main("sweep", str(path), "--address", "10.0.0.1:6379", "--num-cpus", "2")
    err = capsys.readouterr().err
    assert code == 2 and "cannot go with --address" in err, err


def test_sweep_unreachable_address_is_one_message(jbench_main: Callable[..., int], tmp_path: Path,
                                                  sample_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = _write(tmp_path / "s.yaml", _base(tmp_path, sample_dir))
    t0 = time.monotonic()
    code = jbench_main("sweep", str(path), "--address", f"127.0.0.1:{port}")
    err = capsys.readouterr().err
    assert code == 2 and f"no Ray cluster answers at 127.0.0.1:{port}" in err and "ray start --head" in err, err
    assert time.monotonic() - t0 < 30 and "Traceback" not in err  # Ray alone would retry for minutes


def test_sweep_dry_run_lists_runs_and_resources(jbench_main: Callable[..., int], tmp_path: Path, sample_dir: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    doc = _base(tmp_path, sample_dir, variants=["fp32", "bf16"], resources={"num_gpus": 0.5, "num_cpus": 2, "memory": "3GiB"},
                task_sets={"a": ["jcommonsenseqa"], "b": {"tasks": "jnli,xwinograd_ja", "num_fewshot": [1, 0]}})
    code = jbench_main("sweep", str(_write(tmp_path / "s.yaml", doc)), "--dry-run")
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = [ln for ln in out.splitlines() if ln.startswith("| tiny-")]
    assert [ln.split("|")[1].strip() for ln in lines] == ["tiny-fp32-a", "tiny-fp32-b", "tiny-bf16-a", "tiny-bf16-b"]
    assert "| 0.5 | 2 | 3.0 GiB |" in lines[0] and "| jnli" in lines[1] and ",xwinograd_ja |" in lines[1]
    assert "4 runs as 2 Ray tasks" in err and not (tmp_path / "out").exists()


def test_sizes_parse() -> None:
    from jbench.sweep import parse_size

    assert parse_size("32GiB") == 32 << 30 and parse_size("512 MiB") == 512 << 20 and parse_size("40GB") == 40 * 10**9
    assert parse_size(1024) == 1024 and parse_size("lots") is None and parse_size(0) is None and parse_size(True) is None


def _tiny_copy(dest: Path) -> Path:
    """A local checkpoint folder: a copy of the embedded tiny model (its weights can then be changed in place)."""
    import shutil

    from jbench.models.load import ModelSpec, resolve_model_path

    return Path(shutil.copytree(resolve_model_path(ModelSpec(model="tiny")), dest))


def test_readme_sweep_example_validates(jbench_main: Callable[..., int], tmp_path: Path, sample_dir: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The README's example, as written (only its paths pointed at local copies), passes the file check: docs that
    fail validation cannot drift in. Its bf16+int8 model with ``device_map=auto`` keeps the device_map for bf16 and
    drops it for int8, as ``jbench compare`` does."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Sweeps on Ray"):]
    example = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert example is not None, "no ```yaml block under 'Sweeps on Ray' in README.md"
    text = example.group(1)
    doc = yaml.safe_load(text)
    local = [e["model"] for e in doc["models"] if isinstance(e, dict) and e["model"].startswith("/")]
    local += [p for e in doc["models"] if isinstance(e, dict) for p in (e.get("quantized") or {}).values()]
    assert local and any("int8" in e.get("variants", []) and "device_map" in str(e.get("model_args"))
                         for e in doc["models"] if isinstance(e, dict))
    folders = {}
    for path in local:  # each /models/... checkpoint of the example, as a real folder
        folders[path] = folder = _tiny_copy(tmp_path / "models" / Path(path).name)
        if path in {p for e in doc["models"] if isinstance(e, dict) for p in (e.get("quantized") or {}).values()}:
            cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            cfg["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 32}
            (folder / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    pattern = "|".join(re.escape(p) for p in sorted(folders, key=len, reverse=True))
    text = re.sub(f"({pattern})(?![\\w.-])", lambda m: str(folders[m.group(1)]), text)
    text = text.replace(str(doc["output_dir"]), str(tmp_path / "out")).replace(str(doc["data_dir"]), str(sample_dir))
    path = _write(tmp_path / "sweep.yaml", text)

    from jbench.sweep import load_sweep
    from jbench.validate import check_variant

    if check_variant("gptq"):  # the gptq backend is not installed here: only that entry may be refused
        code = jbench_main("sweep", str(path), "--dry-run")
        err = capsys.readouterr().err
        assert code == 2 and "device_map" not in err and "gptq" in err, err
        return
    code = jbench_main("sweep", str(path), "--dry-run")
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "int8-bf16-core" in out and "gptq-auto-qa" in out and not (tmp_path / "out").exists()
    runs = {(r.model.rsplit("/", 1)[-1], r.variant, r.task_set): r for r in load_sweep(path).runs}
    bf16, int8 = runs[("llm-jp-3-13b", "bf16", "core")], runs[("llm-jp-3-13b", "int8", "core")]
    assert bf16.plan["model"]["model_args"] == {"device_map": "auto"} and int8.plan["model"]["model_args"] == {}
    # as `jbench compare --original bf16`: int8 computes in the original's dtype, and its run folder says so
    assert int8.plan["model"]["extra"]["dtype"] == "bfloat16" and int8.name.endswith("-int8-bf16-core")
    gptq = runs[("x", "gptq", "qa")]
    assert gptq.plan["model"]["extra"]["dtype"] == "auto" and gptq.name.endswith("-gptq-auto-qa")


def test_a_finished_run_is_rerun_after_its_weights_change(tmp_path: Path, sample_dir: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Ray-free: the planner's finished-check and the worker's (``run_job``) both ask whether the weights the run
    recorded are still the model's; a checkpoint overwritten in place is rerun, saying why."""
    from safetensors.torch import load_file, save_file

    from jbench.sweep import load_sweep
    from jbench.sweep_ray import is_finished, run_job

    model = _tiny_copy(tmp_path / "m")
    path = _write(tmp_path / "s.yaml", _base(tmp_path, sample_dir, limit=2, models=[str(model)], device="cpu"))
    sweep = load_sweep(path)
    (run,) = sweep.runs
    run_dir = sweep.output_dir / run.name
    assert not is_finished(run, run_dir, "cpu")
    assert [o["status"] for o in run_job([dataclasses.asdict(run)], "cpu", str(sweep.output_dir))] == ["done"]
    assert is_finished(run, run_dir, "cpu") and is_finished(run, run_dir, "auto")
    assert [o["status"] for o in run_job([dataclasses.asdict(run)], "cpu", str(sweep.output_dir))] == ["skipped"]
    capsys.readouterr()

    weights = load_file(str(model / "model.safetensors"))
    name = sorted(weights)[0]
    weights[name] = weights[name] + 0.5  # same plan, same path, other weights
    save_file(weights, str(model / "model.safetensors"), metadata={"format": "pt"})
    assert not is_finished(run, run_dir, "cpu")
    assert f"sweep: rerunning {run.name}: the model's weight files changed" in capsys.readouterr().err
    assert [o["status"] for o in run_job([dataclasses.asdict(run)], "cpu", str(sweep.output_dir))] == ["done"]
    assert is_finished(run, run_dir, "cpu")  # the rerun recorded the new weights


# --- end to end on a local Ray -----------------------------------------------------------------------------------

def _answers(cache: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{cache}?mode=ro", uri=True, timeout=0.05)
        try:
            return int(conn.execute("SELECT count(*) FROM answers").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def _kill_mid_run(run_dir: Path, done: threading.Event, killed: list[int]) -> None:
    """SIGKILL the process holding ``run_dir`` once it has committed answers and before it has finished."""
    while not done.is_set():
        lock = run_dir / ".lock"
        if lock.is_file() and not (run_dir / "results.json").exists() and _answers(run_dir / "cache.sqlite") >= 1:
            text = lock.read_text(encoding="utf-8", errors="replace")
            if text.startswith("pid "):
                pid = int(text.split()[1].rstrip(":"))
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
        time.sleep(0.01)


def _sweep(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JBENCH_CHUNK_DOCS": CHUNK, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "jbench.cli", "sweep", str(path), *extra], capture_output=True,
                          text=True, env=env, timeout=900)


@pytest.mark.slow
def test_sweep_on_local_ray_survives_a_killed_worker_and_reruns_nothing(
        tmp_path: Path, sample_dir: Path, tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import jbench

    llama = str(tiny_models["llama"])
    doc = _base(tmp_path, sample_dir, limit=LIMIT, retries=2, resources={"num_cpus": 1, "memory": "1GiB"},
                models=[{"model": "tiny", "variants": ["fp32", "bf16"]}, llama],
                task_sets={"core": KILLED_SET})
    path = _write(tmp_path / "sweep.yaml", doc)
    out = tmp_path / "out"
    names = ["tiny-fp32-core", "tiny-bf16-core"]
    done, killed = threading.Event(), []
    watcher = threading.Thread(target=_kill_mid_run, args=(out / "tiny-fp32-core", done, killed), daemon=True)
    watcher.start()
    try:
        proc = _sweep(path, "--num-cpus", "2")
    finally:
        done.set()
        watcher.join()
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert killed, "the run finished before the worker could be killed"
    runs = sorted(p.name for p in out.iterdir() if (p / "results.json").is_file())
    assert len(runs) == 3 and set(names) <= set(runs), runs
    assert "sweep: runs done 3/3" in proc.stderr and "ETA" in proc.stderr
    table = proc.stdout
    assert all(n in table for n in runs) and "jcommonsenseqa" in table and "6-task average" in table
    resumed = json.loads((out / "tiny-fp32-core" / "results.json").read_text())
    assert resumed["config"]["resources"]["cache_hits"] > 0  # the retry resumed from the killed run's cache
    assert (out / "compare" / "tiny-fp32-core" / "compare.md").is_file()  # bf16 vs fp32 of the same model

    # serial runs of the same plans, in this process: identical numbers
    monkeypatch.setenv("JBENCH_CHUNK_DOCS", CHUNK)
    for name in runs:
        stored = json.loads((out / name / "results.json").read_text())
        model = None if name.startswith("tiny-") else llama
        serial = jbench.evaluate(model, tasks=KILLED_SET["tasks"], num_fewshot=KILLED_SET["num_fewshot"],
                                 limit=LIMIT, variant=stored["config"]["variant"], device="cpu",
                                 data_dir=sample_dir)
        assert serial.results == stored["results"], name
        assert serial.to_json()["results"] == stored["results"]

    before = {n: (out / n / "results.json").stat().st_mtime_ns for n in runs}
    again = _sweep(path, "--num-cpus", "2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "3 already finished (skipped), 0 to run" in again.stderr
    assert again.stdout == table
    assert before == {n: (out / n / "results.json").stat().st_mtime_ns for n in runs}


@pytest.mark.slow
def test_a_run_that_fails_on_its_node_is_reported_with_exit_2(tmp_path: Path, sample_dir: Path) -> None:
    """``device: cuda`` passes the file check (devices are checked where each model runs) and fails on this CPU-only
    node: a user's error, reported by run name and not retried; nothing else is hidden either."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    path = _write(tmp_path / "s.yaml", _base(tmp_path, sample_dir, device="cuda", retries=1))
    proc = _sweep(path, "--num-cpus", "1")
    assert proc.returncode == 2, proc.stderr[-3000:]
    err = proc.stderr
    assert "sweep: runs done 1/1: tiny-fp32-core FAILED" in err
    assert "1 of 1 runs failed" in err and "tiny-fp32-core: --device cuda" in err
    assert "Traceback" not in err and err.count("error: ") == 1
    assert not (tmp_path / "out" / "tiny-fp32-core" / "results.json").exists()


@pytest.mark.slow
def test_sweep_runs_on_an_existing_cluster_through_address(tmp_path: Path, sample_dir: Path) -> None:
    """``ray start --head`` (its own process group, ended by this test alone), then ``--address HOST:PORT``."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ray_bin = Path(sys.executable).with_name("ray")
    head = subprocess.Popen([str(ray_bin), "start", "--head", f"--port={port}", "--num-cpus=1",
                             "--include-dashboard=false", "--block", "--disable-usage-stats"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert head.poll() is None and time.monotonic() < deadline, "ray start --head did not come up"
                time.sleep(1)
        path = _write(tmp_path / "s.yaml", _base(tmp_path, sample_dir, limit=4))
        proc = _sweep(path, "--address", f"127.0.0.1:{port}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "sweep: runs done 1/1: tiny-fp32-core done" in proc.stderr
        assert "| tiny-fp32-core |" in proc.stdout
        assert (tmp_path / "out" / "tiny-fp32-core" / "results.json").is_file()
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):  # its gcs/raylet children share the group
            os.killpg(head.pid, signal.SIGKILL)
        head.wait()
