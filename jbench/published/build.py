"""Build the published-numbers registry (``published.json``) from the raw inputs: the reference harness's
``models/`` folder (``result*.json`` + ``harness*.sh``) and ``cards.md``.

Why a builder and not a hand-written file: the raw files are the provenance. Every number in the registry can be
traced to one file at one commit (or one card URL), and ``tests/test_published.py`` rebuilds the registry from the
raw files to prove the shipped copy is in sync. Run ``python tools/build_published.py ../shared/published``.

Settings come from the source itself: the task list, shots and model args from the ``harness*.sh`` that wrote the
result file (its ``--tasks`` / ``--num_fewshot`` / ``--model_args``), cross-checked against the ``config`` block of
the result file, which records what really ran. When the two disagree the result file wins and a note says so.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path
from typing import Any

from jbench.errors import JBenchError

REFERENCE_REPO = "Stability-AI/lm-evaluation-harness"
REFERENCE_COMMIT = "effdbeaf742e74ea1787871e99272c12146ba346"
REFERENCE_URL = f"https://github.com/{REFERENCE_REPO}/blob/{REFERENCE_COMMIT}/models/"
FAMILIES = ("jcommonsenseqa", "jnli", "marc_ja", "jsquad", "jaqket_v2", "xwinograd_ja", "xlsum_ja", "mgsm")
# Plain task names as the reference registered them before effdbea (spec tasks.md §1.1): name -> the full task.
PLAIN_TASKS = {"jcommonsenseqa": "jcommonsenseqa-1.1-0.1", "jnli": "jnli-1.1-0.2", "marc_ja": "marc_ja-1.1-0.2",
               "jsquad": "jsquad-1.1-0.1", "jaqket_v2": "jaqket_v2-0.1-0.1", "xwinograd_ja": "xwinograd_ja"}
_DTYPES = {"auto": "auto", "float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
           "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}


class BuildError(JBenchError):
    """A raw published file cannot be read or does not say what the registry needs."""


# --------------------------------------------------------------------------------------------------------------
# harness*.sh
# --------------------------------------------------------------------------------------------------------------

def _expand(text: str, env: dict[str, str]) -> str:
    """Shell-style ``$VAR`` / ``${VAR}`` expansion with the script's own assignments; unknown variables stay as
    written (they name a machine-local path, which the registry keeps visible)."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), m.group(0)), text)


def parse_harness(path: Path) -> dict[str, Any]:
    """The ``python main.py ...`` call of a harness script: model, model_args, tasks, num_fewshot, output_path."""
    text = path.read_text(encoding="utf-8").replace("\\\n", " ")
    env: dict[str, str] = {}
    call: list[str] | None = None
    for line in text.splitlines():
        m = re.match(r"\s*([A-Za-z_]\w*)=(.*)$", line)
        if m and "main.py" not in line:
            try:
                words = shlex.split(_expand(m.group(2), env))
            except ValueError:
                words = [m.group(2)]
            env[m.group(1)] = words[0] if words else ""
        elif "main.py" in line:
            words = shlex.split(_expand(line, env).split(">")[0])
            call = words[words.index(next(w for w in words if w.endswith("main.py"))) + 1:]
    if call is None:
        raise BuildError("no `python main.py` call", where=str(path))
    opts: dict[str, str] = {}
    for i, w in enumerate(call):
        if w.startswith("--") and i + 1 < len(call):
            opts[w[2:]] = call[i + 1]
    tasks = [t for t in opts.get("tasks", "").split(",") if t]
    shots = [int(s) for s in opts.get("num_fewshot", "0").split(",")]
    return {"model": opts.get("model"), "model_args": opts.get("model_args"), "tasks": tasks, "num_fewshot": shots,
            "output_path": opts.get("output_path")}


# --------------------------------------------------------------------------------------------------------------
# model args
# --------------------------------------------------------------------------------------------------------------

