"""Interval samples: per feature, a few windows from each activation interval, chosen by a fixed hash.

Top examples show only a feature's extreme. Interval samples show what it looks like at every level it fires at:
the activating windows of a feature are binned by the WINDOW's max activation (its score, never a single token's
value: a context shown in the wrong bin is what sae_vis issue #46 reports), and from each bin the ``m`` windows with
the smallest ``window_key(document, window_start)`` are kept. The key is a splitmix64 hash of the window's identity,
so the choice is a uniform-looking sample that does not depend on batch, shard or visiting order: keeping the m
smallest keys of a union only needs the m smallest of each part, so merging is exact and associative.

Interval edges are every 5th edge of the histogram's (``HISTOGRAM_EDGES``, 10 per decade), i.e. two intervals per
decade (..., 1, 3.16, 10, 31.6, ...): a feature whose windows peak over 1-2 decades above its threshold gets 3-5
intervals, like the 5 value bins of Neuronpedia, while the edges stay fixed, so shards and runs merge and each
interval is a union of histogram bins. As in the histogram, values below the first or above the last edge fall into
the first or last interval.

The buffer is a flat table sorted by (feature, interval, key) rather than a dense [F, I, m] block: a feature only
fills the few intervals it reaches, so memory follows the filled cells (an all-features run would otherwise hold 32
mostly empty slots per feature).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from personamine.merge.entries import SELECT_BLOCK, Entries, feature_blocks, first_distinct
from personamine.merge.stats import HISTOGRAM_EDGES

INTERVAL_STEP = 5  # histogram bins per interval
INTERVAL_EDGES = HISTOGRAM_EDGES[::INTERVAL_STEP]
N_INTERVALS = INTERVAL_EDGES.size - 1
# Compared in float32, exactly like the histogram's torch.bucketize on float32 edges, so a sample's interval is the
# union of the histogram bins its score would fall into.
_INNER_EDGES32 = INTERVAL_EDGES[1:-1].astype(np.float32)
KEY_NONE = np.iinfo(np.int64).max  # "no threshold yet" for a cell that holds fewer than m samples

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser (Steele et al. 2014) on uint64, wrapping like the reference C code."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def window_key(document: np.ndarray, window_start: np.ndarray) -> np.ndarray:
    """int64 sampling key of each window: ``splitmix64(splitmix64(document) ^ window_start) >> 1``.

    Shifted to 63 bits so it is a non-negative int64 that torch can compare on the device.
    """
    doc = np.asarray(document, dtype=np.int64).astype(np.uint64)
    start = np.asarray(window_start, dtype=np.int64).astype(np.uint64)
    return (splitmix64(splitmix64(doc) ^ start) >> np.uint64(1)).astype(np.int64)


def interval_of(score: np.ndarray) -> np.ndarray:
    """Interval index of each window score (float32 comparison; first/last interval are open-ended)."""
    return np.searchsorted(_INNER_EDGES32, np.asarray(score, dtype=np.float32), side="right").astype(np.int64)


@dataclass
class SampleBuffer:
    """Flat table of kept samples, sorted by (feature, interval, key, document, window_start)."""

    entries: Entries
    interval: np.ndarray  # int64 [N]
    key: np.ndarray  # int64 [N], window_key(document, window_start)
    per_interval: int = 5
    dedupe: bool = True

    @classmethod
    def empty(cls, ctx_len: int, per_interval: int, dedupe: bool = True) -> SampleBuffer:
        return cls(Entries.empty(ctx_len), np.zeros(0, np.int64), np.zeros(0, np.int64), per_interval, dedupe)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def feature(self) -> np.ndarray:
        return self.entries.feature

    @property
    def score(self) -> np.ndarray:
        return self.entries.score

    def update(self, new: Entries) -> SampleBuffer:
        """Select over this buffer and the new entries, in place; returns the buffer."""
        if len(new) == 0:
            return self
        w = new.windows
        pool = Entries.concat([self.entries, new])
        interval = np.concatenate([self.interval, interval_of(new.score)])
        key = np.concatenate([self.key, window_key(w.document, w.window_start)[new.window]])
        keep = _select(pool, interval, key, self.per_interval, self.dedupe)
        self.entries, self.interval, self.key = pool.take(keep), interval[keep], key[keep]
        return self

    def merge(self, other: SampleBuffer) -> SampleBuffer:
        return SampleBuffer(self.entries, self.interval, self.key, self.per_interval, self.dedupe).update(
            other.entries)

    def thresholds(self, n_features: int) -> np.ndarray:
        """int64 [F, N_INTERVALS]: the largest kept key of each full cell, ``KEY_NONE`` where a cell has room.

        A new window can only enter a cell if its key is <= this value (equal keys fall back to the tie-break).
        """
        out = np.full((n_features, N_INTERVALS), KEY_NONE, np.int64)
        if len(self):
            cell = self.feature * N_INTERVALS + self.interval
            rank = np.arange(cell.size) - np.searchsorted(cell, cell, side="left")
            last = rank == self.per_interval - 1
            out.reshape(-1)[cell[last]] = self.key[last]
        return out

    def rows_of(self, feature_position: int) -> np.ndarray:
        """Row indices of one feature's samples, by interval then key."""
        lo, hi = np.searchsorted(self.feature, [feature_position, feature_position + 1])
        return np.arange(lo, hi)

    def arrays(self) -> dict[str, np.ndarray]:
        return {**self.entries.arrays(), "interval": self.interval, "key": self.key,
                "per_interval": np.int64(self.per_interval)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], dedupe: bool = True) -> SampleBuffer:
        """From ``arrays()`` or from one dense row per sample (a file, or a checkpoint of the earlier layout)."""
        return cls(Entries.from_arrays(arrays), np.array(arrays["interval"], dtype=np.int64),
                   np.array(arrays["key"], dtype=np.int64), int(arrays["per_interval"]), dedupe)


def _select(entries: Entries, interval: np.ndarray, key: np.ndarray, per_interval: int, dedupe: bool,
            block: int = SELECT_BLOCK) -> np.ndarray:
    """Rows kept: per (feature, interval), the ``per_interval`` smallest keys (ties by document, start); a block of
    features at a time (``feature_blocks``).

    With ``dedupe``, windows whose fed tokens are identical count once per cell (the smallest-key instance), as in
    the top-k; the m smallest distinct windows of a union come from the m smallest distinct of each part.
    """
    return np.concatenate([rows[_select_rows(entries, rows, interval[rows], key[rows], per_interval, dedupe)]
                           for rows in feature_blocks(entries.feature, block)])


def _select_rows(entries: Entries, rows: np.ndarray, interval: np.ndarray, key: np.ndarray, per_interval: int,
                 dedupe: bool) -> np.ndarray:
    w, window, feature = entries.windows, entries.window[rows], entries.feature[rows]
    order = np.lexsort((w.window_start[window], w.document[window], key, interval, feature))
    cell = feature * N_INTERVALS + interval
    if dedupe and order.size:
        order = order[first_distinct(cell, window, w, order)]
    cell = cell[order]
    rank = np.arange(order.size) - np.searchsorted(cell, cell, side="left")
    return order[rank < per_interval]
