"""Tests for jbench.metrics: reference (JP-stable) semantics, bit-exactness of the fast bootstrap, JaSQuAD."""

from __future__ import annotations

import math
import random
import statistics

import numpy as np
import pytest
import sklearn.metrics
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jbench import metrics as M
from jbench.metrics import (
    METRICS,
    MetricValue,
    aggregate,
    exact_match_example,
    f1_example,
    jasquad_normalize,
    jasquad_tokens,
    mcc_bootstrap_stderr,
    mean_stderr,
    multiple_choice_example,
)

# ----------------------------------------------------------------------------------------------------------------
# multiple choice
# ----------------------------------------------------------------------------------------------------------------


def test_acc_tie_goes_to_first_index() -> None:
    r = multiple_choice_example([-1.0, -1.0, -2.0], 1, ["a", "b", "c"])
    assert r == {"pred": 0, "acc": 0, "acc_norm": 0}
    assert multiple_choice_example([-1.0, -1.0, -2.0], 0, ["a", "b", "c"])["acc"] == 1


def test_acc_norm_counts_characters_not_bytes_or_tokens() -> None:
    # "ああ": 2 chars / 6 UTF-8 bytes; "abc": 3 chars / 3 bytes.
    # per char:  -4/2 = -2.0  vs  -5/3 = -1.67  -> index 1
    # per byte:  -4/6 = -0.67 vs  -5/3 = -1.67  -> index 0
    # raw:       -4 > -5                        -> index 0 (acc and a per-token norm with 1 token each agree)
    r = multiple_choice_example([-4.0, -5.0], 1, ["ああ", "abc"])
    assert r["pred"] == 0 and r["acc"] == 0
    assert r["acc_norm"] == 1


def test_acc_norm_tie_first_index_and_float_division() -> None:
    # -3/3 == -2/2 exactly: first index wins
    r = multiple_choice_example([-3.0, -2.0], 1, ["xyz", "xy"])
    assert r["acc_norm"] == 0 and r["acc"] == 1


def test_xwinograd_strict_ties_count_wrong() -> None:
    assert multiple_choice_example([-3.0, -3.0], 0, ["s1", "s2"], strict=True)["acc"] == 0
    assert multiple_choice_example([-3.0, -3.0], 0, ["s1", "s2"])["acc"] == 1  # non-strict: argmax tie -> 0
    assert multiple_choice_example([-3.0, -3.0], 1, ["s1", "s2"], strict=True)["acc"] == 0
    r = multiple_choice_example([-2.0, -3.0], 0, ["s1", "s2"], strict=True)
    assert r["acc"] == 1 and r["pred"] == 0
    r = multiple_choice_example([-2.0, -3.0], 1, ["s1", "s2"], strict=True)
    assert r["acc"] == 0 and r["pred"] == 0
    assert multiple_choice_example([-9.0, -1.0], 1, ["s1", "s2"], strict=True)["acc"] == 1


def test_multiple_choice_input_errors() -> None:
    with pytest.raises(ValueError):
        multiple_choice_example([], 0, [])
    with pytest.raises(ValueError):
        multiple_choice_example([-1.0, -2.0], 0, ["a"])
    with pytest.raises(ValueError):
        multiple_choice_example([-1.0, -2.0], 2, ["a", "b"])


def test_zero_length_choice_does_not_raise() -> None:
    r = multiple_choice_example([-1.0, -2.0], 1, ["", "ab"])
    assert r["acc_norm"] in (0, 1)


# ----------------------------------------------------------------------------------------------------------------
# mean / stderr
# ----------------------------------------------------------------------------------------------------------------


def test_mean_stderr_formula() -> None:
    # mean .75, sample var = (3 * .25**2 + .75**2) / 3 = .25, sd .5, / sqrt(4) = .25 (all exact)
    assert mean_stderr([1, 0, 1, 1]) == 0.25
    rng = random.Random(1)
    xs = [rng.random() for _ in range(50)]
    assert math.isclose(mean_stderr(xs), statistics.stdev(xs) / math.sqrt(50), rel_tol=1e-12)
    assert mean_stderr([1.0]) is None


