"""The ``jbench`` command line (typer). Shared options are defined once and reused by every command.

Every user-facing failure is a :class:`jbench.errors.JBenchError`: it is printed as one message (what, where,
what to do) on stderr with a non-zero exit code, never as a traceback.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from jbench.errors import InputErrors, JBenchError, TaskError

if TYPE_CHECKING:
    from jbench.runner import RunPlan

app = typer.Typer(
    help="jbench: Japanese LLM benchmarks with the exact semantics of the reference JP harness (JP-stable), "
         "and original-vs-quantized comparisons.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)


@app.callback()
def _global_options(verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Also show library warnings, logs and progress bars on stderr (they always go to "
                                "<run>/log.txt). Accepted anywhere on the command line.")] = False) -> None:
    """Options for every command (``main`` reads --verbose before this runs; declared here for --help)."""
    if verbose:  # in-process callers (typer's CliRunner) that pass it; `main` has set up logging already
        from jbench.logs import setup

        setup(verbose=True)


DEFAULT_SUITE = ["jcommonsenseqa", "jnli", "marc_ja", "jsquad", "jaqket_v2", "xwinograd_ja"]
DEFAULT_SHOTS = [3, 3, 3, 2, 1, 0]
FALLBACK_PROMPT_VERSION = "0.3"

DataDirOpt = Annotated[Optional[Path], typer.Option(
    "--data-dir", help="Folder with the raw data files (default: $JBENCH_DATA_DIR; with the embedded tiny model "
                       "and no data dir, the bundled sample).", show_default=False)]
ModelOpt = Annotated[Optional[str], typer.Option(
    "--model", "-m", help="Local path or hub id of a causal LM. Omitted or 'tiny': the embedded tiny model "
                          "(built offline, deterministically, in seconds).")]
LimitOpt = Annotated[Optional[float], typer.Option(
    "--limit", help="Keep the first N documents after the shuffle (a value below 1 is a fraction).")]


def _limit(value: float | None) -> int | float | None:
    if value is None:
        return None
    return value if value < 1 else int(value)


def _split_csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _shots(value: str | None, n_tasks: int, defaults: list[int]) -> list[int]:
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


def _merge_repeated(values: list[str] | None) -> str | None:
    """A repeatable comma-separated option (``--tasks a --tasks b,c``) as one comma-separated value."""
    items = [v for value in values or [] for v in _split_csv(value)]
    return ",".join(items) if items else None


def _data_dir(explicit: Path | None, tiny: bool) -> Path:
    from jbench.data import resolve_data_dir, sample_data_dir

    if explicit is None and tiny and not os.environ.get("JBENCH_DATA_DIR"):
        return sample_data_dir()
    return resolve_data_dir(explicit)


@app.command("tasks")
def tasks_cmd() -> None:
    """List every task: name, task version, prompt version, output type, shots, metrics and origin.

    origin is "reference" (the name exists in JP-stable) or "jbench addition" (it does not: youri-chat prompts,
    jsquad-1.2-0.1, jaqket_v2-0.1-0.6)."""
    from jbench.tasks import all_tasks

    print("| task | version | prompt | output | default shots | metrics | origin |")
    print("|---|---|---|---|---|---|---|")
    for t in all_tasks().values():
        origin = "reference" if t.is_reference else "jbench addition"
        print(f"| {t.name} | {t.version} | {t.prompt_version or '-'} | {t.output_type} | {t.default_shots} "
              f"| {', '.join(t.metrics)} | {origin} |")


@app.command("prompts")
def prompts_cmd(
    task: Annotated[str, typer.Option("--task", help="Task name, e.g. jcommonsenseqa-1.1-0.3.")],
    num_fewshot: Annotated[Optional[int], typer.Option("--num-fewshot", help="Shots (default: the task's).")] = None,
    limit: LimitOpt = None,
    model: Annotated[Optional[str], typer.Option(
        "--model", help="Tokenizer (model path or hub id) for generation caps and prompt fitting.")] = None,
    use_fast: Annotated[Optional[bool], typer.Option("--use-fast/--no-use-fast")] = None,
    data_dir: DataDirOpt = None,
    allow_data_mismatch: Annotated[bool, typer.Option(
        "--allow-data-mismatch", help="Build requests even if a data file fails its checksum (as for eval).")]
    = False,
) -> None:
    """Print one JSON object per request (and nothing else on stdout): the fidelity interface.

    Fields: task, doc_index (position after the shuffle), doc_id, context, and continuations (loglikelihood
    tasks) or until + max_gen_tokens (generation tasks; needs --model for the token cap).
    """
    from jbench.data import load_split
    from jbench.requests import build_instances
    from jbench.tasks import resolve_task

    spec = resolve_task(task)
    k = spec.default_shots if num_fewshot is None else num_fewshot
    encode, max_length = None, None
    if model is not None:
        from jbench.models.load import ModelSpec, resolve_model_path
        from jbench.models.tokenizer import load_tokenizer

        mspec = ModelSpec(model=model)
        tok = load_tokenizer(resolve_model_path(mspec), use_fast=False if mspec.is_tiny and use_fast is None
                             else use_fast)
        encode = tok.encode
        max_length = _model_max_length(resolve_model_path(mspec))
    from jbench.runner import RunPlan
    from jbench.validate import check_limit, check_tasks_data

    ddir = _data_dir(data_dir, tiny=model in (None, "tiny"))
    probe = RunPlan(model={}, tasks=[spec.name], num_fewshot=[k], data_dir=str(ddir), limit=_limit(limit),
                    allow_data_mismatch=allow_data_mismatch)
    problems = check_limit(limit) + check_tasks_data(probe)
    if problems:
        raise InputErrors(problems)
    val = load_split(spec.dataset, "validation", ddir, allow_mismatch=allow_data_mismatch)
    train = load_split(spec.dataset, "train", ddir, allow_mismatch=allow_data_mismatch).docs if k > 0 else None
    for inst in build_instances(spec, val.docs, train, k, limit=_limit(limit), encode=encode, max_length=max_length):
        sys.stdout.write(json.dumps(inst.to_json(), ensure_ascii=False) + "\n")


def _model_max_length(path: str) -> int | None:
    try:
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(path)
    except Exception:  # noqa: BLE001 - a tokenizer-only directory has no config; the cap then stays unknown
        return None
    return getattr(cfg, "n_ctx", None) or getattr(cfg, "max_position_embeddings", None)


@app.command("data")
def data_cmd(
    data_dir: DataDirOpt = None,
    download: Annotated[Optional[list[str]], typer.Option(
        "--download", help="Download these datasets (repeatable; 'all' for every downloadable file).")] = None,
    mirror: Annotated[Optional[str], typer.Option(
        "--mirror", help="Base URL replacing the public hosts (or $JBENCH_DATA_MIRROR).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even if a verified file exists.")] = False,
) -> None:
    """Show each dataset's files, record counts and checksum status; optionally download the public ones."""
    from jbench.data import dataset_status, download_datasets, resolve_data_dir

    if download:
        ddir = Path(data_dir or os.environ.get("JBENCH_DATA_DIR") or "data")
        names = None if "all" in download else list(download)
        for info in download_datasets(names, ddir, mirror=mirror, force=force):
            print(f"downloaded {info.path}  sha256={info.sha256}  records={info.records}", file=sys.stderr)
    else:
        ddir = resolve_data_dir(data_dir)
    rows = dataset_status(ddir)
    cols = list(rows[0]) if rows else []
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")


