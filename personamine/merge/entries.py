"""Mined windows as compact plain numpy: each shown span once, and the (feature, span) entries that point at it.

An all-features run keeps k windows for each of up to 131,072 features, but most entries share a few windows, and a
feature fires on a few tokens of each. So a row of a ``WindowTable`` holds a window's identity and the tokens and
roles shown for it once; an entry holds its feature, score and row of that table, and its per-token activations as
``SparseRows`` (nonzeros only). A dense [features, k, span] block is only built for the features being written.

While a batch is mined, a table row is a whole fed window. An entry kept for a feature is then cut to its
**display span**: ``example_len`` tokens around the window's peak for that feature (the whole window when the window
is no longer), so what a buffer holds is bounded by the spans, not by ``ctx_len`` (a 1,024-token window shows 64).
A row records where its span starts in the fed window.

Windows are compared for dedupe by two 64-bit fingerprints of the FED window's (length, tokens), computed once per
batch and carried to its spans, and every entry dropped as a duplicate is then checked token by token against the
one kept (``first_distinct``), so a collision can never merge two distinct windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TOKEN_FILL = -1  # token_ids beyond a window's length

_FP_MULTS = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F))


def fingerprints(token_ids: np.ndarray, length: np.ndarray, which: int = 0) -> np.ndarray:
    """A 64-bit hash of each window's (length, tokens) (``which`` picks one of two independent multipliers); uint64
    arithmetic wraps, which is what a hash wants."""
    if token_ids.shape[1] % 2 == 0:  # two int32 tokens per 64-bit word: half the arithmetic, no widening copy
        words = np.ascontiguousarray(token_ids, dtype=np.int32).view(np.uint64)
    else:
        words = token_ids.astype(np.int64).view(np.uint64)
    powers = np.cumprod(np.full(words.shape[1], _FP_MULTS[which], dtype=np.uint64), dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = (words * powers).sum(axis=1, dtype=np.uint64)
        h ^= length.astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(31)
    return h


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The concatenation of arange(s, s + c) for each (s, c), without a Python loop."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    offsets = np.cumsum(counts) - counts
    return np.repeat(starts.astype(np.int64) - offsets, counts) + np.arange(total, dtype=np.int64)


@dataclass
class WindowTable:
    document: np.ndarray  # int64 [W]
    window_start: np.ndarray  # int64 [W]: offset of the fed window's first document token in the document
    length: np.ndarray  # int32 [W]: tokens in the row (the span)
    token_ids: np.ndarray  # int32 [W, T], TOKEN_FILL beyond the length
    roles: np.ndarray  # int8 [W, T], NO_ROLE beyond the length
    span_start: np.ndarray  # int32 [W]: position of the row's first token in the fed window
    fingerprint: np.ndarray  # uint64 [W]: of the fed window
    fingerprint2: np.ndarray  # uint64 [W]: an independent second hash of the fed window

    @classmethod
    def build(cls, document: np.ndarray, window_start: np.ndarray, length: np.ndarray, token_ids: np.ndarray,
              roles: np.ndarray | None = None) -> WindowTable:
        """Rows that are whole fed windows (fingerprinted here)."""
        token_ids = np.ascontiguousarray(token_ids, dtype=np.int32)
        length = np.asarray(length, dtype=np.int32)
        if roles is None:
            roles = np.where(token_ids == TOKEN_FILL, -1, 0).astype(np.int8)
        return cls(np.asarray(document, dtype=np.int64), np.asarray(window_start, dtype=np.int64), length, token_ids,
                   np.asarray(roles, np.int8), np.zeros(length.size, np.int32), fingerprints(token_ids, length),
                   fingerprints(token_ids, length, 1))

    @classmethod
    def empty(cls, ctx_len: int) -> WindowTable:
        z = np.zeros(0, np.int64)
        return cls.build(z, z, z, np.zeros((0, ctx_len), np.int32))

    def __len__(self) -> int:
        return int(self.document.size)

    def take(self, rows: np.ndarray) -> WindowTable:
        return WindowTable(*(getattr(self, name)[rows] for name in _WINDOW_FIELDS))

    @staticmethod
    def concat(tables: list[WindowTable]) -> WindowTable:
        return WindowTable(*(np.concatenate([getattr(t, name) for t in tables]) for name in _WINDOW_FIELDS))

    def spans(self, rows: np.ndarray, start: np.ndarray, width: int) -> WindowTable:
        """Rows ``rows`` of whole windows cut to ``width`` tokens from position ``start`` (their display spans)."""
        index = start[:, None] + np.arange(width)[None, :]
        inside = index < self.token_ids.shape[1]
        index = np.minimum(index, self.token_ids.shape[1] - 1)
        tokens = np.where(inside, self.token_ids[rows[:, None], index], TOKEN_FILL)
        roles = np.where(inside, self.roles[rows[:, None], index], -1).astype(np.int8)
        length = np.clip(self.length[rows] - start, 0, width).astype(np.int32)
        tokens = np.where(np.arange(width)[None, :] < length[:, None], tokens, TOKEN_FILL).astype(np.int32)
        roles = np.where(tokens == TOKEN_FILL, -1, roles).astype(np.int8)
        return WindowTable(self.document[rows], self.window_start[rows], length, tokens, roles,
                           (self.span_start[rows] + start).astype(np.int32), self.fingerprint[rows],
                           self.fingerprint2[rows])

    def around(self, rows: np.ndarray, peak: np.ndarray, width: int, before: int
               ) -> tuple[np.ndarray, WindowTable, np.ndarray]:
        """Rows ``rows`` cut to the ``width`` tokens around position ``peak[i]``, with ``before`` tokens before it
        where the window allows: (each row's index in the returned table, which holds each distinct span once, and
        each row's span start)."""
        start = np.clip(peak - before, 0, np.maximum(self.length[rows].astype(np.int64) - width, 0))
        keys, inverse = np.unique(rows * (1 << 32) + start, return_inverse=True)
        return inverse.ravel().astype(np.int64), self.spans(keys >> 32, keys & ((1 << 32) - 1), width), start


_WINDOW_FIELDS = ("document", "window_start", "length", "token_ids", "roles", "span_start", "fingerprint",
                  "fingerprint2")


@dataclass
class SparseRows:
    """Rows of per-token values in CSR form: row i's nonzeros are ``position/value[indptr[i]:indptr[i + 1]]``."""

    indptr: np.ndarray  # int64 [N + 1]
    position: np.ndarray  # int32 [nnz], ascending within a row
    value: np.ndarray  # float32 [nnz]

    @classmethod
    def from_dense(cls, dense: np.ndarray) -> SparseRows:
        dense = np.asarray(dense, dtype=np.float32)
        row, position = np.nonzero(dense)
        return cls.from_coo(dense.shape[0], row, position, dense[row, position])

    @classmethod
    def from_coo(cls, n_rows: int, row: np.ndarray, position: np.ndarray, value: np.ndarray) -> SparseRows:
        """From nonzeros sorted by (row, position)."""
        indptr = np.zeros(n_rows + 1, np.int64)
        np.cumsum(np.bincount(row, minlength=n_rows), out=indptr[1:])
        return cls(indptr, np.asarray(position, dtype=np.int32), np.asarray(value, dtype=np.float32))

    def __len__(self) -> int:
        return int(self.indptr.size - 1)

    def take(self, rows: np.ndarray) -> SparseRows:
        starts, counts = self.indptr[rows], self.indptr[rows + 1] - self.indptr[rows]
        nz = _ranges(starts, counts)
        indptr = np.zeros(counts.size + 1, np.int64)
        np.cumsum(counts, out=indptr[1:])
        return SparseRows(indptr, self.position[nz], self.value[nz])

    @staticmethod
    def concat(parts: list[SparseRows]) -> SparseRows:
        offsets = np.cumsum([0] + [int(p.indptr[-1]) for p in parts])
        indptr = np.concatenate([[0]] + [p.indptr[1:] + off for p, off in zip(parts, offsets, strict=False)])
        return SparseRows(indptr.astype(np.int64), np.concatenate([p.position for p in parts]),
                          np.concatenate([p.value for p in parts]))

    def dense(self, width: int) -> np.ndarray:
        out = np.zeros((len(self), width), np.float32)
        row = np.repeat(np.arange(len(self)), np.diff(self.indptr))
        out[row, self.position] = self.value
        return out


@dataclass
class Entries:
    """A flat list of (feature position, window) entries with their scores and per-token activations."""

    feature: np.ndarray  # int64 [N], position in the run's feature list
    score: np.ndarray  # float32 [N], the window's max activation
    window: np.ndarray  # int64 [N], row of ``windows``
    acts: SparseRows  # row i: entry i's per-token activations
    windows: WindowTable

    @classmethod
    def from_dense(cls, *, feature: np.ndarray, score: np.ndarray, document: np.ndarray, window_start: np.ndarray,
                   length: np.ndarray, token_ids: np.ndarray, activations: np.ndarray, roles: np.ndarray | None = None,
                   span_start: np.ndarray | None = None) -> Entries:
        """One row per entry, as a file or a test holds them (fingerprinted from the tokens it holds)."""
        table = WindowTable.build(document, window_start, length, token_ids, roles)
        if span_start is not None:
            table.span_start = np.asarray(span_start, np.int32)
        return cls(np.asarray(feature, dtype=np.int64), np.asarray(score, dtype=np.float32),
                   np.arange(len(feature), dtype=np.int64), SparseRows.from_dense(activations), table)

    @classmethod
    def empty(cls, ctx_len: int) -> Entries:
        return cls.from_dense(feature=np.zeros(0, np.int64), score=np.zeros(0, np.float32),
                              document=np.zeros(0, np.int64), window_start=np.zeros(0, np.int64),
                              length=np.zeros(0, np.int32), token_ids=np.zeros((0, ctx_len), np.int32),
                              activations=np.zeros((0, ctx_len), np.float32))

    def __len__(self) -> int:
        return int(self.feature.size)

    @property
    def ctx_len(self) -> int:
        return int(self.windows.token_ids.shape[1])

    def take(self, rows: np.ndarray) -> Entries:
        """The given entries, with a window table of only the windows they use."""
        used, window = np.unique(self.window[rows], return_inverse=True)
        return Entries(self.feature[rows], self.score[rows], window.ravel().astype(np.int64), self.acts.take(rows),
                       self.windows.take(used))

    @staticmethod
    def concat(parts: list[Entries]) -> Entries:
        # Parts that share a table (one batch's windows, gathered chunk by chunk of features) share it here too, so
        # a window is never stored twice.
        tables: list[WindowTable] = []
        offset: dict[int, int] = {}
        total = 0
        for p in parts:
            if id(p.windows) not in offset:
                offset[id(p.windows)], total = total, total + len(p.windows)
                tables.append(p.windows)
        return Entries(
            np.concatenate([p.feature for p in parts]), np.concatenate([p.score for p in parts]),
            np.concatenate([p.window + offset[id(p.windows)] for p in parts]),
            SparseRows.concat([p.acts for p in parts]), WindowTable.concat(tables),
        )

    # Per-entry copies, for writing a file and for tests; the hot path works on the table.
    @property
    def document(self) -> np.ndarray:
        return self.windows.document[self.window]

    @property
    def window_start(self) -> np.ndarray:
        return self.windows.window_start[self.window]

    @property
    def length(self) -> np.ndarray:
        return self.windows.length[self.window]

    @property
    def token_ids(self) -> np.ndarray:
        return self.windows.token_ids[self.window]

    @property
    def roles(self) -> np.ndarray:
        return self.windows.roles[self.window]

    @property
    def span_start(self) -> np.ndarray:
        return self.windows.span_start[self.window]

    @property
    def activations(self) -> np.ndarray:
        return self.acts.dense(self.ctx_len)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"feature": self.feature, "score": self.score, "window": self.window, "acts_indptr": self.acts.indptr,
               "acts_position": self.acts.position, "acts_value": self.acts.value}
        # The fingerprints too: they are of the fed windows, which a span no longer holds.
        out.update({f"windows_{name}": getattr(self.windows, name) for name in _WINDOW_FIELDS})
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Entries:
        """From ``arrays()``, or from one dense row per entry (``token_ids`` and ``activations``, as in files and in
        checkpoints written before entries were compact)."""
        if "window" not in arrays:
            optional = {name: np.array(arrays[name]) for name in ("roles", "span_start") if name in arrays}
            return cls.from_dense(**{name: np.array(arrays[name]) for name in (
                "feature", "score", "document", "window_start", "length", "token_ids", "activations")}, **optional)
        if "windows_fingerprint2" in arrays:
            table = WindowTable(*(np.array(arrays[f"windows_{name}"]) for name in _WINDOW_FIELDS))
        else:  # a checkpoint from before spans and roles: its rows are whole windows
            table = WindowTable.build(arrays["windows_document"], arrays["windows_window_start"],
                                      arrays["windows_length"], arrays["windows_token_ids"])
        return cls(np.array(arrays["feature"]), np.array(arrays["score"]), np.array(arrays["window"]),
                   SparseRows(np.array(arrays["acts_indptr"]), np.array(arrays["acts_position"]),
                              np.array(arrays["acts_value"])), table)


