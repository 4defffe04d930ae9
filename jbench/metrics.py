"""Per-example metrics and corpus aggregations with JP-stable semantics.

Everything here mirrors the reference harness (Stability-AI lm-evaluation-harness, branch ``jp-stable``) down to
the order of floating-point operations, so that aggregated numbers match the published ``result.json`` files
bit for bit, not just to four decimals:

* ``acc`` / ``acc_norm``: per-example argmax (first index wins ties); corpus mean with ``mean_stderr``
  (sample std, n-1, over sqrt(n)).
* ``balanced_acc`` / ``macro_f1``: no stderr. ``mcc``: sklearn value plus the reference's 100000-iteration
  bootstrap stderr, reproduced exactly but vectorised (see :func:`mcc_bootstrap_stderr`).
* ``exact_match`` / ``f1``: the JaSQuAD metric (emoji removal + neologdn + MeCab tokens, :mod:`jbench.jasquad`),
  max over gold answers, corpus value ``100 * sum / total`` (0-100 scale), no stderr.
* The regression gate's stderr for a metric that has none (``jbench check --mode stat`` on macro_f1, or mcc saved
  without one) is :func:`gate_bootstrap_stderr`: a seeded numpy bootstrap on the same confusion-count MCC as the
  fast reference bootstrap above, not the reference's own procedure (it only needs to be reproducible).

Rows or data a metric cannot use raise :class:`jbench.errors.MetricError` (a ``ValueError``) or
:class:`jbench.errors.MetricFieldError` (a ``KeyError``): both are JBenchErrors, reported by the CLI with exit 2.

Sums are computed strictly left to right (the reference uses the built-in ``sum``, which was sequential before
Python 3.12; 3.12+ uses compensated summation, which would change the last bits).

Task definitions name metrics by string; :data:`METRICS` maps those names to their aggregations.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from jbench.errors import MetricError, MetricFieldError
from jbench.jasquad import (MECAB_MAX_CHARS, PUNCT_TOKENS, exact_match_example, f1_example, jasquad_normalize,
                            jasquad_tokens)
from jbench.records import GOLD, GOLDS, PREDICTION

__all__ = [
    "MECAB_MAX_CHARS",
    "METRICS",
    "MetricSpec",
    "MetricValue",
    "PUNCT_TOKENS",
    "aggregate",
    "balanced_mean",
    "exact_match_example",
    "f1_example",
    "gate_bootstrap_stderr",
    "jasquad_normalize",
    "jasquad_tokens",
    "macro_f1",
    "matthews_corrcoef",
    "mcc_bootstrap_stderr",
    "mcc_bootstrap_stderr_reference",
    "mean",
    "mean_stderr",
    "multiple_choice_example",
    "sample_stddev",
]

DEFAULT_BOOTSTRAP_ITERS = 100_000
_BOOTSTRAP_CHUNK = 1000


# --------------------------------------------------------------------------------------------------------------
# Small numeric helpers (reference semantics)
# --------------------------------------------------------------------------------------------------------------


def _seq_sum(values: Iterable[float]) -> float:
    """Left-to-right sum starting from int 0, i.e. the built-in ``sum`` of Python < 3.12.

    Python 3.12 switched float ``sum`` to compensated (Neumaier) summation; the reference results were produced
    with the sequential one, so we never call the built-in on floats.
    """
    total: Any = 0
    for v in values:
        total = total + v
    return total


def mean(values: Sequence[float]) -> float:
    """``sum(arr) / len(arr)`` as in the reference (sequential sum)."""
    return _seq_sum(values) / len(values)


def sample_stddev(values: Sequence[float]) -> float:
    """Sample standard deviation (n-1) with the reference's exact operation order.

    ``(x - mu) ** 2`` deliberately uses Python's float ``**`` (libm ``pow``), not ``x*x``, to match the bits.
    """
    mu = mean(values)
    return math.sqrt(_seq_sum([(x - mu) ** 2 for x in values]) / (len(values) - 1))


def mean_stderr(values: Sequence[float]) -> float | None:
    """Standard error of the mean: ``sample_stddev / sqrt(n)``; None when n < 2 (undefined; the reference would
    raise ZeroDivisionError)."""
    if len(values) < 2:
        return None
    return sample_stddev(values) / math.sqrt(len(values))


# --------------------------------------------------------------------------------------------------------------
# Multiple choice (loglikelihood) per-example metrics
# --------------------------------------------------------------------------------------------------------------


def multiple_choice_example(
    lls: Sequence[float], gold: int, choices: Sequence[str], *, strict: bool = False
) -> dict[str, int]:
    """Score one multiple-choice document from per-choice log-likelihoods.

    * ``pred`` = ``np.argmax(lls)`` (first index wins ties, as in the reference).
    * ``acc`` = 1 if ``pred == gold``. With ``strict=True`` (XWinograd) acc = 1 only if ``lls[gold]`` is strictly
      greater than every other choice, so ties count as wrong; ``pred`` is still the argmax.
    * ``acc_norm`` = 1 if ``argmax(lls / len(choice)) == gold`` where len counts *characters* (``len(str)``),
      not bytes or tokens. Zero-length choices divide by zero like numpy does (inf/nan, no exception).
    """
    if len(lls) == 0:
        raise MetricError("multiple_choice_example: no choices to score")
    if len(lls) != len(choices):
        raise MetricError(f"multiple_choice_example: {len(lls)} log-likelihoods for {len(choices)} choices")
    gold = int(gold)
    if not 0 <= gold < len(lls):
        raise MetricError(f"multiple_choice_example: gold index {gold} out of range for {len(lls)} choices")
    arr = np.asarray(lls, dtype=np.float64)
    pred = int(np.argmax(arr))
    if strict:
        g = arr[gold]
        acc = int(all(g > arr[j] for j in range(len(arr)) if j != gold))
    else:
        acc = int(pred == gold)
    lengths = np.array([float(len(c)) for c in choices])
    with np.errstate(divide="ignore", invalid="ignore"):
        acc_norm = int(int(np.argmax(arr / lengths)) == gold)
    return {"pred": pred, "acc": acc, "acc_norm": acc_norm}


# --------------------------------------------------------------------------------------------------------------
# Balanced-task corpus metrics
# --------------------------------------------------------------------------------------------------------------


def balanced_mean(items: Sequence[tuple[float, Hashable]]) -> float:
    """Mean over gold classes of per-class accuracy. ``items`` are ``(acc, gold)`` pairs.

    Classes are visited in order of first appearance, as the reference's ``defaultdict`` does; this fixes the
    float summation order.
    """
    by_class: dict[Hashable, list[float]] = {}
    for acc, label in items:
        by_class.setdefault(label, []).append(acc)
    avgs = [_seq_sum(vals) / len(vals) for vals in by_class.values()]
    return _seq_sum(avgs) / len(avgs)


def matthews_corrcoef(golds: Sequence[Hashable], preds: Sequence[Hashable]) -> float:
    """``sklearn.metrics.matthews_corrcoef(golds, preds)`` as a Python float."""
    import sklearn.metrics

    return float(sklearn.metrics.matthews_corrcoef(list(golds), list(preds)))


def macro_f1(golds: Sequence[Hashable], preds: Sequence[Hashable]) -> float:
    """``sklearn.metrics.f1_score(average="macro")``; the zero-division warning is silenced (value unchanged)."""
    import sklearn.metrics

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(sklearn.metrics.f1_score(list(golds), list(preds), average="macro"))


def _bootstrap_plan(iters: int) -> tuple[int, int]:
    """(chunk_size, n_chunks) exactly as the reference: ``min(1000, iters)`` and ``iters // chunk_size``.

    Note the reference silently drops a partial last chunk (iters=1500 gives 1000 resamples)."""
    if iters < 2:
        raise MetricError(f"bootstrap needs iters >= 2, got {iters}")
    chunk = min(_BOOTSTRAP_CHUNK, iters)
    return chunk, iters // chunk


def mcc_bootstrap_stderr_reference(
    golds: Sequence[Hashable], preds: Sequence[Hashable], iters: int = DEFAULT_BOOTSTRAP_ITERS
) -> float:
    """Straightforward pure-Python transcription of the reference bootstrap (slow; used to verify the fast path).

    Chunk ``i`` seeds ``random.Random(i)``; each resample is ``rnd.choices(items, k=n)`` fed to sklearn's MCC;
    the stderr is the sample std of all resampled values, chunks in order.
    """
    import random

    items = list(zip(golds, preds))
    if not items:
        raise MetricError("mcc bootstrap on an empty sample")
    chunk, n_chunks = _bootstrap_plan(iters)
    res: list[float] = []
    for i in range(n_chunks):
        rnd = random.Random()
        rnd.seed(i)
        for _ in range(chunk):
            sample = rnd.choices(items, k=len(items))
            res.append(matthews_corrcoef([g for g, _ in sample], [p for _, p in sample]))
    return sample_stddev(res)


def _encode_labels(golds: Sequence[Hashable], preds: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray, int]:
    """Map the union of labels to 0..K-1. MCC is invariant to the label order, so any consistent map works."""
    table: dict[Hashable, int] = {}
    g = np.array([table.setdefault(x, len(table)) for x in golds], dtype=np.int64)
    p = np.array([table.setdefault(x, len(table)) for x in preds], dtype=np.int64)
    return g, p, len(table)


def _mcc_from_counts(n: int, n_correct: np.ndarray, t_sum: np.ndarray, p_sum: np.ndarray) -> np.ndarray:
    """Vectorised sklearn MCC from confusion-matrix marginals (rows = resamples).

    sklearn does this in float64, but every intermediate is an integer below 2**53 (n < 9e7), hence exact; we
    compute them in int64, convert exactly, and then perform the same three rounded operations as sklearn
    (product, sqrt, division), so the results are bit-identical.
    """
    cov_ytyp = (n_correct * n - (t_sum * p_sum).sum(axis=1)).astype(np.float64)
    cov_ypyp = (n * n - (p_sum * p_sum).sum(axis=1)).astype(np.float64)
    cov_ytyt = (n * n - (t_sum * t_sum).sum(axis=1)).astype(np.float64)
    prod = cov_ypyp * cov_ytyt
    out = np.zeros(len(prod), dtype=np.float64)
    nz = prod != 0
    out[nz] = cov_ytyp[nz] / np.sqrt(prod[nz])
    return out


def _confusions(codes: np.ndarray, idx: np.ndarray, k: int) -> np.ndarray:
    """Confusion matrices (r, k, k; rows gold, columns prediction) of r resamples ``idx`` (r, n) of examples whose
    ``codes`` are ``gold * k + pred``. Counts are exact integers, so any metric computed from them is too."""
    r = idx.shape[0]
    flat = np.take(codes, idx, mode="clip") + (np.arange(r, dtype=np.int64) * (k * k))[:, None]
    return np.bincount(flat.ravel(), minlength=r * k * k).reshape(r, k, k)


class _MccChunker:
    """Computes one bootstrap chunk's MCC values without Python-level loops.

    CPython's ``Random(i)`` (i a small non-negative int) is MT19937 seeded with ``init_by_array([i])``, and
    ``random()`` is ``genrand_res53``; ``numpy.random.RandomState([i]).random_sample()`` is the identical stream.
    ``choices(xs, k=n)`` draws one ``random()`` per pick and takes ``xs[floor(random() * n)]``, so a chunk is a
    contiguous block of ``chunk * n`` uniforms. Per resample we need only the confusion marginals, which we get by
    summing per-position packed counters (or a bincount when they do not fit in 63 bits).
    """

    _BLOCK_ELEMS = 1 << 22  # bound memory: resamples per block * n <= ~4M draws

    def __init__(self, golds: np.ndarray, preds: np.ndarray, k: int) -> None:
        self.n = n = len(golds)
        self.k = k
        self.golds, self.preds = golds, preds
        bits = max(n.bit_length(), 1)
        n_counters = 1 + 2 * (k - 1)
        self.packed = n_counters * bits <= 63
        if self.packed:
            # counter layout: [correct][gold==0..k-2][pred==0..k-2], `bits` bits each
            w = (golds == preds).astype(np.int64)
            for c in range(k - 1):
                w |= (golds == c).astype(np.int64) << (bits * (1 + c))
                w |= (preds == c).astype(np.int64) << (bits * (k + c))
            self.weights = w
            self.bits = bits
        else:
            self.codes = golds * k + preds

    def chunk(self, seed: int, count: int) -> np.ndarray:
        n = self.n
        rs = np.random.RandomState([seed])
        per_block = max(1, self._BLOCK_ELEMS // n)
        out = []
        done = 0
        fn = float(n)
        while done < count:
            r = min(per_block, count - done)
            u = rs.random_sample(r * n)
            np.multiply(u, fn, out=u)  # same rounded product as random() * n
            idx = u.astype(np.intp)  # truncation == floor for non-negative values
            out.append(self._mcc_rows(idx.reshape(r, n)))
            done += r
        return np.concatenate(out)

    def _mcc_rows(self, idx: np.ndarray) -> np.ndarray:
        n, k = self.n, self.k
        r = idx.shape[0]
        if self.packed:
            # mode='clip' skips per-element bounds checks (several times faster); floor(u*n) < n always holds
            sums = np.take(self.weights, idx, mode="clip").sum(axis=1)
            mask = (1 << self.bits) - 1
            fields = [(sums >> (self.bits * j)) & mask for j in range(1 + 2 * (k - 1))]
            n_correct = fields[0]
            t = np.stack(fields[1:k] + [np.zeros(r, dtype=np.int64)], axis=1)
            p = np.stack(fields[k:] + [np.zeros(r, dtype=np.int64)], axis=1)
            t[:, k - 1] = n - t[:, : k - 1].sum(axis=1)
            p[:, k - 1] = n - p[:, : k - 1].sum(axis=1)
        else:
            conf = _confusions(self.codes, idx, k)
            n_correct = np.trace(conf, axis1=1, axis2=2)
            t = conf.sum(axis=2)
            p = conf.sum(axis=1)
        return _mcc_from_counts(n, n_correct, t, p)


def mcc_bootstrap_stderr(
    golds: Sequence[Hashable],
    preds: Sequence[Hashable],
    iters: int = DEFAULT_BOOTSTRAP_ITERS,
    *,
    workers: int | None = None,
) -> float:
    """Bootstrap stderr of MCC, bit-identical to the reference's ``bootstrap_stderr(matthews_corrcoef, ...)``.

    Chunks are independent (each has its own seed), so they run on a thread pool (numpy releases the GIL in the
    heavy parts); results are concatenated in chunk order, so the answer does not depend on ``workers``.
    """
    if len(golds) != len(preds):
        raise MetricError(f"mcc bootstrap: {len(golds)} golds vs {len(preds)} preds")
    if len(golds) == 0:
        raise MetricError("mcc bootstrap on an empty sample")
    chunk, n_chunks = _bootstrap_plan(iters)
    g, p, k = _encode_labels(golds, preds)
    if len(g) >= 1 << 26:  # int64 -> float64 exactness bound of _mcc_from_counts
        return mcc_bootstrap_stderr_reference(golds, preds, iters)
    chunker = _MccChunker(g, p, max(k, 1))
    if workers is None:
        workers = min(n_chunks, os.cpu_count() or 1, 8)
    if workers <= 1 or n_chunks == 1:
        parts = [chunker.chunk(i, chunk) for i in range(n_chunks)]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(lambda i: chunker.chunk(i, chunk), range(n_chunks)))
    res = np.concatenate(parts)
    return _sample_stddev_array(res)


#: The regression gate's bootstrap: 1000 resamples of numpy's default generator at a fixed seed (a check must be
#: reproducible, and a band needs no more precision than that). Not the reference's procedure: see mcc_bootstrap_stderr.
GATE_BOOTSTRAP_ITERS = 1000
GATE_BOOTSTRAP_SEED = 1234


def _sklearn_on_counts(metric: str, conf: np.ndarray) -> np.ndarray:
    """scikit-learn's ``mcc`` / ``macro_f1`` of each confusion matrix (r, k, k; rows gold, columns prediction).

    Each resample is passed to sklearn as its non-empty (gold, prediction) cells weighted by their counts: the
    same confusion matrix, hence the same value as sklearn on the resampled rows, at the cost of k² rows instead of
    n. Empty cells are left out so that macro-F1 averages over the labels present in the resample, as sklearn does
    on the rows themselves."""
    import sklearn.metrics
    from sklearn.exceptions import UndefinedMetricWarning

    k = conf.shape[1]
    cell_gold, cell_pred = np.divmod(np.arange(k * k), k)
    out = np.empty(conf.shape[0], dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # value unchanged (0 per label)
        for i, counts in enumerate(conf.reshape(conf.shape[0], k * k)):
            nz = counts > 0
            g, p, w = cell_gold[nz], cell_pred[nz], counts[nz]
            out[i] = (sklearn.metrics.matthews_corrcoef(g, p, sample_weight=w) if metric == "mcc"
                      else sklearn.metrics.f1_score(g, p, average="macro", sample_weight=w))
    return out


def gate_bootstrap_stderr(metric: str, rows: Sequence[dict[str, Any]], *, iters: int = GATE_BOOTSTRAP_ITERS,
                          seed: int = GATE_BOOTSTRAP_SEED) -> float | None:
    """Bootstrap stderr of ``mcc`` / ``macro_f1`` from (gold, prediction) rows, for results that carry no stderr.

    Deterministic (fixed seed) so that a check is reproducible. None when the metric or rows don't allow it (another
    metric, fewer than 2 rows, or a gold / prediction that is not a non-negative int). Each resample's value is
    scikit-learn's own (:func:`_sklearn_on_counts`), as for the run's metric itself.
    """
    if metric not in ("mcc", "macro_f1"):
        return None
    pairs = [(r.get(GOLD), r.get(PREDICTION)) for r in rows]
    if len(pairs) < 2 or not all(isinstance(g, int) and isinstance(p, int) and g >= 0 and p >= 0 for g, p in pairs):
        return None
    gold = np.array([g for g, _ in pairs])
    pred = np.array([p for _, p in pairs])
    n = len(pairs)
    k = int(max(gold.max(), pred.max())) + 1
    idx = np.random.default_rng(seed).integers(0, n, size=(iters, n))
    conf = _confusions(gold * k + pred, idx, k)
    return float(np.std(_sklearn_on_counts(metric, conf), ddof=1))


def _sample_stddev_array(res: np.ndarray) -> float:
    """:func:`sample_stddev` for a float64 array: ``np.add.accumulate`` is strictly sequential, so its last element
    equals the reference's left-to-right sum; the squares still go through Python's ``**``."""
    n = len(res)
    mu = float(np.add.accumulate(res)[-1]) / n
    sq = np.array([(x - mu) ** 2 for x in res.tolist()], dtype=np.float64)
    return math.sqrt(float(np.add.accumulate(sq)[-1]) / (n - 1))


# --------------------------------------------------------------------------------------------------------------
# Corpus aggregation and registry
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricValue:
    """A corpus-level metric. ``stderr`` is None where the reference reports none."""

    value: float
    stderr: float | None


@dataclass(frozen=True)
class MetricSpec:
    """How a named metric is aggregated. ``row_keys`` are the per-example fields it reads."""

    name: str
    row_keys: tuple[str, ...]
    aggregate: Callable[..., MetricValue]
    higher_is_better: bool = True
    scale: str = "0-1"  # or "0-100" for the JaSQuAD metrics


def _column(rows: Sequence[dict], key: str, metric: str) -> list[Any]:
    try:
        return [r[key] for r in rows]
    except KeyError as e:
        raise MetricFieldError(f"metric {metric!r} needs per-example field {key!r}") from e


def _agg_mean(metric: str) -> Callable[..., MetricValue]:
    def agg(rows: Sequence[dict], **_: Any) -> MetricValue:
        vals = _column(rows, metric, metric)
        return MetricValue(mean(vals), mean_stderr(vals))

    return agg


def _agg_balanced_acc(rows: Sequence[dict], **_: Any) -> MetricValue:
    accs = _column(rows, "acc", "balanced_acc")
    golds = _column(rows, "gold", "balanced_acc")
    return MetricValue(balanced_mean(list(zip(accs, golds))), None)


def _agg_mcc(rows: Sequence[dict], *, bootstrap_iters: int = DEFAULT_BOOTSTRAP_ITERS, **_: Any) -> MetricValue:
    golds, preds = _column(rows, GOLD, "mcc"), _column(rows, PREDICTION, "mcc")
    stderr = mcc_bootstrap_stderr(golds, preds, bootstrap_iters) if bootstrap_iters else None
    return MetricValue(matthews_corrcoef(golds, preds), stderr)


def _agg_macro_f1(rows: Sequence[dict], **_: Any) -> MetricValue:
    return MetricValue(macro_f1(_column(rows, GOLD, "macro_f1"), _column(rows, PREDICTION, "macro_f1")), None)


def _squad_scores(rows: Sequence[dict], metric: str) -> list[float]:
    """Per-row scores as the reference sums them.

    The reference keys predictions by ``id`` in a dict, so when ids repeat the *last* prediction for that id is
    scored against every reference with that id. Rows carrying ``id``, ``pred`` and ``golds`` get that treatment;
    otherwise precomputed ``rows[metric]`` values are used as they are.
    """
    fn = exact_match_example if metric == "exact_match" else f1_example
    if rows and all("id" in r and PREDICTION in r and GOLDS in r for r in rows):
        last_pred = {r["id"]: r[PREDICTION] for r in rows}
        if len(last_pred) < len(rows):
            return [fn(last_pred[r["id"]], r[GOLDS]) for r in rows]
    out = []
    for r in rows:
        if metric in r:
            out.append(r[metric])
        elif PREDICTION in r and GOLDS in r:
            out.append(fn(r[PREDICTION], r[GOLDS]))
        else:
            raise MetricFieldError(f"metric {metric!r} needs per-example field {metric!r} or {PREDICTION!r} + {GOLDS!r}")
    return out


def _agg_squad(metric: str) -> Callable[..., MetricValue]:
    def agg(rows: Sequence[dict], **_: Any) -> MetricValue:
        if not rows:
            raise MetricError(f"cannot aggregate {metric!r} over zero examples")
        return MetricValue(100.0 * _seq_sum(_squad_scores(rows, metric)) / len(rows), None)

    return agg


METRICS: dict[str, MetricSpec] = {
    "acc": MetricSpec("acc", ("acc",), _agg_mean("acc")),
    "acc_norm": MetricSpec("acc_norm", ("acc_norm",), _agg_mean("acc_norm")),
    "balanced_acc": MetricSpec("balanced_acc", ("acc", "gold"), _agg_balanced_acc),
    "mcc": MetricSpec("mcc", (GOLD, PREDICTION), _agg_mcc),
    "macro_f1": MetricSpec("macro_f1", (GOLD, PREDICTION), _agg_macro_f1),
    "exact_match": MetricSpec("exact_match", ("exact_match",), _agg_squad("exact_match"), scale="0-100"),
    "f1": MetricSpec("f1", ("f1",), _agg_squad("f1"), scale="0-100"),
}


def aggregate(
    metric: str, per_example: Sequence[dict], *, bootstrap_iters: int = DEFAULT_BOOTSTRAP_ITERS
) -> MetricValue:
    """Aggregate per-example rows (in evaluation order) into the corpus value for ``metric``.

    Rows are stored sample rows (:mod:`jbench.records`): ``acc``/``acc_norm``/``gold``/``prediction`` for
    multiple choice; for generation tasks ``exact_match`` / ``f1`` scores (or ``prediction`` + ``golds`` [+ ``id``]). ``bootstrap_iters`` only affects ``mcc``; 0 skips its
    stderr.
    """
    try:
        spec = METRICS[metric]
    except KeyError:
        raise MetricFieldError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}") from None
    if not per_example:
        raise MetricError(f"cannot aggregate {metric!r} over zero examples")
    return spec.aggregate(per_example, bootstrap_iters=bootstrap_iters)
