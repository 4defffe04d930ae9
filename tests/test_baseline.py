"""The regression gate: baselines are reviewable, exact mode catches one-character prompt changes, stat mode is
n-aware, and runs of different things are refused (exit 2) with the field named."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from jbench.baseline import (check_run, load_baseline, save_baseline, wilson_lowest_passing, wilson_upper,
                             z_one_sided)
from jbench.errors import CheckInputError
from jbench.results import write_json, write_jsonl

JCQA = "jcommonsenseqa-1.1-0.3"
JSQUAD = "jsquad-1.1-0.3"
TOKENIZER = {"class": "T5Tokenizer (sentencepiece)", "kind": "sentencepiece", "vocab_size": 32000,
             "vocab_sha256": "1" * 64, "special_tokens_sha256": "2" * 64}
SHA = {"jcommonsenseqa/valid-v1.1.json": "a" * 64, "jcommonsenseqa/train-v1.1.json": "b" * 64,
       "jsquad/valid-v1.1.json": "c" * 64, "jsquad/train-v1.1.json": "d" * 64}


def _jcqa_rows(n: int, correct: int, seed: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        gold = (i * 7) % 5
        pred = gold if i < correct else (gold + 1 + i % 4) % 5
        lls = [round(-rnd.uniform(2.0, 9.0), 6) - 0.123456789 for _ in range(5)]
        lls[pred] = max(lls) + 0.5
        choices = [f"選択肢{i}-{c}" for c in range(5)]
        prompt = ("以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。要求を適切に満たす応答を書きなさい。\n\n"
                  "### 指示:\n与えられた選択肢の中から、最適な答えを選んでください。出力は以下から選択してください：\n"
                  + "".join(f"- {c}\n" for c in choices) + f"\n### 入力:\n質問{i}は何ですか？\n\n### 応答:\n")
        rows.append({"doc_index": i, "doc_id": str(8000 + i), "native_index": i, "shot_ids": [1, 2, 3],
                     "prompt": prompt, "continuations": choices, "loglikelihoods": lls, "prediction": pred,
                     "gold": gold, "acc": float(pred == gold), "acc_norm": float(pred == gold), "notes": []})
    return rows


def _jsquad_rows(n: int, correct: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        gold = f"東京{i}"
        pred = gold if i < correct else f"大阪{i}"
        rows.append({"doc_index": i, "doc_id": f"a{i:04d}", "native_index": i, "shot_ids": [5, 6],
                     "prompt": f"[題名]:文書{i}\n[問題]:首都はどこ？\n[答え]:", "until": "\n", "max_gen_tokens": 25,
                     "prediction": pred, "golds": [gold], "exact_match": 100.0 * (pred == gold),
                     "f1": 100.0 * (pred == gold), "notes": []})
    return rows


def _acc(rows: list[dict[str, Any]], key: str) -> tuple[float, float]:
    vals = [r[key] for r in rows]
    p = sum(vals) / len(vals)
    se = math.sqrt(sum((v - p) ** 2 for v in vals) / (len(vals) - 1) / len(vals))
    return p, se


def make_run(root: Path, name: str, *, n: int = 40, correct: int = 18, sq_n: int = 20, sq_correct: int = 6,
             seed: int = 0, edit=None) -> Path:
    """A realistic two-task run directory (JCQA 3-shot, JSQuAD 2-shot); ``edit(record, jcqa, jsquad)`` tweaks it."""
    run = root / name
    jcqa, jsquad = _jcqa_rows(n, correct, seed), _jsquad_rows(sq_n, sq_correct)
    record: dict[str, Any] = {
        "results": {},
        "versions": {JCQA: 1.1, JSQUAD: 1.1},
        "config": {
            "model": "rinna/japanese-gpt-neox-small", "model_args": "pretrained=rinna/japanese-gpt-neox-small",
            "variant": "fp32", "dtype": "float32", "weights_fingerprint": "sha256:1234abcd",
            "tasks": [JCQA, JSQUAD], "num_fewshot": [3, 2], "prompt_versions": {JCQA: "0.3", JSQUAD: "0.3"},
            "limit": None,
            "data": {JCQA: [{"path": p, "sha256": s, "records": 1119, "expected": "official", "mismatch": None}
                            for p, s in SHA.items() if p.startswith("jcommonsenseqa")],
                     JSQUAD: [{"path": p, "sha256": s, "records": 4442, "expected": "official", "mismatch": None}
                              for p, s in SHA.items() if p.startswith("jsquad")]},
            "jbench_version": "0.1.0", "git_commit": "deadbeef", "tokenizer": dict(TOKENIZER),
            "environment": {"kernel_path": {"cpu": "AMD EPYC 7B13", "isa": ["avx2", "fma"], "arch": "x86_64",
                                            "cpu_capability": "AVX2", "torch": "2.13.0", "mkl": "2024.2",
                                            "onednn": "v3.12.0", "num_threads": 8, "env": {}}},
        },
        "n_samples": {},
    }
    if edit:
        edit(record, jcqa, jsquad)
    acc, acc_se = _acc(jcqa, "acc")
    norm, norm_se = _acc(jcqa, "acc_norm")
    record["results"][JCQA] = {"acc": acc, "acc_stderr": acc_se, "acc_norm": norm, "acc_norm_stderr": norm_se}
    record["results"][JSQUAD] = {"exact_match": sum(r["exact_match"] for r in jsquad) / len(jsquad),
                                 "f1": sum(r["f1"] for r in jsquad) / len(jsquad)}
    record["n_samples"] = {JCQA: len(jcqa), JSQUAD: len(jsquad)}
    write_jsonl(run / f"samples_{JCQA}.jsonl", jcqa)
    write_jsonl(run / f"samples_{JSQUAD}.jsonl", jsquad)
    write_json(run / "results.json", record)
    return run


@pytest.fixture()
def base(tmp_path: Path) -> tuple[Path, Path]:
    run = make_run(tmp_path, "base")
    return run, save_baseline(run, "rinna-small-fp32", baselines_dir=tmp_path / "baselines")


def test_saved_baseline_is_small_and_reviewable(base: tuple[Path, Path]) -> None:
    run, path = base
    text = path.read_text(encoding="utf-8")
    doc = json.loads(text)
    assert path.name == "rinna-small-fp32.json"
    assert doc["format"] == "jbench-baseline/1" and doc["jbench_version"] == "0.1.0"
    assert doc["model"] == {"model": "rinna/japanese-gpt-neox-small",
                            "model_args": "pretrained=rinna/japanese-gpt-neox-small", "variant": "fp32",
                            "dtype": "float32", "weights_fingerprint": "sha256:1234abcd"}
    t = doc["tasks"][JCQA]
    assert (t["version"], t["prompt_version"], t["num_fewshot"], t["n"]) == (1.1, "0.3", 3, 40)
    assert t["metrics"]["acc"]["value"] == pytest.approx(0.45) and t["metrics"]["acc"]["stderr"] > 0
    assert t["data_sha256"] == {"jcommonsenseqa/valid-v1.1.json": "a" * 64, "jcommonsenseqa/train-v1.1.json": "b" * 64}
    assert doc["tasks"][JSQUAD]["metrics"]["exact_match"] == {"value": 30.0, "stderr": None}
    assert doc["tasks"][JSQUAD]["num_fewshot"] == 2
    # one line per example, sorted by doc_index, loglikelihoods to the last digit, no full prompt text
    samples = [json.loads(line) for line in (run / f"samples_{JCQA}.jsonl").read_text("utf-8").splitlines()]
    ex_lines = [line.strip().rstrip(",") for line in text.splitlines() if line.strip().startswith('{"doc_id"')]
    assert len(ex_lines) == 40 + 20
    first = json.loads(ex_lines[0])
    assert first["doc_id"] == "8000" and first["doc_index"] == 0 and first["prediction"] == samples[0]["prediction"]
    assert first["loglikelihoods"] == samples[0]["loglikelihoods"]  # exact floats survive the round trip
    assert len(first["prompt_sha"]) == 16 and "指示" not in text
    assert [e["doc_index"] for e in t["examples"]] == list(range(40))
    # stable: saving again gives byte-identical output (sorted keys, fixed formatting)
    again = save_baseline(run, "again", baselines_dir=path.parent)
    assert again.read_text("utf-8").replace('"again"', '"rinna-small-fp32"') == text
    assert len(text.splitlines()) < 200


def test_exact_passes_for_identical_run(tmp_path: Path, base: tuple[Path, Path]) -> None:
    _, path = base
    rerun = make_run(tmp_path, "rerun")
    report = check_run(rerun, path, mode="exact")
    md = report.to_markdown()
    assert report.exit_code == 0, md
    assert "| task | metric | baseline | now | Δ | allowed band | verdict |" in md
    assert f"| {JCQA} | acc | 0.45 | 0.45 | +0.0 | exact (Δ = 0) | pass |" in md
    assert f"| {JCQA} | examples | 40 | 40 | 0 differ | identical (LL ±0.0001) | pass |" in md
    # the baseline can also be named (under baselines_dir) or be another run directory
    assert check_run(rerun, "rinna-small-fp32", mode="exact", baselines_dir=path.parent).exit_code == 0
    assert check_run(rerun, tmp_path / "base", mode="exact").exit_code == 0


def _one_char_and_prediction(record: dict[str, Any], jcqa: list[dict[str, Any]], jsquad: list[dict[str, Any]]) -> None:
    p = jcqa[7]["prompt"]
    i = p.index("最適な答え")
    jcqa[7]["prompt"] = p[:i] + "最良" + p[i + 2:]  # 最適 -> 最良: one character changed
    jsquad[3].update(prediction="京都3", exact_match=0.0, f1=0.0)


def test_exact_fails_on_one_character_prompt_change(tmp_path: Path, base: tuple[Path, Path]) -> None:
    _, path = base
    changed = make_run(tmp_path, "changed", edit=_one_char_and_prediction)
    report = check_run(changed, path, mode="exact")
    md = report.to_markdown()
    assert report.exit_code == 1, md
    offset = _jcqa_rows(40, 18, 0)[7]["prompt"].index("最適") + 1
    assert f"`{JCQA}` doc '8007' (doc_index 7)" in md
    assert f"prompt first differs at character {offset} (line 4, column 15)" in md
    assert "、最適な答えを" in md and "、最良な答えを" in md  # both sides shown around the change
    assert f"`{JSQUAD}` doc 'a0003' (doc_index 3): prediction '東京3' vs now '京都3'" in md
    assert f"| {JCQA} | examples | 40 | 40 | 1 differ | identical (LL ±0.0001) | **REGRESSION** |" in md
    # the EM drop (30.0 -> 25.0) is caught as a metric value too
    assert f"| {JSQUAD} | exact_match | 30.0 | 25.0 |" in md and "**REGRESSION**" in md


def test_exact_without_source_run_still_names_the_doc(tmp_path: Path, base: tuple[Path, Path]) -> None:
    run, path = base
    for f in run.iterdir():
        f.unlink()
    run.rmdir()
    changed = make_run(tmp_path, "changed", edit=_one_char_and_prediction)
    md = check_run(changed, path, mode="exact").to_markdown()
    assert f"`{JCQA}` doc '8007' (doc_index 7): prompt hash" in md and "source run is not on disk" in md


def _nudge(delta: float, *, cpu: str = "Intel(R) Xeon(R) Processor"):
    """An edit that moves one loglikelihood by ``delta`` and records another machine (as a run elsewhere would)."""
    def edit(record: dict[str, Any], jcqa: list[dict[str, Any]], jsquad: list[dict[str, Any]]) -> None:
        jcqa[0]["loglikelihoods"][1] += delta
        record["config"]["environment"]["kernel_path"].update(cpu=cpu, cpu_capability="AVX512", num_threads=2)
    return edit


def test_exact_tolerates_kernel_noise_in_loglikelihoods(tmp_path: Path, base: tuple[Path, Path]) -> None:
    """fp32 CPU kernels differ in the 7th digit across machines: within LL_ATOL that is a pass (and reported)."""
    from jbench.baseline import LL_ATOL

    _, path = base
    assert LL_ATOL == 1e-4
    for i, delta in enumerate((2e-6, -5e-5, 0.99 * LL_ATOL)):
        report = check_run(make_run(tmp_path, f"noise{i}", edit=_nudge(delta)), path, mode="exact")
        md = report.to_markdown()
        assert report.exit_code == 0, md
        assert f"largest per-example loglikelihood |Δ| vs the baseline: {abs(delta):.3g}" in md


def test_exact_catches_a_real_loglikelihood_change_and_names_both_machines(tmp_path: Path,
                                                                          base: tuple[Path, Path]) -> None:
    _, path = base
    report = check_run(make_run(tmp_path, "moved", edit=_nudge(3e-4)), path, mode="exact")
    md = report.to_markdown()
    assert report.exit_code == 1, md
    assert "loglikelihood[1]" in md and "> tolerance 0.0001" in md
    assert ("baseline machine: AMD EPYC 7B13, avx2+fma, ATen AVX2, torch 2.13.0, MKL 2024.2, oneDNN v3.12.0, "
            "8 threads") in md
    assert "this run's machine: Intel(R) Xeon(R) Processor, avx2+fma, ATen AVX512" in md
    assert "machines: baseline made on AMD EPYC 7B13" in md and "this run on Intel(R) Xeon(R) Processor" in md
    # NaN is never a pass: a non-finite loglikelihood makes the samples file unusable (exit 2, not 1: exit 1 means
    # only that a number regressed), and the error names the file, the line and the field
    with pytest.raises(CheckInputError) as err:
        check_run(make_run(tmp_path, "nan", edit=_nudge(math.nan)), path, mode="exact")
    assert err.value.exit_code == 2 and "field `loglikelihoods[1]` is a number (nan)" in err.value.what
    assert err.value.where is not None and err.value.where.endswith(f"samples_{JCQA}.jsonl:1") and err.value.fix


def test_stat_passes_small_noise_and_fails_clear_shift_n_aware(tmp_path: Path) -> None:
    bdir = tmp_path / "baselines"
    save_baseline(make_run(tmp_path, "full", n=1119, correct=504, sq_n=400, sq_correct=120), "full",
                  baselines_dir=bdir)  # acc 0.4504, EM 30.0
    noisy = make_run(tmp_path, "noisy", n=1119, correct=490, sq_n=400, sq_correct=113, seed=1)  # 0.438, 28.25
    report = check_run(noisy, "full", mode="stat", baselines_dir=bdir)
    assert report.exit_code == 0, report.to_markdown()

    shifted = make_run(tmp_path, "shifted", n=1119, correct=224, sq_n=400, sq_correct=120)  # acc 0.20
    report = check_run(shifted, "full", mode="stat", baselines_dir=bdir)
    md = report.to_markdown()
    assert report.exit_code == 1, md
    assert [(r.task, r.metric) for r in report.regressions] == [(JCQA, "acc"), (JCQA, "acc_norm")]
    assert "Wilson upper bound" in md and "n=1119" in md
    z = z_one_sided(0.95)
    assert f"≥ {wilson_lowest_passing(504 / 1119, 1119, z):.4f} (Wilson 95%, n=1119)" in md

    small = make_run(tmp_path, "small", n=10, correct=2, sq_n=10, sq_correct=3)  # same 0.20, but n=10
    report = check_run(small, "full", mode="stat", baselines_dir=bdir)
    assert report.exit_code == 0, report.to_markdown()

    better = make_run(tmp_path, "better", n=1119, correct=700, sq_n=400, sq_correct=200)
    report = check_run(better, "full", mode="stat", baselines_dir=bdir)
    assert report.exit_code == 0 and {r.verdict for r in report.rows} == {"improved"}


def test_stat_rtol_and_em_scale(tmp_path: Path) -> None:
    bdir = tmp_path / "baselines"
    save_baseline(make_run(tmp_path, "full", n=1119, correct=504, sq_n=1000, sq_correct=300), "full",
                  baselines_dir=bdir)
    em_drop = make_run(tmp_path, "em_drop", n=1119, correct=504, sq_n=1000, sq_correct=250)  # EM 30 -> 25
    report = check_run(em_drop, "full", mode="stat", baselines_dir=bdir)
    assert [(r.task, r.metric) for r in report.regressions] == [(JSQUAD, "exact_match"), (JSQUAD, "f1")]
    # a 20% relative tolerance lets the same drop through
    assert check_run(em_drop, "full", mode="stat", baselines_dir=bdir, rtol=0.2).exit_code == 0


def test_stat_band_rule_for_mcc(tmp_path: Path) -> None:
    bdir = tmp_path / "baselines"

    def with_mcc(value: float, se: float):
        def edit(record: dict[str, Any], jcqa: list[dict[str, Any]], jsquad: list[dict[str, Any]]) -> None:
            record["versions"]["jnli-1.3-0.3"] = 1.3
            record["results"]["jnli-1.3-0.3"] = {"mcc": value, "mcc_stderr": se}
            record["n_samples"]["jnli-1.3-0.3"] = 2434
            record["config"]["prompt_versions"]["jnli-1.3-0.3"] = "0.3"
            record["config"]["tasks"].append("jnli-1.3-0.3")
            record["config"]["num_fewshot"].append(3)
        return edit

    save_baseline(make_run(tmp_path, "b", edit=with_mcc(0.30, 0.02)), "b", baselines_dir=bdir,
                  include_predictions=False)
    ok = check_run(make_run(tmp_path, "ok", edit=with_mcc(0.25, 0.02)), "b", mode="stat", baselines_dir=bdir)
    assert ok.exit_code == 0, ok.to_markdown()  # 0.25 >= 0.30 - 2*sqrt(2)*0.02 = 0.2434
    assert "≥ 0.2434 (2·√(se²+se²) = 0.0566, stderr)" in ok.to_markdown()
    bad = check_run(make_run(tmp_path, "bad", edit=with_mcc(0.24, 0.02)), "b", mode="stat", baselines_dir=bdir)
    assert [(r.task, r.metric) for r in bad.regressions] == [("jnli-1.3-0.3", "mcc")]


@pytest.mark.parametrize("field,edit", [
    ("data sha256 of jcommonsenseqa/valid-v1.1.json",
     lambda rec: rec["config"]["data"][JCQA][0].update(sha256="e" * 64)),
    ("task version", lambda rec: rec["versions"].update({JCQA: 1.2})),
    ("prompt version", lambda rec: rec["config"]["prompt_versions"].update({JCQA: "0.2"})),
    ("num_fewshot (shots)", lambda rec: rec["config"].update(num_fewshot=[2, 2])),
])
@pytest.mark.parametrize("mode", ["exact", "stat"])
def test_incomparable_runs_exit_2_naming_the_field(tmp_path: Path, base: tuple[Path, Path], field: str, edit,
                                                   mode: str) -> None:
    _, path = base
    other = make_run(tmp_path, "other", edit=lambda rec, jcqa, jsquad: edit(rec))
    report = check_run(other, path, mode=mode)
    md = report.to_markdown()
    assert report.exit_code == 2, md
    assert [(i.task, i.field) for i in report.incompatible] == [(JCQA, field)]
    assert f"`{JCQA}`: {field} differs (baseline" in md and "CANNOT COMPARE" in md
    assert f"| {JCQA} | acc | 0.45" in md and "**cannot compare**" in md


def test_shots_message_shows_both_values(tmp_path: Path, base: tuple[Path, Path]) -> None:
    _, path = base
    other = make_run(tmp_path, "other", edit=lambda rec, a, b: rec["config"].update(num_fewshot=[0, 2]))
    md = check_run(other, path, mode="stat").to_markdown()
    assert f"`{JCQA}`: num_fewshot (shots) differs (baseline 3 vs now 0)" in md


def test_missing_task_and_limit_in_exact_mode(tmp_path: Path, base: tuple[Path, Path]) -> None:
    _, path = base

    def drop_jsquad(record: dict[str, Any], jcqa: list[dict[str, Any]], jsquad: list[dict[str, Any]]) -> None:
        pass

    run = make_run(tmp_path, "one", edit=drop_jsquad)
    rec = json.loads((run / "results.json").read_text("utf-8"))
    del rec["results"][JSQUAD]
    write_json(run / "results.json", rec)
    report = check_run(run, path, mode="stat")
    assert report.exit_code == 2
    assert f"`{JSQUAD}`: task differs (baseline 'present' vs now 'missing from the run')" in report.to_markdown()

    limited = make_run(tmp_path, "limited", n=10, correct=4)
    assert check_run(limited, path, mode="exact").exit_code == 2  # exact needs the same examples
    assert check_run(limited, path, mode="stat").exit_code == 0   # stat is n-aware


def test_wilson_helpers_agree() -> None:
    z = z_one_sided(0.95)
    assert z == pytest.approx(1.6448536)
    for n in (10, 40, 1119):
        for target in (0.05, 0.45, 0.9):
            edge = wilson_lowest_passing(target, n, z)
            if edge > 0:  # the edge is exactly where the upper bound meets the target
                assert wilson_upper(edge, n, z) == pytest.approx(target, abs=1e-9)
            else:  # so noisy that even 0 cannot be called a drop
                assert wilson_upper(0.0, n, z) >= target
    assert wilson_upper(0.2, 10, z) > 0.45 > wilson_upper(0.2, 1119, z)
    assert load_baseline  # re-exported for the CLI


def test_stat_bootstraps_macro_f1_without_stderr(tmp_path: Path) -> None:
    """JNLI's macro_f1 carries no stderr: the band comes from a (deterministic) bootstrap over the samples."""
    from jbench.baseline import bootstrap_stderr

    task = "jnli-1.3-0.3"

    def jnli_run(name: str, correct: int, value: float) -> Path:
        def edit(record: dict[str, Any], jcqa: list[dict[str, Any]], jsquad: list[dict[str, Any]]) -> None:
            record["versions"][task] = 1.3
            record["results"][task] = {"macro_f1": value}
            record["n_samples"][task] = 600
            record["config"]["prompt_versions"][task] = "0.3"
            record["config"]["tasks"].append(task)
            record["config"]["num_fewshot"].append(3)
        run = make_run(tmp_path, name, edit=edit)
        write_jsonl(run / f"samples_{task}.jsonl",
                    [{"doc_index": i, "doc_id": str(i), "prompt": f"前提:{i}", "prediction": i % 3 if i < correct
                      else (i + 1) % 3, "gold": i % 3, "loglikelihoods": [-1.0, -2.0, -3.0]} for i in range(600)])
        return run

    rows = [{"gold": i % 3, "prediction": i % 3 if i < 300 else (i + 1) % 3} for i in range(600)]
    se = bootstrap_stderr("macro_f1", rows)
    assert se is not None and 0.01 < se < 0.04 and se == bootstrap_stderr("macro_f1", rows)  # reproducible
    bdir = tmp_path / "baselines"
    save_baseline(jnli_run("b", 300, 0.50), "b", baselines_dir=bdir)
    ok = check_run(jnli_run("ok", 290, 0.48), "b", mode="stat", baselines_dir=bdir)
    assert ok.exit_code == 0 and "bootstrap stderr" in ok.to_markdown()
    bad = check_run(jnli_run("bad", 150, 0.25), "b", mode="stat", baselines_dir=bdir)
    assert [(r.task, r.metric) for r in bad.regressions] == [(task, "macro_f1")]


