"""``jbench sweep SWEEP.yaml``: the sweep file (models x variants x task sets), read and checked completely before
anything starts, and the runs it asks for.

Why a planner apart from the executor (:mod:`jbench.sweep_ray`): a typo in the 40th model of a grid must cost
nothing, so every entry is resolved and validated exactly as ``jbench eval`` validates one run (tasks, shots, data
files, model paths, variants, output directory) and every problem is reported at once, with the file and field,
before Ray starts. Each run is an ordinary ``jbench eval`` run directory (``<output_dir>/<model>-<variant>-<set>``),
so ``jbench table``, ``compare`` and ``check`` read sweep runs like any other.

The file (every key but ``models``, ``variants`` and ``task_sets`` is optional)::

    output_dir: /shared/jbench-runs      # storage every node sees (--output-dir overrides it)
    data_dir: /shared/jbench-data        # default: $JBENCH_DATA_DIR (the tiny model: the bundled sample)
    device: auto                         # resolved on the node that runs each model
    limit: 100
    retries: 2                           # a crashed or failed run is tried again at most this often
    resources: {num_gpus: 1, num_cpus: 4, memory: 40GiB}   # what one (model, variant) asks Ray for
    variants: [auto]                     # for models that do not list their own
    models:
      - rinna/japanese-gpt-neox-3.6b
      - {model: /models/llm-jp-3-13b, variants: [bf16, int8], resources: {num_gpus: 2, memory: 80GiB},
         model_args: "device_map=auto"}   # as --model-args (int8 drops device_map); backend: vllm as --backend
      - {model: /models/x, variants: [auto, gptq], quantized: {gptq: /models/x-gptq}}
    task_sets:
      core: {tasks: [jcommonsenseqa, jnli, marc_ja], num_fewshot: [3, 3, 3]}
      qa: {tasks: [jsquad], num_fewshot: 2, limit: 50}
"""

from __future__ import annotations

import contextlib
import io
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jbench.errors import InputErrors, JBenchError

TOP_KEYS = ("output_dir", "data_dir", "device", "limit", "retries", "resources", "variants", "models", "task_sets",
            "batch_size", "prompt_version")
MODEL_KEYS = ("model", "variants", "resources", "quantized", "batch_size", "model_args", "backend")
SET_KEYS = ("tasks", "num_fewshot", "limit")
RESOURCE_KEYS = ("num_gpus", "num_cpus", "memory")
DEFAULT_RETRIES = 2
#: dtypes of the original, most faithful first: the reference a model's other variants are compared with
ORIGINAL_ORDER = ("fp32", "bf16", "fp16", "auto")
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
          "KI": 1 << 10, "MI": 1 << 20, "GI": 1 << 30, "TI": 1 << 40}


class SweepError(JBenchError):
    """The sweep file cannot be read or asks for something jbench cannot run."""


@dataclass(frozen=True)
class Resources:
    """What one (model, variant) task asks Ray for: CPUs, GPUs and memory (bytes) of one node."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory: int | None = None

    def ray_options(self) -> dict[str, Any]:
        out: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory:
            out["memory"] = self.memory
        return out


@dataclass
class SweepRun:
    """One run of the grid: the plan ``jbench eval`` would make for it and its run directory."""

    name: str
    model: str
    variant: str
    task_set: str
    plan: dict[str, Any]     # a RunPlan as a dict; its model.device is the sweep's device, resolved on the node


@dataclass
class SweepJob:
    """One Ray task: one (model, variant), running its task sets in turn."""

    key: str
    model: str
    variant: str
    resources: Resources
    runs: list[SweepRun] = field(default_factory=list)


@dataclass
class Sweep:
    path: Path
    output_dir: Path
    device: str
    retries: int
    jobs: list[SweepJob]
    models: dict[str, list[str]]   # model -> its variants, in the order listed (for the comparison reports)

    @property
    def runs(self) -> list[SweepRun]:
        return [r for j in self.jobs for r in j.runs]


def original_variant(variants: list[str]) -> str:
    """The variant a model's others are compared with: its most faithful dtype, else the first listed."""
    return next((v for v in ORIGINAL_ORDER if v in variants), variants[0])