def test_mean_stderr_matches_lm_eval_implementation_exactly() -> None:
    lm_metrics = pytest.importorskip("lm_eval.api.metrics")
    rng = random.Random(7)
    for n in (2, 17, 1119):
        xs = [float(rng.random() < 0.4) for _ in range(n)]
        assert M.mean(xs) == lm_metrics.mean(xs)
        assert mean_stderr(xs) == lm_metrics.mean_stderr(xs)


@pytest.mark.parametrize(
    ("acc", "n", "published_stderr"),
    [
        (0.3512064343163539, 1119, 0.014276232008753156),  # rinna-1b jcommonsenseqa-1.1-0.2
        (0.37674609695973704, 2434, 0.009823942907406482),  # rinna-1b jnli-1.1-0.2
        (0.8546162009197029, 5654, 0.004688177807265067),  # rinna-1b marc_ja-1.1-0.2
        (0.6454640250260688, 959, 0.015455512877686553),  # rinna-1b xwinograd_ja
    ],
)
def test_acc_aggregate_reproduces_published_result_json(acc: float, n: int, published_stderr: float) -> None:
    k = round(acc * n)
    rows = [{"acc": 1} for _ in range(k)] + [{"acc": 0} for _ in range(n - k)]
    random.Random(0).shuffle(rows)  # the reference sums in shuffled doc order, which we do not know here
    mv = aggregate("acc", rows)
    assert mv.value == acc  # exact: sums of 0/1 do not depend on order
    # the stderr's last bits depend on the summation order; it must agree to a few ulps
    assert math.isclose(mv.stderr, published_stderr, rel_tol=1e-13)


def test_sums_are_sequential_not_compensated() -> None:
    # 1e16 + 1 + 1 - 1e16: left to right gives 0.0 (each +1 is lost), compensated summation gives 2.0
    assert M._seq_sum([1e16, 1.0, 1.0, -1e16]) == 0.0


# ----------------------------------------------------------------------------------------------------------------
# balanced_acc / macro_f1 / mcc values
# ----------------------------------------------------------------------------------------------------------------


def _mc_rows(golds: list[int], preds: list[int]) -> list[dict]:
    return [{"gold": g, "prediction": p, "acc": int(g == p), "acc_norm": int(g == p)} for g, p in zip(golds, preds)]


def test_balanced_acc_hand_computed_and_sklearn() -> None:
    golds = [0, 0, 1, 1, 1, 2]
    preds = [0, 1, 1, 1, 0, 1]
    mv = aggregate("balanced_acc", _mc_rows(golds, preds))
    assert mv.stderr is None
    # classes in first-appearance order: 0 -> 1/2, 1 -> 2/3, 2 -> 0/1
    assert mv.value == (0.5 + 2 / 3 + 0.0) / 3
    assert math.isclose(mv.value, sklearn.metrics.balanced_accuracy_score(golds, preds), rel_tol=1e-15)


def test_macro_f1_and_mcc_equal_sklearn() -> None:
    rng = random.Random(3)
    golds = [rng.randrange(3) for _ in range(300)]
    preds = [g if rng.random() < 0.5 else rng.randrange(3) for g in golds]
    rows = _mc_rows(golds, preds)
    f1 = aggregate("macro_f1", rows)
    assert f1.value == sklearn.metrics.f1_score(golds, preds, average="macro") and f1.stderr is None
    mcc = aggregate("mcc", rows, bootstrap_iters=2000)
    assert mcc.value == sklearn.metrics.matthews_corrcoef(golds, preds)
    assert mcc.stderr is not None and 0 < mcc.stderr < 1
    assert aggregate("mcc", rows, bootstrap_iters=0).stderr is None


# ----------------------------------------------------------------------------------------------------------------
# mcc bootstrap: fast path == reference
# ----------------------------------------------------------------------------------------------------------------