@app.command("eval")
def eval_cmd(
    model: ModelOpt = None,
    tasks: Annotated[Optional[list[str]], typer.Option(
        "--tasks", "-t", help="Comma-separated task or family names; repeatable (the lists are joined). Default: "
                              "the 6-task suite jcommonsenseqa,jnli,marc_ja,jsquad,jaqket_v2,xwinograd_ja.")] = None,
    num_fewshot: Annotated[Optional[str], typer.Option(
        "--num-fewshot", help="Shots per task, comma-separated in task order, or one value for all "
                              "(default: 3,3,3,2,1,0 for the suite, else each task's default).")] = None,
    prompt_version: Annotated[Optional[str], typer.Option(
        "--prompt-version", "-p", help="Prompt version for family names (e.g. 0.3). Default: the model preset's, "
                                       f"else {FALLBACK_PROMPT_VERSION}. A full task name (jnli-1.3-0.4) "
                                       "already names its prompt version.")] = None,
    limit: LimitOpt = None,
    variant: Annotated[Optional[str], typer.Option(
        "--variant", help="fp32, fp16, bf16, auto (the checkpoint's dtype) or a quantized variant (see README). "
                          "Default: the model preset's dtype.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(
        "--batch-size", help="Requests per forward pass. Default: automatic (the scorer packs rows by token "
                             "count and halves the batch on out-of-memory).")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="cpu (default), cuda, cuda:1, mps.")] = None,
    use_fast: Annotated[Optional[bool], typer.Option("--use-fast/--no-use-fast", help="Tokenizer choice; "
                                                     "--no-use-fast gives true sentencepiece ids.")] = None,
    trust_remote_code: Annotated[Optional[bool], typer.Option(
        "--trust-remote-code/--no-trust-remote-code", help="Default: the model preset's.")] = None,
    data_dir: DataDirOpt = None,
    output_dir: Annotated[Path, typer.Option("--output-dir", help="Where runs are stored.")] = Path("results"),
    run_name: Annotated[Optional[str], typer.Option(
        "--run-name", help="A plain name under --output-dir. Default: <model>-<variant> (plus a short hash of the "
                           "path for local models, so two models with the same folder name never share a run).")]
    = None,
    allow_data_mismatch: Annotated[bool, typer.Option(
        "--allow-data-mismatch", help="Evaluate even if a data file fails its checksum (recorded in results).")]
    = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Keep every answer in the run's request "
                                        "cache (resumable runs).")] = True,
    resume: Annotated[Optional[str], typer.Option("--resume", help="Resume a stored run (directory or name): "
                                                  "same model, tasks and settings, cached answers reused.")]
    = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate everything (tasks, shots, limit, device, "
                                          "variant, data files, output dir), print the resolved preset, tasks, "
                                          "shots and prompt versions, then stop (no weights are loaded).")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="If another jbench process holds the run directory, wait "
                                       "for it instead of exiting with an error.")] = False,
    suite: Annotated[Optional[str], typer.Option(
        "--suite", help="ja_leaderboard: run lm-eval's own japanese_leaderboard tasks (EleutherAI prompts and "
                        "metrics, 0-1 scale) through lm_eval.simple_evaluate on the same local data files.")] = None,
) -> None:
    """Evaluate a model on tasks; writes results/<run>/ and prints the card table and the averages.

    Every answer is cached in results/<run>/cache.sqlite as it is computed: rerunning the same command (or
    `--resume RUN`) after a crash or Ctrl-C continues where it stopped and gives identical numbers. Everything is
    validated before the model loads; one process at a time holds a run directory; the previous results of the run
    are replaced only when the new run is complete.
    """
    from jbench.runner import RunPlan
    from jbench.tasks import resolve_task
    from jbench.validate import validate_plan

    task_list = _merge_repeated(tasks)
    if suite is not None:
        _run_suite(suite, model=model, tasks=task_list, num_fewshot=num_fewshot, prompt_version=prompt_version,
                   limit=limit, variant=variant, batch_size=batch_size, device=device, use_fast=use_fast,
                   trust_remote_code=trust_remote_code, data_dir=data_dir, output_dir=output_dir,
                   run_name=run_name, allow_data_mismatch=allow_data_mismatch)
        return
    if resume is not None:
        given = {"--model": model, "--tasks": task_list, "--num-fewshot": num_fewshot,
                 "--prompt-version": prompt_version, "--limit": limit, "--variant": variant,
                 "--batch-size": batch_size, "--device": device, "--use-fast/--no-use-fast": use_fast,
                 "--trust-remote-code": trust_remote_code, "--data-dir": data_dir, "--run-name": run_name,
                 "--allow-data-mismatch": allow_data_mismatch or None}
        clash = [k for k, v in given.items() if v is not None]
        if clash:
            raise TaskError(f"--resume redoes the stored run exactly, so {', '.join(clash)} cannot apply",
                            where=f"--resume {resume}",
                            fix="drop those options to resume, or start a new run (another --run-name) with them")
        from jbench.results import resolve_run_dir

        run_dir = resolve_run_dir(resume, output_dir)
        plan = RunPlan.load(run_dir)
        validate_plan(plan, run_dir)
    else:
        plan, problems = resolve_plan(model=model, tasks=task_list, num_fewshot=num_fewshot,
                                   prompt_version=prompt_version, limit=limit, variant=variant, batch_size=batch_size,
                                   device=device, use_fast=use_fast, trust_remote_code=trust_remote_code,
                                   data_dir=data_dir, allow_data_mismatch=allow_data_mismatch)
        run_dir, name_problems = _run_dir(output_dir, run_name, plan)
        validate_plan(plan, run_dir, problems=problems + name_problems)
    if dry_run:
        print(json.dumps({"run_dir": str(run_dir), "preset": plan.preset, "model": plan.model, "tasks": [
            {"task": t, "num_fewshot": k, "prompt_version": resolve_task(t).prompt_version or None}
            for t, k in zip(plan.tasks, plan.num_fewshot)], "limit": plan.limit, "data_dir": plan.data_dir},
            indent=2, ensure_ascii=False))
        return
    execute_plan(plan, run_dir, show_progress=progress, use_cache=cache, wait=wait)