def parse_model_args(model_args: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in (model_args or "").split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def _bool(value: str | None) -> bool | None:
    return None if value is None else value.strip().lower() == "true"


def settings_from_args(model_args: str, backend: str | None) -> dict[str, Any]:
    """dtype, use_fast, trust_remote_code and quantization as the reference backend applied them: hf-causal loads
    fp32 unless ``torch_dtype`` is given; hf-causal-experimental takes ``dtype``; ``load_in_8bit`` is LLM.int8()."""
    args = parse_model_args(model_args)
    raw = args.get("torch_dtype") or args.get("dtype")
    return {
        "dtype": _DTYPES.get(raw, raw) if raw else "float32",
        "use_fast": _bool(args.get("use_fast")),
        "trust_remote_code": bool(_bool(args.get("trust_remote_code"))),
        "quantization": "bnb8 (load_in_8bit=True)" if _bool(args.get("load_in_8bit")) else None,
        "backend": backend,
    }


def _hub_id(pretrained: str) -> str | None:
    """``org/name`` when ``pretrained`` is a Hub id, None for a machine-local path."""
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", pretrained or "") and not pretrained.startswith(("sft/",)):
        return pretrained
    return None


def _model_id(folder: str, args: dict[str, str], backend: str | None) -> tuple[str, bool]:
    """The id a user looks the numbers up by, and whether it is on the Hub. A local checkpoint gets
    ``jp-stable:<folder>``, except a folder ``<org>/<org>-<name>`` that names its released model (stabilityai)."""
    if backend == "gpt3":
        return f"openai/{args.get('engine', 'gpt3')}", False
    hub = _hub_id(args.get("pretrained", ""))
    if hub:
        return hub, True
    parts = folder.split("/")
    if len(parts) == 2 and parts[1].startswith(parts[0] + "-"):
        return f"{parts[0]}/{parts[1][len(parts[0]) + 1:]}", False
    return f"jp-stable:{folder}", False


# --------------------------------------------------------------------------------------------------------------
# task names and metrics
# --------------------------------------------------------------------------------------------------------------

def split_task(name: str) -> tuple[str, str | None]:
    """``jnli-1.1-0.2`` -> (``jnli``, ``0.2``); plain names get the prompt version they stood for."""
    for fam in sorted(FAMILIES, key=len, reverse=True):
        if name == fam:
            full = PLAIN_TASKS.get(fam)
            return fam, (full.split("-", 2)[2] if full and full.count("-") == 2 else None)
        m = re.fullmatch(re.escape(fam) + r"-(\d+(?:\.\d+)*)-(.+)", name)
        if m:
            return fam, m.group(2)
    raise BuildError(f"unknown task {name!r}", fix="add its family to jbench/published/build.py FAMILIES")


def jbench_task(name: str) -> str | None:
    """The jbench task that runs what the reference called ``name`` (None: jbench has no such task)."""
    from jbench.tasks import all_tasks

    full = PLAIN_TASKS.get(name, name)
    return full if full in all_tasks() else None


#: validation sizes (spec tasks.md §2; JAQKET v2 after the reference's context filter), for numbers without a stderr
VALIDATION_N = {"jcommonsenseqa": 1119, "jnli": 2434, "marc_ja": 5654, "jsquad": 4442, "jaqket_v2": 1164,
                "xwinograd_ja": 959, "mgsm": 250}


def _n_from_stderr(value: float, stderr: float | None) -> int | None:
    """The reference's acc stderr is the sample std / sqrt(n): p(1-p)/(n-1) = se², so n = p(1-p)/se² + 1."""
    if stderr is None or not stderr > 0 or not 0 < value < 1:
        return None
    return int(round(value * (1 - value) / stderr ** 2 + 1))


def _metrics(task: str, raw: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], int | None]:
    out: dict[str, dict[str, Any]] = {}
    n = None
    for key, value in raw.items():
        if key.endswith("_stderr") or key == "details" or not isinstance(value, (int, float)):
            continue
        se = raw.get(key + "_stderr")
        entry: dict[str, Any] = {"value": value}
        if isinstance(se, (int, float)) and math.isfinite(se):
            entry["stderr"] = se
        out[key] = entry
        if key == "acc":
            n = _n_from_stderr(value, entry.get("stderr"))
    return out, n


# --------------------------------------------------------------------------------------------------------------
# result*.json
# --------------------------------------------------------------------------------------------------------------