def _py_mcc(items: list[tuple[int, int]]) -> float:
    """sklearn's MCC arithmetic in plain Python floats (all intermediates are exact integers)."""
    labels = sorted({g for g, _ in items} | {p for _, p in items})
    ix = {lab: i for i, lab in enumerate(labels)}
    k = len(labels)
    conf = [[0] * k for _ in range(k)]
    for g, p in items:
        conf[ix[g]][ix[p]] += 1
    t = [float(sum(row)) for row in conf]
    p_ = [float(sum(conf[i][j] for i in range(k))) for j in range(k)]
    n_correct = float(sum(conf[i][i] for i in range(k)))
    n = sum(p_)
    cov_ytyp = n_correct * n - sum(a * b for a, b in zip(t, p_))
    cov_ypyp = n**2 - sum(b * b for b in p_)
    cov_ytyt = n**2 - sum(a * a for a in t)
    prod = cov_ypyp * cov_ytyt
    return 0.0 if prod == 0 else cov_ytyp / math.sqrt(prod)


def _reference_bootstrap(items: list[tuple[int, int]], iters: int, f=_py_mcc) -> float:
    """The reference algorithm, written out plainly: chunk i -> random.Random(i), rnd.choices, sample std."""
    chunk = min(1000, iters)
    res: list[float] = []
    for i in range(iters // chunk):
        rnd = random.Random()
        rnd.seed(i)
        for _ in range(chunk):
            res.append(f(rnd.choices(items, k=len(items))))
    mu = sum(res) / len(res)  # Python 3.11: sequential sum, as in the reference's era
    return math.sqrt(sum([(x - mu) ** 2 for x in res]) / (len(res) - 1))


def _dataset(n: int, k: int, seed: int, p_correct: float = 0.55) -> tuple[list[int], list[int]]:
    rng = random.Random(seed)
    golds = [rng.randrange(k) for _ in range(n)]
    preds = [g if rng.random() < p_correct else rng.randrange(k) for g in golds]
    return golds, preds


def test_numpy_randomstate_stream_equals_cpython_random() -> None:
    """The premise of the fast path: RandomState([i]) == random.Random(i), and choices = floor(random() * n)."""
    for seed in (0, 1, 2, 57, 99):
        rnd = random.Random()
        rnd.seed(seed)
        ours = np.random.RandomState([seed]).random_sample(2000)
        assert [rnd.random() for _ in range(2000)] == ours.tolist()
    for seed, n in ((0, 7), (3, 2434), (5, 4096), (11, 5734)):
        rnd = random.Random(seed)
        expected = rnd.choices(range(n), k=3 * n)  # three consecutive resamples
        u = np.random.RandomState([seed]).random_sample(3 * n)
        assert (u * float(n)).astype(np.intp).tolist() == expected


def test_py_mcc_helper_equals_sklearn() -> None:
    golds, preds = _dataset(80, 3, 1)
    items = list(zip(golds, preds))
    rnd = random.Random(0)
    for _ in range(60):
        s = rnd.choices(items, k=len(items))
        assert _py_mcc(s) == sklearn.metrics.matthews_corrcoef([g for g, _ in s], [p for _, p in s])


@pytest.mark.parametrize(
    ("n", "k", "iters"),
    [
        (60, 3, 2000),  # JNLI-like, packed counters
        (45, 2, 2000),  # MARC-like binary
        (40, 6, 2000),  # many classes: bincount path (11 counters * 6 bits > 63)
        (30, 3, 500),  # one partial-size chunk of 500
        (30, 3, 1500),  # reference drops the remainder: 1000 resamples
    ],
)
def test_fast_bootstrap_equals_reference_exactly(n: int, k: int, iters: int) -> None:
    golds, preds = _dataset(n, k, seed=n * 31 + k)
    expected = _reference_bootstrap(list(zip(golds, preds)), iters)
    assert mcc_bootstrap_stderr(golds, preds, iters) == expected
    assert mcc_bootstrap_stderr(golds, preds, iters, workers=1) == expected
    assert mcc_bootstrap_stderr(golds, preds, iters, workers=3) == expected


def test_fast_bootstrap_equals_lm_eval_bootstrap_internal() -> None:
    """Same check against lm-eval's own chunk worker and sample_stddev (an independent transcription)."""
    lm_metrics = pytest.importorskip("lm_eval.api.metrics")
    golds, preds = _dataset(50, 3, seed=4)
    items = list(zip(golds, preds))
    worker = lm_metrics._bootstrap_internal(_py_mcc, 1000)
    res: list[float] = []
    for i in range(2):
        res.extend(worker((i, items)))
    assert mcc_bootstrap_stderr(golds, preds, 2000) == lm_metrics.sample_stddev(res)


def test_bootstrap_label_types_and_degenerate_cases() -> None:
    golds, preds = _dataset(40, 2, seed=9)
    as_str = mcc_bootstrap_stderr([str(g) for g in golds], [str(p) for p in preds], 2000)
    assert as_str == mcc_bootstrap_stderr(golds, preds, 2000)
    # one class everywhere: every resample has MCC 0 -> stderr 0
    assert mcc_bootstrap_stderr([1] * 20, [1] * 20, 2000) == 0.0
    with pytest.raises(ValueError):
        mcc_bootstrap_stderr([], [], 2000)
    with pytest.raises(ValueError):
        mcc_bootstrap_stderr([0, 1], [0], 2000)
    with pytest.raises(ValueError):
        mcc_bootstrap_stderr([0, 1], [0, 1], 1)


def test_packed_and_bincount_paths_agree() -> None:
    golds, preds = _dataset(300, 3, seed=12)
    g, p, k = M._encode_labels(golds, preds)
    packed = M._MccChunker(g, p, k)
    assert packed.packed
    plain = M._MccChunker(g, p, k)
    plain.packed = False
    plain.codes = g * k + p
    assert np.array_equal(packed.chunk(3, 700), plain.chunk(3, 700))


@pytest.mark.slow
def test_fast_bootstrap_equals_reference_with_sklearn() -> None:
    """Full reference: sklearn.matthews_corrcoef on every resample (slow: ~2000 sklearn calls)."""
    golds, preds = _dataset(60, 3, seed=21)
    items = list(zip(golds, preds))
    expected = _reference_bootstrap(
        items, 2000, f=lambda s: sklearn.metrics.matthews_corrcoef([g for g, _ in s], [p for _, p in s])
    )
    assert mcc_bootstrap_stderr(golds, preds, 2000) == expected


def test_module_reference_transcription_equals_fast_path() -> None:
    golds, preds = _dataset(40, 3, seed=22)
    assert M.mcc_bootstrap_stderr_reference(golds, preds, 150) == mcc_bootstrap_stderr(golds, preds, 150)


@pytest.mark.slow
def test_default_bootstrap_runs_at_jnli_size() -> None:
    golds, preds = _dataset(2434, 3, seed=5, p_correct=0.4)
    se = mcc_bootstrap_stderr(golds, preds)
    assert 0.005 < se < 0.05


# ----------------------------------------------------------------------------------------------------------------
# JaSQuAD
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("１２３", "123"),  # full-width digits
        ("ＡＢＣ", "ABC"),  # full-width letters, no lower-casing
        ("ｶﾞｲﾄﾞ", "ガイド"),  # half-width katakana
        ("東京 タワー", "東京タワー"),  # space between Japanese characters removed
        ("Hello   World", "Hello World"),  # ASCII words keep one space
        ("  a   b  ", "a b"),
        ("😀東京🚀", "東京"),  # emoji
        ("✂はさみ", "はさみ"),  # U+2702 dingbat range
        ("☺東京", "東京"),  # emoji.is_emoji
        ("ウェーーーイ", "ウェーイ"),  # repeated long vowel mark collapsed
        ("東京。", "東京。"),  # punctuation is NOT removed by normalization
        ("", ""),
    ],
)
def test_jasquad_normalize(raw: str, normalized: str) -> None:
    assert jasquad_normalize(raw) == normalized


