"""Whether a stored run is comparable at all with a published source: the same model, tokenizer setting, dtype,
quantization, sequence length and loader arguments (run level), and the same data (task level).

Why a separate step before any Δ: a number within the noise band says nothing when the run is another model, a
truncated context or another tokenizer; such a run must read "not comparable" with the reason, never
"reproduced". The reference harness (lm-eval 0.3 ``hf-causal``) used the transformers defaults for what its
model args do not set: the fast tokenizer where one exists, float32 unless ``torch_dtype``/``dtype`` is passed,
and the model's own maximum length.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from jbench.published.registry import Source, model_of_run
from jbench.run_identity import NEUTRAL_MODEL_ARGS

#: model args this module checks on their own (model, tokenizer, dtype, quantization; device and batch size are
#: run settings), plus jbench's one set of placement/memory/parallelism args that never change a number
_CHECKED_OR_NEUTRAL = {"pretrained", "tokenizer", "use_fast", "torch_dtype", "dtype", "use_accelerate", "load_in_8bit",
                       "trust_remote_code", "device", "batch_size"} | NEUTRAL_MODEL_ARGS


def _hub_cache_id(path: str) -> str | None:
    """``org/name`` for a path inside the Hugging Face cache (``.../models--org--name/snapshots/<commit>``)."""
    m = re.search(r"models--([^/]+?)--([^/]+)", path)
    return f"{m.group(1)}/{m.group(2)}" if m else None


def model_problem(source: Source, cfg: dict[str, Any], stated_model: str | None = None) -> str | None:
    """Why the run is not of the source's model, or None. ``stated_model``: the user said the run's local folder
    is this model (``jbench reproduce --checkpoint``), which is accepted when it names the source's model."""
    run_model = model_of_run(cfg)
    want = source.model.lower()
    if stated_model is not None and stated_model.lower() == want:
        return None
    cands = [run_model or ""] + [_hub_cache_id(str(cfg.get(k) or "")) or "" for k in ("model", "model_path")]
    if any(c.lower() == want for c in cands if c):
        return None
    shown = cfg.get("model") or run_model or "unknown"
    return (f"another model (the run is of {shown}, the source of {source.model}); if the run's weights are a "
            f"local copy of {source.model}, say so with `jbench reproduce {source.model} --checkpoint PATH`")


def _source_args(source: Source) -> dict[str, str]:
    out = {}
    for part in (source.model_args or "").split(","):
        key, eq, value = part.partition("=")
        if eq:
            out[key.strip()] = value.strip()
    return out


def _norm_path(value: str) -> str:
    return value.strip().removeprefix("./").rstrip("/")


def _same_tokenizer(used: str, source: str) -> bool:
    """The run's tokenizer is the source's: the same Hub id, or -- the source's is a path on the authors' machine
    (``./tokenizers/nai-hf-tokenizer/``, ``${PROJECT_DIR}/...``) -- a folder of the same name."""
    is_path = source.strip().startswith(("/", ".", "$", "{")) or source.count("/") > 1
    used, source = _norm_path(used), _norm_path(source)
    return used == source or (is_path and Path(used).name == Path(source).name)


def source_tokenizer(source: Source) -> str | None:
    """The ``tokenizer=`` of the source's model args when it is not its ``pretrained=`` model (None: the model's
    own tokenizer). lm-eval 0.3 loaded that tokenizer instead of the model's, so the requests differ."""
    args = _source_args(source)
    tok = args.get("tokenizer")
    if not tok or _norm_path(tok) == _norm_path(args.get("pretrained") or source.model):
        return None
    return tok


def run_tokenizer(cfg: dict[str, Any]) -> str | None:
    """The tokenizer files a run was told to use instead of its model's (None: the model's own)."""
    spec = cfg.get("spec") if isinstance(cfg.get("spec"), dict) else {}
    for args in (spec.get("extra"), spec.get("model_args"), cfg.get("model_kwargs")):
        if isinstance(args, dict) and args.get("tokenizer"):
            return str(args["tokenizer"])
    return None


