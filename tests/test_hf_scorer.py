"""HFScorer against an independent oracle: one plain forward pass per request, no padding, no cache, no masks."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from jbench.errors import ModelError
from jbench.models.base import GenerationRequest, LoglikelihoodRequest, Scorer
from jbench.models.hf import HFScorer, parse_dtype
from jbench.models.planning import Item, group_by_prefix, header_families, packed_len

TOL = 1e-5

FEWSHOT = "".join(f"質問：{s}はどこで本を読みますか？\n答え：{p}\n\n" for s, p in
                  [("猫", "公園"), ("犬", "学校"), ("先生", "図書館")])
CHOICES = ["公園", "学校", "図書館", "駅", "東京の人"]


def _mc_requests() -> list[LoglikelihoodRequest]:
    """Four multiple-choice docs (shared few-shot prefix, different questions) + an XWinograd-style pair."""
    reqs = []
    for q in ["猫", "犬", "学生", "東京の人"]:
        ctx = f"以下は質問です。\n\n{FEWSHOT}質問：{q}はどこで歌を歌いますか？\n答え："
        reqs += [LoglikelihoodRequest(ctx, c) for c in CHOICES]
    reqs += [LoglikelihoodRequest("", "太郎は公園で本を読みます。"), LoglikelihoodRequest("", "太郎は学校で本を読みます。")]
    reqs += [LoglikelihoodRequest("猫は", "公園で寝ます。"), LoglikelihoodRequest("猫は", "")]
    return reqs


@pytest.fixture(scope="module")
def scorers(tiny_models: dict[str, Path]) -> dict[str, HFScorer]:
    return {arch: HFScorer(d, use_fast=False if arch != "qwen2" else None) for arch, d in tiny_models.items()}


def oracle_loglikelihood(scorer: HFScorer, req: LoglikelihoodRequest, max_length: int) -> float:
    """The reference rule written out plainly, run as one unbatched forward."""
    tok = scorer.tokenizer
    ctx = [tok.eos_token_id] if req.context == "" else tok.encode(req.context)
    cont = tok.encode(req.continuation)
    whole = (ctx + cont)[-(max_length + 1):]
    inp = whole[:-1]
    if not cont:
        return 0.0
    with torch.no_grad():
        logits = scorer.model(torch.tensor([inp])).logits[0].double()
    lsm = torch.log_softmax(logits, dim=-1)
    n = min(len(cont), len(inp))  # a continuation longer than the window keeps its last tokens
    return float(sum(lsm[len(inp) - n + k, whole[len(whole) - n + k]] for k in range(n)))


def oracle_greedy(scorer: HFScorer, ids: list[int], steps: int) -> list[int]:
    out: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            logits = scorer.model(torch.tensor([ids + out])).logits[0, -1]
            out.append(int(logits.argmax()))
    return out


def _with(scorer: HFScorer, share: str | None = None, **kw: object) -> HFScorer:
    """A scorer over the same model/tokenizer; ``share`` forces the prefix-sharing mode ("packed" or "kv")."""
    out = HFScorer.from_loaded(scorer.model, scorer.tokenizer, **kw)  # type: ignore[arg-type]
    if share is not None:
        out._shared_mode = share
    return out


# ---------------------------------------------------------------------------------------------------- loglikelihood


@pytest.mark.parametrize("arch", ["gpt_neox", "llama", "qwen2"])
def test_matches_oracle_fast_and_naive(scorers: dict[str, HFScorer], arch: str) -> None:
    s = scorers[arch]
    assert isinstance(s, Scorer)
    reqs = _mc_requests()
    expected = [oracle_loglikelihood(s, r, s.max_length) for r in reqs]
    assert _with(s)._share_mode() == "packed"  # sdpa + a transformers model: the block-mask path is chosen
    packed = _with(s, share="packed").loglikelihood(reqs)
    kv = _with(s, share="kv").loglikelihood(reqs)
    naive = _with(s, prefix_sharing=False).loglikelihood(reqs)
    for e, f, k, n in zip(expected, packed, kv, naive):
        assert abs(f - e) <= TOL and abs(k - e) <= TOL and abs(n - e) <= TOL, (e, f, k, n)
    assert packed[-1] == kv[-1] == naive[-1] == 0.0  # empty continuation
    assert all(x < 0 for x in packed[:-1])


def test_eager_attention_packed_mask(tiny_models: dict[str, Path]) -> None:
    """Eager attention adds a float mask: the packed path must build that, not a boolean one."""
    s = HFScorer(tiny_models["llama"], use_fast=False, model_kwargs={"attn_implementation": "eager"})
    assert s.config._attn_implementation == "eager" and s._share_mode() == "packed"
    reqs = _mc_requests()
    for r, got in zip(reqs, s.loglikelihood(reqs)):
        assert abs(got - oracle_loglikelihood(s, r, s.max_length)) <= TOL


def test_empty_context_scores_after_eos(scorers: dict[str, HFScorer]) -> None:
    s = scorers["gpt_neox"]
    req = LoglikelihoodRequest("", "太郎は公園で本を読みます。")
    (got,) = s.loglikelihood([req])
    eos_first = LoglikelihoodRequest("</s>", req.continuation)  # "</s>" in text maps to the EOS id
    assert s.tokenizer.encode("</s>") == [s.tokenizer.eos_token_id]
    assert abs(got - s.loglikelihood([eos_first])[0]) <= TOL
    assert abs(got - oracle_loglikelihood(s, req, s.max_length)) <= TOL


@pytest.mark.parametrize("share", ["packed", "kv", "naive"])
def test_left_truncation(scorers: dict[str, HFScorer], share: str) -> None:
    base = scorers["llama"]
    s = _with(base, None if share == "naive" else share, max_length=16, prefix_sharing=share != "naive")
    assert s.max_length == 16
    reqs = _mc_requests()
    assert len(base.tokenizer.encode(reqs[0].context)) > 16
    for r, got in zip(reqs, s.loglikelihood(reqs)):
        assert abs(got - oracle_loglikelihood(s, r, 16)) <= TOL
    # a continuation longer than max_length keeps only what fits
    long = LoglikelihoodRequest("猫は", "公園でგამარჯობა")  # byte fallback: many tokens
    assert len(base.tokenizer.encode(long.continuation)) > 16
    assert abs(s.loglikelihood([long])[0] - oracle_loglikelihood(s, long, 16)) <= TOL


def test_batch_sizes_agree(scorers: dict[str, HFScorer]) -> None:
    s = scorers["gpt_neox"]
    reqs = _mc_requests()
    runs = {(share, bs): _with(s, None if share == "naive" else share, batch_size=bs,
                               prefix_sharing=share != "naive").loglikelihood(reqs)
            for share in ("packed", "kv", "naive") for bs in (1, 7, 32)}
    ref = runs[("naive", 1)]
    for key, got in runs.items():
        assert max(abs(a - b) for a, b in zip(got, ref)) <= TOL, key
        for d in range(4):  # identical predictions per doc
            doc = slice(5 * d, 5 * d + 5)
            assert max(range(5), key=lambda i: got[doc][i]) == max(range(5), key=lambda i: ref[doc][i])


def test_prefix_sharing_runs_fewer_tokens(scorers: dict[str, HFScorer]) -> None:
    s = scorers["gpt_neox"]
    reqs = _mc_requests()
    packed, kv, naive = _with(s, "packed"), _with(s, "kv"), _with(s, prefix_sharing=False)
    for x in (packed, kv, naive):
        x.loglikelihood(reqs)
    items = naive._prepare(reqs)
    assert naive.tokens_processed == sum(len(it.inp) for it in items if it.n_cont)
    assert kv.tokens_processed < 0.4 * naive.tokens_processed
    unique = {it.inp[:k] for it in items if it.n_cont for k in range(1, len(it.inp) + 1)}  # token-trie nodes
    # kv shares within a document only; packed also runs the header the four documents share once
    header = packed._header_sharing() and len(unique) <= packed.tokens_processed <= 1.15 * len(unique)
    assert header and packed.tokens_processed < kv.tokens_processed, (len(unique), packed.tokens_processed)


@pytest.mark.parametrize("arch", ["gpt_neox", "llama"])
def test_short_groups_share_packed_rows(scorers: dict[str, HFScorer], arch: str) -> None:
    """One long group sets the row width; XWinograd-style pairs fill rows beside each other instead of each
    padding a row of its own, never seeing each other's tokens."""
    s = _with(scorers[arch], "packed")
    long_ctx = f"以下は質問です。\n\n{FEWSHOT}質問：猫はどこで歌を歌いますか？\n答え："
    reqs = [LoglikelihoodRequest(long_ctx, c) for c in CHOICES]
    reqs += [LoglikelihoodRequest("", f"{who}は{where}で{what}。") for who in ["太郎", "猫", "先生"]
             for where in ["公園", "学校"] for what in ["本を読みます", "寝ます"]]
    rows_seen: list[list[int]] = []
    real_run = s._run_packed

    def spy(rows: list, *a: object, **kw: object) -> None:
        rows_seen.extend([len(r) for r in rows] for _ in [0])
        real_run(rows, *a, **kw)

    s._header_sharing()  # the probe runs before the spy
    s._run_packed = spy  # type: ignore[method-assign]
    got = s.loglikelihood(reqs)
    assert any(n >= 2 for forward in rows_seen for n in forward)  # some row holds several groups
    n_groups, n_rows = sum(map(sum, rows_seen)), sum(map(len, rows_seen))
    assert n_groups >= 4 and n_rows <= n_groups // 2, rows_seen  # one row per group would pad each to the width
    for r, g in zip(reqs, got):
        assert abs(g - oracle_loglikelihood(s, r, s.max_length)) <= TOL


