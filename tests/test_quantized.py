"""Transformers-loaded quantized variants (bnb, int8/int4 weight-only, gptq/awq loading) scored by HFScorer.

Every variant's loglikelihoods are compared with the fp32 original on the same requests: 8-bit variants must be
close (bounds set from measurements with margin), except bnb8, whose error depends on the machine-built test model
(see test_bnb8); 4-bit ones are printed and only sanity-checked."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _qmodels import LL_PAIRS, REQS, ref, src, tiny_llama256  # noqa: E402,F401 (fixtures)

from jbench.errors import BackendMissing, ModelError  # noqa: E402
from jbench.models.base import LoglikelihoodRequest  # noqa: E402
from jbench.models.load import ModelSpec  # noqa: E402



def _load(path: Path | str, variant: str, **extra):
    from jbench.models.quantized import load_variant

    return load_variant(str(path), ModelSpec(model=str(path), variant=variant, extra=extra), use_fast=False)


def _report(name: str, ll: list[float], ref: list[float]) -> tuple[float, float]:
    d = [abs(a - b) for a, b in zip(ll, ref)]
    mean, mx = sum(d) / len(d), max(d)
    print(f"\n[{name}] mean|dLL|={mean:.4f} max|dLL|={mx:.4f}")
    return mean, mx


# -- 8-bit: bounded ------------------------------------------------------------------------------------------------


def test_int8_weight_only_torchao(src: Path, ref: list[float]) -> None:
    sc = _load(src, "int8")
    mean, mx = _report("int8 torchao", sc.loglikelihood(REQS), ref)
    assert 0 < mean < 0.03 and mx < 0.1  # measured 0.0078 / 0.021
    assert sc.quantization["backend"] == "torchao"
    assert sc.tokenizer.kind == "sentencepiece"


def test_int8_weight_only_quanto(src: Path, ref: list[float]) -> None:
    pytest.importorskip("optimum.quanto")
    mean, mx = _report("int8 quanto", _load(src, "int8", backend="quanto").loglikelihood(REQS), ref)
    assert 0 < mean < 0.03 and mx < 0.1  # measured 0.0052 / 0.010


def _llm_int8_emulation(module: Any, threshold: float) -> Callable[[Any], Any]:
    """A forward for one bnb ``Linear8bitLt`` that does LLM.int8() by hand, in fp32/fp64, from bnb's own int8
    weights: inputs cast to fp16 for quantization, columns holding an |x| >= threshold kept in fp32 (with the
    dequantized weight columns), the rest quantized per token to round(x * 127 / row absmax), an exact integer
    matmul, and the product rescaled by row absmax * SCB / 127^2."""
    import torch

    cb = module.state.CB if module.state.CB is not None else module.weight.data
    scb = (module.state.SCB if module.state.SCB is not None else module.weight.SCB).float()
    assert cb.dtype == torch.int8
    w_dq = cb.float() * (scb[:, None] / 127.0)

    def forward(x: Any) -> Any:
        a = x.reshape(-1, x.shape[-1]).float()
        a16 = a.half().float()
        outlier = a16.abs() >= threshold
        cols = outlier.any(0)
        kept = a16.masked_fill(outlier, 0)
        row_max = kept.abs().amax(1).clamp_min(1e-30)
        ca = torch.round(kept * (127.0 / row_max[:, None]))
        if a.shape[0] > 1:
            ca[:, cols] = 0
        out = ((ca.double() @ cb.double().t()) * (row_max[:, None].double() * scb[None, :].double() / 127.0**2))
        out = out.float()
        if cols.any():
            out = out + a[:, cols] @ w_dq[:, cols].t()
        if module.bias is not None:
            out = out + module.bias
        return out.reshape(*x.shape[:-1], -1).to(x.dtype)

    return forward


def test_bnb8(src: Path, ref: list[float], caplog: pytest.LogCaptureFixture) -> None:
    """bnb LLM.int8() equals LLM.int8() computed by hand (tight bound); against fp32 it is only sanity-checked.

    Why no tight bound against fp32: LLM.int8()'s error is its per-token int8 quantization of the activations
    (step = row absmax / 127 below the 6.0 outlier threshold), and its size depends on the model's activations.
    The test model is *trained* on the machine that runs the tests, and fp32 training does not give the same
    weights on every CPU: built with ATen's AVX-512 kernels (an Intel Xeon) and with ATEN_CPU_CAPABILITY=avx2 on
    the same machine, the weights differ by up to 94 % (relative), and bnb8 costs mean/max |dLL| 0.171/1.009 on
    the first and 0.028/0.099 on the second (0.036/0.108 was measured on an AMD EPYC). On one model the CPU path
    changes nothing: torch._int_mm (bnb's AVX-512 path) and an fp32 matmul give identical loglikelihoods, so do
    ATEN_CPU_CAPABILITY=avx2 and 1 or 2 threads; the fp16 input cast alone costs 0.002 (removing it does not
    help); weight quantization alone costs 0.012; per-token activation quantization alone 0.166; keeping
    every |x| >= 1.0 in fp32 (threshold 1.0) brings bnb8 down to the weight-only 0.012.

    What is guaranteed on every CPU: bnb's numbers are LLM.int8() -- equal to the emulation from bnb's own int8
    weights up to an occasional rounding step flipped by a last-bit difference (measured max 0.0078 and 0.0019
    on the two models; bound 0.05, while the emulation with the outlier threshold at 3.0, or with no outlier
    path, differs from bnb by 0.61 / 0.085). Against fp32: it is
    really quantized, and not garbage (a broken path costs tens of nats)."""
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    sc = _load(src, "bnb8")
    caplog.set_level("WARNING")
    ll = sc.loglikelihood(REQS)
    assert "MatMul8bitLt" not in caplog.text  # recorded once in the quantization info instead
    assert sc.quantization["inputs_cast_to"].startswith("float16") and "int8_matmul" in sc.quantization
    mean, mx = _report("bnb int8 vs fp32", ll, ref)
    assert 1e-3 < mean < 0.5 and mx < 3.0

    mods = [m for m in sc.model.modules() if isinstance(m, bnb.nn.Linear8bitLt)]
    assert mods
    for m in mods:
        m.forward = _llm_int8_emulation(m, sc.quantization["int8_threshold"])
    emulated = sc.loglikelihood(REQS)
    _, mx_emu = _report("bnb int8 vs its fp32 emulation", ll, emulated)
    assert mx_emu < 0.05


# -- 4-bit: reported -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant,extra", [
    ("bnb4", {}),                          # nf4 (measured mean 0.085)
    ("bnb4", {"quant_type": "fp4"}),       # measured 0.076
    ("bnb4", {"double_quant": True}),      # measured 0.084
    ("int4", {}),                          # torchao int4 g32 asymmetric (measured 0.147)
], ids=["nf4", "fp4", "nf4-double", "int4-torchao"])
def test_4bit_reported(src: Path, ref: list[float], variant: str, extra: dict) -> None:
    if variant == "bnb4":
        pytest.importorskip("bitsandbytes")
    sc = _load(src, variant, **extra)
    mean, _ = _report(f"{variant} {extra or ''}".strip(), sc.loglikelihood(REQS), ref)
    assert 1e-4 < mean < 2.0  # really quantized, and not garbage (a broken path gives tens of nats)


def test_bnb_bad_quant_type(src: Path) -> None:
    pytest.importorskip("bitsandbytes")
    with pytest.raises(ModelError, match="quant_type"):
        _load(src, "bnb4", quant_type="nf3")


# -- registry ------------------------------------------------------------------------------------------------------


def test_through_registry(src: Path) -> None:
    import jbench.models.variants  # noqa: F401
    from jbench.models.load import load_scorer

    scorer, record = load_scorer(ModelSpec(model=str(src), variant="int8", use_fast=False))
    assert record["variant"] == "int8" and "variant=int8" in record["model_args"]
    tok = record["tokenizer"]  # the tokenizer identity (issue 12 item 2): a dict with its kind
    assert record["dtype"] == "float32" and (tok["kind"] if isinstance(tok, dict) else tok) == "sentencepiece"
    assert len(scorer.loglikelihood(REQS[:2])) == 2


# -- missing backends ----------------------------------------------------------------------------------------------


def _hide(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    """Make ``import package`` (and its submodules) fail as if it were not installed."""
    for name in [m for m in list(sys.modules) if m == package or m.startswith(package + ".")] + [package]:
        monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize("variant,package", [
    ("bnb4", "bitsandbytes"), ("bnb8", "bitsandbytes"), ("int8", "torchao"), ("int4", "torchao"),
    ("gptq", "gptqmodel"), ("awq", "gptqmodel"),
])
def test_missing_backend_gives_install_hint(monkeypatch: pytest.MonkeyPatch, src: Path, variant: str,
                                            package: str) -> None:
    _hide(monkeypatch, package)
    with pytest.raises(BackendMissing, match=r'pip install "jbench\[quant\]"') as err:
        _load(src, variant)
    assert package in str(err.value)


def test_missing_quanto_gives_install_hint(monkeypatch: pytest.MonkeyPatch, src: Path) -> None:
    _hide(monkeypatch, "optimum.quanto")
    with pytest.raises(BackendMissing, match=r"jbench\[quant\]"):
        _load(src, "int8", backend="quanto")


# -- gptq / awq checkpoint layouts (no quantization needed here) -----------------------------------------------------


def test_gptq_on_an_unquantized_dir_is_a_clear_error(src: Path) -> None:
    pytest.importorskip("gptqmodel")
    with pytest.raises(ModelError, match="not a GPTQ checkpoint"):
        _load(src, "gptq")


def _fake_checkpoint(tmp_path: Path, weights: dict[str, bytes], qcfg: dict) -> Path:
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (d / "quantize_config.json").write_text(json.dumps(qcfg))
    for name, data in weights.items():
        (d / name).write_bytes(data)
    return d


def test_resolve_gptq_dir_layouts(tmp_path: Path) -> None:
    """gptqmodel finds model.safetensors and gptq_model-<bits>bit-<group>g.safetensors itself; any other lone
    safetensors name (auto-gptq model cards' model_basename) is linked as model.safetensors."""
    from jbench.models.quantized import resolve_gptq_dir

    spec = ModelSpec()
    q = {"bits": 4, "group_size": 128, "desc_act": False, "sym": True}
    d = _fake_checkpoint(tmp_path, {"gptq_model-4bit-128g.safetensors": b"x"}, q)
    assert resolve_gptq_dir(str(d), spec) == d
    (d / "gptq_model-4bit-128g.safetensors").rename(d / "Llama-2-7B-GPTQ-4bit.safetensors")
    shadow = resolve_gptq_dir(str(d), spec)
    assert shadow != d
    assert (shadow / "model.safetensors").resolve() == (d / "Llama-2-7B-GPTQ-4bit.safetensors").resolve()
    assert (shadow / "quantize_config.json").is_file()
    (d / "other.safetensors").write_bytes(b"y")
    with pytest.raises(ModelError, match="model_basename"):
        resolve_gptq_dir(str(d), spec)
    picked = resolve_gptq_dir(str(d), ModelSpec(extra={"model_basename": "other"}))
    assert (picked / "model.safetensors").resolve() == (d / "other.safetensors").resolve()


def test_resolve_gptq_dir_bin_only(tmp_path: Path) -> None:
    from jbench.models.quantized import resolve_gptq_dir

    d = _fake_checkpoint(tmp_path, {"gptq_model-4bit-128g.bin": b"x"}, {"bits": 4, "group_size": 128})
    with pytest.raises(ModelError, match="safetensors only"):
        resolve_gptq_dir(str(d), ModelSpec())


def test_resolve_wrong_method(tmp_path: Path) -> None:
    from jbench.models.quantized import resolve_gptq_dir

    d = _fake_checkpoint(tmp_path, {"model.safetensors": b"x"}, {"bits": 4, "group_size": 128, "quant_method": "awq"})
    with pytest.raises(ModelError, match="--variant awq"):
        resolve_gptq_dir(str(d), ModelSpec(), "gptq")
    assert resolve_gptq_dir(str(d), ModelSpec(), "awq") == d


def test_awq_without_kernel_is_a_model_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """When gptqmodel has no AWQ kernel for the device it raises; we turn that into a clear ModelError."""
    gm = pytest.importorskip("gptqmodel")
    d = _fake_checkpoint(tmp_path, {"model.safetensors": b"x"}, {"bits": 4, "group_size": 128, "quant_method": "awq"})

    def no_kernel(*args, **kwargs):
        raise ValueError("AWQ: CUDA is not available.")

    monkeypatch.setattr(gm.GPTQModel, "load", no_kernel)
    with pytest.raises(ModelError, match="no usable AWQ kernel"):
        _load(d, "awq")


def test_tokenizer_override(src: Path, tmp_path: Path) -> None:
    """extra.tokenizer points at the original model when the quantized dir has no (or a re-saved) tokenizer."""
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("config.json", "model.safetensors", "generation_config.json"):
        shutil.copy(src / f, bare / f)
    sc = _load(bare, "int8", tokenizer=str(src))
    assert sc.tokenizer.kind == "sentencepiece" and sc.quantization["tokenizer"] == str(src)
