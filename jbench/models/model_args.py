"""``--model-args k=v,...`` and ``--batch-size auto|auto:N|N``: parsed the way lm-evaluation-harness users write
them, checked against what jbench sets itself, and turned into the keyword arguments of a backend's loader.

Why a module of its own: these strings are user input, so every mistake must become one clear
:class:`~jbench.errors.JBenchError` before any weights load, and the parsed values are stored in the run plan and
in results.json (and so in the request cache's key) -- they must be JSON-stable: a value read back from run.json
has to equal the value parsed from the command line, or a comparison would never reuse its runs.

Value parsing follows ``lm_eval.utils.handle_arg_string``: ``true``/``false`` (any case) -> bool, ``none`` -> None,
digits -> int, anything ``float()`` reads -> float, quoted text -> the text, else the text itself. jbench adds
Python literals for dicts and lists (``max_memory={0:'20GiB',cpu:'60GiB'}``): commas inside ``{}``, ``[]``,
``()`` or quotes do not split arguments, and bare words inside the braces are read as strings.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any, Mapping, Sequence

from jbench.errors import JBenchError, ModelError

__all__ = ["CONFLICTS", "batch_record", "check_model_args", "format_model_args", "fold_model_args",
           "from_pretrained_kwargs", "model_from_args", "parse_batch_size", "parse_model_args", "requested_batch_size",
           "resolve_model_options"]

#: keys jbench sets itself -> the jbench option that sets them (a model argument must never silently override one)
CONFLICTS: dict[str, str] = {
    "pretrained": "--model (or pretrained= alone, without --model)", "model": "--model", "model_path": "--model",
    "dtype": "--variant fp32|fp16|bf16|auto (jbench compare: --original)",
    "torch_dtype": "--variant fp32|fp16|bf16|auto (jbench compare: --original)",
    "device": "--device",
    "batch_size": "--batch-size", "max_batch_size": "--batch-size auto:N",
    "trust_remote_code": "--trust-remote-code",
    "use_fast": "--use-fast/--no-use-fast", "use_fast_tokenizer": "--use-fast/--no-use-fast",
    "load_in_8bit": "--variant bnb8 (or compare --variants bnb8)",
    "load_in_4bit": "--variant bnb4 (or compare --variants bnb4)",
    "quantization_config": "--variant (bnb8, bnb4, int8, int4, gptq, awq or gguf)",
    "config": "--model (jbench reads the checkpoint's own config.json)",
}
#: lm-eval ``hf`` model arguments that are not ``from_pretrained`` arguments, with what to use in jbench instead
LMEVAL_ONLY: dict[str, str] = {
    "parallelize": "device_map=auto (and max_memory={...}) in --model-args",
    "tokenizer": "jbench always uses the model's own tokenizer (compare runs: the original's)",
    "backend": "--backend hf|vllm picks jbench's engine (lm-eval's causal/seq2seq: jbench scores causal LMs only)",
    "peft": "merge the adapter into the model and pass the merged folder as --model",
    "delta": "merge the delta into the model and pass the merged folder as --model",
    "autogptq": "--variant gptq", "gptqmodel": "--variant gptq",
    "add_bos_token": "a model preset (jbench presets) or --prompt-version",
    "logits_cache": "jbench's request cache (--cache/--no-cache)",
}
#: llama.cpp ``Llama(...)`` arguments jbench sets itself for the gguf variant
GGUF_CONFLICTS: dict[str, str] = {
    "model_path": "--model", "n_ctx": "max_length=N in --model-args", "logits_all": "nothing: jbench needs every "
    "position's logits", "type_k": "the gguf variant's extra kv_type", "type_v": "the gguf variant's extra kv_type",
    "n_ubatch": "n_batch=N in --model-args (jbench keeps n_ubatch equal to it)",
}
#: model arguments jbench folds into its own fields (they are not passed through): key -> ModelSpec field
FOLDED = {"revision": "revision", "max_length": "max_length"}

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_BATCH = re.compile(r"(auto)(?::(.*))?|(.*)")


def split_top_level(text: str) -> list[str]:
    """Split at commas outside brackets and quotes (lm-eval splits at every comma; a dict value needs more)."""
    parts, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "{[(":
            depth += 1
        elif ch in "}])":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return parts


def parse_value(raw: str) -> Any:
    """One value, as lm-eval's ``handle_arg_string`` reads it, plus dict/list literals."""
    arg = raw.strip()
    if len(arg) >= 2 and arg[0] == arg[-1] and arg[0] in "'\"":
        return arg[1:-1]
    low = arg.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    if arg.lstrip("+-").isdigit():
        return int(arg)
    if arg[:1] and arg[0] in "{[":
        # bare words inside the braces (cpu, disk, auto) are read as strings, as a shell user would write them
        quoted = re.sub(r"""('[^']*'|"[^"]*")|\b([A-Za-z_][\w.-]*)\b""",
                        lambda m: m.group(1) or (m.group(2) if m.group(2) in ("True", "False", "None")
                                                 else repr(m.group(2))), arg)
        value = ast.literal_eval(quoted)
        return json.loads(json.dumps(value))  # JSON-stable: int dict keys become strings, tuples lists
    try:
        return float(arg)
    except ValueError:
        return arg