def test_header_families() -> None:
    desc = tuple(range(100, 120))  # a 20-token "description" (>= MIN_HEADER)
    rows = [desc + (1, 2), desc + (3,), desc + (1, 2, 4), (7, 8), desc[:10] + (9,), (7, 8, 9)]
    fams = {tuple(idx): h for h, idx in header_families(rows, [len(r) + 5 for r in rows])}
    assert fams == {(0, 1, 2): 20, (3, 4, 5): 0}  # (7, 8) shares only 2 tokens; desc[:10] is too short
    assert header_families([desc, desc], [30, 30]) == [(20, [0, 1])]
    assert header_families([desc], [30]) == [(0, [0])] and header_families([], []) == []


@pytest.mark.parametrize("arch", ["gpt_neox", "llama", "qwen2"])
def test_shared_header_across_documents(scorers: dict[str, HFScorer], arch: str) -> None:
    """Many documents behind one long description: it runs once (loglikelihood and generation), scores still
    match the oracle and generations the unbatched, header-less ones."""
    s = scorers[arch]
    desc = "以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。要求を適切に満たす応答を書きなさい。\n\n"
    ctxs = [f"{desc}【{q}】{FEWSHOT if i % 2 else ''}質問：{q}はどこで歌を歌いますか？\n答え："
            for i, q in enumerate(["猫", "犬", "学生", "東京の人", "先生"])]  # documents share only the description
    reqs = [LoglikelihoodRequest(c, k) for c in ctxs for k in CHOICES[:3]]
    h = len(s.tokenizer.encode(desc)) - 2
    fast, kv = _with(s), _with(s, "kv")
    got, kv_got = fast.loglikelihood(reqs), kv.loglikelihood(reqs)
    assert fast._header_sharing() and h >= 16
    assert kv.tokens_processed - fast.tokens_processed >= (len(ctxs) - 1) * h  # the header ran once, not 5 times
    for r, a, b in zip(reqs, got, kv_got):
        e = oracle_loglikelihood(s, r, s.max_length)
        assert abs(a - e) <= TOL and abs(b - e) <= TOL
    gens = [GenerationRequest(c, "\n", 6) for c in ctxs]
    batched, single = _with(s), _with(s, batch_size=1)
    one_by_one = [_with(s, batch_size=1, prefix_sharing=False).generate([g])[0] for g in gens]
    assert batched.generate(gens) == single.generate(gens) == one_by_one
    plain = _with(s, prefix_sharing=False)
    plain.generate(gens)
    assert plain.generated_tokens_processed - batched.generated_tokens_processed >= (len(ctxs) - 1) * h


