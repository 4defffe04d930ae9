"""Fetch remote files with maintained libraries: ``huggingface_hub`` for the Hub, ``pooch`` for plain URLs.

Why two: Hub files need what users already configured for the Hub (``HF_TOKEN`` or ``hf auth login``,
``HF_ENDPOINT``, the shared HF cache, revisions, ``HF_HUB_OFFLINE``), which only ``huggingface_hub`` honours;
GitHub raw files and mirrors are plain HTTP, where ``pooch`` gives retries with back-off and a progress bar.
Every failure becomes one :class:`DataError` saying what failed, where, and what to do. Neither function
verifies content: the caller checks checksums and record counts before a file becomes visible.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any

from jbench.data.registry import HubFile
from jbench.errors import DataError
from jbench.version import __version__

RETRIES_ENV = "JBENCH_DOWNLOAD_RETRIES"
DEFAULT_RETRIES = 3
TIMEOUT_S = 60.0
_TRUE = {"1", "ON", "YES", "TRUE"}

log = logging.getLogger(__name__)


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as set now (huggingface_hub reads it once at import; the CLI may be told later)."""
    raw = os.environ.get("HF_HUB_OFFLINE")
    if raw is not None:
        return raw.upper() in _TRUE
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_endpoint() -> str:
    """The Hub endpoint in effect: ``HF_ENDPOINT`` as set now, else huggingface_hub's."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def tqdm_class(progress: bool) -> Any:
    """A plain tqdm class (bar on stderr) or a disabled one: jbench, not the library's globals, decides."""
    from tqdm.auto import tqdm

    return tqdm if progress else functools.partial(tqdm, disable=True)


OFFLINE_FIX = ("allow downloads for this command: HF_HUB_OFFLINE=0 jbench ... (the Makefile exports "
               "HF_HUB_OFFLINE=1 by default: pass `HF_HUB_OFFLINE=0` to make), or copy the files in by hand")
ACCESS_FIX = ("check the repository name and revision; for a private or gated repository accept its terms on the "
              "Hub and log in (`hf auth login`) or set HF_TOKEN")


def cache_only() -> bool:
    """Read only the HF cache: HF_HUB_OFFLINE=1, or the Hub found unreachable by one short question (huggingface_hub
    would otherwise retry each uncached file 5 times with back-off before failing)."""
    if hub_offline():
        return True
    from jbench.hub_reach import unreachable_reason

    return unreachable_reason(hub_endpoint()) is not None


def hub_error(err: Exception, what: str, where: str) -> DataError:
    """Translate a huggingface_hub exception into one user-facing DataError."""
    from huggingface_hub import errors as hf

    if isinstance(err, hf.GatedRepoError):
        return DataError(f"{what}: the repository is gated and this token has no access", where=where, fix=ACCESS_FIX)
    if isinstance(err, hf.RepositoryNotFoundError):
        return DataError(f"{what}: repository not found (or private without a valid token)", where=where,
                         fix=ACCESS_FIX)
    if isinstance(err, hf.RevisionNotFoundError):
        return DataError(f"{what}: revision not found", where=where, fix=ACCESS_FIX)
    if isinstance(err, hf.RemoteEntryNotFoundError):
        return DataError(f"{what}: file not found in the repository", where=where,
                         fix="check the file name and revision on the Hub")
    if isinstance(err, (hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled)):
        if hub_offline():
            return DataError(f"{what}: not in the Hugging Face cache, and HF_HUB_OFFLINE=1 forbids downloading it",
                             where=where, fix=OFFLINE_FIX)
        from jbench.hub_reach import known_unreachable

        down = known_unreachable(hub_endpoint())
        return DataError(f"{what}: cannot reach the Hub at {hub_endpoint()}" + (f" ({down})" if down else "") +
                         ", and it is not in the Hugging Face cache", where=where,
                         fix="check your network, proxy or HF_ENDPOINT, then retry")
    if isinstance(err, hf.HfHubHTTPError):
        status = err.response.status_code if err.response is not None else "?"
        return DataError(f"{what}: Hub request failed (HTTP {status})", where=where,
                         fix="retry later; if it persists check HF_ENDPOINT and your token")
    return DataError(f"{what}: {type(err).__name__}: {err}", where=where,
                     fix="check your network, proxy or HF_ENDPOINT, then retry")


