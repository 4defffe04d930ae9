"""Is the Hub reachable at all? One short question per endpoint and process, so an unreachable Hub fails fast.

Why: huggingface_hub retries a metadata request whose file is not cached 5 times with back-off (about 23 s of
``Retrying in 8s [Retry 5/5]``) even when the host name does not resolve or the port is closed, and transformers
then asks again for every file. A network-level failure (no route, refused connection, unknown host, timeout) does
not heal within seconds, so jbench asks once, remembers the answer for the process, and then either reads the HF
cache only (:func:`cache_only_if_unreachable`) or reports one error. HTTP answers (404, 401, 5xx) mean the Hub *is*
reachable and keep huggingface_hub's own handling.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

log = logging.getLogger(__name__)

#: seconds for the one reachability question (huggingface_hub's HF_HUB_ETAG_TIMEOUT when set lower)
PROBE_TIMEOUT_S = 5.0

_unreachable: dict[str, str] = {}  # endpoint -> why (network-level failure), for this process
_reachable: set[str] = set()


def endpoint() -> str:
    """The Hub endpoint in effect: ``HF_ENDPOINT`` as set now, else huggingface_hub's."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def is_network_error(err: BaseException) -> bool:
    """A failure before any HTTP answer: connection refused, unknown host, no route, timeout, proxy failure."""
    kinds: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module in ("httpx2", "httpx"):
        try:
            kinds.append(__import__(module).TransportError)
        except (ImportError, AttributeError):
            pass
    try:
        import requests

        kinds += [requests.ConnectionError, requests.Timeout]
    except ImportError:
        pass
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:  # huggingface_hub wraps the transport error
        if isinstance(cur, tuple(kinds)):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


def mark_unreachable(err: BaseException, url: str | None = None) -> None:
    """Remember that ``url``'s endpoint (default: the current one) failed at the network level."""
    _unreachable[(url or endpoint()).rstrip("/")] = f"{type(err).__name__}: {err}"


def known_unreachable(url: str | None = None) -> str | None:
    """Why the endpoint was found unreachable in this process (None: not found so, or not asked yet)."""
    return _unreachable.get((url or endpoint()).rstrip("/"))


def unreachable_reason(url: str | None = None) -> str | None:
    """Why the Hub at ``url`` (default: the current endpoint) cannot be reached, or None when it answered. Asked
    once per endpoint and process: a HEAD request without retries and with a short timeout."""
    base = (url or endpoint()).rstrip("/")
    if base in _unreachable:
        return _unreachable[base]
    if base in _reachable:
        return None
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    timeout = min(PROBE_TIMEOUT_S, float(constants.HF_HUB_ETAG_TIMEOUT))
    try:
        get_session().head(base + "/", timeout=timeout, follow_redirects=False)
    except Exception as err:  # noqa: BLE001 - only network-level failures count; anything else is an answer
        if is_network_error(err):
            mark_unreachable(err, base)
            log.info("the Hub at %s is unreachable (%s): using the Hugging Face cache only", base, _unreachable[base])
            return _unreachable[base]
    _reachable.add(base)
    return None


@contextlib.contextmanager
def cache_only_if_unreachable(url: str | None = None) -> Iterator[bool]:
    """While the block runs, huggingface_hub (and transformers through it) read only the local cache when the Hub
    is known to be unreachable, instead of retrying every file. Yields whether it switched."""
    base = (url or endpoint()).rstrip("/")
    if base not in _unreachable:
        yield False
        return
    from huggingface_hub import constants

    before_const, before_env = constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE")
    constants.HF_HUB_OFFLINE = True
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield True
    finally:
        constants.HF_HUB_OFFLINE = before_const
        if before_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before_env


def forget() -> None:
    """Ask again next time (tests; a long-lived process whose network came back)."""
    _unreachable.clear()
    _reachable.clear()