def _run_dir(output_dir: Path, run_name: str | None, plan: "RunPlan") -> tuple[Path, list[JBenchError]]:
    """``<output-dir>/<run-name>``; a given name must be a plain name (never a path out of the store)."""
    from jbench.models.load import ModelSpec
    from jbench.results import check_plain_name

    if run_name is None:
        return output_dir / ModelSpec(**plan.model).slug(), []
    try:
        check_plain_name(run_name, "run name", "--run-name")
    except JBenchError as err:
        return output_dir / "invalid-run-name", [err]
    return output_dir / run_name, []


def _run_suite(suite: str, *, model: str | None, tasks: str | None, num_fewshot: str | None,
               prompt_version: str | None, limit: float | None, variant: str | None, batch_size: int | None,
               device: str | None, use_fast: bool | None, trust_remote_code: bool | None, data_dir: Path | None,
               output_dir: Path, run_name: str | None, allow_data_mismatch: bool) -> None:
    """``--suite ja_leaderboard``: lm-eval is the engine; jbench loads the model and stores the run."""
    from jbench.models.load import ModelSpec
    from jbench.suites import run_ja_leaderboard, suite_tables

    if suite != "ja_leaderboard":
        raise TaskError(f"unknown suite {suite!r}", fix="the only suite is ja_leaderboard")
    if num_fewshot:
        raise TaskError("--num-fewshot does not apply to --suite ja_leaderboard (each lm-eval task sets its own)")
    plan, problems = resolve_plan(model=model, tasks=None, num_fewshot=None, prompt_version=prompt_version,
                               limit=limit, variant=variant, batch_size=batch_size, device=device, use_fast=use_fast,
                               trust_remote_code=trust_remote_code, data_dir=data_dir,
                               allow_data_mismatch=allow_data_mismatch)
    from jbench.validate import validate_plan

    if run_name is not None:
        from jbench.results import check_plain_name

        check_plain_name(run_name, "run name", "--run-name")
    validate_plan(plan, None, problems=problems, check_data=False)
    spec = ModelSpec(**plan.model)
    from jbench.logs import run_log
    from jbench.results import RunLock

    run_dir = output_dir / (run_name or f"{spec.slug()}-ja_leaderboard")
    with RunLock(run_dir), run_log(run_dir):
        out = run_ja_leaderboard(spec, Path(plan.data_dir), run_dir, tasks=_split_csv(tasks) or None,
                                 limit=plan.limit, batch_size=batch_size,
                                 allow_data_mismatch=plan.allow_data_mismatch, preset=plan.preset)
    print(suite_tables(out))


