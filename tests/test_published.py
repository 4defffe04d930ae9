"""Issue 17: the published-numbers registry (in sync with the raw files), `jbench published`, the reproduction
verdict against a stored run, the presets checked against the reference sources, and the average audit."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from jbench.published import registry
from jbench.published.build import build_registry, dumps, parse_harness, split_task
from jbench.published.registry import PublishedError, pick_source, sources_for
from jbench.published.render import average_rows
from jbench.published.verdict import compare

ROOT = Path(__file__).resolve().parents[1]
NEOX = "rinna/japanese-gpt-neox-3.6b"


@pytest.fixture(scope="session")
def published_dir() -> Path:
    """The raw published results: $JBENCH_PUBLISHED_DIR, else `published/` beside the data dir, else
    ../shared/published beside the checkout. In CI their absence fails (the sync test must run there)."""
    cands = [os.environ.get("JBENCH_PUBLISHED_DIR")]
    if os.environ.get("JBENCH_DATA_DIR"):
        cands.append(str(Path(os.environ["JBENCH_DATA_DIR"]).resolve().parent / "published"))
    cands.append(str(ROOT.parent / "shared" / "published"))
    for c in cands:
        if c and (Path(c) / "cards.md").is_file():
            return Path(c)
    if os.environ.get("CI"):
        pytest.fail(f"the raw published results are not found (tried {[c for c in cands if c]}): set "
                    "JBENCH_PUBLISHED_DIR to the shared/published folder")
    pytest.skip("no shared/published folder (set JBENCH_PUBLISHED_DIR)")


def test_shipped_registry_is_in_sync_with_the_raw_files(published_dir: Path) -> None:
    rebuilt = dumps(build_registry(published_dir))
    shipped = registry.REGISTRY_FILE.read_text(encoding="utf-8")
    assert rebuilt == shipped, "jbench/published/published.json is stale: run tools/build_published.py"


def test_the_build_tool_check_mode(published_dir: Path) -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(ROOT / "tools" / "build_published.py"), str(published_dir), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "in sync" in out.stdout, out.stdout + out.stderr
    bad = subprocess.run([sys.executable, str(ROOT / "tools" / "build_published.py"), str(ROOT), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not a published-results folder" in bad.stderr


def test_every_number_carries_its_provenance() -> None:
    for s in registry.all_sources():
        assert s.url and s.model and s.id
        if s.kind == "reference":
            assert s.commit and s.path and s.path.startswith("models/") and s.model_args
            assert s.dtype in ("auto", "float32", "float16", "bfloat16")
        for t in s.tasks:
            assert t.metrics and all("value" in v for v in t.metrics.values())
    cards = [s for s in registry.all_sources() if s.kind == "card"]
    assert cards and all(s.settings_unknown for s in cards)  # no card states all of its settings


def test_the_neox_source_is_read_from_the_reference_files() -> None:
    src = pick_source(NEOX)
    assert src.id == "jp-stable:rinna/rinna-japanese-gpt-neox-3.6b/result.json"
    shots = {t.family: t.shots for t in src.tasks}
    assert shots == {"jcommonsenseqa": 3, "jnli": 3, "marc_ja": 3, "jsquad": 2, "jaqket_v2": 1, "xlsum_ja": 1,
                     "xwinograd_ja": 0, "mgsm": 5}
    assert (src.use_fast, src.dtype) == (False, "float32")
    assert {t.prompt_version for t in src.tasks if t.family in ("jcommonsenseqa", "jnli", "jsquad")} == {"0.2"}
    jcqa = next(t for t in src.tasks if t.family == "jcommonsenseqa")
    assert jcqa.n == 1119 and "%.4f" % jcqa.metrics["acc"]["value"] == "0.3164"


def test_harness_parsing_and_task_names(published_dir: Path) -> None:
    exp = published_dir / "jp-stable-models/stabilityai/experiments"
    h = parse_harness(exp / "stablelm-jp-instruct-1b_1.3.2/harness.sh")
    assert h["tasks"][0] == "jsquad-1.1-0.3" and h["num_fewshot"] == [2, 3, 3, 3]
    assert "use_fast=False" in h["model_args"]
    assert split_task("jnli") == ("jnli", "0.2") and split_task("jaqket_v2-0.1-0.2") == ("jaqket_v2", "0.2")
    # the result file orders tasks by request type, so shots must follow the harness's task names
    src = pick_source("jp-stable:stabilityai/experiments/stablelm-jp-instruct-1b_1.3.2")
    assert {t.task: t.shots for t in src.tasks}["jsquad-1.1-0.3"] == 2


def test_published_prints_the_card_table_and_both_sources(jbench_main: Callable[..., int],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert jbench_main("published", NEOX) == 0
    out = capsys.readouterr().out
    assert "|jcommonsenseqa-1.1-0.2|    1.1|acc        | 0.3164|±  |0.0139|" in out
    for expected in ("|jnli-1.1-0.2          |    1.1|acc        | 0.3443|", "|marc_ja-1.1-0.2       |    1.1|acc "
                     "       | 0.7482|", "|jsquad-1.1-0.2        |    1.1|exact_match|47.9063|",
                     "| **4-task average** |                        | 47.20 |",
                     "printed 4-task average: 55.07", "commit effdbeaf742e", "SETTINGS UNKNOWN"):
        assert expected in out, expected
    assert out.index("47.20") < out.index("55.07")  # one block per source, the reference's first


def test_published_formats_and_listing(jbench_main: Callable[..., int], capsys: pytest.CaptureFixture[str]) -> None:
    assert jbench_main("published", NEOX, "--format", "csv") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("model,source,kind,task,task_version,prompt_version,shots,metric,value,stderr")
    assert any(",jcommonsenseqa-1.1-0.2,1.1,0.2,3,acc,0.3163538873994638,0.013908534121227658," in ln for ln in lines)
    assert any("4-task average" in ln and "55.07" in ln for ln in lines)
    assert jbench_main("published", NEOX, "--format", "json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["sources"][0]["averages"]["4-task"] == pytest.approx(47.2, abs=0.005)
    assert jbench_main("published") == 0
    out = capsys.readouterr().out
    assert NEOX in out and "Rakuten/RakutenAI-7B-instruct" in out
    assert jbench_main("published", "--averages", "--format", "csv") == 0
    assert "IRREPRODUCIBLE" not in capsys.readouterr().out


@pytest.mark.parametrize("argv, expected", [
    (("published", "rinna/japanese-gpt-neox-3.6"), "did you mean: rinna/japanese-gpt-neox-3.6b"),
    (("published", NEOX, "--format", "xml"), "unknown format 'xml'"),
    (("reproduce", NEOX, "--source", "nope", "--dry-run"), "has no published source 'nope'"),
    (("reproduce", NEOX, "--source", "card", "--dry-run"), "does not state its"),
    (("reproduce", "jp-stable:stabilityai/experiments/stablelm-jp-instruct-1b_1.3.2", "--dry-run"),
     "machine-local checkpoint"),
])
def test_bad_input_is_one_message_exit_2(jbench_main: Callable[..., int], capsys: pytest.CaptureFixture[str],
                                         argv: tuple[str, ...], expected: str) -> None:
    assert jbench_main(*argv) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_reproduce_dry_run_reads_every_setting_from_the_source(jbench_main: Callable[..., int],
                                                                capsys: pytest.CaptureFixture[str],
                                                                real_data_dir: Path) -> None:
    assert jbench_main("reproduce", NEOX, "--dry-run", "--data-dir", str(real_data_dir)) == 0
    out = capsys.readouterr().out
    for expected in ("prompt version: 0.2", "use_fast=False", "dtype: fp32", "jcommonsenseqa-1.1-0.2   3 shots",
                     "jnli-1.1-0.2             3 shots", "marc_ja-1.1-0.2          3 shots",
                     "jsquad-1.1-0.2           2 shots", "jaqket_v2-0.1-0.2        1 shot",
                     "xwinograd_ja             0 shots", "skipped: jbench has no xlsum_ja task",
                     "--no-use-fast --variant fp32"):
        assert expected in out, expected


def _run(results: dict, *, n: int = 20, madeup: bool = False, shots: int = 3) -> dict:
    task = next(iter(results))
    return {"results": results, "n_samples": {task: n},
            "config": {"model": NEOX, "tasks": [task], "num_fewshot": [shots], "use_fast": False, "dtype": "float32",
                       "data": {task: [{"madeup": madeup, "expected": "official"}]}}}


def test_verdicts_reproduced_differs_and_not_comparable() -> None:
    src = pick_source(NEOX)
    full = {"jcommonsenseqa-1.1-0.2": {"acc": 0.3163538873994638, "acc_norm": 0.2725647899910634}}
    rep = compare(src, _run(full, n=1119), "run")
    v = {t.task: t for t in rep.tasks}
    assert v["jcommonsenseqa-1.1-0.2"].verdict == "reproduced" and v["jcommonsenseqa-1.1-0.2"].why == "exactly"
    assert v["xlsum_ja"].verdict == "not comparable" and "no xlsum_ja task" in v["xlsum_ja"].why
    assert v["jnli-1.1-0.2"].why == "not in the run" and not v["jnli-1.1-0.2"].covered and rep.exit_code == 0
    # 3 points at n=1119 is beyond 1.96*sqrt(.32*.68/1119) = 2.7 points; at n=50 it is noise
    moved = {"jcommonsenseqa-1.1-0.2": {"acc": 0.2863, "acc_norm": 0.2725647899910634}}
    assert compare(src, _run(moved, n=1119), "run").exit_code == 1
    at50 = compare(src, _run(moved, n=50), "run")  # within noise, but 50 of 1119 documents: not a reproduction
    assert at50.exit_code == 2 and at50.tasks[0].verdict == "consistent" and "n=50 only" in at50.tasks[0].why
    assert "made-up" in compare(src, _run(full, madeup=True), "run").tasks[0].why
    assert compare(src, _run(full, madeup=True), "run").exit_code == 2
    assert "different shots" in compare(src, _run(full, shots=2), "run").tasks[0].why
    other = {"jcommonsenseqa-1.1-0.3": {"acc": 0.3}}
    assert "different task version" in compare(src, _run(other), "run").tasks[0].why


def test_presets_agree_with_the_reference_sources() -> None:
    """Every preset model with a reference result file: prompt version, use_fast, dtype and jbench's default shots
    equal what the source ran, unless the preset says (in `notes`) that it differs on purpose."""
    from jbench.plan import DEFAULT_SHOTS, DEFAULT_SUITE
    from jbench.presets import load_presets

    default_shots = dict(zip(DEFAULT_SUITE, DEFAULT_SHOTS))
    checked = []
    for preset in load_presets():
        for model in preset.exact_ids:
            try:
                src = pick_source(model)
            except PublishedError:
                continue
            if src.kind != "reference":
                continue
            checked.append(model)
            pvs = {t.prompt_version for t in src.tasks if t.family in default_shots and t.prompt_version}
            diffs = []
            if pvs != {preset.prompt_version}:
                diffs.append(f"prompt_version {preset.prompt_version} vs source {sorted(pvs)}")
            if preset.tokenizer.use_fast != src.use_fast:
                diffs.append(f"use_fast {preset.tokenizer.use_fast} vs source {src.use_fast}")
            if preset.dtype != src.dtype:
                diffs.append(f"dtype {preset.dtype} vs source {src.dtype}")
            for t in src.tasks:
                if t.family in default_shots and t.shots != default_shots[t.family]:
                    diffs.append(f"{t.family} shots {default_shots[t.family]} vs source {t.shots}")
            unexplained = [d for d in diffs if d.split()[0] not in (preset.notes or "") or
                           "on purpose" not in (preset.notes or "")]
            assert not unexplained, f"preset {preset.name} ({model}) differs from {src.id}: {unexplained}"
    assert len(checked) >= 6, checked  # rinna 3.6b (+sft, sft-v2, ppo), bilingual 4b (+sft, ppo)


def test_printed_averages_are_audited() -> None:
    rows = [r for s in registry.all_sources() for r in average_rows(s)]
    rakuten = [r for r in rows if r["source"].startswith("card:Rakuten")]
    assert len(rakuten) == 14 and all(r["verdict"].startswith("reproduced") for r in rakuten)
    neox_card = [r for r in rows if r["model"] == NEOX]
    assert {r["printed"] for r in neox_card} == {55.07, 50.32}
    assert all("not computable" in r["verdict"] for r in neox_card)
    assert average_rows(pick_source(NEOX)) == []  # a result file prints no average


def test_unknown_model_hint_and_extra_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PublishedError) as err:
        sources_for("japanese-gpt-neox-3.6b")
    assert NEOX in str(err.value)
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"sources": [{"id": "test:x", "model": "org/x", "kind": "test", "tasks": []}]}))
    monkeypatch.setenv(registry.EXTRA_ENV, str(extra))
    assert sources_for("org/x")[0].id == "test:x"
    extra.write_text("{not json")
    os.utime(extra, (1, 1))
    with pytest.raises(PublishedError):
        registry.all_sources()


# --- hostile-test regressions: every case runs through the CLI on a stored run directory ---------------------------

JCQA = "jcommonsenseqa-1.1-0.2"
JCQA_ACC, JCQA_N = 0.3163538873994638, 1119


def _store(tmp_path: Path, name: str, *, model: str = NEOX, use_fast: bool = False, dtype: str = "float32",
           max_length: int | None = None, n: int = JCQA_N, limit: int | None = None, acc: float = JCQA_ACC,
           shots: int = 3, model_args: dict | None = None, data: list | None = None, extra: dict | None = None) -> Path:
    """A run directory as `jbench eval` writes it (the fields the published comparison reads)."""
    run = tmp_path / name
    run.mkdir()
    cfg = {"model": model, "model_path": model, "use_fast": use_fast, "dtype": dtype, "variant": "fp32",
           "max_length": max_length, "quantization": None, "model_kwargs": {},
           "spec": {"max_length": max_length, "model_args": model_args or {}, "use_fast": use_fast},
           "tasks": [JCQA, *(extra or {})], "num_fewshot": [shots] + [3] * len(extra or {}), "limit": limit,
           "data": {JCQA: data if data is not None else [{"path": "jglue/jcommonsenseqa-v1.1/valid-v1.1.json",
                                                          "expected": "official", "madeup": False}]}}
    doc = {"results": {JCQA: {"acc": acc}, **(extra or {})}, "versions": {JCQA: 1.1}, "config": cfg,
           "n_samples": {JCQA: n, **{k: 2434 for k in extra or {}}}}  # extra: JNLI, 2434 documents
    (run / "results.json").write_text(json.dumps(doc), encoding="utf-8")
    return run


def _check(jbench_main: Callable[..., int], capsys: pytest.CaptureFixture[str], run: Path,
           ref: str = f"published:{NEOX}") -> tuple[int, str]:
    code = jbench_main("check", str(run), "--baseline", ref)
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    return code, cap.out + cap.err


def test_a_run_unlike_the_source_is_never_reproduced(jbench_main: Callable[..., int],
                                                     capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The hostile repro: the embedded tiny model, use_fast=True, max_length=40, 6 documents, checked against
    rinna's result.json, said REPRODUCED (exit 0)."""
    code, out = _check(jbench_main, capsys, _store(tmp_path, "fast", model="tiny (embedded)", use_fast=True,
                                                   max_length=40, n=6, limit=6, acc=0.0))
    assert code == 2 and "REPRODUCED:" not in out and "| reproduced" not in out, out
    assert "NOT COMPARABLE: of the 1 source task(s) the run covers" in out
    assert "another model (the run is of tiny (embedded), the source of rinna/japanese-gpt-neox-3.6b)" in out
    assert "another tokenizer setting (the run use_fast=True, the source use_fast=False)" in out
    assert "max_length=40 set by the run" in out


