"""Non-activating examples: per feature, a fixed-hash sample of the windows where it does NOT fire.

Detection scoring (``personamine.explain``) needs windows that do not activate a feature, from the same corpus. A
window is a negative of a feature when it has at least one scored token and the feature's score in it is 0 (no
scored token fires). Per feature, the ``m`` distinct windows with the smallest ``window_key(document,
window_start)`` are kept: the rule of the interval samples (``personamine.merge.samples``) with one cell per
feature. So a ``NegativeBuffer`` IS a ``SampleBuffer`` whose entries all have score 0 (hence interval 0) and no
per-token activations, and it inherits the exact, associative selection: 1 and N shards give the same sample.

The file keeps each window once (``negatives/`` group: a window table and the entries that point at it): the
windows with the smallest keys of the whole corpus are negatives of nearly every feature, so in an all-features
run a few dozen windows serve 131,072 features.
"""

from __future__ import annotations

import h5py
import numpy as np

from personamine.merge.entries import Entries, SparseRows, WindowTable, first_distinct
from personamine.merge.samples import KEY_NONE, SampleBuffer, window_key

__all__ = ["KEY_NONE", "NegativeBuffer", "batch_candidates", "negative_entries", "read_negatives", "write_negatives"]


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


def _no_activations(n: int) -> SparseRows:
    return SparseRows(np.zeros(n + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))


def negative_entries(windows: WindowTable, window: np.ndarray, feature: np.ndarray) -> Entries:
    """Entries of score 0 with no activations: ``window[i]`` (a row of ``windows``) for ``feature[i]``."""
    return Entries(np.asarray(feature, np.int64), np.zeros(len(feature), np.float32), np.asarray(window, np.int64),
                   _no_activations(len(feature)), windows)


def write_negatives(group: h5py.Group, buffer: NegativeBuffer) -> None:
    group.attrs["per_feature"] = buffer.per_feature
    e = buffer.entries
    group.create_dataset("feature_row", data=e.feature.astype(np.int64))
    group.create_dataset("key", data=buffer.key.astype(np.int64))
    group.create_dataset("window", data=e.window.astype(np.int64))
    w = e.windows
    group.create_dataset("document", data=w.document)
    group.create_dataset("window_start", data=w.window_start)
    group.create_dataset("length", data=w.length)
    group.create_dataset("token_ids", data=w.token_ids, compression="gzip", compression_opts=4, shuffle=True)


def read_negatives(group: h5py.Group, dedupe: bool, rows: np.ndarray | None) -> NegativeBuffer:
    """The group as a buffer; with ``rows`` (sorted feature rows of the file) only those, renumbered 0..n-1."""
    feature, key, window = (group[name][()] for name in ("feature_row", "key", "window"))
    if rows is not None:  # entries are sorted by feature row
        bounds = np.searchsorted(feature, np.stack([rows, rows + 1]))
        pick = np.concatenate([np.arange(lo, hi) for lo, hi in bounds.T] + [np.zeros(0, np.int64)])
        feature, key, window = np.searchsorted(rows, feature[pick]), key[pick], window[pick]
    table = WindowTable.build(*(group[name][()] for name in ("document", "window_start", "length", "token_ids")))
    entries = Entries(feature.astype(np.int64), np.zeros(feature.size, np.float32), window.astype(np.int64),
                      _no_activations(feature.size), table)
    if rows is not None:
        entries = entries.take(np.arange(len(entries)))  # drop the windows no wanted feature uses
    return NegativeBuffer(entries, np.zeros(feature.size, np.int64), key.astype(np.int64),
                          int(group.attrs["per_feature"]), dedupe)


def batch_candidates(windows: WindowTable, dedupe: bool) -> tuple[np.ndarray, np.ndarray]:
    """(rows, keys) of a batch's windows that may enter a negatives buffer, by (key, document, start) ascending.

    With ``dedupe``, only the smallest-key window of each distinct token content: identical windows get identical
    scores, so a later copy could only ever be dropped as a duplicate. Taking the first m of these rows per feature
    is then exactly the m smallest distinct windows of the batch.
    """
    key = window_key(windows.document, windows.window_start)
    order = np.lexsort((windows.window_start, windows.document, key))
    if dedupe and order.size:
        everything = negative_entries(windows, np.arange(len(windows)), np.zeros(len(windows), np.int64))
        order = order[first_distinct(everything.feature, everything, order)]
    return order, key[order]
