"""PROTOTYPE (not used by jbench): packed prefix sharing with a header shared across documents, run once.

Why: the prompts of every document start with the same description + instruction (~80 tokens for JCQA 0.3), but
HFScorer's groups have one prefix each, so ``_run_packed`` recomputes that header once per document: the main
reason tokens/min-tokens is ~1.2-1.35 instead of ~1.0 in bench/RESULTS.md. This subclass overrides only
``_run_packed``: the longest prefix common to every group of a forward (never reaching a scored position) runs once
with a KV cache (reused by the next forward if identical); each packed row then holds only its group's remaining
prefix + member suffixes, attends to the cached header (all visible) plus its own block mask, and continues the
header's position ids. Measured on neox-100m, 8 documents, 1 thread (same model, same requests, |Δll| <= 2.4e-6):

    task     tokens run (base -> header)   seconds (base -> header)
    jcqa     3582 -> 2952  (-17.6%)        11.20 -> 9.57  (-14.5%)
    jnli     3835 -> 3093  (-19.3%)        12.45 -> 10.88 (-12.7%)
    marc_ja  3280 -> 2566  (-21.8%)        10.08 -> 8.18  (-18.9%)

Run: ``python bench/header_cache_prototype.py neox-100m jcqa 8``. A real change belongs in hf.py
(``_score_shared``/``_run_packed``; the owner decides); the same idea applies to the generation prefill.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from jbench.models.hf import HFScorer, _Group, _lcp, _select_cache  # noqa: E402  (prototype: private internals)

MIN_HEADER = 16  # below this, a separate header forward costs more than it saves


class HeaderScorer(HFScorer):
    """HFScorer whose packed forwards share one cached header across all their groups."""

    _header: tuple[tuple[int, ...], Any] | None = None

    def _run_packed(self, groups: list[_Group], sums: torch.Tensor) -> None:
        first = groups[0].prefix
        h = min(len(g.prefix) for g in groups)
        for g in groups[1:]:
            h = min(h, _lcp(first, g.prefix))
        h = min([h] + [m.first_scored for g in groups for m in g.members])  # header logits are never scored
        if len(groups) < 2 or h < MIN_HEADER:
            return super()._run_packed(groups, sums)
        header = tuple(first[:h])
        if self._header is None or self._header[0] != header:
            _, cache = self._forward(torch.tensor([header]), torch.ones(1, h, dtype=torch.long),
                                     torch.arange(h)[None], 1, use_cache=True)
            self.tokens_processed += h
            self.padded_tokens_processed += h
            self._header = (header, cache)
        cache = self._header[1]
        rows, segs, poss, places = [], [], [], []
        for r, g in enumerate(groups):
            p = len(g.prefix)
            toks, seg, pos = list(g.prefix[h:]), [0] * (p - h), list(range(h, p))
            for m in g.members:
                places.append((r, m, len(toks) + h - p))
                if len(m.inp) > p:
                    toks.extend(m.inp[p:])
                    seg.extend([len(places)] * (len(m.inp) - p))
                    pos.extend(range(p, len(m.inp)))
            rows.append(toks)
            segs.append(seg)
            poss.append(pos)
        width, n_rows = max(len(t) for t in rows), len(rows)
        ids = torch.full((n_rows, width), self._pad_id, dtype=torch.long)
        seg_t = torch.full((n_rows, width), -1, dtype=torch.long)
        pos_t = torch.zeros((n_rows, width), dtype=torch.long)
        for r, (t, sg, ps) in enumerate(zip(rows, segs, poss)):
            ids[r, : len(t)] = torch.tensor(t)
            seg_t[r, : len(t)] = torch.tensor(sg)
            pos_t[r, : len(t)] = torch.tensor(ps)
        real = seg_t >= 0
        seg_t[~real] = -2 - torch.arange(int((~real).sum()))
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        visible = (seg_t[:, :, None] == seg_t[:, None, :]) | (seg_t == 0)[:, None, :]
        mask = torch.cat([torch.ones(n_rows, width, h, dtype=torch.bool), causal & visible], dim=2)[:, None]
        r_idx, c_idx, targets, owners = [], [], [], []
        for r, m, offset in places:
            p = len(groups[r].prefix)
            for j in range(m.first_scored, len(m.inp)):
                r_idx.append(r)
                c_idx.append((j if j < p else j + offset) - h)
                targets.append(m.targets[j - m.first_scored])
                owners.append(m.index)
        keep = torch.zeros_like(ids, dtype=torch.bool)
        keep[r_idx, c_idx] = True
        sel = torch.zeros(n_rows, dtype=torch.long)
        logits, _ = self._forward(ids, mask, pos_t, keep, past=lambda: _select_cache(cache, sel), use_cache=True)
        self._accumulate(sums, logits, keep, r_idx, c_idx, targets, owners)
        self.tokens_processed += int(real.sum())
        self.padded_tokens_processed += ids.numel()


def main() -> None:
    import run as bench

    from jbench.models.base import LoglikelihoodRequest
    from jbench.models.hf import load_causal_lm
    from jbench.models.tokenizer import load_tokenizer

    torch.set_num_threads(1)
    model_dir = bench.resolve_model(sys.argv[1] if len(sys.argv) > 1 else "neox-100m")[1]
    key, limit = (sys.argv[2] if len(sys.argv) > 2 else "jcqa"), int(sys.argv[3]) if len(sys.argv) > 3 else 8
    spec = bench.make_requests(key, model_dir, bench._data_dir(None), limit, "0.3", 2048)
    model, tok = load_causal_lm(model_dir), load_tokenizer(model_dir)
    reqs = [LoglikelihoodRequest(d["context"], c) for d in spec["docs"] for c in d["continuations"]]
    scorers = {"base": HFScorer.from_loaded(model, tok), "header": HeaderScorer.from_loaded(model, tok)}
    results: dict[str, list[tuple[float, int, list[float]]]] = {}
    for s in scorers.values():
        s.loglikelihood(reqs[:5])  # warm-up (and the packed-mask probe)
    for rep in range(2):
        for name in (["base", "header"] if rep == 0 else ["header", "base"]):
            s = scorers[name]
            s.reset_counters()
            s._header = None
            t = time.perf_counter()
            ll = s.loglikelihood(reqs)
            results.setdefault(name, []).append((time.perf_counter() - t, s.tokens_processed, ll))
    for name, runs in results.items():
        print(f"{name:7s} tokens {runs[0][1]:6d}  median s {statistics.median(r[0] for r in runs):.2f}")
    print("max |Δll|", max(abs(a - b) for a, b in zip(results["base"][0][2], results["header"][0][2])))


if __name__ == "__main__":
    main()
