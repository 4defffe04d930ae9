"""``--wandb-args``: parse and check the ``wandb.init`` arguments *before* any model loads.

Why: a W&B problem used to surface only after the whole evaluation (``config={'a':1}`` was passed on as a config
*file* name, and a missing login failed in ``wandb.init``), wasting the model time. Here every problem that can be
known up front is one :class:`WandbError` (exit 2) naming the key and the fix:

* the syntax is lm-eval's ``key=value,key=value`` (``true``/``false``/``none``, numbers), except that a comma inside
  ``{...}``, ``[...]`` or quotes does not split, so ``config={'a':1,'b':2}`` and ``tags=['x','y']`` work;
* every key must be a ``wandb.init`` parameter, and the known ones must have a usable type: ``config`` a dict
  literal or the path of an existing file, ``tags`` a list of strings (or one string), ``mode`` one of wandb's
  modes, flags booleans, names strings (``name=123`` stays the string ``"123"``);
* unless W&B is offline or disabled (``WANDB_MODE`` or ``mode=``), an API key must be available the way wandb
  looks for one (``WANDB_API_KEY``, ``WANDB_IDENTITY_TOKEN_FILE``, or the netrc entry ``wandb login`` writes). No
  network is used: a key that is present but wrong still fails at the end, with the results already stored.
"""

from __future__ import annotations

import ast
import inspect
import logging
import os
from pathlib import Path
from typing import Any

from jbench.errors import JBenchError

__all__ = ["INSTALL_HINT", "WandbError", "check_wandb_credentials", "import_wandb", "parse_wandb_args"]

log = logging.getLogger(__name__)
INSTALL_HINT = "pip install 'jbench[wandb]' (or pip install wandb)"
EXAMPLE = "--wandb-args project=jbench,name=my-run,job_type=eval"
STR_KEYS = ("entity", "project", "dir", "id", "name", "notes", "group", "job_type", "resume_from", "fork_from")
BOOL_KEYS = ("allow_val_change", "force", "save_code", "tensorboard", "sync_tensorboard", "monitor_gym")
MODES = ("online", "offline", "disabled", "shared")
OFFLINE_MODES = ("offline", "disabled", "dryrun")
RESUME = ("allow", "never", "must", "auto")
REINIT = ("default", "return_previous", "finish_previous", "create_new")


class WandbError(JBenchError):
    """--wandb-args cannot be used: wandb is missing, the argument string is malformed, or logging failed."""


def import_wandb() -> Any:
    try:
        import wandb
    except ImportError as err:
        raise WandbError("--wandb-args needs the wandb package, which is not installed", where="--wandb-args",
                         fix=INSTALL_HINT) from err
    return wandb


def _value(text: str) -> Any:
    """lm-eval's ``handle_arg_string``: true/false/none, integers, floats, else the string."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    if text.lstrip("+-").isdigit() and text not in ("+", "-"):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def _items(text: str) -> list[str]:
    """Split on commas outside brackets and quotes (``config={'a':1,'b':2}`` is one item), as --model-args does."""
    from jbench.models.model_args import split_top_level

    return [p.strip() for p in split_top_level(text) if p.strip()]


def _literal(key: str, raw: str, want: str, where: str) -> Any:
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError) as err:
        raise WandbError(f"--wandb-args: {key}={raw} is not a valid {want} literal ({err.__class__.__name__})",
                         where=where, fix=f"write e.g. {key}=" + ("{'lr': 0.1}" if want == "dict" else "['a', 'b']")
                                          + " (Python literal syntax: quotes around strings)") from err


def _typed(key: str, raw: str, where: str) -> Any:
    """The value of one known key, checked (unknown keys keep lm-eval's conversion)."""
    def bad(want: str) -> WandbError:
        return WandbError(f"--wandb-args: {key}={raw!s} should be {want}", where=where, fix=f"write e.g. {EXAMPLE}")

    if key in STR_KEYS:
        if not raw:
            raise bad("a non-empty string")
        return raw
    if key in BOOL_KEYS:
        value = _value(raw)
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if key == "mode":
        if raw not in MODES:
            raise bad(f"one of {', '.join(MODES)}")
        return raw
    if key == "resume":
        value = _value(raw)
        if not (isinstance(value, bool) or value in RESUME):
            raise bad(f"true, false or one of {', '.join(RESUME)}")
        return value
    if key == "reinit":
        value = _value(raw)
        if not (isinstance(value, bool) or value in REINIT):
            raise bad(f"true, false or one of {', '.join(REINIT)}")
        return value
    if key in ("config", "settings"):
        if raw.startswith("{"):
            value = _literal(key, raw, "dict", where)
            if not isinstance(value, dict):
                raise bad("a dict literal")
            return value
        if key == "config" and raw and Path(raw).is_file():
            return raw  # wandb reads a config file (yaml) by path
        raise WandbError(f"--wandb-args: config={raw} is neither a dict literal nor an existing config file"
                         if key == "config" else f"--wandb-args: settings={raw} should be a dict literal",
                         where=where, fix=f"write {key}={{'lr': 0.1, 'note': 'x'}} (quotes around strings)"
                                          + (" or the path of a YAML config file that exists" if key == "config"
                                             else ""))
    if key in ("tags", "config_exclude_keys", "config_include_keys"):
        value = _literal(key, raw, "list", where) if raw[:1] in ("[", "(", "{") else [raw]
        if not (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)):
            raise bad("a list of strings, e.g. ['a', 'b'], or one string")
        return list(value)
    return _value(raw)


