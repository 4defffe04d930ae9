"""Torch-free request planning shared by the scoring backends: what runs, in which order and with which sharing.

Why a module of its own: deciding *what* to run -- tokenized requests (:class:`Item`), groups that share a prefix
(:func:`group_by_prefix`), families that share a header (:func:`header_families`), and packed rows
(:func:`pack_rows`, :func:`packed_layout`) -- is plain token bookkeeping. Kept apart from the torch code that runs it,
it can be read and tested without a model, and the GGUF (llama.cpp) backend reuses the same request types and
tokenization rules as the HF scorer, so that the two backends cannot drift apart. This module must not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

from jbench.models.base import GenerationRequest, LoglikelihoodRequest, Tokenizer, encode_context, model_input

#: longest packed row (prefix + member suffixes): its attention mask and scores grow with the square of it.
PACKED_ROW_CAP = 4096
#: packed rows are at least this wide, so that several short groups (XWinograd's sentence pairs) fill one row
#: instead of each padding a row to the longest group's width; attention over a row this wide is cheap next to
#: the linear layers, whose cost is per token, padding included.
PACKED_ROW_MIN = 256
#: a header (the tokens every prompt of a family starts with) shorter than this is not worth its own forward and
#: the cache copies: it simply stays in each row.
MIN_HEADER = 16

#: (row, column, target token, owner item index) of every scored position of one forward.
Scored = tuple[list[int], list[int], list[int], list[int]]


# ----------------------------------------------------------------------------------------------------------------
# tokenized requests
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One tokenized loglikelihood request: logits at positions ``L-n_cont .. L-1`` of ``inp`` score ``targets``."""

    index: int
    inp: tuple[int, ...]
    n_cont: int
    targets: tuple[int, ...]

    @property
    def first_scored(self) -> int:
        return len(self.inp) - self.n_cont


def loglikelihood_item(index: int, ctx: Sequence[int], cont: Sequence[int], max_length: int) -> Item:
    """The :class:`Item` for context ids ``ctx`` and continuation ids ``cont``: the model input is
    ``(ctx + cont)[-(max_length + 1):][:-1]`` (:func:`model_input`), the targets the last ``n_cont`` tokens."""
    inp, n_cont = model_input(ctx, cont, max_length)
    whole = (list(ctx) + list(cont))[-(max_length + 1):]
    targets = tuple(whole[len(whole) - n_cont:]) if n_cont else ()
    return Item(index, tuple(inp), n_cont, targets)


def tokenize_requests(tokenizer: Tokenizer, requests: Sequence[LoglikelihoodRequest], max_length: int) -> list[Item]:
    """One :class:`Item` per request, in request order (context per :func:`encode_context`, the continuation
    encoded alone; each distinct string is encoded once)."""
    ctx_cache: dict[str, list[int]] = {}
    cont_cache: dict[str, list[int]] = {}
    items = []
    for i, req in enumerate(requests):
        ctx = ctx_cache.get(req.context)
        if ctx is None:
            ctx = ctx_cache[req.context] = encode_context(tokenizer, req.context)
        cont = cont_cache.get(req.continuation)
        if cont is None:
            cont = cont_cache[req.continuation] = list(tokenizer.encode(req.continuation))
        items.append(loglikelihood_item(i, ctx, cont, max_length))
    return items


def generation_row(tokenizer: Tokenizer, req: GenerationRequest, max_length: int) -> tuple[list[int], int | None, int]:
    """(context ids, stop id, cap) per the reference's ``greedy_until``: stop on the last token of
    ``encode(until)`` (else EOS), at most ``max_gen_tokens`` new tokens, the context left-truncated to leave room."""
    cap = max(0, int(req.max_gen_tokens))
    until_ids = tokenizer.encode(req.until) if req.until else []
    stop = int(until_ids[-1]) if until_ids else tokenizer.eos_token_id
    ctx = encode_context(tokenizer, req.context)[cap - max_length :]  # the reference's slice, verbatim
    if not ctx:
        ctx = encode_context(tokenizer, "")
    return ctx, stop, cap