def test_group_by_prefix() -> None:
    def item(i: int, toks: list[int], n: int = 1) -> Item:
        return Item(i, tuple(toks), n, tuple(toks[-n:]))

    ctx_a, ctx_b = [5, 6, 7, 8, 9, 10], [5, 6, 7, 11, 12, 13]  # share a 3-token "description"
    items = [item(0, ctx_a + [1]), item(1, ctx_a + [2, 3]), item(2, ctx_b + [1]), item(3, ctx_b + [4]),
             item(4, [0, 20, 21, 22, 30]), item(5, [0, 20, 21, 22, 31]), item(6, [0, 40, 41]), item(7, [1, 2, 3])]
    groups = {tuple(sorted(m.index for m in g.members)): g.prefix for g in group_by_prefix(items)}
    assert groups[(0, 1)] == tuple(ctx_a + [1])[:7][:len(ctx_a)] or groups[(0, 1)] == tuple(ctx_a)
    assert groups[(2, 3)] == tuple(ctx_b)
    assert groups[(4, 5)] == (0, 20, 21, 22)  # XWinograd style: [eos] + shared leading words
    assert groups[(6,)] == (0, 40, 41) and groups[(7,)] == (1, 2, 3)


def test_duplicate_requests_share_everything(scorers: dict[str, HFScorer]) -> None:
    s = _with(scorers["gpt_neox"])
    req = LoglikelihoodRequest("猫は公園で", "本を読みます。")
    a, b = s.loglikelihood([req, req])
    assert a == b
    assert s.tokens_processed == len(s._prepare([req])[0].inp)


