"""The ``jbench`` command line: typer declarations over the public API (:mod:`jbench.api`), and printing.

Every user-facing failure is a :class:`jbench.errors.JBenchError`: ``main`` prints it as one message (what, where,
what to do) on stderr with its exit code (2; 130 after Ctrl-C), never as a traceback. ``check`` alone exits 1,
for "a number regressed".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from jbench.cli_options import (BackendOpt, BaselinesDirOpt, BatchOpt, ChatTemplateOpt, DataDirOpt, DeviceOpt,
                                LimitOpt, ModelArgsOpt, ModelOpt, MultiturnOpt, OriginalOpt, OutputDirOpt, ProgressOpt,
                                PromptOpt, RevisionOpt, ShotsOpt, SystemInstructionOpt, TasksOpt, TokenizerMismatchOpt,
                                WandbArgsOpt)
from jbench.cli_data import data_cmd
from jbench.cli_published import published_cmd, reproduce_cmd
from jbench.cli_sweep import sweep_cmd
from jbench.cli_table import table_cmd
from jbench.errors import Interrupted, JBenchError, TaskError

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
    num_fewshot: Annotated[Optional[int], typer.Option("--num-fewshot", "--num_fewshot",
                                                      help="Shots (default: the task's).")] = None,
    limit: LimitOpt = None,
    model: Annotated[Optional[str], typer.Option(
        "--model", help="Tokenizer (model path or hub id) for generation caps and prompt fitting.")] = None,
    use_fast: Annotated[Optional[bool], typer.Option("--use-fast/--no-use-fast")] = None,
    data_dir: DataDirOpt = None,
    allow_data_mismatch: Annotated[bool, typer.Option(
        "--allow-data-mismatch", help="Build requests even if a data file fails its checksum (as for eval).")]
    = False,
    apply_chat_template: ChatTemplateOpt = None, system_instruction: SystemInstructionOpt = None,
    fewshot_as_multiturn: MultiturnOpt = None,
) -> None:
    """Print one JSON object per request (and nothing else on stdout): the fidelity interface.

    Fields: task, doc_index (position after the shuffle), doc_id, context, and continuations (loglikelihood
    tasks) or until + max_gen_tokens (generation tasks; needs --model for the token cap).
    """
    from jbench.api import prompts

    for inst in prompts(task, num_fewshot=num_fewshot, limit=limit, model=model, use_fast=use_fast,
                        data_dir=data_dir, allow_data_mismatch=allow_data_mismatch,
                        apply_chat_template=bool(apply_chat_template), system_instruction=system_instruction,
                        fewshot_as_multiturn=fewshot_as_multiturn):
        sys.stdout.write(json.dumps(inst.to_json(), ensure_ascii=False) + "\n")


app.command("data")(data_cmd)


@app.command("eval")
def eval_cmd(
    model: ModelOpt = None,
    tasks: TasksOpt = None,
    num_fewshot: ShotsOpt = None,
    prompt_version: PromptOpt = None,
    limit: LimitOpt = None,
    variant: Annotated[Optional[str], typer.Option(
        "--variant", help="fp32, fp16, bf16, auto (the checkpoint's dtype) or a quantized variant (see README). "
                          "Default: the model preset's dtype.")] = None,
    batch_size: BatchOpt = None,
    device: DeviceOpt = None,
    backend: BackendOpt = None,
    apply_chat_template: ChatTemplateOpt = None, system_instruction: SystemInstructionOpt = None,
    fewshot_as_multiturn: MultiturnOpt = None, model_args: ModelArgsOpt = None, revision: RevisionOpt = None,
    use_fast: Annotated[Optional[bool], typer.Option("--use-fast/--no-use-fast", help="Tokenizer choice; "
                                                     "--no-use-fast gives true sentencepiece ids.")] = None,
    trust_remote_code: Annotated[Optional[bool], typer.Option(
        "--trust-remote-code/--no-trust-remote-code", "--trust_remote_code", help="Default: the model preset's.")]
    = None,
    data_dir: DataDirOpt = None,
    output_dir: OutputDirOpt = Path("results"),
    run_name: Annotated[Optional[str], typer.Option(
        "--run-name", help="A plain name under --output-dir. Default: <model>-<variant> (plus a short hash of the "
                           "path for local models, so two models with the same folder name never share a run).")]
    = None,
    allow_data_mismatch: Annotated[bool, typer.Option(
        "--allow-data-mismatch", help="Evaluate even if a data file fails its checksum (recorded in results).")]
    = False,
    progress: ProgressOpt = True,
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
    wandb_args: WandbArgsOpt = None,
) -> None:
    """Evaluate a model on tasks; writes results/<run>/ and prints the card table and the averages.

    Every answer is cached in results/<run>/cache.sqlite as it is computed: rerunning the same command (or
    `--resume RUN`) after a crash or Ctrl-C continues where it stopped and gives identical numbers. Everything is
    validated before the model loads; one process at a time holds a run directory; the previous results of the run
    are replaced only when the new run is complete.
    """
    from jbench import api
    from jbench.plan import merge_repeated

    task_list = merge_repeated(tasks)
    if wandb_args is not None:  # wandb missing or a bad key: exit 2 before any model time
        from jbench.wandb_log import parse_wandb_args

        wandb_init = parse_wandb_args(wandb_args)
    if suite is not None:
        ignored = [flag for flag, given in (("--resume", resume is not None), ("--dry-run", dry_run),
                                            ("--no-cache", not cache), ("--wait", wait),
                                            ("--num-fewshot", num_fewshot is not None),
                                            ("--backend", backend not in (None, "hf")),
                                            ("--wandb-args", wandb_args is not None),
                                            ("--apply-chat-template",
                                             {apply_chat_template, system_instruction, fewshot_as_multiturn} != {None}))
                   if given]
        if ignored:
            raise TaskError(f"{', '.join(ignored)} cannot apply to --suite {suite} (lm-eval runs the suite in one "
                            "go, each task with its own shots)", where=f"--suite {suite}",
                            fix=f"drop {', '.join(ignored)}")
        from jbench.suites import suite_tables

        print(suite_tables(api.evaluate_suite(
            suite, model, tasks=task_list, limit=limit, prompt_version=prompt_version, variant=variant,
            batch_size=batch_size, device=device, use_fast=use_fast, trust_remote_code=trust_remote_code,
            data_dir=data_dir, output_dir=output_dir, run_name=run_name, allow_data_mismatch=allow_data_mismatch,
            model_args=model_args, revision=revision)))
        return
    if resume is not None:
        given = {"--model": model, "--tasks": task_list, "--num-fewshot": num_fewshot,
                 "--prompt-version": prompt_version, "--limit": limit, "--variant": variant,
                 "--batch-size": batch_size, "--device": device, "--backend": backend, "--model-args": model_args,
                 "--revision": revision,
                 "--use-fast/--no-use-fast": use_fast,
                 "--trust-remote-code": trust_remote_code, "--data-dir": data_dir, "--run-name": run_name,
                 "--allow-data-mismatch": allow_data_mismatch or None, "--dry-run": dry_run or None,
                 "--no-cache": None if cache else True, "--apply-chat-template": apply_chat_template,
                 "--system-instruction": system_instruction, "--fewshot-as-multiturn": fewshot_as_multiturn}
        clash = [k for k, v in given.items() if v is not None]
        if clash:
            raise TaskError(f"--resume redoes the stored run exactly, so {', '.join(clash)} cannot apply",
                            where=f"--resume {resume}",
                            fix="drop those options to resume, or start a new run (another --run-name) with them")
        record = api.resume(resume, output_dir=output_dir, cache=cache, progress=progress, wait=wait)
    else:
        options = dict(tasks=task_list, num_fewshot=num_fewshot, limit=limit, prompt_version=prompt_version,
                       variant=variant, batch_size=batch_size, device=device, use_fast=use_fast,
                       trust_remote_code=trust_remote_code, data_dir=data_dir, output_dir=output_dir,
                       run_name=run_name, allow_data_mismatch=allow_data_mismatch, backend=backend,
                       apply_chat_template=apply_chat_template, system_instruction=system_instruction,
                       fewshot_as_multiturn=fewshot_as_multiturn, model_args=model_args, revision=revision)
        if dry_run:
            print(json.dumps(api.dry_run(model, **options), indent=2, ensure_ascii=False))  # type: ignore[arg-type]
            return
        record = api.evaluate(model, **options, cache=cache, progress=progress, wait=wait)  # type: ignore[arg-type]
    from jbench.report import run_tables

    print(run_tables(record.to_json()))
    print(f"run stored in {record.path}", file=sys.stderr)
    if wandb_args is not None:
        from jbench.wandb_log import log_run

        print(f"logged to W&B: {log_run(record, wandb_init)}", file=sys.stderr)


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
    allow_tokenizer_mismatch: TokenizerMismatchOpt = False,
) -> None:
    """Compare a run with a baseline. Exit 0 pass, 1 a number regressed (NaN/inf included), 2 cannot compare or
    bad input (one message says which file and field)."""
    from jbench.baseline import check_run
    from jbench.results import write_report

    if baseline.startswith("published:"):  # the reproduction verdict against a published source (issue 17)
        from jbench.cli_published import check_published
        raise typer.Exit(check_published(run, baseline, report, mode=mode))
    rep = check_run(run, baseline, mode=mode, k=k, confidence=confidence, rtol=rtol,  # type: ignore[arg-type]
                    baselines_dir=baselines_dir, allow_tokenizer_mismatch=allow_tokenizer_mismatch)
    text = rep.to_markdown()
    if report is not None:
        write_report(report, text)
    print(text)
    raise typer.Exit(rep.exit_code)


@app.command("compare")
def compare_cmd(
    model: ModelOpt = None,
    variants: Annotated[str, typer.Option(
        "--variants", help="Space- or comma-separated: int8 int4 bnb8 bnb4 gptq awq gguf (gguf:q8_0 for another "
                           "GGUF type). gptq/awq/gguf use --quantized checkpoints, or quantize the model "
                           "themselves (local or tiny models).")] = "int8 bnb8 bnb4 gptq",
    quantized: Annotated[Optional[list[str]], typer.Option(
        "--quantized", help="VARIANT=PATH of an existing quantized checkpoint or .gguf (repeatable).")] = None,
    tasks: TasksOpt = None,
    num_fewshot: ShotsOpt = None,
    prompt_version: PromptOpt = None,
    limit: LimitOpt = None,
    batch_size: BatchOpt = None,
    device: DeviceOpt = None,
    backend: BackendOpt = None,
    original: OriginalOpt = None, model_args: ModelArgsOpt = None, revision: RevisionOpt = None,
    data_dir: DataDirOpt = None,
    output_dir: OutputDirOpt = Path("results"),
    report_dir: Annotated[Optional[Path], typer.Option(
        "--report-dir", help="Default: <output-dir>/compare/<model>[-<original>] (plus the run names' "
                             "-rev-/-ma tags).")] = None,
    margin: Annotated[float, typer.Option("--margin", help="Equivalence margin in points (TOST).")] = 1.0,
    calibration: Annotated[Optional[Path], typer.Option(
        "--calibration", help="Calibration text file for gptq/awq (default: the task train splits).")] = None,
    progress: ProgressOpt = True,
    allow_tokenizer_mismatch: TokenizerMismatchOpt = False,
) -> None:
    """Original vs quantized variants: runs (or reuses) every run and writes the paired comparison.

    Per task and for the 4-/6-task averages: values, delta with a 95% paired CI (Tango score interval for right/
    wrong metrics; paired bootstrap, with a paired t-test for TOST, for F1-like ones; MOVER for averages), McNemar
    exact p, flips, agreement, choice-level KL, a TOST verdict at --margin, size / memory / load time / throughput
    and a collapse flag; as markdown (stdout), JSON, HTML and a PNG chart in the report directory.
    """
    from jbench import api

    report = api.compare(model, variants=variants, quantized=quantized, tasks=tasks, num_fewshot=num_fewshot,
                         prompt_version=prompt_version, limit=limit, batch_size=batch_size, device=device,
                         data_dir=data_dir, output_dir=output_dir, report_dir=report_dir, margin=margin,
                         calibration=calibration, progress=progress, allow_tokenizer_mismatch=allow_tokenizer_mismatch,
                         backend=backend, original=original, model_args=model_args, revision=revision)
    print(report.to_markdown())


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
    from jbench.api import quantize
    from jbench.plan import split_csv

    for p in quantize(model, method=method, out=out, bits=bits, group_size=group_size, desc_act=desc_act,
                      calibration=calibration, n_samples=n_samples, seed=seed, gguf_types=split_csv(gguf_types),
                      data_dir=data_dir):
        print(p)


# commands whose bodies live in modules of their own
app.command("table")(table_cmd)
app.command("published")(published_cmd)
app.command("reproduce")(reproduce_cmd)
app.command("sweep")(sweep_cmd)


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
        if not err.already_reported:
            print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("interrupted: every answer computed so far is in the run's request cache; rerun the same command "
              "(or `jbench eval --resume RUN`) to continue where it stopped", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