def make_plan(*, model: str | None, tasks: str | None, num_fewshot: str | None, prompt_version: str | None,
              limit: float | None, variant: str | None, batch_size: int | None, device: str | None,
              use_fast: bool | None, trust_remote_code: bool | None, data_dir: Path | None,
              allow_data_mismatch: bool) -> "RunPlan":
    """A validated RunPlan (see :func:`resolve_plan`); raises :class:`InputErrors` listing every problem."""
    from jbench.validate import validate_plan

    plan, problems = resolve_plan(model=model, tasks=tasks, num_fewshot=num_fewshot, prompt_version=prompt_version,
                                  limit=limit, variant=variant, batch_size=batch_size, device=device,
                                  use_fast=use_fast, trust_remote_code=trust_remote_code, data_dir=data_dir,
                                  allow_data_mismatch=allow_data_mismatch)
    validate_plan(plan, None, problems=problems)
    return plan


def resolve_plan(*, model: str | None, tasks: str | None, num_fewshot: str | None, prompt_version: str | None,
                 limit: float | None, variant: str | None, batch_size: int | None, device: str | None,
                 use_fast: bool | None, trust_remote_code: bool | None, data_dir: Path | None,
                 allow_data_mismatch: bool) -> tuple["RunPlan", list[JBenchError]]:
    """Resolve tasks, shots, the model preset and the data dir into a RunPlan (shared by eval and compare).

    Returns the plan and the problems found while resolving it (unknown names, bad shots, flags that cannot
    apply), so that :func:`jbench.validate.validate_plan` can report them together with its own. The preset
    (tokenizer flags, dtype, prompt version) is always printed, and every choice can be overridden. Tokenizer
    settings are resolved here, once, so every variant of a comparison inherits exactly the original's.
    """
    from jbench.models.load import ModelSpec, TINY
    from jbench.presets import describe, resolve_preset
    from jbench.runner import RunPlan
    from jbench.tasks import resolve_task

    problems: list[JBenchError] = []
    preset = None
    if model in (None, TINY):
        pv = prompt_version or FALLBACK_PROMPT_VERSION
        use_fast = False if use_fast is None else use_fast
        print(f"embedded tiny model: prompt version {pv}, use_fast={use_fast}"
              f"{' (sentencepiece)' if use_fast is False else ''}, fp32", file=sys.stderr)
    else:
        res = resolve_preset(model, overrides={"prompt_version": prompt_version, "use_fast": use_fast,
                                               "trust_remote_code": trust_remote_code}, warn=False)
        print(describe(res), file=sys.stderr)
        preset = res.to_record()
        pv, use_fast, trust_remote_code = res.prompt_version, res.use_fast, res.trust_remote_code
        variant = variant or res.variant or ("auto" if res.effective_dtype == "auto" else None)
    names = _split_csv(tasks) or DEFAULT_SUITE
    try:
        shots = _shots(num_fewshot, len(names), DEFAULT_SHOTS if names == DEFAULT_SUITE else [])
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
    spec = ModelSpec(model=model, variant=variant or "fp32", device=device or "cpu", batch_size=batch_size,
                     use_fast=use_fast, trust_remote_code=bool(trust_remote_code))
    try:
        ddir = str(_data_dir(data_dir, spec.is_tiny))
    except JBenchError as err:
        problems.append(err)
        ddir = str(data_dir or "")
    plan = RunPlan(model=asdict(spec), tasks=[t.name for t in specs], num_fewshot=shots, data_dir=ddir,
                   limit=_limit(limit), allow_data_mismatch=allow_data_mismatch, preset=preset)
    return plan, problems


def model_size_bytes(scorer: object) -> int | None:
    """Bytes the weights occupy: the loaded model's footprint (quantized size for on-the-fly variants), else the
    size of the weights file the backend reports."""
    size = getattr(scorer, "model_size_bytes", None)
    if isinstance(size, int):
        return size
    model = getattr(scorer, "model", None)
    footprint = getattr(model, "get_memory_footprint", None)
    return int(footprint()) if callable(footprint) else None


def runtime_resources(scorer: object) -> dict:
    """Peak resident memory of this process and model throughput (tokens through the model per second)."""
    import resource

    tokens = sum(int(getattr(scorer, a, 0) or 0) for a in ("tokens_processed", "generated_tokens_processed"))
    return {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "tokens_processed": tokens}


def reliability_counters(scoring: object) -> dict:
    """Request-cache hits/misses (a resumed run has hits) and out-of-memory retries (they change the batch
    composition, hence possibly the last bits), for results.json ``config.resources``."""
    out: dict = {}
    inner = getattr(scoring, "inner", scoring)
    if hasattr(scoring, "hits"):
        out["cache_hits"], out["cache_misses"] = scoring.hits, scoring.misses  # type: ignore[attr-defined]
        # stored answers that failed their checksum (or predate checksums) and were recomputed
        out["cache_corrupt"] = int(getattr(scoring, "corrupt", 0))
        out["cache_unverified"] = int(getattr(scoring, "unverified", 0))
    if getattr(inner, "oom_retries", 0):
        out["oom_retries"] = inner.oom_retries  # type: ignore[attr-defined]
        out["oom_batch_cap"] = getattr(inner, "oom_batch_cap", None)
    return out


