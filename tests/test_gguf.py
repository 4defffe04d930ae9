"""GGUF variant: our f32 export reproduces HF through llama.cpp; Q8_0 / Q4_K_M deltas are measured and reported.

Model: a hidden-256 tiny Llama (so llama.cpp's K-quants really run), see tests/_qmodels.py."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _qmodels import CORPUS, LL_PAIRS, tiny_llama256  # noqa: E402

from jbench.errors import BackendMissing, ModelError  # noqa: E402
from jbench.models.base import GenerationRequest, LoglikelihoodRequest  # noqa: E402
from jbench.models.load import ModelSpec  # noqa: E402

llama_cpp = pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")

REQS = [LoglikelihoodRequest(c, x) for c, x in LL_PAIRS]
GENS = [GenerationRequest("質問：猫はどこで本を読みますか？\n答え：", "\n", 12),
        GenerationRequest("先生は学校で", "。", 10),
        GenerationRequest("", "。", 6)]


@pytest.fixture(scope="module")
def src() -> Path:
    return tiny_llama256()


@pytest.fixture(scope="module")
def hf(src: Path):
    from jbench.models.hf import HFScorer

    return HFScorer(src, use_fast=False)


@pytest.fixture(scope="module")
def ref(hf) -> list[float]:
    return hf.loglikelihood(REQS)


@pytest.fixture(scope="module")
def gguf_files(src: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from jbench.quantize import quantize

    out = tmp_path_factory.mktemp("gguf")
    paths = quantize(src, out, method="gguf", gguf_types=("f32", "q8_0", "q4_k_m"))
    return {p.name.rsplit("-", 1)[1].removesuffix(".gguf"): p for p in paths}


def _scorer(path: Path, **extra):
    from jbench.models.gguf import load_variant

    return load_variant(str(path), ModelSpec(model=str(path), variant="gguf", extra=extra), use_fast=False)


def _deltas(ll: list[float], ref: list[float]) -> tuple[float, float]:
    d = [abs(a - b) for a, b in zip(ll, ref)]
    return sum(d) / len(d), max(d)


def test_export_files_and_record(gguf_files: dict[str, Path], src: Path) -> None:
    assert set(gguf_files) == {"f32", "q8_0", "q4_k_m"}
    out = gguf_files["f32"].parent
    rec = json.loads((out / "jbench_quantize.json").read_text())
    assert rec["method"] == "gguf" and rec["gguf_types"] == ["f32", "q8_0", "q4_k_m"]
    assert rec["gguf_f32_max_abs_logit_diff"] < 1e-3
    assert (out / "tokenizer.model").read_bytes() == (src / "tokenizer.model").read_bytes()
    assert gguf_files["q4_k_m"].stat().st_size < gguf_files["q8_0"].stat().st_size < gguf_files["f32"].stat().st_size
    import gguf

    types = {t.tensor_type.name for t in gguf.GGUFReader(gguf_files["q4_k_m"]).tensors}
    assert "Q4_K" in types  # hidden 256: the real K-quant path, not the q5_0/q8_0 fallbacks of narrow rows


def test_f32_matches_hf(gguf_files: dict[str, Path], src: Path, ref: list[float]) -> None:
    sc = _scorer(gguf_files["f32"], tokenizer=str(src))
    mean, mx = _deltas(sc.loglikelihood(REQS), ref)
    print(f"\n[gguf f32 via llama.cpp] mean|dLL|={mean:.2e} max|dLL|={mx:.2e}")
    assert mx < 1e-3
    assert sc.vocab_agreement == 1.0 and sc.vocab_check.mismatches == 0 and sc.vocab_check.probe_equal
    assert sc.tokenizer_source == str(src)
    assert sc.max_length == 2048  # the GGUF's context_length = HF max_position_embeddings


def test_quantized_types_deltas(gguf_files: dict[str, Path], src: Path, ref: list[float]) -> None:
    """Q8_0 is close (bound); Q4_K_M is reported, and must be a real (non-zero, sane) perturbation."""
    q8 = _deltas(_scorer(gguf_files["q8_0"], tokenizer=str(src)).loglikelihood(REQS), ref)
    q4 = _deltas(_scorer(gguf_files["q4_k_m"], tokenizer=str(src)).loglikelihood(REQS), ref)
    print(f"\n[gguf q8_0]   mean|dLL|={q8[0]:.4f} max|dLL|={q8[1]:.4f}"
          f"\n[gguf q4_k_m] mean|dLL|={q4[0]:.4f} max|dLL|={q4[1]:.4f}")
    assert 0 < q8[0] < 0.1  # measured 0.032
    assert q8[0] < q4[0] < 2.0  # measured 0.65 (8-bit << 4-bit)


def test_generation_equals_hf_greedy(gguf_files: dict[str, Path], src: Path, hf) -> None:
    sc = _scorer(gguf_files["f32"], tokenizer=str(src))
    assert sc.generate(GENS) == hf.generate(GENS)


def test_generation_repetition_penalty_parity(gguf_files: dict[str, Path], src: Path, tmp_path: Path) -> None:
    """A generation_config repetition_penalty is applied by both backends (the reference's generate applied it)."""
    from jbench.models.hf import HFScorer

    d = tmp_path / "rp"
    d.mkdir()
    for f in src.iterdir():
        if f.is_file() and f.name != "generation_config.json":
            (d / f.name).symlink_to(f)
    gen_cfg = json.loads((src / "generation_config.json").read_text())
    (d / "generation_config.json").write_text(json.dumps({**gen_cfg, "repetition_penalty": 1.5}))
    hf_rp = HFScorer(d, use_fast=False)
    assert hf_rp.repetition_penalty == 1.5
    sc = _scorer(gguf_files["f32"], tokenizer=str(d))
    assert sc.repetition_penalty == 1.5
    assert sc.generate(GENS) == hf_rp.generate(GENS)
    assert sc.generate(GENS) != _scorer(gguf_files["f32"], tokenizer=str(src)).generate(GENS)


def test_prefix_sharing_is_exact(gguf_files: dict[str, Path], src: Path) -> None:
    """Scoring a batch (shared prefixes reused from the KV cache) equals scoring each request on a fresh context."""
    sc = _scorer(gguf_files["q8_0"], tokenizer=str(src))
    batch = sc.loglikelihood(REQS)
    shared_tokens = sc.tokens_processed
    single = []
    for r in REQS:
        sc._evaluated = []  # forget the cache: full evaluation
        single.append(sc.loglikelihood([r])[0])
    assert batch == pytest.approx(single, abs=1e-4)
    full = sum(len(sc.tokenizer.encode(c or "")) + len(sc.tokenizer.encode(x)) for c, x in LL_PAIRS)
    assert shared_tokens < full


def test_own_vocabulary_fallback(gguf_files: dict[str, Path], tmp_path: Path, ref: list[float],
                                 caplog: pytest.LogCaptureFixture) -> None:
    """Without the original tokenizer the GGUF's vocabulary is used, with a warning."""
    lone = tmp_path / "m.gguf"
    shutil.copy(gguf_files["f32"], lone)
    with caplog.at_level(logging.WARNING, logger="jbench.models.gguf"):
        sc = _scorer(lone)
    assert sc.tokenizer_source == "gguf" and sc.tokenizer.kind == "gguf"
    assert "no original tokenizer" in caplog.text
    # the tiny model's Llama-2-style BPE is reproduced by llama.cpp's SPM tokenizer on these texts
    assert _deltas(sc.loglikelihood(REQS), ref)[1] < 1e-3


def test_tokenizer_next_to_gguf_is_used(gguf_files: dict[str, Path]) -> None:
    sc = _scorer(gguf_files["f32"])
    assert sc.tokenizer_source == str(gguf_files["f32"].parent) and sc.tokenizer.kind == "sentencepiece"


def test_vocab_mismatch_is_reported(gguf_files: dict[str, Path], tmp_path: Path,
                                    caplog: pytest.LogCaptureFixture) -> None:
    from jbench.tiny import build_tiny_model

    other = build_tiny_model(tmp_path / "other", arch="qwen2", texts=["まったく別の語彙です。", "違う文章"], vocab_size=300)
    with caplog.at_level(logging.WARNING, logger="jbench.models.gguf"):
        sc = _scorer(gguf_files["f32"], tokenizer=str(other))
    assert sc.vocab_agreement < 0.5 and sc.vocab_check.mismatches > 0
    assert "disagrees with the tokenizer" in caplog.text


def test_through_registry(gguf_files: dict[str, Path], src: Path, ref: list[float]) -> None:
    import jbench.models.registry  # noqa: F401 - the backend registry (gguf is built in)
    from jbench.models.load import load_scorer

    spec = ModelSpec(model=str(gguf_files["q8_0"]), variant="gguf", use_fast=False, extra={"tokenizer": str(src)})
    scorer, record = load_scorer(spec)
    assert record["variant"] == "gguf" and record["tokenizer"]["kind"] == "sentencepiece"
    assert len(scorer.loglikelihood(REQS[:2])) == 2


def test_directory_with_several_files_needs_a_name(gguf_files: dict[str, Path]) -> None:
    d = gguf_files["f32"].parent
    with pytest.raises(ModelError, match="gguf_file"):
        _scorer(d)
    sc = _scorer(d, gguf_file=gguf_files["q8_0"].name)
    assert sc.path == str(gguf_files["q8_0"])


def test_bad_kv_type(gguf_files: dict[str, Path]) -> None:
    with pytest.raises(ModelError, match="kv_type"):
        _scorer(gguf_files["f32"], kv_type="f8")


def test_f16_kv_cache_is_an_option(gguf_files: dict[str, Path], src: Path, ref: list[float]) -> None:
    """llama.cpp's default f16 KV cache moves logits visibly; that is why f32 is our default."""
    d = _deltas(_scorer(gguf_files["f32"], tokenizer=str(src), kv_type="f16").loglikelihood(REQS), ref)
    print(f"\n[gguf f32 weights, f16 KV cache] mean|dLL|={d[0]:.2e} max|dLL|={d[1]:.2e}")
    assert d[1] < 0.5


def test_missing_llama_cpp_gives_install_hint(monkeypatch: pytest.MonkeyPatch, gguf_files: dict[str, Path]) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(BackendMissing, match=r"jbench\[llamacpp\]"):
        _scorer(gguf_files["f32"])


def test_qwen2_export_matches_hf(tmp_path: Path) -> None:
    """Byte-level BPE vocabulary (gpt2-style GGUF tokenizer) and tied embeddings."""
    from jbench.models.hf import HFScorer
    from jbench.quantize import export_gguf
    from jbench.tiny import build_tiny_model

    qsrc = build_tiny_model(tmp_path / "qwen2", arch="qwen2", texts=CORPUS, seed=0)
    (f32,), diff = export_gguf(qsrc, tmp_path / "out", types=("f32",))
    assert diff is not None and diff < 1e-3
    sc = _scorer(f32, tokenizer=str(qsrc))
    assert sc.vocab_agreement == 1.0
    r = HFScorer(qsrc).loglikelihood(REQS)
    assert _deltas(sc.loglikelihood(REQS), r)[1] < 1e-3


def test_non_llama_export_is_refused(tmp_path: Path) -> None:
    from jbench.quantize import export_gguf
    from jbench.tiny import build_tiny_model

    neox = build_tiny_model(tmp_path / "neox", arch="gpt_neox", texts=["猫は公園で本を読みます。"] * 4)
    with pytest.raises(ModelError, match="Llama-family"):
        export_gguf(neox, tmp_path / "out", types=("f32",))


def test_unknown_gguf_type(src: Path, tmp_path: Path) -> None:
    from jbench.quantize import export_gguf

    with pytest.raises(ModelError, match="unknown GGUF type"):
        export_gguf(src, tmp_path, types=("f32", "q9_z"))