@pytest.mark.parametrize("kwargs, why", [
    ({"dtype": "float16"}, "another dtype (the run float16, the source float32)"),
    ({"model_args": {"attn_implementation": "eager"}}, "model args the source did not use: attn_implementation=eager"),
    ({"model": "/models/my-copy"}, "another model (the run is of /models/my-copy"),
])
def test_each_setting_the_source_fixed_makes_it_not_comparable(jbench_main: Callable[..., int],
                                                               capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                               kwargs: dict, why: str) -> None:
    code, out = _check(jbench_main, capsys, _store(tmp_path, "r", **kwargs))
    assert code == 2 and why in out and "NOT COMPARABLE" in out, out


def test_headline_reproduced_consistent_partial(jbench_main: Callable[..., int], capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path) -> None:
    # the full 1119 documents with the source's settings (a Hub-cache path names the model too): REPRODUCED
    hub = "/cache/hub/models--rinna--japanese-gpt-neox-3.6b/snapshots/abc"
    code, out = _check(jbench_main, capsys, _store(tmp_path, "full", model=hub))
    assert code == 0 and "REPRODUCED: of the 1 source task(s) the run covers, 1 reproduced" in out, out
    assert "7 more source task(s) not covered by the run" in out
    # 6 documents within noise: consistent at n=6, never "reproduced"
    code, out = _check(jbench_main, capsys, _store(tmp_path, "lim", n=6, limit=6))
    assert code == 2 and "CONSISTENT AT A REDUCED N" in out and "within noise at n=6 only (the source: n=1119)" in out
    # one covered task reproduced, one covered task not comparable (other shots): PARTIAL, exit 2
    code, out = _check(jbench_main, capsys, _store(tmp_path, "part", extra={"jnli-1.1-0.2": {"acc": 0.3443}},
                                                   shots=2))
    assert code == 2 and "PARTIAL: of the 2 source task(s) the run covers, 1 reproduced" in out, out
    assert "not comparable: different shots (the run 2, the source 3)" in out
    code, out = _check(jbench_main, capsys, _store(tmp_path, "both", extra={"jnli-1.1-0.2": {"acc": 0.3443}}))
    assert code == 0 and "REPRODUCED: of the 2 source task(s) the run covers, 2 reproduced" in out, out


