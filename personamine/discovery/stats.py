"""The statistics of discovery: per feature, how sure the persona-minus-control difference is, and how many prompts
carry it. A pure library over numpy arrays; every test, interval and correction is scipy's own call.

``compare`` takes each feature's value on every prompt of side a (persona) and side b (control) and gives per
feature: the two means and their difference, a bootstrap percentile CI of the difference, a two-sided rank test
(paired: Wilcoxon signed-rank; unpaired: Mann-Whitney U), its Benjamini-Hochberg q-value over the tested features,
Cohen's d, firing counts and support. ``rank_order`` orders the tested features by the CI's lower bound, which a
feature that one prompt decides cannot win: a resample leaves that prompt out with probability (1 - 1/n)^n ~ 0.36,
more than the 2.5% that a 95% interval's lower bound excludes, so its lower bound is 0. ``auroc``/``auroc_ci`` and
``split_half_cosine`` score a direction (a feature, a difference of residual means) on the same prompts.

Choices:

- **Wilcoxon zeros: Pratt** (``zero_method="pratt"``). Most pair differences are exactly zero (the feature is
  silent on both prompts of the pair); they are evidence of no difference, not missing data. Pratt ranks them
  with the other |d| (as the smallest) and drops only their ranks, so every pair counts in n; Wilcox's rule drops
  them, testing only the pairs where the feature differs, and is discontinuous at zero: a difference that shrinks
  from 1e-6 to 0 leaves the test, changing n (Pratt 1959; Conover 1973 compares the two rules).
- **Asymptotic p-values** (``method="asymptotic"`` for both tests). scipy's ``"auto"`` picks the method from the
  whole array (any zero or tie anywhere turns the exact test off), so a feature's p-value would depend on which
  other features share its chunk; and the exact null is not valid with zeros or ties, which these data are full
  of. The normal approximation (with scipy's tie corrections, and its default continuity correction for U) is the
  one method valid for every feature. A tested feature whose pair differences are all zero gets p = 1 (scipy's
  z is 0/0 there).
- **Support**, "how many prompts carry the effect": paired, the pairs where a > b; unpaired, the prompts of a
  above the maximum of b, i.e. above every control. A feature that fires on one persona prompt and never on a
  control has support 1 either way. Unpaired, when a and b come from one continuous distribution the expected
  support is n_a / (n_b + 1) (~1 at 32 per side), and a single high control can only lower it: a conservative
  count, never an inflated one.
- **Untested features**, those > 0 on no prompt of either side (all zero, for SAE codes), are left out of every
  scipy call and of the q-values: their ``p_value``, ``q_value``, ``ci_low`` and ``ci_high`` are NaN (no test or
  resample ran; for all-zero values every resample's difference would be 0). Means, firing counts, support and
  effect size are computed for every feature.

Bootstrap: ``scipy.stats.bootstrap(method="percentile")`` draws the resamples and takes the percentiles. The data
it resamples are each side's row indices, and the statistic turns a batch of resampled indices [B, n] into each
resample's mean for every feature at once, as one product with the count of each row in each resample divided by
n ([F, n] @ [n, B]), instead of gathering [F, B, n] values first: the same numbers to rounding (the tests check
1e-9 against ``bootstrap`` on the raw values of one feature), and on one paired chunk of 4,096 features (n = 32,
n_boot = 1000) 0.45 s and 63 MiB where ``bootstrap`` on the raw values takes 5.6 s and 1,063 MiB. Indices
resampled are what ``bootstrap(..., paired=True)`` resamples too, and unpaired it draws a's indices then b's in each
batch, as it does for the raw samples; so each feature's interval is exactly the one ``bootstrap`` gives on that
feature alone with ``rng=np.random.default_rng(seed)``. Every chunk of features gets a fresh generator from the
seed, hence the same resamples, so the CI does not depend on ``feature_chunk``.

Measured 2026-12-06 (``benchmarks/discovery_stats.py``; a 2-core AMD EPYC VM shared with other jobs, load average
6.5-8 during the runs, so wall time is about twice the CPU time; numpy 2.4.6 with OpenBLAS, scipy 1.17.1):
``compare`` on F = 131,072 features, n = 32 prompts per side, n_boot = 1000, feature_chunk = 4096:

- every feature tested (dense random values, the worst case): paired 10.2 s wall (4.6 s CPU), unpaired 10.8 s
  (5.3 s CPU); most of it is scipy's quantile sorting each chunk's bootstrap distribution.
- SAE-like codes, 64 of the 131,072 features > 0 per prompt (a BatchTopK SAE's k; 2,340 features tested): paired
  1.7 s, unpaired 2.5 s.
- Peak memory above the inputs (tracemalloc, numpy's allocations): 78 MiB paired or unpaired, dense; 15 MiB sparse.
  It is about 2 x feature_chunk x n_boot x 8 bytes (the chunk's bootstrap distribution and the sorted copy scipy's
  quantile takes: 62 MiB at 4096) plus 12 MiB of [F] result arrays, and does not grow with F otherwise;
  feature_chunk = 1024 gives 27 MiB (dense: 14 s paired, 18 s unpaired, as smaller chunks make more scipy calls).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.stats

from personamine.errors import PersonamineError

MIN_SUPPORT = 3  # features supported by fewer prompts are marked: one or two prompts decide them

# Both tests use scipy's normal approximation for every feature (module docstring: "Asymptotic p-values").
WILCOXON_ZERO_METHOD = "pratt"
TEST_METHOD = "asymptotic"


@dataclass
class FeatureStatistics:
    """Per-feature statistics of side a (persona) against side b (control); every array is [F], one entry per
    feature column of the inputs."""

    mean_a: np.ndarray  # float64 mean of side a (persona) per feature
    mean_b: np.ndarray  # float64 mean of side b (control)
    mean_difference: np.ndarray  # mean_a - mean_b (paired: the mean of the pair differences, the same number)
    ci_low: np.ndarray  # bootstrap percentile CI of mean_difference at `level`; NaN where untested
    ci_high: np.ndarray
    p_value: np.ndarray  # two-sided; paired: Wilcoxon signed-rank (Pratt); unpaired: Mann-Whitney U; NaN untested
    q_value: np.ndarray  # Benjamini-Hochberg over every tested feature; NaN where untested
    effect_size: np.ndarray  # paired: Cohen's d_z; unpaired: Cohen's d, pooled sd (ddof=1); NaN when the sd is 0
    fires_a: np.ndarray  # int: prompts of side a where the value is > 0
    fires_b: np.ndarray  # int
    support: np.ndarray  # int: paired: pairs where a > b; unpaired: prompts of a above b's maximum
    tested: np.ndarray  # bool: > 0 on at least one prompt of either side
    paired: bool
    n_boot: int
    seed: int
    level: float


def compare(a: np.ndarray, b: np.ndarray, *, paired: bool, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
            feature_chunk: int = 4096) -> FeatureStatistics:
    """Per-feature statistics of ``a`` [n_a, F] against ``b`` [n_b, F] (float32 or float64; computed in float64).

    ``paired`` requires n_a == n_b: row i of a pairs with row i of b, and the bootstrap resamples pairs; unpaired,
    it resamples each side independently. ``seed`` fixes the resamples (the same for every feature and every
    ``feature_chunk``). Features are processed ``feature_chunk`` at a time, which bounds memory (module docstring).
    Bad input (different n when paired, fewer than 2 rows on a side, different F, non-finite values) raises a
    one-line ``PersonamineError``.
    """
    _check_options(n_boot, level, feature_chunk)
    _check_sides(a, b, paired)
    n_features = a.shape[1]
    mean_a = a.mean(axis=0, dtype=np.float64)
    mean_b = b.mean(axis=0, dtype=np.float64)
    fires_a = np.count_nonzero(a > 0, axis=0)
    fires_b = np.count_nonzero(b > 0, axis=0)
    tested = (fires_a > 0) | (fires_b > 0)
    ci_low, ci_high, p_value, q_value, effect_size = (np.full(n_features, np.nan) for _ in range(5))
    support = np.zeros(n_features, dtype=np.int64)
    for start in range(0, n_features, feature_chunk):
        columns = slice(start, start + feature_chunk)
        # [features, prompts], contiguous per feature: scipy's tests and the bootstrap reduce along the last axis.
        chunk_a = np.ascontiguousarray(a[:, columns].T, dtype=np.float64)
        chunk_b = np.ascontiguousarray(b[:, columns].T, dtype=np.float64)
        differences = chunk_a - chunk_b if paired else None
        if differences is not None:
            effect_size[columns] = _cohens_dz(differences)
            support[columns] = np.count_nonzero(differences > 0, axis=1)
        else:
            effect_size[columns] = _cohens_d(chunk_a, chunk_b)
            support[columns] = np.count_nonzero(chunk_a > chunk_b.max(axis=1, keepdims=True), axis=1)
        rows = np.flatnonzero(tested[columns])  # the chunk's tested features, as rows of chunk_a and chunk_b
        if rows.size == 0:
            continue
        where = start + rows  # the same features, as columns of the inputs
        if differences is not None:
            samples: tuple[np.ndarray, ...] = (differences[rows],)
            p_value[where] = _wilcoxon_p(differences[rows])
        else:
            samples = (chunk_a[rows], chunk_b[rows])
            p_value[where] = scipy.stats.mannwhitneyu(chunk_a[rows], chunk_b[rows], alternative="two-sided",
                                                      method=TEST_METHOD, axis=-1).pvalue
        ci_low[where], ci_high[where] = _bootstrap_mean_difference(samples, n_boot, seed, level)
    if tested.any():
        q_value[tested] = scipy.stats.false_discovery_control(p_value[tested], method="bh")
    return FeatureStatistics(mean_a=mean_a, mean_b=mean_b, mean_difference=mean_a - mean_b, ci_low=ci_low,
                             ci_high=ci_high, p_value=p_value, q_value=q_value, effect_size=effect_size,
                             fires_a=fires_a, fires_b=fires_b, support=support, tested=tested, paired=paired,
                             n_boot=n_boot, seed=seed, level=level)


def rank_order(stats: FeatureStatistics) -> np.ndarray:
    """Indices of the tested features, best first: by the CI's lower bound (descending), ties by mean_difference
    (descending) then feature index. A feature that one prompt decides has a lower bound of 0 (module docstring),
    so it ranks below any feature whose difference most prompts carry."""
    features = np.flatnonzero(stats.tested)
    order = np.lexsort((features, -stats.mean_difference[features], -stats.ci_low[features]))
    return features[order]


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(score of a random positive > a random negative) + 0.5 P(tie): the Mann-Whitney U statistic / (n_pos n_neg)."""
    positive, negative = _check_scores(positive, negative, paired=False, minimum=1)
    return float(_auroc_along_last_axis(positive, negative))


