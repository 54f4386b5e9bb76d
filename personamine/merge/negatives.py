"""Non-activating examples: per feature, a fixed-hash sample of the windows where it does NOT fire.

Detection scoring (``personamine.explain``) needs windows that do not activate a feature, from the same corpus. A
window is a negative of a feature when it has at least one scored token and the feature's score in it is 0 (no
scored token fires). Per feature, the ``m`` distinct windows with the smallest ``window_key(document,
window_start)`` are kept: the rule of the interval samples (``personamine.merge.samples``) with one cell per
feature. So a ``NegativeBuffer`` IS a ``SampleBuffer`` whose entries all have score 0 (hence interval 0) and no
per-token activations, and it inherits the exact, associative selection: 1 and N shards give the same sample.

The file keeps each window once (``negatives/`` group, written by ``personamine.files.mine``: a window table
and the entries that point at it): the windows with the smallest keys of the whole corpus are negatives of nearly
every feature, so in an all-features run a few dozen windows serve 131,072 features. Like the top windows, each is
kept as its display span (``example_len`` tokens), here placed around its last scored token.
"""

from __future__ import annotations

import numpy as np

from personamine.merge.entries import Entries, SparseRows, WindowTable, first_distinct
from personamine.merge.samples import KEY_NONE, SampleBuffer, window_key

__all__ = ["KEY_NONE", "NegativeBuffer", "batch_candidates", "negative_entries", "no_activations"]


class NegativeBuffer(SampleBuffer):
    """Kept negatives, sorted by (feature, key, document, window_start); ``per_interval`` is the per-feature m."""

    @property
    def per_feature(self) -> int:
        return self.per_interval

    def merge(self, other: SampleBuffer) -> NegativeBuffer:
        return NegativeBuffer(self.entries, self.interval, self.key, self.per_interval, self.dedupe).update(
            other.entries)

    def limits(self, n_features: int) -> np.ndarray:
        """int64 [F]: the largest kept key of each full feature, ``KEY_NONE`` where a feature has room."""
        return self.thresholds(n_features)[:, 0]


def no_activations(n: int) -> SparseRows:
    return SparseRows(np.zeros(n + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))


def negative_entries(windows: WindowTable, window: np.ndarray, feature: np.ndarray) -> Entries:
    """Entries of score 0 with no activations: ``window[i]`` (a row of ``windows``) for ``feature[i]``."""
    return Entries(np.asarray(feature, np.int64), np.zeros(len(feature), np.float32), np.asarray(window, np.int64),
                   no_activations(len(feature)), windows)


def batch_candidates(windows: WindowTable, dedupe: bool) -> tuple[np.ndarray, np.ndarray]:
    """(rows, keys) of a batch's windows that may enter a negatives buffer, by (key, document, start) ascending.

    With ``dedupe``, only the smallest-key window of each distinct token content: identical windows get identical
    scores, so a later copy could only ever be dropped as a duplicate. Taking the first m of these rows per feature
    is then exactly the m smallest distinct windows of the batch.
    """
    key = window_key(windows.document, windows.window_start)
    order = np.lexsort((windows.window_start, windows.document, key))
    if dedupe and order.size:
        order = order[first_distinct(np.zeros(len(windows), np.int64), np.arange(len(windows)), windows, order)]
    return order, key[order]
