"""compare_runs on small hand-written run directories: columns, averages, errors, renderers."""

from __future__ import annotations

import base64
import json
import shutil
import math
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jbench import stats
from jbench.compare import ComparisonError, TokenizerMismatchError, compare_runs
from jbench.errors import JBenchError
from jbench.results import load_run

N = 60
MC_TASKS = {"jcommonsenseqa-1.1-0.3": 5, "jnli-1.3-0.3": 3, "marc_ja-1.1-0.3": 2}
GEN_TASK = "jsquad-1.1-0.3"
ITERS = 2000


def _mc_rows(task: str, n_choices: int, *, noise: float, seed: int, const: int | None = None,
             prompt_suffix: str = "") -> list[dict[str, Any]]:
    base = np.random.default_rng(zlib.crc32(task.encode()))  # the same "questions" for every run of the task
    golds = base.integers(0, n_choices, N)
    lls0 = base.normal(-5, 1.0, (N, n_choices))
    lls0[np.arange(N), golds] += 1.2  # the original is mostly right
    lls = lls0 + np.random.default_rng(seed).normal(0, noise, lls0.shape) if noise else lls0
    rows = []
    for i in range(N):
        pred = int(np.argmax(lls[i])) if const is None else const
        acc = int(pred == golds[i])
        rows.append({"doc_index": i, "doc_id": f"{task[:4]}{i:03d}", "native_index": i, "shot_ids": [],
                     "prompt": f"問題{i}: {task}{prompt_suffix}\n答え:",
                     "continuations": [f"c{k}" for k in range(n_choices)],
                     "loglikelihoods": [float(v) for v in lls[i]], "prediction": pred, "gold": int(golds[i]),
                     "acc": acc, "acc_norm": acc, "notes": None})
    return rows


def _gen_rows(*, wrong_every: int | None, seed: int, all_wrong: bool = False) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(N):
        gold = f"答{i}"
        right = (i % 3 != 0) if wrong_every is None else (i % 3 != 0 and rng.random() > 1 / wrong_every)
        pred = "" if all_wrong else (gold if right else f"誤{i}")
        em = float(pred == gold)
        rows.append({"doc_index": i, "doc_id": f"q{i:03d}", "prompt": f"文脈{i}\n質問:\n答え:", "until": ["\n"],
                     "max_gen_tokens": 32, "prediction": pred, "golds": [gold], "exact_match": em, "f1": em,
                     "notes": None})
    return rows


#: config.tokenizer as jbench records it (HarnessTokenizer.identity()); every hand-built run uses it unless told
TOKENIZER = {"class": "T5Tokenizer (sentencepiece)", "kind": "sentencepiece", "vocab_size": 32000,
             "vocab_sha256": "a" * 64, "special_tokens_sha256": "b" * 64}


