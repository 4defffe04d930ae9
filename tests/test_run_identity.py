"""What keeps runs apart and what lets one be reused (jbench.run_identity), through the CLI as a user runs it:

* default run names carry every setting that changes the numbers (``-rev-``, ``-ma<hash>``, ``-chat-<hash>``) and
  the compare report folder the original's dtype, so runs with other settings never replace each other -- while
  runs without these options keep the names (and caches) they always had;
* ``jbench compare`` reruns a finished run when the weights behind the same model name changed (a Hub ref moved,
  a local checkpoint overwritten in place), saying why;
* a rerun in a run directory says truthfully what its request cache gives it;
* conflicting flags are refused, never resolved silently.

The name tests stop at ``--dry-run``; the reuse tests run the embedded tiny model (marked slow).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

COMMIT_A, COMMIT_B = "a" * 40, "b" * 40
QUICK = ("--tasks", "jcommonsenseqa", "--limit", "4", "--no-progress")


def _results(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "results.json").read_text(encoding="utf-8"))


def _hub(root: Path, refs: dict[str, str]) -> Path:
    """HF_HOME with huggingface_hub's cache layout for ``hostile/tiny``: refs/<ref> -> snapshots/<commit>/ (the same
    files under every commit: only the commit tells them apart)."""
    from jbench.tiny import tiny_default_model

    repo = root / "hub" / "models--hostile--tiny"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    for ref, commit in refs.items():
        if not (repo / "snapshots" / commit).is_dir():
            shutil.copytree(tiny_default_model(), repo / "snapshots" / commit)
        (repo / "refs" / ref).write_text(commit, encoding="utf-8")
    return root


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = _hub(tmp_path / "hf", {"main": COMMIT_A, "v2": COMMIT_B})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    return home


def _dry_run_dir(jbench_main: Any, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = jbench_main("eval", *args, "--dry-run", *QUICK)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return Path(json.loads(captured.out)["run_dir"]).name


# ---------------------------------------------------------------------------------------------------------------
# default run names (no model loads)
# ---------------------------------------------------------------------------------------------------------------


def test_revision_gets_its_own_default_run_name(jbench_main, capsys, offline_hub, sample_dir) -> None:  # type: ignore[no-untyped-def]
    names = [_dry_run_dir(jbench_main, capsys, "-m", "hostile/tiny", *rev, "--data-dir", str(sample_dir))
             for rev in ((), ("--revision", "main"), ("--revision", "v2"), ("--revision", COMMIT_B))]
    assert names == ["hostile_tiny-fp32", "hostile_tiny-fp32-rev-main", "hostile_tiny-fp32-rev-v2",
                     "hostile_tiny-fp32-rev-bbbbbbbb"]


def test_model_args_that_change_numbers_get_their_own_default_run_name(jbench_main, capsys, sample_dir) -> None:  # type: ignore[no-untyped-def]
    def name(*args: str) -> str:
        return _dry_run_dir(jbench_main, capsys, *args, "--data-dir", str(sample_dir))

    assert name() == "tiny-fp32"  # no options: the name (and so the cache) of before
    eager, sdpa = name("--model-args", "attn_implementation=eager"), name("--model-args", "attn_implementation=sdpa")
    assert re.fullmatch(r"tiny-fp32-ma[0-9a-f]{6}", eager) and re.fullmatch(r"tiny-fp32-ma[0-9a-f]{6}", sdpa)
    assert eager != sdpa
    assert name("--model-args", "max_length=64") not in ("tiny-fp32", eager)  # folded, but changes the numbers
    # arguments that only place files or memory leave the name alone; repeated flags merge into one setting
    assert name("--model-args", "low_cpu_mem_usage=true") == "tiny-fp32"
    assert name("--model-args", "attn_implementation=eager", "--model_args", "low_cpu_mem_usage=true") == eager


@pytest.fixture
def chat_folder(tmp_path: Path) -> Path:
    """The tiny model's files with a chat template in tokenizer_config.json (enough for a dry run)."""
    from jbench.tiny import tiny_default_model

    folder = tmp_path / "chatm"
    shutil.copytree(tiny_default_model(), folder)
    cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    cfg["chat_template"] = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    return folder


