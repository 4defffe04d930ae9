"""The public Python API: :func:`evaluate`, :func:`compare` and :func:`check`. The CLI is a thin layer over it.

Every function validates its whole input before any weights load and raises a :class:`jbench.errors.JBenchError`
(one message: what, where, what to do) for anything the caller can fix.

>>> import jbench
>>> run = jbench.evaluate(tasks="xwinograd_ja", limit=5)          # the embedded tiny model, the bundled sample
>>> run.results["xwinograd_ja"]["acc"]                             # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from jbench.errors import JBenchError, ModelError, TaskError
from jbench.records import RunRecord

if TYPE_CHECKING:
    from jbench.baseline import CheckReport
    from jbench.compare import ComparisonReport

__all__ = ["DEFAULT_VARIANTS", "check", "compare", "dry_run", "evaluate", "evaluate_suite", "prompts", "quantize",
           "resume"]

DEFAULT_VARIANTS = ("int8", "bnb8", "bnb4", "gptq")
IN_MEMORY = "in-memory"


def _csv(value: str | Sequence[Any] | None) -> str | None:
    """Options given as a list or a comma-separated string, as the comma-separated string the planner reads."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    return ",".join(str(v) for v in value)


def evaluate(model: Any = None, *, tasks: str | Sequence[str] | None = None,
             num_fewshot: int | str | Sequence[int] | None = None, limit: float | None = None,
             prompt_version: str | None = None, variant: str | None = None, batch_size: int | str | None = None,
             device: str | None = None, use_fast: bool | None = None, trust_remote_code: bool | None = None,
             data_dir: str | os.PathLike[str] | None = None, output_dir: str | os.PathLike[str] | None = None,
             run_name: str | None = None, allow_data_mismatch: bool = False, cache: bool = True,
             progress: bool = False, wait: bool = False, tokenizer: Any = None, backend: str | None = None,
             apply_chat_template: bool | None = None, system_instruction: str | None = None,
             fewshot_as_multiturn: bool | None = None, model_args: str | Sequence[str] | dict[str, Any] | None = None,
             revision: str | None = None) -> RunRecord:
    """Evaluate a model on tasks and return the run record (results, per-example rows, config, provenance).

    ``model``: None or "tiny" (the embedded tiny model), a local path or hub id, or an already loaded
    transformers causal LM (then pass its ``tokenizer``; the prompt version falls back to 0.3 unless given).
    ``backend``: the engine, "hf" (default: transformers, llama.cpp for gguf) or "vllm" (the vllm extra).
    ``model_args``: the loader's keyword arguments, lm-eval style (``"attn_implementation=eager,device_map=auto"``
    or a dict); ``revision``: a Hub branch, tag or commit (the resolved commit is recorded and fingerprinted);
    ``batch_size``: None/"auto", "auto:N" (automatic, at most N rows per forward) or N (see the CLI's help).
    ``apply_chat_template`` (None: the preset decides), ``system_instruction``, ``fewshot_as_multiturn``: lm-eval's
    chat-template options (:mod:`jbench.chat`); task names then end in "+chat".
    With ``output_dir`` the run is stored in ``<output_dir>/<run_name>`` (resumable through its request cache);
    without it nothing is written. Defaults are the CLI's: the 6-task suite with shots 3,3,3,2,1,0."""
    from jbench.execute import execute_plan
    from jbench.plan import resolve_plan, run_dir_for
    from jbench.validate import validate_plan

    scorer = None
    label = model
    if model is not None and not isinstance(model, (str, os.PathLike)):
        if model_args or revision:  # the model is loaded already: loader arguments could only be ignored
            raise ModelError("model_args / revision cannot apply to an already loaded model",
                             where="evaluate(model=<object>)", fix="pass them to from_pretrained when loading it")
        scorer = _in_memory_scorer(model, tokenizer, batch_size=batch_size)
        label = f"{IN_MEMORY}:{type(model).__name__}"
    plan, problems = resolve_plan(model=None if label is None else str(label), tasks=_csv(tasks),
                                  num_fewshot=_csv(num_fewshot), prompt_version=prompt_version, limit=limit,
                                  variant=variant, batch_size=batch_size, device=device, use_fast=use_fast,
                                  trust_remote_code=trust_remote_code,
                                  data_dir=None if data_dir is None else Path(data_dir),
                                  allow_data_mismatch=allow_data_mismatch, backend=backend,
                                  apply_chat_template=apply_chat_template, system_instruction=system_instruction,
                                  fewshot_as_multiturn=fewshot_as_multiturn, model_args=model_args, revision=revision)
    if scorer is not None:
        plan.model["extra"] = {**plan.model.get("extra", {}), IN_MEMORY: True}
    run_dir = None
    if output_dir is not None:
        run_dir, more = run_dir_for(Path(output_dir), run_name, plan)
        problems += more
    validate_plan(plan, run_dir, problems=problems)
    return execute_plan(plan, run_dir, show_progress=progress, use_cache=cache, wait=wait, scorer=scorer)