def _full_names() -> set[str]:
    from jbench.tasks import all_tasks

    return set(all_tasks())


class Interrupted(JBenchError):
    """Ctrl-C during a run. Raised as a JBenchError because click would turn a KeyboardInterrupt into a bare
    "Aborted!" with exit code 1; ``main`` prints how to resume and exits 130."""

    exit_code = 130


def execute_plan(plan: "RunPlan", run_dir: Path, *, show_progress: bool = True, use_cache: bool = True,
                 wait: bool = False) -> dict:
    """Load the model, run (resuming from the run's cache), print the tables; shared by eval and compare.

    The run directory is held with an OS lock for the whole run, so two processes can never interleave in it."""
    from jbench.logs import run_log
    from jbench.results import RunLock

    try:
        with RunLock(run_dir, wait=wait), run_log(run_dir):  # library logs -> <run>/log.txt
            return _execute_plan(plan, run_dir, show_progress=show_progress, use_cache=use_cache)
    except KeyboardInterrupt as err:
        raise Interrupted("interrupted", where=str(run_dir)) from err


def _execute_plan(plan: "RunPlan", run_dir: Path, *, show_progress: bool, use_cache: bool) -> dict:
    from jbench.cache import CACHE_FILE, CachingScorer, RequestCache, model_identity
    from jbench.models.load import ModelSpec, load_scorer
    from jbench.runner import RunSettings, TaskRun, run_tasks
    from jbench.tasks import resolve_task

    settings = RunSettings(tasks=[TaskRun(resolve_task(n), k) for n, k in zip(plan.tasks, plan.num_fewshot)],
                           data_dir=Path(plan.data_dir), limit=plan.limit,
                           allow_data_mismatch=plan.allow_data_mismatch)
    spec = ModelSpec(**plan.model)
    plan.save(run_dir)  # first, so that `--resume` can redo exactly this run if it is interrupted
    t_load = time.perf_counter()
    scorer, record = load_scorer(spec)
    load_s = time.perf_counter() - t_load
    record["preset"] = plan.preset
    cache = RequestCache(run_dir / CACHE_FILE) if use_cache else None
    if cache is not None and (cached := cache.count()):
        print(f"resuming {run_dir}: {cached} answers are already in its request cache", file=sys.stderr)
    if record["batch_size"] == "auto" and getattr(scorer, "batch_sizing", None):
        record["batch_sizing"] = scorer.batch_sizing  # type: ignore[attr-defined]
    try:
        scoring = CachingScorer(scorer, cache, model_identity(record)) if cache else scorer
        record["resources"] = {"load_s": round(load_s, 3), "size_bytes": model_size_bytes(scorer)}
        out = run_tasks(scoring, settings, run_dir, model_record=record, show_progress=show_progress,
                        run_plan=asdict(plan),
                        resources=lambda: {**runtime_resources(scorer), **reliability_counters(scoring)})
    finally:
        if cache:
            cache.close()
    print_tables(out)
    print(f"run stored in {run_dir}", file=sys.stderr)
    return out


def print_tables(out: dict) -> None:
    """The header line, the card table (with data marks and truncation notes) and the averages of one run."""
    from jbench.report import (averages_table, card_table, data_marks, header_line, marks_footer,
                               truncation_footer)

    cfg = out.get("config", {})
    marks = data_marks(cfg.get("data"))
    print(header_line("hf-causal", cfg.get("model_args", ""), cfg.get("limit"), cfg.get("num_fewshot", []),
                      cfg.get("batch_size")))
    print(card_table(out.get("results", {}), out.get("versions", {}), marks)
          + truncation_footer(out.get("truncated"), cfg.get("max_length")) + marks_footer(marks))
    print(averages_table(out.get("results", {}), marks) + marks_footer(marks))


@app.command("presets")
def presets_cmd(model: Annotated[Optional[str], typer.Argument(help="Show which preset this model id/path gets.")]
                = None) -> None:
    """List the model presets (model -> prompt version, tokenizer flags, dtype, why), or resolve one model."""
    from jbench.presets import describe, presets_table, resolve_preset

    if model:
        print(describe(resolve_preset(model, warn=False)))
    else:
        print(presets_table())


baseline_app = typer.Typer(help="Regression baselines (small reviewable JSON files under results/baselines/).",
                           no_args_is_help=True)
app.add_typer(baseline_app, name="baseline")
BaselinesDirOpt = Annotated[Path, typer.Option("--baselines-dir", help="Where baselines live.")]


@baseline_app.command("save")
def baseline_save_cmd(
    run: Annotated[str, typer.Argument(help="Run directory (or name under results/).")],
    name: Annotated[str, typer.Option("--name", help="Baseline name (file results/baselines/<name>.json).")],
    baselines_dir: BaselinesDirOpt = Path("results/baselines"),
    predictions: Annotated[bool, typer.Option("--predictions/--no-predictions",
                                              help="Keep per-example predictions (needed by --mode exact).")] = True,
) -> None:
    """Save a run's numbers (and per-example predictions) as a named baseline."""
    from jbench.baseline import save_baseline

    print(save_baseline(run, name, baselines_dir=baselines_dir, include_predictions=predictions))