def test_chat_settings_get_their_own_default_run_name(jbench_main, capsys, chat_folder, sample_dir) -> None:  # type: ignore[no-untyped-def]
    def name(*args: str) -> str:
        return _dry_run_dir(jbench_main, capsys, "-m", str(chat_folder), "--apply-chat-template", *args,
                            "--data-dir", str(sample_dir))

    default = name()
    assert default.endswith("-fp32-chat")  # lm-eval's default chat settings: the name of before
    assert name("--fewshot-as-multiturn") == default
    system, single = name("--system-instruction", "簡潔に"), name("--no-fewshot-as-multiturn")
    assert re.fullmatch(re.escape(default) + r"-[0-9a-f]{6}", system)
    assert re.fullmatch(re.escape(default) + r"-[0-9a-f]{6}", single)
    assert len({default, system, single, name("--system-instruction", "別の指示")}) == 4


# ---------------------------------------------------------------------------------------------------------------
# conflicting flags
# ---------------------------------------------------------------------------------------------------------------


def test_a_model_argument_given_twice_with_different_values_is_refused(jbench_main, capsys, tmp_path,  # type: ignore[no-untyped-def]
                                                                       sample_dir) -> None:
    code = jbench_main("eval", "--model_args", "attn_implementation=eager", "--model-args",
                       "attn_implementation=sdpa", "--output-dir", str(tmp_path), "--data-dir", str(sample_dir), *QUICK)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert ("--model-args is given twice with different values for attn_implementation: "
            "attn_implementation=eager and attn_implementation=sdpa") in err
    assert not list(tmp_path.iterdir())  # refused before anything ran
    # the same value twice is one setting, not a conflict
    code = jbench_main("eval", "--model-args", "attn_implementation=eager", "--model-args",
                       "attn_implementation=eager", "--dry-run", "--data-dir", str(sample_dir), *QUICK)
    out = capsys.readouterr().out
    assert code == 0 and json.loads(out)["model"]["model_args"] == {"attn_implementation": "eager"}


def test_no_fewshot_as_multiturn_without_a_chat_template_is_refused(jbench_main, capsys, tmp_path,  # type: ignore[no-untyped-def]
                                                                     sample_dir) -> None:
    code = jbench_main("eval", "--no-fewshot-as-multiturn", "--output-dir", str(tmp_path), "--data-dir",
                       str(sample_dir), *QUICK)
    err = capsys.readouterr().err
    assert code == 2 and "--no-fewshot-as-multiturn needs --apply-chat-template" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())
    assert jbench_main("eval", "--no-fewshot-as-multiturn", "--dry-run", "--data-dir", str(sample_dir), *QUICK) == 2


# ---------------------------------------------------------------------------------------------------------------
# reuse follows the weights, not the name (the tiny model runs, in child processes)
# ---------------------------------------------------------------------------------------------------------------


def _jbench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jbench.cli", *args], env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow  # runs compare (original + int8) three times
def test_compare_reruns_when_the_hub_ref_moves(tmp_path: Path, sample_dir: Path) -> None:
    home = _hub(tmp_path / "hf", {"main": COMMIT_A})
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub")}
    args = ("compare", "-m", "hostile/tiny", "--variants", "int8", "--data-dir", str(sample_dir),
            "--output-dir", str(tmp_path / "out"), *QUICK)
    first = _jbench(*args, env=env)
    assert first.returncode == 0, first.stderr
    _hub(tmp_path / "hf", {"main": COMMIT_B})  # the same name, other weights
    second = _jbench(*args, env=env)
    assert second.returncode == 0, second.stderr
    assert ": reusing " not in second.stderr
    assert ("[original] fp32: not reusing " in second.stderr
            and "the model now resolves to commit bbbbbbbbbbbb, the run was made from aaaaaaaaaaaa" in second.stderr)
    assert "[variant 1 of 1] int8: not reusing" in second.stderr
    for run in ("hostile_tiny-fp32", "hostile_tiny-int8"):
        assert _results(tmp_path / "out" / run)["config"]["revision_commit"] == COMMIT_B
    third = _jbench(*args, env=env)  # nothing moved: reused as before
    assert third.returncode == 0 and third.stderr.count(": reusing ") == 2, third.stderr


