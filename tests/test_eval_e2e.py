"""End to end: the embedded tiny model on every task of the default suite, real data where it exists.

Covers the CLI (`jbench eval`, `jbench table`, `jbench prompts`), results.json / samples files, both tables, the
run store's DataFrame loader, and that a rerun gives identical numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import jbench
from jbench.records import RunRecord
from jbench.results import load_run, load_samples_frame

LIMIT = 12
SUITE = "jcommonsenseqa,jnli,marc_ja,jsquad,jaqket_v2,xwinograd_ja"


def _cli(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "jbench.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"jbench {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def _evaluate(data_dir: Path, run_dir: Path, **kw: object) -> RunRecord:
    """The public API, as a user's script would call it."""
    return jbench.evaluate(None, tasks=SUITE, num_fewshot=[3, 3, 3, 2, 1, 0], prompt_version="0.3", limit=LIMIT,
                           device="cpu", data_dir=data_dir, output_dir=run_dir.parent, run_name=run_dir.name,
                           **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def suite_run(overlay_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    run_dir = tmp_path_factory.mktemp("runs") / "tiny-suite"
    out = _evaluate(overlay_data_dir, run_dir)
    assert out.path == run_dir
    return {"dir": run_dir, "out": out}


def test_every_task_produces_results_and_samples(suite_run: dict) -> None:
    run = load_run(suite_run["dir"])
    # the reference groups loglikelihood tasks first, then generation tasks, each in CLI order
    assert list(run.results) == ["jcommonsenseqa-1.1-0.3", "jnli-1.1-0.3", "marc_ja-1.1-0.3", "xwinograd_ja",
                                 "jsquad-1.1-0.3", "jaqket_v2-0.1-0.3"]
    assert run.versions == {"jcommonsenseqa-1.1-0.3": 1.1, "jnli-1.1-0.3": 1.1, "marc_ja-1.1-0.3": 1.1,
                            "xwinograd_ja": 1.0, "jsquad-1.1-0.3": 1.1, "jaqket_v2-0.1-0.3": 0.1}
    assert run.config["num_fewshot"] == [3, 3, 3, 2, 1, 0]  # as given, for the header line
    for task, metrics in run.results.items():
        rows = run.samples(task)
        assert len(rows) == LIMIT == run.data["n_samples"][task]
        assert [r["doc_index"] for r in rows] == list(range(len(rows)))
        if "acc" in metrics:
            acc = sum(r["acc"] for r in rows) / len(rows)
            assert metrics["acc"] == pytest.approx(acc)
            assert all(len(r["loglikelihoods"]) == len(r["continuations"]) for r in rows)
        else:
            em = 100 * sum(r["exact_match"] for r in rows) / len(rows)
            assert metrics["exact_match"] == pytest.approx(em)
    cfg = run.config
    assert cfg["use_fast"] is False and cfg["tokenizer"]["kind"] == "sentencepiece"
    assert cfg["data"]["jcommonsenseqa-1.1-0.3"][0]["expected"] == "official"
    assert cfg["data"]["jnli-1.1-0.3"][-1]["expected"] == "manifest"  # the made-up train split is labelled
    assert cfg["jbench_version"] and "libraries" in cfg["environment"]


def test_xwinograd_scores_from_eos_and_counts_ties_wrong(suite_run: dict) -> None:
    rows = load_run(suite_run["dir"]).samples("xwinograd_ja")
    for r in rows:
        assert r["prompt"] == ""
        lls, gold = r["loglikelihoods"], r["gold"]
        assert r["acc"] == int(lls[gold] > lls[1 - gold])


def test_generation_rows_respect_cap_and_separator(suite_run: dict) -> None:
    rows = load_run(suite_run["dir"]).samples("jsquad-1.1-0.3")
    assert all("\n" not in r["prediction"] for r in rows)
    assert all(r["max_gen_tokens"] >= 1 for r in rows)


def test_dataframe_in_one_call(suite_run: dict) -> None:
    df = load_samples_frame(suite_run["dir"])
    assert set(df["task"]) == set(load_run(suite_run["dir"]).results)
    assert {"doc_id", "doc_index", "prediction", "prompt"} <= set(df.columns)


def test_rerun_gives_identical_numbers(suite_run: dict, overlay_data_dir: Path, tmp_path: Path) -> None:
    out2 = _evaluate(overlay_data_dir, tmp_path / "again", cache=False)
    assert out2.results == suite_run["out"].results
    for task in out2.results:
        a = [json.dumps(r, sort_keys=True) for r in load_run(suite_run["dir"]).samples(task)]
        b = [json.dumps(r, sort_keys=True) for r in load_run(tmp_path / "again").samples(task)]
        assert a == b


def test_cli_eval_and_table_print_card_and_averages(overlay_data_dir: Path, tmp_path: Path) -> None:
    proc = _cli("eval", "--tasks", "jcommonsenseqa,xwinograd_ja", "--num-fewshot", "3,0", "--limit", "8",
                "--data-dir", str(overlay_data_dir), "--output-dir", str(tmp_path), "--run-name", "r",
                "--no-progress")
    out = proc.stdout
    assert out.startswith("hf-causal (pretrained=")
    assert "limit: 8, num_fewshot: [3, 0]" in out.splitlines()[0]
    assert "|         Task         |Version| Metric |" in out
    assert "|jcommonsenseqa-1.1-0.3|    1.1|acc     |" in out
    assert "4-task average" in out
    table = _cli("table", str(tmp_path / "r")).stdout
    assert table.splitlines()[1:3] == out.splitlines()[1:3]


def test_prompts_reproduce_reference_shuffle_and_shots(real_data_dir: Path) -> None:
    """JCQA 3-shot on the real files: the first documents after Random(42)'s shuffle and their shot q_ids."""
    proc = _cli("prompts", "--task", "jcommonsenseqa-1.1-0.3", "--num-fewshot", "3", "--limit", "3",
                "--data-dir", str(real_data_dir))
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["doc_id"] for r in rows] == ["9971", "9755", "9514"]
    assert [r["doc_index"] for r in rows] == [0, 1, 2]
    assert rows[0]["continuations"] == ["準備する", "おしっこする", "風", "雨", "ベッドに入る"]
    assert rows[0]["context"].count("### 応答:\n") == 4
    # shot q_ids drawn by the same RNG after the shuffle (8903, 6180, 7460 for the first document)
    assert "### 入力:\n街のことは？\n\n### 応答:\nタウン\n\n" in rows[0]["context"]


def test_shuffle_and_shots_match_a_transcription_of_the_reference(real_data_dir: Path) -> None:
    """The reference loop, transcribed: shuffle doc dicts with Random(42), then rnd.sample(train_list, 3) per doc."""
    import random

    from jbench.data import load_split
    from jbench.requests import build_instances
    from jbench.tasks import resolve_task

    val = load_split("jcommonsenseqa", "validation", real_data_dir).docs
    train = load_split("jcommonsenseqa", "train", real_data_dir).docs
    rnd = random.Random()
    rnd.seed(42)
    docs = list(val)
    rnd.shuffle(docs)
    expected = []
    for doc in docs[:50]:
        shots = rnd.sample(train, 3)
        expected.append((str(doc["q_id"]), [str(s["q_id"]) for s in shots]))
    got = [(i.doc_id, i.shot_ids) for i in
           build_instances(resolve_task("jcommonsenseqa-1.1-0.3"), val, train, 3, limit=50)]
    assert got == expected
    assert got[:5] == [("9971", ["8903", "6180", "7460"]), ("9755", ["5272", "3090", "3912"]),
                       ("9514", ["6274", "3826", "6730"]), ("9030", ["715", "5213", "7749"]),
                       ("9342", ["6246", "6325", "2492"])]


def test_prompts_generation_needs_model_for_cap(real_data_dir: Path, tiny_models: dict[str, Path]) -> None:
    proc = _cli("prompts", "--task", "jsquad-1.1-0.2", "--num-fewshot", "0", "--limit", "2",
                "--data-dir", str(real_data_dir))
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert rows[0]["until"] == "\n" and rows[0]["max_gen_tokens"] is None
    proc = _cli("prompts", "--task", "jsquad-1.1-0.2", "--num-fewshot", "0", "--limit", "2",
                "--data-dir", str(real_data_dir), "--model", str(tiny_models["gpt_neox"]), "--no-use-fast")
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert all(isinstance(r["max_gen_tokens"], int) and r["max_gen_tokens"] > 0 for r in rows)
    assert set(rows[0]) == {"task", "doc_index", "doc_id", "context", "until", "max_gen_tokens"}