def _harness_for(result: Path) -> Path | None:
    """``result.json`` <- ``harness.sh``, ``result.X.json`` <- ``harness.X.sh``, ``result_X.json`` <-
    ``harness_X.sh`` (the reference's naming; several ``output_path`` values inside are stale copies)."""
    name = result.name
    if not name.startswith("result"):
        return None
    cand = result.with_name("harness" + name[len("result"):-len(".json")] + ".sh")
    return cand if cand.is_file() else None


def _shots(keys: list[str], config_shots: Any, harness: dict[str, Any] | None) -> tuple[dict[str, int | None],
                                                                                         list[str]]:
    """Shots per result key. The reference writes results grouped by request type, not in --tasks order, so the
    per-task shots come from the harness's --tasks/--num_fewshot, checked against config.num_fewshot."""
    notes: list[str] = []
    if isinstance(config_shots, int):
        return {k: config_shots for k in keys}, notes
    shots = list(config_shots or [])
    if harness is None:
        if len(set(shots)) == 1 and len(shots) == len(keys):
            return {k: shots[0] for k in keys}, notes
        notes.append(f"no harness file: config.num_fewshot {shots} cannot be matched to tasks (the result file "
                     "orders tasks by request type); shots unknown")
        return {k: None for k in keys}, notes
    cli = [PLAIN_TASKS.get(t, t) if t not in keys else t for t in harness["tasks"]]
    hs = harness["num_fewshot"]
    by_task = dict(zip(cli, hs if len(hs) == len(cli) else [hs[0]] * len(cli)))
    if hs == shots[:len(hs)] and len(shots) > len(hs):
        extra = [k for k in keys if k not in by_task]
        if len(extra) == len(shots) - len(hs) == 1:
            by_task[extra[0]] = shots[-1]
            notes.append(f"harness.sh lists {len(hs)} tasks but the result file has {len(shots)}: {extra[0]}'s "
                         f"shots ({shots[-1]}) are the last config.num_fewshot entry")
    elif sorted(hs) == sorted(shots) and hs != shots:
        notes.append(f"config.num_fewshot {shots} is in another order than harness.sh's {hs}; shots follow the "
                     "harness's task names")
    elif hs != shots:
        notes.append(f"harness.sh --num_fewshot {hs} differs from the result file's {shots}; shots unknown")
        return {k: None for k in keys}, notes
    missing = [k for k in keys if k not in by_task]
    if missing:
        notes.append(f"{missing} not in harness.sh --tasks: shots unknown")
    return {k: by_task.get(k) for k in keys}, notes


