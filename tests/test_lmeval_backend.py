"""``--model jbench`` (jbench/lmeval_backend.py) must give lm-eval's ``--model hf`` results, sample by sample.

Why: the backend re-implements lm-eval's request semantics (joint ``_encode_pair`` tokenization, the BOS/EOS
prefix for empty contexts, left truncation, stop strings + EOS, ``max_gen_toks``) on jbench's shared-prefix scorer;
the only acceptable differences are float noise in the log-likelihoods. Everything runs offline on tiny models.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "HF_EVALUATE_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
LL_TOL = 1e-4
#: metrics computed from decisions (argmax, string equality): these must be identical, not just close.
COUNTED = {"acc", "acc_norm", "exact_match"}


@pytest.fixture(scope="module")
def lm_eval_offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """lm-eval with the jbench backend registered, HF libraries offline, the datasets cache in a temp dir, and one
    torch thread (tiny models are op-overhead bound; on a shared 2-core machine a second thread mostly waits)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("hf-home")
        for key, value in {**OFFLINE_ENV, "HF_HOME": str(home), "HF_DATASETS_CACHE": str(home / "datasets")}.items():
            mp.setenv(key, value)
        import datasets
        import lm_eval

        import jbench.lmeval_backend  # noqa: F401  - registers "jbench"

        mp.setattr(datasets.config, "HF_DATASETS_CACHE", str(home / "datasets"), raising=False)
        mp.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
        try:
            yield lm_eval
        finally:
            torch.set_num_threads(threads)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _evaluate(lm_eval: Any, model: str, model_dir: Path, include: Path, tasks: list[str], limit: int,
              extra_args: str = "") -> dict[str, Any]:
    from lm_eval.tasks import TaskManager

    return lm_eval.simple_evaluate(
        model=model, model_args=f"pretrained={model_dir},dtype=float32{extra_args}", tasks=tasks,
        task_manager=TaskManager(include_path=str(include), include_defaults=False), limit=limit, batch_size=4,
        device="cpu", log_samples=True, random_seed=0, numpy_random_seed=0, torch_random_seed=0,
        fewshot_random_seed=1234,
        bootstrap_iters=0)


def _assert_same(ref: dict[str, Any], got: dict[str, Any], tasks: list[str]) -> None:
    """Identical decision metrics (acc, exact_match), perplexities to 1e-5; per sample: same prompts, log-likelihoods
    within LL_TOL with identical argmax and is_greedy, identical generations."""
    for task in tasks:
        r_metrics = {k: v for k, v in ref["results"][task].items() if k != "alias"}
        g_metrics = {k: v for k, v in got["results"][task].items() if k != "alias"}
        assert g_metrics.keys() == r_metrics.keys(), task
        for key, value in r_metrics.items():
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(g_metrics[key]), (task, key)
            elif not isinstance(value, (int, float)) or key.split(",")[0].split("_stderr")[0] in COUNTED:
                assert g_metrics[key] == value, (task, key, value, g_metrics[key])
            else:  # perplexities: exp(mean ll) turns 1e-6 of float noise into a few units in the 7th digit
                assert math.isclose(g_metrics[key], value, rel_tol=1e-5), (task, key, value, g_metrics[key])
        r_samples, g_samples = ref["samples"][task], got["samples"][task]
        assert [s["doc_id"] for s in g_samples] == [s["doc_id"] for s in r_samples]
        assert len(r_samples) > 0
        for rs, gs in zip(r_samples, g_samples):
            assert gs["arguments"] == rs["arguments"], task
            r_resps, g_resps = rs["resps"], gs["resps"]
            if isinstance(r_resps[0][0], str):  # generate_until
                assert g_resps == r_resps, (task, rs["doc_id"])
                continue
            if not isinstance(r_resps[0][0], (list, tuple)):  # loglikelihood_rolling: a bare float per request
                assert abs(float(g_resps[0][0]) - float(r_resps[0][0])) < LL_TOL, (task, rs["doc_id"])
                continue
            r_ll = [float(x[0][0]) for x in r_resps]
            g_ll = [float(x[0][0]) for x in g_resps]
            assert max(abs(a - b) for a, b in zip(r_ll, g_ll)) < LL_TOL, (task, rs["doc_id"], r_ll, g_ll)
            assert [bool(x[0][1]) for x in g_resps] == [bool(x[0][1]) for x in r_resps], (task, rs["doc_id"])
            assert max(range(len(g_ll)), key=g_ll.__getitem__) == max(range(len(r_ll)), key=r_ll.__getitem__)


# ---------------------------------------------------------------------------------------------------------------------
# a generic local task pair: multiple choice (few-shot, " " delimiter, trailing context space) + generate_until
# ---------------------------------------------------------------------------------------------------------------------

