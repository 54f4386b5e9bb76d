"""One unit's rows -> documents (texts, or chat-rendered conversations) -> token windows, honouring a row limit and
the run's budget.

A document is identified inside the run by ``uid = unit << 32 | row`` (its unit and its row in it), which is known
in the worker without knowing how many rows the units before it hold; ``mine`` turns it into the global document
index (rows before the unit + row) when it writes the file. Rows whose text is not a non-empty string, or that
cannot be parsed (malformed JSON, a conversation that is not a list of turns, a turn with an unknown role, a role
sequence the chat template refuses), keep their row (and so their document index) but yield nothing, and are counted.

"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from personamine.corpus import MALFORMED, UnitRef, unit_rows
from personamine.corpus.conversations import BadConversation, ChatRenderer, parse_turns
from personamine.errors import PersonamineError
from personamine.shards.plan import Budget, UnitDone
from personamine.shards.windows import Document, Window, cut_windows, tokenize

ROW_BITS = 32
_END = object()
_TOKENIZE_ROWS = 64  # rows tokenized in one call (fast tokenizers batch them on their own threads)


def document_uid(unit: int | np.ndarray, row: int | np.ndarray) -> np.ndarray:
    return (np.asarray(unit, np.int64) << ROW_BITS) | np.asarray(row, np.int64)


def global_documents(uid: np.ndarray, unit_offsets: np.ndarray) -> np.ndarray:
    """Global document indices of ``uid``s, given each unit's first global index."""
    uid = np.asarray(uid, np.int64)
    return unit_offsets[uid >> ROW_BITS] + (uid & ((1 << ROW_BITS) - 1))


@dataclass
class UnitTally:
    """What reading one unit found: rows and tokens, each row's token count, and whether it ended the budget."""

    index: int
    rows: int = 0
    tokens: int = 0
    complete: bool = True
    reached_budget: bool = False
    doc_tokens: list[int] = field(default_factory=list)

    def done(self) -> UnitDone:
        return UnitDone(self.index, self.rows, self.tokens, self.complete)


class UnitDocuments:
    """Reads a unit, turns its rows into documents (texts, or conversations rendered by ``renderer``) and cuts them
    into windows (see ``windows.cut_windows``)."""

    def __init__(self, *, tokenizer, prefix: list[int], ctx_len: int, column: str, skip_malformed: bool,
                 stride: int | None = None, renderer: ChatRenderer | None = None, pretokenized: bool = False) -> None:
        self.tokenizer, self.prefix, self.ctx_len, self.stride = tokenizer, prefix, ctx_len, stride
        self.column, self.skip_malformed, self.renderer = column, skip_malformed, renderer
        self.pretokenized = pretokenized

    def _encode(self, unit: UnitRef, values: list[object], counters: dict[str, int]) -> list[Document | None]:
        """One document per row value (None where the row yields nothing, counted)."""
        docs: list[Document | None] = [None] * len(values)
        if self.pretokenized:
            for i, v in enumerate(values):
                if isinstance(v, (list, tuple)) and v and all(isinstance(t, int) and t >= 0 for t in v):
                    docs[i] = Document(0, list(v))
                elif v is not None and v is not MALFORMED and not (isinstance(v, (list, tuple)) and not v):
                    if not self.skip_malformed:
                        raise PersonamineError(f"corpus file {unit.url!r}, unit {unit.index} row {i}: "
                                               f"{self.column!r} is not a list of token ids (skip_malformed_rows "
                                               "skips and counts such rows)")
                    values[i] = MALFORMED
        elif self.renderer is None:
            wanted = [i for i, v in enumerate(values) if isinstance(v, str) and v]
            for i, ids in zip(wanted, tokenize(self.tokenizer, [values[i] for i in wanted]), strict=True):
                docs[i] = Document(0, ids)
        else:
            for i, v in enumerate(values):
                if v is None or v is MALFORMED:
                    continue
                try:
                    rendered = self.renderer.render(parse_turns(v))
                except BadConversation as exc:
                    if not self.skip_malformed:
                        raise BadConversation(f"corpus file {unit.url!r}, unit {unit.index} row {i}: the "
                                              f"conversation {exc} (skip_malformed_rows skips and counts such rows)"
                                              ) from None
                    values[i] = MALFORMED
                    continue
                docs[i] = Document(0, rendered.ids, rendered.roles, rendered=True)
        return docs

    def windows(self, unit: UnitRef, tally: UnitTally, counters: dict[str, int], row_limit: int | None = None,
                budget: Budget | None = None) -> Iterator[Window]:
        rows = iter(unit_rows(unit, self.column, self.skip_malformed))
        while True:
            group = []
            for value in rows:
                group.append(value)
                if len(group) == _TOKENIZE_ROWS or (row_limit is not None and tally.rows + len(group) >= row_limit):
                    break
            if not group:
                return
            base = tally.rows
            docs = self._encode(unit, group, counters)
            for j, (value, doc) in enumerate(zip(group, docs, strict=True)):
                tally.rows += 1
                counters["n_documents"] += 1
                if value is MALFORMED:
                    counters["rows_malformed"] += 1
                elif doc is None:
                    counters["rows_skipped"] += 1
                else:
                    doc.uid = int(document_uid(unit.index, base + j))
                    yield from cut_windows(doc, self.prefix, self.ctx_len, self.stride)
                n = 0 if doc is None else len(doc.ids)
                tally.tokens += n
                tally.doc_tokens.append(n)
                if self._spent(tally, budget) or (row_limit is not None and tally.rows >= row_limit):
                    tally.reached_budget = row_limit is None
                    # Read to its end only if no row follows: then the unit is whole after all.
                    tally.complete = j == len(group) - 1 and next(rows, _END) is _END
                    return

    @staticmethod
    def _spent(tally: UnitTally, budget: Budget | None) -> bool:
        if budget is None:
            return False
        return ((budget.documents is not None and tally.rows >= budget.documents)
                or (budget.tokens is not None and tally.tokens >= budget.tokens))
