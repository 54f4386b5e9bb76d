"""Per-feature activation statistics: sums, counts, maxima and a fixed-edge histogram, all mergeable."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Fixed log-spaced edges (10 per decade, 1e-3 .. 1e5) so histograms from any shard or run add up. Values outside
# fall into the first or last bin.
HISTOGRAM_EDGES = np.logspace(-3, 5, 81)
N_BINS = HISTOGRAM_EDGES.size - 1

COUNTERS = ("n_documents", "rows_skipped", "n_windows", "tokens_fed", "tokens_scored", "tokens_special",
            "tokens_norm_filtered")


@dataclass
class FeatureStats:
    active_tokens: np.ndarray  # int64 [F]
    activation_sum: np.ndarray  # float64 [F]
    max: np.ndarray  # float32 [F]
    histogram: np.ndarray  # int64 [F, B]
    counters: dict[str, int]

    @classmethod
    def empty(cls, n_features: int) -> FeatureStats:
        return cls(
            active_tokens=np.zeros(n_features, np.int64), activation_sum=np.zeros(n_features, np.float64),
            max=np.zeros(n_features, np.float32), histogram=np.zeros((n_features, N_BINS), np.int64),
            counters=dict.fromkeys(COUNTERS, 0),
        )

    def merge(self, other: FeatureStats) -> FeatureStats:
        return FeatureStats(
            active_tokens=self.active_tokens + other.active_tokens,
            activation_sum=self.activation_sum + other.activation_sum,
            max=np.maximum(self.max, other.max),
            histogram=self.histogram + other.histogram,
            counters={k: self.counters.get(k, 0) + other.counters.get(k, 0) for k in COUNTERS},
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """For a checkpoint: the histogram as its nonzero cells (an all-features one is 84 MB dense, mostly 0)."""
        cells = np.flatnonzero(self.histogram)
        out = {"active_tokens": self.active_tokens, "activation_sum": self.activation_sum, "max": self.max,
               "histogram_cells": cells, "histogram_counts": self.histogram.ravel()[cells]}
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
        return cls(
            active_tokens=active, activation_sum=np.array(arrays["activation_sum"]), max=np.array(arrays["max"]),
            histogram=histogram, counters={k: int(arrays[f"counter_{k}"]) for k in COUNTERS},
        )
