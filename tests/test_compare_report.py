"""The comparison report as users see it (issue 16): Japanese glyphs, the chance line, size on disk beside the
memory footprint, no empty "largest loss", KL units, header alignment, and `compare`'s progress lines."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import test_compare as tc
from jbench.compare import compare_runs
from jbench.compare.analysis import chance_line
from jbench.model_files import checkpoint_disk_bytes

JNLI = "jnli-1.3-0.3"
JA_MODEL = "/models/rinna-日本語モデル-1b"


def _set_model(run: Path, model: str, **resources: Any) -> Path:
    data = json.loads((run / "results.json").read_text(encoding="utf-8"))
    data["config"]["model"] = model
    if resources:
        data["config"]["resources"] = resources
    (run / "results.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return run


def _imbalanced_suite(noise: float, seed: int, **kw: Any) -> dict[str, Any]:
    """The hand-built suite with JNLI's gold labels made 60% entailment + a third of the rest, like the real data."""
    out = tc._suite(noise=noise, seed=seed, **kw)
    for r in out[JNLI]:
        if r["doc_index"] % 5 in (0, 1, 2):
            r["gold"] = 0
        r["acc"] = r["acc_norm"] = int(r["prediction"] == r["gold"])
    return out


@pytest.fixture()
def ja_runs(tmp_path: Path) -> dict[str, Any]:
    """An original and 7 variants of a model with a Japanese name; one variant always answers choice 1."""
    orig = _set_model(tc._write_run(tmp_path, "日本語-fp16", "fp16", _imbalanced_suite(0.0, 0)), JA_MODEL,
                      size_bytes=4e9, disk_bytes=4e9, peak_rss_mb=6000, load_s=3.0, tokens_per_s=40.0)
    names = ["int8", "int4", "bnb8", "bnb4", "gptq", "awq", "gguf"]
    variants = []
    for i, name in enumerate(names):
        kw = {"const": 1} if name == "int4" else {}
        run = tc._write_run(tmp_path, f"日本語-{name}", name, _imbalanced_suite(0.2 + 0.2 * i, i + 1, **kw))
        disk = 4e9 if name in ("int8", "int4", "bnb8", "bnb4") else 1.2e9  # on-the-fly variants load fp16 files
        variants.append(_set_model(run, JA_MODEL, size_bytes=4e9 / (2 + i % 3), disk_bytes=disk,
                                   peak_rss_mb=3000.0, load_s=2.0, tokens_per_s=30.0))
    return {"orig": orig, "variants": variants}


# --------------------------------------------------------------------------------------------------------------
# Japanese glyphs
# --------------------------------------------------------------------------------------------------------------


def _missing_glyph_warnings(draw: Any) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        draw()
    return [str(w.message) for w in caught if "missing from font" in str(w.message)]


def test_chart_with_a_japanese_model_name_has_no_missing_glyph(ja_runs: dict[str, Any], tmp_path: Path) -> None:
    rep = compare_runs(ja_runs["orig"], ja_runs["variants"][:2], iters=1000)
    assert "日本語" in rep.model
    png = tmp_path / "c.png"
    assert _missing_glyph_warnings(lambda: rep.plot(png)) == []
    assert png.stat().st_size > 10_000  # (the HTML embeds the same drawing: ComparisonReport._png_bytes)


def test_the_glyph_check_can_fail_without_the_japanese_font() -> None:
    """The detector above is real: DejaVu Sans alone does report the kanji as missing."""
    import io

    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def draw() -> None:
        with matplotlib.rc_context({"font.family": ["DejaVu Sans"]}):
            fig = Figure()
            FigureCanvasAgg(fig)
            fig.suptitle(JA_MODEL)
            fig.savefig(io.BytesIO(), format="png")

    assert _missing_glyph_warnings(draw)


