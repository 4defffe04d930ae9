"""What tells two runs apart: default run names that carry every setting that changes the numbers, and the weights
check that decides whether a finished run may be reused.

Why: a default run directory is where a rerun resumes and where ``jbench compare`` looks for a finished run. If two
runs with different numbers map to one name, the second silently replaces the first; if a finished run is reused
after the weights behind the same model name changed (a moved Hub ``main``, an overwritten local checkpoint), its
old numbers pass for the new weights. So:

* the default name is ``<model>-<variant>`` (:meth:`jbench.models.load.ModelSpec.slug`) plus, only when given,
  ``-rev-<revision>`` (``--revision``; a 40-hex commit shortened to 8), ``-ma<6 hex>`` (a hash of the
  ``--model-args`` that can change the numbers, ``max_length`` included) and ``-chat`` (default chat settings) or
  ``-chat-<6 hex>`` (a system instruction or ``--no-fewshot-as-multiturn``). Runs without these options keep the
  names they always had, and so their request caches.
* a finished run is reused only if the weights it recorded (results.json ``config.weights_fingerprint`` and
  ``revision_commit``) are the weights the same plan would load now -- computed cheaply, without loading: a local
  folder's file fingerprint, a Hub id's resolved commit.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Mapping

__all__ = ["NEUTRAL_MODEL_ARGS", "chat_tag", "comparison_dtype", "current_weights", "default_run_name", "report_name", "settings_tag",
           "stale_weights_reason"]

#: loader arguments that only decide where files, memory and work go (placement, memory limits, parallelism,
#: threads), never a number: they leave the run name and the request cache's model identity alone, and a
#: published source's comparability check ignores them. The one list, used by all three. Left out on purpose:
#: ``attn_implementation`` (eager vs sdpa differ by ~1e-6 in fp32, more in bf16), ``n_gpu_layers`` (llama.cpp
#: computes offloaded layers with other kernels), ``tokenizer`` and anything else that can change a number.
NEUTRAL_MODEL_ARGS = frozenset({
    "low_cpu_mem_usage", "offload_folder", "offload_state_dict", "offload_buffers", "cache_dir", "local_files_only",
    "token", "use_auth_token", "force_download", "use_mmap", "use_mlock", "n_threads", "n_threads_batch", "verbose",
    "gpu_memory_utilization", "max_memory", "device_map", "tensor_parallel_size", "data_parallel_size",
    "pipeline_parallel_size",
})
_COMMIT = re.compile(r"[0-9a-f]{40}")


def _hash6(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:6]


def settings_tag(model: Mapping[str, Any]) -> str:
    """``-rev-<rev>`` and ``-ma<hash>`` for a plan's model entry ("" when neither option was given)."""
    from jbench.results import safe_name

    tag = ""
    revision = model.get("revision")
    if revision:
        rev = str(revision)
        tag += f"-rev-{rev[:8] if _COMMIT.fullmatch(rev) else safe_name(rev)[:40]}"
    args = {k: v for k, v in (model.get("model_args") or {}).items() if k not in NEUTRAL_MODEL_ARGS}
    if model.get("max_length") is not None:  # --model-args max_length=N is folded into its own field
        args["max_length"] = model["max_length"]
    if args:
        tag += f"-ma{_hash6(args)}"
    return tag


def chat_tag(chat: Mapping[str, Any] | None) -> str:
    """``-chat`` for lm-eval's default chat settings, ``-chat-<hash>`` for any other, "" without a chat template."""
    if not chat:
        return ""
    from dataclasses import asdict

    from jbench.chat import RUN_NAME_SUFFIX, ChatOptions

    default = asdict(ChatOptions())
    if {k: chat.get(k, v) for k, v in default.items()} == default:
        return RUN_NAME_SUFFIX
    return f"{RUN_NAME_SUFFIX}-{_hash6(dict(chat))}"


def default_run_name(plan: Any) -> str:
    """The default run name of a plan: ``<model>-<variant>`` + settings tag + chat tag."""
    from jbench.models.load import ModelSpec

    return ModelSpec(**plan.model).slug() + settings_tag(plan.model) + chat_tag(plan.chat)