@app.command("check")
def check_cmd(
    run: Annotated[str, typer.Argument(help="Run directory (or name under results/).")],
    baseline: Annotated[str, typer.Option("--baseline", help="Baseline name, JSON file or run directory.")],
    mode: Annotated[str, typer.Option("--mode", help="exact (same deterministic setup: metrics and predictions "
                                      "exactly, loglikelihoods within 1e-4) or stat (n-aware noise bands).")]
    = "stat",
    k: Annotated[float, typer.Option("--k", help="stat mode: band = k * combined stderr (non-proportions).")]
    = 2.0,
    confidence: Annotated[float, typer.Option("--confidence", help="stat mode: one-sided Wilson confidence, "
                                              "in (0.5, 1).")] = 0.95,
    rtol: Annotated[float, typer.Option("--rtol", help="stat mode: relative drop tolerated on top.")] = 0.0,
    baselines_dir: BaselinesDirOpt = Path("results/baselines"),
    report: Annotated[Optional[Path], typer.Option("--report", help="Also write the markdown report here.")]
    = None,
    allow_tokenizer_mismatch: Annotated[bool, typer.Option(
        "--allow-tokenizer-mismatch", help="Compare even if the tokenizer identity differs from the baseline's (or "
                                           "the baseline predates identities); the report shows the difference at "
                                           "the top.")] = False,
) -> None:
    """Compare a run with a baseline. Exit 0 pass, 1 a number regressed (NaN/inf included), 2 cannot compare or
    bad input (one message says which file and field)."""
    from jbench.baseline import check_run

    rep = check_run(run, baseline, mode=mode, k=k, confidence=confidence, rtol=rtol,  # type: ignore[arg-type]
                    baselines_dir=baselines_dir, allow_tokenizer_mismatch=allow_tokenizer_mismatch)
    text = rep.to_markdown()
    if report is not None:
        try:
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(text + "\n", encoding="utf-8")
        except OSError as err:
            raise JBenchError(f"cannot write the report: {err.strerror or err}", where=str(report),
                              fix="pass a writable --report path") from err
    print(text)
    raise typer.Exit(rep.exit_code)


PREQUANTIZED = ("gptq", "awq", "gguf")


def calibration_texts(data_dir: Path, n: int = 256) -> list[str]:
    """Japanese calibration text from the task train splits present in ``data_dir`` (JCQA questions and choices,
    JNLI sentences, JSQuAD paragraphs), in file order; quantization then samples from it with a fixed seed."""
    from jbench.data import load_split
    from jbench.errors import DataError

    texts: list[str] = []
    for dataset, fields in (("jsquad", ("context",)), ("jcommonsenseqa", ("question", "choice0", "choice1")),
                            ("jnli", ("sentence1", "sentence2"))):
        try:
            docs = load_split(dataset, "train", data_dir).docs
        except DataError:
            continue
        for d in docs[: n]:
            texts.append("".join(str(d[f]).split("[SEP]")[-1].strip() for f in fields))
    if not texts:
        raise DataError("no train split found for calibration text", where=str(data_dir),
                        fix="pass --calibration FILE (one Japanese text per line)")
    return texts


def ensure_quantized(method: str, src: str, data_dir: Path, *, calibration: Path | None = None,
                     gguf_type: str = "q4_k_m") -> str:
    """A quantized copy of ``src`` (made once, next to it); returns the path the variant loads."""
    from jbench.quantize import default_out_dir, quantize

    group = _group_size_for(Path(src))
    out = default_out_dir(Path(src), method, 4, group)
    if method == "gguf":
        target = out / f"{Path(src).name}-{gguf_type}.gguf"
        if not target.is_file():
            quantize(Path(src), out, method="gguf", gguf_types=("f32", gguf_type))
        return str(target)
    if not (out / "jbench_quantize.json").is_file():
        quantize(Path(src), out, method=method, group_size=group,  # type: ignore[arg-type]
                 calibration=calibration if calibration else calibration_texts(data_dir))
    return str(out)


