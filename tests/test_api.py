"""The public Python API (issue 14): `jbench.evaluate` / `compare` / `check`, the typed run record, in-memory
models, and backends registered from outside jbench through the `jbench.backends` entry-point group."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import jbench
from jbench.errors import JBenchError, StoreError
from jbench.records import RUN_FORMAT, RunRecord

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_api_example() -> str:
    """The first ```python block under the README's "Python API" heading."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


@pytest.mark.slow
def test_the_readme_api_example_runs(tmp_path: Path) -> None:
    code = readme_api_example()
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "xwinograd_ja" in proc.stdout and "Traceback" not in proc.stderr


def test_import_is_cheap_and_names_resolve() -> None:
    proc = subprocess.run([sys.executable, "-c", "import sys, jbench; print(jbench.evaluate, jbench.compare, "
                           "jbench.check); print('torch' in sys.modules)"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "False"  # the API is imported on first use, torch not at all


@pytest.mark.slow
def test_evaluate_in_memory_without_a_run_directory(tmp_path: Path, sample_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from jbench.tiny import tiny_default_model

    path = tiny_default_model()
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    rec = jbench.evaluate(model, tokenizer=tok, tasks=["xwinograd_ja"], limit=4, data_dir=sample_dir)
    assert isinstance(rec, RunRecord) and rec.path is None
    assert rec.n_samples == {"xwinograd_ja": 4} and len(rec.rows["xwinograd_ja"]) == 4
    assert rec.config["model"].startswith("in-memory:") and rec.config["tokenizer"]["kind"] == "fast"
    assert rec.to_json()["format"] == RUN_FORMAT
    # stored, an in-memory model is never cached: it has no fingerprint, so another model of the same class could
    # otherwise be served its answers
    stored = jbench.evaluate(model, tokenizer=tok, tasks=["xwinograd_ja"], limit=4, data_dir=sample_dir,
                             output_dir=tmp_path)
    assert stored.path is not None and (stored.path / "results.json").is_file()
    assert not (stored.path / "cache.sqlite").exists()
    # the same model from its path gives the same numbers with the same (fast) tokenizer
    again = jbench.evaluate(str(path), tasks="xwinograd_ja", limit=4, use_fast=True, data_dir=sample_dir)
    assert [ll for r in again.rows["xwinograd_ja"] for ll in r["loglikelihoods"]] == pytest.approx(
        [ll for r in rec.rows["xwinograd_ja"] for ll in r["loglikelihoods"]], abs=1e-5)


def test_in_memory_model_needs_its_tokenizer() -> None:
    with pytest.raises(JBenchError, match="needs its tokenizer"):
        jbench.evaluate(object(), tasks="xwinograd_ja")


def test_a_newer_run_format_is_refused(tmp_path: Path) -> None:
    from jbench.results import load_run

    (tmp_path / "results.json").write_text(json.dumps({"results": {}, "format": "jbench-run/99"}))
    with pytest.raises(StoreError, match="jbench-run/99"):
        load_run(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"results": {"a": {"acc": 1.0}}, "versions": {},
                                                       "config": {}}))  # before the format key existed
    assert RunRecord.from_json(load_run(tmp_path).data).results == {"a": {"acc": 1.0}}


def test_a_backend_installed_outside_jbench_is_found_by_entry_point(tmp_path: Path) -> None:
    """A distribution that declares `[jbench.backends] echo = echo_backend:load_variant` adds variant `echo`."""
    (tmp_path / "echo_backend.py").write_text(textwrap.dedent('''
        def load_variant(path, spec, *, use_fast):
            return ("echo", path, spec.variant, use_fast)
    '''))
    dist = tmp_path / "echo_backend-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-backend\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[jbench.backends]\necho = echo_backend:load_variant\n")
    code = textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from jbench.models.registry import backends, get_backend
        from jbench.models.load import ModelSpec
        b = get_backend("echo")
        print(b.origin, "echo" in backends(), "fp32" in backends())
        print(b.load_function()("/m", ModelSpec(model="/m", variant="echo"), use_fast=None))
    ''')
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["echo-backend True True", "('echo', '/m', 'echo', None)"]


def test_unknown_variant_lists_the_registered_ones() -> None:
    from jbench.models.registry import get_backend

    with pytest.raises(JBenchError, match="unknown variant 'fp7'") as err:
        get_backend("fp7")
    assert "bnb4" in str(err.value) and "gguf" in str(err.value)