def test_jasquad_tokens_drop_single_punctuation_tokens() -> None:
    assert jasquad_tokens("東京都に住む") == ["東京", "都", "に", "住む"]
    assert jasquad_tokens("「東京」") == ["東京"]
    assert jasquad_tokens("東京、大阪") == ["東京", "大阪"]
    assert jasquad_tokens("《東京") == ["《", "東京"]  # "《" is not in the reference list (only "》" is)
    assert jasquad_tokens("") == []


@pytest.mark.parametrize(
    ("pred", "golds", "em"),
    [
        ("１２３", ["123"], 1.0),
        ("東京 タワー", ["東京タワー"], 1.0),
        ("😀東京🚀", ["東京"], 1.0),
        ("ｶﾞｲﾄﾞ", ["ガイド"], 1.0),
        ("ウェーーーイ", ["ウェーイ"], 1.0),
        ("ＡＢＣ", ["abc"], 0.0),  # no lower-casing
        ("Hello World", ["HelloWorld"], 0.0),
        ("東京。", ["東京"], 0.0),  # EM keeps punctuation
        ("東京", ["大阪", "東京"], 1.0),  # max over golds
        ("東京", "東京", 1.0),  # a single gold string is accepted
        ("", [""], 1.0),
    ],
)
def test_exact_match_example(pred: str, golds: list[str], em: float) -> None:
    assert exact_match_example(pred, golds) == em