def _group_size_for(src: Path, preferred: int = 128) -> int:
    """128 (the usual published setting) unless the layer width is smaller or not a multiple (tiny models)."""
    try:
        cfg = json.loads((src / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return preferred
    hidden = int(cfg.get("hidden_size") or preferred)
    group = preferred
    while group > 8 and hidden % group:
        group //= 2
    if group != preferred:
        print(f"quantizing with group_size {group} (hidden size {hidden} is not a multiple of {preferred})",
              file=sys.stderr)
    return group


def run_or_reuse(plan: "RunPlan", run_dir: Path, *, show_progress: bool) -> Path:
    """Reuse a finished run made from the same plan; otherwise run it (resuming its cache) in a child process, so
    that each variant's peak memory is measured on its own.

    A finished run counts only if its results.json records this very plan (a run.json alone may describe an
    attempt that failed after the results were written by an earlier, different plan)."""
    import subprocess

    from jbench.results import RESULTS_FILE, RunLock

    results = run_dir / RESULTS_FILE
    if results.is_file():
        try:
            done = json.loads(results.read_text(encoding="utf-8")).get("plan")
        except (OSError, ValueError):
            done = None
        if done == asdict(plan):
            print(f"reusing {run_dir}", file=sys.stderr)
            return run_dir
    with RunLock(run_dir):
        plan.save(run_dir)
    cmd = [sys.executable, "-m", "jbench.cli", "eval", "--resume", str(run_dir)]
    cmd += [] if show_progress else ["--no-progress"]
    proc = subprocess.run(cmd, stdout=sys.stderr)
    if proc.returncode != 0:
        raise JBenchError(f"the run for {run_dir.name} failed (exit {proc.returncode})", where=str(run_dir),
                          fix="see the error above; rerun `jbench compare` to resume where it stopped")
    return run_dir


@app.command("compare")
def compare_cmd(
    model: ModelOpt = None,
    variants: Annotated[str, typer.Option(
        "--variants", help="Space- or comma-separated: int8 int4 bnb8 bnb4 gptq awq gguf (gguf:q8_0 for another "
                           "GGUF type). gptq/awq/gguf use --quantized checkpoints, or quantize the model "
                           "themselves (local or tiny models).")] = "int8 bnb8 bnb4 gptq",
    quantized: Annotated[Optional[list[str]], typer.Option(
        "--quantized", help="VARIANT=PATH of an existing quantized checkpoint or .gguf (repeatable).")] = None,
    tasks: Annotated[Optional[list[str]], typer.Option(
        "--tasks", "-t", help="As for eval (default: the 6-task suite; repeatable).")] = None,
    num_fewshot: Annotated[Optional[str], typer.Option("--num-fewshot", help="As for eval.")] = None,
    prompt_version: Annotated[Optional[str], typer.Option("--prompt-version", "-p", help="As for eval.")] = None,
    limit: LimitOpt = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="As for eval.")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="As for eval (default cpu).")] = None,
    data_dir: DataDirOpt = None,
    output_dir: Annotated[Path, typer.Option("--output-dir", help="Where runs are stored.")] = Path("results"),
    report_dir: Annotated[Optional[Path], typer.Option(
        "--report-dir", help="Default: <output-dir>/compare/<model>.")] = None,
    margin: Annotated[float, typer.Option("--margin", help="Equivalence margin in points (TOST).")] = 1.0,
    calibration: Annotated[Optional[Path], typer.Option(
        "--calibration", help="Calibration text file for gptq/awq (default: the task train splits).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    allow_tokenizer_mismatch: Annotated[bool, typer.Option(
        "--allow-tokenizer-mismatch", help="Compare even if a variant's tokenizer differs from the original's "
                                           "(the report then says so at the top). Without it, that is an error.")]
    = False,
) -> None:
    """Original vs quantized variants: runs (or reuses) every run and writes the paired comparison.

    Per task and for the 4-/6-task averages: values, delta with a 95% paired CI (Tango score interval for right/
    wrong metrics, paired bootstrap for F1-like ones, MOVER for averages), McNemar exact p,
    flips, agreement, choice-level KL, a TOST verdict at --margin, size / memory / load time / throughput and a
    collapse flag; as markdown (stdout), JSON, HTML and a PNG chart in the report directory.
    """
    from jbench.compare import compare_runs
    from jbench.models.load import ModelSpec, resolve_model_path
    from jbench.validate import check_variant, validate_plan

    names = [v for v in variants.replace(",", " ").split() if v]
    base, problems = resolve_plan(model=model, tasks=_merge_repeated(tasks), num_fewshot=num_fewshot,
                               prompt_version=prompt_version, limit=limit, variant=None, batch_size=batch_size,
                               device=device, use_fast=None, trust_remote_code=None, data_dir=data_dir,
                               allow_data_mismatch=False)
    given, more = _quantized_paths(quantized, names)
    problems += more
    if not names:
        problems.append(TaskError("--variants is empty", where="--variants", fix="e.g. --variants 'int8 gptq'"))
    for name in names:
        variant, _, gguf_type = name.partition(":")
        problems += [JBenchError(p.what, where=f"--variants {name}", fix=p.fix) for p in check_variant(variant)]
        if gguf_type and variant != "gguf":
            problems.append(TaskError(f"only gguf takes a :TYPE suffix, got {name!r}", where=f"--variants {name}",
                                      fix="e.g. gguf:q8_0"))
    spec = ModelSpec(**base.model)
    validate_plan(base, output_dir / spec.slug(), problems=problems)  # before the original runs for minutes
    original = run_or_reuse(base, output_dir / spec.slug(), show_progress=progress)
    src = resolve_model_path(spec)
    runs = []
    for name in names:
        variant, _, gguf_type = name.partition(":")
        extra: dict = {}
        path: str | None = spec.model
        if variant in PREQUANTIZED:
            path = given.get(name) or given.get(variant) or ensure_quantized(
                variant, src, Path(base.data_dir), calibration=calibration, gguf_type=gguf_type or "q4_k_m")
            extra["tokenizer"] = src  # the original's tokenizer files, read with the original's settings
        vspec = ModelSpec(**{**base.model, "model": path, "variant": variant, "extra": extra})
        vplan = type(base)(**{**base.__dict__, "model": asdict(vspec)})
        label = f"{spec.slug().rsplit('-', 1)[0]}-{name.replace(':', '-')}"
        runs.append(run_or_reuse(vplan, output_dir / label, show_progress=progress))
    report = compare_runs(original, runs, margin=margin, allow_tokenizer_mismatch=allow_tokenizer_mismatch)
    out = report_dir or output_dir / "compare" / spec.slug().rsplit("-", 1)[0]
    out.mkdir(parents=True, exist_ok=True)
    text = report.to_markdown()
    (out / "compare.md").write_text(text + "\n", encoding="utf-8")
    (out / "compare.json").write_text(report.to_json() + "\n", encoding="utf-8")
    report.plot(out / "compare.png")
    report.write_html(out / "compare.html")
    print(text)
    print(f"report: {out}/compare.{{md,json,html,png}}", file=sys.stderr)