# ---------------------------------------------------------------------------------------------------------- generate


def _gen_case(s: HFScorer) -> tuple[str, list[int], list[int]]:
    ctx = "質問：猫はどこで本を読みますか？\n答え："
    ids = s.tokenizer.encode(ctx)
    return ctx, ids, oracle_greedy(s, ids, 12)


@pytest.mark.parametrize("arch", ["gpt_neox", "llama", "qwen2"])
def test_generation_cap_and_oracle(scorers: dict[str, HFScorer], arch: str) -> None:
    s = scorers[arch]
    ctx, _, greedy = _gen_case(s)
    stop_text = "\u3000never\u3000"  # its last token must not be generated in the first tokens
    if s.tokenizer.encode(stop_text)[-1] in greedy[:5]:
        pytest.skip("stop token happens to be generated")
    (out,) = s.generate([GenerationRequest(ctx, stop_text, 5)])
    assert out == s.tokenizer.decode(greedy[:5]).split(stop_text)[0]


def test_generation_stops_on_last_token_of_until(scorers: dict[str, HFScorer]) -> None:
    s = scorers["llama"]
    ctx, _, greedy = _gen_case(s)
    # pick a generated token whose piece, as an `until` string, encodes to a sequence ending in that token
    for k in range(1, 8):
        until = s.tokenizer.decode([greedy[k]])
        enc = s.tokenizer.encode(until)
        if until.strip() and enc and enc[-1] == greedy[k] and greedy[k] not in greedy[:k]:
            break
    else:
        pytest.skip("no usable stop token in the greedy output")
    (out,) = s.generate([GenerationRequest(ctx, until, 12)])
    full = s.tokenizer.decode(greedy[: k + 1])
    assert out == full.split(until)[0]
    counted = _with(s)
    counted.generate([GenerationRequest(ctx, until, 12)])
    assert counted.generated_tokens_processed == len(s.tokenizer.encode(ctx)) + k  # stopped after k+1 tokens


def test_real_eos_does_not_stop_generation(scorers: dict[str, HFScorer]) -> None:
    """Only the `until` token or the cap stops: make the first greedy token the "EOS" and check it continues."""
    base = scorers["gpt_neox"]
    ctx, _, greedy = _gen_case(base)
    tok = dataclasses.replace(base.tokenizer) if dataclasses.is_dataclass(base.tokenizer) else _CopyTok(base.tokenizer)
    tok.eos_token_id = greedy[0]
    s = HFScorer.from_loaded(base.model, tok)
    stop_text = "\u3000never\u3000"
    if s.tokenizer.encode(stop_text)[-1] in greedy[:6]:
        pytest.skip("stop token happens to be generated")
    s.generate([GenerationRequest(ctx, stop_text, 6)])
    assert s.generated_tokens_processed == len(base.tokenizer.encode(ctx)) + 5  # 6 tokens generated


class _CopyTok:
    """A tokenizer proxy whose eos id can be changed without touching the shared one."""

    def __init__(self, inner: object) -> None:
        self._inner = inner
        self.eos_token_id = getattr(inner, "eos_token_id")

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def encode(self, text: str) -> list[int]:
        return self._inner.encode(text)  # type: ignore[attr-defined]

    def decode(self, ids: list[int]) -> str:
        return self._inner.decode(ids)  # type: ignore[attr-defined]


def test_generation_left_truncates_context(scorers: dict[str, HFScorer]) -> None:
    base = scorers["gpt_neox"]
    s = _with(base, max_length=24)
    ctx = FEWSHOT + "質問：猫はどこで歌を歌いますか？\n答え："
    cap = 4
    ids = base.tokenizer.encode(ctx)
    assert len(ids) > 24
    expected = oracle_greedy(base, ids[cap - 24:], cap)
    (out,) = s.generate([GenerationRequest(ctx, "\u3000never\u3000", cap)])
    assert out == base.tokenizer.decode(expected).split("\u3000never\u3000")[0]


