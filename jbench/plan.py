"""What a run is asked to do: tasks, shots, model preset, data dir and run directory, resolved once and checked.

A :class:`RunPlan` is stored first in the run directory (``run.json``), so ``--resume`` can redo a run exactly, and
in results.json (``plan``), so ``compare`` reuses a stored run only if it asked the same. Resolving never loads a
model; :func:`resolve_plan` collects every problem it meets for :func:`jbench.validate.validate_plan`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jbench.errors import JBenchError, TaskError
from jbench.results import write_json

PLAN_FILE = "run.json"


@dataclass
class RunPlan:
    """What a run was asked to do; stored first in the run directory so ``--resume`` can redo it exactly."""

    model: dict[str, Any]
    tasks: list[str]
    num_fewshot: list[int]
    data_dir: str
    limit: int | float | None = None
    allow_data_mismatch: bool = False
    preset: dict[str, Any] | None = None
    chat: dict[str, Any] | None = None  # jbench.chat.ChatOptions as a dict; None: the reference prompts as text

    def save(self, run_dir: Path) -> None:
        write_json(run_dir / PLAN_FILE, asdict(self))

    @classmethod
    def load(cls, run_dir: Path) -> RunPlan:
        import json

        from jbench.errors import StoreError

        path = run_dir / PLAN_FILE
        if not path.is_file():
            raise StoreError("nothing to resume: the run directory has no run.json", where=str(run_dir),
                             fix="start the run with `jbench eval` (it resumes automatically in the same --run-name)")
        try:
            plan = cls(**json.loads(path.read_text(encoding="utf-8")))
            from jbench.models.load import ModelSpec

            ModelSpec(**plan.model)  # a hand-edited model entry fails here, not deep inside the run
        except (OSError, ValueError, TypeError) as err:
            raise StoreError(f"run.json cannot be read as a run plan: {err}", where=str(path),
                             fix="start the run again with `jbench eval` and the options you want") from err
        return plan


def stored_plan(run_dir: Path) -> dict[str, Any] | None:
    """The plan a finished run recorded in its results.json (None: no finished run, or one from before plans were
    recorded). It, not run.json, says what the results are: run.json may describe a later attempt."""
    import json

    from jbench.results import RESULTS_FILE

    try:
        plan = json.loads((run_dir / RESULTS_FILE).read_text(encoding="utf-8")).get("plan")
    except (OSError, ValueError, AttributeError):
        return None
    return plan if isinstance(plan, dict) else None


DEFAULT_SUITE = ["jcommonsenseqa", "jnli", "marc_ja", "jsquad", "jaqket_v2", "xwinograd_ja"]
DEFAULT_SHOTS = [3, 3, 3, 2, 1, 0]
FALLBACK_PROMPT_VERSION = "0.3"


def parse_limit(value: float | None) -> int | float | None:
    """``--limit`` as the reference reads it: below 1 a fraction, else a count. Values that are no limit at all
    (NaN, inf, zero, negative) are passed through as floats for the validation step to refuse."""
    import math

    if value is None:
        return None
    if not math.isfinite(value) or value < 1:
        return value
    return int(value)


def split_csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def parse_shots(value: str | None, n_tasks: int, defaults: list[int]) -> list[int]:
    if not value:
        return defaults
    parts = [v.strip() for v in value.split(",")]
    try:
        if any(p == "" for p in parts):
            raise ValueError("empty item")
        shots = [int(v) for v in parts]
    except ValueError as err:
        raise TaskError(f"--num-fewshot must be integers separated by commas, got {value!r}",
                        where=f"--num-fewshot {value}", fix="e.g. --num-fewshot 3,3,3,2,1,0 or --num-fewshot 0"
                        ) from err
    if len(shots) == 1:
        return shots * n_tasks
    if len(shots) != n_tasks:
        raise TaskError(f"--num-fewshot lists {len(shots)} values for {n_tasks} tasks",
                        where=f"--num-fewshot {value}",
                        fix="give one value for every task (in the same order) or a single value for all")
    return shots


def merge_repeated(values: list[str] | None) -> str | None:
    """A repeatable comma-separated option (``--tasks a --tasks b,c``) as one comma-separated value; None when the
    option was not given, "" when it was given without a name (an error for the validation step, not a default)."""
    if not values:
        return None
    return ",".join(v for value in values for v in split_csv(value))


def default_data_dir(explicit: Path | None, tiny: bool) -> Path:
    from jbench.data import resolve_data_dir, sample_data_dir

    if explicit is None and tiny and not os.environ.get("JBENCH_DATA_DIR"):
        return sample_data_dir()
    return resolve_data_dir(explicit)


def run_dir_for(output_dir: Path, run_name: str | None, plan: RunPlan) -> tuple[Path, list[JBenchError]]:
    """``<output-dir>/<run-name>``; a given name must be a plain name (never a path out of the store)."""
    from jbench.results import check_plain_name

    if run_name is None:  # every setting that changes the numbers is in it (jbench.run_identity)
        from jbench.run_identity import default_run_name

        return output_dir / default_run_name(plan), []
    try:
        check_plain_name(run_name, "run name", "--run-name")
    except JBenchError as err:
        return output_dir / "invalid-run-name", [err]
    return output_dir / run_name, []


def resolve_plan(*, model: str | None, tasks: str | None, num_fewshot: str | None, prompt_version: str | None,
                 limit: float | None, variant: str | None, batch_size: int | str | None, device: str | None,
                 use_fast: bool | None, trust_remote_code: bool | None, data_dir: Path | None,
                 allow_data_mismatch: bool, backend: str | None = None, apply_chat_template: bool | None = None,
                 system_instruction: str | None = None, fewshot_as_multiturn: bool | None = None,
                 model_args: str | list[str] | dict[str, Any] | None = None, revision: str | None = None
                 ) -> tuple[RunPlan, list[JBenchError]]:
    """Resolve tasks, shots, the model preset and the data dir into a RunPlan (shared by eval and compare).

    Returns the plan and the problems found while resolving it (unknown names, bad shots, flags that cannot
    apply), so that :func:`jbench.validate.validate_plan` can report them together with its own. The preset
    (tokenizer flags, dtype, prompt version) is always printed, and every choice can be overridden. Tokenizer
    settings are resolved here, once, so every variant of a comparison inherits exactly the original's.
    """
    from jbench.devices import default_variant_for, resolve_device
    from jbench.models.load import ModelSpec, TINY
    from jbench.presets import describe, resolve_preset
    from jbench.tasks import resolve_task

    from jbench.models.model_args import model_from_args

    model = model_from_args(model, model_args)  # lm-eval's --model_args pretrained=NAME names the model
    problems: list[JBenchError] = []
    preset = None
    preset_chat = False  # the preset's choice of --apply-chat-template (chat models without a reference prompt)
    requested_device = device
    device, why = resolve_device(device)  # the plan holds the concrete device: cache keys and run names follow it
    if requested_device != device:
        print(f"device: {device} ({why})", file=sys.stderr)
    if model in (None, TINY):
        pv = prompt_version or FALLBACK_PROMPT_VERSION
        use_fast = False if use_fast is None else use_fast
        print(f"embedded tiny model: prompt version {pv}, use_fast={use_fast}"
              f"{' (sentencepiece)' if use_fast is False else ''}, {variant or 'fp32'}", file=sys.stderr)
    else:
        res = resolve_preset(model, overrides={"prompt_version": prompt_version, "use_fast": use_fast,
                                               "trust_remote_code": trust_remote_code,
                                               "chat_template": apply_chat_template}, warn=False)
        print(describe(res), file=sys.stderr)
        preset = res.to_record()
        pv, use_fast, trust_remote_code = res.prompt_version, res.use_fast, res.trust_remote_code
        preset_chat = res.chat_template
        if res.is_fallback and apply_chat_template is None:  # lm-eval warns likewise for chat-looking models
            from jbench.chat import template_in_dir

            if Path(model).is_dir() and template_in_dir(model):
                print("note: this model's tokenizer has a chat template; --apply-chat-template renders the prompts "
                      "through it (task names then end in +chat)", file=sys.stderr)
        chosen, note = default_variant_for(device, res.variant or ("auto" if res.effective_dtype == "auto" else None),
                                           has_preset=not res.is_fallback)
        if variant is None and note:
            print(note, file=sys.stderr)
        variant = variant or chosen
    names = split_csv(tasks) or DEFAULT_SUITE
    if tasks is not None and not split_csv(tasks):
        problems.append(TaskError(f"--tasks names no task: {tasks!r}", where=f"--tasks {tasks}",
                                  fix="give task or family names separated by commas, or omit --tasks for the "
                                      "6-task suite"))
    try:
        shots = parse_shots(num_fewshot, len(names), DEFAULT_SHOTS if names == DEFAULT_SUITE else [])
    except TaskError as err:
        problems.append(err)
        shots = []
    full = _full_names()
    specs = []
    for n in names:
        try:
            specs.append(resolve_task(n, None if n in full else pv))
        except TaskError as err:
            if err.where is None:
                opts = f"--tasks {n}" + (f" --prompt-version {pv}" if "prompt version" in err.what else "")
                err = TaskError(err.what, where=opts, fix=err.fix)
            problems.append(err)
    seen: dict[str, str] = {}
    for given, t in zip(names, specs):
        if t.name in seen:
            problems.append(TaskError(f"{given!r} and {seen[t.name]!r} are the same task ({t.name})",
                                      where=f"--tasks {','.join(names)}",
                                      fix="name each task once (with its --num-fewshot value)"))
        seen.setdefault(t.name, given)
    if prompt_version is not None:
        for t in specs:
            if t.name in names and t.prompt_version and t.prompt_version != prompt_version:
                problems.append(TaskError(
                    f"--prompt-version {prompt_version} cannot apply to {t.name}, whose name fixes prompt version "
                    f"{t.prompt_version}", where=f"--tasks {t.name} --prompt-version {prompt_version}",
                    fix=f"name the task by its family (--tasks {t.family}) to pick the prompt with "
                        "--prompt-version, or drop --prompt-version"))
    if len(specs) != len(names):
        shots = shots if len(shots) == len(specs) else [t.default_shots for t in specs]
    shots = shots or [t.default_shots for t in specs]
    from jbench.models.model_args import resolve_model_options

    model_fields, more = resolve_model_options(model, model_args, revision, batch_size)  # --model-args, --revision
    problems += more
    spec = ModelSpec(model=model, variant=variant or "fp32", device=device, **model_fields,
                     use_fast=use_fast, trust_remote_code=bool(trust_remote_code), backend=backend or "hf")
    try:
        ddir = str(default_data_dir(data_dir, spec.is_tiny))
    except JBenchError as err:
        problems.append(err)
        ddir = str(data_dir or "")
    from jbench.chat import resolve_chat_options

    chat, chat_problems = resolve_chat_options(apply_chat_template, system_instruction, fewshot_as_multiturn,
                                               preset_default=preset_chat)
    problems += chat_problems
    plan = RunPlan(model=asdict(spec), tasks=[t.name for t in specs], num_fewshot=shots, data_dir=ddir,
                   limit=parse_limit(limit), allow_data_mismatch=allow_data_mismatch, preset=preset,
                   chat=None if chat is None else asdict(chat))
    return plan, problems


def _full_names() -> set[str]:
    from jbench.tasks import all_tasks

    return set(all_tasks())