def parse_model_args(text: str | Mapping[str, Any] | Sequence[str] | None, *,
                     flag: str = "--model-args") -> dict[str, Any]:
    """``"k=v,k2=v2"`` (or a mapping, from Python; or a list of such strings, one per repeated flag) -> a JSON-stable
    dict; a malformed item is a :class:`ModelError` naming it.

    Repeated flags (``--model-args a=1 --model-args b=2``) are merged; a key they give with two different values is
    a :class:`ModelError` -- never a silent "last one wins"."""
    if text is None:
        return {}
    if isinstance(text, (list, tuple)):
        merged: dict[str, Any] = {}
        for part in text:
            for key, value in parse_model_args(part, flag=flag).items():
                if key in merged and merged[key] != value:
                    raise ModelError(f"{flag} is given twice with different values for {key}: "
                                     f"{format_model_args({key: merged[key]})} and {format_model_args({key: value})}",
                                     where=" ".join(f"{flag} {p}" for p in text), fix=f"give {key} once")
                merged[key] = value
        return merged
    if isinstance(text, Mapping):
        items = dict(text)
    else:
        items = {}
        for part in split_top_level(str(text)):
            if not part.strip():
                continue
            key, sep, raw = part.partition("=")
            key = key.strip()
            if not sep or not _KEY.fullmatch(key):
                raise ModelError(f"{flag} item {part.strip()!r} is not KEY=VALUE", where=f"{flag} {text}",
                                 fix="write comma-separated key=value pairs, e.g. "
                                     "attn_implementation=eager,max_memory={0:'20GiB'}")
            if key in items:
                raise ModelError(f"{flag} gives {key} twice", where=f"{flag} {text}", fix=f"give {key} once")
            try:
                items[key] = parse_value(raw)
            except (ValueError, SyntaxError, TypeError) as err:
                raise ModelError(f"{flag} {key}: cannot read {raw.strip()!r} as a value ({err})",
                                 where=f"{flag} {text}",
                                 fix="dicts and lists are Python literals, e.g. max_memory={0:'20GiB',cpu:'60GiB'}"
                                 ) from err
    try:
        return json.loads(json.dumps(items, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise ModelError(f"{flag}: the values must be JSON-representable ({err})", where=flag,
                         fix="use strings, numbers, booleans, None, lists and dicts") from err


def fold_model_args(args: dict[str, Any], *, revision: str | None,
                    max_length: int | None = None) -> tuple[dict[str, Any], dict[str, Any], list[JBenchError]]:
    """Move ``revision`` and ``max_length`` out of the model arguments into jbench's own fields.

    Returns (remaining model arguments, {field: value} for the ModelSpec, problems). The same setting given two
    different ways (``--revision a`` and ``revision=b``) is a problem, never a silent choice."""
    rest = dict(args)
    fields: dict[str, Any] = {"revision": revision, "max_length": max_length}
    problems: list[JBenchError] = []
    for key, field in FOLDED.items():
        if key not in rest:
            continue
        value = rest.pop(key)
        if field == "max_length" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            problems.append(ModelError(f"--model-args max_length must be a positive integer, got {value!r}",
                                       where=f"--model-args max_length={value}", fix="e.g. max_length=2048"))
            continue
        if field == "revision":
            value = None if value is None else str(value)
        if fields[field] is not None and fields[field] != value:
            problems.append(ModelError(f"the {key} is given twice: --{key.replace('_', '-')} {fields[field]} and "
                                       f"--model-args {key}={value}", where=f"--model-args {key}={value}",
                                       fix=f"give the {key} once"))
            continue
        fields[field] = value
    return rest, fields, problems


def check_model_args(args: Mapping[str, Any], variant: str) -> list[JBenchError]:
    """Keys jbench sets itself (or that mean something else here) -> one problem each, naming the jbench option."""
    problems: list[JBenchError] = []
    table = {**CONFLICTS, **(GGUF_CONFLICTS if variant == "gguf" else {})}
    quantized = variant not in ("fp32", "fp16", "bf16", "auto", "gguf")
    for key, value in args.items():
        if key in table:
            problems.append(ModelError(f"--model-args {key} is set by jbench itself", where=f"--model-args {key}="
                                       f"{value}", fix=f"use {table[key]} instead"))
        elif key in LMEVAL_ONLY:
            problems.append(ModelError(f"--model-args {key} is an lm-eval option, not a loader argument",
                                       where=f"--model-args {key}={value}", fix=f"in jbench: {LMEVAL_ONLY[key]}"))
        elif key in ("device_map",) and quantized:
            problems.append(ModelError(f"--model-args device_map cannot apply to the {variant} variant (jbench "
                                       "places quantized models itself)", where=f"--model-args device_map={value}",
                                       fix="use --device"))
    return problems


def from_pretrained_kwargs(args: Mapping[str, Any]) -> dict[str, Any]:
    """The model arguments as ``from_pretrained`` takes them: ``max_memory`` GPU indices back to ints (JSON
    stored them as strings)."""
    out = dict(args)
    mm = out.get("max_memory")
    if isinstance(mm, dict):
        out["max_memory"] = {int(k) if isinstance(k, str) and k.isdigit() else k: v for k, v in mm.items()}
    return out


def format_model_args(args: Mapping[str, Any]) -> str:
    """``k=v,...`` as lm-eval's ``model_args`` string shows it (dict and list values as compact literals)."""
    def fmt(v: Any) -> str:
        return json.dumps(v, separators=(",", ":"), ensure_ascii=False) if isinstance(v, (dict, list)) else str(v)

    return ",".join(f"{k}={fmt(v)}" for k, v in args.items())


def parse_batch_size(value: int | str | None) -> tuple[int | None, int | None]:
    """``--batch-size``: None or ``auto`` -> (None, None), ``auto:N`` -> (None, N), ``N`` -> (N, None), as
    (fixed rows per forward, cap on the automatic size). Anything else is a :class:`ModelError`."""
    if value is None:
        return None, None
    if isinstance(value, bool):
        raise ModelError(f"--batch-size must be auto, auto:N or N, got {value!r}", where="--batch-size")
    if isinstance(value, int):
        return _positive(value, str(value)), None
    text = str(value).strip()
    m = _BATCH.fullmatch(text.lower())
    assert m is not None  # the last alternative matches anything
    if m.group(1):
        if m.group(2) is None:
            return None, None
        if not m.group(2).isdigit():
            raise ModelError(f"--batch-size {text}: N in auto:N must be a positive integer", where=f"--batch-size "
                             f"{text}", fix="e.g. --batch-size auto:16 (automatic, at most 16 rows per forward)")
        return None, _positive(int(m.group(2)), text)
    if text.lstrip("+-").isdigit():
        return _positive(int(text), text), None
    raise ModelError(f"--batch-size must be auto, auto:N or a positive integer, got {text!r}",
                     where=f"--batch-size {text}", fix="e.g. --batch-size auto, --batch-size auto:16 or --batch-size 8")


def _positive(n: int, text: str) -> int:
    if n < 1:
        raise ModelError(f"--batch-size must be at least 1, got {text}", where=f"--batch-size {text}",
                         fix="omit it or pass auto (the size is chosen automatically), or give a positive integer")
    return n


def requested_batch_size(batch_size: int | None, max_batch_size: int | None) -> str | int:
    """The ``--batch-size`` setting a run asked for, as written on the command line."""
    if batch_size is not None:
        return batch_size
    return "auto" if max_batch_size is None else f"auto:{max_batch_size}"


def resolve_model_options(model: str | None, model_args: str | Sequence[str] | Mapping[str, Any] | None,
                          revision: str | None, batch_size: int | str | None) -> tuple[dict[str, Any], list[JBenchError]]:
    """``--model-args``, ``--revision`` and ``--batch-size`` as ModelSpec fields (``model_args``, ``revision``,
    ``max_length``, ``batch_size``, ``max_batch_size``), with every problem found (for the one validation step)."""
    from jbench.models.hub_revision import check_revision

    problems: list[JBenchError] = []
    try:
        parsed = parse_model_args(model_args)
    except JBenchError as err:
        problems.append(err)
        parsed = {}
    if parsed.get("pretrained") is not None and str(parsed["pretrained"]) == str(model):
        parsed.pop("pretrained")  # lm-eval's way of naming the model (see model_from_args)
    rest, fields, more = fold_model_args(parsed, revision=revision)
    problems += more + check_revision(model, fields["revision"])
    try:
        fields["batch_size"], fields["max_batch_size"] = parse_batch_size(batch_size)
    except JBenchError as err:
        problems.append(err)
        fields["batch_size"], fields["max_batch_size"] = None, None
    return {**fields, "model_args": rest}, problems


def batch_record(batch_size: int | None, max_batch_size: int | None, scorer: Any) -> dict[str, Any]:
    """results.json ``config.batch``: the setting asked for and what the run actually did -- the most rows one
    forward held and the cap out-of-memory retries left (None: the backend does not batch rows, e.g. llama.cpp,
    or every answer came from the request cache)."""
    stats = scorer.stats()
    if batch_size is not None:
        rule = f"fixed: at most {batch_size} rows per forward"
    else:
        rule = ("automatic: rows per forward from the device's total memory, the model's size and shape and each "
                "batch's sequence lengths (never the free memory)")
        rule += f", at most {max_batch_size}" if max_batch_size is not None else ""
    largest = getattr(scorer, "largest_batch", None)
    return {"requested": requested_batch_size(batch_size, max_batch_size), "rule": rule,
            "largest_forward_rows": largest or None, "oom_batch_cap": stats.oom_batch_cap}


def model_from_args(model: str | None, model_args: str | Sequence[str] | Mapping[str, Any] | None) -> str | None:
    """lm-eval names the model inside its model arguments (``pretrained=NAME``): with no ``--model``, that is the
    model. A different ``--model`` as well is refused later (:func:`check_model_args`)."""
    try:
        pretrained = parse_model_args(model_args).get("pretrained")
    except JBenchError:
        return model  # reported by resolve_model_options
    return str(pretrained) if model is None and pretrained else model
