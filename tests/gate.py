"""The project's own regression gate (run by `make test` through tests/test_gate.py).

The embedded tiny model is evaluated deterministically (CPU, fp32, fixed batch size) on a fixed subset of the
real data, and checked with `jbench check --mode exact` against the committed baseline
results/baselines/ci-tiny.json. Any change to prompts, sampling, tokenization or metrics that moves a number or a
prediction fails CI, unless the baseline is deliberately regenerated in the same commit, with the reason in the
commit message:

    JBENCH_DATA_DIR=../shared/data make gate-baseline
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO / "results" / "baselines" / "ci-tiny.json"
GATE = dict(tasks="jcommonsenseqa,jnli,marc_ja,jsquad,jaqket_v2,xwinograd_ja", num_fewshot="3,3,3,2,1,0",
            prompt_version="0.3", limit=24.0, batch_size=8)


def run_gate(out_dir: Path, data_dir: Path) -> Path:
    """Evaluate the gate's fixed configuration into ``out_dir/ci-tiny``; returns the run directory."""
    import jbench

    run_dir = out_dir / "ci-tiny"
    jbench.evaluate(None, tasks=GATE["tasks"], num_fewshot=GATE["num_fewshot"], prompt_version=GATE["prompt_version"],
                    limit=GATE["limit"], variant="fp32", batch_size=GATE["batch_size"], device="cpu",
                    data_dir=data_dir, output_dir=out_dir, run_name="ci-tiny", cache=False)
    return run_dir


def main() -> int:
    """``--update``: regenerate the committed baseline from the real data in $JBENCH_DATA_DIR.

    ``--run OUT DATA [--threads N]``: evaluate the gate into ``OUT/ci-tiny`` in this process (used by
    tests/test_gate.py to make runs under another CPU kernel path: ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS and
    ONEDNN_MAX_CPU_ISA are read when torch loads, so they need a fresh process)."""
    import os

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import build_overlay_data_dir

    from jbench.baseline import save_baseline
    from jbench.data import sample_data_dir

    if "--run" in sys.argv:
        i = sys.argv.index("--run")
        out, data = Path(sys.argv[i + 1]), Path(sys.argv[i + 2])
        if "--threads" in sys.argv:
            import torch

            torch.set_num_threads(int(sys.argv[sys.argv.index("--threads") + 1]))
        print(run_gate(out, data))
        return 0
    if "--update" not in sys.argv:
        print(__doc__)
        return 2
    real = Path(os.environ.get("JBENCH_DATA_DIR", REPO.parent / "shared" / "data"))
    with tempfile.TemporaryDirectory() as tmp:
        data = build_overlay_data_dir(real, sample_data_dir(), Path(tmp) / "data")
        run = run_gate(Path(tmp) / "runs", data)
        print(save_baseline(run, "ci-tiny", baselines_dir=BASELINE.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