def _in_memory_scorer(model: Any, tokenizer: Any, *, batch_size: int | str | None) -> Any:
    from jbench.models.hf import HFScorer
    from jbench.models.model_args import parse_batch_size
    from jbench.models.tokenizer import HarnessTokenizer, wrap_hf_tokenizer

    if tokenizer is None:
        raise ModelError("an in-memory model needs its tokenizer", where="evaluate(model=<object>)",
                         fix="pass tokenizer=<the model's tokenizer> (a transformers tokenizer)")
    if not hasattr(model, "forward") or not hasattr(model, "config"):
        raise ModelError(f"evaluate(model=...) got a {type(model).__name__}, not a transformers causal LM",
                         where="evaluate(model=<object>)",
                         fix="pass a model path or hub id, or a loaded AutoModelForCausalLM and its tokenizer")
    tok = tokenizer if isinstance(tokenizer, HarnessTokenizer) else wrap_hf_tokenizer(tokenizer)
    rows, cap = parse_batch_size(batch_size)
    scorer = HFScorer.from_loaded(model, tok, batch_size=rows, name=f"{IN_MEMORY}:{type(model).__name__}")
    scorer.max_batch_size = cap
    return scorer


def compare(model: str | None = None, *, variants: str | Sequence[str] = DEFAULT_VARIANTS,
            quantized: dict[str, str] | Sequence[str] | None = None, tasks: str | Sequence[str] | None = None,
            num_fewshot: int | str | Sequence[int] | None = None, prompt_version: str | None = None,
            limit: float | None = None, batch_size: int | str | None = None, device: str | None = None,
            data_dir: str | os.PathLike[str] | None = None, output_dir: str | os.PathLike[str] = "results",
            report_dir: str | os.PathLike[str] | None = None, margin: float = 1.0,
            calibration: str | os.PathLike[str] | None = None, progress: bool = False,
            allow_tokenizer_mismatch: bool = False, backend: str | None = None, original: str | None = None,
            model_args: str | Sequence[str] | dict[str, Any] | None = None,
            revision: str | None = None) -> "ComparisonReport":
    """Original vs quantized variants: make or reuse every run, compare them pairwise and write the report
    (``compare.{md,json,html,png}`` in ``report_dir``, default ``<output_dir>/compare/<model>``, plus
    ``-<original>`` and the run names' settings tags, so another comparison never overwrites it).

    ``variants``: names such as int8 int4 bnb8 bnb4 gptq awq gguf (``gguf:q8_0`` for another GGUF type);
    ``quantized``: existing checkpoints, ``{"gptq": "/path"}`` or ``["gptq=/path"]``. ``original``: fp32, fp16,
    bf16 or auto -- the original runs in that dtype and the quantized variants compute in it (default: the
    preset's dtype, or ``auto`` on a GPU for a model without a preset, else fp32; see
    :func:`jbench.run_identity.comparison_dtype`). ``model_args``/``revision``: as for
    :func:`evaluate`, for the original and every transformers-loaded variant. Everything is validated before the
    original runs."""
    from jbench.compare import compare_runs
    from jbench.compare.files import write_report_files
    from jbench.plan import merge_repeated, resolve_plan
    from jbench.run_identity import comparison_dtype, default_run_name, report_name
    from jbench.validate import validate_plan
    from jbench.variant_runs import (ORIGINAL_VARIANTS, check_original, plan_variants, run_or_reuse,
                                     variant_problems)

    names = [v for v in (variants.replace(",", " ").split() if isinstance(variants, str) else variants) if v]
    specs = [f"{k}={v}" for k, v in quantized.items()] if isinstance(quantized, dict) else list(quantized or [])
    base, problems = resolve_plan(model=model, tasks=merge_repeated([_csv(tasks)] if tasks else None),
                                  num_fewshot=_csv(num_fewshot), prompt_version=prompt_version, limit=limit,
                                  variant=original if original in ORIGINAL_VARIANTS else None, batch_size=batch_size,
                                  device=device, use_fast=None, trust_remote_code=None,
                                  data_dir=None if data_dir is None else Path(data_dir), allow_data_mismatch=False,
                                  backend=backend, model_args=model_args, revision=revision)
    given, more = variant_problems(names, specs)
    more += check_original(original)
    if not (margin > 0 and margin != float("inf")):  # NaN fails `> 0` too
        more.append(TaskError(f"the equivalence margin must be a positive number of points, got {margin}",
                              where=f"--margin {margin}", fix="e.g. --margin 1 (points on the 0-100 scale)"))
    out_dir = Path(output_dir)
    original_dir = out_dir / default_run_name(base)  # -rev-/-ma tags: other settings never share a run
    validate_plan(base, original_dir, problems=problems + more)  # before the original runs for minutes
    original_run = run_or_reuse(base, original_dir, show_progress=progress, step="original")
    dtype = comparison_dtype(original, base.model.get("variant"))  # GPU default auto: not fp32 compute
    vplans = plan_variants(base, names, given, output_dir=out_dir, compute_dtype=dtype,
                           calibration=None if calibration is None else Path(calibration))
    runs = [run_or_reuse(vplan, vdir, show_progress=progress, step=f"variant {k} of {len(vplans)}")
            for k, (vplan, vdir) in enumerate(vplans, 1)]
    report = compare_runs(original_run, runs, margin=margin, allow_tokenizer_mismatch=allow_tokenizer_mismatch)
    out = Path(report_dir) if report_dir is not None else out_dir / "compare" / report_name(base, dtype)
    try:
        write_report_files(report, out)  # all four or none: a failure keeps an earlier report whole
    except OSError as err:
        raise JBenchError(f"cannot write the comparison report: {err.strerror or err}", where=str(out),
                          fix="pass a writable --report-dir") from err
    print(f"report: {out}/compare.{{md,json,html,png}}", file=sys.stderr)
    return report