@pytest.mark.parametrize("arch", ["gpt_neox", "qwen2"])
def test_batched_generation_equals_unbatched(scorers: dict[str, HFScorer], arch: str) -> None:
    s = scorers[arch]
    reqs = [GenerationRequest(c, u, n) for c, u, n in [
        ("質問：猫はどこで本を読みますか？\n答え：", "\n", 8),
        (FEWSHOT + "質問：犬は？\n答え：", "。", 5),
        ("東京", "\n", 3),
        ("", "\n", 4),
        ("私の友達は海で", "です", 10),
        ("学生", "\n", 0),
        (FEWSHOT, "\n", 6),
    ]]
    batched = _with(s).generate(reqs)
    one_by_one = [_with(s, batch_size=1).generate([r])[0] for r in reqs]
    assert batched == one_by_one
    assert batched[5] == ""
    single = _with(s, batch_size=1)
    assert single.generate(reqs) == batched


# ------------------------------------------------------------------------------------------------------ loading etc.


def test_loading_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        HFScorer(str(tmp_path / "missing"))
    vit = tmp_path / "vit"
    vit.mkdir()
    (vit / "config.json").write_text(json.dumps({"model_type": "vit", "hidden_size": 32, "num_hidden_layers": 1,
                                                 "num_attention_heads": 2, "intermediate_size": 64}))
    with pytest.raises(ModelError, match="not a causal language model"):
        HFScorer(str(vit))
    with pytest.raises(ModelError):
        parse_dtype("float8")


def test_dtypes_and_max_length(tiny_models: dict[str, Path]) -> None:
    assert parse_dtype("bf16") is torch.bfloat16 and parse_dtype("float16") is torch.float16
    assert parse_dtype("auto") == "auto"
    s = HFScorer(tiny_models["gpt_neox"], dtype="bfloat16", use_fast=False)
    assert next(s.model.parameters()).dtype is torch.bfloat16
    assert s.max_length == 2048  # max_position_embeddings (no n_ctx)
    assert s.tokenizer.kind == "sentencepiece"
    (ll,) = s.loglikelihood([LoglikelihoodRequest("猫は", "公園で寝ます。")])
    assert ll < 0
    auto = HFScorer(tiny_models["llama"], dtype="auto", use_fast=False)
    assert next(auto.model.parameters()).dtype is torch.float32


def test_from_loaded_accepts_hf_tokenizer(scorers: dict[str, HFScorer], tiny_models: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    base = scorers["qwen2"]
    s = HFScorer.from_loaded(base.model, AutoTokenizer.from_pretrained(str(tiny_models["qwen2"])))
    reqs = _mc_requests()[:6]
    assert max(abs(a - b) for a, b in zip(s.loglikelihood(reqs), base.loglikelihood(reqs))) <= TOL


@pytest.mark.parametrize("mode", ["index", "none"])
def test_logits_to_keep_fallbacks(scorers: dict[str, HFScorer], mode: str) -> None:
    """Older transformers / custom models without boolean ``logits_to_keep``: same scores via 1-D positions or
    full logits."""
    base = scorers["llama"]
    reqs = _mc_requests()
    expected = base.loglikelihood(reqs)
    for share in ("packed", "kv", "naive"):
        s = _with(base, None if share == "naive" else share, prefix_sharing=share != "naive")
        s._keep_mode = mode
        assert max(abs(a - b) for a, b in zip(s.loglikelihood(reqs), expected)) <= TOL


def test_huge_group_is_split_into_bounded_packed_rows(scorers: dict[str, HFScorer], monkeypatch: pytest.MonkeyPatch) -> None:
    """Many requests that share only the empty context's [eos] must not become one enormous packed row."""
    import jbench.models.hf as hf

    monkeypatch.setattr(hf, "PACKED_ROW_CAP", 10)
    base = scorers["gpt_neox"]
    reqs = [LoglikelihoodRequest("", f"{s}は{p}で寝ます。") for s in ["猫", "犬", "鳥", "先生"] for p in ["公園", "海", "山"]]
    s = _with(base, "packed")
    s._header_sharing()  # the one-off probe runs before the spy
    widths: list[int] = []
    real_forward = s._forward

    def spy(ids: torch.Tensor, *a: object, **kw: object) -> object:
        widths.append(int(ids.shape[1]))
        return real_forward(ids, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(s, "_forward", spy)
    got = s.loglikelihood(reqs)
    groups = group_by_prefix(s._prepare(reqs))
    assert max(packed_len(g) for g in groups) > 10  # the cap really splits something
    assert max(widths) <= 10
    for r, g in zip(reqs, got):
        assert abs(g - oracle_loglikelihood(base, r, base.max_length)) <= TOL
