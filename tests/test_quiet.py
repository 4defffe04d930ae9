"""Quiet by default (issue 13): stdout carries only jbench's tables, stderr only jbench's own lines, and library
warnings and logs go to ``<run>/log.txt`` (also to stderr with ``--verbose``).

Everything runs in subprocesses: :func:`jbench.logs.setup` takes over the process's logging, which must not leak
into the other tests of the session."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

#: lines jbench itself writes on stderr (cli.py banners, cache notes, its loggers' warnings, one-message errors).
JBENCH_STDERR = re.compile(
    r"^(embedded tiny model: |device: |dtype: |run stored in |resuming |reusing |request cache: |report: |"
    r"quantizing with group_size |"
    r"\[(original|variant \d+ of \d+)\] |"  # compare's progress lines
    r"(warning|error|interrupted): |  (where|what to do): )")

#: an env var that makes transformers log INFO lines while loading: a library noise source on every machine
#: (torchao's and torch's warnings depend on the installed builds).
NOISY = {"TRANSFORMERS_VERBOSITY": "info"}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JBENCH_VERBOSE", "HF_HUB_DISABLE_PROGRESS_BARS")}
    return {**env, "HF_HUB_OFFLINE": "1", **extra}


def _jbench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "jbench.cli", *args], capture_output=True, text=True,
                          env=env or _env(), timeout=600)
    assert proc.returncode == 0, f"jbench {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


def _python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env or _env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _eval(out: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return _jbench("eval", "--tasks", "jcommonsenseqa", "--limit", "5", "--output-dir", str(out), "--run-name", "run",
                   "--no-progress", *extra, env=env)


def _library_lines(log: str) -> list[str]:
    """log.txt lines written by a library's logger (format: date time LEVEL name: message)."""
    return [line for line in log.splitlines() if len(line.split()) > 3 and not line.split()[3].startswith("jbench")]


@pytest.mark.slow
def test_plain_eval_stderr_holds_only_jbench_lines(tmp_path: Path) -> None:
    proc = _eval(tmp_path, env=_env(**NOISY))
    foreign = [line for line in proc.stderr.splitlines() if line.strip() and not JBENCH_STDERR.match(line)]
    assert not foreign, "stderr lines jbench did not write:\n" + "\n".join(foreign)
    assert proc.stdout.startswith("hf-causal (")  # stdout: the tables only
    log = (tmp_path / "run" / "log.txt").read_text(encoding="utf-8")
    libs = _library_lines(log)
    assert any(" transformers" in line for line in libs), log[-2000:]
    assert not any("Loading weights" in line for line in proc.stderr.splitlines())
    # jbench's own calls use the current transformers API: no past_key_values deprecation anywhere
    assert "past_key_values" not in log and "past_key_values" not in proc.stderr


@pytest.mark.slow
def test_verbose_shows_library_lines(tmp_path: Path) -> None:
    proc = _eval(tmp_path, "--verbose", env=_env(**NOISY))  # after the command name: main hoists it
    assert any(line.startswith("transformers") for line in proc.stderr.splitlines()), proc.stderr[-2000:]
    assert proc.stdout.startswith("hf-causal (")
    assert _library_lines((tmp_path / "run" / "log.txt").read_text(encoding="utf-8"))


def test_jbench_logger_goes_to_log_and_warnings_to_stderr(tmp_path: Path) -> None:
    proc = _python(f"""
        import logging, warnings
        from pathlib import Path
        from jbench.logs import run_log, setup
        setup()
        log = logging.getLogger("jbench.models.hf")
        log.info("early info, before the run dir exists")
        logging.getLogger("transformers.fake").warning("library warning")
        warnings.warn("a library FutureWarning", FutureWarning)
        with run_log(Path({str(tmp_path)!r})):
            log.warning("packed prefix sharing unavailable; using KV-cache expansion")
            log.info("an info line")
        print("table")
        """)
    assert proc.stdout == "table\n"
    assert proc.stderr.splitlines() == ["warning: packed prefix sharing unavailable; using KV-cache expansion"]
    log = (tmp_path / "log.txt").read_text(encoding="utf-8")
    for text in ("INFO jbench.models.hf: early info", "WARNING jbench.models.hf: packed prefix sharing",
                 "INFO jbench.models.hf: an info line", "WARNING transformers.fake: library warning",
                 "FutureWarning: a library FutureWarning"):
        assert text in log, log


def test_verbose_env_shows_library_records(tmp_path: Path) -> None:
    proc = _python("""
        import logging
        from jbench.logs import setup
        setup()
        logging.getLogger("torchao").warning("Failed to load _C.so")
        logging.getLogger("jbench.x").info("info for the log")
        """, env=_env(JBENCH_VERBOSE="1"))
    assert proc.stderr.splitlines() == ["torchao: warning: Failed to load _C.so", "info: info for the log"]


def test_captured_output_keeps_stdout_clean(tmp_path: Path) -> None:
    """What libraries print straight to the file descriptors (print, C printf, logbar) goes to the log."""
    proc = _python(f"""
        import ctypes, os, sys
        from pathlib import Path
        from jbench.logs import captured_output, run_log, setup
        setup()
        with run_log(Path({str(tmp_path)!r})):
            with captured_output("somelib"):
                print("python banner")
                os.write(1, b"fd banner\\n")
                libc = ctypes.CDLL(None)
                libc.printf(b"C banner\\n")
                libc.fflush(None)
                sys.stdout.write("\\x1b[32mprogress 1/2\\rprogress 2/2\\x1b[0m\\n")
            print("table")
        """)
    assert proc.stdout == "table\n" and proc.stderr == ""
    log = (tmp_path / "log.txt").read_text(encoding="utf-8")
    for text in ("somelib.output: python banner", "somelib.output: fd banner", "somelib.output: C banner",
                 "somelib.output: progress 2/2"):
        assert text in log, log


def test_import_hooks_adopt_torch_and_transformers() -> None:
    """torch and transformers install their own stderr handlers at import; after setup they propagate to ours."""
    proc = _python("""
        import json, logging
        from jbench.logs import setup
        setup()
        import torch, transformers
        from transformers.utils import logging as tlog
        logging.getLogger("torch.utils._pytree").warning("pytree noise")
        tlog.get_logger("transformers.modeling_utils").warning("transformers noise")
        print(json.dumps({"bars": tlog.is_progress_bar_enabled(),
                          "loader": type(torch.__spec__.loader).__name__}))
        """)
    assert proc.stderr == ""
    info = json.loads(proc.stdout)
    assert info == {"bars": False, "loader": "SourceFileLoader"}


@pytest.mark.slow
def test_quantize_gptq_writes_only_its_output_to_stdout(tmp_path: Path) -> None:
    pytest.importorskip("gptqmodel")
    out = tmp_path / "q"
    proc = _jbench("quantize", "tiny", "--format", "gptq", "--group-size", "64", "--out", str(out))
    assert proc.stdout.splitlines() == [str(out)]  # no gptqmodel banner
    assert all(JBENCH_STDERR.match(line) for line in proc.stderr.splitlines() if line.strip()), proc.stderr
    log = (out / "log.txt").read_text(encoding="utf-8")
    assert "gptqmodel.output: GPT-QModel" in log