def check(run: str | os.PathLike[str], baseline: str | os.PathLike[str], *, mode: str = "stat", k: float = 2.0,
          confidence: float = 0.95, rtol: float = 0.0, baselines_dir: str | os.PathLike[str] = "results/baselines",
          allow_tokenizer_mismatch: bool = False) -> "CheckReport":
    """Compare a stored run with a baseline. The report's ``exit_code`` is 0 (pass), 1 (a number regressed,
    NaN/inf included) or 2 (cannot compare: the report says which field differs); malformed input raises."""
    from jbench.baseline import check_run

    return check_run(run, baseline, mode=mode, k=k, confidence=confidence, rtol=rtol,  # type: ignore[arg-type]
                     baselines_dir=Path(baselines_dir), allow_tokenizer_mismatch=allow_tokenizer_mismatch)


def dry_run(model: str | None = None, *, tasks: str | Sequence[str] | None = None,
            num_fewshot: int | str | Sequence[int] | None = None, limit: float | None = None,
            prompt_version: str | None = None, variant: str | None = None, batch_size: int | str | None = None,
            device: str | None = None, use_fast: bool | None = None, trust_remote_code: bool | None = None,
            data_dir: str | os.PathLike[str] | None = None, output_dir: str | os.PathLike[str] = "results",
            run_name: str | None = None, allow_data_mismatch: bool = False,
            backend: str | None = None, apply_chat_template: bool | None = None,
            system_instruction: str | None = None, fewshot_as_multiturn: bool | None = None,
            model_args: str | Sequence[str] | dict[str, Any] | None = None,
            revision: str | None = None) -> dict[str, Any]:
    """Exactly the validation :func:`evaluate` runs, then the resolved plan (preset, tasks, shots, prompt
    versions, run directory) instead of a run; no weights are loaded."""
    from jbench.plan import resolve_plan, run_dir_for
    from jbench.tasks import resolve_task
    from jbench.validate import validate_plan

    plan, problems = resolve_plan(model=model, tasks=_csv(tasks), num_fewshot=_csv(num_fewshot),
                                  prompt_version=prompt_version, limit=limit, variant=variant, batch_size=batch_size,
                                  device=device, use_fast=use_fast, trust_remote_code=trust_remote_code,
                                  data_dir=None if data_dir is None else Path(data_dir),
                                  allow_data_mismatch=allow_data_mismatch, backend=backend,
                                  apply_chat_template=apply_chat_template, system_instruction=system_instruction,
                                  fewshot_as_multiturn=fewshot_as_multiturn, model_args=model_args, revision=revision)
    run_dir, more = run_dir_for(Path(output_dir), run_name, plan)
    validate_plan(plan, run_dir, problems=problems + more)
    return {"run_dir": str(run_dir), "preset": plan.preset, "model": plan.model, "tasks": [
        {"task": t, "num_fewshot": k, "prompt_version": resolve_task(t).prompt_version or None}
        for t, k in zip(plan.tasks, plan.num_fewshot)], "limit": plan.limit, "data_dir": plan.data_dir,
        "chat_template": plan.chat}