def test_tokenizer_mismatch_is_refused_naming_the_field_unless_allowed(tmp_path: Path,
                                                                       base: tuple[Path, Path]) -> None:
    _, path = base
    other = make_run(tmp_path, "fast", edit=lambda rec, a, b: rec["config"]["tokenizer"].update(
        kind="fast", vocab_sha256="9" * 64))
    for mode in ("exact", "stat"):
        report = check_run(other, path, mode=mode)
        md = report.to_markdown()
        assert report.exit_code == 2 and "CANNOT COMPARE" in md, md
        assert report.tokenizer_diffs[:2] == ["tokenizer.kind: sentencepiece vs fast",
                                              f"tokenizer.vocab_sha256: {'1' * 64} vs {'9' * 64}"]
        assert "### Tokenizer differs: cannot compare" in md and "--allow-tokenizer-mismatch" in md
    allowed = check_run(other, path, mode="stat", allow_tokenizer_mismatch=True)
    md = allowed.to_markdown()
    assert allowed.exit_code == 0, md
    # the difference is shown at the top, before the table
    assert md.index("WARNING: tokenizer differs") < md.index("| task | metric |")
    assert "tokenizer.kind: sentencepiece vs fast" in md


def test_old_baseline_without_tokenizer_identity_is_refused_unless_allowed(tmp_path: Path,
                                                                           base: tuple[Path, Path]) -> None:
    """A baseline saved before identities were recorded cannot vouch for its tokenizer: fail closed."""
    _, path = base
    doc = json.loads(path.read_text("utf-8"))
    assert doc["tokenizer"] == TOKENIZER and doc["machine"]["cpu"] == "AMD EPYC 7B13"
    del doc["tokenizer"], doc["machine"]
    path.write_text(json.dumps(doc), encoding="utf-8")
    rerun = make_run(tmp_path, "rerun")
    report = check_run(rerun, path, mode="exact")
    md = report.to_markdown()
    assert report.exit_code == 2, md
    assert "tokenizer.kind: unknown vs sentencepiece" in md and "records no tokenizer identity" in md
    assert "baseline machine: not recorded" in md
    assert check_run(rerun, path, mode="exact", allow_tokenizer_mismatch=True).exit_code == 0


def test_non_finite_metrics_are_never_a_pass(tmp_path: Path, base: tuple[Path, Path]) -> None:
    _, path = base
    for i, bad in enumerate((math.nan, math.inf, -math.inf)):
        run = make_run(tmp_path, f"bad{i}")
        rec = json.loads((run / "results.json").read_text("utf-8"))
        rec["results"][JCQA]["acc"] = bad
        (run / "results.json").write_text(json.dumps(rec), encoding="utf-8")
        for mode in ("exact", "stat"):
            report = check_run(run, path, mode=mode)
            assert report.exit_code == 1, report.to_markdown()
            assert [(r.task, r.metric) for r in report.regressions][0] == (JCQA, "acc")
