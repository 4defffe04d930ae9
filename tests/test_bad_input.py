"""Bad input: every failure is ONE clear message (what / where / what to do) on stderr, a non-zero exit code, and
no results.json or half-written samples file left behind.

The CLI runs in-process through ``jbench.cli.main`` (the entry point that maps a JBenchError to its message and
exit code; ``app()`` alone would raise), so each case costs a tiny-model load, not a Python start-up.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from jbench.cli import main

JCQA_VALID = "jglue/jcommonsenseqa-v1.1/valid-v1.1.json"


@dataclass
class Result:
    code: int
    out: str
    err: str


Cli = Callable[..., Result]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    """``cli(*args) -> Result``: ``jbench eval --output-dir <tmp>/out --run-name r --no-progress *args``."""

    def run(*args: str, command: str = "eval") -> Result:
        argv = ["jbench", command, *args]
        if command == "eval":
            argv += ["--output-dir", str(tmp_path / "out"), "--run-name", "r", "--no-progress"]
        monkeypatch.setattr(sys, "argv", argv)
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "out" / "r"


def assert_one_error(res: Result, *fragments: str, where: bool = True) -> None:
    """Non-zero exit; exactly one ``error:`` message with a what-to-do line; no traceback; every fragment shown."""
    assert res.code != 0, res.err
    assert res.err.count("error: ") == 1, res.err
    assert "Traceback" not in res.err and "Traceback" not in res.out
    msg = res.err[res.err.index("error: "):]
    assert "  what to do: " in msg, msg
    if where:
        assert "  where: " in msg, msg
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in:\n{msg}"


def assert_nothing_written(run_dir: Path) -> None:
    """No results.json, no samples file, no temp file of an atomic write."""
    if not run_dir.exists():
        return
    left = sorted(p.name for p in run_dir.iterdir())
    assert "results.json" not in left, left
    assert not [n for n in left if n.startswith("samples_")], left
    assert not [n for n in left if n.endswith(".tmp")], left


def data_dir_with(tmp_path: Path, real_data_dir: Path, content: bytes | None) -> Path:
    """A data dir holding only the JCQA validation file (``content`` replaces its bytes; None: the real file)."""
    ddir = tmp_path / "data"
    dst = ddir / JCQA_VALID
    dst.parent.mkdir(parents=True, exist_ok=True)
    if content is None:
        shutil.copyfile(real_data_dir / JCQA_VALID, dst)
    else:
        dst.write_bytes(content)
    return ddir


JCQA0 = ("--tasks", "jcommonsenseqa", "--num-fewshot", "0", "--limit", "2")


# ------------------------------------------------------------------------------------------ tasks and shots


def test_unknown_task_suggests_nearest(cli: Cli, run_dir: Path, real_data_dir: Path) -> None:
    res = cli("--tasks", "jcommonsenseqa-1.1-0.33", "--data-dir", str(real_data_dir))
    assert_one_error(res, "unknown task 'jcommonsenseqa-1.1-0.33'", "did you mean jcommonsenseqa-1.1-0.3",
                     "--tasks jcommonsenseqa-1.1-0.33", "jbench tasks")
    assert not run_dir.exists()  # refused before any model or data time


def test_unknown_task_version_suggests_nearest(cli: Cli, run_dir: Path, real_data_dir: Path) -> None:
    res = cli("--tasks", "jnli-1.9-0.3", "--data-dir", str(real_data_dir))
    assert_one_error(res, "unknown task 'jnli-1.9-0.3'", "did you mean jnli-1.")
    assert not run_dir.exists()


def test_unknown_prompt_version_lists_available(cli: Cli, run_dir: Path, real_data_dir: Path) -> None:
    res = cli("--tasks", "jnli", "--prompt-version", "0.9", "--data-dir", str(real_data_dir))
    assert_one_error(res, "task 'jnli' has no prompt version '0.9'", "available prompt versions for jnli:",
                     "0.3", "--prompt-version 0.9")
    assert not run_dir.exists()


def test_num_fewshot_length_must_match_tasks(cli: Cli, run_dir: Path, real_data_dir: Path) -> None:
    res = cli("--tasks", "jcommonsenseqa,jnli", "--num-fewshot", "3,3,3", "--data-dir", str(real_data_dir))
    assert_one_error(res, "--num-fewshot lists 3 values for 2 tasks", "one value for every task")
    assert not run_dir.exists()


# ----------------------------------------------------------------------------------------------------- data


def test_data_file_missing(cli: Cli, run_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    res = cli(*JCQA0, "--data-dir", str(tmp_path / "empty"))
    assert_one_error(res, "jcommonsenseqa validation: data file not found", str(tmp_path / "empty" / JCQA_VALID),
                     "jbench data --download jcommonsenseqa")
    assert_nothing_written(run_dir)


def test_data_file_truncated(cli: Cli, run_dir: Path, tmp_path: Path, real_data_dir: Path) -> None:
    raw = (real_data_dir / JCQA_VALID).read_bytes()
    ddir = data_dir_with(tmp_path, real_data_dir, raw[: len(raw) // 2])
    res = cli(*JCQA0, "--data-dir", str(ddir))
    assert_one_error(res, "checksum mismatch", "(truncated?)", str(ddir / JCQA_VALID), "--download")
    assert_nothing_written(run_dir)
    # even when mismatches are allowed, a cut-off file is never parsed as if it were whole
    res = cli(*JCQA0, "--data-dir", str(ddir), "--allow-data-mismatch")
    assert_one_error(res, "file is truncated: the last line is incomplete JSON", f"{ddir / JCQA_VALID}:")
    assert_nothing_written(run_dir)


def test_data_file_not_json(cli: Cli, run_dir: Path, tmp_path: Path, real_data_dir: Path) -> None:
    ddir = data_dir_with(tmp_path, real_data_dir, b"<html>404 Not Found</html>\n")
    res = cli(*JCQA0, "--data-dir", str(ddir))
    assert_one_error(res, "checksum mismatch", str(ddir / JCQA_VALID))
    res = cli(*JCQA0, "--data-dir", str(ddir), "--allow-data-mismatch")
    assert_one_error(res, "not valid JSON", f"{ddir / JCQA_VALID}:1", "re-download")
    assert_nothing_written(run_dir)


def test_data_file_wrong_schema(cli: Cli, run_dir: Path, tmp_path: Path, real_data_dir: Path) -> None:
    lines = (real_data_dir / JCQA_VALID).read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    del rows[1]["label"]
    ddir = data_dir_with(tmp_path, real_data_dir,
                         "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())
    res = cli(*JCQA0, "--data-dir", str(ddir), "--allow-data-mismatch")
    assert_one_error(res, "wrong record schema: record is missing field 'label'", f"{ddir / JCQA_VALID}:2",
                     "expected {q_id: int")
    assert_nothing_written(run_dir)


def test_data_checksum_mismatch_refused_then_recorded(cli: Cli, run_dir: Path, tmp_path: Path,
                                                      real_data_dir: Path) -> None:
    raw = (real_data_dir / JCQA_VALID).read_text(encoding="utf-8")
    first = json.loads(raw.splitlines()[0])
    edited = raw.replace(json.dumps(first["question"], ensure_ascii=False)[1:-1], "改変された質問", 1)
    assert edited != raw
    ddir = data_dir_with(tmp_path, real_data_dir, edited.encode())
    res = cli(*JCQA0, "--data-dir", str(ddir))
    assert_one_error(res, "checksum mismatch: sha256", "!= official", str(ddir / JCQA_VALID),
                     "--allow-data-mismatch")
    assert_nothing_written(run_dir)

    res = cli(*JCQA0, "--data-dir", str(ddir), "--allow-data-mismatch")
    assert res.code == 0, res.err
    rec = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    assert rec["config"]["allow_data_mismatch"] is True
    info = rec["config"]["data"]["jcommonsenseqa-1.1-0.3"][0]
    assert info["path"] == JCQA_VALID and "sha256" in info["mismatch"] and "official" in info["mismatch"]
    assert any("MISMATCH ALLOWED" in n for n in rec["notes"])


# ---------------------------------------------------------------------------------------------------- model


def test_model_path_missing(cli: Cli, run_dir: Path, tmp_path: Path, real_data_dir: Path) -> None:
    res = cli("-m", str(tmp_path / "no-such-model"), *JCQA0, "--data-dir", str(real_data_dir))
    assert_one_error(res, "model path does not exist", str(tmp_path / "no-such-model"),
                     "existing model directory")
    assert not run_dir.exists()


@pytest.mark.parametrize("weights", [False, True], ids=["config-only", "with-weights"])
def test_model_not_a_causal_lm(cli: Cli, run_dir: Path, tmp_path: Path, real_data_dir: Path, weights: bool) -> None:
    """A BERT directory: transformers would happily load it as BertLMHeadModel (bidirectional attention), so
    jbench must refuse it by its config, before loading weights."""
    from transformers import BertConfig, BertForMaskedLM

    cfg = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32)
    bert = tmp_path / "bert"
    if weights:
        BertForMaskedLM(cfg).save_pretrained(bert)
    else:
        cfg.save_pretrained(bert)
    res = cli("-m", str(bert), *JCQA0, "--data-dir", str(real_data_dir))
    assert_one_error(res, "is not a causal language model", "encoder (masked LM)", "model_type='bert'",
                     "decoder-only (causal) LMs only")
    assert not run_dir.exists()


def test_tokenizer_without_eos_for_xwinograd(cli: Cli, run_dir: Path, tmp_path: Path,
                                             overlay_data_dir: Path) -> None:
    """XWinograd scores from ``[eos]``; with no EOS the run stops before any task is scored (JCQA comes first)."""
    from jbench.tiny import tiny_default_model

    model = tmp_path / "no-eos"
    shutil.copytree(tiny_default_model(), model)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = model / name
        if path.exists():
            cfg = json.loads(path.read_text(encoding="utf-8"))
            cfg["eos_token"] = None
            path.write_text(json.dumps(cfg), encoding="utf-8")
    res = cli("-m", str(model), "--no-use-fast", "--tasks", "jcommonsenseqa,xwinograd_ja", "--num-fewshot", "0,0",
              "--limit", "2", "--data-dir", str(overlay_data_dir))
    assert_one_error(res, "the tokenizer has no EOS token", "empty-context request (XWinograd)",
                     "leave xwinograd_ja out", where=False)
    assert_nothing_written(run_dir)


def test_quantization_backend_not_installed(cli: Cli, run_dir: Path, real_data_dir: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "bitsandbytes" or m.startswith("bitsandbytes.")] + ["bitsandbytes"]:
        monkeypatch.setitem(sys.modules, name, None)  # `import bitsandbytes` now raises ImportError
    res = cli("--variant", "bnb8", *JCQA0, "--data-dir", str(real_data_dir))
    assert_one_error(res, "the bnb8 variant needs bitsandbytes, which is not installed", 'pip install "jbench[quant]"',
                     where=False)
    assert not run_dir.exists()


# ------------------------------------------------------------------------------------- context and memory


def test_prompt_longer_than_context_is_counted_and_shown(cli: Cli, run_dir: Path, tmp_path: Path,
                                                         real_data_dir: Path) -> None:
    """Not an error: left-truncated like the reference, counted per task in results.json and noted under the card."""
    from jbench.tiny import tiny_default_model

    model = tmp_path / "short-context"
    shutil.copytree(tiny_default_model(), model)
    cfg = json.loads((model / "config.json").read_text(encoding="utf-8"))
    for key in ("n_ctx", "max_position_embeddings"):
        if key in cfg:
            cfg[key] = 48
    (model / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    res = cli("-m", str(model), "--no-use-fast", "--tasks", "jcommonsenseqa", "--num-fewshot", "3", "--limit", "3",
              "--data-dir", str(real_data_dir))
    assert res.code == 0, res.err
    rec = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    assert rec["config"]["max_length"] == 48
    assert rec["truncated"] == {"jcommonsenseqa-1.1-0.3": 3}
    note = ("note: 3 prompts of jcommonsenseqa-1.1-0.3 were longer than the model context (48 tokens) and were "
            "left-truncated, as the reference does")
    lines = res.out.splitlines()
    i = lines.index(note)
    assert lines[i - 1].startswith("|") and "acc_norm" in lines[i - 1]  # directly under the card table's last row
    assert lines[i + 1] == ""
    table = cli(str(run_dir), command="table")
    assert note in table.out.splitlines()


def _oom_above(monkeypatch: pytest.MonkeyPatch, max_rows: int) -> list[int]:
    """Make every model loaded by HFScorer raise torch.OutOfMemoryError on forwards of more than ``max_rows`` rows;
    returns the list of row counts that were refused."""
    import torch

    import jbench.models.hf as hf

    refused: list[int] = []
    real_load = hf.load_causal_lm

    def load(*args: object, **kwargs: object) -> object:
        model = real_load(*args, **kwargs)  # type: ignore[arg-type]
        forward = model.forward

        @functools.wraps(forward)  # the scorer reads forward's signature (cache argument name)
        def limited(*a: object, **kw: object) -> object:
            rows = int(kw["input_ids"].shape[0])  # type: ignore[union-attr]
            if rows > max_rows:
                refused.append(rows)
                raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 20.00 GiB ({rows} rows)")
            return forward(*a, **kw)

        model.forward = limited
        return model

    monkeypatch.setattr(hf, "load_causal_lm", load)
    return refused


def test_out_of_memory_halves_the_batch_then_succeeds(cli: Cli, run_dir: Path, real_data_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    refused = _oom_above(monkeypatch, 2)
    res = cli("--tasks", "jcommonsenseqa", "--num-fewshot", "3", "--limit", "8", "--batch-size", "8",
              "--data-dir", str(real_data_dir))
    assert res.code == 0, res.err
    assert refused and max(refused) == 8
    assert "out of memory with 8 rows per forward on cpu; retrying with 4" in caplog.text  # a warning on stderr
    rec = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    assert rec["config"]["resources"]["oom_retries"] >= 2  # 8 -> 4 -> 2
    assert rec["config"]["resources"]["oom_batch_cap"] == 2
    assert rec["n_samples"] == {"jcommonsenseqa-1.1-0.3": 8}


def test_out_of_memory_at_batch_size_one_fails_clearly(cli: Cli, run_dir: Path, real_data_dir: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _oom_above(monkeypatch, 0)
    res = cli(*JCQA0, "--data-dir", str(real_data_dir))
    assert_one_error(res, "out of memory on cpu even with batch size 1", "CUDA out of memory", "smaller variant")
    assert_nothing_written(run_dir)


# ---------------------------------------------------------------------------------------------------- disk


def _enospc_on(monkeypatch: pytest.MonkeyPatch, name_prefix: str | None) -> None:
    """os.fsync raises ENOSPC for temp files whose name starts with ``.<name_prefix>`` (all files when None)."""
    import jbench.results as results

    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        if name_prefix is None or Path(target).name.startswith(f".{name_prefix}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(results.os, "fsync", fsync)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name the file being synced")
@pytest.mark.parametrize("which", ["results.json", "samples_", None], ids=["results", "samples", "run-plan"])
def test_disk_full_while_writing(cli: Cli, run_dir: Path, real_data_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                 which: str | None) -> None:
    _enospc_on(monkeypatch, which)
    res = cli(*JCQA0, "--data-dir", str(real_data_dir))
    shown = {"results.json": "results.json", "samples_": "samples_jcommonsenseqa-1.1-0.3.jsonl", None: "run.json"}
    assert_one_error(res, f"could not write {shown[which]}: No space left on device", str(run_dir),
                     "free some disk space or choose another --output-dir")
    if which == "results.json":  # the task had finished: its samples file is whole (written atomically before)
        samples = run_dir / "samples_jcommonsenseqa-1.1-0.3.jsonl"
        assert len([json.loads(line) for line in samples.read_text(encoding="utf-8").splitlines()]) == 2
        samples.unlink()
    assert_nothing_written(run_dir)


# ------------------------------------------------------------------ the error contract, one table (issue 13)


@dataclass(frozen=True)
class Case:
    """One user mistake: the args (``{sample}``/``{tmp}`` are filled in), and what the single message must say."""

    args: tuple[str, ...]
    says: tuple[str, ...]


CONTRACT: dict[str, Case] = {
    "limit-0": Case(("--tasks", "jcommonsenseqa", "--limit", "0"), ("--limit must be a positive number, got 0",)),
    "limit-negative": Case(("--tasks", "jcommonsenseqa", "--limit", "-5"), ("--limit must be a positive number, got -5",)),
    "shots-too-many": Case(("--tasks", "jcommonsenseqa", "--num-fewshot", "100000", "--limit", "2"),
                           ("100000 shots asked, but its shot split has only",)),
    "shots-negative": Case(("--tasks", "jcommonsenseqa", "--num-fewshot", "-1", "--limit", "2"),
                           ("--num-fewshot must be 0 or more, got -1",)),
    "shots-trailing-comma": Case(("--tasks", "jcommonsenseqa", "--num-fewshot", "3,", "--limit", "2"),
                                 ("--num-fewshot must be integers separated by commas, got '3,'",)),
    "shots-on-zero-shot-task": Case(("--tasks", "xwinograd_ja", "--num-fewshot", "2", "--limit", "2"),
                                    ("is always 0-shot",)),
    "device-unknown": Case(("--tasks", "jcommonsenseqa", "--limit", "2", "--device", "tpu9"),
                           ("unknown device 'tpu9'",)),
    "batch-size-0": Case(("--tasks", "jcommonsenseqa", "--limit", "2", "--batch-size", "0"),
                         ("--batch-size must be at least 1, got 0",)),
    "variant-unknown": Case(("--tasks", "jcommonsenseqa", "--limit", "2", "--variant", "fp8x"),
                            ("unknown variant 'fp8x'",)),
    "run-name-escapes": Case(("--tasks", "jcommonsenseqa", "--limit", "2", "--run-name", "../escaped"),
                             ("invalid run name '../escaped'",)),
    "run-name-absolute": Case(("--tasks", "jcommonsenseqa", "--limit", "2", "--run-name", "{tmp}/abs"),
                              ("invalid run name", "plain name")),
    "prompt-version-vs-full-name": Case(("--tasks", "jnli-1.3-0.3", "--prompt-version", "0.5", "--limit", "2"),
                                        ("--prompt-version 0.5 cannot apply to jnli-1.3-0.3",)),
    "output-dir-is-a-file": Case(("--tasks", "jcommonsenseqa", "--limit", "2", "--output-dir", "{tmp}/file/out"),
                                 ("is not a directory",)),
    "output-dir-unwritable": Case(("--tasks", "jcommonsenseqa", "--limit", "2", "--output-dir", "/proc/jbench-out"),
                                  ("not writable",)),
    "limit-nan": Case(("--tasks", "jcommonsenseqa", "--limit", "nan"), ("--limit must be a positive number",)),
    "limit-inf": Case(("--tasks", "jcommonsenseqa", "--limit", "inf"), ("--limit must be a positive number",)),
    "limit-overflow": Case(("--tasks", "jcommonsenseqa", "--limit", "1e309"), ("--limit must be a positive number",)),
    "limit-fraction-keeps-nothing": Case(("--tasks", "jcommonsenseqa", "--limit", "0.00001"),
                                         ("keeps no document of jcommonsenseqa-1.1-0.3",)),
    "run-name-with-space": Case(("--tasks", "jcommonsenseqa", "--limit", "2", "--run-name", "my run"),
                                ("invalid run name 'my run'",)),
    "run-name-newline": Case(("--tasks", "jcommonsenseqa", "--limit", "2", "--run-name", "a\nb"),
                             ("invalid run name",)),
    "run-name-too-long": Case(("--tasks", "jcommonsenseqa", "--limit", "2", "--run-name", "a" * 300),
                              ("at most 200 characters",)),
    "tasks-empty-list": Case(("--tasks", ",,", "--limit", "2"), ("--tasks names no task",)),
    "tasks-twice": Case(("--tasks", "jcommonsenseqa,jcommonsenseqa-1.1-0.3", "--num-fewshot", "1,2", "--limit", "2"),
                        ("are the same task (jcommonsenseqa-1.1-0.3)",)),
    "model-is-a-file": Case(("--model", "{tmp}/file", "--tasks", "jcommonsenseqa", "--limit", "2"),
                            ("the model path is a file",)),
    "model-without-config": Case(("--model", "{tmp}/nocfg", "--tasks", "jcommonsenseqa", "--limit", "2"),
                                 ("has no config.json",)),
    "model-without-weights": Case(("--model", "{tmp}/noweights", "--tasks", "jcommonsenseqa", "--limit", "2"),
                                  ("has no weights file",)),
    "gguf-without-gguf-file": Case(("--model", "{tmp}/noweights", "--variant", "gguf", "--tasks", "jcommonsenseqa",
                                    "--limit", "2"), ("the gguf variant needs a .gguf file",)),
}


@pytest.mark.parametrize("name", list(CONTRACT))
def test_error_contract(name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                        tmp_path: Path, sample_dir: Path) -> None:
    """Each mistake: exit 2, one message (what / where / what to do), no traceback, nothing written, and no model
    loaded (every check runs before the weights load)."""
    import jbench.models.load as load

    case = CONTRACT[name]
    (tmp_path / "file").write_text("not a directory")
    (tmp_path / "nocfg").mkdir()
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text('{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}')
    args = [a.replace("{tmp}", str(tmp_path)) for a in case.args]
    argv = ["jbench", "eval", "--data-dir", str(sample_dir), "--no-progress"]
    if "--output-dir" not in args:
        argv += ["--output-dir", str(tmp_path / "out")]
    if "--run-name" not in args:
        argv += ["--run-name", "r"]
    monkeypatch.setattr(sys, "argv", argv + args)

    def no_load(*a: object, **k: object) -> None:
        raise AssertionError("the model was loaded before the input was validated")

    monkeypatch.setattr(load, "load_scorer", no_load)
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert_one_error(Result(2, "", err), *case.says, where=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / "escaped").exists()


def test_every_problem_is_reported_at_once(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    res = cli("--limit", "0", "--device", "tpu9", "--data-dir", str(tmp_path / "empty"))
    assert res.code == 2 and "Traceback" not in res.err
    assert "problems found before loading the model" in res.err
    for frag in ("--limit must be a positive number", "unknown device 'tpu9'", "jcommonsenseqa validation: data file not found",
                 "xwinograd_ja validation: data file not found", "jsquad train: data file not found"):
        assert frag in res.err, frag


def test_dry_run_runs_the_same_validation(cli: Cli, sample_dir: Path) -> None:
    for shots in ("-1", "100000"):
        res = cli("--dry-run", "--tasks", "jcommonsenseqa", "--num-fewshot", shots, "--data-dir", str(sample_dir))
        assert res.code == 2 and "Traceback" not in res.err, res.err
    ok = cli("--dry-run", "--tasks", "jcommonsenseqa", "--num-fewshot", "3", "--data-dir", str(sample_dir))
    assert ok.code == 0 and json.loads(ok.out)["tasks"][0]["num_fewshot"] == 3


def test_cuda_device_on_a_cpu_only_torch(cli: Cli, sample_dir: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    res = cli("--tasks", "jcommonsenseqa", "--limit", "2", "--device", "cuda", "--data-dir", str(sample_dir))
    assert_one_error(res, "--device cuda", "use --device cpu")


def test_truncated_safetensors_is_refused_before_loading(cli: Cli, run_dir: Path, tmp_path: Path,
                                                          sample_dir: Path) -> None:
    from jbench.tiny import tiny_default_model

    model = tmp_path / "torn"
    shutil.copytree(tiny_default_model(), model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    res = cli("-m", str(model), "--tasks", "jcommonsenseqa", "--limit", "2", "--data-dir", str(sample_dir))
    assert_one_error(res, "the weights file is damaged", "truncated", str(weights))
    assert not run_dir.exists()


def test_repeated_tasks_options_are_joined(cli: Cli, run_dir: Path, sample_dir: Path) -> None:
    res = cli("--tasks", "jcommonsenseqa", "--tasks", "xwinograd_ja", "--num-fewshot", "0", "--limit", "2",
              "--data-dir", str(sample_dir))
    assert res.code == 0, res.err
    rec = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    assert sorted(rec["results"]) == ["jcommonsenseqa-1.1-0.3", "xwinograd_ja"]


def test_resume_refuses_options_it_would_ignore(cli: Cli, run_dir: Path, sample_dir: Path) -> None:
    assert cli("--tasks", "xwinograd_ja", "--limit", "2", "--data-dir", str(sample_dir)).code == 0
    res = cli("--resume", str(run_dir), "--limit", "10", "--tasks", "jnli", command="eval")
    assert_one_error(res, "--resume redoes the stored run exactly", "--tasks", "--limit")


def test_compare_rejects_a_bogus_variant_before_running_anything(capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path, sample_dir: Path) -> None:
    import jbench.variant_runs as variant_runs

    def no_run(*a: object, **k: object) -> None:
        raise AssertionError("a run started before the variants were validated")

    monkeypatch.setattr(variant_runs, "run_or_reuse", no_run)
    monkeypatch.setattr(sys, "argv", ["jbench", "compare", "--variants", "int8 bogus", "--tasks", "xwinograd_ja",
                                      "--limit", "2", "--data-dir", str(sample_dir), "--output-dir",
                                      str(tmp_path / "out"), "--quantized", "gptq"])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert "unknown variant 'bogus'" in err and "--quantized must be VARIANT=PATH" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("args", "says"), [
    (("--variants", "int8", "--margin", "-1"), "the equivalence margin must be a positive number"),
    (("--variants", "int8", "--margin", "nan"), "the equivalence margin must be a positive number"),
    (("--variants", "gguf:q9_9"), "unknown GGUF type 'q9_9'"),
    (("--variants", "int8,int8"), "variant int8 is listed twice"),
    (("--variants", "fp32"), "fp32 is a dtype of the original, not a quantized variant"),
    (("--variants", "gptq", "--quantized", "gptq={sample}"), "the model directory has no config.json"),
    (("--variants", "gguf", "--quantized", "gguf={tmp}/fake.gguf"), "not a GGUF file"),
], ids=["margin-negative", "margin-nan", "gguf-type", "variant-twice", "variant-fp32", "quantized-not-gptq",
        "quantized-not-gguf"])
def test_compare_refuses_before_any_run(args: tuple[str, ...], says: str, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sample_dir: Path) -> None:
    import jbench.variant_runs as variant_runs

    def no_run(*a: object, **k: object) -> None:
        raise AssertionError("a run started before the options were validated")

    monkeypatch.setattr(variant_runs, "run_or_reuse", no_run)
    (tmp_path / "fake.gguf").write_bytes(b"NOTGGUF" * 10)
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{sample}", str(sample_dir)) for a in args]
    monkeypatch.setattr(sys, "argv", ["jbench", "compare", *argv, "--tasks", "xwinograd_ja", "--limit", "2",
                                      "--data-dir", str(sample_dir), "--output-dir", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err and err.count("error: ") == 1, err
    assert says in err
    assert not (tmp_path / "out").exists()


def test_resume_refuses_no_cache(cli: Cli, run_dir: Path, sample_dir: Path) -> None:
    assert cli("--tasks", "xwinograd_ja", "--limit", "2", "--data-dir", str(sample_dir)).code == 0
    res = cli("--resume", str(run_dir), "--no-cache", command="eval")
    assert_one_error(res, "--resume redoes the stored run exactly", "--no-cache")


def test_a_failed_run_leaves_no_run_directory(cli: Cli, run_dir: Path, sample_dir: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A model that fails to load (after validation) leaves nothing that looks like a run."""
    import jbench.models.load as load

    def broken(*a: object, **k: object) -> None:
        from jbench.errors import ModelError

        raise ModelError("cannot load the model as fp32: simulated", where="x", fix="y")

    monkeypatch.setattr(load, "load_scorer", broken)
    res = cli("--tasks", "xwinograd_ja", "--limit", "2", "--data-dir", str(sample_dir))
    assert_one_error(res, "simulated")
    assert not run_dir.exists()


