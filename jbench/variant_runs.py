"""The runs of a comparison: the original and each quantized variant, made or reused, each in its own process.

Why a child process per run: each variant's peak memory is then measured on its own. A finished run is reused
only if its results.json records the very plan asked for and the weights that plan names now. Quantized copies
(gptq/awq/gguf) are made once, next to the source model, with calibration text from the task train splits.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

from jbench.errors import ChildRunFailed, Interrupted, JBenchError, TaskError
from jbench.plan import RunPlan, stored_plan

PREQUANTIZED = ("gptq", "awq", "gguf")
#: dtypes of the original itself: comparing one against the original says nothing about quantization
ORIGINAL_VARIANTS = ("fp32", "fp16", "bf16", "auto")


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
    from jbench.model_files import read_json_object

    hidden = int(read_json_object(src / "config.json").get("hidden_size") or preferred)
    group = preferred
    while group > 8 and hidden % group:
        group //= 2
    if group != preferred:
        print(f"quantizing with group_size {group} (hidden size {hidden} is not a multiple of {preferred})",
              file=sys.stderr)
    return group


def run_or_reuse(plan: "RunPlan", run_dir: Path, *, show_progress: bool, step: str | None = None) -> Path:
    """Reuse a finished run made from the same plan; otherwise run it (resuming its cache) in a child process, so
    that each variant's peak memory is measured on its own.

    ``step`` (e.g. ``"variant 2 of 4"``) starts the progress line on stderr, so that a comparison of many
    variants says how far it is. A finished run counts only if its results.json records this very plan (a
    run.json alone may describe an attempt that failed after the results were written by an earlier, different
    plan) and the weights it recorded are the ones the plan names now (a Hub ref that moved, or a local checkpoint
    overwritten in place, is rerun, saying why)."""
    import subprocess

    from jbench.results import RunLock
    from jbench.run_identity import stale_weights_reason

    name = plan.model.get("variant", "?") if isinstance(plan.model, dict) else "?"
    prefix = f"[{step}] " if step else ""
    if stored_plan(run_dir) == asdict(plan):
        # the plan names the model ("main", a folder), not the weights: check those too, cheaply, before reusing
        stale = stale_weights_reason(plan.model, run_dir)
        if stale is None:
            print(f"{prefix}{name}: reusing {run_dir}", file=sys.stderr, flush=True)
            return run_dir
        print(f"{prefix}{name}: not reusing {run_dir}: {stale}", file=sys.stderr, flush=True)
    print(f"{prefix}{name}: running {run_dir}", file=sys.stderr, flush=True)
    with RunLock(run_dir):
        plan.save(run_dir)
    cmd = [sys.executable, "-m", "jbench.cli", "eval", "--resume", str(run_dir)]
    cmd += [] if show_progress else ["--no-progress"]
    try:
        proc = subprocess.run(cmd, stdout=sys.stderr)
    except KeyboardInterrupt as err:  # click would turn it into "Aborted!" and exit 1, the regression code
        raise Interrupted("interrupted", where=str(run_dir)) from err
    if proc.returncode != 0:
        err = ChildRunFailed(f"the run for {run_dir.name} failed (exit {proc.returncode})", where=str(run_dir),
                             fix="see the error above; rerun `jbench compare` to resume where it stopped")
        err.exit_code = proc.returncode if proc.returncode in (2, 130) else 2
        raise err
    return run_dir


def quantized_paths(quantized: list[str] | None, names: list[str]) -> tuple[dict[str, str], list[JBenchError]]:
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


def check_original(original: str | None) -> list[JBenchError]:
    """``--original``: one of the plain dtypes (a quantized original would compare quantization with itself)."""
    if original is None or original in ORIGINAL_VARIANTS:
        return []
    return [TaskError(f"--original must be one of {', '.join(ORIGINAL_VARIANTS)}, got {original!r}",
                      where=f"--original {original}",
                      fix="pick the original's dtype (e.g. --original fp16); quantized variants go in --variants")]


def plan_variants(base: RunPlan, names: list[str], given: dict[str, str], *, calibration: Path | None,
                  output_dir: Path, compute_dtype: str | None = None) -> list[tuple[RunPlan, Path]]:
    """The plan and run directory of every variant: the original's plan with the variant's model and name.

    ``compute_dtype`` (:func:`jbench.run_identity.comparison_dtype`: ``--original``, or the original's own fp16,
    bf16 or auto): the variants' unquantized parts and activations use the original's dtype,
    and their run directories say so (``<model>-int8-fp16``), so that they never replace the runs of a comparison
    against another original. ``--model-args`` go to every transformers-loaded variant (not to llama.cpp's gguf,
    and quantized variants are placed by jbench, so without ``device_map``).

    Every variant is scored with the original's tokenizer files and settings (``use_fast`` was resolved once, in
    ``base``), so a tokenizer difference can never pass for a quantization effect. gptq/awq/gguf copies are made
    here when no ``--quantized`` checkpoint was given."""
    from jbench.models.load import DTYPE_OF_VARIANT, ModelSpec, resolve_model_path
    from jbench.run_identity import chat_tag, settings_tag

    spec = ModelSpec(**base.model)
    src = resolve_model_path(spec)
    stem = spec.slug().rsplit("-", 1)[0]
    out = []
    for name in names:
        variant, _, gguf_type = name.partition(":")
        extra: dict = {}
        if compute_dtype is not None and compute_dtype != "fp32":
            extra["dtype"] = DTYPE_OF_VARIANT[compute_dtype]
        path: str | None = spec.model
        if variant in PREQUANTIZED:
            path = given.get(name) or given.get(variant) or ensure_quantized(
                variant, src, Path(base.data_dir), calibration=calibration, gguf_type=gguf_type or "q4_k_m")
            extra["tokenizer"] = src  # the original's tokenizer files, read with the original's settings
        args = variant_model_args(variant, spec.model_args)
        vspec = ModelSpec(**{**base.model, "model": path, "variant": variant, "extra": extra, "model_args": args})
        suffix = f"-{compute_dtype}" if "dtype" in extra else ""
        suffix += settings_tag(asdict(vspec)) + chat_tag(base.chat)  # --revision, --model-args: their own folders
        out.append((RunPlan(**{**asdict(base), "model": asdict(vspec)}),
                    output_dir / f"{stem}-{name.replace(':', '-')}{suffix}"))
    return out


def variant_model_args(variant: str, model_args: dict) -> dict:
    """The ``--model-args`` a variant loads with: none for llama.cpp's gguf, and no ``device_map`` for a quantized
    variant (jbench places those itself), so one ``device_map=auto`` can be given for an original and its variants."""
    if variant == "gguf":
        return {}
    if variant in ORIGINAL_VARIANTS:
        return dict(model_args)
    return {k: v for k, v in model_args.items() if k != "device_map"}


def variant_problems(names: list[str], quantized: list[str] | None) -> tuple[dict[str, str], list[JBenchError]]:
    """``--variants`` and ``--quantized`` checked before anything runs: names, backends installed, paths."""
    from jbench.validate import check_variant

    from jbench.validate import check_model

    given, problems = quantized_paths(quantized, names)
    if not names:
        problems.append(TaskError("--variants is empty", where="--variants", fix="e.g. --variants 'int8 gptq'"))
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(TaskError(f"variant {name} is listed twice", where=f"--variants {' '.join(names)}",
                                  fix="list each variant once"))
    for name in names:
        variant, _, gguf_type = name.partition(":")
        problems += [p.with_where(f"--variants {name}") for p in check_variant(variant)]
        if variant in ORIGINAL_VARIANTS:
            problems.append(TaskError(f"{name} is a dtype of the original, not a quantized variant",
                                      where=f"--variants {name}",
                                      fix="compare quantized variants (int8 int4 bnb8 bnb4 gptq awq gguf); "
                                          "`jbench eval --variant` runs other dtypes"))
        if gguf_type and variant != "gguf":
            problems.append(TaskError(f"only gguf takes a :TYPE suffix, got {name!r}", where=f"--variants {name}",
                                      fix="e.g. gguf:q8_0"))
        if variant == "gguf" and gguf_type and (known := gguf_types()) and gguf_type.lower() not in known:
            problems.append(TaskError(f"unknown GGUF type {gguf_type!r}", where=f"--variants {name}",
                                      fix=f"one of: {', '.join(known)}"))
        path = given.get(name) or given.get(variant)
        if path is not None and variant in PREQUANTIZED:
            problems += [p.with_where(f"--quantized {variant}={path} ({p.where})") for p in check_model(path, variant)]
    return given, problems


def gguf_types() -> list[str]:
    """The GGUF types llama.cpp's quantizer makes (f32 is exported by jbench itself); empty when
    llama-cpp-python is not installed (the variant check then says so)."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        return []
    from jbench.models.gguf import import_llama_cpp

    prefix = "LLAMA_FTYPE_MOSTLY_"
    return ["f32"] + sorted(a[len(prefix):].lower() for a in dir(import_llama_cpp()) if a.startswith(prefix))
