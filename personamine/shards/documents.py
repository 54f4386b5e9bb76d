"""One unit's rows -> documents (texts, or chat-rendered conversations) -> token windows, honouring a row limit and
the run's budget.

A document is identified inside the run by ``uid = unit << 32 | row`` (its unit and its row in it), which is known
in the worker without knowing how many rows the units before it hold; ``mine`` turns it into the global document
index (rows before the unit + row) when it writes the file. Rows whose text is not a non-empty string, or that
cannot be parsed (malformed JSON, a conversation that is not a list of turns, a turn with an unknown role, a role
sequence the chat template refuses), keep their row (and so their document index) but yield nothing, and are counted.

"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from personamine.corpus import MALFORMED, UnitRef, unit_rows
from personamine.corpus.conversations import BadConversation, ChatRenderer, parse_turns
from personamine.corpus.readers import StreamedText
from personamine.errors import PersonamineError
from personamine.model.prompts import tokenize
from personamine.roles import ROLE
from personamine.shards.plan import Budget, UnitDone
from personamine.shards.windows import Document, Window, assistant_turns, cut_windows

ROW_BITS = 32
_END = object()
_TOKENIZE_ROWS = 64  # rows tokenized in one call (fast tokenizers batch them on their own threads)
# A text (or a conversation's rendering) longer than this many characters is tokenized piece by piece and windowed
# as its tokens arrive, so the memory of tokenizing and windowing a document is bounded whatever its length.
# Measured with SmolLM2's fast tokenizer, one call on 1 Mi characters peaks 120 MB above the process and on 4 Mi
# characters 600 MB (about 0.15 MB per thousand characters: a 50 MB document peaked at 7.7 GB); a piece is at most
# 256 Ki characters (~40 MB). With offsets (a conversation's roles) a call costs more still: a 50 MB conversation
# rendered whole peaked at 11 GB.
LONG_TEXT_CHARS = 1 << 18
# A list of token ids longer than this is windowed a slice at a time (not copied into one array).
LONG_TOKENS = 1 << 16


def document_uid(unit: int | np.ndarray, row: int | np.ndarray) -> np.ndarray:
    return (np.asarray(unit, np.int64) << ROW_BITS) | np.asarray(row, np.int64)


def global_documents(uid: np.ndarray, unit_offsets: np.ndarray) -> np.ndarray:
    """Global document indices of ``uid``s, given each unit's first global index."""
    uid = np.asarray(uid, np.int64)
    return unit_offsets[uid >> ROW_BITS] + (uid & ((1 << ROW_BITS) - 1))


@dataclass
class LongText:
    """A text longer than ``LONG_TEXT_CHARS`` (or streamed by its reader): ``blocks()`` gives its text, in blocks of
    any size, and is tokenized in pieces as it is windowed (``stream_windows``)."""

    blocks: Callable[[], Iterable[str]]


@dataclass
class LongConversation:
    """A conversation whose rendering is longer than ``LONG_TEXT_CHARS``: its layout, tokenized in pieces."""

    text: str
    char_roles: np.ndarray


@dataclass
class LongTokens:
    """A list of more than ``LONG_TOKENS`` token ids, windowed a slice at a time."""

    ids: Sequence[int]


Piece = tuple[Sequence[int], "np.ndarray | None"]  # token ids and their roles (None: all plain text)


def split_text(text: str | Iterable[str], size: int | None = None) -> Iterator[str]:
    """``text`` (a string, or the blocks of one) in pieces of at most ``size`` characters (default
    ``LONG_TEXT_CHARS``), each cut where a run of whitespace begins after a non-whitespace character, so the next
    piece starts with the whitespace, where a byte-level BPE pre-tokenizer splits anyway: with SmolLM2's tokenizer
    and the tests' the pieces' tokens are the whole text's (checked on text with runs of spaces, newlines and tabs).
    A piece with no such place is cut at ``size``. Blocks give the same pieces as their concatenation, holding at
    most one block and one piece."""
    size = LONG_TEXT_CHARS if size is None else size
    held = ""
    for block in ([text] if isinstance(text, str) else text):
        held += block
        while len(held) > size:
            cut = size
            while cut > 1 and not (held[cut].isspace() and not held[cut - 1].isspace()):
                cut -= 1
            if cut <= 1:
                cut = size
            yield held[:cut]
            held = held[cut:]
    if held:
        yield held