def _netrc_key(wandb: Any, host: str) -> str | None:
    """The key ``wandb login`` saved for ``host`` (wandb's own netrc reader; the stdlib's if that moved)."""
    try:
        from wandb.sdk.lib import wbauth

        return wbauth.read_netrc_auth(host=host)
    except ImportError:
        import netrc
        from urllib.parse import urlsplit

        try:
            entry = netrc.netrc(os.environ.get("NETRC")).authenticators(urlsplit(host).hostname or host)
        except (OSError, netrc.NetrcParseError):
            return None
        return entry[2] if entry else None
    except Exception as err:  # noqa: BLE001 - wandb's AuthenticationError: a malformed key in the netrc
        raise WandbError(f"the W&B API key in your netrc file is not usable: {err}", where="~/.netrc",
                         fix="run `wandb login --relogin` (or set WANDB_API_KEY)") from err


def check_wandb_credentials(args: dict[str, Any], wandb: Any | None = None) -> None:
    """Unless W&B runs offline or disabled, an API key must be available; no network is used."""
    mode = str(args.get("mode") or os.environ.get("WANDB_MODE") or "online").lower()
    if mode in OFFLINE_MODES or os.environ.get("WANDB_DISABLED", "").lower() in ("true", "1"):
        return
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return
    wandb = wandb or import_wandb()
    host = os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
    try:
        settings = wandb.Settings()
        host = os.environ.get("WANDB_BASE_URL") or settings.base_url or host
        if getattr(settings, "api_key", None):
            return
    except Exception as err:  # noqa: BLE001 - a bad WANDB_* variable; wandb.init would fail the same way
        raise WandbError(f"wandb cannot read its settings: {err}", where="WANDB_* environment variables",
                         fix="fix or unset the WANDB_* variable it names") from err
    if _netrc_key(wandb, host):
        return
    raise WandbError(f"--wandb-args: W&B is in {mode} mode but no API key is available (WANDB_API_KEY is not set and "
                     f"no netrc entry for {host})", where="WANDB_API_KEY",
                     fix="run `wandb login` (or export WANDB_API_KEY=...), or log locally with WANDB_MODE=offline "
                         "(or mode=offline in --wandb-args) and `wandb sync` the run later")


def parse_wandb_args(text: str) -> dict[str, Any]:
    """``project=jbench,name=run1,job_type=eval`` -> checked ``wandb.init`` keyword arguments.

    Raises :class:`WandbError` (exit 2) when wandb is not installed, an item has no ``=``, a key is not a
    ``wandb.init`` parameter or has an unusable value, or no API key is available while online, so the mistake
    shows before the model loads."""
    wandb = import_wandb()
    where = f"--wandb-args {text}"
    raw: dict[str, str] = {}
    for item in _items(text):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise WandbError(f"--wandb-args item {item!r} is not key=value", where=where, fix=f"write e.g. {EXAMPLE}")
        raw[key.strip()] = value.strip()
    try:
        params = inspect.signature(wandb.init).parameters
    except (TypeError, ValueError):  # pragma: no cover - a wandb whose init hides its signature
        params = {}
    if params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(k for k in raw if k not in params)
        if unknown:
            raise WandbError(f"--wandb-args: {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not "
                             "wandb.init argument(s)", where=where,
                             fix="use wandb.init's parameters, e.g. project, entity, name, job_type, group, tags, "
                                 "mode, dir, config")
    args = {key: _typed(key, value, where) for key, value in raw.items()}
    check_wandb_credentials(args, wandb)
    log.debug("wandb.init arguments: %s", args)
    return args
