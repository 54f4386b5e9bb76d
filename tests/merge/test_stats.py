"""The signed axis of two nonnegative histograms (a direction's two channels): the negative bins mirrored, the zeros,
the positive bins, with each bin's edges; what the percentiles, ``show`` and the report's signed histogram read."""

from __future__ import annotations

import numpy as np

from personamine.merge.stats import HISTOGRAM_EDGES, N_BINS, signed_bins


def test_signed_bins_put_every_value_in_its_bin_lowest_first():
    values = np.random.default_rng(5).standard_normal(5000) * 3
    values[:40] = 0.0
    values[np.abs(values) < HISTOGRAM_EDGES[0]] = 0.0  # below the first edge: counted in neither histogram
    positive = np.histogram(values[values > 0], HISTOGRAM_EDGES)[0]
    negative = np.histogram(-values[values < 0], HISTOGRAM_EDGES)[0]
    counts, low, high = signed_bins(positive, negative, values.size)
    assert counts.shape == (1, 2 * N_BINS + 1) and low.shape == high.shape == (2 * N_BINS + 1,)
    assert counts.sum() == values.size and counts[0, N_BINS] == (values == 0).sum() >= 40
    assert low[N_BINS] == high[N_BINS] == 0.0
    assert np.all(np.diff(low) > 0) and np.all(high >= low)
    for b in np.nonzero(counts[0])[0].tolist():  # each bin holds exactly the values between its edges
        if b == N_BINS:
            continue
        inside = (values > low[b]) & (values <= high[b]) if low[b] < 0 else (values >= low[b]) & (values < high[b])
        assert counts[0, b] == inside.sum(), b
