"""Discovery's statistics equal scipy's own calls on the same numbers, feature by feature; the ranking cannot be won
by one prompt; the chunking changes nothing; bad input is one line."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.stats

from personamine.discovery.stats import (
    MIN_SUPPORT,
    FeatureStatistics,
    auroc,
    auroc_ci,
    compare,
    rank_order,
    split_half_cosine,
)
from personamine.errors import PersonamineError

TOLERANCE = 1e-9
N_BOOT = 400  # enough resamples for distinct percentiles, few enough to keep scipy's per-feature references fast


def sparse_codes(n_a: int, n_b: int, n_features: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 SAE-like codes: mostly zero, persona firing more often and higher; feature 0 silent everywhere,
    feature 1 equal on both prompts of every pair (when n_a == n_b), feature 2 constant on each side."""
    rng = np.random.default_rng(seed)
    a = (rng.random((n_a, n_features)) < 0.4) * rng.gamma(2.0, 1.5, (n_a, n_features))
    b = (rng.random((n_b, n_features)) < 0.25) * rng.gamma(2.0, 1.0, (n_b, n_features))
    a[:, 0] = b[:, 0] = 0
    if n_a == n_b:
        b[:, 1] = a[:, 1]
    a[:, 2], b[:, 2] = 1.5, 0.5
    return a.astype(np.float32), b.astype(np.float32)


def reference_bootstrap(x: np.ndarray, y: np.ndarray, paired: bool, seed: int) -> tuple[float, float]:
    """scipy.stats.bootstrap on the raw values of one feature, the difference of means as its statistic."""
    if paired:
        def statistic(x, y, axis=-1):
            return np.mean(x - y, axis=axis)
    else:
        def statistic(x, y, axis=-1):
            return np.mean(x, axis=axis) - np.mean(y, axis=axis)
    result = scipy.stats.bootstrap((x, y), statistic, paired=paired, n_resamples=N_BOOT, method="percentile",
                                   confidence_level=0.9, rng=np.random.default_rng(seed))
    return result.confidence_interval.low, result.confidence_interval.high