def stream_windows(uid: int, pieces: Iterable[Piece], prefix: list[int], ctx_len: int, stride: int | None = None,
                   rendered: bool = False) -> Generator[Window, None, int]:
    """The windows ``windows.cut_windows`` cuts from a document whose tokens (and roles) are the concatenation of
    ``pieces`` (``rendered``: a conversation, see ``Document.rendered``), identical to it, holding only the tokens the
    next window needs (its context and scored tokens) plus one piece; returns the document's token count."""
    capacity = ctx_len - len(prefix)
    step = capacity if stride is None else stride
    if capacity < 1 or not 1 <= step <= capacity:
        list(cut_windows(Document(uid, [0]), prefix, ctx_len, stride))  # raises the same error as cut_windows
    head = np.asarray(prefix, dtype=np.int32)
    head_roles = np.full(head.size, ROLE["prefix"], np.int8)
    first, context = (ctx_len if rendered else capacity), capacity - step
    # buffer[i] (roles[i], turns[i]) is the document's token base + i
    buffer, roles, base, total = np.zeros(0, np.int32), np.zeros(0, np.int8), 0, 0
    turns: np.ndarray | None = None  # each token's assistant turn, once a piece brought roles (a conversation)
    n_turns, after_assistant = 0, False
    nxt: int | None = None  # where the next window's scored tokens start (None: window 0 is next)

    def window(lo: int, hi: int, score_at: int, sink: bool = True) -> Window:
        body, body_roles = buffer[lo - base:hi - base], roles[lo - base:hi - base]
        body_turns = None if turns is None else turns[lo - base:hi - base]
        if not sink:
            return Window(uid, lo, body.copy(), body_roles.copy(), score_at - lo,
                          None if body_turns is None else body_turns.copy())
        return Window(uid, lo, np.concatenate([head, body]), np.concatenate([head_roles, body_roles]),
                      head.size + score_at - lo,
                      None if body_turns is None else np.concatenate([np.full(head.size, -1, np.int32), body_turns]))

    def ready(final: bool) -> Iterator[Window]:
        nonlocal nxt, buffer, roles, turns, base
        while True:
            if nxt is None:
                if not (total >= first or (final and total > 0)):
                    return
                yield window(0, min(first, total), 0, sink=not rendered)
                nxt = first
            else:
                end = nxt + step
                if nxt >= total or not (total >= end or final):
                    return
                yield window(max(0, nxt - context), min(end, total), nxt)
                nxt = end
            keep = max(0, nxt - context)  # the first token any later window feeds
            if keep > base:
                cut = keep - base
                buffer, roles, base = buffer[cut:], roles[cut:], keep
                turns = None if turns is None else turns[cut:]

    for ids, piece_roles in pieces:
        buffer = np.concatenate([buffer, np.asarray(ids, dtype=np.int32)])
        if piece_roles is not None:
            piece_roles = np.asarray(piece_roles, np.int8)
            piece_turns = assistant_turns(piece_roles, after_assistant, n_turns)
            if piece_roles.size:
                after_assistant = bool(piece_roles[-1] == ROLE["assistant"])
                n_turns = max(n_turns, int(piece_turns.max()) + 1)
            turns = np.concatenate([np.full(roles.size, -1, np.int32) if turns is None else turns, piece_turns])
        piece_roles = np.full(len(ids), ROLE["text"], np.int8) if piece_roles is None else piece_roles
        roles = np.concatenate([roles, piece_roles])
        total += len(ids)
        yield from ready(final=False)
    yield from ready(final=True)
    return total


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

    def _encode(self, unit: UnitRef, values: list[object], counters: dict[str, int],
                base: int = 0) -> list[Document | LongText | LongConversation | LongTokens | None]:
        """One document per row value (None where the row yields nothing, counted); ``base``: the unit's row of
        ``values[0]``, for messages."""
        docs: list[Document | LongText | LongConversation | LongTokens | None] = [None] * len(values)
        if self.pretokenized:
            for i, v in enumerate(values):
                if isinstance(v, (list, tuple)) and v and all(isinstance(t, int) and t >= 0 for t in v):
                    docs[i] = LongTokens(v) if len(v) > LONG_TOKENS else Document(0, list(v))
                elif v is not None and v is not MALFORMED and not (isinstance(v, (list, tuple)) and not v):
                    if not self.skip_malformed:
                        raise PersonamineError(f"corpus file {unit.url!r}, unit {unit.index} row {base + i}: "
                                               f"{self.column!r} is not a list of token ids (skip_malformed_rows "
                                               "skips and counts such rows)")
                    values[i] = MALFORMED
        elif self.renderer is None:
            wanted = [i for i, v in enumerate(values) if isinstance(v, str) and v and len(v) <= LONG_TEXT_CHARS]
            for i, v in enumerate(values):
                if isinstance(v, StreamedText):
                    docs[i] = LongText(v.blocks)
                elif isinstance(v, str) and len(v) > LONG_TEXT_CHARS:
                    docs[i] = LongText(lambda text=v: (text,))
            # Skipped like a null, but counted apart: "null or empty" would misname a number in a text column.
            counters["rows_wrong_type"] += sum(1 for v in values if v is not None and v is not MALFORMED
                                               and not isinstance(v, (str, StreamedText)))
            for i, ids in zip(wanted, tokenize(self.tokenizer, [values[i] for i in wanted]), strict=True):
                docs[i] = Document(0, ids)
        else:
            for i, v in enumerate(values):
                if v is None or v is MALFORMED:
                    continue
                try:
                    text, char_roles = self.renderer.layout(parse_turns(v))
                except BadConversation as exc:
                    if not self.skip_malformed:
                        raise BadConversation(f"corpus file {unit.url!r}, unit {unit.index} row {base + i}: the "
                                              f"conversation {exc} (skip_malformed_rows skips and counts such rows)"
                                              ) from None
                    values[i] = MALFORMED
                    continue
                if len(text) > LONG_TEXT_CHARS:
                    docs[i] = LongConversation(text, char_roles)
                else:
                    ids, roles, _ = self.renderer.with_bos(*self.renderer.tokens(text, char_roles))
                    docs[i] = Document(0, ids, roles, rendered=True)
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
            docs = self._encode(unit, group, counters, base)
            for j, (value, doc) in enumerate(zip(group, docs, strict=True)):
                tally.rows += 1
                counters["n_documents"] += 1
                n = 0
                if value is MALFORMED:
                    counters["rows_malformed"] += 1
                elif doc is None:
                    counters["rows_skipped"] += 1
                elif isinstance(doc, (LongText, LongConversation, LongTokens)):
                    n_pieces = 0  # counted as they pass: a streamed text of escapes may decode to one piece

                    def counted(pieces: Iterator[Piece]) -> Iterator[Piece]:
                        nonlocal n_pieces
                        for piece in pieces:
                            n_pieces += 1
                            yield piece

                    n = yield from stream_windows(int(document_uid(unit.index, base + j)), counted(self._pieces(doc)),
                                                  self.prefix, self.ctx_len, self.stride,
                                                  rendered=isinstance(doc, LongConversation))
                    counters["documents_chunked"] += n_pieces > 1
                else:
                    doc.uid = int(document_uid(unit.index, base + j))
                    yield from cut_windows(doc, self.prefix, self.ctx_len, self.stride)
                    n = len(doc.ids)
                tally.tokens += n
                tally.doc_tokens.append(n)
                if self._spent(tally, budget) or (row_limit is not None and tally.rows >= row_limit):
                    tally.reached_budget = row_limit is None
                    # Read to its end only if no row follows: then the unit is whole after all.
                    tally.complete = j == len(group) - 1 and next(rows, _END) is _END
                    return

    def _pieces(self, doc: LongText | LongConversation | LongTokens) -> Iterator[Piece]:
        """A long document's tokens (and roles), a bounded piece at a time, concatenating to the whole document's."""
        if isinstance(doc, LongTokens):
            for start in range(0, len(doc.ids), LONG_TOKENS):
                yield doc.ids[start:start + LONG_TOKENS], None
        elif isinstance(doc, LongConversation):
            yield from self.renderer.render_pieces(doc.text, doc.char_roles, split_text(doc.text))
        else:
            for piece in split_text(doc.blocks()):
                yield tokenize(self.tokenizer, [piece])[0], None

    @staticmethod
    def _spent(tally: UnitTally, budget: Budget | None) -> bool:
        if budget is None:
            return False
        return ((budget.documents is not None and tally.rows >= budget.documents)
                or (budget.tokens is not None and tally.tokens >= budget.tokens))
