"""CI gate: the tiny deterministic model's numbers and predictions on real data must not move (see tests/gate.py),
on whatever x86-64 CPU CI has: exact mode allows loglikelihoods to differ by fp32 kernel noise (LL_ATOL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from gate import BASELINE, REPO, run_gate

from jbench.baseline import LL_ATOL, check_run

REGENERATE = ("\n\nIf this change is deliberate, regenerate the baseline in the same commit (`make gate-baseline`) "
              "and say why in the commit message.")

#: A kernel path as different as one machine allows from the default one (whatever CPU CI has): scalar ATen
#: kernels instead of AVX2/AVX-512, MKL's SSE4.2 code path instead of AVX2/AVX-512/AMX, oneDNN capped at SSE4.1,
#: one thread instead of several (another reduction order).
OTHER_KERNEL_PATH = {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
                     "ONEDNN_MAX_CPU_ISA": "SSE41"}


def test_numbers_match_the_committed_baseline(overlay_data_dir: Path, tmp_path: Path) -> None:
    assert BASELINE.is_file(), "results/baselines/ci-tiny.json is missing: run `make gate-baseline`"
    run = run_gate(tmp_path, overlay_data_dir)
    report = check_run(run, BASELINE, mode="exact")
    assert report.exit_code == 0, "\n" + report.to_markdown() + REGENERATE


def test_gate_holds_on_another_cpu_kernel_path(overlay_data_dir: Path, tmp_path: Path) -> None:
    """The committed baseline also passes a run made under another kernel path on this machine (a fresh process,
    since torch reads the dispatch variables at import), so the gate does not depend on which CPU CI has."""
    env = {**os.environ, **OTHER_KERNEL_PATH,
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "gate.py"), "--run", str(tmp_path),
                           str(overlay_data_dir), "--threads", "1"], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = tmp_path / "ci-tiny"
    kernel = json.loads((run / "results.json").read_text("utf-8"))["config"]["environment"]["kernel_path"]
    # the switch took effect: this run really used another path than the default one
    assert kernel["cpu_capability"] == "DEFAULT" and kernel["num_threads"] == 1, kernel
    assert kernel["env"]["MKL_ENABLE_INSTRUCTIONS"] == "SSE4_2"
    report = check_run(run, BASELINE, mode="exact")
    md = report.to_markdown()
    assert report.exit_code == 0, "\n" + md + REGENERATE
    delta = next(n for n in report.notes if n.startswith("largest per-example loglikelihood |Δ|"))
    assert f"(tolerance {LL_ATOL:g})" in delta
    print(delta, "|", report.machines)

    # and the loosened gate is not blind: one loglikelihood moved by twice the tolerance is a regression that
    # names both machines
    samples = next(p for p in sorted(run.glob("samples_*.jsonl"))
                   if "loglikelihoods" in p.read_text("utf-8").splitlines()[0])
    rows = [json.loads(line) for line in samples.read_text("utf-8").splitlines()]
    rows[0]["loglikelihoods"][0] += 2 * LL_ATOL
    samples.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    report = check_run(run, BASELINE, mode="exact")
    md = report.to_markdown()
    assert report.exit_code == 1, md
    assert "loglikelihood[0]" in md and f"> tolerance {LL_ATOL:g}" in md
    assert "machines: baseline made on " in md and "ATen DEFAULT" in md, md
