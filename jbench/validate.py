"""One validation step before any weights load, shared by ``eval``, ``compare`` and ``--dry-run``.

Why: loading a 70B model takes minutes and a run takes hours, so every mistake a user can make must surface
before that cost is paid, all of them at once (fixing one should not cost a model load to learn of the next).
Each ``check_*`` returns the problems it found as :class:`~jbench.errors.JBenchError` values; :func:`validate_plan`
runs them all and raises one :class:`~jbench.errors.InputErrors`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jbench.errors import BackendMissing, DataError, InputErrors, JBenchError, ModelError, NoDataDir, StoreError, TaskError
from jbench.model_files import non_causal_kind, read_json_object

if TYPE_CHECKING:
    from jbench.plan import RunPlan

#: free space the run directory needs at least (request cache, samples); a full disk mid-run wastes hours
MIN_FREE_BYTES = 64 << 20
_DEVICE_RE = re.compile(r"(cpu|cuda|mps|xpu)(?::(\d+))?")


def check_limit(limit: float | None) -> list[JBenchError]:
    import math

    if limit is None:
        return []
    if not math.isfinite(limit) or limit <= 0:
        return [TaskError(f"--limit must be a positive number, got {limit:g}", where=f"--limit {limit:g}",
                          fix="give a number of documents (e.g. --limit 100) or a fraction below 1 (--limit 0.1)")]
    return []


def check_batch_size(batch_size: int | None) -> list[JBenchError]:
    if batch_size is not None and batch_size < 1:
        return [ModelError(f"--batch-size must be at least 1, got {batch_size}", where=f"--batch-size {batch_size}",
                           fix="omit it (the size is chosen automatically) or give a positive integer")]
    return []


def check_device(device: str) -> list[JBenchError]:
    """The device exists in this torch build and is visible (torch is imported only for a non-CPU device)."""
    m = _DEVICE_RE.fullmatch(device)
    if m is None:
        return [ModelError(f"unknown device {device!r}", where=f"--device {device}",
                           fix="use auto (the default), cpu, cuda, cuda:N (N = GPU index), mps or xpu")]
    kind, index = m.group(1), m.group(2)
    if kind == "cpu":
        return [] if index in (None, "0") else [ModelError(f"there is only one cpu device, got {device!r}",
                                                           where=f"--device {device}", fix="use --device cpu")]
    import torch

    if kind == "cuda":
        if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
            return [ModelError(f"--device {device}: this torch build has no CUDA support (torch {torch.__version__})",
                               where=f"--device {device}",
                               fix="use --device cpu (or omit --device: auto picks what is there), or install a CUDA "
                                   "build of torch (make install TORCH_INDEX=...)")]
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return [ModelError(f"--device {device}: no CUDA device is visible", where=f"--device {device}",
                               fix="check nvidia-smi and CUDA_VISIBLE_DEVICES, or use --device cpu (or omit "
                                   "--device: auto picks what is there)")]
        if index is not None and int(index) >= count:
            return [ModelError(f"--device {device}: only {count} CUDA device(s) are visible (0..{count - 1})",
                               where=f"--device {device}", fix=f"use cuda:0 .. cuda:{count - 1}")]
        return []
    backend = getattr(torch.backends, kind, None) if kind == "mps" else getattr(torch, kind, None)
    if backend is None or not backend.is_available():
        return [ModelError(f"--device {device}: this machine or torch build has no {kind} device",
                           where=f"--device {device}", fix="use --device cpu")]
    return []


def check_variant(variant: str, engine: str = "hf") -> list[JBenchError]:
    """Known variant (and ``--backend`` engine that can load it), and its packages installed (looked up without
    importing them)."""
    from jbench.models.registry import get_backend, get_engine

    try:
        get_backend(variant)
        backend = get_engine(engine, variant)
    except JBenchError as err:
        return [err]
    missing = backend.missing_modules()
    if missing and engine != "hf":
        return [BackendMissing(f"--backend {engine} needs {', '.join(missing)}, which is not installed in this "
                               f"Python ({sys.executable})", where=f"--backend {engine}", fix=backend.install_hint())]
    if missing:
        return [ModelError(f"the {variant} variant needs {', '.join(missing)}, which is not installed",
                           where=f"variant {variant}", fix=backend.install_hint())]
    return []


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def check_model(model_path: str, variant: str = "fp32") -> list[JBenchError]:
    """The model exists (a local path, or something shaped like a hub id), is of the kind the variant loads (a
    ``.gguf`` file for gguf, else a checkpoint directory with config.json and weights), and a local config
    describes a causal LM; a damaged local checkpoint is caught here too (see :func:`check_weights`)."""
    p = Path(model_path).expanduser()
    if not p.exists():
        if _HUB_ID.fullmatch(model_path):
            return []  # a hub id: resolved (from the local cache, offline) when the model loads
        return [ModelError(f"model path does not exist: {model_path}", where=model_path,
                           fix="pass an existing model directory or a cached hub id")]
    if variant == "gguf":
        gguf = p if p.is_file() else next(iter(sorted(p.glob("*.gguf"))), None)
        if gguf is None or gguf.suffix != ".gguf":
            return [ModelError("the gguf variant needs a .gguf file", where=model_path,
                               fix="pass the .gguf file (or a folder holding one), or another --variant")]
        with gguf.open("rb") as fh:
            if fh.read(4) != b"GGUF":
                return [ModelError("not a GGUF file (it does not start with the GGUF magic bytes)", where=str(gguf),
                                   fix="pass a .gguf file written by llama.cpp or `jbench quantize --format gguf`")]
        return []
    if p.is_file():
        return [ModelError("the model path is a file, not a checkpoint directory", where=model_path,
                           fix="pass the directory holding config.json and the weights (or --variant gguf with a "
                               ".gguf file)")]
    cfg_file = p / "config.json"
    if not cfg_file.is_file():
        return [ModelError("the model directory has no config.json", where=model_path,
                           fix="pass a checkpoint directory saved by transformers (config.json + weights)")]
    try:
        cfg = read_json_object(cfg_file, on_error=lambda path, err: ModelError(
            f"config.json cannot be read: {err}", where=str(path), fix="save or download the checkpoint again"))
    except ModelError as err:
        return [err]
    refusal = _non_causal(cfg, model_path)  # the most useful thing to say about a BERT folder, weights or not
    if refusal:
        return refusal
    if not any(f.suffix in WEIGHT_SUFFIXES for f in p.iterdir()):
        return [ModelError("the model directory has no weights file (*.safetensors, *.bin)", where=model_path,
                           fix="download or save the checkpoint again")]
    out: list[JBenchError] = []
    if variant in ("gptq", "awq"):
        method = str((cfg.get("quantization_config") or {}).get("quant_method") or "none").lower()
        if method != variant:
            out.append(ModelError(f"not a {variant} checkpoint: config.json quantization_config.quant_method is "
                                  f"{method}", where=str(cfg_file),
                                  fix=f"pass a {variant} checkpoint (or let `jbench compare` make one from the "
                                      "original)"))
    return out + check_weights(model_path)


def _non_causal(cfg: dict[str, Any], path: str) -> list[JBenchError]:
    kind = non_causal_kind(cfg)
    if kind is None:
        return []
    model_type = str(cfg.get("model_type") or "")
    return [ModelError(f"{path!r} is not a causal language model: it is {kind} model (model_type={model_type!r})",
                       where=f"{path} (config.json model_type={model_type!r})",
                       fix="jbench scores decoder-only (causal) LMs only; pass a GPT/Llama/Qwen-style checkpoint")]


def check_weights(model_path: str) -> list[JBenchError]:
    """A local checkpoint's safetensors files are complete: header readable, data as long as it declares.

    Why: a truncated download otherwise surfaces as a library traceback after the other shards have loaded."""
    p = Path(model_path)
    files = [p] if p.is_file() and p.suffix == ".safetensors" else sorted(p.glob("*.safetensors")) if p.is_dir() else []
    out: list[JBenchError] = []
    for f in files:
        problem = _safetensors_problem(f)
        if problem:
            out.append(ModelError(f"the weights file is damaged: {problem}", where=str(f),
                                  fix="download or save the checkpoint again (the file is incomplete or not a "
                                      "safetensors file)"))
    return out


def _safetensors_problem(path: Path) -> str | None:
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"{size} bytes, shorter than a safetensors header"
            (n,) = struct.unpack("<Q", head)
            if n > size - 8 or n > 100 << 20:
                return f"header length {n} does not fit in a {size}-byte file"
            header = json.loads(fh.read(n))
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    except (ValueError, UnicodeDecodeError):
        return "its header is not valid JSON"
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    end = max((int(v["data_offsets"][1]) for k, v in header.items()
               if k != "__metadata__" and isinstance(v, dict) and isinstance(v.get("data_offsets"), list)
               and len(v["data_offsets"]) == 2), default=0)
    if 8 + n + end > size:
        return f"{size} bytes, but its header describes {8 + n + end} bytes (truncated)"
    return None


def check_output_dir(run_dir: Path) -> list[JBenchError]:
    """The run directory can be created and written, with room for the cache and samples."""
    base = run_dir
    while not base.exists() and base.parent != base:
        base = base.parent
    if not base.is_dir():
        return [StoreError(f"the output path {base} is not a directory", where=str(run_dir),
                           fix="choose another --output-dir")]
    target = run_dir if run_dir.is_dir() else base
    try:
        fd, tmp = tempfile.mkstemp(prefix=".jbench-write-test.", dir=target)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        return [StoreError(f"the output directory is not writable ({err.strerror or err})", where=str(target),
                           fix="choose a writable --output-dir")]
    free = shutil.disk_usage(target).free
    if free < MIN_FREE_BYTES:
        return [StoreError(f"only {free >> 20} MiB free where the run would be stored (at least "
                           f"{MIN_FREE_BYTES >> 20} MiB needed for the request cache and samples)", where=str(target),
                           fix="free some disk space or choose another --output-dir")]
    return []


def check_tasks_data(plan: "RunPlan") -> list[JBenchError]:
    """Every data file of every requested task is present and verified, and every shot count can be drawn."""
    from jbench.data import load_split
    from jbench.tasks import resolve_task

    out: list[JBenchError] = []
    ddir = Path(plan.data_dir)
    seen: dict[tuple[str, str], Any] = {}

    def load(dataset: str, split: str) -> Any:
        key = (dataset, split)
        if key not in seen:
            try:
                seen[key] = load_split(dataset, split, ddir, allow_mismatch=plan.allow_data_mismatch)
            except DataError as err:
                seen[key] = err
                out.append(err)
        return seen[key]

    from jbench.requests import apply_limit

    limit_ok = not check_limit(plan.limit)
    for name, k in zip(plan.tasks, plan.num_fewshot):
        task = resolve_task(name)
        val = load(task.dataset, "validation")
        if limit_ok and not isinstance(val, JBenchError) and plan.limit is not None \
                and apply_limit(len(val.docs), plan.limit) == 0:
            out.append(TaskError(f"--limit {plan.limit:g} keeps no document of {name} ({len(val.docs)} documents)",
                                 where=f"--limit {plan.limit:g}",
                                 fix=f"use a larger fraction (at least {1 / len(val.docs):.3g}) or a count"))
        if k < 0:
            out.append(TaskError(f"--num-fewshot must be 0 or more, got {k} for {name}",
                                 where=f"--num-fewshot {k}", fix="use 0 or a positive number of shots"))
            continue
        if k == 0:
            continue
        if task.sampler == "none":
            out.append(TaskError(f"{name} is always 0-shot (it has no train split), but {k} shots were asked",
                                 where=f"--num-fewshot {k}", fix=f"use 0 shots for {name}"))
            continue
        train = load(task.dataset, "train")
        if not isinstance(train, JBenchError) and k > len(train.docs):
            out.append(TaskError(f"{name}: {k} shots asked, but its shot split has only {len(train.docs)} documents",
                                 where=f"--num-fewshot {k} ({ddir})",
                                 fix=f"use at most {len(train.docs)} shots (the task's default is "
                                     f"{task.default_shots})"))
    return out


def validate_plan(plan: "RunPlan", run_dir: Path | None, *, problems: list[JBenchError] | None = None,
                  check_data: bool = True) -> None:
    """Run every check on a plan; raise one :class:`InputErrors` listing all problems (``problems`` are ones the
    caller already found, e.g. while resolving task names). ``check_data=False`` leaves the data files to a runner
    that reads its own (the lm-eval suite)."""
    found = list(problems or [])
    no_data = any(isinstance(p, NoDataDir) for p in found)
    m = plan.model
    found += check_limit(plan.limit)
    found += check_batch_size(m.get("batch_size"))
    from jbench.models.model_args import check_model_args

    found += check_model_args(m.get("model_args") or {}, str(m.get("variant") or "fp32"))
    found += check_device(str(m.get("device") or "cpu"))
    found += check_variant(str(m.get("variant") or "fp32"), str(m.get("backend") or "hf"))
    if m.get("model") not in (None, "tiny") and not (m.get("extra") or {}).get("in-memory"):
        try:
            sub = (m.get("model_args") or {}).get("subfolder")  # --model-args subfolder=: the checkpoint is there
            local = Path(str(m["model"])).expanduser()
            found += check_model(str(local / str(sub)) if sub and local.is_dir() else str(m["model"]),
                                 str(m.get("variant") or "fp32"))
        except OSError as err:  # an unreadable folder or file: the user's to fix, not a traceback
            found.append(ModelError(f"the model cannot be read ({err.strerror or err})", where=str(m["model"]),
                                    fix="check the path and its permissions"))
    from jbench.chat import check_chat

    found += check_chat(plan)
    if run_dir is not None:
        found += check_output_dir(run_dir)
    if check_data and not no_data:  # without a data dir every file is missing: the one message above says what to do
        found += check_tasks_data(plan)
    if found:
        raise InputErrors(found)