def test_the_japanese_font_covers_every_character_of_the_names() -> None:
    from matplotlib.ft2font import FT2Font

    from jbench.jafont import _fontja_file, japanese_font_name

    assert japanese_font_name() == "IPAexGothic"
    cmap = FT2Font(str(_fontja_file())).get_charmap()
    text = "rinna 日本語モデル ｶﾀｶﾅ 量子化 〜・「」"
    assert [c for c in text if ord(c) >= 0x2E80 and ord(c) not in cmap] == []


def test_html_embeds_a_subset_of_the_japanese_font(ja_runs: dict[str, Any], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from jbench.jafont import EMBEDDED_FAMILY, embedded_font_css

    rep = compare_runs(ja_runs["orig"], ja_runs["variants"][:1], iters=1000)
    monkeypatch.setattr(type(rep), "_png_bytes", lambda self: b"")
    page = rep.write_html(tmp_path / "c.html").read_text(encoding="utf-8")
    assert f'@font-face{{font-family:"{EMBEDDED_FAMILY}"' in page and "data:font/ttf;base64," in page
    assert embedded_font_css("plain ASCII only") == ""
    assert len(embedded_font_css("日本語")) < 30_000  # a subset, not the 6 MB font


# --------------------------------------------------------------------------------------------------------------
# Chance line
# --------------------------------------------------------------------------------------------------------------


def _mc(golds: list[int], k: int) -> list[dict[str, Any]]:
    return [{"gold": g, "prediction": 0, "loglikelihoods": [0.0] * k} for g in golds]


def test_chance_line_is_the_majority_class_rate_when_labels_are_imbalanced() -> None:
    value, label = chance_line(_mc([0] * 55 + [1] * 25 + [2] * 20, 3))  # JNLI-like: 55% entailment
    assert value == pytest.approx(55.0) and label == "majority class 55%"
    value, label = chance_line(_mc([0, 1, 2] * 20, 3))
    assert value == pytest.approx(100 / 3) and label == "chance 1/3"
    # a small sample's unevenness is not imbalance (chi-square at 1%)
    value, label = chance_line(_mc([0, 0, 0, 1, 1, 2, 2, 3, 4, 4], 5))
    assert value == pytest.approx(20.0) and label == "chance 1/5"


def test_imbalanced_task_row_uses_and_names_the_majority_rate(ja_runs: dict[str, Any], tmp_path: Path) -> None:
    rep = compare_runs(ja_runs["orig"], ja_runs["variants"][:2], iters=1000)
    golds = [r["gold"] for r in json.loads("[" + ",".join(
        (ja_runs["orig"] / f"samples_{JNLI}.jsonl").read_text(encoding="utf-8").splitlines()) + "]")]
    majority = 100 * max(np.bincount(golds)) / len(golds)
    row = rep.row(JNLI, "int8")
    assert majority > 100 / 3 + 20
    assert row.chance == pytest.approx(majority) and row.chance_label == f"majority class {majority:.0f}%"
    assert rep.row("jcommonsenseqa-1.1-0.3", "int8").chance_label == "chance 1/5"
    assert rep.to_dict()["rows"][0]["chance_label"]
    # a variant answering one class (int4) is collapsed against the majority rate, and says so
    bad = rep.row(JNLI, "int4")
    assert bad.collapsed and "majority class" in (bad.collapse_reason or "")


# --------------------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------------------


def test_no_largest_loss_row_when_nothing_was_lost(tmp_path: Path) -> None:
    same = tc._suite(noise=0.0, seed=0)
    orig = tc._write_run(tmp_path, "o", "fp16", same)
    twin = tc._write_run(tmp_path, "v", "int8", same)
    md = compare_runs(orig, [twin], iters=1000).to_markdown()
    assert "largest loss" not in md and "+0.00 pts" not in md
    lossy = tc._write_run(tmp_path, "w", "int4", tc._suite(noise=1.5, seed=2, gen_wrong_every=3))
    md = compare_runs(orig, [lossy], iters=1000).to_markdown()
    assert re.search(r"\| largest loss \|  \| \S+: -\d+\.\d\d pts", md)


def test_size_on_disk_and_memory_footprint_are_separate(ja_runs: dict[str, Any]) -> None:
    rep = compare_runs(ja_runs["orig"], ja_runs["variants"][:5], iters=1000)
    md = rep.to_markdown()
    assert "| run | variant / dtype | size on disk | weights in memory | peak memory | load time | throughput |" in md
    int8_row = next(ln for ln in md.splitlines() if ln.startswith("| 日本語-int8 |"))
    # int8 quantizes on the fly: the same files on disk as the original, half the memory
    assert "3.73 GiB (100% of original)" in int8_row and "1.86 GiB (50% of original)" in int8_row
    gptq_row = next(ln for ln in md.splitlines() if ln.startswith("| 日本語-gptq |"))
    assert "1.12 GiB (30% of original)" in gptq_row
    card = md.split("## int8")[1].split("##")[0]
    assert "| size on disk | 3.73 GiB | 3.73 GiB (100% of original) |" in card
    assert "| weights in memory | 3.73 GiB | 1.86 GiB (50% of original) |" in card


def test_kl_has_its_unit_and_headers_align_with_their_cells(ja_runs: dict[str, Any], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    rep = compare_runs(ja_runs["orig"], ja_runs["variants"][:2], iters=1000)
    monkeypatch.setattr(type(rep), "_png_bytes", lambda self: b"")  # the tables are under test, not the chart
    md = rep.to_markdown()
    head, rule = [ln for ln in md.splitlines() if ln.startswith("| task | variant |")][0], None
    lines = md.splitlines()
    rule = lines[lines.index(head) + 1]
    cols = [c.strip() for c in head.strip("|").split("|")]
    aligns = dict(zip(cols, rule.strip("|").split("|")))
    assert "mean KL (nats)" in cols and "in nats" in md
    assert aligns["task"] == "---" and aligns["CI method"] == "---" and aligns["n"] == "---:"
    assert aligns["Δ pts"] == "---:" and aligns["95% CI"] == "---:" and aligns["mean KL (nats)"] == "---:"
    page = rep.write_html(tmp_path / "c.html").read_text(encoding="utf-8")
    ths = re.findall(r"<th( class=\"num\")?>([^<]*)</th>", page.split("<h2>Per-task comparison</h2>")[1])
    first_row = re.search(r"<tr class=\"[^\"]*\">(.*?)</tr>", page.split("<tbody>")[1]).group(1)
    tds = re.findall(r"<td( class=\"num\")?>", first_row)
    assert [bool(c) for c, _ in ths][: len(tds)] == [bool(c) for c in tds]  # each header aligns as its cells
    assert dict((h, bool(c)) for c, h in ths)["task"] is False and dict((h, bool(c)) for c, h in ths)["n"] is True


def test_chart_with_seven_variants_states_metric_and_n(ja_runs: dict[str, Any], tmp_path: Path) -> None:
    from jbench.compare.chart import comparison_figure
    from jbench.jafont import plot_fonts

    rep = compare_runs(ja_runs["orig"], ja_runs["variants"], iters=1000)
    with plot_fonts():
        fig = comparison_figure(rep)
        fig.canvas.draw()
        ax, dax = fig.axes
        ticks = [t.get_text() for t in dax.get_xticklabels()]
        assert any("acc, n=60" in t and "majority class" in t for t in ticks)
        assert any("exact_match, n=60" in t for t in ticks) and any("chance 1/5" in t for t in ticks)
        renderer = fig.canvas.get_renderer()
        for a in (ax, dax):  # every text drawn in an axes stays inside its frame, none is rotated
            frame = a.get_window_extent(renderer)
            for t in a.texts:
                if t.get_visible() and t.get_text():
                    box = t.get_window_extent(renderer)
                    assert t.get_rotation() == 0
                    assert frame.x0 - 1 <= box.x0 and box.x1 <= frame.x1 + 1 and box.y1 <= frame.y1 + 1, t
        assert fig.get_figwidth() <= 18


# --------------------------------------------------------------------------------------------------------------
# Size on disk and progress
# --------------------------------------------------------------------------------------------------------------


def test_checkpoint_disk_bytes_sums_weight_files_only(tmp_path: Path) -> None:
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"x" * 1000)
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"x" * 500)
    (tmp_path / "config.json").write_text("{}" * 100)
    (tmp_path / "tokenizer.json").write_text("{}" * 1000)
    assert checkpoint_disk_bytes(str(tmp_path)) == 1500
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"g" * 321)
    assert checkpoint_disk_bytes(str(gguf)) == 321
    assert checkpoint_disk_bytes(str(tmp_path / "missing")) is None
    assert checkpoint_disk_bytes("no-such-owner/no-such-model") is None  # not in the HF cache: unknown, no download
    assert checkpoint_disk_bytes(None) is None