def _f1(p: int, g: int, same: int) -> float:
    precision = 1.0 * same / p
    recall = 1.0 * same / g
    return (2 * precision * recall) / (precision + recall)


@pytest.mark.parametrize(
    ("pred", "golds", "f1"),
    [
        ("東京都に住む", ["東京都"], _f1(4, 2, 2)),  # [東京 都 に 住む] vs [東京 都]
        ("日本一の山、富士山", ["富士山"], _f1(6, 2, 2)),  # 、 dropped; 山 counted once (Counter min)
        ("《東京", ["東京"], _f1(2, 1, 1)),
        ("「東京」", ["東京"], 1.0),  # punctuation tokens removed for F1
        ("東京。", ["東京"], 1.0),
        ("１２３", ["123"], 1.0),
        ("大阪", ["東京"], 0.0),
        ("東京", ["大阪", "東京タワー", "東京"], 1.0),  # max over golds
        ("東京", ["東京タワー"], _f1(1, 2, 1)),
        ("", [""], 0.0),  # no tokens -> num_same == 0 -> 0 (while EM is 1)
        ("", ["東京"], 0.0),
    ],
)
def test_f1_example(pred: str, golds: list[str], f1: float) -> None:
    assert f1_example(pred, golds) == f1


def test_jasquad_needs_a_gold() -> None:
    with pytest.raises(ValueError):
        exact_match_example("x", [])
    with pytest.raises(ValueError):
        f1_example("x", [])


def test_squad_aggregation_scale_and_published_value() -> None:
    rows = [{"exact_match": 1.0, "f1": 0.5}, {"exact_match": 0.0, "f1": 0.25}]
    assert aggregate("exact_match", rows) == MetricValue(50.0, None)
    assert aggregate("f1", rows) == MetricValue(37.5, None)
    # rinna-1b jsquad-1.1-0.2 exact_match: 1163 of 4442 -> the published float exactly
    rows = [{"exact_match": 1.0}] * 1163 + [{"exact_match": 0.0}] * (4442 - 1163)
    assert aggregate("exact_match", rows).value == 26.181900045024765


def test_squad_aggregation_from_text_and_duplicate_ids() -> None:
    rows = [
        {"id": "q1", "prediction": "東京", "golds": ["東京"]},
        {"id": "q2", "prediction": "大阪", "golds": ["東京"]},
    ]
    assert aggregate("exact_match", rows).value == 50.0
    # the reference keys predictions by id: with a repeated id, the last prediction is scored for both
    rows[1]["id"] = "q1"
    assert aggregate("exact_match", rows).value == 0.0
    assert aggregate("f1", rows).value == 0.0


