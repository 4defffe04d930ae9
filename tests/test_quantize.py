"""``jbench.quantize``: calibration handling, GPTQ / AWQ with gptqmodel (then reloaded through the gptq / awq
variants and scored against the original), and checkpoint layouts the gptq loader must accept.

gptqmodel's first quantization JIT-compiles a CPU packer (~35 s), cached under ~/.cache/gptqmodel (or
$JBENCH_CACHE_DIR/gptqmodel); later runs take a few seconds per method."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _qmodels import CORPUS, LL_PAIRS, REQS, ref, src, tiny_llama256  # noqa: E402,F401 (fixtures)

from jbench.errors import ModelError  # noqa: E402
from jbench.models.base import GenerationRequest, LoglikelihoodRequest  # noqa: E402
from jbench.models.load import ModelSpec  # noqa: E402
from jbench.quantize import load_calibration, pack_calibration, quantize  # noqa: E402



# -- calibration -----------------------------------------------------------------------------------------------------


def test_calibration_list_file_and_seeded_sample(tmp_path: Path) -> None:
    texts = [f"文{i}です。" for i in range(100)] + ["  ", ""]
    assert load_calibration(texts[:5], n_samples=64) == texts[:5]
    a = load_calibration(texts, n_samples=10, seed=1)
    assert a == load_calibration(texts, n_samples=10, seed=1) and len(a) == 10
    assert a != load_calibration(texts, n_samples=10, seed=2)
    assert a == sorted(a, key=texts.index)  # original order kept
    f = tmp_path / "calib.txt"
    f.write_text("\n".join(texts), encoding="utf-8")
    assert load_calibration(f, n_samples=0) == texts[:100]
    with pytest.raises(ModelError, match="empty"):
        load_calibration(["", " "])
    with pytest.raises(ModelError, match="not found"):
        load_calibration(tmp_path / "missing.txt")


def test_pack_calibration_keeps_every_text() -> None:
    src = tiny_llama256()
    texts = [f"猫は公園{i}で本を読みます。" for i in range(40)]
    packs = pack_calibration(texts, src, min_tokens=64)
    assert "\n".join(packs) == "\n".join(texts)
    assert 1 < len(packs) < len(texts)


# -- GPTQ / AWQ --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def calibration() -> list[str]:
    return list(CORPUS)


@pytest.fixture(scope="module")
def gptq_dir(src: Path, calibration: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("gptqmodel")
    out = tmp_path_factory.mktemp("gptq")
    assert quantize(src, out, method="gptq", bits=4, group_size=128, calibration=calibration, n_samples=32,
                    seed=0) == [out]
    return out


def _load(path: Path, variant: str, **extra):
    from jbench.models.quantized import load_variant

    return load_variant(str(path), ModelSpec(model=str(path), variant=variant, extra=extra), use_fast=False)


def _report(name: str, ll: list[float], ref: list[float]) -> float:
    d = [abs(a - b) for a, b in zip(ll, ref)]
    print(f"\n[{name}] mean|dLL|={sum(d) / len(d):.4f} max|dLL|={max(d):.4f}")
    return sum(d) / len(d)


@pytest.mark.slow
def test_gptq_quantize_reload_and_score(gptq_dir: Path, src: Path, ref: list[float]) -> None:
    rec = json.loads((gptq_dir / "jbench_quantize.json").read_text())
    assert rec["method"] == "gptq" and rec["bits"] == 4 and rec["n_samples"] == 32 and rec["seed"] == 0
    # the original sentencepiece file is restored (gptqmodel re-saves only tokenizer.json)
    assert (gptq_dir / "tokenizer.model").read_bytes() == (src / "tokenizer.model").read_bytes()
    sc = _load(gptq_dir, "gptq")
    assert sc.tokenizer.kind == "sentencepiece"
    assert sc.quantization["bits"] == 4 and sc.quantization["kernels"]
    mean = _report("gptq 4bit g128", sc.loglikelihood(REQS), ref)
    assert 1e-4 < mean < 2.0  # measured 0.44 (tiny calibration set: the number itself means little)
    assert isinstance(sc.generate([GenerationRequest("先生は学校で", "。", 4)])[0], str)


@pytest.mark.slow
def test_gptq_auto_gptq_layout(gptq_dir: Path, tmp_path: Path, ref: list[float]) -> None:
    """An auto-gptq-style checkpoint: quantize_config.json only (no quantization_config in config.json) and
    weights named by ``model_basename`` -- both the standard and a custom name load and score identically."""
    d = tmp_path / "autogptq"
    d.mkdir()
    cfg = json.loads((gptq_dir / "config.json").read_text())
    cfg.pop("quantization_config")
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "quantize_config.json").write_text(json.dumps({
        "bits": 4, "group_size": 128, "damp_percent": 0.01, "desc_act": False, "static_groups": False, "sym": True,
        "true_sequential": True, "model_name_or_path": None, "model_file_base_name": "gptq_model-4bit-128g"}))
    for f in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        (d / f).write_bytes((gptq_dir / f).read_bytes())
    weights = d / "gptq_model-4bit-128g.safetensors"
    weights.write_bytes((gptq_dir / "model.safetensors").read_bytes())
    expected = _load(gptq_dir, "gptq").loglikelihood(REQS)
    assert _load(d, "gptq").loglikelihood(REQS) == pytest.approx(expected, abs=1e-5)
    weights.rename(d / "tiny-llama-GPTQ-4bit-128g.safetensors")
    assert _load(d, "gptq").loglikelihood(REQS) == pytest.approx(expected, abs=1e-5)


@pytest.mark.slow
def test_awq_quantize_reload_and_score(src: Path, calibration: list[str], ref: list[float], tmp_path: Path) -> None:
    pytest.importorskip("gptqmodel")
    out = tmp_path / "awq"
    quantize(src, out, method="awq", bits=4, group_size=128, calibration=calibration, n_samples=32, seed=0)
    assert json.loads((out / "quantize_config.json").read_text())["quant_method"] == "awq"
    sc = _load(out, "awq")
    mean = _report("awq 4bit g128", sc.loglikelihood(REQS), ref)
    assert 1e-4 < mean < 2.0  # measured 0.35


def test_group_size_must_divide_the_layers(src: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="group_size"):
        quantize(src, tmp_path / "x", method="gptq", group_size=96, calibration=["猫"])


def test_unknown_method(src: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="unknown quantization method"):
        quantize(src, tmp_path / "x", method="exl2")  # type: ignore[arg-type]


def test_source_must_be_a_model_dir(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="config.json"):
        quantize(tmp_path, tmp_path / "x", method="gguf")


def test_gguf_f32_export_without_llama_cpp(monkeypatch: pytest.MonkeyPatch, src: Path, tmp_path: Path) -> None:
    """The f32 file needs only the gguf package; other types need llama.cpp's quantizer -> install hint, before any
    work is done."""
    pytest.importorskip("gguf")
    from jbench.errors import BackendMissing

    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(BackendMissing, match=r"jbench\[llamacpp\]"):
        quantize(src, tmp_path / "a", method="gguf", gguf_types=("f32", "q4_k_m"))
    assert not (tmp_path / "a").exists()
    (f32,) = quantize(src, tmp_path / "b", method="gguf", gguf_types=("f32",))
    assert f32.name.endswith("-f32.gguf") and f32.stat().st_size > 0
    assert json.loads((tmp_path / "b" / "jbench_quantize.json").read_text())["gguf_f32_max_abs_logit_diff"] is None


def test_output_dir_must_be_empty_or_ours(src: Path, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("precious")
    with pytest.raises(ModelError, match="not empty"):
        quantize(src, tmp_path, method="gptq", calibration=["猫は公園で本を読みます。"])
    assert (tmp_path / "keep.txt").is_file()
