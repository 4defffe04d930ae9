"""The commit a Hub model id resolves to (``--revision``, default ``main``), for the run record and the weights
fingerprint.

Why: a Hub id names a moving target -- ``main`` today is not ``main`` next month -- so a cached answer or a stored
result is only tied to the weights that produced it if the resolved commit is part of the model's identity. A local
folder is fingerprinted by its files instead (:func:`jbench.models.load.weights_fingerprint`).

Resolution asks the Hub when it is reachable (``HfApi.model_info``) and otherwise reads huggingface_hub's local
cache (``models--owner--name/refs/<revision>`` -> ``snapshots/<commit>/``), which is what transformers itself
loads offline. The model is then loaded at that commit, so the recorded commit is the one that was scored.
When the Hub cannot be reached at all (no network, unknown host), an uncached model is one error at once, and a
cached one loads from the cache only (:func:`jbench.hub_reach.cache_only_if_unreachable`) instead of having
huggingface_hub retry each file with back-off.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

from jbench.errors import JBenchError, ModelError

log = logging.getLogger(__name__)

__all__ = ["check_revision", "hub_fingerprint", "resolve_commit"]

_COMMIT = re.compile(r"[0-9a-f]{40}")


def _offline() -> bool:
    from huggingface_hub import constants

    env = any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
              for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return env or bool(constants.HF_HUB_OFFLINE)


def _from_cache(repo_id: str, revision: str) -> str | None:
    """The commit ``revision`` points to in the local huggingface_hub cache (None: not cached)."""
    from huggingface_hub import constants

    cache = Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE)
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    if _COMMIT.fullmatch(revision):
        return revision if (folder / "snapshots" / revision).is_dir() else None
    ref = folder / "refs" / revision
    try:
        commit = ref.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return commit if _COMMIT.fullmatch(commit) and (folder / "snapshots" / commit).is_dir() else None


def _from_hub(repo_id: str, revision: str) -> str | None:
    """The commit the Hub reports for ``revision`` (None: unreachable or unknown). One request, no retries; a
    network-level failure marks the endpoint unreachable for the process (see :mod:`jbench.hub_reach`)."""
    from jbench.hub_reach import endpoint, is_network_error, known_unreachable, mark_unreachable

    if known_unreachable():
        return None
    try:
        from huggingface_hub import HfApi

        return HfApi(endpoint=endpoint()).model_info(repo_id, revision=revision, timeout=10).sha
    except Exception as err:  # noqa: BLE001 - no network, gated repo, unknown revision: fall back to the cache
        if is_network_error(err):
            mark_unreachable(err)
        log.info("cannot ask the Hub for %s@%s (%s); using the local cache", repo_id, revision, err)
        return None


def resolve_commit(repo_id: str, revision: str | None, *, required: bool) -> str | None:
    """The 40-hex commit of ``repo_id`` at ``revision`` (``main`` when None).

    ``required`` (an explicit ``--revision``): an unresolvable revision is a :class:`ModelError`; otherwise it is
    logged and None is returned (the loader then reports a missing model in its own words)."""
    from jbench.hub_reach import endpoint, known_unreachable

    rev = revision or "main"
    commit = None if _offline() else _from_hub(repo_id, rev)
    commit = commit or _from_cache(repo_id, rev)
    down = None if _offline() else known_unreachable()
    if down is not None:
        if commit is None:  # fail now: loading would retry every file for half a minute, then fail anyway
            raise ModelError(f"cannot reach the Hub at {endpoint()} ({down}), and {repo_id}@{rev} is not in the "
                             "local Hugging Face cache", where=f"--model {repo_id}",
                             fix="check your network, proxy or HF_ENDPOINT; or download the model once with network "
                                 f"access (hf download {repo_id}{' --revision ' + rev if revision else ''}), or pass "
                                 "a local model folder")
        log.info("the Hub at %s is unreachable; %s@%s loads from the local cache (%s)", endpoint(), repo_id, rev,
                 commit)
    if commit is None and required:
        raise ModelError(f"revision {rev!r} of {repo_id} is neither reachable on the Hub nor in the local cache",
                         where=f"--model {repo_id} --revision {rev}",
                         fix="check the branch, tag or commit name, or download that revision once with network "
                             "access (huggingface-cli download REPO --revision REV)")
    if commit is None:
        log.warning("cannot resolve %s@%s to a commit: the run records no weights fingerprint", repo_id, rev)
    return commit


def hub_fingerprint(repo_id: str, commit: str) -> str:
    """The weights fingerprint of a Hub model at a commit: the commit names the content exactly."""
    return hashlib.sha256(f"hub:{repo_id}@{commit}".encode()).hexdigest()


def check_revision(model: str | None, revision: str | None) -> list[JBenchError]:
    """``--revision`` applies to Hub ids only: a local folder or the embedded model has no revisions."""
    if revision is None:
        return []
    if model in (None, "tiny"):
        return [ModelError("--revision cannot apply to the embedded tiny model", where=f"--revision {revision}",
                           fix="drop --revision, or pass --model OWNER/NAME (a Hub id)")]
    if Path(str(model)).expanduser().exists():
        return [ModelError(f"--revision cannot apply to a local folder ({model}): it has no revisions",
                           where=f"--model {model} --revision {revision}",
                           fix="drop --revision (jbench fingerprints a local folder's files), or pass the Hub id")]
    try:  # before anything loads: an unknown branch or tag is the user's to fix
        resolve_commit(str(model), revision, required=True)
    except JBenchError as err:
        return [err]
    return []