def result_source(models_dir: Path, result: Path) -> dict[str, Any]:
    """One registry source for one reference result file."""
    rel = result.relative_to(models_dir).as_posix()
    try:
        doc = json.loads(result.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise BuildError(f"cannot read: {err}", where=str(result)) from err
    cfg = doc.get("config") or {}
    harness_path = _harness_for(result)
    harness = parse_harness(harness_path) if harness_path else None
    keys = list(doc.get("results") or {})
    shots, notes = _shots(keys, cfg.get("num_fewshot"), harness)
    backend = cfg.get("model")
    model_args = cfg.get("model_args") or ""
    if harness and harness["model_args"]:
        said = settings_from_args(harness["model_args"], harness["model"] or backend)
        ran = settings_from_args(model_args, backend)
        diff = [k for k in ("dtype", "use_fast", "trust_remote_code", "quantization") if said[k] != ran[k]]
        if diff:
            notes.append(f"harness.sh --model_args {harness['model_args']!r} differ from the result file's "
                         f"{model_args!r} in {', '.join(diff)}; the result file's (what ran) are kept")
    folder = rel.rsplit("/", 1)[0]
    model, on_hub = _model_id(folder, parse_model_args(model_args), backend)
    tasks = []
    for key in keys:
        metrics, n = _metrics(key, doc["results"][key])
        family, pv = split_task(key)
        n = n or VALIDATION_N.get(family)
        tasks.append({"task": key, "family": family, "version": (doc.get("versions") or {}).get(key),
                      "prompt_version": pv, "shots": shots[key], "n": n, "jbench_task": jbench_task(key),
                      "metrics": metrics})
    unknown = ["shots"] if any(t["shots"] is None for t in tasks) else []
    return {
        "id": f"jp-stable:{rel}", "model": model, "on_hub": on_hub, "kind": "reference",
        "title": f"JP-stable {rel}", "url": REFERENCE_URL + rel, "path": f"models/{rel}", "commit": REFERENCE_COMMIT,
        "harness": f"models/{harness_path.relative_to(models_dir).as_posix()}" if harness_path else None,
        "model_args": model_args, **settings_from_args(model_args, backend), "limit": cfg.get("limit"),
        "settings_unknown": unknown, "tasks": tasks, "printed_averages": {}, "notes": notes,
    }


# --------------------------------------------------------------------------------------------------------------
# cards.md
# --------------------------------------------------------------------------------------------------------------

#: What the builder needs to know about each card section that the markdown does not say in machine form: the
#: model ids behind the card's short names, what the card states about settings, and the columns' meaning.
CARDS: dict[str, dict[str, Any]] = {
    "dahara1/ELYZA-japanese-Llama-2-7b-fast-instruct-GPTQ": {
        "layout": "card_table", "model": "dahara1/ELYZA-japanese-Llama-2-7b-fast-instruct-GPTQ",
        "quantization": "GPTQ 4-bit", "unknown": ["shots", "dtype", "use_fast"],
    },
    "rinna/bilingual-gpt-neox-4b-instruction-ppo": {
        "layout": "averages", "org": "rinna", "unknown": ["prompt_version", "shots", "dtype", "use_fast"],
        "columns": {"4-task average": "4-task", "6-task average": "6-task"},
    },
    "Rakuten/RakutenAI-7B-instruct": {
        "layout": "per_task", "unknown": ["prompt_version", "dtype", "use_fast"],
        "models": {"rakuten-ai-7b-instruct": "Rakuten/RakutenAI-7B-instruct",
                   "youri-7b-instruction": "rinna/youri-7b-instruction",
                   "japanese-stablelm-instruct-gamma-7b": "stabilityai/japanese-stablelm-instruct-gamma-7b",
                   "swallow-7b-instruct": "tokyotech-llm/Swallow-7b-instruct-hf",
                   "elyza-japanese-Llama-2-7b-instruct": "elyza/ELYZA-japanese-Llama-2-7b-instruct",
                   "elyza-japanese-Llama-2-7b-fast-instruct": "elyza/ELYZA-japanese-Llama-2-7b-fast-instruct",
                   "nekomata-7b-instruction": "rinna/nekomata-7b-instruction"},
        # column -> (family, metric, shots from the card's "shots:" line, scale of the card's numbers)
        "columns": {"JCS": ("jcommonsenseqa", "acc", 3, 100), "JNLI": ("jnli", "acc", 3, 100),
                    "MARC-ja": ("marc_ja", "acc", 3, 100), "JSQuAD": ("jsquad", "exact_match", 2, 1),
                    "JAQKET v2": ("jaqket_v2", "exact_match", 1, 1), "XLSum-ja": ("xlsum_ja", "rouge2", 1, 1),
                    "xWino": ("xwinograd_ja", "acc", 0, 100), "MGSM": ("mgsm", "acc", 5, 100)},
        "averages": {"7-avg excl. XLSum": "7-task (excl. XLSum)", "Avg": "8-task"},
    },
}


def _sections(text: str) -> list[tuple[str, str, list[list[str]], str]]:
    """(heading, source URL, table rows without the separator, full body) per ``## `` section."""
    out = []
    for block in re.split(r"^## ", text, flags=re.M)[1:]:
        heading, _, body = block.partition("\n")
        m = re.search(r"Source:\s*(\S+)", body)
        rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in body.splitlines()
                if line.strip().startswith("|") and not re.fullmatch(r"\|[-|\s:]+\|", line.strip())]
        out.append((heading.strip(), m.group(1) if m else "", rows, body))
    return out


def _card_key(heading: str) -> str | None:
    return next((k for k in CARDS if heading.startswith(k)), None)


def _card_source(model: str, url: str, card: dict[str, Any], heading: str, body: str) -> dict[str, Any]:
    said = " ".join(body.split("|")[0].split()) if "|" in body else " ".join(body.split())
    return {"id": f"card:{url.rsplit('huggingface.co/', 1)[-1]}#{model}" if model not in url else f"card:{model}",
            "model": model, "on_hub": True, "kind": "card", "title": f"model card: {heading}", "url": url,
            "path": "cards.md", "commit": None, "harness": None, "model_args": None, "dtype": None, "use_fast": None,
            "trust_remote_code": False, "quantization": card.get("quantization"), "backend": None, "limit": None,
            "settings_unknown": list(card["unknown"]), "tasks": [], "printed_averages": {},
            "notes": [f"the card says: {said[:400]}"]}


