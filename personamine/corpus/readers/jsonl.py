"""JSON Lines (``.jsonl``, ``.json``): one JSON object per line; blank lines are not rows.

A line longer than ``lines.LONG_LINE_BYTES`` is never held whole: one pass over its blocks checks it and finds the
column's value; a long string there is yielded as a ``StreamedText`` that decodes it block by block when read.
A list or object there (a conversation, token ids) is parsed whole, as every other format does.

A ``.json`` file that holds one JSON array instead is read whole, as one unit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

from personamine.corpus.manifest import CorpusFile, UnitRef
from personamine.corpus.readers.base import MALFORMED, RowError, StreamedText, cannot_read, open_binary
from personamine.corpus.readers.lines import LongLine, byte_ranges, decode, line_number, lines
from personamine.errors import PersonamineError


def _is_array(url: str) -> bool:
    with open_binary(url) as handle:
        head = handle.read(4096).lstrip()
    return head.startswith(b"[")


class JsonLinesReader:
    format = "jsonl"
    suffixes = (".jsonl", ".json")

    def plan(self, file: CorpusFile, unit_bytes: int) -> list[tuple[int, int, int | None]]:
        if file.url.endswith(".json") and file.size and _is_array(file.url):
            return [(0, file.size, None)]
        return byte_ranges(file.size, unit_bytes)

    def columns(self, file: CorpusFile) -> list[str]:
        for row in self.rows(UnitRef(0, file.url, self.format, 0, file.size, None, file.version), "", False,
                             keys=True):
            return list(row)
        return []

    def rows(self, unit: UnitRef, column: str, skip_malformed: bool, keys: bool = False) -> Iterator[object]:
        if unit.url.endswith(".json") and unit.start == 0 and _is_array(unit.url):
            yield from self._array(unit, column, keys)
            return
        for offset, raw in lines(unit):
            if isinstance(raw, LongLine):
                try:
                    row = _long_row(raw, column, keys)
                except ValueError as exc:
                    if skip_malformed:
                        yield MALFORMED
                        continue
                    raise RowError(f"corpus file {unit.url!r} line {line_number(unit.url, offset)} is not a JSON "
                                   f"object: {exc} (skip_malformed_rows skips and counts such rows)") from None
                if row is not _BLANK:
                    yield row
                continue
            text = decode(unit, offset, raw)
            if not text.strip():
                continue
            try:
                row = json.loads(text)
                if not isinstance(row, dict):
                    raise ValueError(f"a JSON {type(row).__name__}, not an object")
            except ValueError as exc:
                if skip_malformed:
                    yield MALFORMED
                    continue
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                raise RowError(f"corpus file {unit.url!r} line {line_number(unit.url, offset)} is not a JSON "
                               f"object: {reason} (skip_malformed_rows skips and counts such rows)") from None
            yield row if keys else row.get(column)

    def _array(self, unit: UnitRef, column: str, keys: bool) -> Iterator[object]:
        try:
            with open_binary(unit.url) as handle:
                data = json.load(handle)
        except (ValueError, OSError) as exc:
            raise cannot_read(unit.url, exc) from exc
        for i, row in enumerate(data):
            if not isinstance(row, dict):
                raise PersonamineError(f"corpus file {unit.url!r}: element {i} of its JSON array is not an object")
            yield row if keys else row.get(column)


def _long_row(line: LongLine, column: str, keys: bool) -> object:
    """A long line's keys (``keys``) or ``column``'s value: a ``StreamedText`` for a long string (never held whole),
    else the value itself. Raises ValueError (before anything is yielded) if the line is not one JSON object."""
    scanned = _scan_long_row(line.text_blocks(), column)
    if scanned is None:
        return _BLANK
    names, member = scanned
    if keys:
        return {name: None for name in names}
    if member is None or not member.long:
        return None if member is None else member.value
    return StreamedText(lambda: _string_span(line.text_blocks(), member.start, member.size))


# ---------------------------------------------------------------- lines too long to hold whole

_STRING_STOP = re.compile(r'["\\\x00-\x1f]')  # what ends a run of plain characters inside a JSON string
_NESTED_STOP = re.compile(r'[\[\]{}"]')
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_SCALAR_CHARS = frozenset("0123456789+-.eEtruefalsn")
_SCALAR = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null")
_ESCAPES = frozenset('"\\/bfnrt')
_HEX = frozenset("0123456789abcdefABCDEF")
_BLANK = object()  # a long line of whitespace only: not a row, as a short blank line is not
_KEY_CHARS = 1 << 16  # a longer key is never the column read
SHORT_STRING_CHARS = 1 << 18  # a column string of at most this many (raw) characters is decoded whole
_SPAN_CHARS = 1 << 20  # raw characters of a long string decoded at a time


class _Cursor:
    """A position in text that arrives in blocks (a long line, decoded): one block held at a time."""

    def __init__(self, blocks: Iterator[str]) -> None:
        self.blocks, self.buf, self.i, self.base = blocks, "", 0, 0

    @property
    def pos(self) -> int:
        return self.base + self.i

    def more(self) -> bool:
        while self.i >= len(self.buf):
            block = next(self.blocks, None)
            if block is None:
                return False
            self.base += len(self.buf)
            self.i -= len(self.buf)
            self.buf = block
        return True

    def peek(self) -> str:
        return self.buf[self.i] if self.more() else ""

    def take(self) -> str:
        c = self.peek()
        self.i += len(c)
        return c

    def expect(self, wanted: str) -> None:
        self.skip_whitespace()
        c = self.take()
        if c != wanted:
            raise ValueError(f"expecting {wanted!r} at character {self.pos - len(c)}, found {c or 'the end'!r}")

    def skip_whitespace(self) -> None:
        while self.more():
            self.i = _WHITESPACE.match(self.buf, self.i).end()
            if self.i < len(self.buf):
                return

    def string(self, keep: float) -> tuple[str | None, int]:
        """Past one JSON string (the cursor at its opening quote), checked as ``json.loads`` would: its raw text
        (between the quotes, escapes as written) if at most ``keep`` characters (else None), and that text's length."""
        self.expect('"')
        parts: list[str] | None = []
        size = 0
        while True:
            if not self.more():
                raise ValueError("unterminated string")
            stop = _STRING_STOP.search(self.buf, self.i)
            end = len(self.buf) if stop is None else stop.start()
            run = self.buf[self.i:end]
            self.i = end
            ends_at = "" if stop is None else self.buf[end]  # before an escape's characters move to the next block
            if ends_at == "\\":
                self.i += 1
                c = self.take()
                if c == "u":
                    digits = "".join(self.take() for _ in range(4))
                    if len(digits) != 4 or not set(digits) <= _HEX:
                        raise ValueError(f"invalid \\uXXXX escape at character {self.pos - 6}")
                    run += "\\u" + digits
                elif c in _ESCAPES and c:
                    run += "\\" + c
                else:
                    raise ValueError(f"invalid escape at character {self.pos - 2}")
            elif ends_at and ends_at != '"':
                raise ValueError(f"invalid control character at character {self.pos}")
            size += len(run)
            if parts is not None:
                parts.append(run)
                if size > keep:
                    parts = None
            if ends_at == '"':
                self.i += 1
                return (None if parts is None else "".join(parts)), size

    def scalar(self) -> object:
        chars = []
        while self.more() and self.buf[self.i] in _SCALAR_CHARS:
            chars.append(self.take())
        text = "".join(chars)
        if not _SCALAR.fullmatch(text):
            raise ValueError(f"expecting a value at character {self.pos - len(text)}")
        return json.loads(text)

    def nested(self, keep: bool) -> str | None:
        """Past one array or object (the cursor at its bracket), its brackets balanced and strings checked; its raw
        text if ``keep`` (then ``json.loads`` checks the rest)."""
        stack: list[str] = []
        parts: list[str] = []
        while True:
            if not self.more():
                raise ValueError("unterminated array or object")
            stop = _NESTED_STOP.search(self.buf, self.i)
            end = len(self.buf) if stop is None else stop.start()
            if keep:
                parts.append(self.buf[self.i:end])
            self.i = end
            if stop is None:
                continue
            c = self.buf[end]
            if c == '"':
                raw, _ = self.string(keep=float("inf") if keep else 0)
                if keep:
                    parts.append('"' + raw + '"')
                continue
            self.i += 1
            if keep:
                parts.append(c)
            if c in "[{":
                stack.append("]" if c == "[" else "}")
            elif not stack or stack.pop() != c:
                raise ValueError(f"unbalanced {c!r} at character {self.pos - 1}")
            if not stack:
                return "".join(parts) if keep else None