def resume(run: str | os.PathLike[str], *, output_dir: str | os.PathLike[str] = "results", cache: bool = True,
           progress: bool = False, wait: bool = False) -> RunRecord:
    """Redo a stored run exactly as its ``run.json`` asked, reusing every answer in its request cache."""
    from jbench.execute import execute_plan
    from jbench.plan import RunPlan
    from jbench.results import resolve_run_dir
    from jbench.validate import validate_plan

    run_dir = resolve_run_dir(run, Path(output_dir))
    plan = RunPlan.load(run_dir)
    try:
        validate_plan(plan, run_dir)
    except JBenchError as err:  # the plan came from a file: say which, so the user knows what to fix
        raise JBenchError(f"{err.what}\n  (in the plan stored in {run_dir / 'run.json'})", where=err.where,
                          fix=err.fix) from err
    return execute_plan(plan, run_dir, show_progress=progress, use_cache=cache, wait=wait)


def evaluate_suite(suite: str, model: str | None = None, *, tasks: str | Sequence[str] | None = None,
                   limit: float | None = None, prompt_version: str | None = None, variant: str | None = None,
                   batch_size: int | str | None = None, device: str | None = None, use_fast: bool | None = None,
                   trust_remote_code: bool | None = None, data_dir: str | os.PathLike[str] | None = None,
                   output_dir: str | os.PathLike[str] = "results", run_name: str | None = None,
                   allow_data_mismatch: bool = False, model_args: str | Sequence[str] | dict[str, Any] | None = None,
                   revision: str | None = None) -> dict[str, Any]:
    """``suite="ja_leaderboard"``: lm-eval's own japanese_leaderboard tasks through ``lm_eval.simple_evaluate`` on
    the same local data files; jbench loads the model and stores the run. Returns its results.json content."""
    from jbench.errors import TaskError
    from jbench.logs import run_log
    from jbench.models.load import ModelSpec
    from jbench.plan import resolve_plan, run_dir_for, split_csv
    from jbench.results import RunLock
    from jbench.run_identity import settings_tag
    from jbench.suites import run_ja_leaderboard
    from jbench.validate import validate_plan

    if suite != "ja_leaderboard":
        raise TaskError(f"unknown suite {suite!r}", where=f"--suite {suite}", fix="the only suite is ja_leaderboard")
    plan, problems = resolve_plan(model=model, tasks=None, num_fewshot=None, prompt_version=prompt_version,
                                  limit=limit, variant=variant, batch_size=batch_size, device=device,
                                  use_fast=use_fast, trust_remote_code=trust_remote_code,
                                  data_dir=None if data_dir is None else Path(data_dir),
                                  allow_data_mismatch=allow_data_mismatch, model_args=model_args, revision=revision)
    spec = ModelSpec(**plan.model)
    run_dir, more = run_dir_for(Path(output_dir), run_name or f"{spec.slug()}{settings_tag(plan.model)}-ja_leaderboard",
                                plan)
    validate_plan(plan, run_dir, problems=problems + more, check_data=False)
    with _interruptible(run_dir), RunLock(run_dir), run_log(run_dir):
        return run_ja_leaderboard(spec, Path(plan.data_dir), run_dir, tasks=split_csv(_csv(tasks)) or None,
                                  limit=plan.limit, batch_size=batch_size,
                                  allow_data_mismatch=plan.allow_data_mismatch, preset=plan.preset)