def first_distinct(cell: np.ndarray, entries: Entries, order: np.ndarray) -> np.ndarray:
    """Positions in ``order`` of the first (best) entry of each distinct (cell, window tokens), ascending.

    ``order`` must list entries sorted by cell. Windows are compared by fingerprint, then every entry dropped as a
    duplicate is checked token by token against the one kept; only on a fingerprint collision are full tokens compared.
    """
    w = entries.window[order]
    c = cell[order]
    fp, fp2 = entries.windows.fingerprint[w], entries.windows.fingerprint2[w]
    by_key = np.lexsort((fp2, fp, c))  # stable: within one (cell, fingerprints), the best comes first
    c_s, fp_s, fp2_s = c[by_key], fp[by_key], fp2[by_key]
    starts = np.ones(by_key.size, bool)
    starts[1:] = (c_s[1:] != c_s[:-1]) | (fp_s[1:] != fp_s[:-1]) | (fp2_s[1:] != fp2_s[:-1])
    kept_for = np.empty(by_key.size, np.int64)
    kept_for[by_key] = by_key[starts][np.cumsum(starts) - 1]
    dropped = by_key[~starts]
    if dropped.size:
        t = entries.windows
        # One check per distinct pair of windows, not per entry: in an all-features run millions of entries share
        # a few hundred windows, and gathering their tokens per entry would cost gigabytes.
        pair = np.unique(w[dropped] * len(t) + w[kept_for[dropped]])
        a, b = pair // len(t), pair % len(t)
        # Identical fed windows show identical spans: anything else is a collision of both hashes.
        if not (np.array_equal(t.length[a], t.length[b]) and np.array_equal(t.token_ids[a], t.token_ids[b])
                and np.array_equal(t.span_start[a], t.span_start[b])):
            return _first_distinct_exact(c, t.length[w], t.token_ids[w])
    return np.sort(by_key[starts])


def _first_distinct_exact(cell: np.ndarray, length: np.ndarray, token_ids: np.ndarray) -> np.ndarray:
    key = np.concatenate([cell[:, None], length[:, None].astype(np.int64), token_ids.astype(np.int64)], axis=1)
    key = np.ascontiguousarray(key).view(np.dtype((np.void, key.dtype.itemsize * key.shape[1]))).ravel()
    _, first = np.unique(key, return_index=True)  # first occurrence in sorted order = best instance
    return np.sort(first)