def current_weights(model: Mapping[str, Any]) -> dict[str, str | None]:
    """``weights_fingerprint`` and ``revision_commit`` as a run of this model entry would record them now, computed
    the way :func:`jbench.models.load.loaded_record` does but without loading anything."""
    from jbench.models.hub_revision import hub_fingerprint
    from jbench.models.load import ModelSpec, hub_commit, resolve_model_path, weights_fingerprint

    spec = ModelSpec(**dict(model))
    path = resolve_model_path(spec)
    commit = hub_commit(spec, path)
    fingerprint = hub_fingerprint(path, commit) if commit else weights_fingerprint(
        Path(path) / str(spec.model_args.get("subfolder") or ""))
    return {"weights_fingerprint": fingerprint, "revision_commit": commit}


def _stored_results(run_dir: Path) -> dict[str, Any]:
    """The finished run's results.json ({} when there is none or it cannot be read)."""
    from jbench.results import RESULTS_FILE

    try:
        data = json.loads((run_dir / RESULTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def stale_weights_reason(model: Mapping[str, Any], run_dir: Path) -> str | None:
    """Why the finished run in ``run_dir`` no longer describes these weights (None: it does)."""
    config = _stored_results(run_dir).get("config")
    if not isinstance(config, dict) or "weights_fingerprint" not in config:
        return "its results.json records no weights fingerprint, so it cannot be tied to these weights"
    now = current_weights(model)
    old_commit, new_commit = config.get("revision_commit"), now["revision_commit"]
    if old_commit != new_commit:
        return (f"the model now resolves to commit {str(new_commit)[:12]}, the run was made from "
                f"{str(old_commit)[:12]}")
    if config.get("weights_fingerprint") != now["weights_fingerprint"]:
        return "the model's weight files changed since it ran (their fingerprint differs)"
    return None


def comparison_dtype(original: str | None, base_variant: str | None) -> str | None:
    """The dtype of a comparison's original when it must show in names -- the one rule for ``jbench compare`` and
    the sweep report: ``--original`` when given, else the original plan's own variant when it is not the fp32
    default (``auto`` on a GPU for a model without a preset, a preset's fp16/bf16). The quantized variants compute
    in it and their run folders and the report folder carry it, so a GPU comparison (auto) never shares folders
    with a CPU one (fp32). None: fp32 by default, the names runs always had."""
    if original:
        return original
    return base_variant if base_variant in ("fp16", "bf16", "auto") else None


def report_name(base: Any, original: str | None) -> str:
    """The folder of a comparison's report under ``<output-dir>/compare/``: the model, ``-<original dtype>`` when
    there is one (``original``: :func:`comparison_dtype`), and the settings tags -- so comparing against an fp16 and a bf16 original keeps both."""
    from jbench.models.load import ModelSpec

    stem = ModelSpec(**base.model).slug().rsplit("-", 1)[0]
    return stem + (f"-{original}" if original else "") + settings_tag(base.model) + chat_tag(base.chat)


def _plan_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The plan fields (model fields as ``model.<field>``) that differ between two stored plans."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if key == "model" and isinstance(a, dict) and isinstance(b, dict):
            out += [f"model.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            out.append(key)
    return out


def resume_message(run_dir: Path, plan: Any, cached: int) -> str:
    """What a run that opens a non-empty request cache says: how many answers the file holds, and -- when the run
    directory's last finished run had other settings -- that those answers mostly do not apply. (Answers are keyed
    by request and model identity, so only identical requests of the same model and weights are reused; how many
    is counted as the run goes and reported at its end by :func:`cache_summary`.)"""
    from dataclasses import asdict

    before = _stored_results(run_dir).get("plan")
    before = before if isinstance(before, dict) else None
    diff = _plan_differences(before, asdict(plan)) if before is not None else []
    if diff:
        return (f"reusing {run_dir}, whose last finished run had other settings ({', '.join(diff)}): its request "
                f"cache holds {cached} answers, reused only for requests identical to this run's with the same model "
                "settings and weights")
    return (f"resuming {run_dir}: {cached} answers are in its request cache (reused for requests identical to this "
            "run's with the same model settings and weights)")


def cache_summary(stats_extra: Mapping[str, Any]) -> str | None:
    """``request cache: H answers reused, M computed`` from a caching scorer's counters (None: no cache)."""
    if "cache_hits" not in stats_extra:
        return None
    return (f"request cache: {stats_extra['cache_hits']} answers reused, {stats_extra.get('cache_misses', 0)} "
            "computed")