# hypothesis: arbitrary Unicode never crashes and scores stay in range
_text = st.text(max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pred=_text, golds=st.lists(_text, min_size=1, max_size=3))
def test_jasquad_arbitrary_unicode(pred: str, golds: list[str]) -> None:
    em = exact_match_example(pred, golds)
    f1 = f1_example(pred, golds)
    assert em in (0.0, 1.0)
    assert 0.0 <= f1 <= 1.0
    assert isinstance(jasquad_normalize(pred), str)
    assert all(t not in M.PUNCT_TOKENS for t in jasquad_tokens(pred))


@settings(max_examples=100, deadline=None)
@given(s=_text)
def test_jasquad_self_match(s: str) -> None:
    assert exact_match_example(s, [s]) == 1.0
    assert f1_example(s, [s]) == (1.0 if jasquad_tokens(s) else 0.0)


@settings(max_examples=100, deadline=None)
@given(
    lls=st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=1, max_size=6),
    data=st.data(),
)
def test_multiple_choice_properties(lls: list[float], data: st.DataObject) -> None:
    choices = data.draw(st.lists(st.text(min_size=1, max_size=8), min_size=len(lls), max_size=len(lls)))
    gold = data.draw(st.integers(0, len(lls) - 1))
    r = multiple_choice_example(lls, gold, choices)
    assert r["pred"] == lls.index(max(lls))  # first maximal index
    s = multiple_choice_example(lls, gold, choices, strict=True)
    assert s["acc"] <= r["acc"]
    assert s["acc"] == int(all(lls[gold] > x for j, x in enumerate(lls) if j != gold))


# ----------------------------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------------------------


def test_registry_names_and_errors() -> None:
    assert set(METRICS) == {"acc", "acc_norm", "balanced_acc", "mcc", "macro_f1", "exact_match", "f1"}
    assert METRICS["exact_match"].scale == "0-100" and METRICS["acc"].scale == "0-1"
    with pytest.raises(KeyError):
        aggregate("bleu", [{"acc": 1}])
    with pytest.raises(ValueError):
        aggregate("acc", [])
    with pytest.raises(KeyError):
        aggregate("acc_norm", [{"acc": 1}])
    mv = aggregate("acc_norm", [{"acc_norm": 1}, {"acc_norm": 0}])
    assert mv.value == 0.5 and mv.stderr == math.sqrt(0.5) / math.sqrt(2)


def test_gate_bootstrap_values_are_sklearns_on_the_resampled_rows() -> None:
    """The regression gate's bootstrap scores each resample with scikit-learn itself (no re-implementation): the
    weighted-cell call equals sklearn on the resampled rows, also when a label is absent from a resample."""
    import warnings

    import numpy as np
    import sklearn.metrics

    from jbench.metrics import _confusions, _sklearn_on_counts, gate_bootstrap_stderr

    rng = np.random.default_rng(5)
    gold = rng.integers(0, 3, size=40)
    pred = np.where(rng.random(40) < 0.6, gold, rng.integers(0, 3, size=40))
    gold[:3] = 3  # a rare label that some resamples miss
    idx = rng.integers(0, 40, size=(30, 40))
    conf = _confusions(gold * 4 + pred, idx, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mcc = [sklearn.metrics.matthews_corrcoef(gold[i], pred[i]) for i in idx]
        f1 = [sklearn.metrics.f1_score(gold[i], pred[i], average="macro") for i in idx]
    assert np.allclose(_sklearn_on_counts("mcc", conf), mcc, rtol=0, atol=1e-12)
    assert np.allclose(_sklearn_on_counts("macro_f1", conf), f1, rtol=0, atol=1e-12)
    assert any(3 not in gold[i] for i in idx)  # the absent-label case was exercised
    rows = [{"gold": int(g), "prediction": int(p)} for g, p in zip(gold, pred)]
    assert gate_bootstrap_stderr("mcc", rows) == gate_bootstrap_stderr("mcc", rows) > 0
    assert gate_bootstrap_stderr("acc", rows) is None