def parse_size(value: Any) -> int | None:
    """Bytes from ``34359738368``, ``"32GiB"``, ``"32 GB"``, ``"512MiB"``; None if not a size."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value) if value > 0 and math.isfinite(value) else None
    m = _SIZE.fullmatch(str(value))
    if m is None:
        return None
    unit = (m.group(2) or "").upper().removesuffix("B")
    size = int(float(m.group(1)) * _UNITS[unit])
    return size if size > 0 else None


class _Problems:
    """Problems found while reading the file, each placed at ``<file>: <field>``."""

    def __init__(self, path: Path) -> None:
        self.path, self.items, self._seen = path, [], set()  # type: ignore[var-annotated]

    def add(self, what: str, field_: str, fix: str, cls: type[JBenchError] = SweepError) -> None:
        self.place(cls(what, fix=fix), field_)

    def place(self, err: JBenchError, field_: str) -> None:
        if isinstance(err, InputErrors):
            for p in err.problems:
                self.place(p, field_)
            return
        detail = err.where if err.where and err.where not in field_ and not err.where.startswith("--") else None
        where = f"{self.path}: {field_}" + (f" ({detail})" if detail else "")  # no CLI flags: the user wrote YAML
        if (err.what, field_) not in self._seen:
            self._seen.add((err.what, field_))
            self.items.append(err.with_where(where))


def _unknown_keys(raw: dict[str, Any], known: tuple[str, ...], field_: str, probs: _Problems) -> None:
    for key in raw:
        if key not in known:
            probs.add(f"unknown key {key!r}", f"{field_}{key}" if field_ else str(key),
                      f"use only: {', '.join(known)}")


def _names(value: Any, field_: str, probs: _Problems, what: str) -> list[str]:
    """A list of names, or one name, or a comma-separated string."""
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value):
        items = [v.strip() for v in value]
    else:
        probs.add(f"{field_} must be a list of {what}, got {value!r}", field_, f"e.g. {field_}: [name1, name2]")
        return []
    if not items:
        probs.add(f"{field_} is empty", field_, f"list at least one of the {what}")
    for dup in sorted({v for v in items if items.count(v) > 1}):
        probs.add(f"{dup!r} is listed twice", field_, "list each once")
    return list(dict.fromkeys(items))


def _resources(raw: Any, field_: str, base: Resources, probs: _Problems) -> Resources:
    if raw is None:
        return base
    if not isinstance(raw, dict):
        probs.add(f"{field_} must be a mapping, got {raw!r}", field_, "e.g. resources: {num_gpus: 1, memory: 40GiB}")
        return base
    _unknown_keys(raw, RESOURCE_KEYS, f"{field_}.", probs)
    values = asdict(base)
    for key in ("num_cpus", "num_gpus"):
        if key in raw:
            v = raw[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 \
                    or (key == "num_cpus" and v == 0):
                probs.add(f"{field_}.{key} must be a {'positive' if key == 'num_cpus' else 'non-negative'} number, "
                          f"got {v!r}", f"{field_}.{key}", f"e.g. {key}: 1")
            else:
                values[key] = float(v)
    if "memory" in raw:
        size = parse_size(raw["memory"])
        if size is None:
            probs.add(f"{field_}.memory is not a size: {raw['memory']!r}", f"{field_}.memory",
                      "give bytes or a size such as 16GiB, 512MiB, 40GB")
        values["memory"] = size
    return Resources(**values)


def _positive(raw: dict[str, Any], key: str, field_: str, probs: _Problems, *, integer: bool = False) -> Any:
    value = raw.get(key)
    if value is None:
        return None
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0
    if ok and integer and not isinstance(value, int):
        ok = False
    if not ok:
        probs.add(f"{field_} must be a positive {'integer' if integer else 'number'}, got {value!r}", field_,
                  "e.g. limit: 100 (documents) or limit: 0.1 (a fraction)" if key == "limit" else f"e.g. {key}: 8")
        return None
    return value


def read_sweep_file(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise SweepError("the sweep file does not exist", where=str(path),
                         fix="pass the path of a sweep YAML file (see README: Sweeps)") from err
    except (OSError, UnicodeDecodeError) as err:
        raise SweepError(f"the sweep file cannot be read: {err}", where=str(path),
                         fix="pass a readable UTF-8 YAML file") from err
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SweepError(f"the sweep file is not valid YAML: {problem}", where=f"{path}{at}",
                         fix="fix the YAML syntax at that line (indentation, a missing colon or quote)") from err
    if not isinstance(raw, dict):
        raise SweepError(f"the sweep file must be a YAML mapping, got {type(raw).__name__}", where=str(path),
                         fix="start from the example in README (Sweeps): models, variants, task_sets")
    return raw


def load_sweep(path: Path, *, output_dir: Path | None = None) -> Sweep:
    """Read, resolve and validate a sweep file; raise one :class:`InputErrors` listing every problem (exit 2)."""
    path = Path(path)
    raw = read_sweep_file(path)
    probs = _Problems(path)
    _unknown_keys(raw, TOP_KEYS, "", probs)
    for key in ("models", "task_sets"):
        if key not in raw:
            probs.add(f"the sweep file has no {key!r}", key, "see the example in README (Sweeps)")
    out_raw = output_dir if output_dir is not None else raw.get("output_dir", "results")
    out_dir = Path(str(out_raw)).expanduser().absolute()  # not resolve(): a shared mount keeps its name on every node
    data_dir = raw.get("data_dir")
    device = str(raw.get("device") or "auto")
    _check_device_name(device, probs)
    retries = raw.get("retries", DEFAULT_RETRIES)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        probs.add(f"retries must be a whole number >= 0, got {retries!r}", "retries", "e.g. retries: 2")
        retries = DEFAULT_RETRIES
    limit = _positive(raw, "limit", "limit", probs)
    batch_size = _positive(raw, "batch_size", "batch_size", probs, integer=True)
    prompt_version = raw.get("prompt_version")
    if prompt_version is not None and not isinstance(prompt_version, str):
        probs.add(f"prompt_version must be quoted text, got {prompt_version!r}", "prompt_version",
                  'quote it: prompt_version: "0.3" (YAML reads 0.30 as the number 0.3)')
        prompt_version = None
    base_res = _resources(raw.get("resources"), "resources", Resources(), probs)
    default_variants = _names(raw["variants"], "variants", probs, "variants") if "variants" in raw else None
    sets = _task_sets(raw.get("task_sets"), probs)
    models = raw.get("models")
    if models is not None and (not isinstance(models, list) or not models):
        probs.add("models must be a non-empty list", "models", "e.g. models: [tiny, /models/my-model]")
        models = []
    jobs: list[SweepJob] = []
    by_model: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    for i, entry in enumerate(models or []):
        where = f"models[{i}]"
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("model"), str) or not entry["model"].strip():
            probs.add(f"{where} must be a model path or hub id, or a mapping with 'model'", where,
                      "e.g. - /models/my-model  or  - {model: /models/my-model, variants: [bf16]}")
            continue
        _unknown_keys(entry, MODEL_KEYS, f"{where}.", probs)
        model = entry["model"].strip()
        if model != "tiny" and Path(model).expanduser().exists():  # local: the same absolute path on every node
            model = str(Path(model).expanduser().absolute())
        where = f"models[{i}] ({model})"
        if "variants" in entry:
            variants = _names(entry["variants"], f"{where}.variants", probs, "variants")
        elif default_variants is not None:
            variants = default_variants
        else:
            probs.add(f"no variants for {model}", f"{where}.variants",
                      "add `variants: [auto]` (the checkpoint's dtype, for GPUs) or `[fp32]` (the reference's) at "
                      "the top or on the model")
            variants = []
        quantized = entry.get("quantized") or {}
        if not isinstance(quantized, dict):
            probs.add(f"{where}.quantized must map a variant to a checkpoint path", f"{where}.quantized",
                      "e.g. quantized: {gptq: /models/x-gptq}")
            quantized = {}
        res = _resources(entry.get("resources"), f"{where}.resources", base_res, probs)
        bsize = _positive(entry, "batch_size", f"{where}.batch_size", probs, integer=True) or batch_size
        if model in by_model:
            probs.add(f"{model} is listed twice", where, "list each model once, with all its variants")
            continue
        by_model[model] = variants
        # as `jbench compare --original <dtype>`: the quantized variants compute in the original's dtype
        compute = original_variant(variants) if variants and original_variant(variants) in ORIGINAL_ORDER else None
        for variant in variants:
            job = _plan_job(model, variant, sets, quantized, res, out_dir, where, probs,
                            dict(data_dir=data_dir, limit=limit, batch_size=bsize, prompt_version=prompt_version,
                                 model_args=entry.get("model_args"), backend=entry.get("backend"),
                                 compute_dtype=compute))
            if job is None:
                continue
            for run in job.runs:
                if run.name in names:
                    probs.add(f"two runs would share the run directory {run.name}", where,
                              f"it is also {names[run.name]}: give the models different paths")
                names[run.name] = f"{model} {variant} {run.task_set}"
            jobs.append(job)
    if probs.items:
        raise InputErrors(probs.items)
    return Sweep(path=path, output_dir=out_dir, device=device, retries=retries, jobs=jobs, models=by_model)


def _check_device_name(device: str, probs: _Problems) -> None:
    """Only the name here: whether the device exists is checked on the node that runs each model."""
    from jbench.validate import _DEVICE_RE

    if device != "auto" and _DEVICE_RE.fullmatch(device) is None:
        probs.add(f"unknown device {device!r}", "device", "use auto (the default), cpu, cuda, cuda:N or mps")


def _task_sets(raw: Any, probs: _Problems) -> dict[str, dict[str, Any]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not raw:
        probs.add("task_sets must map a set name to its tasks", "task_sets",
                  "e.g. task_sets: {core: {tasks: [jcommonsenseqa, jnli], num_fewshot: [3, 3]}}")
        return {}
    from jbench.results import check_plain_name

    out: dict[str, dict[str, Any]] = {}
    for name, spec in raw.items():
        where = f"task_sets.{name}"
        try:
            check_plain_name(str(name), "task set name", where)
        except JBenchError as err:
            probs.place(err, where)
            continue
        if isinstance(spec, (list, str)):
            spec = {"tasks": spec}
        if not isinstance(spec, dict) or "tasks" not in spec:
            probs.add(f"{where} must have tasks", where, "e.g. core: {tasks: [jcommonsenseqa], num_fewshot: 3}")
            continue
        _unknown_keys(spec, SET_KEYS, f"{where}.", probs)
        tasks = _names(spec["tasks"], f"{where}.tasks", probs, "task names")
        shots = spec.get("num_fewshot")
        if isinstance(shots, list):
            shots = ",".join(str(s) for s in shots)
        out[str(name)] = {"tasks": ",".join(tasks), "num_fewshot": None if shots is None else str(shots),
                          "limit": _positive(spec, "limit", f"{where}.limit", probs)}
    return out


def _plan_job(model: str, variant: str, sets: dict[str, dict[str, Any]], quantized: dict[str, Any],
              res: Resources, out_dir: Path, where: str, probs: _Problems, common: dict[str, Any]) -> SweepJob | None:
    """The runs of one (model, variant): each task set resolved and validated as ``jbench eval`` would."""
    from jbench.models.load import DTYPE_OF_VARIANT, ModelSpec
    from jbench.plan import resolve_plan
    from jbench.validate import validate_plan
    from jbench.run_identity import settings_tag
    from jbench.variant_runs import PREQUANTIZED, plan_variants, variant_model_args, variant_problems

    vwhere = f"{where} variant {variant}"
    quant = variant not in ORIGINAL_ORDER
    compute = common["compute_dtype"] if quant else None  # the original's dtype (None: fp32, the default)
    job = SweepJob(key=f"{model} {variant}", model=model, variant=variant, resources=res)
    qpath = quantized.get(variant)
    if variant in PREQUANTIZED and not qpath:
        probs.add(f"the {variant} variant of {model} needs its quantized checkpoint", f"{where}.quantized",
                  f"make it with `jbench quantize {model} --format {variant}` and add quantized: {{{variant}: PATH}}")
        return None
    for set_name, ts in sets.items():
        sink = io.StringIO()  # resolve_plan prints the preset line of every run: one summary is shown instead
        with contextlib.redirect_stderr(sink):
            plan, found = resolve_plan(
                model=model, tasks=ts["tasks"], num_fewshot=ts["num_fewshot"], prompt_version=common["prompt_version"],
                limit=ts["limit"] or common["limit"], variant=None if variant in PREQUANTIZED else variant,
                batch_size=common["batch_size"], device="cpu", use_fast=None, trust_remote_code=None,
                data_dir=None if common["data_dir"] is None else Path(str(common["data_dir"])).expanduser().absolute(),
                allow_data_mismatch=False, model_args=common["model_args"], backend=common["backend"])
            if variant in PREQUANTIZED:
                _, more = variant_problems([variant], [f"{variant}={qpath}"])
                found += more
                if not more:
                    plan = plan_variants(plan, [variant], {variant: str(qpath)}, calibration=None,
                                         output_dir=out_dir, compute_dtype=compute)[0][0]
            else:  # as `jbench compare`: one device_map for the original, quantized variants placed by jbench
                plan.model["model_args"] = variant_model_args(variant, plan.model.get("model_args") or {})
                if compute is not None and compute != "fp32":
                    plan.model["extra"] = {**(plan.model.get("extra") or {}), "dtype": DTYPE_OF_VARIANT[compute]}
        if plan.data_dir:  # workers may start in another directory
            plan.data_dir = str(Path(plan.data_dir).absolute())
        # the same tags as `jbench eval`'s default names: two entries of one model with other revisions or model
        # args never share a run directory
        spec = ModelSpec(**{**plan.model, 'model': model, 'variant': variant})
        dtype_tag = f"-{compute}" if compute is not None and compute != "fp32" else ""  # as compare's run folders
        name = f"{spec.slug()}{dtype_tag}{settings_tag(plan.model)}-{set_name}"
        run_dir = out_dir / name
        try:
            validate_plan(plan, run_dir, problems=found)
        except JBenchError as err:
            for p in getattr(err, "problems", [err]):
                probs.place(p, _field_of(p, set_name, vwhere))
            continue
        job.runs.append(SweepRun(name=name, model=model, variant=variant, task_set=set_name, plan=asdict(plan)))
    return job if job.runs else None


def _field_of(err: JBenchError, set_name: str, model_field: str) -> str:
    """The sweep-file field a validation problem of one run belongs to."""
    from jbench.errors import DataError, NoDataDir, StoreError, TaskError

    if isinstance(err, NoDataDir):
        return "data_dir"
    if isinstance(err, StoreError):
        return "output_dir"
    if isinstance(err, (TaskError, DataError)):
        return f"task_sets.{set_name}"
    return model_field
