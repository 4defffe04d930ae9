"""GPU-first defaults (issue 15): ``--device auto`` is the default and resolves to cuda, else mps, else cpu; a model
without a preset loads in its checkpoint's dtype on a GPU and in fp32 on CPU; presets keep their dtype; an auto that
resolves to cpu makes exactly the plan (run directory, stored plan, cache identity) that ``--device cpu`` made.

GPUs are simulated by monkeypatching torch's availability probes: no test here needs one."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import pytest
import torch

from jbench.devices import default_variant_for, is_gpu, resolve_device
from jbench.plan import resolve_plan, run_dir_for

UNKNOWN_MODEL = "someorg/no-preset-model-7b"          # a hub id no preset matches: the fallback preset
PRESET_MODEL = "rinna/japanese-gpt-neox-3.6b-instruction-sft"   # preset dtype float32


def _fake_cuda(monkeypatch: pytest.MonkeyPatch, count: int = 1) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Fake H200")


def _fake_mps(monkeypatch: pytest.MonkeyPatch, available: bool) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: available)


def _plan(model: str | None, device: str | None = None, variant: str | None = None, sample: Path | None = None):
    return resolve_plan(model=model, tasks="jcommonsenseqa", num_fewshot=None, prompt_version=None, limit=2,
                        variant=variant, batch_size=None, device=device, use_fast=None, trust_remote_code=None,
                        data_dir=sample, allow_data_mismatch=False)[0]


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cuda(monkeypatch, 0)
    _fake_mps(monkeypatch, False)
    assert resolve_device(None)[0] == "cpu"
    assert resolve_device("auto")[0] == "cpu"
    _fake_mps(monkeypatch, True)
    assert resolve_device("auto") == ("mps", "auto: Apple MPS available")
    _fake_cuda(monkeypatch, 2)
    device, why = resolve_device(None)
    assert device == "cuda" and "2 CUDA devices" in why and "Fake H200" in why


def test_an_explicit_device_is_kept_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cuda(monkeypatch, 1)
    assert resolve_device("cpu") == ("cpu", "as given")
    assert resolve_device("cuda:1") == ("cuda:1", "as given")  # validation, not resolution, says it is not there


def test_default_variant_follows_the_device_only_without_a_preset() -> None:
    assert default_variant_for("cpu", "fp32", has_preset=False) == ("fp32", None)
    variant, note = default_variant_for("cuda:0", "fp32", has_preset=False)
    assert variant == "auto" and note is not None and note.startswith("dtype: auto") and "--variant fp32" in note
    assert default_variant_for("cuda", "fp32", has_preset=True) == ("fp32", None)
    assert default_variant_for("mps", "bf16", has_preset=True) == ("bf16", None)
    assert is_gpu("mps") and is_gpu("cuda:3") and not is_gpu("cpu")


def test_plan_on_a_gpu_box_uses_cuda_and_the_checkpoint_dtype(monkeypatch: pytest.MonkeyPatch, sample_dir: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    _fake_cuda(monkeypatch, 1)
    plan = _plan(UNKNOWN_MODEL, sample=sample_dir)
    err = capsys.readouterr().err
    assert plan.model["device"] == "cuda" and plan.model["variant"] == "auto"
    assert "device: cuda (auto: 1 CUDA device visible, cuda:0 is Fake H200)" in err
    assert "dtype: auto (the checkpoint's own) on cuda" in err
    # presets keep their dtype; an explicit --variant wins; the tiny model stays fp32
    assert _plan(PRESET_MODEL, sample=sample_dir).model["variant"] == "fp32"
    assert _plan(UNKNOWN_MODEL, variant="bf16", sample=sample_dir).model["variant"] == "bf16"
    assert "dtype: auto" not in capsys.readouterr().err
    assert _plan(None, sample=sample_dir).model == {**_plan(None, "cuda", sample=sample_dir).model}
    assert _plan(None, sample=sample_dir).model["variant"] == "fp32"


def test_plan_on_cpu_is_the_plan_of_device_cpu(monkeypatch: pytest.MonkeyPatch, sample_dir: Path,
                                               tmp_path: Path) -> None:
    """The same run directory, stored plan and so request-cache identity as before auto existed."""
    _fake_cuda(monkeypatch, 0)
    _fake_mps(monkeypatch, False)
    for model in (None, UNKNOWN_MODEL, PRESET_MODEL):
        auto, cpu = _plan(model, sample=sample_dir), _plan(model, "cpu", sample=sample_dir)
        assert asdict(auto) == asdict(cpu)
        assert auto.model["device"] == "cpu" and auto.model["variant"] == "fp32"
        assert run_dir_for(tmp_path, None, auto)[0] == run_dir_for(tmp_path, None, cpu)[0]
    assert run_dir_for(tmp_path, None, _plan(None, sample=sample_dir))[0].name == "tiny-fp32"


def test_cli_defaults_to_auto_and_records_the_device(jbench_main: Callable[..., int], sample_dir: Path,
                                                     tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = jbench_main("eval", "--dry-run", "--tasks", "jcommonsenseqa", "--limit", "2", "--data-dir",
                       str(sample_dir), "--output-dir", str(tmp_path))
    out, err = capsys.readouterr()
    assert code == 0, err
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert json.loads(out)["model"]["device"] == expected
    assert f"device: {expected} (auto: " in err


def test_cuda_without_cuda_is_one_message_before_loading(jbench_main: Callable[..., int], sample_dir: Path,
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    _fake_cuda(monkeypatch, 0)
    import jbench.models.load as load

    def never(*a: object, **k: object) -> None:
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(load, "load_scorer", never)
    for device in ("cuda", "cuda:1"):
        code = jbench_main("eval", "--device", device, "--tasks", "jcommonsenseqa", "--limit", "2", "--data-dir",
                           str(sample_dir), "--output-dir", str(tmp_path))
        err = capsys.readouterr().err
        assert code == 2, err
        assert err.count("error: ") == 1 and "Traceback" not in err
        assert f"--device {device}" in err and "use --device cpu" in err
    assert not any(tmp_path.iterdir())


def test_gpu_build_is_read_from_torch_version_file(tmp_path, monkeypatch) -> None:
    """--device auto on a CPU-only torch build answers without importing torch (a dry run stays light); a CUDA or
    ROCm build, or a version file it cannot read, defers to torch itself."""
    import importlib.util
    import types

    from jbench import devices

    pkg = tmp_path / "torch"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name: types.SimpleNamespace(origin=str(pkg / "__init__.py")))
    cases = {"cuda: Optional[str] = None\nhip: Optional[str] = None\n": False,
             "cuda: Optional[str] = '12.8'\nhip: Optional[str] = None\n": True,
             "cuda = None\nhip = '6.2.4'\n": True,
             "something else\n": True}
    for text, expected in cases.items():
        (pkg / "version.py").write_text(text)
        assert devices._torch_build_has_gpu() is expected, text
    (pkg / "version.py").unlink()
    assert devices._torch_build_has_gpu() is True
