"""CI gate: the tiny deterministic model's numbers and predictions on real data must not move (see tests/gate.py)."""

from __future__ import annotations

from pathlib import Path

from gate import BASELINE, run_gate

from jbench.baseline import check_run


def test_numbers_match_the_committed_baseline(overlay_data_dir: Path, tmp_path: Path) -> None:
    assert BASELINE.is_file(), "results/baselines/ci-tiny.json is missing: run `make gate-baseline`"
    run = run_gate(tmp_path, overlay_data_dir)
    report = check_run(run, BASELINE, mode="exact")
    assert report.exit_code == 0, "\n" + report.to_markdown() + (
        "\n\nIf this change is deliberate, regenerate the baseline in the same commit (`make gate-baseline`) "
        "and say why in the commit message.")
