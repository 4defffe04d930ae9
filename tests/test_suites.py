"""The ``ja_leaderboard`` suite: lm-eval's own japanese_leaderboard tasks on local data, stored as a jbench run.

The anchor is lm-eval itself: the suite's JCommonsenseQA accuracy (in-process ``simple_evaluate`` over jbench's
loaded model object) must equal what ``python -m lm_eval run --model hf`` reports for the same model directory,
the same generated task YAMLs and the same data files. Everything runs offline on a tiny model with ``--limit``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jbench.suites import (
    JA_LEADERBOARD,
    available_tasks,
    gen_row,
    mc_row,
    prepare_tasks,
    resolve_tasks,
    run_ja_leaderboard,
    suite_tables,
)

LIMIT = 20
BATCH = 8
JCQA = "ja_leaderboard_jcommonsenseqa"
XWINO = "ja_leaderboard_xwinograd"
RUNNABLE = ["ja_leaderboard_jcommonsenseqa", "ja_leaderboard_jnli", "ja_leaderboard_marc_ja",
            "ja_leaderboard_jsquad", "ja_leaderboard_jaqket_v2", "ja_leaderboard_xwinograd"]


def _offline_env(hf_home: Path) -> dict[str, str]:
    env = dict(os.environ, HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", HF_EVALUATE_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("HF_DATASETS_CACHE", None)
    return env


def _lm_eval_cli(model_dir: Path, include: Path, task: str, out: Path, hf_home: Path) -> subprocess.Popen[str]:
    """lm-eval's own CLI on the same model dir and generated task YAMLs (started in the background)."""
    cmd = [sys.executable, "-m", "lm_eval", "run", "--model", "hf",
           "--model_args", f"pretrained={model_dir},dtype=float32", "--include_path", str(include),
           "--tasks", task, "--limit", str(LIMIT), "--batch_size", str(BATCH), "--output_path", str(out)]
    return subprocess.Popen(cmd, env=_offline_env(hf_home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _cli_results(out: Path) -> dict[str, Any]:
    files = sorted(out.rglob("results_*.json"))
    assert files, f"lm-eval wrote no results under {out}"
    return json.loads(files[-1].read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def suite_run(tiny_models: dict[str, Path], overlay_data_dir: Path,
              tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One in-process suite run (JCQA 3-shot + XWinograd 0-shot), with lm-eval's CLI on JCQA running alongside."""
    from jbench.models.load import ModelSpec

    root = tmp_path_factory.mktemp("ja-leaderboard")
    work, run_dir, cli_out = root / "work", root / "run", root / "cli"
    model_dir = tiny_models["gpt_neox"]
    # the YAMLs + JSON lines first, so lm-eval's CLI can start while the in-process run works
    prepare_tasks(resolve_tasks([JCQA]), overlay_data_dir, work)
    proc = _lm_eval_cli(model_dir, work / "tasks", f"local_{JCQA}", cli_out, root / "hf_home")
    try:
        out = run_ja_leaderboard(ModelSpec(model=str(model_dir)), overlay_data_dir, run_dir,
                                 tasks=["jcommonsenseqa", "xwinograd"], limit=LIMIT, batch_size=BATCH,
                                 work_dir=work)
        log, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log[-3000:]
    return {"out": out, "run_dir": run_dir, "cli": _cli_results(cli_out), "work": work}


def test_jcqa_accuracy_equals_lm_eval_cli(suite_run: dict[str, Any]) -> None:
    cli = suite_run["cli"]["results"][f"local_{JCQA}"]
    ours = suite_run["out"]["results"][JCQA]
    assert suite_run["cli"]["n-samples"][f"local_{JCQA}"]["effective"] == LIMIT
    assert ours["acc"] == cli["acc,none"]
    assert ours["acc_stderr"] == cli["acc_stderr,none"]
    assert suite_run["cli"]["n-shot"][f"local_{JCQA}"] == 3


def test_run_directory_has_jbench_shape(suite_run: dict[str, Any]) -> None:
    out, run_dir = suite_run["out"], suite_run["run_dir"]
    assert out["config"]["lm_eval_cli"].startswith("--model hf --model_args pretrained=")
    stored = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    assert stored == json.loads(json.dumps(out, ensure_ascii=False))
    assert list(out["results"]) == [JCQA, XWINO]
    assert out["versions"] == {JCQA: 1.0, XWINO: 1.0}
    assert out["n_samples"] == {JCQA: LIMIT, XWINO: LIMIT}
    cfg = out["config"]
    assert cfg["suite"] == "ja_leaderboard" and cfg["engine"].startswith("lm-eval 0.4")
    assert cfg["tasks"] == [JCQA, XWINO] and cfg["num_fewshot"] == [3, 0]
    assert cfg["prompt_versions"] == {JCQA: "ja_leaderboard", XWINO: "ja_leaderboard"}
    assert cfg["metric_scale"] == {"acc": 1.0, "exact_match": 1.0}
    assert cfg["limit"] == LIMIT and cfg["batch_size"] == BATCH
    jcqa_files = cfg["data"][JCQA]
    assert [f["path"] for f in jcqa_files] == ["jglue/jcommonsenseqa-v1.1/valid-v1.1.json",
                                               "jglue/jcommonsenseqa-v1.1/train-v1.1.json"]
    assert all({"path", "sha256", "records", "expected", "mismatch"} <= set(f) for f in jcqa_files)
    assert [f["path"] for f in cfg["data"][XWINO]] == ["xwinograd/dataset.tsv"]
    assert (run_dir / "lm_eval_results.json").is_file()


def test_samples_rebuild_lm_eval_metric(suite_run: dict[str, Any]) -> None:
    """jbench sample rows: prompt/continuations as lm-eval scored them, prediction = argmax (ties low), acc."""
    from jbench.results import load_run

    run = load_run(suite_run["run_dir"])
    for task in (JCQA, XWINO):
        rows = run.samples(task)
        assert [r["doc_index"] for r in rows] == list(range(LIMIT))
        for r in rows:
            lls = r["loglikelihoods"]
            assert r["prediction"] == lls.index(max(lls))
            assert r["acc"] == float(r["prediction"] == r["gold"])
        acc = sum(r["acc"] for r in rows) / len(rows)
        assert acc == pytest.approx(run.results[task]["acc"], abs=1e-12)
    jcqa = run.samples(JCQA)
    assert jcqa[0]["doc_id"] == "8939"  # the JCQA q_id of the first validation question
    assert len(jcqa[0]["continuations"]) == 5 and all(c.startswith("\n") for c in jcqa[0]["continuations"])
    assert jcqa[0]["prompt"].startswith("以下は、タスクを説明する指示と")
    assert jcqa[0]["prompt"].endswith("### 応答：")
    assert jcqa[0]["prompt"].count("### 応答：") == 4  # 3 shots + the question
    xw = run.samples(XWINO)
    assert xw[0]["prompt"] == "" and len(xw[0]["continuations"]) == 2


def test_lm_eval_layout_matches_lm_eval_cli(suite_run: dict[str, Any]) -> None:
    """The run's lm-eval/ results file has the keys and JCQA numbers lm-eval's own CLI wrote for the same run; its
    samples carry lm-eval's fields and the documents lm-eval scored (issue 16)."""
    from jbench.lmeval_layout import LMEVAL_DIR

    ours, cli = _cli_results(suite_run["run_dir"] / LMEVAL_DIR), suite_run["cli"]
    for key in ("results", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better", "n-samples",
                "config", "git_hash", "date", "task_hashes", "model_name_sanitized"):
        assert key in ours and key in cli, key
    mine, theirs = ours["results"][JCQA], cli["results"][f"local_{JCQA}"]
    for key in ("acc,none", "acc_stderr,none"):
        assert mine[key] == theirs[key], key
    assert ours["n-shot"][JCQA] == cli["n-shot"][f"local_{JCQA}"] == 3
    assert ours["n-samples"][JCQA]["effective"] == cli["n-samples"][f"local_{JCQA}"]["effective"] == LIMIT
    (samples,) = (suite_run["run_dir"] / LMEVAL_DIR).glob(f"samples_{JCQA}_*.jsonl")
    first = json.loads(samples.read_text(encoding="utf-8").splitlines()[0])
    assert str(first["doc"].get("q_id")) == "8939" and first["filter"] == "none"
    assert len(first["arguments"]) == 5 and first["filtered_resps"][0][1] in ("True", "False")


def test_compare_check_and_card_table_read_the_run(suite_run: dict[str, Any], tmp_path: Path) -> None:
    from jbench.baseline import check_run, save_baseline
    from jbench.compare import compare_runs

    run_dir = suite_run["run_dir"]
    report = compare_runs(run_dir, [run_dir], iters=1000)
    rows = {r.task: r for r in report.rows if r.kind == "task"}
    assert set(rows) == {JCQA, XWINO}
    assert rows[JCQA].delta == 0 and rows[JCQA].metric == "acc" and rows[JCQA].n == LIMIT
    assert rows[JCQA].original == pytest.approx(100 * suite_run["out"]["results"][JCQA]["acc"])
    base = save_baseline(run_dir, "lb", baselines_dir=tmp_path)
    check = check_run(run_dir, base, mode="exact", baselines_dir=tmp_path)
    assert check.exit_code == 0, check.to_markdown()
    table = suite_tables(suite_run["out"])
    assert "ja_leaderboard_jcommonsenseqa" in table and "|acc" in table
    assert table.splitlines()[0].endswith(f"limit: {LIMIT}, num_fewshot: [3, 0], batch_size: {BATCH}")


def test_every_runnable_task_loads_its_local_data_in_lm_eval(overlay_data_dir: Path, tmp_path: Path) -> None:
    """The field mapping of all six tasks: lm-eval builds each local task from the generated JSON lines, with the
    installed leaderboard YAML's prompts (no model needed)."""
    from lm_eval.tasks import TaskManager

    ok, skipped = available_tasks(overlay_data_dir)
    assert [t.name for t in ok] == RUNNABLE
    assert set(skipped) == {"ja_leaderboard_mgsm", "ja_leaderboard_xlsum"}
    prepared = prepare_tasks(ok, overlay_data_dir, tmp_path)
    manager = TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False)
    tasks = manager.load([p.task.local_name for p in prepared])["tasks"]
    first: dict[str, dict[str, Any]] = {}
    for p in prepared:
        task = tasks[p.task.local_name]
        docs = list(task.test_docs() if p.task.name == XWINO else task.validation_docs())
        n_eval = next(f["records"] for f in p.data)
        assert len(docs) == n_eval, p.task.name
        first[p.task.name] = {"doc": docs[0], "text": task.doc_to_text(docs[0]), "target": task.doc_to_target(docs[0]),
                              "choices": task.doc_to_choice(docs[0]) if task.OUTPUT_TYPE == "multiple_choice"
                              else None}
    jc = first[JCQA]
    assert jc["choices"] == [jc["doc"][f"choice{i}"] for i in range(5)] and jc["target"] == jc["doc"]["label"]
    assert "- " + jc["doc"]["choice0"] + "\n" in jc["text"]
    jn = first["ja_leaderboard_jnli"]
    assert jn["choices"] == ["含意", "矛盾", "中立"] and isinstance(jn["target"], int)
    assert f"前提：{jn['doc']['sentence1']}\n仮説：{jn['doc']['sentence2']}" in jn["text"]
    mj = first["ja_leaderboard_marc_ja"]
    assert mj["choices"] == ["ポジティブ", "ネガティブ"] and mj["target"] == mj["doc"]["label"]
    sq = first["ja_leaderboard_jsquad"]
    assert sq["target"] == sq["doc"]["answers"]["text"][0]
    assert "[SEP]" in sq["doc"]["context"] and "[SEP]" not in sq["text"]
    jq = first["ja_leaderboard_jaqket_v2"]
    assert jq["target"] == jq["doc"]["answers"]["text"][0]
    assert "文脈：" + "\n".join(jq["doc"]["ctxs"]["text"]) + "\n質問：" in jq["text"]
    assert len(jq["doc"]["ctxs"]["text"]) == 5
    xw = first[XWINO]
    assert xw["choices"] == [xw["doc"]["sentence1"].strip(), xw["doc"]["sentence2"].strip()]
    assert xw["target"] == int(xw["doc"]["answer"]) - 1 and xw["text"] == ""


def test_generation_sample_row_from_lm_eval_sample() -> None:
    """The generation row keeps the filtered text the metric saw and lm-eval's exact_match (0/1)."""
    task = JA_LEADERBOARD["ja_leaderboard_jsquad"]
    sample = {"doc_id": 3, "doc": {"id": "a1p0q3", "context": "t [SEP] c", "question": "q",
                                   "answers": {"text": ["東京"], "answer_start": [0]}},
              "target": "東京", "arguments": [("PROMPT", {"until": ["\n\n"], "do_sample": False})],
              "resps": [[" 東京\n"]], "filtered_resps": ["東京"], "filter": "whitespaces", "exact_match": 1.0,
              "prompt_hash": "h"}
    row = gen_row(task, sample, 256)
    assert row == {"doc_index": 3, "doc_id": "a1p0q3", "prompt": "PROMPT", "until": ["\n\n"], "max_gen_tokens": 256,
                   "prediction": "東京", "raw_prediction": " 東京\n", "golds": ["東京"], "exact_match": 1.0,
                   "filter": "whitespaces", "lm_eval_prompt_hash": "h"}
    mc = mc_row(JA_LEADERBOARD[XWINO], {"doc_id": 0, "doc": {}, "target": 0, "arguments": [("", "a"), ("", "b")],
                                         "filtered_resps": [(-1.0, False), (-1.0, False)], "acc": 1.0})
    assert mc["prediction"] == 0 and mc["gold"] == 0 and mc["doc_id"] == "0"  # a tie goes to the lower index


def test_task_names_and_unrunnable_tasks(tmp_path: Path) -> None:
    from jbench.errors import DataError, TaskError

    assert [t.name for t in resolve_tasks(["jcommonsenseqa", "ja_leaderboard_jnli", "xwinograd_ja", "jnli"])] == [
        JCQA, "ja_leaderboard_jnli", XWINO]
    assert len(resolve_tasks(["all"])) == len(JA_LEADERBOARD) == 8
    with pytest.raises(TaskError):
        resolve_tasks(["hellaswag"])
    from jbench.models.load import ModelSpec

    with pytest.raises(DataError, match="mgsm"):
        run_ja_leaderboard(ModelSpec(), tmp_path, tmp_path / "run", tasks=["mgsm"])
    with pytest.raises(DataError, match="no japanese_leaderboard task"):
        run_ja_leaderboard(ModelSpec(), tmp_path, tmp_path / "run")
