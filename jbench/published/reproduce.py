"""``jbench reproduce``: evaluate a model with exactly the settings of one published source (tasks, prompt
version, shots, tokenizer, dtype from that source's own config), through :func:`jbench.api.evaluate`, then compare.

Why the settings come from the source and not from the preset: the question "is my number the card's number?" is
only answerable with the card's settings; a preset is jbench's default for everyday runs and may differ on purpose.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jbench.errors import DataError, JBenchError
from jbench.published.comparable import source_tokenizer
from jbench.published.registry import PublishedError, Source
from jbench.published.verdict import Reproduction, compare

log = logging.getLogger(__name__)

_VARIANT = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "auto": "auto"}


@dataclass
class ReproductionPlan:
    """What ``reproduce`` will run: the jbench tasks with their shots, and why any source task is left out."""

    source: Source
    model: str
    tasks: list[tuple[str, int]]
    skipped: dict[str, str]             # jbench task (or the source's name) -> why it cannot run
    use_fast: bool | None
    trust_remote_code: bool
    variant: str
    notes: list[str] = field(default_factory=list)
    checkpoint: str | None = None       # the user's statement that this local path is the source's model

    def require_tasks(self) -> None:
        """A plan with no runnable task is an error (exit 2), for the dry run exactly as for the real run."""
        if not self.tasks:
            raise PublishedError(f"no task of {self.source.id} can run here", where=self.source.id,
                                 fix="; ".join(f"{k}: {v}" for k, v in self.skipped.items())
                                 or "the source has no tasks")

    def describe(self) -> str:
        """The settings, one per line, each with where it comes from (the done-when of issue 17 reads these)."""
        s = self.source
        pvs = sorted({t.prompt_version for t in s.tasks if t.prompt_version})
        dtype_why = ("the source passed no torch_dtype: the hf-causal default" if s.dtype == "float32"
                     else f"the source passed {s.dtype}")
        lines = [f"reproduce {s.model} from {s.id}", f"source: {s.url}",
                 f"model args (source): {s.model_args}", f"model to load: {self.model}",
                 f"prompt version: {', '.join(pvs) or '-'} (from the source's task names)",
                 f"tokenizer: use_fast={'default (fast)' if self.use_fast is None else self.use_fast} "
                 "(from the source's model args)",
                 f"dtype: {self.variant} ({dtype_why})" + (f"; quantization: {s.quantization}"
                                                            if s.quantization else ""),
                 "tasks and shots (from the source's harness.sh / config):"]
        tok = source_tokenizer(s)
        if tok is not None:  # lm-eval 0.3 loaded these files instead of the model's own tokenizer
            lines.insert(6, f"tokenizer files: {tok} (the source's tokenizer=, not {s.model}'s own); jbench runs "
                            "with the model's own tokenizer, so this reproduction is 'not comparable' for every task")
        run = dict(self.tasks)
        for t in s.tasks:
            key = t.jbench_task or t.task
            state = f"runs as {key}" if key in run else f"skipped: {self.skipped.get(key, 'not run')}"
            lines.append(f"  {t.task:<24} {t.shots} shot{'s' if t.shots != 1 else ''}  ({state})")
        if self.tasks:
            tasks = ",".join(t for t, _ in self.tasks)
            shots = ",".join(str(k) for _, k in self.tasks)
            flag = "" if self.use_fast is None else (" --use-fast" if self.use_fast else " --no-use-fast")
            lines.append(f"same as: jbench eval --model {self.model} --tasks {tasks} --num-fewshot {shots}"
                         f"{flag} --variant {self.variant}" + (" --trust-remote-code" if self.trust_remote_code
                                                               else ""))
        lines += [f"note: {n}" for n in self.notes + list(s.notes)]
        return "\n".join(lines)


def _data_problem(task: str, shots: int, data_dir: Path | None) -> str | None:
    """Why ``task`` cannot run from ``data_dir`` (a missing split), or None."""
    from jbench.data import load_split
    from jbench.tasks import resolve_task

    if data_dir is None:
        return None
    spec = resolve_task(task)
    for split in ("validation",) + (("train",) if shots > 0 and spec.sampler != "none" else ()):
        try:
            load_split(spec.dataset, split, data_dir)
        except DataError as err:
            return f"missing data ({err.what.splitlines()[0]})"
    return None


def plan_reproduction(source: Source, *, data_dir: str | os.PathLike[str] | None = None,
                      checkpoint: str | None = None) -> ReproductionPlan:
    """The settings of ``source`` as a jbench run. Refuses a source whose settings are unknown (a card that does
    not state its prompt version or shots) or whose model is not on the Hub (unless ``checkpoint`` names it)."""
    if source.settings_unknown:
        raise PublishedError(f"{source.id} does not state its {', '.join(source.settings_unknown)}: there is no "
                             "exact setting to reproduce", where=source.url,
                             fix="pick a source with known settings (--source result.json); `jbench published "
                                 f"{source.model}` lists them")
    if not source.on_hub and checkpoint is None and source.kind == "reference":
        raise PublishedError(f"{source.model} is a machine-local checkpoint ({source.model_args}), not a Hub model",
                             where=source.id, fix="pass --checkpoint PATH if you have the checkpoint")
    ddir = None
    if data_dir is not None or os.environ.get("JBENCH_DATA_DIR"):
        from jbench.data import resolve_data_dir

        ddir = resolve_data_dir(data_dir)
    tasks: list[tuple[str, int]] = []
    skipped: dict[str, str] = {}
    for t in source.tasks:
        if t.jbench_task is None:
            skipped[t.task] = f"jbench has no {t.family} task"
            continue
        if t.shots is None:
            skipped[t.jbench_task] = "the source does not say its shots"
            continue
        problem = _data_problem(t.jbench_task, t.shots, ddir)
        if problem:
            skipped[t.jbench_task] = problem
            continue
        tasks.append((t.jbench_task, t.shots))
    variant = "bnb8" if source.quantization and source.quantization.startswith("bnb8") else \
        _VARIANT.get(source.dtype or "float32", "fp32")
    notes = []
    if ddir is None:
        notes.append("no data dir given ($JBENCH_DATA_DIR or --data-dir): data availability not checked")
    return ReproductionPlan(source=source, model=checkpoint or source.model, tasks=tasks, skipped=skipped,
                            use_fast=source.use_fast, trust_remote_code=source.trust_remote_code, variant=variant,
                            notes=notes, checkpoint=checkpoint)


def run_reproduction(plan: ReproductionPlan, *, limit: float | None = None,
                     data_dir: str | os.PathLike[str] | None = None, output_dir: str | os.PathLike[str] = "results",
                     run_name: str | None = None, device: str | None = None, batch_size: int | None = None,
                     progress: bool = False) -> tuple[Reproduction, Any]:
    """Evaluate the planned tasks through :func:`jbench.api.evaluate` and compare with the source."""
    from jbench import api

    plan.require_tasks()
    try:
        record = api.evaluate(plan.model, tasks=[t for t, _ in plan.tasks], num_fewshot=[k for _, k in plan.tasks],
                              use_fast=plan.use_fast, trust_remote_code=plan.trust_remote_code or None,
                              variant=plan.variant, limit=limit, data_dir=data_dir, output_dir=output_dir,
                              run_name=run_name, device=device, batch_size=batch_size, progress=progress)
    except JBenchError:
        raise
    rep = compare(plan.source, record.to_json(), str(record.path or "in-memory"), skipped=plan.skipped,
                  stated_model=plan.source.model if plan.checkpoint else None)
    if limit is not None:
        rep.notes.append(f"--limit {limit:g}: fewer documents than the source: the noise band is wider and a task "
                         "within it is only 'consistent', never 'reproduced'")
    return rep, record