def auroc_ci(positive: np.ndarray, negative: np.ndarray, *, paired: bool, n_boot: int = 1000, seed: int = 0,
             level: float = 0.95) -> tuple[float, float]:
    """Bootstrap percentile CI of ``auroc`` at ``level``: paired (positive[i] with negative[i]) resamples pairs,
    unpaired each side independently; ``scipy.stats.bootstrap`` with ``rng=np.random.default_rng(seed)``."""
    _check_options(n_boot, level, feature_chunk=1)
    positive, negative = _check_scores(positive, negative, paired=paired, minimum=2)
    result = scipy.stats.bootstrap((positive, negative), _auroc_along_last_axis, n_resamples=n_boot, paired=paired,
                                   vectorized=True, method="percentile", confidence_level=level,
                                   rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def split_half_cosine(a: np.ndarray, b: np.ndarray, *, paired: bool, n_splits: int = 20,
                      seed: int = 0) -> tuple[float, float]:
    """How stable the direction mean(a) - mean(b) is: (mean, min) over ``n_splits`` random halves of the cosine
    between the difference of means computed on one half and on the other half.

    ``a`` [n_a, D], ``b`` [n_b, D] are raw residuals. The halves come from one ``np.random.default_rng(seed)``:
    each split draws ``rng.permutation(n)`` of the pairs (paired), or ``rng.permutation(n_a)`` then
    ``rng.permutation(n_b)`` (unpaired); a side's first half is the first n // 2 indices of its permutation, the
    second half the rest. A half whose difference of means is the zero vector gives a NaN cosine (no direction).
    """
    if isinstance(n_splits, bool) or not isinstance(n_splits, int | np.integer) or n_splits < 1:
        raise PersonamineError(f"n_splits must be a positive integer, got {n_splits!r}")
    _check_sides(a, b, paired, what="dimensions")
    side_a, side_b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    cosines = []
    for _ in range(n_splits):
        order_a = rng.permutation(side_a.shape[0])
        order_b = order_a if paired else rng.permutation(side_b.shape[0])
        half_a, half_b = side_a.shape[0] // 2, side_b.shape[0] // 2
        first = side_a[order_a[:half_a]].mean(axis=0) - side_b[order_b[:half_b]].mean(axis=0)
        second = side_a[order_a[half_a:]].mean(axis=0) - side_b[order_b[half_b:]].mean(axis=0)
        norms = np.linalg.norm(first) * np.linalg.norm(second)
        cosines.append(float(first @ second / norms) if norms > 0 else np.nan)
    return float(np.mean(cosines)), float(np.min(cosines))


def _wilcoxon_p(differences: np.ndarray) -> np.ndarray:
    """Two-sided Wilcoxon signed-rank p-value of each row of ``differences`` [features, pairs]; 1 where every
    difference is zero (no evidence either way; scipy's z would be 0/0)."""
    p_value = np.ones(differences.shape[0])
    varies = np.any(differences != 0, axis=1)
    if varies.any():
        p_value[varies] = scipy.stats.wilcoxon(differences[varies], zero_method=WILCOXON_ZERO_METHOD,
                                               alternative="two-sided", method=TEST_METHOD, axis=-1).pvalue
    return p_value


def _bootstrap_mean_difference(samples: tuple[np.ndarray, ...], n_boot: int, seed: int,
                               level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile CI per row of mean(samples[0]) - mean(samples[1]) (or of mean(samples[0]) alone: the paired
    differences), each sample [features, n_s]. scipy resamples row indices; the statistic is a product with the
    resample counts (module docstring)."""

    def mean_difference(*resampled_indices: np.ndarray, axis: int = -1) -> np.ndarray:
        means = [values @ _resample_weights(indices, values.shape[1]).T  # [features, B]
                 for values, indices in zip(samples, resampled_indices, strict=True)]
        if len(means) == 2:
            means[0] -= means[1]  # in place: one [features, B] array fewer at the peak
        return means[0]

    indices = tuple(np.arange(values.shape[1]) for values in samples)
    result = scipy.stats.bootstrap(indices, mean_difference, n_resamples=n_boot, vectorized=True,
                                   method="percentile", confidence_level=level, rng=np.random.default_rng(seed))
    return result.confidence_interval.low, result.confidence_interval.high


def _resample_weights(indices: np.ndarray, n: int) -> np.ndarray:
    """[B, n] weight of each observation in each resample's mean: how often the resample drew it, over n."""
    n_resamples = indices.shape[0]
    flat = (indices + n * np.arange(n_resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=n_resamples * n).reshape(n_resamples, n) / n


def _cohens_dz(differences: np.ndarray) -> np.ndarray:
    """mean(d) / sd(d, ddof=1) per row; NaN where every difference is the same (sd 0: rounding could leave a
    tiny nonzero sd for equal values, hence the exact test on max == min)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        effect = differences.mean(axis=1) / differences.std(axis=1, ddof=1)
    return np.where(differences.max(axis=1) == differences.min(axis=1), np.nan, effect)


def _cohens_d(side_a: np.ndarray, side_b: np.ndarray) -> np.ndarray:
    """(mean_a - mean_b) / pooled sd (ddof=1) per row; NaN where both sides are constant (pooled sd 0)."""
    n_a, n_b = side_a.shape[1], side_b.shape[1]
    pooled = np.sqrt(((n_a - 1) * side_a.var(axis=1, ddof=1) + (n_b - 1) * side_b.var(axis=1, ddof=1))
                     / (n_a + n_b - 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        effect = (side_a.mean(axis=1) - side_b.mean(axis=1)) / pooled
    constant = (side_a.max(axis=1) == side_a.min(axis=1)) & (side_b.max(axis=1) == side_b.min(axis=1))
    return np.where(constant, np.nan, effect)


def _auroc_along_last_axis(positive: np.ndarray, negative: np.ndarray, axis: int = -1) -> np.ndarray:
    # The U statistic of the first sample is #(pos > neg) + 0.5 #(ties); the method only sets the p-value, unused.
    u_statistic = scipy.stats.mannwhitneyu(positive, negative, method=TEST_METHOD, axis=axis).statistic
    return u_statistic / (positive.shape[axis] * negative.shape[axis])


def _check_options(n_boot: int, level: float, feature_chunk: int) -> None:
    for name, value in (("n_boot", n_boot), ("feature_chunk", feature_chunk)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise PersonamineError(f"{name} must be a positive integer, got {value!r}")
    if not 0 < level < 1:
        raise PersonamineError(f"level must be strictly between 0 and 1 (e.g. 0.95), got {level!r}")


def _check_sides(a: np.ndarray, b: np.ndarray, paired: bool, what: str = "features") -> None:
    """Both sides 2-D real arrays with the same number of columns, at least 2 rows each (a variance, a half),
    the same number of rows when paired, and every value finite."""
    for name, side in (("a", a), ("b", b)):
        if not isinstance(side, np.ndarray) or side.ndim != 2:
            shape = getattr(side, "shape", type(side).__name__)
            raise PersonamineError(f"{name} must be a 2-D numpy array [prompts, {what}], got {shape}")
        if not (np.issubdtype(side.dtype, np.floating) or np.issubdtype(side.dtype, np.integer)):
            raise PersonamineError(f"{name} must hold real numbers, got dtype {side.dtype}")
        if side.shape[0] < 2:
            raise PersonamineError(f"{name} has {side.shape[0]} row(s): statistics need at least 2 prompts a side")
    if a.shape[1] != b.shape[1]:
        raise PersonamineError(f"a has {a.shape[1]:,} {what} and b {b.shape[1]:,}: both sides need the same columns")
    if paired and a.shape[0] != b.shape[0]:
        raise PersonamineError(f"paired statistics need one row of b per row of a; a has {a.shape[0]} rows and "
                               f"b {b.shape[0]} (pass paired=False for independent sides)")
    for name, side in (("a", a), ("b", b)):
        _check_finite(name, side)


def _check_finite(name: str, values: np.ndarray) -> None:
    finite = np.isfinite(values)
    if not finite.all():
        first = tuple(int(i) for i in np.argwhere(~finite)[0])
        where = f"row {first[0]}, column {first[1]}" if len(first) == 2 else f"position {first[0]}"
        raise PersonamineError(f"{name} holds {values[first]} at {where} "
                               f"({int(np.count_nonzero(~finite)):,} of {values.size:,} values non-finite)")


def _check_scores(positive: np.ndarray, negative: np.ndarray, *, paired: bool,
                  minimum: int) -> tuple[np.ndarray, np.ndarray]:
    """Both 1-D real, finite, at least ``minimum`` values each (the bootstrap needs 2), equal sizes when paired;
    returned as float64."""
    checked = []
    for name, scores in (("positive", positive), ("negative", negative)):
        scores = np.asarray(scores)
        if scores.ndim != 1 or not (np.issubdtype(scores.dtype, np.floating)
                                    or np.issubdtype(scores.dtype, np.integer)):
            raise PersonamineError(f"{name} scores must be a 1-D array of real numbers, got shape {scores.shape} "
                                   f"dtype {scores.dtype}")
        if scores.size < minimum:
            raise PersonamineError(f"{name} has {scores.size} score(s): this needs at least {minimum}")
        _check_finite(name, scores)
        checked.append(scores.astype(np.float64))
    if paired and checked[0].size != checked[1].size:
        raise PersonamineError(f"paired scores need one negative per positive; got {checked[0].size} positive and "
                               f"{checked[1].size} negative (pass paired=False for independent sides)")
    return checked[0], checked[1]