def _num(cell: str) -> float:
    try:
        return float(cell)
    except ValueError as err:
        raise BuildError(f"not a number: {cell!r}", where="cards.md") from err


def card_sources(cards_md: Path) -> list[dict[str, Any]]:
    """Sources for the numbers in ``cards.md`` (sections without numbers are skipped; an unknown section with a
    table is an error, so a new card cannot be dropped silently)."""
    out: list[dict[str, Any]] = []
    for heading, url, rows, body in _sections(cards_md.read_text(encoding="utf-8")):
        key = _card_key(heading)
        if key is None:
            if rows:
                raise BuildError(f"cards.md section {heading!r} has a table the builder does not know",
                                 where=str(cards_md), fix="describe it in jbench/published/build.py CARDS")
            continue
        card = CARDS[key]
        if card["layout"] == "card_table":
            src = _card_source(card["model"], url, card, heading, body)
            src["id"] = f"card:{card['model']}"
            pv = re.search(r"prompt version ([\d.]+)", body)
            task = None
            for row in rows[1:]:
                name, version, metric, value, stderr = (row + [""] * 5)[:5]
                if name:
                    family, tpv = split_task(name)
                    task = {"task": name, "family": family, "version": _num(version), "prompt_version": tpv,
                            "shots": None, "n": VALIDATION_N.get(family), "jbench_task": jbench_task(name),
                            "metrics": {}}
                    src["tasks"].append(task)
                assert task is not None
                task["metrics"][metric] = {"value": _num(value), **({"stderr": _num(stderr)} if stderr else {})}
            if pv:
                src["notes"].append(f"prompt version {pv.group(1)} (stated by reference to another card)")
            out.append(src)
        elif card["layout"] == "averages":
            header = rows[0]
            for row in rows[1:]:
                model = f"{card['org']}/{row[0]}"
                src = _card_source(model, url, card, heading, body)
                src["id"] = f"card:{key}#{row[0]}"
                src["printed_averages"] = {card["columns"][h]: _num(c) for h, c in zip(header[1:], row[1:])}
                out.append(src)
        else:
            header = rows[0]
            for row in rows[1:]:
                model = card["models"][row[0]]
                src = _card_source(model, url, card, heading, body)
                src["id"] = f"card:{key}#{row[0]}"
                for h, cell in zip(header[1:], row[1:]):
                    if h in card["averages"]:
                        src["printed_averages"][card["averages"][h]] = _num(cell)
                        continue
                    family, metric, shots, scale = card["columns"][h]
                    src["tasks"].append({"task": family, "family": family, "version": None, "prompt_version": None,
                                         "shots": shots, "n": VALIDATION_N.get(family), "jbench_task": None,
                                         "metrics": {metric: {"value": round(_num(cell) / scale, 6)}}})
                out.append(src)
    return out


# --------------------------------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------------------------------

def build_registry(published_dir: Path) -> dict[str, Any]:
    """The whole registry document from ``published_dir`` (``jp-stable-models/`` and ``cards.md``)."""
    models_dir = published_dir / "jp-stable-models"
    cards = published_dir / "cards.md"
    if not models_dir.is_dir() or not cards.is_file():
        raise BuildError("not a published-results folder (needs jp-stable-models/ and cards.md)",
                         where=str(published_dir), fix="pass the path of shared/published")
    results = sorted(p for p in models_dir.rglob("*.json") if "result" in p.name)
    sources = [result_source(models_dir, p) for p in results] + card_sources(cards)
    return {"format": 1, "generated_by": "tools/build_published.py",
            "reference": {"repo": REFERENCE_REPO, "branch": "jp-stable", "commit": REFERENCE_COMMIT},
            "sources": sources}


def dumps(doc: dict[str, Any]) -> str:
    """The file's exact text (one source per line block, stable order) so a rebuild is byte-comparable."""
    return json.dumps(doc, ensure_ascii=False, indent=1, sort_keys=False) + "\n"
