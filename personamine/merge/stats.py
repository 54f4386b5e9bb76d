"""Per-feature activation statistics: sums, counts, maxima and a fixed-edge histogram, all mergeable exactly.

Every statistic merges exactly, so the output does not depend on how the corpus was split, batched or threaded.
Counts, maxima and the histogram are exact by nature. The activation sum is kept as two int64 limbs, a whole
part and a fraction in units of ``2**-FRAC_BITS``: a float32 activation ``v >= 2**-14`` is exactly
``floor(v) + frac * 2**-37`` (its last mantissa bit is worth at least ``2**-37``), and integer addition is
associative, so the sum is the exact real sum of the float32 values (smaller values are rounded at ``2**-37``),
rounded once to float64 when read. A float64 accumulator would depend on the order of additions, which differs
with thread count (measured: 1 vs 2 torch threads changed ``activation_sum`` and nothing else).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from personamine.roles import ROLES

# Fixed log-spaced edges (10 per decade, 1e-3 .. 1e5) so histograms from any shard or run add up. Values outside
# fall into the first or last bin.
HISTOGRAM_EDGES = np.logspace(-3, 5, 81)
N_BINS = HISTOGRAM_EDGES.size - 1

N_ROLES = len(ROLES)
FRAC_BITS = 37
FRAC_ONE = 1 << FRAC_BITS

# rows_wrong_type: of rows_skipped, those whose value is of the wrong type (a number in a text column);
# documents_chunked: documents taken in more than one piece (a streamed long line, a text or conversation longer than
# shards.documents.LONG_TEXT_CHARS tokenized in pieces, a token list windowed in slices)
COUNTERS = ("n_documents", "rows_skipped", "rows_wrong_type", "rows_malformed", "n_windows", "tokens_fed",
            "tokens_scored", "tokens_special", "tokens_norm_filtered", "activations_nonfinite", "documents_chunked")


@dataclass
class FeatureStats:
    active_tokens: np.ndarray  # int64 [F]
    sum_whole: np.ndarray  # int64 [F]: sum of floor(v)
    sum_frac: np.ndarray  # int64 [F]: sum of (v - floor(v)) * 2**FRAC_BITS, carried into sum_whole, < FRAC_ONE
    max: np.ndarray  # float32 [F]
    histogram: np.ndarray  # int64 [F, B]
    counters: dict[str, int]
    role_active: np.ndarray | None = None  # int64 [F, R]: scored tokens of each role where the feature is > 0
    role_seen: np.ndarray | None = None  # int64 [R]: tokens of each role the run could score (not special)
    role_scored: np.ndarray | None = None  # int64 [R]: scored tokens of each role

    @classmethod
    def empty(cls, n_features: int) -> FeatureStats:
        return cls(
            active_tokens=np.zeros(n_features, np.int64), sum_whole=np.zeros(n_features, np.int64),
            sum_frac=np.zeros(n_features, np.int64), max=np.zeros(n_features, np.float32),
            histogram=np.zeros((n_features, N_BINS), np.int64), counters=dict.fromkeys(COUNTERS, 0),
            role_active=np.zeros((n_features, N_ROLES), np.int64), role_seen=np.zeros(N_ROLES, np.int64),
            role_scored=np.zeros(N_ROLES, np.int64),
        )

    @property
    def activation_sum(self) -> np.ndarray:
        """float64 [F]: the exact sum, rounded once (both terms are exact in float64, so only the addition rounds)."""
        return self.sum_whole.astype(np.float64) + self.sum_frac.astype(np.float64) / FRAC_ONE

    def add_values(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Add float32 activations ``values`` to the sums of feature ``rows`` (the device path does the same)."""
        values = np.asarray(values, np.float32)
        whole = np.floor(values)
        np.add.at(self.sum_whole, rows, whole.astype(np.int64))
        np.add.at(self.sum_frac, rows, np.rint((values - whole).astype(np.float64) * FRAC_ONE).astype(np.int64))
        self.sum_whole, self.sum_frac = carry(self.sum_whole, self.sum_frac)

    def merge(self, other: FeatureStats) -> FeatureStats:
        whole, frac = carry(self.sum_whole + other.sum_whole, self.sum_frac + other.sum_frac)
        return FeatureStats(
            active_tokens=self.active_tokens + other.active_tokens, sum_whole=whole, sum_frac=frac,
            max=np.maximum(self.max, other.max),
            histogram=self.histogram + other.histogram,
            counters={k: self.counters.get(k, 0) + other.counters.get(k, 0) for k in COUNTERS},
            **{name: _add(getattr(self, name), getattr(other, name)) for name in _ROLE_FIELDS},
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """For a checkpoint: the histogram as its nonzero cells (an all-features one is 84 MB dense, mostly 0)."""
        cells = np.flatnonzero(self.histogram)
        out = {"active_tokens": self.active_tokens, "sum_whole": self.sum_whole, "sum_frac": self.sum_frac,
               "max": self.max, "histogram_cells": cells, "histogram_counts": self.histogram.ravel()[cells]}
        out.update({name: getattr(self, name) for name in _ROLE_FIELDS if getattr(self, name) is not None})
        out.update({f"counter_{k}": np.int64(v) for k, v in self.counters.items()})
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> FeatureStats:
        """From ``arrays()``, or from a checkpoint that stored the histogram dense."""
        active = np.array(arrays["active_tokens"])
        if "histogram" in arrays:
            histogram = np.array(arrays["histogram"])
        else:
            histogram = np.zeros((active.size, N_BINS), np.int64)
            histogram.ravel()[arrays["histogram_cells"]] = arrays["histogram_counts"]
        if "sum_whole" in arrays:
            whole, frac = np.array(arrays["sum_whole"]), np.array(arrays["sum_frac"])
        else:  # a checkpoint from before the sums were exact: the float64 sum, split as well as it can be
            total = np.array(arrays["activation_sum"], np.float64)
            whole = np.floor(total)
            whole, frac = whole.astype(np.int64), np.rint((total - whole) * FRAC_ONE).astype(np.int64)
        return cls(
            active_tokens=active, sum_whole=whole, sum_frac=frac, max=np.array(arrays["max"]),
            histogram=histogram, counters={k: int(arrays.get(f"counter_{k}", 0)) for k in COUNTERS},
            **{name: np.array(arrays[name]) if name in arrays else None for name in _ROLE_FIELDS},
        )


_ROLE_FIELDS = ("role_active", "role_seen", "role_scored")


def _add(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    """Per-role counts merge by addition; None (a checkpoint from before roles) makes the merge unknown too."""
    return None if a is None or b is None else a + b


def carry(whole: np.ndarray, frac: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move whole units of the fraction limb into the whole limb, so the fraction stays below FRAC_ONE."""
    return whole + (frac >> FRAC_BITS), frac & (FRAC_ONE - 1)


PERCENTILES = np.arange(101, dtype=np.float64)  # the percentiles a run stores per channel: 0, 1, ..., 100


def signed_bins(positive: np.ndarray, negative: np.ndarray | None, n_tokens: int,
                edges: np.ndarray = HISTOGRAM_EDGES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two nonnegative histograms as one signed axis, lowest first: ``negative``'s bins mirrored (from -1e5 up), the
    zeros (the ``n_tokens`` counted in neither), then ``positive``'s bins up to 1e5. Returns the counts
    [C, 2B + 1] (float64) and each bin's low and high edge [2B + 1] (the zeros' bin is [0, 0])."""
    positive = np.atleast_2d(positive).astype(np.float64)
    negative = np.zeros_like(positive) if negative is None else np.atleast_2d(negative).astype(np.float64)
    zeros = np.maximum(n_tokens - positive.sum(1) - negative.sum(1), 0.0)
    counts = np.concatenate([negative[:, ::-1], zeros[:, None], positive], axis=1)
    lo_edge = np.concatenate([-edges[:0:-1], [0.0], edges[:-1]])
    hi_edge = np.concatenate([-edges[-2::-1], [0.0], edges[1:]])
    return counts, lo_edge, hi_edge


def histogram_percentiles(positive: np.ndarray, negative: np.ndarray | None, n_tokens: int,
                          q: np.ndarray = PERCENTILES) -> np.ndarray:
    """[C, len(q)] percentiles of each channel's value over ``n_tokens`` scored tokens, from the exact histograms:
    ``positive`` [C, B] counts the values above 0 in ``HISTOGRAM_EDGES`` bins, ``negative`` [C, B] (or None: no value
    is negative) counts the magnitudes of the values below 0, and the rest are 0. Inside a bin the value is
    interpolated geometrically between its edges, so a percentile is exact to the bin's width (10 bins a decade:
    within 26% of the value), and exactly 0 where it falls on the zeros."""
    counts, lo_edge, hi_edge = signed_bins(positive, negative, n_tokens)
    cumulative = np.cumsum(counts, axis=1)
    total = np.maximum(cumulative[:, -1:], 1.0)
    out = np.zeros((counts.shape[0], q.size))
    for j, pct in enumerate(q):
        target = np.maximum(pct / 100.0 * total[:, 0], 1e-9)  # the 0th percentile: the first token's bin
        b = np.minimum((cumulative < target[:, None]).sum(1), counts.shape[1] - 1)  # first bin reaching the target
        before = np.where(b > 0, cumulative[np.arange(b.size), b - 1], 0.0)
        inside = counts[np.arange(b.size), b]
        frac = np.clip(np.where(inside > 0, (target - before) / np.maximum(inside, 1.0), 0.0), 0.0, 1.0)
        lo, hi = lo_edge[b], hi_edge[b]
        # geometric between the edges' magnitudes (a negative bin runs from -|lo| up to -|hi|)
        magnitude = np.abs(lo) ** (1 - frac) * np.abs(hi) ** frac
        out[:, j] = np.where(lo == 0.0, 0.0, np.sign(lo + hi) * magnitude)
    return out