def settings_problems(source: Source, cfg: dict[str, Any]) -> list[str]:
    """Run-level settings that differ from what the source fixed (each makes every task not comparable)."""
    problems = []
    src_fast = True if source.use_fast is None else source.use_fast
    run_fast = cfg.get("use_fast")
    if isinstance(run_fast, bool) and run_fast != src_fast:
        problems.append(f"another tokenizer setting (the run use_fast={run_fast}, the source use_fast={src_fast})")
    dt = cfg.get("dtype")
    if source.dtype and source.dtype != "auto" and isinstance(dt, str) and dt != source.dtype:
        problems.append(f"another dtype (the run {dt}, the source {source.dtype})")
    quant = cfg.get("quantization")
    if bool(source.quantization) != bool(quant):
        problems.append(f"another quantization (the run {quant or 'none'}, the source "
                        f"{source.quantization or 'none'})")
    spec = cfg.get("spec") if isinstance(cfg.get("spec"), dict) else {}
    max_len = spec.get("max_length", cfg.get("max_length")) if spec else cfg.get("max_length")
    src_args = _source_args(source)
    if max_len is not None and str(max_len) != src_args.get("max_length"):
        problems.append(f"max_length={max_len} set by the run (the source used the model's own maximum length): "
                        "contexts are cut differently")
    tok = source_tokenizer(source)
    used = run_tokenizer(cfg)
    if tok is not None and not (used and _same_tokenizer(used, tok)):
        shown = used or "the model's own"
        problems.append(f"the source used another tokenizer: {tok} (not the model's own); the run used {shown}")
    extra = spec.get("model_args") if isinstance(spec.get("model_args"), dict) else {}
    extra = {**extra, **(cfg.get("model_kwargs") if isinstance(cfg.get("model_kwargs"), dict) else {})}
    differ = {k: v for k, v in extra.items() if k not in _CHECKED_OR_NEUTRAL and str(v) != src_args.get(k)}
    if differ:
        problems.append("model args the source did not use: " + ", ".join(f"{k}={v}" for k, v in differ.items()))
    return problems


def _official_hashes(dataset: str, split: str) -> tuple[set[str], set[str]]:
    from jbench.data.registry import DATASETS

    spec = DATASETS.get(dataset)
    files = spec.splits.get(split, []) if spec else []
    return {f.sha256 for f in files if f.sha256}, {f.git_blob for f in files if f.git_blob}


def _declared_is_official(folder: str, recorded: str | None, dataset: str, split: str) -> bool:
    """A declared local source folder, unchanged since the run (its tree sha256 equals the recorded one), holding a
    file byte-identical to the official file of ``split``."""
    from jbench.data.loader import git_blob_sha1
    from jbench.data.sources import _source_files, tree_sha256

    root = Path(folder)
    if not root.is_dir() or recorded is None or tree_sha256(root) != recorded:
        return False
    shas, blobs = _official_hashes(dataset, split)
    for p in _source_files(root):
        data = p.read_bytes()
        if hashlib.sha256(data).hexdigest() in shas or git_blob_sha1(data) in blobs:
            return True
    return False


def data_problem(run: dict[str, Any], task: str) -> str | None:
    """Why the run's data for ``task`` is not the reference's: made-up rows, a failed checksum, the data dir's own
    manifest (e.g. the bundled sample's real-row subsets: other documents, another shuffle), an unverified file,
    or a declared source (``jbench data --source``) whose files are not byte-identical to the official ones."""
    from jbench.tasks import resolve_task

    files = [f for f in ((run.get("config") or {}).get("data") or {}).get(task) or [] if isinstance(f, dict)]
    if any(f.get("madeup") for f in files):
        return "made-up data (the bundled demo sample)"
    if any(f.get("mismatch") for f in files):
        return "data file failed its checksum (not the reference data)"
    for f in files:
        path, expected = str(f.get("path") or ""), f.get("expected")
        if expected in (None, "official"):
            continue
        folder, hashmark, split = path.rpartition("#")
        if hashmark:  # a declared source: <folder or hub:repo>#<split>
            try:
                dataset = resolve_task(task).dataset
            except Exception:  # noqa: BLE001 - an unknown task name: cannot verify
                dataset = ""
            if not folder.startswith("hub:") and _declared_is_official(folder, f.get("sha256"), dataset, split):
                continue
            return (f"declared data source ({folder}, {split}): not the reference's files (jbench cannot show "
                    "they are byte-identical to the official ones)")
        if expected == "manifest":
            return f"not the official data files ({path} is checked against the data dir's manifest, e.g. the " \
                   "bundled sample's subset)"
        return f"data file not verified against the official checksum ({path}: {expected})"
    return None