def _quantized_paths(quantized: list[str] | None, names: list[str]) -> tuple[dict[str, str], list[JBenchError]]:
    """``--quantized VARIANT=PATH`` options as a dict, with a problem for each malformed or missing one."""
    given: dict[str, str] = {}
    problems: list[JBenchError] = []
    for q in quantized or []:
        key, sep, path = q.partition("=")
        if not sep or not key or not path:
            problems.append(TaskError(f"--quantized must be VARIANT=PATH, got {q!r}", where=f"--quantized {q}",
                                      fix="e.g. --quantized gptq=/models/x-gptq"))
        elif key not in names and key.partition(":")[0] not in {n.partition(":")[0] for n in names}:
            problems.append(TaskError(f"--quantized names {key!r}, which is not in --variants",
                                      where=f"--quantized {q}", fix=f"add {key} to --variants, or drop it"))
        elif not Path(path).exists():
            problems.append(TaskError(f"--quantized {key}: no such file or directory", where=path,
                                      fix="pass the path of an existing quantized checkpoint (or .gguf file)"))
        else:
            given[key] = path
    return given, problems


@app.command("quantize")
def quantize_cmd(
    model: Annotated[str, typer.Argument(help="Local HF model directory ('tiny' for the embedded model).")],
    method: Annotated[str, typer.Option("--format", "--method", help="gptq, awq or gguf.")] = "gptq",
    out: Annotated[Optional[Path], typer.Option("--out", help="Default: next to the model.")] = None,
    bits: Annotated[int, typer.Option("--bits")] = 4,
    group_size: Annotated[int, typer.Option("--group-size")] = 128,
    desc_act: Annotated[bool, typer.Option("--desc-act/--no-desc-act")] = False,
    calibration: Annotated[Optional[Path], typer.Option(
        "--calibration", help="Text file, one sample per line (default: Japanese text from the task train splits "
                              "in the data dir).")] = None,
    n_samples: Annotated[int, typer.Option("--n-samples")] = 64,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    gguf_types: Annotated[str, typer.Option("--gguf-types", help="GGUF outputs: f32 is exported, the others are "
                                            "made by llama.cpp's quantizer.")] = "f32,q8_0,q4_k_m",
    data_dir: DataDirOpt = None,
) -> None:
    """Make a quantized variant of a model: GPTQ/AWQ (gptqmodel, fixed seed) or GGUF (Llama-family)."""
    from jbench.models.load import ModelSpec, resolve_model_path
    from jbench.quantize import default_out_dir, quantize

    spec = ModelSpec(model=model)
    src = Path(resolve_model_path(spec))
    calib = calibration
    if method in ("gptq", "awq") and calib is None:
        calib_texts = calibration_texts(_data_dir(data_dir, spec.is_tiny))
    else:
        calib_texts = None
    paths = quantize(src, out or default_out_dir(src, method, bits, group_size), method=method,  # type: ignore[arg-type]
                     bits=bits, group_size=group_size, desc_act=desc_act,
                     calibration=calib if calib is not None else calib_texts, n_samples=n_samples, seed=seed,
                     gguf_types=tuple(_split_csv(gguf_types)))
    for p in paths:
        print(p)


@app.command("table")
def table_cmd(runs: Annotated[list[str], typer.Argument(help="Run directories (or names under results/).")]) -> None:
    """Print the card table and the 4-/6-task averages of stored runs."""
    from jbench.results import load_run

    for ref in runs:
        print_tables(load_run(ref).data)


def main() -> None:
    """Console entry point: JBenchError -> one clear message and its exit code."""
    from jbench.logs import setup

    flags = [a for a in sys.argv[1:] if a in ("--verbose", "-v")]
    setup(verbose=bool(flags))  # before any library is imported, so that import-time noise goes to the log too
    if flags:  # a global option: typer takes it only before the command name
        sys.argv[1:] = flags[:1] + [a for a in sys.argv[1:] if a not in ("--verbose", "-v")]
    try:
        app()
    except Interrupted as err:
        print(f"interrupted: every answer computed so far is in the run's request cache ({err.where}); rerun the "
              "same command (or `jbench eval --resume RUN`) to continue where it stopped", file=sys.stderr)
        sys.exit(err.exit_code)
    except JBenchError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("interrupted: every answer computed so far is in the run's request cache; rerun the same command "
              "(or `jbench eval --resume RUN`) to continue where it stopped", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
