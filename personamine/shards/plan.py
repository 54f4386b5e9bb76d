"""Split a corpus into deterministic shards of consecutive documents."""

from __future__ import annotations

from dataclasses import dataclass

from personamine.errors import PersonamineError
from personamine.shards.corpus import Corpus
from personamine.shards.windows import tokenize


@dataclass(frozen=True)
class Shard:
    index: int
    doc_start: int
    doc_end: int  # exclusive

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}"


def count_documents(corpus: Corpus, tokenizer, max_documents: int | None, max_tokens: int | None) -> int:
    """How many leading documents the run covers. With ``max_tokens``, documents are taken whole, in order,
    up to and including the one whose tokens reach the budget."""
    n = corpus.count_documents(max_documents)
    if max_tokens is not None:
        total, index, batch = 0, 0, []
        for text in corpus.texts(0, n):
            batch.append(text if isinstance(text, str) else "")
            if len(batch) == 256:
                index, total, done = _advance(tokenizer, batch, index, total, max_tokens)
                batch = []
                if done:
                    return index
        if batch:
            index, total, _ = _advance(tokenizer, batch, index, total, max_tokens)
        n = min(n, index)
    if n == 0:
        raise PersonamineError(f"corpus {corpus.spec.corpus!r} is empty (no documents within the limits)")
    return n


def _advance(tokenizer, texts: list[str], index: int, total: int, budget: int) -> tuple[int, int, bool]:
    for ids in tokenize(tokenizer, texts):
        total += len(ids)
        index += 1
        if total >= budget:
            return index, total, True
    return index, total, False


def plan_shards(n_documents: int, n_shards: int) -> list[Shard]:
    n = max(1, min(n_shards, n_documents))
    bounds = [i * n_documents // n for i in range(n + 1)]
    return [Shard(i, bounds[i], bounds[i + 1]) for i in range(n)]