@pytest.mark.slow  # runs compare (original + int8) twice
def test_compare_reruns_when_a_local_checkpoint_is_overwritten(tmp_path: Path, sample_dir: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from jbench.tiny import tiny_default_model

    model = tmp_path / "m"
    shutil.copytree(tiny_default_model(), model)
    args = ("compare", "-m", str(model), "--variants", "int8", "--data-dir", str(sample_dir),
            "--output-dir", str(tmp_path / "out"), *QUICK)
    first = _jbench(*args)
    assert first.returncode == 0, first.stderr
    (original,) = [p for p in (tmp_path / "out").iterdir() if p.name.endswith("-fp32")]
    before = _results(original)["config"]["weights_fingerprint"]
    weights = load_file(model / "model.safetensors")
    torch.manual_seed(0)
    save_file({k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in weights.items()},
              model / "model.safetensors")  # retrained in place: the same path, other weights
    second = _jbench(*args)
    assert second.returncode == 0, second.stderr
    assert ": reusing " not in second.stderr
    assert "fp32: not reusing" in second.stderr and "weight files changed since it ran" in second.stderr
    assert _results(original)["config"]["weights_fingerprint"] != before


@pytest.mark.slow  # runs compare against an fp16 and a bf16 original
def test_compare_reports_against_other_originals_are_kept_apart(tmp_path: Path, sample_dir: Path) -> None:
    out = tmp_path / "out"
    for original in ("fp16", "bf16"):
        proc = _jbench("compare", "--original", original, "--variants", "int8", "--data-dir", str(sample_dir),
                       "--output-dir", str(out), *QUICK)
        assert proc.returncode == 0, proc.stderr
        assert f"report: {out}/compare/tiny-{original}/compare." in proc.stderr
    for original, dtype in (("fp16", "float16"), ("bf16", "bfloat16")):
        report = json.loads((out / "compare" / f"tiny-{original}" / "compare.json").read_text(encoding="utf-8"))
        assert report["original"]["dtype"] == dtype
    assert not (out / "compare" / "tiny").exists()


@pytest.mark.slow  # two tiny-model runs
def test_a_rerun_with_other_settings_says_what_its_cache_gives(jbench_main, capsys, tmp_path, sample_dir) -> None:  # type: ignore[no-untyped-def]
    common = ("--run-name", "shared", "--output-dir", str(tmp_path), "--data-dir", str(sample_dir), *QUICK)
    assert jbench_main("eval", *common) == 0
    capsys.readouterr()
    assert jbench_main("eval", "--model-args", "attn_implementation=eager", *common) == 0
    err = capsys.readouterr().err
    assert "answers are already in its request cache" not in err
    assert re.search(r"reusing \S+shared, whose last finished run had other settings \(model\.model_args\): its "
                     r"request cache holds 20 answers, reused only for requests identical", err), err
    hits = _results(tmp_path / "shared")["config"]["resources"]["cache_hits"]
    assert hits == 0 and "request cache: 0 answers reused, 20 computed" in err
    assert jbench_main("eval", "--model-args", "attn_implementation=eager", *common) == 0  # the same plan again
    err = capsys.readouterr().err
    assert "resuming" in err and "request cache: 20 answers reused, 0 computed" in err


def test_one_set_of_neutral_model_args_for_names_caches_and_published_checks() -> None:
    """Placement, memory and parallelism args leave the run name alone (and, through the same set, the cache
    identity and the published comparability check); args that can change a number do not."""
    from jbench.published import comparable
    from jbench.run_identity import NEUTRAL_MODEL_ARGS, settings_tag

    neutral = {"device_map": "auto", "max_memory": {"0": "20GiB"}, "tensor_parallel_size": 2,
               "gpu_memory_utilization": 0.5, "offload_folder": "/tmp/x", "low_cpu_mem_usage": True}
    assert settings_tag({"model_args": neutral}) == ""
    for numeric in ("attn_implementation", "n_gpu_layers", "tokenizer"):
        assert numeric not in NEUTRAL_MODEL_ARGS and settings_tag({"model_args": {numeric: "x"}}).startswith("-ma")
    assert NEUTRAL_MODEL_ARGS <= comparable._CHECKED_OR_NEUTRAL