def test_a_failed_rerun_puts_the_previous_plan_back(cli: Cli, run_dir: Path, sample_dir: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli("--tasks", "xwinograd_ja", "--limit", "3", "--data-dir", str(sample_dir)).code == 0
    before = {n: (run_dir / n).read_bytes() for n in ("run.json", "results.json", "samples_xwinograd_ja.jsonl")}
    import jbench.runner as runner

    def dies(*a: object, **k: object) -> None:
        raise RuntimeError("killed mid-run")

    monkeypatch.setattr(runner, "score_task", dies)
    with pytest.raises(RuntimeError):
        cli("--tasks", "xwinograd_ja", "--limit", "2", "--data-dir", str(sample_dir))
    after = {n: (run_dir / n).read_bytes() for n in before}
    assert json.loads(after["run.json"]) == json.loads(before["run.json"])
    assert after["results.json"] == before["results.json"]
    assert after["samples_xwinograd_ja.jsonl"] == before["samples_xwinograd_ja.jsonl"]


def test_prompts_takes_the_same_data_override_as_eval(capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                      real_data_dir: Path) -> None:
    raw = (real_data_dir / JCQA_VALID).read_text(encoding="utf-8")
    first = json.loads(raw.splitlines()[0])
    ddir = data_dir_with(tmp_path, real_data_dir,
                         raw.replace(json.dumps(first["question"], ensure_ascii=False)[1:-1], "改変", 1).encode())

    def prompts(*extra: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["jbench", "prompts", "--task", "jcommonsenseqa-1.1-0.3", "--num-fewshot",
                                          "0", "--limit", "2", "--data-dir", str(ddir), *extra])
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        cap = capsys.readouterr()
        return code, cap.out, cap.err

    code, out, err = prompts()
    assert code == 2 and "checksum mismatch" in err and "--allow-data-mismatch" in err and "Traceback" not in err
    code, out, err = prompts("--allow-data-mismatch")
    assert code == 0, err
    assert len(out.splitlines()) == 2 and json.loads(out.splitlines()[0])["task"] == "jcommonsenseqa-1.1-0.3"
    code, out, err = prompts("--allow-data-mismatch", "--num-fewshot", "3")  # this data dir has no train split
    assert code == 2 and "jcommonsenseqa train: data file not found" in err and "Traceback" not in err
