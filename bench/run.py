"""Speed of jbench's HFScorer against lm-eval's ``hf`` backend (HFLM), same machine, same model, same requests.

Why this design (details in bench/README.md):

* **Same requests, same token ids.** Requests are built once by jbench (JP-stable semantics: context and
  continuation tokenized separately, no special tokens, ``[eos]`` for an empty context, generation capped at the
  longest gold answer and stopped on the last token of ``encode("\\n")``). HFLM's public ``loglikelihood`` would
  re-tokenize jointly (``_encode_pair``; with a T5-style tokenizer it even appends ``</s>``), which changes what is
  scored, so lm-eval gets exactly jbench's ids: ``HFLM._loglikelihood_tokens`` for log-likelihoods, and
  ``HFLM.generate_until`` on lm-eval ``Instance``s whose contexts map to jbench's ids (``tok_batch_encode`` is
  overridden; ``eos_token_id`` = the stop id is passed as a generation kwarg, as JP-stable's ``generate`` call did).
  Everything else (sorting, batching, the one-token logits cache, HF ``generate``, stop-string criteria, decoding)
  is lm-eval's own code. Tokenization is timed on both sides.
* **One fresh process per (task, backend)**: ``ru_maxrss`` is then that backend's own peak (imports, model, run),
  and neither backend inherits the other's allocator state. Both load the same weights the same way.
* **Warm-up, then timed runs** (``--repeat``, median): the first forward pays one-time costs (oneDNN primitives,
  allocator growth, jbench's packed-mask probe); the warm-up runs the first document's requests, untimed.
* Wall-clock req/s is reported; CPU seconds (``time.process_time``) are recorded too, because this machine is
  shared and wall time moves with other jobs' load.

Usage: ``python bench/run.py --model neox-100m --tasks jcqa,jnli,marc_ja,xwinograd,jsquad --limit auto``
(``--model tiny``, or a model directory; ``--limit 20`` or ``jcqa=8,jsquad=4``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

#: bench name -> (jbench task name template, shots): the standard JP-stable 8-task shots.
TASKS: dict[str, tuple[str, int]] = {
    "jcqa": ("jcommonsenseqa-1.1-{pv}", 3),
    "jnli": ("jnli-1.3-{pv}", 3),
    "marc_ja": ("marc_ja-1.1-{pv}", 3),
    "xwinograd": ("xwinograd_ja", 0),
    "jsquad": ("jsquad-1.1-{pv}", 2),
}
#: ``--limit auto``: documents per task. neox-100m: the whole default run (both backends, 5 tasks) takes ~10 min on
#: the project's shared 2-core machine; tiny: a few seconds of compute per task, so process start-up dominates.
AUTO_LIMITS: dict[str, dict[str, int]] = {
    "neox-100m": {"jcqa": 12, "jnli": 12, "marc_ja": 12, "xwinograd": 60, "jsquad": 12},
    "tiny": {"jcqa": 200, "jnli": 200, "marc_ja": 40, "xwinograd": 400, "jsquad": 100},
    "other": {"jcqa": 12, "jnli": 12, "marc_ja": 12, "xwinograd": 60, "jsquad": 12},
}
AUTO_REPEAT = {"neox-100m": 1, "tiny": 3, "other": 1}
#: targets from the project brief (100M model): minimum speedups and the token-overhead ceiling.
TARGET_SPEEDUP = {"jcqa": 4.0, "jnli": 2.5, "marc_ja": 1.8, "jsquad": 2.0}
TARGET_TOKENS = 1.15
COLUMNS = ["task", "requests", "lm-eval req/s", "jbench req/s", "speedup", "max abs Δll", "tokens/min-tokens",
           "peak RSS MiB"]
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "HF_EVALUATE_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


# ---------------------------------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------------------------------


def _cache_root() -> Path:
    env = os.environ.get("JBENCH_CACHE_DIR")
    return Path(env) / "bench" if env else Path.home() / ".cache" / "jbench" / "bench"


def build_neox_100m(cache: Path | None = None) -> Path:
    """A ~86M-parameter random-init GPT-NeoX (hidden 768, 12 layers, 12 heads, ffn 3072, 2048 positions) with the
    tiny default model's tokenizer; built once, cached by a hash of everything that shapes it."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, GPTNeoXConfig

    from jbench.tiny import tiny_default_model

    tok_dir = tiny_default_model()
    src_cfg = json.loads((tok_dir / "config.json").read_text(encoding="utf-8"))
    shape = {"vocab_size": src_cfg["vocab_size"], "hidden_size": 768, "num_hidden_layers": 12,
             "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 2048,
             "bos_token_id": src_cfg.get("bos_token_id"), "eos_token_id": src_cfg.get("eos_token_id"),
             "pad_token_id": src_cfg.get("pad_token_id"), "tie_word_embeddings": False}
    key = json.dumps({"v": 1, "shape": shape, "seed": 0, "tokenizer": tok_dir.name,
                      "transformers": transformers.__version__}, sort_keys=True)
    final = (cache or _cache_root()) / f"neox-100m-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if (final / ".complete").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".neox-100m-", dir=final.parent))
    try:
        for f in tok_dir.iterdir():  # tokenizer files only
            if f.is_file() and f.name not in ("config.json", "generation_config.json", ".complete") \
                    and not f.name.endswith(".safetensors"):
                shutil.copyfile(f, tmp / f.name)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(GPTNeoXConfig(**shape), dtype=torch.float32)
        model.save_pretrained(tmp)
        (tmp / ".complete").write_text(key + "\n", encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def resolve_model(name: str) -> tuple[str, Path]:
    """(``tiny`` | ``neox-100m`` | ``other``, model directory)."""
    if name == "tiny":
        from jbench.tiny import tiny_default_model

        return "tiny", tiny_default_model()
    if name == "neox-100m":
        return "neox-100m", build_neox_100m()
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise SystemExit(f"--model {name!r}: expected tiny, neox-100m or a local model directory with config.json")
    return "other", path.resolve()


# ---------------------------------------------------------------------------------------------------------------------
# requests (built once, in the parent, by jbench)
# ---------------------------------------------------------------------------------------------------------------------


def _data_dir(explicit: str | None) -> Path | None:
    value = explicit or os.environ.get("JBENCH_DATA_DIR")
    if value:
        return Path(value)
    beside = ROOT.parent / "shared" / "data"
    return beside if beside.is_dir() else None


def _load(dataset: str, split: str, data_dir: Path | None, *, real_only: bool = False
          ) -> tuple[list[dict[str, Any]], str] | None:
    """Docs and their source: the real data dir, else the bundled sample's (made-up) split."""
    from jbench.data import load_split, sample_data_dir
    from jbench.errors import DataError

    if data_dir is not None:
        try:
            return list(load_split(dataset, split, data_dir).docs), "real"
        except DataError:
            pass
    if real_only:
        return None
    return list(load_split(dataset, split, sample_data_dir()).docs), "sample (made-up)"


def fewshot_pool(dataset: str, data_dir: Path | None, val: tuple[list[dict[str, Any]], str], pool: str
                 ) -> tuple[list[dict[str, Any]], str]:
    """Where shots are drawn from. ``train``: the task's train split (real, else the sample's). ``auto``: the real
    train split; where only the real *validation* split exists (JNLI, JSQuAD here), the real validation docs. Why:
    the sample's made-up train splits hold 20-30 docs, so 2-3-shot draws repeat across documents and whole shots
    become shared prefixes -- prompts no real run has (real train splits hold thousands of docs)."""
    real_train = _load(dataset, "train", data_dir, real_only=True)
    if real_train is not None:
        return real_train
    if pool == "auto" and val[1] == "real":
        return val[0], "real validation (no real train split)"
    loaded = _load(dataset, "train", data_dir)
    assert loaded is not None
    return loaded


def make_requests(key: str, model_dir: Path, data_dir: Path | None, limit: int, prompt_version: str,
                  max_length: int, pool: str = "auto") -> dict[str, Any]:
    """jbench's requests for one bench task (see :data:`TASKS`), as plain JSON."""
    from jbench.models.tokenizer import load_tokenizer
    from jbench.requests import build_instances
    from jbench.tasks import resolve_task

    template, shots = TASKS[key]
    task = resolve_task(template.format(pv=prompt_version))
    tok = load_tokenizer(model_dir)
    loaded = _load(task.dataset, "validation", data_dir)
    assert loaded is not None
    val, val_src = loaded
    train, train_src = fewshot_pool(task.dataset, data_dir, loaded, pool) if shots else (None, "-")
    insts = build_instances(task, val, train, shots, limit=limit, encode=tok.encode, max_length=max_length)
    docs: list[dict[str, Any]]
    if task.is_generation:
        docs = [{"context": i.context, "until": i.until, "max_gen_tokens": i.max_gen_tokens} for i in insts]
    else:
        docs = [{"context": i.context, "continuations": i.continuations} for i in insts]
    return {"key": key, "task": task.name, "shots": shots, "generation": task.is_generation, "docs": docs,
            "data": {"validation": val_src, "train": train_src}}


# ---------------------------------------------------------------------------------------------------------------------
# the child: one backend, one task, fresh process
# ---------------------------------------------------------------------------------------------------------------------


def _rss_now_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def distinct_prefixes(seqs: Sequence[Sequence[int]]) -> int:
    """Nodes of the prefix trie over ``seqs`` (the root excluded): the fewest tokens any scorer must run to see
    every prefix once. Over sorted sequences, each adds its length minus its common prefix with the previous one."""
    total, prev = 0, ()
    for s in sorted(tuple(x) for x in seqs):
        n = 0
        for a, b in zip(s, prev):
            if a != b:
                break
            n += 1
        total += len(s) - n
        prev = s
    return total


def _timed(fn: Any, repeat: int) -> tuple[Any, list[float], list[float]]:
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return out, walls, cpus


def child(backend: str, spec_path: Path, model_dir: Path, repeat: int, lmeval_bs: int) -> dict[str, Any]:
    """Load the model, warm up on the first document, time ``repeat`` runs of every request; return the results."""
    import logging

    import torch

    logging.disable(logging.WARNING)
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    from jbench.models.hf import HFScorer, load_causal_lm
    from jbench.models.tokenizer import load_tokenizer

    model = load_causal_lm(model_dir, dtype="float32")
    tok = load_tokenizer(model_dir)
    scorer = HFScorer.from_loaded(model, tok)  # jbench's tokenizer rules and max_length, used by both backends
    docs = spec["docs"]
    result: dict[str, Any] = {"backend": backend, "threads": torch.get_num_threads()}
    if backend == "jbench":
        run = _jbench_runner(scorer, spec)
    else:
        run = _lmeval_runner(scorer, model, model_dir, spec, lmeval_bs)
    run(docs[:1])  # warm-up
    scorer.reset_counters()
    result["rss_after_warmup_mib"] = _rss_now_mib()
    out, walls, cpus = _timed(lambda: run(docs), repeat)
    result.update(out)
    result.update(wall_s=walls, cpu_s=cpus, peak_rss_mib=_peak_rss_mib(),
                  tokens_run=scorer.tokens_processed + scorer.generated_tokens_processed,
                  padded_tokens_run=scorer.padded_tokens_processed, forward_calls=scorer.forward_calls)
    if backend == "jbench":  # counters were summed over the repeats
        for k in ("tokens_run", "padded_tokens_run", "forward_calls"):
            result[k] //= max(1, repeat)
    return result


def _ll_pairs(scorer: Any, docs: Sequence[dict[str, Any]]) -> list[tuple[list[int], list[int], str, str]]:
    """jbench's tokenization of every (context, continuation), with the same string caches HFScorer uses."""
    from jbench.models.base import encode_context

    ctx_cache: dict[str, list[int]] = {}
    cont_cache: dict[str, list[int]] = {}
    out = []
    for d in docs:
        ctx = ctx_cache.get(d["context"])
        if ctx is None:
            ctx = ctx_cache[d["context"]] = encode_context(scorer.tokenizer, d["context"])
        for c in d["continuations"]:
            cont = cont_cache.get(c)
            if cont is None:
                cont = cont_cache[c] = list(scorer.tokenizer.encode(c))
            out.append((ctx, cont, d["context"], c))
    return out


def _jbench_runner(scorer: Any, spec: dict[str, Any]) -> Any:
    from jbench.models.base import GenerationRequest, LoglikelihoodRequest, encode_context, model_input

    if not spec["generation"]:
        def run_ll(docs: Sequence[dict[str, Any]]) -> dict[str, Any]:
            reqs = [LoglikelihoodRequest(d["context"], c) for d in docs for c in d["continuations"]]
            lls = scorer.loglikelihood(reqs)
            inputs = [model_input(ctx, cont, scorer.max_length)[0] for ctx, cont, _, _ in _ll_pairs(scorer, docs)]
            return {"lls": lls, "min_tokens": distinct_prefixes(inputs)}

        return run_ll

    captured: list[tuple[list[int], list[int]]] = []
    greedy = scorer._greedy  # instrumentation only: record what the loop ran (context + generated tokens)

    def spy(rows: Any, *args: Any, **kwargs: Any) -> Any:
        out = greedy(rows, *args, **kwargs)
        captured.extend((list(r[0]), list(o)) for r, o in zip(rows, out))
        return out

    scorer._greedy = spy

    def run_gen(docs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        captured.clear()
        texts = scorer.generate([GenerationRequest(d["context"], d["until"], d["max_gen_tokens"]) for d in docs])
        seqs = [ctx + out[:-1] for ctx, out in captured]  # the last generated token is never fed back
        return {"texts": texts, "min_tokens": distinct_prefixes(seqs),
                "ctx_tokens": sum(len(encode_context(scorer.tokenizer, d["context"])) for d in docs)}

    return run_gen


def _lmeval_runner(scorer: Any, model: Any, model_dir: Path, spec: dict[str, Any], batch_size: int) -> Any:
    import torch
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoTokenizer

    from jbench.models.base import encode_context

    hf_tok = AutoTokenizer.from_pretrained(str(model_dir))

    class PretokenizedHFLM(HFLM):
        """HFLM whose generation contexts are jbench's token ids (see the module docstring); the rest is HFLM."""

        ids: dict[str, list[int]] = {}
        generated: dict[str, list[int]] = {}
        ran = {"real": 0, "padded": 0}  # tokens HF generate ran: prefill (real / with padding) + every decode step

        def tok_batch_encode(self, strings: list[str], padding_side: str = "left",
                             left_truncate_len: int | None = None, truncation: bool = False) -> Any:
            rows = [self.ids[s][-left_truncate_len:] if left_truncate_len else self.ids[s] for s in strings]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), int(self.tokenizer.pad_token_id), dtype=torch.long)
            attn = torch.zeros((len(rows), width), dtype=torch.long)
            for i, r in enumerate(rows):
                ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
                attn[i, width - len(r):] = 1
            self._last_contexts = strings
            self.ran["real"] += int(attn.sum())
            self.ran["padded"] += ids.numel()
            return ids, attn

        def _model_generate(self, context: Any, max_length: int, stop: list[str], **kw: Any) -> Any:
            out = super()._model_generate(context, max_length, stop, **kw)
            fed = context.shape[0] * max(0, out.shape[1] - context.shape[1] - 1)  # finished rows keep stepping
            self.ran["real"] += fed
            self.ran["padded"] += fed
            for s, row in zip(self._last_contexts, out[:, context.shape[1]:].tolist()):
                self.generated[s] = row
            return out

    lm = PretokenizedHFLM(pretrained=model, tokenizer=hf_tok, batch_size=batch_size, max_length=scorer.max_length)

    if not spec["generation"]:
        def run_ll(docs: Sequence[dict[str, Any]]) -> dict[str, Any]:
            reqs = [((c_s, k_s), ctx, cont) for ctx, cont, c_s, k_s in _ll_pairs(scorer, docs)]
            res = lm._loglikelihood_tokens(reqs, disable_tqdm=True)
            groups = {tuple(ctx + cont[:-1]) for _, ctx, cont in reqs}  # lm-eval's one-token logits cache
            ran = sum(min(len(g), scorer.max_length) for g in groups)
            return {"lls": [ll for ll, _ in res], "lmeval_tokens": ran}

        return run_ll

    def run_gen(docs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        reqs = []
        for d in docs:
            until = d["until"]
            stop_ids = scorer.tokenizer.encode(until)
            stop = int(stop_ids[-1]) if stop_ids else scorer.tokenizer.eos_token_id
            lm.ids[d["context"]] = encode_context(scorer.tokenizer, d["context"])
            kwargs = {"until": [until], "max_gen_toks": int(d["max_gen_tokens"]), "do_sample": False,
                      "eos_token_id": stop}
            reqs.append((Instance("generate_until", {}, (d["context"], kwargs), 0), until, stop,
                         int(d["max_gen_tokens"])))
        lm.ran.update(real=0, padded=0)
        lm.generate_until([r[0] for r in reqs], disable_tqdm=True)
        texts = []
        for inst, until, stop, cap in reqs:  # jbench's post-processing of lm-eval's tokens, for the comparison
            toks = lm.generated[inst.args[0]][:cap]
            if stop in toks:
                toks = toks[: toks.index(stop) + 1]
            s = scorer.tokenizer.decode(toks) if toks else ""
            texts.append(s.split(until)[0] if until else s)
        return {"texts": texts, "lmeval_tokens": lm.ran["real"], "lmeval_padded_tokens": lm.ran["padded"]}

    return run_gen


# ---------------------------------------------------------------------------------------------------------------------
# the parent: build, run children, compare, report
# ---------------------------------------------------------------------------------------------------------------------


def _run_child(backend: str, spec_path: Path, model_dir: Path, repeat: int, lmeval_bs: int, threads: int,
               workdir: Path) -> dict[str, Any]:
    out = workdir / f"{spec_path.stem}.{backend}.json"
    env = {**os.environ, **OFFLINE_ENV, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", backend, "--spec", str(spec_path),
           "--model-dir", str(model_dir), "--repeat", str(repeat), "--lmeval-batch-size", str(lmeval_bs),
           "--threads", str(threads), "--child-out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{backend} child failed for {spec_path.stem}:\n{proc.stderr[-4000:]}")
    return json.loads(out.read_text(encoding="utf-8"))


def _argmaxes(docs: Sequence[dict[str, Any]], lls: Sequence[float]) -> list[int]:
    out, pos = [], 0
    for d in docs:
        n = len(d["continuations"])
        chunk = lls[pos : pos + n]
        out.append(max(range(n), key=chunk.__getitem__))
        pos += n
    return out


def summarize(spec: dict[str, Any], lm: dict[str, Any], jb: dict[str, Any]) -> dict[str, Any]:
    """One table row plus the details behind it."""
    docs = spec["docs"]
    n_req = len(docs) if spec["generation"] else sum(len(d["continuations"]) for d in docs)
    lm_wall, jb_wall = statistics.median(lm["wall_s"]), statistics.median(jb["wall_s"])
    lm_cpu, jb_cpu = statistics.median(lm["cpu_s"]), statistics.median(jb["cpu_s"])
    row: dict[str, Any] = {"key": spec["key"], "task": spec["task"], "requests": n_req, "docs": len(docs),
                           "lm_rps": n_req / lm_wall, "jb_rps": n_req / jb_wall, "speedup": lm_wall / jb_wall,
                           "speedup_cpu": lm_cpu / jb_cpu, "lm_wall": lm["wall_s"], "jb_wall": jb["wall_s"],
                           "lm_cpu": lm["cpu_s"], "jb_cpu": jb["cpu_s"], "tokens_run": jb["tokens_run"],
                           "padded_tokens_run": jb["padded_tokens_run"], "forward_calls": jb["forward_calls"],
                           "min_tokens": jb["min_tokens"], "tokens_ratio": jb["tokens_run"] / max(1, jb["min_tokens"]),
                           "lm_rss": lm["peak_rss_mib"], "jb_rss": jb["peak_rss_mib"],
                           "lm_rss_warm": lm["rss_after_warmup_mib"], "jb_rss_warm": jb["rss_after_warmup_mib"],
                           "lmeval_tokens": lm.get("lmeval_tokens"), "lmeval_padded": lm.get("lmeval_padded_tokens"),
                           "data": spec["data"],
                           "generation": spec["generation"]}
    row.update(agreement(spec, lm, jb))
    return row


def agreement(spec: dict[str, Any], lm: dict[str, Any], jb: dict[str, Any]) -> dict[str, Any]:
    """How far the two backends' answers agree on the same requests (shared by the hf and the vllm bench): the
    largest |Δll| and the differing argmaxes, or for generation the differing answer texts."""
    if spec["generation"]:
        same = [a == b for a, b in zip(lm["texts"], jb["texts"])]
        return {"max_dll": None, "mismatches": len(same) - sum(same), "compared": len(same)}
    pa, pb = _argmaxes(spec["docs"], lm["lls"]), _argmaxes(spec["docs"], jb["lls"])
    return {"max_dll": max((abs(a - b) for a, b in zip(lm["lls"], jb["lls"])), default=0.0),
            "mismatches": sum(a != b for a, b in zip(pa, pb)), "compared": len(pa)}


def _fmt_rows(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    out = []
    for r in rows:
        dll = "— (generation)" if r["max_dll"] is None else f"{r['max_dll']:.1e}"
        out.append([r["key"], str(r["requests"]), f"{r['lm_rps']:.2f}", f"{r['jb_rps']:.2f}", f"{r['speedup']:.2f}×",
                    dll, f"{r['tokens_ratio']:.3f}", f"{r['lm_rss']:.0f} / {r['jb_rss']:.0f}"])
    return out


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def targets(rows: Sequence[dict[str, Any]], kind: str) -> list[str]:
    """One line per target: met, or missed and by how much."""
    lines = []
    for r in rows:
        want = TARGET_SPEEDUP.get(r["key"])
        if want is not None:
            what = "generation" if r["generation"] else r["key"]
            if r["speedup"] >= want:
                lines.append(f"- {what}: speedup {r['speedup']:.2f}× ≥ {want:g}× — met")
            else:
                lines.append(f"- {what}: speedup {r['speedup']:.2f}× < {want:g}× — MISSED by "
                             f"{want - r['speedup']:.2f}× ({100 * (1 - r['speedup'] / want):.0f}% short; CPU-time "
                             f"speedup {r['speedup_cpu']:.2f}×)")
                if r.get("lmeval_padded"):  # what any scorer could gain at lm-eval's cost per token
                    lines.append(f"  - {what}: lm-eval ran {r['lmeval_padded']} tokens (padding included), jbench "
                                 f"{r['tokens_run']} (minimum {r['min_tokens']}): at equal cost per token the "
                                 f"ceiling here is {r['lmeval_padded'] / max(1, r['min_tokens']):.2f}×")
        verdict = "met" if r["tokens_ratio"] <= TARGET_TOKENS else \
            f"MISSED by {r['tokens_ratio'] - TARGET_TOKENS:.4f}"
        lines.append(f"- {r['key']}: tokens {r['tokens_run']} / minimum {r['min_tokens']} = {r['tokens_ratio']:.4f} "
                     f"(≤ {TARGET_TOKENS}) — {verdict}")
        pred = "identical" if r["mismatches"] == 0 else f"{r['mismatches']} of {r['compared']} DIFFER"
        unit = "generations" if r["generation"] else "argmaxes"
        lines.append(f"- {r['key']}: predictions {pred} ({r['compared']} {unit})")
    if kind != "neox-100m":
        lines.insert(0, "(the speedup targets are stated for the ~100M model; this run is on another model)")
    return lines


def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f" {f}" in text)
    except OSError:
        pass
    return {"cpu": cpu, "flags": flags, "logical_cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch": torch.__version__, "python": platform.python_version(), "load": os.getloadavg()}


def write_report(path: Path, cmd: str, kind: str, model_dir: Path, rows: Sequence[dict[str, Any]],
                 info: dict[str, Any], settings: dict[str, Any]) -> str:
    table = markdown_table(COLUMNS, _fmt_rows(rows))
    details = markdown_table(
        ["task", "docs", "data (eval / shots)", "lm-eval s (wall / CPU)", "jbench s (wall / CPU)", "speedup (CPU time)",
         "lm-eval tokens", "jbench tokens (padded)", "min tokens", "jbench forwards", "RSS after warm-up MiB (L / J)"],
        [[r["key"], str(r["docs"]), f"{r['data']['validation']} / {r['data']['train']}",
          f"{statistics.median(r['lm_wall']):.1f} / {statistics.median(r['lm_cpu']):.1f}",
          f"{statistics.median(r['jb_wall']):.1f} / {statistics.median(r['jb_cpu']):.1f}", f"{r['speedup_cpu']:.2f}×",
          "—" if r["lmeval_tokens"] is None else
          str(r["lmeval_tokens"]) + ("" if r["lmeval_padded"] is None else f" ({r['lmeval_padded']})"),
          f"{r['tokens_run']} ({r['padded_tokens_run'] or '—'})", str(r["min_tokens"]), str(r["forward_calls"]),
          f"{r['lm_rss_warm']:.0f} / {r['jb_rss_warm']:.0f}"] for r in rows])
    m = info
    text = f"""# jbench vs lm-eval `hf`: throughput on identical requests

Date: {settings['date']}  
Command: `{cmd}`  
Model: `{kind}` (`{model_dir}`; {settings['params'] / 1e6:.1f}M parameters, float32, max_length \
{settings['max_length']})  
Machine: {m['cpu']} ({m['flags']}), {m['logical_cpus']} logical CPUs ({m['usable_cpus']} usable), shared with other
jobs (load average {m['load'][0]:.1f} at the start, {settings['load_end'][0]:.1f} at the end); Python {m['python']},
torch {m['torch']}, {settings['threads']} torch thread(s) per process; lm-eval {settings['lm_eval']} `HFLM`
batch_size={settings['lmeval_bs']}; jbench auto batch (token budget); prompt version {settings['pv']};
{settings['repeat']} timed run(s) per backend after a one-document warm-up (medians).  
Wall time for the whole benchmark: {settings['elapsed'] / 60:.1f} min.

{table}

Columns: req/s = scored (context, continuation) pairs per second (generation: generated answers per second), wall
clock; speedup = lm-eval time / jbench time; max abs Δll = largest |lm-eval − jbench| log-likelihood over all
requests (identical token ids on both sides); tokens/min-tokens = tokens jbench ran through the model / distinct
prefix-trie nodes over all request sequences (generation: context + generated tokens except the last);
peak RSS = `ru_maxrss` of each backend's own fresh process (lm-eval / jbench), model load included.

## Targets

{chr(10).join(targets(rows, kind))}

## Details

{details}

"lm-eval tokens" = the tokens lm-eval's forwards cover without padding (its one-token logits cache merges
requests that differ only in the last continuation token); for generation, prefill + every decode step of every
row of HF `generate`'s batches, and in parentheses with the left padding. jbench "padded" counts padding too.
"""
    path.write_text(text, encoding="utf-8")
    return table


def parse_limits(value: str, keys: Sequence[str], kind: str) -> dict[str, int]:
    if value == "auto":
        return {k: AUTO_LIMITS[kind][k] for k in keys}
    if "=" not in value:
        return {k: int(value) for k in keys}
    given = {k.strip(): int(v) for k, v in (p.split("=", 1) for p in value.split(",") if p.strip())}
    unknown = set(given) - set(TASKS)
    if unknown:
        raise SystemExit(f"--limit: unknown task(s) {sorted(unknown)}")
    return {k: given.get(k, AUTO_LIMITS[kind][k]) for k in keys}


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="neox-100m", help="tiny | neox-100m | a local model directory")
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma list of {', '.join(TASKS)}")
    p.add_argument("--limit", default="auto", help="auto | N | task=N,... (documents per task)")
    p.add_argument("--repeat", type=int, default=0, help="timed runs per backend (0: 1 for 100M, 3 for tiny)")
    p.add_argument("--lmeval-batch-size", type=int, default=8, help="HFLM batch_size (a fixed one: 'auto' probes "
                   "huge batches at max length, which is slower on CPU)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (1: see bench/README.md)")
    p.add_argument("--prompt-version", default="0.3")
    p.add_argument("--data-dir", default=None, help="default: $JBENCH_DATA_DIR; the bundled sample fills gaps")
    p.add_argument("--fewshot-pool", choices=["auto", "train"], default="auto",
                   help="auto: real train split, else real validation docs, else the sample's train split")
    p.add_argument("--out", default=str(ROOT / "bench" / "RESULTS.md"))
    p.add_argument("--child", choices=["jbench", "lm-eval"], help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        res = child(args.child, Path(args.spec), Path(args.model_dir), args.repeat, args.lmeval_batch_size)
        Path(args.child_out).write_text(json.dumps(res), encoding="utf-8")
        return

    t_start = time.perf_counter()
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)
    keys = [k.strip() for k in args.tasks.split(",") if k.strip()]
    bad = [k for k in keys if k not in TASKS]
    if bad:
        raise SystemExit(f"--tasks: unknown {bad}; choose from {', '.join(TASKS)}")
    info = machine()
    kind, model_dir = resolve_model(args.model)
    limits = parse_limits(args.limit, keys, kind)
    repeat = args.repeat or AUTO_REPEAT[kind]
    from transformers import AutoConfig

    from jbench.models.hf import config_max_length

    config = AutoConfig.from_pretrained(str(model_dir))
    max_length = config_max_length(config)
    data_dir = _data_dir(args.data_dir)
    rows = []
    with tempfile.TemporaryDirectory(prefix="jbench-bench-") as tmp:
        work = Path(tmp)
        for i, key in enumerate(keys):
            spec = make_requests(key, model_dir, data_dir, limits[key], args.prompt_version, max_length,
                                 args.fewshot_pool)
            spec_path = work / f"{key}.json"
            spec_path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
            order = ["lm-eval", "jbench"] if i % 2 == 0 else ["jbench", "lm-eval"]  # alternate against load drift
            res = {b: _run_child(b, spec_path, model_dir, repeat, args.lmeval_batch_size, args.threads, work)
                   for b in order}
            row = summarize(spec, res["lm-eval"], res["jbench"])
            rows.append(row)
            print(f"[{key}] {row['requests']} requests: lm-eval {row['lm_rps']:.2f} req/s, jbench "
                  f"{row['jb_rps']:.2f} req/s, {row['speedup']:.2f}× (CPU {row['speedup_cpu']:.2f}×)", flush=True)
    import lm_eval
    from safetensors import safe_open

    params = 0
    for f in model_dir.glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            params += sum(_prod(st.get_slice(n).get_shape()) for n in st.keys())
    settings = {"date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), "threads": args.threads,
                "lmeval_bs": args.lmeval_batch_size, "pv": args.prompt_version, "repeat": repeat,
                "lm_eval": lm_eval.__version__, "elapsed": time.perf_counter() - t_start, "max_length": max_length,
                "params": params, "load_end": os.getloadavg()}
    cmd = "python bench/run.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    table = write_report(Path(args.out), cmd, kind, model_dir, rows, info, settings)
    print()
    print(table)
    print()
    print("\n".join(targets(rows, kind)))
    print(f"\nwritten: {args.out}")


def _prod(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


if __name__ == "__main__":
    main()