@pytest.mark.parametrize("paired", [True, False])
def test_every_number_is_scipys_own_call_on_the_same_numbers(paired):
    n_a, n_b = (32, 32) if paired else (32, 24)
    a, b = sparse_codes(n_a, n_b, 14, seed=3)
    found = compare(a, b, paired=paired, n_boot=N_BOOT, seed=7, level=0.9, feature_chunk=5)
    x, y = a.astype(np.float64), b.astype(np.float64)  # the same numbers scipy is given
    assert (found.paired, found.n_boot, found.seed, found.level) == (paired, N_BOOT, 7, 0.9)
    np.testing.assert_allclose(found.mean_a, x.mean(0), rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(found.mean_b, y.mean(0), rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(found.mean_difference, x.mean(0) - y.mean(0), rtol=0, atol=TOLERANCE)
    assert found.fires_a.tolist() == (a > 0).sum(0).tolist() and found.fires_b.tolist() == (b > 0).sum(0).tolist()
    assert found.tested.tolist() == ((a > 0).any(0) | (b > 0).any(0)).tolist() and not found.tested[0]

    tested = np.flatnonzero(found.tested)
    for j in tested:
        if paired and np.all(x[:, j] == y[:, j]):
            expected_p = 1.0  # every pair ties: no evidence either way (scipy's z is 0/0)
        elif paired:
            expected_p = scipy.stats.wilcoxon(x[:, j], y[:, j], zero_method="pratt", method="asymptotic").pvalue
        else:
            expected_p = scipy.stats.mannwhitneyu(x[:, j], y[:, j], method="asymptotic").pvalue
        assert found.p_value[j] == pytest.approx(expected_p, rel=0, abs=TOLERANCE), j
        low, high = reference_bootstrap(x[:, j], y[:, j], paired, seed=7)
        assert found.ci_low[j] == pytest.approx(low, rel=0, abs=TOLERANCE), j
        assert found.ci_high[j] == pytest.approx(high, rel=0, abs=TOLERANCE), j
    assert paired == (found.p_value[1] == 1.0)  # the feature equal on both prompts of every pair
    expected_q = scipy.stats.false_discovery_control(found.p_value[tested], method="bh")
    np.testing.assert_allclose(found.q_value[tested], expected_q, rtol=0, atol=TOLERANCE)
    for untested in (found.p_value, found.q_value, found.ci_low, found.ci_high):
        assert np.isnan(untested[~found.tested]).all() and not np.isnan(untested[found.tested]).any()

    with np.errstate(divide="ignore", invalid="ignore"):  # sd 0 on the constant features, checked NaN below
        if paired:
            d = x - y
            expected_effect = d.mean(0) / d.std(0, ddof=1)
            expected_support = (x > y).sum(0)
            constant = np.ptp(d, axis=0) == 0
        else:
            pooled = np.sqrt(((n_a - 1) * x.var(0, ddof=1) + (n_b - 1) * y.var(0, ddof=1)) / (n_a + n_b - 2))
            expected_effect = (x.mean(0) - y.mean(0)) / pooled
            expected_support = (x > y.max(0)).sum(0)
            constant = (np.ptp(x, axis=0) == 0) & (np.ptp(y, axis=0) == 0)
    assert constant[:3].tolist() == [True, paired, True]  # silent; equal pairs (paired); constant sides
    assert constant[3:].sum() == 0
    np.testing.assert_allclose(found.effect_size[~constant], expected_effect[~constant], rtol=1e-12, atol=0)
    assert np.isnan(found.effect_size[constant]).all()
    assert found.support.tolist() == expected_support.tolist()


def test_a_feature_one_prompt_decides_has_support_1_and_ranks_below_one_every_prompt_carries():
    rng = np.random.default_rng(0)
    n = 32
    a = np.zeros((n, 4), dtype=np.float32)
    b = np.zeros((n, 4), dtype=np.float32)
    a[5, 0] = 20.0  # one persona prompt: mean difference 20 / 32 = 0.625, never on a control
    a[:, 1] = rng.uniform(0.9, 1.1, n)  # every persona prompt and every control, persona higher by ~0.3
    b[:, 1] = rng.uniform(0.6, 0.8, n)
    a[:, 3] = b[:, 3] = rng.uniform(0, 1, n)  # the same on both sides of every pair
    for paired in (True, False):
        found = compare(a, b, paired=paired, n_boot=1000, seed=0)
        assert found.mean_difference[0] > found.mean_difference[1] > 0
        assert found.support[0] == 1 < MIN_SUPPORT and found.support[1] == n
        assert found.ci_low[0] == 0.0 < found.ci_low[1]  # a resample leaves prompt 5 out with p ~ 0.36
        order = rank_order(found)
        assert order.tolist().index(1) < order.tolist().index(0)
        assert 2 not in order.tolist()  # untested: never ranked
        assert found.fires_a[0] == 1 and found.fires_b[0] == 0


def test_rank_order_breaks_ties_by_mean_difference_then_feature_index():
    ones, features = np.ones(10), 10
    ci_low = np.array([9, 0, 0, 0, 0, 0.5, 0.2, 0.5, 0.9, 0.1])  # feature 0 is untested: its bound is ignored
    mean_difference = np.array([0, 0, 3, 3, 2, 1, 1, 1, 1, 1.0])
    found = FeatureStatistics(
        mean_a=mean_difference, mean_b=np.zeros(features), mean_difference=mean_difference, ci_low=ci_low,
        ci_high=ones * 9, p_value=ones, q_value=ones, effect_size=ones, fires_a=np.ones(features, dtype=int),
        fires_b=np.zeros(features, dtype=int), support=np.ones(features, dtype=int),
        tested=np.arange(features) > 0, paired=True, n_boot=1000, seed=0, level=0.95)
    assert rank_order(found).tolist() == [8, 5, 7, 6, 9, 2, 3, 4, 1]


def test_the_ci_is_the_same_whatever_the_feature_chunk():
    a, b = sparse_codes(32, 32, 3000, seed=11)
    for paired in (True, False):
        runs = [compare(a, b, paired=paired, n_boot=200, seed=5, feature_chunk=chunk) for chunk in (4096, 1000, 257)]
        for run in runs[1:]:
            for name in ("ci_low", "ci_high", "p_value", "q_value", "effect_size"):
                # equal to the last bit with numpy's OpenBLAS; 1e-12 leaves room for a BLAS whose product kernel
                # depends on the chunk's shape
                np.testing.assert_allclose(getattr(run, name), getattr(runs[0], name), rtol=0, atol=1e-12,
                                           err_msg=name)
            assert run.support.tolist() == runs[0].support.tolist()
        other_seed = compare(a, b, paired=paired, n_boot=200, seed=6, feature_chunk=1000)
        assert not np.allclose(other_seed.ci_low[runs[0].tested], runs[0].ci_low[runs[0].tested])


def test_bad_input_is_one_line():
    a, b = sparse_codes(8, 8, 6, seed=0)
    cases = [
        (dict(a=a, b=b[:7], paired=True), r"paired statistics need one row of b per row of a; a has 8 rows and b 7"),
        (dict(a=a[:1], b=b[:1], paired=False), r"a has 1 row\(s\): statistics need at least 2 prompts a side"),
        (dict(a=a, b=b[:, :5], paired=False), r"a has 6 features and b 5: both sides need the same columns"),
        (dict(a=a[0], b=b, paired=False), r"a must be a 2-D numpy array \[prompts, features\], got \(6,\)"),
        (dict(a=a.astype(complex), b=b, paired=False), r"a must hold real numbers, got dtype complex128"),
        (dict(a=a, b=b, paired=True, level=1.0), r"level must be strictly between 0 and 1"),
        (dict(a=a, b=b, paired=True, n_boot=0), r"n_boot must be a positive integer, got 0"),
        (dict(a=a, b=b, paired=True, feature_chunk=0), r"feature_chunk must be a positive integer, got 0"),
    ]
    nan_b, inf_a = b.copy(), a.copy()
    nan_b[3, 4] = np.nan
    inf_a[[2, 6], [1, 0]] = np.inf
    cases += [(dict(a=a, b=nan_b, paired=True), r"b holds nan at row 3, column 4 \(1 of 48 values non-finite\)"),
              (dict(a=inf_a, b=b, paired=True), r"a holds inf at row 2, column 1 \(2 of 48 values non-finite\)")]
    for kwargs, message in cases:
        with pytest.raises(PersonamineError, match=message) as caught:
            compare(**kwargs)
        assert "\n" not in str(caught.value)
    with pytest.raises(PersonamineError, match="paired scores need one negative per positive; got 3 positive and 2"):
        auroc_ci(np.ones(3), np.ones(2), paired=True)
    with pytest.raises(PersonamineError, match="negative has 0 score"):
        auroc(np.ones(3), np.ones(0))
    with pytest.raises(PersonamineError, match="positive holds nan at position 1"):
        auroc(np.array([0.0, np.nan]), np.ones(2))
    with pytest.raises(PersonamineError, match=r"a has 3 dimensions and b 4"):
        split_half_cosine(np.ones((4, 3)), np.ones((4, 4)), paired=False)
    with pytest.raises(PersonamineError, match="n_splits must be a positive integer"):
        split_half_cosine(np.ones((4, 3)), np.ones((4, 3)), paired=False, n_splits=0)


def brute_force_auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    pairs = list(itertools.product(positive, negative))
    return sum(1.0 if p > q else 0.5 if p == q else 0.0 for p, q in pairs) / len(pairs)


def test_auroc_is_the_pairwise_count_and_its_ci_scipys_bootstrap():
    rng = np.random.default_rng(2)
    positive = np.round(rng.gamma(2.0, 1.0, 20), 1)  # rounded: ties between and within the sides
    negative = np.round(rng.gamma(1.5, 1.0, 20), 1)
    assert auroc(positive, negative) == pytest.approx(brute_force_auroc(positive, negative), rel=0, abs=TOLERANCE)
    assert auroc(positive[:7], negative) == pytest.approx(brute_force_auroc(positive[:7], negative), abs=TOLERANCE)
    assert auroc(np.zeros(4), np.zeros(3)) == 0.5 and auroc(np.ones(2), np.zeros(5)) == 1.0
    for paired in (True, False):
        low, high = auroc_ci(positive, negative, paired=paired, n_boot=300, seed=4, level=0.9)
        expected = scipy.stats.bootstrap((positive, negative), brute_force_auroc, paired=paired, vectorized=False,
                                         n_resamples=300, method="percentile", confidence_level=0.9,
                                         rng=np.random.default_rng(4)).confidence_interval
        assert (low, high) == pytest.approx((expected.low, expected.high), rel=0, abs=TOLERANCE)
        assert low <= auroc(positive, negative) <= high


def direct_split_half(a: np.ndarray, b: np.ndarray, paired: bool, n_splits: int, seed: int) -> list[float]:
    """The documented halves: one generator; per split a permutation of the pairs, or of a then of b; the first
    n // 2 of a permutation are the first half."""
    rng = np.random.default_rng(seed)
    cosines = []
    for _ in range(n_splits):
        order_a = rng.permutation(len(a))
        order_b = order_a if paired else rng.permutation(len(b))
        half_a, half_b = len(a) // 2, len(b) // 2
        u = a[order_a[:half_a]].mean(0) - b[order_b[:half_b]].mean(0)
        v = a[order_a[half_a:]].mean(0) - b[order_b[half_b:]].mean(0)
        cosines.append(u @ v / np.sqrt((u @ u) * (v @ v)))
    return cosines


def test_split_half_cosine_is_the_cosine_of_the_two_halves_differences():
    rng = np.random.default_rng(8)
    direction = rng.normal(size=64)
    a = rng.normal(size=(31, 64)) + 0.5 * direction  # odd: the second half takes the extra prompt
    b = rng.normal(size=(31, 64))
    for paired, side_b in ((True, b), (False, b[:20])):
        mean, least = split_half_cosine(a.astype(np.float32), side_b.astype(np.float32), paired=paired,
                                        n_splits=9, seed=3)
        # the same numbers: float32 inputs, computed in float64
        cosines = direct_split_half(a.astype(np.float32).astype(np.float64),
                                    side_b.astype(np.float32).astype(np.float64), paired, n_splits=9, seed=3)
        assert (mean, least) == pytest.approx((np.mean(cosines), np.min(cosines)), rel=0, abs=TOLERANCE)
        assert 0 < least <= mean < 1
    same = split_half_cosine(b, b, paired=True, n_splits=3)  # no difference at all: no direction to compare
    assert np.isnan(same).all()