def test_a_malformed_results_json_is_one_message(jbench_main: Callable[..., int],
                                                 capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run = tmp_path / "bad"
    run.mkdir()
    (run / "results.json").write_text('{"results": 5}', encoding="utf-8")
    for argv in (("table", str(run), "--format", "csv"), ("table", str(run), "--no-published"),
                 ("check", str(run), "--baseline", f"published:{NEOX}")):
        assert jbench_main(*argv) == 2, argv
        err = capsys.readouterr().err
        assert "malformed results.json: field `results` should be an object mapping task name -> metrics, got a " \
               "number (5)" in err and "Traceback" not in err, (argv, err)


def test_a_declared_data_source_is_verified(jbench_main: Callable[..., int], capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path, real_data_dir: Path) -> None:
    """`jbench data --source jcommonsenseqa=FOLDER`: byte-identical official files are comparable; other files are
    a declared source, never "the bundled sample's subset"."""
    import shutil

    from jbench.data.sources import tree_sha256

    same, edited = tmp_path / "same", tmp_path / "edited"
    for folder in (same, edited):
        folder.mkdir()
        shutil.copy(real_data_dir / "jglue/jcommonsenseqa-v1.1/valid-v1.1.json", folder / "valid-v1.1.json")
    (edited / "valid-v1.1.json").write_text(
        (same / "valid-v1.1.json").read_text(encoding="utf-8").replace("\n", "\n ", 1), encoding="utf-8")

    def files(folder: Path) -> list:
        return [{"path": f"{folder}#validation", "sha256": tree_sha256(folder), "expected": "manifest",
                 "madeup": False}]

    code, out = _check(jbench_main, capsys, _store(tmp_path, "same-run", data=files(same)))
    assert code == 0 and "| 1119 | reproduced" in out, out
    code, out = _check(jbench_main, capsys, _store(tmp_path, "edited-run", data=files(edited)))
    assert code == 2 and f"declared data source ({edited}, validation): not the reference's files" in out, out
    assert "bundled sample" not in out


def test_published_averages_of_one_model(jbench_main: Callable[..., int], capsys: pytest.CaptureFixture[str]) -> None:
    assert jbench_main("published", NEOX, "--averages", "--format", "csv") == 0
    rows = capsys.readouterr().out.strip().splitlines()[1:]
    assert len(rows) == 5 and all(r.startswith(NEOX + ",") for r in rows), rows
    assert jbench_main("published", "nobody/none", "--averages") == 2


@pytest.mark.parametrize("argv, expected", [
    (("check", "RUN", "--baseline", f"published:{NEOX}@bogus"), f"where: --baseline published:{NEOX}@bogus"),
    (("check", "RUN", "--baseline", f"published:{NEOX}", "--mode", "exact"),
     "--mode exact cannot apply to a published baseline"),
    (("reproduce", NEOX, "--source", "1", "--source", "2", "--dry-run"), "--source given 2 times (1, 2)"),
    (("reproduce", NEOX, "--source", "result.mgsm.json", "--dry-run"), "no task of jp-stable:rinna/"),
])
def test_published_flags_are_refused_not_ignored(jbench_main: Callable[..., int], capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path, argv: tuple[str, ...], expected: str) -> None:
    run = _store(tmp_path, "r")
    assert jbench_main(*[str(run) if a == "RUN" else a for a in argv]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err, err


def test_a_card_with_only_averages_says_why(jbench_main: Callable[..., int], capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path) -> None:
    code, out = _check(jbench_main, capsys, _store(tmp_path, "r"), f"published:{NEOX}@card")
    assert code == 2
    assert ("NOT COMPARABLE: card:rinna/bilingual-gpt-neox-4b-instruction-ppo#japanese-gpt-neox-3.6b publishes no "
            "per-task number, only averages (4-task 55.07, 6-task 50.32), and does not state its") in out, out


@pytest.mark.parametrize("model_args", [
    {"gpu_memory_utilization": "0.5", "max_memory": {"0": "20GiB"}},
    {"tensor_parallel_size": "2"}, {"offload_folder": "/tmp/off"}, {"device_map": "auto"},
])
def test_placement_and_memory_args_keep_a_run_comparable(jbench_main: Callable[..., int],
                                                         capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                         model_args: dict) -> None:
    """The neutral set is jbench.run_identity.NEUTRAL_MODEL_ARGS, the same one that leaves run names alone."""
    hub = "/cache/hub/models--rinna--japanese-gpt-neox-3.6b/snapshots/abc"
    code, out = _check(jbench_main, capsys, _store(tmp_path, "r", model=hub, model_args=model_args))
    assert code == 0 and "REPRODUCED" in out and "model args the source did not use" not in out, out


STABLELM = "stabilityai/japanese-stablelm-base-alpha-7b"


def test_a_source_with_another_tokenizer_is_not_comparable(jbench_main: Callable[..., int],
                                                           capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                           real_data_dir: Path) -> None:
    """The source loaded ./tokenizers/nai-hf-tokenizer/ instead of the model's own: a run with the model's own
    tokenizer is not comparable, whatever its numbers; the dry run says so."""
    why = "the source used another tokenizer: ./tokenizers/nai-hf-tokenizer/ (not the model's own)"
    code, out = _check(jbench_main, capsys, _store(tmp_path, "own", model=STABLELM), ref=f"published:{STABLELM}")
    assert code == 2 and why in out and "the run used the model's own" in out, out
    run = _store(tmp_path, "nai", model=STABLELM)  # a run that did use those tokenizer files
    doc = json.loads((run / "results.json").read_text())
    doc["config"]["spec"]["extra"] = {"tokenizer": "/data/tokenizers/nai-hf-tokenizer"}
    (run / "results.json").write_text(json.dumps(doc))
    code, out = _check(jbench_main, capsys, run, ref=f"published:{STABLELM}")
    assert "another tokenizer" not in out, out
    assert jbench_main("reproduce", STABLELM, "--checkpoint", str(tmp_path), "--dry-run", "--data-dir",
                       str(real_data_dir)) == 0
    assert "tokenizer files: ./tokenizers/nai-hf-tokenizer/ (the source's tokenizer=" in capsys.readouterr().out
    neox = compare(pick_source(NEOX), _run({JCQA: {"acc": JCQA_ACC}}, n=JCQA_N), "run")  # tokenizer= == pretrained
    assert not any("tokenizer" in p for p in neox.problems)