@dataclass
class _Member:
    start: int = 0  # character of the value's first raw character (a string's: after its quote)
    size: int = 0  # a string's raw characters
    value: object = None  # the value itself, unless it is a long string (start and size say where)
    long: bool = False


def _scan_long_row(blocks: Iterator[str], column: str) -> tuple[list[str], _Member | None] | None:
    """One pass over a long line's text that checks it is one JSON object (its structure and every string as
    ``json.loads`` would; numbers and literals of nested values other than ``column``'s only by their brackets and
    strings) and finds ``column``'s value: (the object's keys, the last member named ``column`` or None); None for a
    line of whitespace only, which is not a row."""
    cur = _Cursor(iter(blocks))
    cur.skip_whitespace()
    if not cur.more():
        return None
    keys: list[str] = []
    found: _Member | None = None
    cur.expect("{")
    cur.skip_whitespace()
    if cur.peek() == "}":
        cur.take()
    else:
        while True:
            cur.skip_whitespace()
            raw, _ = cur.string(keep=_KEY_CHARS)
            key = None if raw is None else json.loads('"' + raw + '"')
            if key is not None:
                keys.append(key)
            cur.expect(":")
            cur.skip_whitespace()
            c = cur.peek()
            wanted = key == column
            if c == '"':
                start = cur.pos + 1
                raw, size = cur.string(keep=SHORT_STRING_CHARS if wanted else 0)
                member = _Member(start, size, None if raw is None else json.loads('"' + raw + '"'), raw is None)
            elif c in "[{":
                raw = cur.nested(keep=wanted)
                member = _Member(value=json.loads(raw) if wanted else None)
            else:
                member = _Member(value=cur.scalar())
            if wanted:
                found = member
            cur.skip_whitespace()
            c = cur.take()
            if c == "}":
                break
            if c != ",":
                raise ValueError(f"expecting ',' or '}}' at character {cur.pos - len(c)}, found {c or 'the end'!r}")
    cur.skip_whitespace()
    if cur.more():
        raise ValueError(f"extra data at character {cur.pos}")
    return keys, found