def prompts(task: str, *, num_fewshot: int | None = None, limit: float | None = None, model: str | None = None,
            use_fast: bool | None = None, data_dir: str | os.PathLike[str] | None = None,
            allow_data_mismatch: bool = False, apply_chat_template: bool = False,
            system_instruction: str | None = None, fewshot_as_multiturn: bool | None = None) -> list[Any]:
    """The requests of one task exactly as the reference builds them (the fidelity interface): a list of
    :class:`jbench.requests.Instance`. ``model`` (a tokenizer) is needed for generation caps and prompt fitting,
    and for ``apply_chat_template`` (contexts rendered through its chat template, the task named "...+chat")."""
    from jbench.data import load_split
    from jbench.errors import InputErrors
    from jbench.plan import RunPlan, default_data_dir, parse_limit
    from jbench.requests import build_instances
    from jbench.tasks import resolve_task
    from jbench.validate import check_limit, check_tasks_data

    try:
        spec = resolve_task(task)
    except TaskError as err:
        raise TaskError(err.what, where=err.where or f"--task {task}", fix=err.fix) from err
    k = spec.default_shots if num_fewshot is None else num_fewshot
    ddir = default_data_dir(None if data_dir is None else Path(data_dir), tiny=model in (None, "tiny"))
    probe = RunPlan(model={}, tasks=[spec.name], num_fewshot=[k], data_dir=str(ddir), limit=parse_limit(limit),
                    allow_data_mismatch=allow_data_mismatch)
    from jbench.chat import chat_prompt, resolve_chat_options

    options, chat_problems = resolve_chat_options(apply_chat_template, system_instruction, fewshot_as_multiturn)
    problems = check_limit(limit) + check_tasks_data(probe) + chat_problems
    if options is not None and model is None:
        problems.append(ModelError("--apply-chat-template needs the model whose chat template renders the prompts",
                                   where="jbench prompts --apply-chat-template", fix="add --model PATH_OR_HUB_ID"))
    if problems:
        raise InputErrors(problems)
    encode, max_length, chat = None, None, None
    if model is not None:
        from jbench.models.load import ModelSpec, effective_use_fast, resolve_model_path
        from jbench.models.tokenizer import load_tokenizer

        mspec = ModelSpec(model=model, use_fast=use_fast)
        path = resolve_model_path(mspec)
        tok = load_tokenizer(path, use_fast=effective_use_fast(mspec))
        encode, max_length = tok.encode, _model_max_length(path)
        if options is not None:
            chat = chat_prompt(tok, options, where=model)
            spec = chat.rename(spec)
    val = load_split(spec.dataset, "validation", ddir, allow_mismatch=allow_data_mismatch)
    train = load_split(spec.dataset, "train", ddir, allow_mismatch=allow_data_mismatch).docs if k > 0 else None
    return build_instances(spec, val.docs, train, k, limit=parse_limit(limit), encode=encode, max_length=max_length,
                           chat=chat)


def _model_max_length(path: str) -> int | None:
    try:
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(path)
    except Exception:  # noqa: BLE001 - a tokenizer-only directory has no config; the cap then stays unknown
        return None
    return getattr(cfg, "n_ctx", None) or getattr(cfg, "max_position_embeddings", None)


def quantize(model: str, *, method: str = "gptq", out: str | os.PathLike[str] | None = None, bits: int = 4,
             group_size: int = 128, desc_act: bool = False, calibration: str | os.PathLike[str] | None = None,
             n_samples: int = 64, seed: int = 0, gguf_types: Sequence[str] = ("f32", "q8_0", "q4_k_m"),
             data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Make a quantized copy of a local model (``"tiny"``: the embedded one): GPTQ/AWQ through gptqmodel with a
    fixed seed, calibrated on Japanese text from the task train splits unless ``calibration`` (a text file, one
    sample per line) is given; or GGUF (Llama family). Returns the paths written."""
    from jbench.models.load import ModelSpec, resolve_model_path
    from jbench.plan import default_data_dir
    from jbench.quantize import default_out_dir, quantize as run_quantize
    from jbench.variant_runs import calibration_texts

    spec = ModelSpec(model=model)
    src = Path(resolve_model_path(spec))
    calib: Path | list[str] | None = None if calibration is None else Path(calibration)
    if method in ("gptq", "awq") and calib is None:
        calib = calibration_texts(default_data_dir(None if data_dir is None else Path(data_dir), spec.is_tiny))
    target = Path(out) if out else default_out_dir(src, method, bits, group_size)
    with _interruptible(target):
        return list(run_quantize(src, target,
                                 method=method, bits=bits, group_size=group_size,  # type: ignore[arg-type]
                                 desc_act=desc_act, calibration=calib, n_samples=n_samples, seed=seed,
                                 gguf_types=tuple(gguf_types)))


@contextlib.contextmanager
def _interruptible(where: Path) -> Iterator[None]:
    """Ctrl-C as jbench's Interrupted (exit 130): click would turn a KeyboardInterrupt into "Aborted!" and exit 1,
    which is the code for "a number regressed"."""
    from jbench.errors import Interrupted

    try:
        yield
    except KeyboardInterrupt as err:
        raise Interrupted("interrupted", where=str(where)) from err
