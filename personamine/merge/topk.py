"""Per-feature top-k windows as plain numpy, with one associative, deterministic selection rule.

Order: score descending, then document ascending, then window start ascending (a total order: a window is
identified by its document and start). With ``dedupe``, windows whose fed tokens are identical count once: the
best instance under that order is kept. Selecting the top k distinct windows of a union only ever needs the top k
distinct windows of each part, so merging buffers in any grouping gives the same answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TOKEN_FILL = -1  # token_ids beyond a window's length


@dataclass
class Candidates:
    """A flat list of (feature position, window) entries, in any order."""

    feature: np.ndarray  # int64 [N], position in the run's feature list
    score: np.ndarray  # float32 [N]
    document: np.ndarray  # int64 [N]
    window_start: np.ndarray  # int64 [N]
    length: np.ndarray  # int32 [N]
    token_ids: np.ndarray  # int32 [N, T]
    activations: np.ndarray  # float32 [N, T]

    def __len__(self) -> int:
        return int(self.feature.size)

    @staticmethod
    def concat(parts: list[Candidates]) -> Candidates:
        return Candidates(*(np.concatenate([getattr(p, name) for p in parts]) for name in _FIELDS))


_FIELDS = ("feature", "score", "document", "window_start", "length", "token_ids", "activations")


def _select(c: Candidates, top_k: int, dedupe: bool) -> tuple[np.ndarray, np.ndarray]:
    """Indices into ``c`` of the kept entries and their rank within their feature."""
    order = np.lexsort((c.window_start, c.document, -c.score.astype(np.float64), c.feature))
    if dedupe and order.size:
        order = order[_first_distinct(c, order)]
    feature = c.feature[order]
    rank = np.arange(order.size) - np.searchsorted(feature, feature, side="left")
    keep = rank < top_k
    return order[keep], rank[keep]


_FP_MULT = np.uint64(0x9E3779B97F4A7C15)


def _fingerprints(token_ids: np.ndarray, length: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each window's (length, tokens); uint64 arithmetic wraps, which is what a hash wants."""
    if token_ids.shape[1] % 2 == 0:  # two int32 tokens per 64-bit word: half the arithmetic, no widening copy
        words = np.ascontiguousarray(token_ids, dtype=np.int32).view(np.uint64)
    else:
        words = token_ids.astype(np.int64).view(np.uint64)
    powers = np.cumprod(np.full(words.shape[1], _FP_MULT, dtype=np.uint64), dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = (words * powers).sum(axis=1, dtype=np.uint64)
        h ^= length.astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(31)
    return h


def _first_distinct(c: Candidates, order: np.ndarray) -> np.ndarray:
    """Positions in ``order`` of the first (best) entry of each distinct (feature, window tokens).

    Windows are compared by a 64-bit fingerprint, then every entry dropped as a duplicate is checked token by
    token against the one kept; only if a fingerprint collision is found does it compare the full tokens.
    """
    fp = _fingerprints(c.token_ids, c.length)[order]
    key = np.stack([c.feature[order].astype(np.uint64), fp], axis=1)
    key = np.ascontiguousarray(key).view(np.dtype((np.void, 16))).ravel()
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    kept_for = first[inverse.ravel()]
    dropped = np.nonzero(kept_for != np.arange(order.size))[0]
    if dropped.size:
        a, b = order[dropped], order[kept_for[dropped]]
        if not (np.array_equal(c.length[a], c.length[b]) and np.array_equal(c.token_ids[a], c.token_ids[b])):
            return _first_distinct_exact(c, order)
    return np.sort(first)


def _first_distinct_exact(c: Candidates, order: np.ndarray) -> np.ndarray:
    key = np.concatenate(
        [c.feature[order, None], c.length[order, None].astype(np.int64), c.token_ids[order].astype(np.int64)], axis=1,
    )
    key = np.ascontiguousarray(key).view(np.dtype((np.void, key.dtype.itemsize * key.shape[1]))).ravel()
    _, first = np.unique(key, return_index=True)  # first occurrence in sorted order = best instance
    return np.sort(first)


@dataclass
class TopKBuffer:
    score: np.ndarray  # float32 [F, K], NaN where empty
    document: np.ndarray  # int64 [F, K], -1 where empty
    window_start: np.ndarray  # int64 [F, K]
    length: np.ndarray  # int32 [F, K]
    token_ids: np.ndarray  # int32 [F, K, T]
    activations: np.ndarray  # float32 [F, K, T]
    dedupe: bool = True

    @classmethod
    def empty(cls, n_features: int, top_k: int, ctx_len: int, dedupe: bool = True) -> TopKBuffer:
        return cls(
            score=np.full((n_features, top_k), np.nan, np.float32),
            document=np.full((n_features, top_k), -1, np.int64),
            window_start=np.full((n_features, top_k), -1, np.int64),
            length=np.zeros((n_features, top_k), np.int32),
            token_ids=np.full((n_features, top_k, ctx_len), TOKEN_FILL, np.int32),
            activations=np.zeros((n_features, top_k, ctx_len), np.float32),
            dedupe=dedupe,
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.token_ids.shape  # type: ignore[return-value]

    def floor(self) -> np.ndarray:
        """Per feature, the score a new window must reach to possibly enter (0 while the buffer has room)."""
        last = self.score[:, -1]
        return np.where(np.isnan(last), 0.0, last).astype(np.float32)

    def candidates(self, features: np.ndarray | None = None) -> Candidates:
        rows = np.arange(self.score.shape[0]) if features is None else features
        filled = ~np.isnan(self.score[rows])
        f_idx, k_idx = np.nonzero(filled)
        feat = rows[f_idx]
        return Candidates(
            feature=feat.astype(np.int64), score=self.score[feat, k_idx], document=self.document[feat, k_idx],
            window_start=self.window_start[feat, k_idx], length=self.length[feat, k_idx],
            token_ids=self.token_ids[feat, k_idx], activations=self.activations[feat, k_idx],
        )

    def update(self, new: Candidates) -> np.ndarray:
        """Merge candidates into the buffer, rewriting only the features they touch; return those features."""
        touched = np.unique(new.feature)
        if len(new) == 0:
            return touched
        pool = Candidates.concat([self.candidates(touched), new])
        keep, rank = _select(pool, self.score.shape[1], self.dedupe)
        self._clear(touched)
        f = pool.feature[keep]
        self.score[f, rank] = pool.score[keep]
        self.document[f, rank] = pool.document[keep]
        self.window_start[f, rank] = pool.window_start[keep]
        self.length[f, rank] = pool.length[keep]
        self.token_ids[f, rank] = pool.token_ids[keep]
        self.activations[f, rank] = pool.activations[keep]
        return touched

    def _clear(self, rows: np.ndarray) -> None:
        self.score[rows] = np.nan
        self.document[rows] = -1
        self.window_start[rows] = -1
        self.length[rows] = 0
        self.token_ids[rows] = TOKEN_FILL
        self.activations[rows] = 0.0

    def merge(self, other: TopKBuffer) -> TopKBuffer:
        out = TopKBuffer(**{name: getattr(self, name).copy() for name in _BUFFER_ARRAYS}, dedupe=self.dedupe)
        out.update(other.candidates())
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in _BUFFER_ARRAYS}

    def compact_arrays(self) -> dict[str, np.ndarray]:
        """Only the filled slots: an all-features buffer is mostly empty in a shard, and dense it is F*K*T."""
        f_idx, k_idx = np.nonzero(~np.isnan(self.score))
        out = {name: getattr(self, name)[f_idx, k_idx] for name in _BUFFER_ARRAYS}
        out.update(shape=np.array(self.token_ids.shape, np.int64), slot_feature=f_idx, slot_rank=k_idx)
        return out

    @classmethod
    def from_compact_arrays(cls, arrays: dict[str, np.ndarray], dedupe: bool = True) -> TopKBuffer:
        n_features, top_k, ctx_len = (int(v) for v in arrays["shape"])
        buffer = cls.empty(n_features, top_k, ctx_len, dedupe)
        f_idx, k_idx = arrays["slot_feature"], arrays["slot_rank"]
        for name in _BUFFER_ARRAYS:
            getattr(buffer, name)[f_idx, k_idx] = arrays[name]
        return buffer


_BUFFER_ARRAYS = ("score", "document", "window_start", "length", "token_ids", "activations")