_SUBJECTS = ["猫", "犬", "先生", "子ども", "東京の人", "私の友達", "学生", "鳥"]
_PLACES = ["公園", "学校", "図書館", "駅", "海", "山", "家", "店"]


def _local_tasks(root: Path) -> Path:
    """Four YAML tasks (one per lm-eval output type) over generated JSONL files with absolute paths (lm-eval
    resolves relative ones against the CWD, not the YAML)."""
    rows = []
    for i, s in enumerate(_SUBJECTS * 2):
        gold = i % 4
        choices = [_PLACES[(i + j) % len(_PLACES)] for j in range(4)]
        rows.append({"question": f"{s}はどこで本を読みますか？", "choices": choices, "label": gold,
                     "answer": choices[gold]})
    train = _write_jsonl(root / "train.jsonl", rows[:6])
    test = _write_jsonl(root / "test.jsonl", rows[6:])
    common = {"dataset_path": "json", "dataset_kwargs": {"data_files": {"train": str(train), "test": str(test)}},
              "training_split": "train", "test_split": "test", "fewshot_split": "train"}
    mc = {**common, "task": "jb_local_mc", "output_type": "multiple_choice", "num_fewshot": 2,
          "doc_to_text": "質問：{{question}}\n答え： ",  # trailing space: _encode_pair moves it to the cont.
          "doc_to_choice": "{{choices}}", "doc_to_target": "{{label}}",
          "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                          {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]}
    gen = {**common, "task": "jb_local_gen", "output_type": "generate_until", "num_fewshot": 1,
           "doc_to_text": "質問：{{question}}\n答え：", "doc_to_target": "{{answer}}", "target_delimiter": "",
           "generation_kwargs": {"until": ["。", "\n"], "max_gen_toks": 12, "do_sample": False},
           "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}]}
    ll = {**common, "task": "jb_local_ll", "output_type": "loglikelihood", "num_fewshot": 0,
          "doc_to_text": "{{question}}", "doc_to_target": "{{answer}}",  # acc uses is_greedy
          "metric_list": [{"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
                          {"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}
    ppl = {**common, "task": "jb_local_ppl", "output_type": "loglikelihood_rolling", "num_fewshot": 0,
           "doc_to_text": "", "doc_to_target": "{{question}}{{answer}}。",
           "metric_list": [{"metric": m} for m in ("word_perplexity", "byte_perplexity", "bits_per_byte")]}
    tasks = root / "tasks"
    tasks.mkdir()
    for cfg in (mc, gen, ll, ppl):
        (tasks / f"{cfg['task']}.yaml").write_text(json.dumps(cfg, ensure_ascii=False, indent=1), encoding="utf-8")
    return tasks


@pytest.mark.parametrize("arch", ["gpt_neox", "llama", "qwen2"])
def test_local_tasks_match_hf(lm_eval_offline: Any, tiny_models: dict[str, Path], tmp_path: Path, arch: str) -> None:
    """All four lm-eval output types on three tokenizer styles (T5/rinna appends EOS, Llama prepends BOS, Qwen2 has
    no BOS)."""
    tasks = ["jb_local_mc", "jb_local_gen", "jb_local_ll", "jb_local_ppl"]
    include = _local_tasks(tmp_path)
    ref = _evaluate(lm_eval_offline, "hf", tiny_models[arch], include, tasks, limit=8)
    got = _evaluate(lm_eval_offline, "jbench", tiny_models[arch], include, tasks, limit=8)
    _assert_same(ref, got, tasks)
    assert got["config"]["model"] == "jbench"
    assert got["config"]["jbench_backend"]["prefix_sharing"] is True


def test_naive_path_and_max_rows_match_hf(lm_eval_offline: Any, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """``prefix_sharing=False`` (one sequence per request) and a manual row cap give the same answers."""
    tasks = ["jb_local_mc", "jb_local_gen"]
    include = _local_tasks(tmp_path)
    ref = _evaluate(lm_eval_offline, "hf", tiny_models["llama"], include, tasks, limit=6)
    got = _evaluate(lm_eval_offline, "jbench", tiny_models["llama"], include, tasks, limit=6,
                    extra_args=",prefix_sharing=False,max_rows=3")
    _assert_same(ref, got, tasks)


# ---------------------------------------------------------------------------------------------------------------------
# lm-eval's own japanese_leaderboard tasks, pointed at local copies of the data through `include:`
# ---------------------------------------------------------------------------------------------------------------------


def _leaderboard_tasks(root: Path, data_dir: Path) -> Path:
    from lm_eval.tasks import japanese_leaderboard  # noqa: F401  - the package holding the YAMLs and process_docs

    from jbench.data import load_split

    lb = Path(japanese_leaderboard.__file__).parent if getattr(japanese_leaderboard, "__file__", None) else \
        Path(list(japanese_leaderboard.__path__)[0])

    def dump(name: str, docs: list[dict[str, Any]], fix: Any = lambda d: d) -> str:
        return str(_write_jsonl(root / f"{name}.jsonl", [fix(dict(d)) for d in docs]))

    def int_label(d: dict[str, Any]) -> dict[str, Any]:
        return {**d, "label": int(d["label"])}  # Rakuten/JGLUE has int labels; lm-eval would look "2" up as a text

    jcqa = {"train": dump("jcqa_train", load_split("jcommonsenseqa", "train", data_dir).docs[:40], int_label),
            "validation": dump("jcqa_val", load_split("jcommonsenseqa", "validation", data_dir).docs[:12],
                               int_label)}
    jsquad = {"train": dump("jsquad_train", load_split("jsquad", "train", data_dir).docs[:20]),
              "validation": dump("jsquad_val", load_split("jsquad", "validation", data_dir).docs[:6])}
    xw = {"test": dump("xw_test", load_split("xwinograd_ja", "validation", data_dir).docs[:12])}
    tasks = root / "tasks"
    tasks.mkdir()
    for name, files in (("jcommonsenseqa", jcqa), ("jsquad", jsquad), ("xwinograd", xw)):
        cfg = {"include": str(lb / f"ja_leaderboard_{name}.yaml"), "task": f"local_ja_leaderboard_{name}",
               "dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": files}}
        if name == "jsquad":  # the leaderboard's 256 tokens cost minutes in `hf` on a tiny random model
            cfg["generation_kwargs"] = {"until": ["\n\n"], "do_sample": False, "max_gen_toks": 48}
        (tasks / f"local_{name}.yaml").write_text(json.dumps(cfg, ensure_ascii=False), encoding="utf-8")
    return tasks


def test_japanese_leaderboard_matches_hf(lm_eval_offline: Any, tiny_models: dict[str, Path],
                                         overlay_data_dir: Path, tmp_path: Path) -> None:
    """JCQA 3-shot (joint tokenization, "\\n" target delimiter), XWinograd 0-shot (empty context -> the BOS prefix
    token), JSQuAD 2-shot generation (until "\\n\\n" + EOS). The rinna-style model (T5Tokenizer) is the hard case:
    lm-eval's ``tok_encode`` appends ``</s>`` to every encoding, so ``_encode_pair`` drops the continuation's first
    token and scores the ``</s>`` instead; many choices then collapse to identical inputs and tie exactly."""
    tasks = ["local_ja_leaderboard_jcommonsenseqa", "local_ja_leaderboard_xwinograd", "local_ja_leaderboard_jsquad"]
    include = _leaderboard_tasks(tmp_path, overlay_data_dir)
    ref = _evaluate(lm_eval_offline, "hf", tiny_models["gpt_neox"], include, tasks, limit=5)
    got = _evaluate(lm_eval_offline, "jbench", tiny_models["gpt_neox"], include, tasks, limit=5)
    _assert_same(ref, got, tasks)


# ---------------------------------------------------------------------------------------------------------------------
# registration and the CLI wrapper
# ---------------------------------------------------------------------------------------------------------------------


def test_registered_next_to_lm_eval_backends(lm_eval_offline: Any) -> None:
    from lm_eval.api.registry import get_model

    from jbench.lmeval_backend import JbenchLM

    assert get_model("jbench") is JbenchLM
    assert get_model("hf").__name__ == "HFLM"  # lm-eval's own backends are still found


@pytest.mark.filterwarnings("ignore:.*found in sys.modules.*:RuntimeWarning")
def test_cli_wrapper(lm_eval_offline: Any, tiny_models: dict[str, Path], tmp_path: Path,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m jbench.lmeval_backend <lm_eval args>`` is lm-eval's CLI with ``--model jbench`` available. Run
    in-process through runpy (as ``-m`` does: the module body runs as ``__main__``, which must not register a second
    class under "jbench"), with lm-eval's task index limited to the include path (indexing its built-in YAMLs alone
    takes 10-20 s here)."""
    import functools
    import runpy

    import lm_eval.tasks

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", functools.partial(lm_eval.tasks.TaskManager,
                                                                         include_defaults=False))
    include = _local_tasks(tmp_path)
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", [
        "python -m jbench.lmeval_backend", "--model", "jbench", "--model_args",
        f"pretrained={tiny_models['gpt_neox']},dtype=float32", "--include_path", str(include), "--tasks",
        "jb_local_mc", "--limit", "4", "--device", "cpu", "--output_path", str(out)])
    runpy.run_module("jbench.lmeval_backend", run_name="__main__", alter_sys=False)
    results = list(out.rglob("results_*.json"))
    assert results
    data = json.loads(results[0].read_text(encoding="utf-8"))
    assert data["config"]["model"] == "jbench"
    assert "acc,none" in data["results"]["jb_local_mc"]
