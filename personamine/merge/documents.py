"""Per-document monitoring scores: each readout channel's mean and max (and min) per document and its mean per
assistant turn, a buffer with an exact, associative merge like the others here. It is what persona-vector data
screening ranks samples by (a sample's mean projection over its response tokens) and what the Assistant Axis plots
over a conversation's turns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MIN_RANKED_TOKENS = 16  # scored tokens a document needs to be ranked by its mean (shown lists; the file keeps all)


@dataclass
class DocumentScores:
    """Per document, each channel's mean and max (and min) over its scored tokens, and for conversations the mean per
    assistant turn: a buffer with an exact, associative merge (a document lies in one shard; sums are float64 over
    the document's tokens in corpus order, the same in any shard)."""

    document: np.ndarray  # int64 [D] sorted ids (uids in a worker, global indices in the file)
    n_tokens: np.ndarray  # int64 [D] scored tokens
    total: np.ndarray  # float64 [D, C]
    max: np.ndarray  # float32 [D, C]
    min: np.ndarray  # float32 [D, C]
    turn_document: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # int64 [U], sorted with turn
    turn: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # int64 [U]: 0 = first assistant turn
    turn_n_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    turn_total: np.ndarray | None = None  # float64 [U, C]

    @classmethod
    def empty(cls, n_channels: int) -> DocumentScores:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, n_channels)),
                   np.zeros((0, n_channels), np.float32), np.zeros((0, n_channels), np.float32),
                   turn_total=np.zeros((0, n_channels)))

    @property
    def mean(self) -> np.ndarray:
        return self.total / np.maximum(self.n_tokens, 1)[:, None]

    @property
    def turn_mean(self) -> np.ndarray:
        return self.turn_total / np.maximum(self.turn_n_tokens, 1)[:, None]

    def ranked(self, channel: int, n: int, min_tokens: int = MIN_RANKED_TOKENS) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the ``n`` documents of highest mean on ``channel`` (highest first) and of the ``n`` of lowest
        (lowest first), among those with at least ``min_tokens`` scored tokens (all of them when none has that many):
        a mean over one or two tokens is a token's value, not a document's, and would lead both lists."""
        rows = np.nonzero(self.n_tokens >= min_tokens)[0]
        if rows.size == 0:
            rows = np.arange(self.document.size)
        order = rows[np.argsort(self.mean[rows, channel], kind="stable")]
        return order[::-1][:n], order[:n]

    def turn_rows(self, document: int) -> np.ndarray:
        """The per-turn rows of one document, first assistant turn first (none outside conversations)."""
        lo, hi = np.searchsorted(self.turn_document, [document, document + 1])
        return np.arange(lo, hi)

    def merge(self, other: DocumentScores) -> DocumentScores:
        """Disjoint documents (one shard each): concatenated in document order."""
        return DocumentScores.concat([self, other])

    @classmethod
    def concat(cls, parts: list[DocumentScores]) -> DocumentScores:
        """Many shards' disjoint documents joined in one pass, in document (and turn) order."""
        def cat(name: str) -> np.ndarray:
            return np.concatenate([getattr(p, name) for p in parts])

        order = np.argsort(cat("document"), kind="stable")
        turn_order = np.lexsort((cat("turn"), cat("turn_document")))
        return cls(*(cat(name)[order] for name in ("document", "n_tokens", "total", "max", "min")),
                   *(cat(name)[turn_order] for name in ("turn_document", "turn", "turn_n_tokens", "turn_total")))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"document": self.document, "n_tokens": self.n_tokens, "total": self.total, "max": self.max,
                "min": self.min, "turn_document": self.turn_document, "turn": self.turn,
                "turn_n_tokens": self.turn_n_tokens, "turn_total": self.turn_total}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> DocumentScores:
        return cls(**{k: np.asarray(v) for k, v in arrays.items()})