def _write_run(root: Path, name: str, variant: str, samples: dict[str, list[dict[str, Any]]],
               resources: dict[str, float] | None = None, versions: dict[str, float] | None = None,
               tokenizer: Any = TOKENIZER) -> Path:
    run = root / name
    run.mkdir(parents=True)
    results = {}
    for task, rows in samples.items():
        with (run / f"samples_{task}.jsonl").open("w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        if "acc" in rows[0]:
            results[task] = {"acc": float(np.mean([r["acc"] for r in rows])), "acc_stderr": 0.01}
        else:
            results[task] = {"exact_match": 100 * float(np.mean([r["exact_match"] for r in rows]))}
    config: dict[str, Any] = {"model": "/models/tiny-ja-lm", "variant": variant, "dtype": "float16",
                              "tasks": list(samples), "num_fewshot": [3] * len(samples)}
    if tokenizer is not None:
        config["tokenizer"] = tokenizer
    if resources is not None:
        config["resources"] = resources
    data = {"results": results, "versions": versions or {t: 1.1 for t in samples}, "config": config,
            "n_samples": {t: len(r) for t, r in samples.items()}, "timings": {}}
    (run / "results.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return run


def _suite(*, noise: float, seed: int, gen_wrong_every: int | None = None, **mc_kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {t: _mc_rows(t, k, noise=noise, seed=seed, **mc_kw) for t, k in MC_TASKS.items()}
    out[GEN_TASK] = _gen_rows(wrong_every=gen_wrong_every, seed=seed)
    return out


@pytest.fixture()
def runs(tmp_path: Path) -> dict[str, Path]:
    return {
        "orig": _write_run(tmp_path, "tiny-fp16", "fp16", _suite(noise=0.0, seed=0),
                           resources={"size_bytes": 4 * 2**30, "peak_rss_mb": 6000, "load_s": 3.0,
                                      "tokens_per_s": 40.0}),
        "q8": _write_run(tmp_path, "tiny-int8", "int8", _suite(noise=0.3, seed=1, gen_wrong_every=10),
                         resources={"size_bytes": 2 * 2**30, "peak_rss_mb": 3500, "load_s": 2.0,
                                    "tokens_per_s": 55.0}),
        "q4": _write_run(tmp_path, "tiny-q4", "q4", _suite(noise=1.5, seed=2, gen_wrong_every=3)),  # no resources
    }


def test_compare_runs_produces_every_column(runs: dict[str, Path]) -> None:
    rep = compare_runs(load_run(runs["orig"]), [load_run(runs["q8"]), load_run(runs["q4"])], iters=ITERS)
    assert rep.model == "tiny-ja-lm"
    assert [v.label for v in rep.variants] == ["int8", "q4"]
    assert rep.tasks == list(MC_TASKS) + [GEN_TASK]
    orig_samples = load_run(runs["orig"])
    for label in ("int8", "q4"):
        for task in MC_TASKS:
            r = rep.row(task, label)
            assert r.metric == "acc" and r.n == N and r.kind == "task"
            assert r.original == pytest.approx(100 * np.mean([s["acc"] for s in orig_samples.samples(task)]))
            assert r.delta == pytest.approx(r.value - r.original)
            assert r.ci_low <= r.delta <= r.ci_high
            assert 0 <= r.mcnemar_p <= 1 and r.right_to_wrong is not None and r.wrong_to_right is not None
            assert (r.wrong_to_right - r.right_to_wrong) == pytest.approx(r.delta * N / 100)
            assert 0 <= r.agreement <= 1 and r.mean_kl >= 0 and 0 <= r.top_agreement <= 1
            assert r.verdict in {"equivalent", "worse", "better", "inconclusive"}
            assert r.chance == pytest.approx(100 / MC_TASKS[task])
            assert r.original_ci[0] <= r.original <= r.original_ci[1]
        g = rep.row(GEN_TASK, label)
        assert g.metric == "exact_match" and g.mean_kl is None and g.top_agreement is None
        assert g.mcnemar_p is not None and g.agreement is not None
        avg = rep.row("4-task average", label)
        assert avg.kind == "average" and avg.mcnemar_p is None and avg.n == 4 * N
        assert avg.original == pytest.approx(np.mean([rep.row(t, label).original for t in rep.tasks]))
        assert avg.ci_low <= avg.delta <= avg.ci_high
    # right/wrong tasks use the Tango score interval; the average combines the per-task intervals (MOVER)
    avg = rep.row("4-task average", "q4")
    task_rows = [rep.row(t, "q4") for t in rep.tasks]
    assert all(r.ci_method == stats.SCORE_METHOD and r.tost.method == stats.SCORE_METHOD for r in task_rows)
    for r in task_rows:
        ra = [s[r.metric] for s in orig_samples.samples(r.task)]
        rb = [s[r.metric] for s in load_run(runs["q4"]).samples(r.task)]
        assert (r.delta, r.ci_low, r.ci_high) == pytest.approx(tuple(100 * v for v in stats.tango_ci(ra, rb)))
    lo = avg.delta - math.sqrt(sum((r.delta - r.ci_low) ** 2 for r in task_rows)) / 4
    hi = avg.delta + math.sqrt(sum((r.ci_high - r.delta) ** 2 for r in task_rows)) / 4
    assert (avg.ci_low, avg.ci_high) == pytest.approx((lo, hi))
    assert avg.ci_method.startswith(stats.MOVER_METHOD) and avg.tost.method == avg.ci_method
    assert avg.tost.lo == pytest.approx(avg.delta - math.sqrt(sum((r.delta - r.tost.lo) ** 2 for r in task_rows)) / 4)
    assert avg.tost.delta == pytest.approx(avg.delta) and avg.tost.lo < avg.delta < avg.tost.hi
    # noisier quantization drifts further from the original
    assert rep.row("jcommonsenseqa-1.1-0.3", "q4").mean_kl > rep.row("jcommonsenseqa-1.1-0.3", "int8").mean_kl
    with pytest.raises(KeyError):
        rep.row("6-task average", "q4")  # xwinograd/jaqket were not run
    assert any("6-task average" in n for n in rep.notes)

    md = rep.to_markdown()
    for col in ("Δ pts", "95% CI", "CI method", stats.SCORE_METHOD, stats.MOVER_METHOD, "McNemar p",
                "r→w", "w→r", "agree", "mean KL", "top-1 agree", "TOST ±1",
                "collapsed", "4-task average", "size on disk", "peak memory", "load time", "throughput"):
        assert col in md
    assert "2.00 GiB (50% of original)" in md and "55.0 tok/s (x1.38)" in md
    q4_card = md.split("## q4")[1].split("##")[0]
    assert q4_card.count("n/a") >= 4  # resources absent → n/a

    data = json.loads(rep.to_json())
    assert len(data["rows"]) == 2 * (len(rep.tasks) + 1)
    assert {"delta", "ci_low", "ci_high", "mcnemar_p", "right_to_wrong", "wrong_to_right", "agreement", "mean_kl",
            "top_agreement", "tost", "verdict", "collapsed", "ci_method"} <= set(data["rows"][0])
    assert {r["ci_method"] for r in data["rows"]} == {stats.SCORE_METHOD, avg.ci_method}
    assert data["tokenizer_mismatch"] == {} and data["original"]["tokenizer"] == TOKENIZER
    assert data["variants"][1]["size_bytes"] is None
    assert len(rep.to_frame()) == len(rep.rows)


def test_compare_accepts_paths_and_is_deterministic(runs: dict[str, Path]) -> None:
    one = compare_runs(runs["orig"], [runs["q4"]], iters=ITERS, seed=4).to_json()
    assert one == compare_runs(runs["orig"], [runs["q4"]], iters=ITERS, seed=4).to_json()


def test_identical_variant_at_small_n_is_not_equivalent(tmp_path: Path, runs: dict[str, Path]) -> None:
    # issue 12: 60 agreeing examples cannot rule out a 1-point change, however identical the answers are
    same = _write_run(tmp_path, "tiny-copy", "fp16", _suite(noise=0.0, seed=0))
    rep = compare_runs(runs["orig"], [same], iters=ITERS)
    assert rep.variants[0].label == "fp16 (tiny-copy)"  # same variant name as the original: disambiguated
    for r in rep.rows:
        assert r.delta == 0 and r.ci_low == pytest.approx(-r.ci_high) and r.ci_high > 1
        assert r.verdict == "inconclusive" and not r.significant and r.tost.hi > 1
        if r.kind == "task":
            assert r.agreement == 1 and r.mcnemar_p == 1 and r.right_to_wrong == 0 and not r.collapsed
            if r.metric == "acc":
                assert r.mean_kl == pytest.approx(0, abs=1e-12) and r.top_agreement == 1


def _binary_rows(task: str, right: np.ndarray) -> list[dict[str, Any]]:
    return [{"doc_index": i, "doc_id": f"d{i}", "prompt": f"q{i}", "continuations": ["a", "b"],
             "loglikelihoods": [-1.0, -2.0] if ok else [-2.0, -1.0], "prediction": 0 if ok else 1, "gold": 0,
             "acc": int(ok)} for i, ok in enumerate(right)]


@pytest.mark.parametrize(("n", "verdict"), [(5, "inconclusive"), (50, "inconclusive"), (8000, "equivalent")])
def test_all_agree_is_equivalent_only_with_enough_examples(tmp_path: Path, n: int, verdict: str) -> None:
    right = np.random.default_rng(n).random(n) < 0.7
    task = "jcommonsenseqa-1.1-0.3"
    a = _write_run(tmp_path, "a", "fp16", {task: _binary_rows(task, right)})
    b = _write_run(tmp_path, "b", "int8", {task: _binary_rows(task, right)})
    r = compare_runs(a, [b], iters=ITERS).row(task, "int8")
    assert r.delta == 0 and r.verdict == verdict and r.ci_method == stats.SCORE_METHOD
    if n == 50:  # an exact 90% bound allows 5.8 points; the (conservative) corrected score bound a little more
        assert 5.8 < r.tost.hi < 7.5


def test_average_of_agreeing_tasks_is_not_equivalent_at_small_n(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    suite = {t: _binary_rows(t, rng.random(20) < 0.6) for t in
             ("jcommonsenseqa-1.1-0.3", "jnli-1.3-0.3", "marc_ja-1.1-0.3", "jsquad-1.1-0.3")}
    a = _write_run(tmp_path, "a", "fp16", suite)
    b = _write_run(tmp_path, "b", "int8", suite)
    avg = compare_runs(a, [b], iters=ITERS).row("4-task average", "int8")
    assert avg.delta == 0 and avg.verdict == "inconclusive" and avg.ci_high > 1 and avg.tost.hi > 1


def test_non_binary_metric_keeps_the_bootstrap(tmp_path: Path) -> None:
    # a per-example score that is not right/wrong (partial credit) keeps the paired bootstrap and the t TOST
    def rows(credit: list[float]) -> list[dict[str, Any]]:
        return [{"doc_index": i, "doc_id": f"q{i}", "prompt": f"p{i}", "prediction": f"a{i}", "golds": [f"a{i}"],
                 "exact_match": c} for i, c in enumerate(credit)]

    credit = [(i % 5) / 4 for i in range(N)]
    changed = [c if i % 7 else max(0.0, c - 0.25) for i, c in enumerate(credit)]
    a = _write_run(tmp_path, "a", "fp16", {GEN_TASK: rows(credit)})
    b = _write_run(tmp_path, "b", "int8", {GEN_TASK: rows(changed)})
    same = _write_run(tmp_path, "c", "int4", {GEN_TASK: rows(credit)})
    rep = compare_runs(a, [b, same], iters=ITERS)
    r = rep.row(GEN_TASK, "int8")
    assert r.ci_method == stats.BOOTSTRAP_METHOD and r.tost.method == stats.T_METHOD and r.mcnemar_p is None
    assert r.ci_low < r.delta < r.ci_high
    # nothing changed: the bootstrap and the t-interval are the point 0; the exact bound is used instead
    z = rep.row(GEN_TASK, "int4")
    assert z.ci_method == "exact bound (no example changed)" and z.verdict == "inconclusive"
    assert z.tost.hi == pytest.approx(100 * stats.zero_change_bound(N, 0.05))
    assert z.ci_high == pytest.approx(100 * stats.zero_change_bound(N, 0.025))
    assert stats.BOOTSTRAP_METHOD in rep.to_markdown()


def test_tokenizer_mismatch_is_refused(tmp_path: Path, runs: dict[str, Path]) -> None:
    fast = {**TOKENIZER, "class": "T5TokenizerFast", "kind": "fast", "vocab_sha256": "c" * 64}
    other = _write_run(tmp_path, "tiny-gptq", "gptq", _suite(noise=0.3, seed=1), tokenizer=fast)
    with pytest.raises(TokenizerMismatchError) as err:
        compare_runs(runs["orig"], [runs["q8"], other], iters=ITERS)
    assert isinstance(err.value, JBenchError) and err.value.exit_code == 2
    msg = str(err.value)
    assert "gptq" in msg and "tiny-gptq" in msg and "tiny-int8" not in msg  # names the run that differs
    assert "tokenizer.kind: sentencepiece vs fast" in msg and "tokenizer.vocab_sha256" in msg
    assert "tokenizer.vocab_size" not in msg  # only the fields that differ
    assert "--allow-tokenizer-mismatch" in msg and "allow_tokenizer_mismatch=True" in msg
    # an old run that stored only the tokenizer kind is not taken as like for like either
    old = _write_run(tmp_path, "tiny-old", "int4", _suite(noise=0.3, seed=1), tokenizer="sentencepiece")
    with pytest.raises(TokenizerMismatchError, match=r"tokenizer.class: T5Tokenizer \(sentencepiece\) vs unknown"):
        compare_runs(runs["orig"], [old], iters=ITERS)
    none = _write_run(tmp_path, "tiny-none", "int4", _suite(noise=0.3, seed=1), tokenizer=None)
    with pytest.raises(TokenizerMismatchError, match="does not record"):
        compare_runs(runs["orig"], [none], iters=ITERS)
    compare_runs(runs["orig"], [runs["orig"]], iters=ITERS)  # a run against itself is like for like


def test_tokenizer_mismatch_override_is_shown_at_the_top(tmp_path: Path, runs: dict[str, Path]) -> None:
    fast = {**TOKENIZER, "class": "T5TokenizerFast", "kind": "fast"}
    other = _write_run(tmp_path, "tiny-gptq", "gptq", _suite(noise=0.3, seed=1), tokenizer=fast)
    rep = compare_runs(runs["orig"], [runs["q8"], other], iters=ITERS, allow_tokenizer_mismatch=True)
    assert rep.tokenizer_mismatches == {"gptq": ["tokenizer.class: T5Tokenizer (sentencepiece) vs T5TokenizerFast",
                                                 "tokenizer.kind: sentencepiece vs fast"]}
    md = rep.to_markdown()
    head = md.split("## ")[0]  # before the first section: right under the title
    assert "TOKENIZER MISMATCH" in head and "tokenizer.kind: sentencepiece vs fast" in head and "gptq" in head
    data = json.loads(rep.to_json())
    assert list(data)[:2] == ["model", "tokenizer_mismatch"]
    assert data["tokenizer_mismatch"]["gptq"][1] == "tokenizer.kind: sentencepiece vs fast"
    assert data["variants"][1]["tokenizer"]["kind"] == "fast"
    text = rep.write_html(tmp_path / "r.html").read_text(encoding="utf-8")
    top = text.split("<img")[0]
    assert '<div class="warning">' in top and "TOKENIZER MISMATCH" in top and "sentencepiece vs fast" in top
    # without a mismatch there is no banner
    clean = compare_runs(runs["orig"], [runs["q8"]], iters=ITERS, allow_tokenizer_mismatch=True)
    assert "TOKENIZER MISMATCH" not in clean.to_markdown() and clean.tokenizer_mismatches == {}


def test_collapsed_variant_is_flagged(tmp_path: Path, runs: dict[str, Path]) -> None:
    suite = _suite(noise=0.0, seed=0, const=0)
    suite[GEN_TASK] = _gen_rows(wrong_every=None, seed=0, all_wrong=True)
    broken = _write_run(tmp_path, "tiny-q2", "q2", suite)
    rep = compare_runs(runs["orig"], [broken], iters=ITERS)
    for task in MC_TASKS:
        r = rep.row(task, "q2")
        assert r.collapsed and r.collapse_reason
        assert not r.original_collapsed
    g = rep.row(GEN_TASK, "q2")
    assert g.collapsed and g.value == 0 and "exact match 0" in g.collapse_reason
    assert "YES" in rep.to_markdown()
    assert not any(r.collapsed for r in compare_runs(runs["orig"], [runs["q8"]], iters=ITERS).rows)


def test_mismatched_documents_raise(tmp_path: Path, runs: dict[str, Path]) -> None:
    suite = _suite(noise=0.3, seed=1)
    suite["jnli-1.3-0.3"] = suite["jnli-1.3-0.3"][:50]  # e.g. run with --limit 50
    short = _write_run(tmp_path, "tiny-short", "int4", suite)
    with pytest.raises(ComparisonError, match="different documents") as err:
        compare_runs(runs["orig"], [short], iters=ITERS)
    msg = str(err.value)
    assert "jnli-1.3-0.3" in msg and "10 only in the original" in msg and "--limit" in msg


def test_mismatched_prompts_raise(tmp_path: Path, runs: dict[str, Path]) -> None:
    suite = _suite(noise=0.3, seed=1)
    suite["marc_ja-1.1-0.3"] = _mc_rows("marc_ja-1.1-0.3", 2, noise=0.3, seed=1, prompt_suffix="（別）")
    other = _write_run(tmp_path, "tiny-prompt", "int4", suite)
    with pytest.raises(ComparisonError, match=r"marc_ja-1.1-0.3: 60 of 60 documents were not asked the same way"):
        compare_runs(runs["orig"], [other], iters=ITERS)


def test_mismatched_task_versions_raise(tmp_path: Path, runs: dict[str, Path]) -> None:
    suite = _suite(noise=0.3, seed=1)
    suite["jnli-1.1-0.3"] = suite.pop("jnli-1.3-0.3")
    other = _write_run(tmp_path, "tiny-v11", "int4", suite)
    with pytest.raises(ComparisonError, match="different task or prompt versions"):
        compare_runs(runs["orig"], [other], iters=ITERS)
    bumped = _write_run(tmp_path, "tiny-bumped", "int4", _suite(noise=0.3, seed=1),
                        versions={t: 1.2 for t in _suite(noise=0.3, seed=1)})
    with pytest.raises(ComparisonError, match="task version differs"):
        compare_runs(runs["orig"], [bumped], iters=ITERS)


def test_missing_task_is_a_note_not_an_error(tmp_path: Path, runs: dict[str, Path]) -> None:
    suite = _suite(noise=0.3, seed=1)
    del suite[GEN_TASK]
    partial = _write_run(tmp_path, "tiny-partial", "int4", suite)
    rep = compare_runs(runs["orig"], [partial], iters=ITERS)
    assert rep.tasks == list(MC_TASKS)
    assert any("jsquad" in n and "missing" in n for n in rep.notes)


def test_html_embeds_table_and_image(tmp_path: Path, runs: dict[str, Path]) -> None:
    rep = compare_runs(runs["orig"], [runs["q8"], runs["q4"]], iters=ITERS)
    out = rep.write_html(tmp_path / "report" / "compare.html")
    text = out.read_text(encoding="utf-8")
    assert "<table>" in text and "jcommonsenseqa-1.1-0.3" in text and "McNemar p" in text
    assert "CI method" in text and stats.SCORE_METHOD in text and stats.MOVER_METHOD in text
    m = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert m and base64.b64decode(m.group(1))[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in text and "https://" not in text  # self-contained


def test_plot_writes_png(tmp_path: Path, runs: dict[str, Path]) -> None:
    suite = _suite(noise=0.0, seed=0, const=0)
    broken = _write_run(tmp_path, "tiny-q2", "q2", suite)
    rep = compare_runs(runs["orig"], [runs["q8"], broken], iters=ITERS)
    png = rep.plot(tmp_path / "plots" / "compare.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_argument_checks(runs: dict[str, Path]) -> None:
    with pytest.raises(ComparisonError, match="no variant"):
        compare_runs(runs["orig"], [])
    with pytest.raises(ComparisonError, match="margin"):
        compare_runs(runs["orig"], [runs["q8"]], margin=0)
    rep = compare_runs(runs["orig"], [runs["q8"]], iters=ITERS, tasks=["jnli"])
    assert rep.tasks == ["jnli-1.3-0.3"] and all(r.kind == "task" for r in rep.rows)
    assert not math.isnan(rep.rows[0].tost.p)


def test_a_damaged_samples_file_is_one_clear_error(tmp_path: Path, runs: dict[str, Path]) -> None:
    """A reused run whose samples file was cut short: exit 2 naming the file and line, never a JSONDecodeError."""
    from jbench.errors import StoreError

    damaged = tmp_path / "damaged"
    shutil.copytree(runs["q8"], damaged)
    samples = sorted(damaged.glob("samples_*.jsonl"))[0]
    text = samples.read_text(encoding="utf-8")
    samples.write_text(text[: len(text) // 2], encoding="utf-8")
    with pytest.raises(StoreError) as err:
        compare_runs(runs["orig"], [damaged], iters=ITERS)
    assert err.value.exit_code == 2 and "is not valid JSON" in str(err.value) and samples.name in str(err.value)