def generation_text(tokenizer: Tokenizer, tokens: Sequence[int], until: str | None) -> str:
    """The decoded new tokens, cut at the first ``until``."""
    s = tokenizer.decode(tokens) if tokens else ""
    return s.split(until)[0] if until else s


# ----------------------------------------------------------------------------------------------------------------
# prefix groups and header families
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Group:
    """Items whose model inputs share ``prefix`` (run once); member suffixes are ``inp[len(prefix):]``."""

    prefix: tuple[int, ...]
    members: list[Item] = field(default_factory=list)


def _lcp(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """Longest common prefix length by binary search on tuple slices (compared in C)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def group_by_prefix(items: Sequence[Item]) -> list[Group]:
    """Partition items into groups whose common prefix runs once, minimising the tokens run.

    Items are sorted by token sequence, so inputs sharing a context (or, for XWinograd's empty context, the leading
    words of the two sentences) become neighbours. A sorted range either stays one group (prefix = the range's
    minimum neighbour LCP ``m``; cost ``m + sum(L - m)``) or splits where the neighbour LCP equals ``m``, whichever
    runs fewer tokens (a range with ``m == 0`` must split; a single item is its own prefix)."""
    order = sorted(items, key=lambda it: it.inp)
    if not order:
        return []
    adj = [_lcp(order[i].inp, order[i + 1].inp) for i in range(len(order) - 1)]
    lens = [len(it.inp) for it in order]
    spans = _solve_spans(adj, lens, 0, len(order), 0)[1]
    return [Group(order[lo].inp[:p], order[lo:hi]) for lo, hi, p in spans]


def _solve_spans(adj: list[int], lens: list[int], lo: int, hi: int, depth: int) -> tuple[int, list[tuple[int, int, int]]]:
    """(tokens run, [(lo, hi, prefix_len)]) for the sorted range ``[lo, hi)`` (see :func:`group_by_prefix`)."""
    if hi - lo == 1:
        return lens[lo], [(lo, hi, lens[lo])]
    m = min(adj[lo : hi - 1])
    keep_cost = m + sum(lens[lo:hi]) - (hi - lo) * m
    if m > 0 and depth > 200:  # pathological nesting: stop refining
        return keep_cost, [(lo, hi, m)]
    split_cost, spans, start = 0, [], lo
    for i in range(lo, hi):
        if i == hi - 1 or adj[i] == m:
            c, sp = _solve_spans(adj, lens, start, i + 1, depth + 1)
            split_cost += c
            spans.extend(sp)
            start = i + 1
    if m > 0 and keep_cost <= split_cost:
        return keep_cost, [(lo, hi, m)]
    return split_cost, spans


def header_families(prefixes: Sequence[tuple[int, ...]], lens: Sequence[int]) -> list[tuple[int, list[int]]]:
    """Partition rows into ``(header length, row indices)`` families: the rows of a family all start with the same
    ``header length`` tokens (their ``prefixes``, already cut where the row's first scored position begins), which
    then run once for the whole family instead of once per row.

    Why: a task's prompts share a description / instruction across documents (and, by chance, a first few-shot
    example), but per-document grouping (:func:`group_by_prefix`) only shares within a document. The rows are sorted
    and split by the same token-count rule as the groups (``lens`` = tokens each row would run); families of one row
    or with a header under :data:`MIN_HEADER` tokens go, together, into a last family with no header (length 0)."""
    order = sorted(range(len(prefixes)), key=lambda i: prefixes[i])
    if not order:
        return []
    adj = [_lcp(prefixes[order[k]], prefixes[order[k + 1]]) for k in range(len(order) - 1)]
    spans = _solve_spans(adj, [lens[i] for i in order], 0, len(order), 0)[1]
    families, rest = [], []
    for lo, hi, h in spans:
        if hi - lo >= 2 and h >= MIN_HEADER:
            families.append((h, sorted(order[lo:hi])))
        else:
            rest.extend(order[lo:hi])
    if rest:
        families.append((0, sorted(rest)))
    return families


# ----------------------------------------------------------------------------------------------------------------
# packed rows: one row per group = prefix + every member's suffix
# ----------------------------------------------------------------------------------------------------------------


def packed_len(g: Group) -> int:
    return len(g.prefix) + sum(max(0, len(m.inp) - len(g.prefix)) for m in g.members)


def split_packed(g: Group, cap: int) -> list[Group]:
    """Split a group whose packed row would exceed ``cap`` tokens into groups with the same prefix (each re-runs
    it), so that many items sharing a short prefix (e.g. only XWinograd's [eos]) never make one huge row."""
    if packed_len(g) <= cap:
        return [g]
    p = len(g.prefix)
    parts: list[Group] = []
    cur: list[Item] = []
    size = p
    for m in g.members:
        s = max(0, len(m.inp) - p)
        if cur and size + s > cap:
            parts.append(Group(g.prefix, cur))
            cur, size = [], p
        cur.append(m)
        size += s
    parts.append(Group(g.prefix, cur))
    return parts


def pack_rows(groups: list[Group], h: int, rows_limit: Callable[[int, int], int],
              min_width: int) -> Iterator[list[list[Group]]]:
    """Forwards of packed rows, each row a list of groups. Groups come longest first; the first one of a forward
    sets the row width (at least ``min_width``) and each later group goes into the first row with room left
    (first-fit decreasing), so short groups share a row instead of each padding one to the width (XWinograd's
    sentence pairs, the short documents of a task). A forward closes at ``rows_limit(width, width + h)`` rows.
    ``h``: tokens of a shared header (not in the rows)."""
    start = 0
    while start < len(groups):
        width = max(packed_len(groups[start]) - h, min_width)
        limit = rows_limit(width, width + h)
        rows: list[list[Group]] = []
        room: list[int] = []
        i = start
        while i < len(groups):
            need = packed_len(groups[i]) - h
            slot = next((k for k, left in enumerate(room) if left >= need), None)
            if slot is None:
                if len(rows) == limit:
                    break
                rows.append([])
                room.append(width)
                slot = len(rows) - 1
            rows[slot].append(groups[i])
            room[slot] -= need
            i += 1
        yield rows
        start = i


@dataclass
class PackedLayout:
    """Where every token of a forward of packed rows sits: per row its ``tokens``, group id, segment id (0: a
    group's prefix; one id per member suffix) and position id, and the ``scored`` positions."""

    rows: list[tuple[list[int], list[int], list[int], list[int]]]
    scored: Scored


def packed_layout(rows: list[list[Group]], h: int = 0) -> PackedLayout:
    """Lay out packed rows. A group packs as its prefix followed by each member's suffix; suffix tokens continue the
    prefix's position ids. With a shared header of ``h`` tokens (already run), groups hold ``prefix[h:]`` onwards."""
    packed: list[tuple[list[int], list[int], list[int], list[int]]] = []  # per row: tokens, group, segment, pos
    places: list[tuple[int, int, Item, int, int]] = []  # (row, prefix length p, item, prefix base, offset)
    n_seg = 0
    for r, row in enumerate(rows):
        toks: list[int] = []
        grp: list[int] = []
        seg: list[int] = []
        pos: list[int] = []
        for g in row:
            n_seg += 1
            gid, p = n_seg, len(g.prefix)
            base = len(toks) - h  # prefix position j (h <= j < p) sits at row index base + j
            toks.extend(g.prefix[h:])
            grp.extend([gid] * (p - h))
            seg.extend([0] * (p - h))
            pos.extend(range(h, p))
            for m in g.members:
                places.append((r, p, m, base, len(toks) - p))  # member position j >= p sits at j + offset
                if len(m.inp) > p:
                    n_seg += 1
                    toks.extend(m.inp[p:])
                    grp.extend([gid] * (len(m.inp) - p))
                    seg.extend([n_seg] * (len(m.inp) - p))
                    pos.extend(range(p, len(m.inp)))
        packed.append((toks, grp, seg, pos))
    # scored positions: member position j (first_scored <= j < L) -> row index base + j (prefix) or j + offset
    r_idx, c_idx, targets, owners = [], [], [], []
    for r, p, m, base, offset in places:
        for j in range(m.first_scored, len(m.inp)):
            r_idx.append(r)
            c_idx.append(base + j if j < p else j + offset)
            targets.append(m.targets[j - m.first_scored])
            owners.append(m.index)
    return PackedLayout(packed, (r_idx, c_idx, targets, owners))