def _escape_boundary(raw: str) -> int:
    """The largest cut of ``raw`` (a JSON string's raw text that starts on an escape boundary) that splits no escape
    and no surrogate pair written as two ``\\u`` escapes."""
    cut = len(raw)
    for _ in range(2):  # an incomplete escape at the end, then a high surrogate just before the cut
        j = raw.rfind("\\", max(0, cut - 12), cut)
        if j < 0 or (j - len(raw[:j].rstrip("\\"))) % 2:
            return cut  # no escape near the end, or j is the second backslash of a "\\\\"
        unicode = raw[j + 1:j + 2] == "u"
        if j + (6 if unicode else 2) <= cut and not (unicode and raw[j + 2:j + 4].lower() in ("d8", "d9", "da", "db")):
            return cut  # the last escape is whole, and not the first half of a pair
        cut = j
    return cut


def _string_span(blocks: Iterator[str], start: int, size: int) -> Iterator[str]:
    """The decoded text of the JSON string whose raw text is characters ``start .. start + size`` of ``blocks``, in
    pieces of about ``_SPAN_CHARS`` raw characters."""
    pos, held, left = 0, "", size
    for block in blocks:
        lo = max(0, start - pos)
        pos += len(block)
        if lo >= len(block) or left <= 0:
            if left <= 0:
                break
            continue
        take = block[lo:lo + left]
        left -= len(take)
        held += take
        while len(held) >= _SPAN_CHARS or (left <= 0 and held):
            cut = len(held) if left <= 0 else _escape_boundary(held[:_SPAN_CHARS])
            yield json.loads('"' + held[:cut] + '"')
            held = held[cut:]
