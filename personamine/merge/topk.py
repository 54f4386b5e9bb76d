"""Per-feature top-k windows as plain numpy, with one associative, deterministic selection rule.

Order: score descending, then document ascending, then window start ascending (a total order: a window is
identified by its document and start). With ``dedupe``, windows whose fed tokens are identical count once: the
best instance under that order is kept. Selecting the top k distinct windows of a union only ever needs the top k
distinct windows of each part, so merging buffers in any grouping gives the same answer.

The buffer is a flat, compact table of entries (``personamine.merge.entries``) sorted by (feature, rank), not a
dense [F, k, T] block: an all-features buffer over 131,072 features would be 1.3 GB dense, nearly all of it
repeated windows and zero activations. ``dense`` builds the block for a range of features, to write or to read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from personamine.merge.entries import SELECT_BLOCK, TOKEN_FILL, Entries, feature_blocks, first_distinct


def _select(entries: Entries, top_k: int, dedupe: bool, block: int = SELECT_BLOCK) -> np.ndarray:
    """Indices of the kept entries, sorted by (feature, rank); a block of features at a time (``feature_blocks``)."""
    return np.concatenate([rows[_select_rows(entries, rows, top_k, dedupe)]
                           for rows in feature_blocks(entries.feature, block)])


def _select_rows(entries: Entries, rows: np.ndarray, top_k: int, dedupe: bool) -> np.ndarray:
    w, window, feature = entries.windows, entries.window[rows], entries.feature[rows]
    order = np.lexsort((w.window_start[window], w.document[window], -entries.score[rows].astype(np.float64), feature))
    if dedupe and order.size:
        order = order[first_distinct(feature, window, w, order)]
    feature = feature[order]
    rank = np.arange(order.size) - np.searchsorted(feature, feature, side="left")
    return order[rank < top_k]


DENSE_FIELDS = ("document", "window_start", "length", "token_ids", "activations", "roles", "span_start")


@dataclass
class DenseTopK:
    """The top-k of a range of features as dense blocks (the file's layout)."""

    score: np.ndarray  # float32 [F, K], NaN where empty
    document: np.ndarray  # int64 [F, K], -1 where empty
    window_start: np.ndarray  # int64 [F, K], -1 where empty
    length: np.ndarray  # int32 [F, K]
    token_ids: np.ndarray  # int32 [F, K, T], TOKEN_FILL where empty
    activations: np.ndarray  # float32 [F, K, T]
    roles: np.ndarray  # int8 [F, K, T], NO_ROLE where empty
    span_start: np.ndarray  # int32 [F, K]: the span's first position in the fed window


@dataclass
class TopKBuffer:
    entries: Entries  # sorted by (feature, rank)
    n_features: int
    top_k: int
    dedupe: bool = True

    @classmethod
    def empty(cls, n_features: int, top_k: int, ctx_len: int, dedupe: bool = True) -> TopKBuffer:
        return cls(Entries.empty(ctx_len), n_features, top_k, dedupe)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.n_features, self.top_k, self.entries.ctx_len

    def rank(self, rows: slice = slice(None)) -> np.ndarray:
        """Each entry's rank within its feature (of the entries in ``rows``)."""
        f = self.entries.feature
        return np.arange(f.size)[rows] - np.searchsorted(f, f[rows], side="left")

    def floor(self) -> np.ndarray:
        """Per feature, the score a new window must reach to possibly enter (0 while the buffer has room)."""
        out = np.zeros(self.n_features, np.float32)
        last = self.rank() == self.top_k - 1
        out[self.entries.feature[last]] = self.entries.score[last]
        return out

    def update(self, new: Entries) -> TopKBuffer:
        """Select over this buffer and the new entries, in place; returns the buffer."""
        if len(new):
            pool = Entries.concat([self.entries, new])
            self.entries = pool.take(_select(pool, self.top_k, self.dedupe))
        return self

    def merge(self, other: TopKBuffer) -> TopKBuffer:
        return TopKBuffer(self.entries, self.n_features, self.top_k, self.dedupe).update(other.entries)

    def dense(self, lo: int = 0, hi: int | None = None) -> DenseTopK:
        hi = self.n_features if hi is None else hi
        n, (_, k, t) = hi - lo, self.shape
        out = DenseTopK(score=np.full((n, k), np.nan, np.float32), document=np.full((n, k), -1, np.int64),
                        window_start=np.full((n, k), -1, np.int64), length=np.zeros((n, k), np.int32),
                        token_ids=np.full((n, k, t), TOKEN_FILL, np.int32), activations=np.zeros((n, k, t), np.float32),
                        roles=np.full((n, k, t), -1, np.int8), span_start=np.zeros((n, k), np.int32))
        a, b = np.searchsorted(self.entries.feature, [lo, hi])
        part = self.entries.take(np.arange(a, b))
        f, r = part.feature - lo, self.rank(slice(a, b))
        out.score[f, r] = part.score
        for name in DENSE_FIELDS:
            getattr(out, name)[f, r] = getattr(part, name)
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        return {**self.entries.arrays(), "shape": np.array(self.shape, np.int64)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], dedupe: bool = True) -> TopKBuffer:
        """From ``arrays()``, or from a checkpoint of the earlier layout (filled slots of the dense block, listed
        feature by feature and rank by rank, so already in this buffer's order)."""
        n_features, top_k, _ = (int(v) for v in arrays["shape"])
        if "slot_feature" in arrays:
            arrays = {**arrays, "feature": arrays["slot_feature"]}
        return cls(Entries.from_arrays(arrays), n_features, top_k, dedupe)
