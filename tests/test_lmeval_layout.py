"""lm-eval 0.4's layout beside results.json (issue 16): lm-eval's own ``make_table`` and file discovery read it.

Runs are built from records (no model), so this module stays in ``make test-fast``; test_wandb_log.py checks the
same on a real tiny-model run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from jbench.lmeval_layout import LMEVAL_DIR
from jbench.records import GenRow, MCRow, RunRecord
from jbench.results import load_run, write_run

lm_utils = pytest.importorskip("lm_eval.utils")


def _mc_rows(n: int, correct: int) -> list[dict[str, Any]]:
    return [MCRow(doc_index=i, doc_id=f"q{i}", native_index=n - 1 - i, prompt=f"質問{i}：答えは？\n答え：",
                  continuations=["犬", "猫", "鳥"], loglikelihoods=[-1.5, -0.5 if i < correct else -3.0, -2.0],
                  prediction=1 if i < correct else 0, gold=1, acc=float(i < correct), acc_norm=float(i < correct),
                  shot_ids=[]).to_json() for i in range(n)]


def _gen_rows(n: int) -> list[dict[str, Any]]:
    return [GenRow(doc_index=i, doc_id=f"a{i}", native_index=i, prompt=f"文脈{i}\n質問：どこ？\n答え:",
                   until="\n", max_gen_tokens=4, prediction="東京" if i % 2 else "大阪", golds=["東京", "東京都"],
                   exact_match=100.0 * (i % 2), f1=100.0 * (i % 2)).to_json() for i in range(n)]


def make_record(*, jnli_madeup: bool = False, mismatch: bool = False) -> RunRecord:
    """A run of three tasks: JCQA and JNLI (acc with stderr), JSQuAD (exact_match / f1, no stderr: "N/A")."""
    rows = {"jcommonsenseqa-1.1-0.3": _mc_rows(8, 5), "jnli-1.1-0.3": _mc_rows(6, 4), "jsquad-1.1-0.3": _gen_rows(6)}
    results = {
        "jcommonsenseqa-1.1-0.3": {"acc": 0.625, "acc_stderr": 0.183, "acc_norm": 0.625, "acc_norm_stderr": 0.183},
        "jnli-1.1-0.3": {"acc": 4 / 6, "acc_stderr": 0.21, "acc_norm": 4 / 6, "acc_norm_stderr": 0.21},
        "jsquad-1.1-0.3": {"exact_match": 50.0, "f1": 50.0},
    }
    data = {t: [{"path": f"{t}.json", "records": 40, "madeup": jnli_madeup and t.startswith("jnli"),
                 "mismatch": "sha256 differs" if mismatch and t.startswith("jsquad") else None}] for t in rows}
    docs = {t: [{"id": r["doc_id"], "question": r["prompt"]} for r in rs] for t, rs in rows.items()}
    config = {"model": "org/モデル-7b", "model_args": "pretrained=org/モデル-7b", "variant": "fp16", "device": "cpu",
              "batch_size": "auto", "limit": 8, "tasks": list(rows), "num_fewshot": [3, 3, 2],
              "prompt_versions": {t: "0.3" for t in rows}, "data": data, "max_length": 2048,
              "seeds": {"shuffle": 42, "python": 1234, "numpy": 1234}, "git_commit": "0123456789abcdef",
              "jbench_version": "0.1.0"}
    return RunRecord(results=results, versions={t: 1.1 for t in rows}, config=config,
                     n_samples={t: len(r) for t, r in rows.items()}, timings={"total_s": 12.5}, rows=rows, docs=docs)


def _lm_files(run_dir: Path) -> list[str]:
    return sorted(str(p) for p in (run_dir / LMEVAL_DIR).iterdir())


def _table_rows(table: str) -> list[list[str]]:
    lines = table.strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["Tasks", "Version", "Filter", "n-shot", "Metric", "", "Value", "", "Stderr"]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def test_make_table_shows_every_value_stderr_and_nshot(tmp_path: Path) -> None:
    record = make_record()
    write_run(tmp_path / "run", record)
    results_file = lm_utils.get_latest_filename(lm_utils.get_results_filenames(_lm_files(tmp_path / "run")))
    data = json.loads(Path(results_file).read_text(encoding="utf-8"))
    rows = _table_rows(lm_utils.make_table(data))
    assert len(rows) == 6  # 2 + 2 + 2 metrics
    task = ""
    seen: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        task = r[0] or task
        assert r[3], f"empty n-shot cell: {r}"
        assert r[7] == "±" and r[8], f"empty stderr cell: {r}"
        seen[(task, r[4])] = r
    assert seen[("jcommonsenseqa-1.1-0.3", "acc")][3] == "3"
    assert seen[("jsquad-1.1-0.3", "exact_match")][3] == "2"
    # values as pytablewriter formats them (column-wide decimals): compare as numbers
    assert [float(seen[("jcommonsenseqa-1.1-0.3", "acc")][i]) for i in (6, 8)] == [0.625, 0.183]
    assert float(seen[("jnli-1.1-0.3", "acc")][8]) == 0.21
    assert float(seen[("jsquad-1.1-0.3", "f1")][6]) == 50.0
    assert seen[("jsquad-1.1-0.3", "f1")][8] == "N/A"  # lm-eval's stderr for a metric that has none
    assert data["results"]["jnli-1.1-0.3"]["acc,none"] == pytest.approx(4 / 6)
    assert data["results"]["jnli-1.1-0.3"]["acc_stderr,none"] == 0.21
    for key in ("results", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better", "n-samples",
                "config", "date", "git_hash", "task_hashes", "model_name_sanitized"):
        assert key in data, key
    assert data["n-shot"] == {"jcommonsenseqa-1.1-0.3": 3, "jnli-1.1-0.3": 3, "jsquad-1.1-0.3": 2}
    assert data["higher_is_better"]["jsquad-1.1-0.3"] == {"exact_match": True, "f1": True}
    assert data["configs"]["jsquad-1.1-0.3"]["output_type"] == "generate_until"
    assert data["configs"]["jnli-1.1-0.3"]["output_type"] == "multiple_choice"
    assert data["n-samples"]["jsquad-1.1-0.3"] == {"original": 40, "effective": 6}
    assert data["config"]["model_args"] == "pretrained=org/モデル-7b" and data["config"]["limit"] == 8
    assert data["model_name_sanitized"] == "org__モデル-7b"
    assert isinstance(data["date"], float)


def test_lm_eval_discovery_finds_results_and_samples(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    record = make_record()
    write_run(run_dir, record)
    files = _lm_files(run_dir)
    results = lm_utils.get_results_filenames(files)
    samples = lm_utils.get_sample_results_filenames(files)
    assert len(results) == 1 and len(samples) == 3
    stamp = lm_utils.get_file_datetime(os.path.basename(results[0])).removesuffix(".json")  # lm-eval strips .jsonl only
    assert stamp[:4].isdigit() and "T" in stamp and ":" not in stamp
    names = {lm_utils.get_file_task_name(os.path.basename(f)): f for f in samples}
    assert set(names) == set(record.results)
    assert {lm_utils.get_file_datetime(os.path.basename(f)) for f in samples} == {stamp}
    lines = Path(names["jcommonsenseqa-1.1-0.3"]).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 8
    s = json.loads(lines[0])
    for key in ("doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter", "metrics", "doc_hash",
                "prompt_hash", "target_hash", "acc", "acc_norm"):
        assert key in s, key
    assert s["doc_id"] == 7 and s["doc"] == {"id": "q0", "question": "質問0：答えは？\n答え："}
    assert s["target"] == "1" and s["metrics"] == ["acc", "acc_norm"] and s["acc"] == 1.0
    assert s["arguments"]["gen_args_1"] == {"arg_0": "質問0：答えは？\n答え：", "arg_1": "猫"}
    assert s["filtered_resps"][1] == ["-0.5", "None"] and s["resps"][1] == [["-0.5", "None"]]
    g = json.loads(Path(names["jsquad-1.1-0.3"]).read_text(encoding="utf-8").splitlines()[1])
    assert g["arguments"]["gen_args_0"]["arg_1"] == {"until": ["\n"], "do_sample": False, "max_gen_toks": 4}
    assert g["resps"] == [["東京"]] and g["filtered_resps"] == ["東京"] and g["exact_match"] == 100.0
    assert g["target"] == "['東京', '東京都']"  # lm-eval stores str(target)
    # jbench's own readers are unchanged
    run = load_run(run_dir)
    assert list(run.results) == list(record.results)
    assert len(run.samples("jnli-1.1-0.3")) == 6


def test_rerun_replaces_the_layout_and_a_failed_write_keeps_the_old_one(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = tmp_path / "run"
    write_run(run_dir, make_record())
    first = _lm_files(run_dir)
    write_run(run_dir, make_record())
    second = _lm_files(run_dir)
    assert len(second) == 4 and second != first  # one results file (the current run's), no stale files

    import jbench.lmeval_layout as layout

    def broken(record: RunRecord, **_: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(layout, "build_layout", broken)
    with pytest.raises(RuntimeError):
        write_run(run_dir, make_record())
    assert _lm_files(run_dir) == second and (run_dir / "results.json").is_file()
    assert not (run_dir / ".staging").exists()