def fetch_hub_file(hub: HubFile, *, force: bool = False, progress: bool = False) -> Path:
    """The file's path in the HF cache (downloaded first unless cached). Token, endpoint, cache and offline mode
    are huggingface_hub's own settings, read the way every HF tool reads them."""
    from huggingface_hub import hf_hub_download

    offline = cache_only()
    try:
        path = hf_hub_download(hub.repo_id, hub.filename, repo_type=hub.repo_type, revision=hub.revision,
                               endpoint=hub_endpoint(), force_download=force and not offline,
                               local_files_only=offline, library_name="jbench", library_version=__version__,
                               tqdm_class=tqdm_class(progress))
    except Exception as err:  # noqa: BLE001 - every library failure becomes one DataError
        raise hub_error(err, f"cannot download {hub.filename}", hub.describe()) from err
    return Path(path)


def download_retries() -> int:
    """Extra attempts after a failed plain-URL download (``$JBENCH_DOWNLOAD_RETRIES``, default 3)."""
    raw = os.environ.get(RETRIES_ENV)
    if raw is None:
        return DEFAULT_RETRIES
    if not raw.isdigit():
        raise DataError(f"{RETRIES_ENV} must be a whole number, not {raw!r}", where=f"${RETRIES_ENV}",
                        fix=f"e.g. {RETRIES_ENV}=3, or unset it")
    return int(raw)


class _ClientError(Exception):
    """An HTTP 4xx answer (other than 429): retrying cannot help, so it must not look like a transient failure to
    pooch, which retries every ``requests`` exception."""

    def __init__(self, err: Exception) -> None:
        super().__init__(str(err))
        self.err = err


def fetch_url(url: str, dest_dir: Path, fname: str, *, progress: bool = False) -> Path:
    """Download ``url`` to ``dest_dir/fname`` with pooch: retries with back-off (not after a 4xx answer), a progress
    bar, and a temporary name until the transfer completed (pooch moves it into place only then)."""
    import pooch
    import requests

    fetcher = pooch.create(path=dest_dir, base_url="", registry={fname: None}, urls={fname: url},
                           retry_if_failed=download_retries())
    http = pooch.HTTPDownloader(progressbar=progress, timeout=TIMEOUT_S,
                                headers={"User-Agent": f"jbench/{__version__}"})

    def downloader(url: str, output_file: Any, pooch_obj: Any) -> None:
        try:
            http(url, output_file, pooch_obj)
        except requests.HTTPError as err:
            status = err.response.status_code if err.response is not None else 0
            if 400 <= status < 500 and status != 429:
                raise _ClientError(err) from err
            raise

    pooch.get_logger().setLevel(logging.WARNING)  # its INFO lines name temporary files; the bar shows progress
    try:
        return Path(fetcher.fetch(fname, downloader=downloader))
    except (_ClientError, requests.HTTPError) as err:
        http_err = err.err if isinstance(err, _ClientError) else err
        resp = getattr(http_err, "response", None)
        status = f"HTTP {resp.status_code} {resp.reason}" if resp is not None else str(http_err)
        raise DataError(f"download failed: {status}", where=url,
                        fix="check the URL / mirror (--mirror or JBENCH_DATA_MIRROR) or fetch the file by hand"
                        ) from err
    except (requests.RequestException, OSError) as err:
        raise DataError(f"download failed: {type(err).__name__}: {err}", where=url,
                        fix="check your network or use a mirror (--mirror / JBENCH_DATA_MIRROR)") from err
