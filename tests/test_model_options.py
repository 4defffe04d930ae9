"""lm-eval-style model options through the CLI: --model-args, --revision, --batch-size auto|auto:N|N, the underscore
spellings, and `jbench compare --original`.

The fast tests stop at validation (dry runs, bad input); the model tests run the embedded tiny model, and the
revision tests a Hub-id stand-in laid out as huggingface_hub's cache (refs/<rev> -> snapshots/<commit>/), offline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jbench.models.model_args import (batch_record, check_model_args, format_model_args, parse_batch_size,
                                      parse_model_args)

COMMON = ("--tasks", "xwinograd_ja", "--limit", "4", "--no-progress")


def _results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------------------------
# parsing (no model)
# ---------------------------------------------------------------------------------------------------------------


def test_values_are_read_as_lm_eval_reads_them() -> None:
    from lm_eval.utils import simple_parse_args_string

    text = "attn_implementation=eager,low_cpu_mem_usage=True,x=none,n=-3,f=1e-3,s='123',name=main,flag=FALSE"
    assert parse_model_args(text) == simple_parse_args_string(text)
    assert parse_model_args(text)["s"] == "123" and parse_model_args(text)["n"] == -3


def test_dict_values_keep_their_commas_and_are_json_stable() -> None:
    args = parse_model_args("max_memory={0:'20GiB',1:'20GiB',cpu:'60GiB'},device_map=auto,subfolder=ckpt")
    # GPU indices are stored as strings (as run.json reads them back) and turned back into ints for the loader
    assert args == {"max_memory": {"0": "20GiB", "1": "20GiB", "cpu": "60GiB"}, "device_map": "auto",
                    "subfolder": "ckpt"}
    assert json.loads(json.dumps(args)) == args
    from jbench.models.model_args import from_pretrained_kwargs

    assert from_pretrained_kwargs(args)["max_memory"] == {0: "20GiB", 1: "20GiB", "cpu": "60GiB"}
    assert format_model_args({"max_memory": {"0": "20GiB"}}) == 'max_memory={"0":"20GiB"}'


@pytest.mark.parametrize("value, expected", [(None, (None, None)), ("auto", (None, None)), ("AUTO:8", (None, 8)),
                                             ("16", (16, None)), (4, (4, None))])
def test_batch_size_forms(value: object, expected: tuple) -> None:
    assert parse_batch_size(value) == expected  # type: ignore[arg-type]


def test_gguf_keys_that_jbench_sets_are_refused_only_for_gguf() -> None:
    assert [p.what for p in check_model_args({"n_ctx": 512}, "gguf")] == ["--model-args n_ctx is set by jbench itself"]
    assert check_model_args({"n_ctx": 512}, "fp32") == []
    assert "device_map" in check_model_args({"device_map": "auto"}, "bnb4")[0].what


# ---------------------------------------------------------------------------------------------------------------
# the CLI: validation and bad input (no weights load)
# ---------------------------------------------------------------------------------------------------------------


def test_dry_run_shows_the_parsed_model_options(jbench_main, capsys, tmp_path, sample_dir) -> None:  # type: ignore[no-untyped-def]
    code = jbench_main("eval", "--model_args", "attn_implementation=eager,max_memory={0:'1GiB'},max_length=64",
                       "--batch_size", "auto:4", "--num_fewshot", "0", "--output_path", str(tmp_path), "--dry-run",
                       "--data-dir", str(sample_dir), "--tasks", "xwinograd_ja", "--device", "cpu",
                       "--trust_remote_code")
    out = capsys.readouterr().out
    assert code == 0, out
    model = json.loads(out)["model"]
    assert model["model_args"] == {"attn_implementation": "eager", "max_memory": {"0": "1GiB"}}
    assert model["max_length"] == 64 and model["batch_size"] is None and model["max_batch_size"] == 4
    assert model["trust_remote_code"] is True
    assert json.loads(out)["run_dir"].startswith(str(tmp_path))


@pytest.mark.parametrize("args, message", [
    (("--model-args", "foo"), "--model-args item 'foo' is not KEY=VALUE"),
    (("--model-args", "=x"), "--model-args item '=x' is not KEY=VALUE"),
    (("--model-args", "a=1,a=2"), "--model-args gives a twice"),
    (("--model-args", "max_memory={0:}"), "--model-args max_memory: cannot read"),
    (("--model_args", "torch_dtype=float16"), "use --variant fp32|fp16|bf16|auto"),
    (("--model-args", "load_in_4bit=True"), "use --variant bnb4"),
    (("--model-args", "parallelize=True"), "in jbench: device_map=auto"),
    (("--model-args", "max_length=0"), "max_length must be a positive integer"),
    (("--batch-size", "auto:x"), "N in auto:N must be a positive integer"),
    (("--batch-size", "big"), "--batch-size must be auto, auto:N or a positive integer, got 'big'"),
    (("--batch_size", "0"), "--batch-size must be at least 1"),
    (("--revision", "main"), "--revision cannot apply to the embedded tiny model"),
])
def test_bad_model_options_exit_2_with_one_message(jbench_main, capsys, tmp_path, sample_dir,  # type: ignore[no-untyped-def]
                                                   args: tuple[str, ...], message: str) -> None:
    code = jbench_main("eval", *args, "--dry-run", "--data-dir", str(sample_dir), "--output-dir", str(tmp_path),
                       *COMMON)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err


def test_pretrained_in_model_args_names_the_model_as_in_lm_eval(jbench_main, capsys, sample_dir) -> None:  # type: ignore[no-untyped-def]
    from jbench.tiny import tiny_default_model

    local = str(tiny_default_model())
    code = jbench_main("eval", "--model_args", f"pretrained={local},attn_implementation=eager", "--dry-run",
                       "--data-dir", str(sample_dir), *COMMON)
    out = capsys.readouterr().out
    assert code == 0 and json.loads(out)["model"]["model"] == local
    assert json.loads(out)["model"]["model_args"] == {"attn_implementation": "eager"}
    assert jbench_main("eval", "--model", "owner/other", "--model_args", f"pretrained={local}", "--dry-run",
                       "--data-dir", str(sample_dir), *COMMON) == 2
    assert "--model-args pretrained is set by jbench itself" in capsys.readouterr().err


def test_revision_on_a_local_folder_and_given_twice(jbench_main, capsys, tmp_path, sample_dir) -> None:  # type: ignore[no-untyped-def]
    from jbench.tiny import tiny_default_model

    local = str(tiny_default_model())
    assert jbench_main("eval", "--model", local, "--revision", "v1", "--dry-run", "--data-dir", str(sample_dir),
                       *COMMON) == 2
    assert "--revision cannot apply to a local folder" in capsys.readouterr().err
    assert jbench_main("eval", "--model", "owner/name", "--revision", "a", "--model-args", "revision=b",
                       "--dry-run", "--data-dir", str(sample_dir), *COMMON) == 2
    assert "the revision is given twice: --revision a and --model-args revision=b" in capsys.readouterr().err


def test_compare_refuses_a_quantized_original(jbench_main, capsys, tmp_path, sample_dir) -> None:  # type: ignore[no-untyped-def]
    code = jbench_main("compare", "--original", "int4", "--variants", "int8", "--output-dir", str(tmp_path),
                       "--data-dir", str(sample_dir), *COMMON)
    err = capsys.readouterr().err
    assert code == 2 and "--original must be one of fp32, fp16, bf16, auto, got 'int4'" in err
    assert not list(tmp_path.iterdir())  # refused before the original ran


def test_variants_follow_the_original_dtype_and_keep_their_own_folders(tmp_path: Path) -> None:
    from dataclasses import asdict

    from jbench.models.load import ModelSpec
    from jbench.plan import RunPlan
    from jbench.variant_runs import plan_variants

    base = RunPlan(model=asdict(ModelSpec(variant="fp16", model_args={"attn_implementation": "eager",
                                                                      "device_map": "auto"})),
                   tasks=["xwinograd_ja"], num_fewshot=[0], data_dir=str(tmp_path))
    [(vplan, vdir)] = plan_variants(base, ["int8"], {}, calibration=None, output_dir=tmp_path, compute_dtype="fp16")
    assert re.fullmatch(r"tiny-int8-fp16-ma[0-9a-f]{6}", vdir.name)  # attn_implementation changes the numbers
    assert vplan.model["extra"]["dtype"] == "float16"
    assert vplan.model["model_args"] == {"attn_implementation": "eager"}  # jbench places quantized models itself
    [(vplan, vdir)] = plan_variants(base, ["int8"], {}, calibration=None, output_dir=tmp_path)
    assert re.fullmatch(r"tiny-int8-ma[0-9a-f]{6}", vdir.name) and "dtype" not in vplan.model["extra"]
    plain = RunPlan(model=asdict(ModelSpec()), tasks=["xwinograd_ja"], num_fewshot=[0], data_dir=str(tmp_path))
    [(_, vdir)] = plan_variants(plain, ["int8"], {}, calibration=None, output_dir=tmp_path)
    assert vdir.name == "tiny-int8"  # without --original and --model-args: as before


def test_make_compare_passes_original_through() -> None:
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(["make", "-n", "compare", "ORIGINAL=fp16", "VARIANTS=int8"], cwd=root, capture_output=True,
                         text=True, check=True).stdout
    assert "--original fp16" in out and "--variants \"int8\"" in out


def test_model_args_are_part_of_the_cache_key_and_old_keys_stay() -> None:
    from jbench.cache import model_identity

    record = {"model": "m", "variant": "fp32", "dtype": "float32"}
    assert model_identity({**record, "model_kwargs": {}}) == model_identity(record)  # runs without model args
    assert model_identity({**record, "model_kwargs": {"attn_implementation": "eager"}}) != model_identity(record)


def test_the_older_python_path_folds_into_model_args() -> None:
    from jbench.models.load import ModelSpec

    spec = ModelSpec(extra={"model_kwargs": {"attn_implementation": "eager"}, "dtype": "float16"})
    assert spec.model_args == {"attn_implementation": "eager"} and spec.extra == {"dtype": "float16"}


# ---------------------------------------------------------------------------------------------------------------
# runs (the embedded tiny model)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow  # loads the tiny model
def test_eval_with_model_args_and_batch_auto_records_both(jbench_main, capsys, tmp_path, sample_dir) -> None:  # type: ignore[no-untyped-def]
    code = jbench_main("eval", "--model-args", "attn_implementation=eager", "--batch-size", "auto",
                       "--output-dir", str(tmp_path), "--data-dir", str(sample_dir), *COMMON)
    assert code == 0, capsys.readouterr().err
    (run,) = tmp_path.glob("tiny-fp32-ma*")  # model args that change the numbers get their own run directory
    cfg = _results(run)["config"]
    assert cfg["model_kwargs"] == {"attn_implementation": "eager"}
    assert cfg["model_args"].endswith(",attn_implementation=eager")
    assert cfg["batch_size"] == "auto" and cfg["batch"]["requested"] == "auto"
    assert "never the free memory" in cfg["batch"]["rule"] and cfg["batch"]["largest_forward_rows"] >= 1
    assert _results(run)["plan"]["model"]["model_args"] == {"attn_implementation": "eager"}


@pytest.mark.slow  # loads the tiny model
def test_batch_size_cap_and_fixed_size_are_honoured(jbench_main, capsys, tmp_path, sample_dir) -> None:  # type: ignore[no-untyped-def]
    for setting, name in (("auto:1", "capped"), ("2", "fixed")):
        code = jbench_main("eval", "--batch-size", setting, "--run-name", name, "--output-dir", str(tmp_path),
                           "--data-dir", str(sample_dir), *COMMON)
        assert code == 0, capsys.readouterr().err
    capped, fixed = _results(tmp_path / "capped")["config"], _results(tmp_path / "fixed")["config"]
    assert capped["batch_size"] == "auto:1" and capped["batch"]["largest_forward_rows"] == 1
    assert capped["batch"]["rule"].endswith("at most 1")
    assert fixed["batch_size"] == 2 and fixed["batch"]["largest_forward_rows"] <= 2
    assert fixed["batch"]["rule"] == "fixed: at most 2 rows per forward"


@pytest.mark.slow  # loads the tiny model
def test_model_args_reach_from_pretrained() -> None:
    from jbench.models.load import ModelSpec, load_scorer

    eager, record = load_scorer(ModelSpec(model_args={"attn_implementation": "eager"}))
    plain, _ = load_scorer(ModelSpec())
    assert eager.model.config._attn_implementation == "eager" != plain.model.config._attn_implementation
    assert record["model_kwargs"] == {"attn_implementation": "eager"}


@pytest.mark.slow  # loads the tiny model
def test_a_model_argument_the_model_does_not_take_is_one_error(jbench_main, capsys, tmp_path, sample_dir) -> None:  # type: ignore[no-untyped-def]
    code = jbench_main("eval", "--model-args", "no_such_argument=1", "--output-dir", str(tmp_path),
                       "--data-dir", str(sample_dir), *COMMON)
    err = capsys.readouterr().err
    assert code == 2 and "with --model-args no_such_argument" in err and "Traceback" not in err
    assert not list(tmp_path.glob("tiny-fp32*/results.json"))


@pytest.mark.slow  # loads the tiny model
def test_compare_against_an_fp16_original(tmp_path, sample_dir) -> None:  # type: ignore[no-untyped-def]
    # a real process: compare runs each variant in a child process that writes to its stderr
    proc = subprocess.run([sys.executable, "-m", "jbench.cli", "compare", "--original", "fp16", "--variants", "int8",
                           "--output-dir", str(tmp_path), "--data-dir", str(sample_dir), *COMMON],
                          capture_output=True, text=True, timeout=900)
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr
    assert "Original: `tiny-fp16` (fp16, float16)" in out and "| original (fp16, float16) |" in out
    assert _results(tmp_path / "tiny-fp16")["config"]["dtype"] == "float16"
    variant = _results(tmp_path / "tiny-int8-fp16")["config"]
    assert variant["variant"] == "int8" and variant["dtype"] == "float16"
    report = json.loads((tmp_path / "compare" / "tiny-fp16" / "compare.json").read_text(encoding="utf-8"))
    assert report["original"]["dtype"] == "float16"


# ---------------------------------------------------------------------------------------------------------------
# --revision: a Hub id served from huggingface_hub's cache layout, offline
# ---------------------------------------------------------------------------------------------------------------

COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


@pytest.fixture
def hub_cache(tmp_path: Path) -> Path:
    """models--jbt--tiny-ja with refs/main -> COMMIT_A and refs/v2 -> COMMIT_B (the same files: the commit alone
    must tell the runs apart)."""
    from jbench.tiny import tiny_default_model

    repo = tmp_path / "hub" / "models--jbt--tiny-ja"
    for ref, commit in (("main", COMMIT_A), ("v2", COMMIT_B)):
        shutil.copytree(tiny_default_model(), repo / "snapshots" / commit)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit, encoding="utf-8")
    return tmp_path / "hub"


def _jbench(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "jbench.cli", *args], env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow  # loads the tiny model
def test_revision_resolves_to_a_commit_that_is_the_fingerprint(hub_cache, tmp_path, sample_dir) -> None:  # type: ignore[no-untyped-def]
    from jbench.models.hub_revision import hub_fingerprint

    fingerprints = []
    for rev, commit in (("main", COMMIT_A), ("v2", COMMIT_B)):
        proc = _jbench("eval", "--model", "jbt/tiny-ja", "--revision", rev, "--no-use-fast", "--run-name", rev,
                       "--output-dir", str(tmp_path / "runs"), "--data-dir", str(sample_dir), *COMMON,
                       cache=hub_cache)
        assert proc.returncode == 0, proc.stderr
        cfg = _results(tmp_path / "runs" / rev)["config"]
        assert cfg["revision"] == rev and cfg["revision_commit"] == commit
        assert cfg["weights_fingerprint"] == hub_fingerprint("jbt/tiny-ja", commit)
        fingerprints.append(cfg["weights_fingerprint"])
    assert fingerprints[0] != fingerprints[1]
    proc = _jbench("eval", "--model", "jbt/tiny-ja", "--revision", "nope", "--output-dir", str(tmp_path / "runs"),
                   "--data-dir", str(sample_dir), *COMMON, cache=hub_cache)
    assert proc.returncode == 2 and "revision 'nope' of jbt/tiny-ja is neither reachable" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow  # exports a tiny Llama to GGUF and loads it with llama.cpp
def test_gguf_model_args_reach_llama_cpp(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    sys.path.insert(0, str(Path(__file__).parent))
    from _qmodels import tiny_llama256

    from jbench.errors import ModelError
    from jbench.models.gguf import load_variant
    from jbench.models.load import ModelSpec
    from jbench.quantize import quantize

    [f32] = quantize(tiny_llama256(), tmp_path, method="gguf", gguf_types=("f32",))
    spec = ModelSpec(model=str(f32), variant="gguf", model_args={"use_mmap": False, "n_threads": 1, "seed": 7})
    scorer = load_variant(str(f32), spec, use_fast=False)
    assert scorer.llama_kwargs == {"use_mmap": False, "seed": 7} and scorer.n_threads == 1
    assert scorer._llm._seed == 7  # the argument reached Llama(...)
    with pytest.raises(ModelError, match="takes no argument attn_implementation"):
        load_variant(str(f32), ModelSpec(model=str(f32), variant="gguf",
                                         model_args={"attn_implementation": "eager"}), use_fast=False)


def test_a_gpu_comparison_computes_in_the_original_dtype_and_has_its_own_names(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """On a GPU a model without a preset runs as `auto` (its checkpoint's dtype); without --original the variants
    used to compute in fp32 and the CPU and GPU comparisons shared their folders. Dry planning, nothing loads."""
    import torch

    from jbench.data import sample_data_dir
    from jbench.plan import resolve_plan
    from jbench.run_identity import comparison_dtype, report_name
    from jbench.variant_runs import plan_variants

    def plan(gpu: bool) -> tuple[str | None, str, list]:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: int(gpu))
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Fake H200")
        base, problems = resolve_plan(model="someorg/no-preset-model-7b", tasks="jcommonsenseqa", num_fewshot=None,
                                      prompt_version=None, limit=2, variant=None, batch_size=None, device=None,
                                      use_fast=None, trust_remote_code=None, data_dir=sample_data_dir(),
                                      allow_data_mismatch=False)
        assert not problems
        dtype = comparison_dtype(None, base.model["variant"])  # what jbench.api.compare does
        return dtype, report_name(base, dtype), plan_variants(base, ["int8", "bnb4"], {}, calibration=None,
                                                               output_dir=tmp_path, compute_dtype=dtype)

    cpu_dtype, cpu_report, cpu = plan(False)
    assert cpu_dtype is None and cpu_report == "someorg_no-preset-model-7b"  # fp32 on CPU: the names as before
    assert [d.name for _, d in cpu] == ["someorg_no-preset-model-7b-int8", "someorg_no-preset-model-7b-bnb4"]
    assert all("dtype" not in p.model["extra"] for p, _ in cpu)
    gpu_dtype, gpu_report, gpu = plan(True)
    assert gpu_dtype == "auto" and gpu_report == "someorg_no-preset-model-7b-auto" != cpu_report
    assert all(p.model["extra"]["dtype"] == "auto" and p.model["device"].startswith("cuda") for p, _ in gpu)
    assert {d.name for _, d in gpu}.isdisjoint(d.name for _, d in cpu)
    assert comparison_dtype("fp32", "auto") == "fp32" and comparison_dtype(None, "bf16") == "bf16"


def test_bnb4_auto_computes_in_the_checkpoint_dtype(tmp_path: Path) -> None:
    """bnb4's compute dtype for `auto` is the checkpoint's (it used to be float32 whatever the original ran in)."""
    import torch

    from jbench.models.load import ModelSpec
    from jbench.models.quantized import checkpoint_dtype

    spec = ModelSpec(variant="bnb4")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "torch_dtype": "bfloat16"}))
    assert checkpoint_dtype(str(tmp_path), spec) == torch.bfloat16
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert checkpoint_dtype(str(tmp_path), spec) == torch.float32
