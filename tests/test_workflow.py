"""The copyable GitHub Actions workflow is valid YAML and its jbench steps parse as real jbench commands."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import typer
import yaml

from jbench.cli import app

WORKFLOW = Path(__file__).resolve().parents[1] / ".github" / "workflows" / "jbench-regression.yml"


def _jbench_steps(doc: dict) -> list[list[str]]:
    env = {k: str(v) for k, v in doc["env"].items()}
    cmds = []
    for step in doc["jobs"]["check"]["steps"]:
        run = step.get("run", "")
        if run.startswith(".venv/bin/jbench "):
            expanded = run
            for k, v in env.items():
                expanded = expanded.replace(f'"${k}"', shlex.quote(v)).replace(f"${k}", v)
            cmds.append(shlex.split(expanded)[1:])
    return cmds


def test_workflow_is_valid_yaml_with_the_documented_steps() -> None:
    doc = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    assert doc["name"] == "jbench regression"
    steps = doc["jobs"]["check"]["steps"]
    assert any(s.get("uses", "").startswith("actions/upload-artifact") for s in steps)
    cmds = _jbench_steps(doc)
    assert [c[0] for c in cmds] == ["data", "eval", "check"]
    group = typer.main.get_command(app)
    for args in cmds:  # parse (without running) each command line against the real CLI
        sub = group.get_command(None, args[0])  # type: ignore[arg-type]
        assert sub is not None, args
        ctx = sub.make_context(args[0], list(args[1:]))
        assert ctx.params
    assert "--mode" in cmds[2] and "stat" in cmds[2]
    assert os.path.basename(WORKFLOW) == "jbench-regression.yml"