@pytest.mark.slow  # imports torchao (seconds)
def test_weights_memory_counts_quantized_storage() -> None:
    """torchao's int8 weights report their float dtype; the footprint counts the int8 data they hold."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchao")
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    from jbench.execute import weights_memory_bytes

    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.Linear(512, 256))
    fp32 = weights_memory_bytes(model)
    assert fp32 == 4 * (256 * 512 * 2 + 512 + 256)
    quantize_(model, Int8WeightOnlyConfig())
    assert weights_memory_bytes(model) < 0.3 * fp32


def test_run_or_reuse_prints_the_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dataclasses import asdict

    from jbench.plan import RunPlan
    from jbench.run_identity import current_weights
    from jbench.variant_runs import run_or_reuse

    plan = RunPlan(model={"model": None, "variant": "int8"}, tasks=["xwinograd_ja"], num_fewshot=[0], data_dir="d")
    run = tmp_path / "tiny-int8"
    run.mkdir()
    # a finished run records its plan and the weights it scored (reuse needs both to match)
    (run / "results.json").write_text(json.dumps({"plan": asdict(plan), "config": current_weights(plan.model)}),
                                      encoding="utf-8")
    assert run_or_reuse(plan, run, show_progress=False, step="variant 2 of 7") == run
    assert f"[variant 2 of 7] int8: reusing {run}" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_prints_variant_k_of_n(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "jbench.cli", "compare", "--variants", "int8 bnb8",
                           "--tasks", "xwinograd_ja", "--limit", "4", "--output-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("[")]
    assert [ln.split("]")[0] + "]" for ln in lines] == ["[original]", "[variant 1 of 2]", "[variant 2 of 2]"], lines
    assert "int8: running" in lines[1] and "bnb8: running" in lines[2]
    again = subprocess.run([sys.executable, "-m", "jbench.cli", "compare", "--variants", "int8 bnb8",
                            "--tasks", "xwinograd_ja", "--limit", "4", "--output-dir", str(tmp_path)],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "[variant 2 of 2] bnb8: reusing" in again.stderr
    report = json.loads(next((tmp_path / "compare").glob("*/compare.json")).read_text(encoding="utf-8"))
    assert report["original"]["disk_bytes"] and report["variants"][0]["disk_bytes"] == report["original"]["disk_bytes"]


def test_readme_tables_have_as_many_cells_as_their_header() -> None:
    """Every markdown table of the README (the comparison excerpt included) is well-formed: no row with fewer or
    more cells than its header (pipes inside code spans and escaped pipes are not cell borders)."""
    lines = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8").splitlines()

    def cells(line: str) -> int:
        return len(re.sub(r"`[^`]*`", "C", line.strip()).replace("\\|", "P").strip("|").split("|"))

    bad, in_code, i = [], False, 0
    while i < len(lines):
        if lines[i].startswith("```"):
            in_code = not in_code
        if not in_code and lines[i].startswith("|") and i + 1 < len(lines) \
                and re.match(r"^\|[\s:|-]+\|$", lines[i + 1]):
            n, j = cells(lines[i]), i + 1
            while j < len(lines) and lines[j].startswith("|"):
                if cells(lines[j]) != n:
                    bad.append(f"README.md:{j + 1}: {cells(lines[j])} cells under a {n}-column header")
                j += 1
            i = j
            continue
        i += 1
    assert bad == []
