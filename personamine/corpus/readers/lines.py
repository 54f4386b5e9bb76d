"""Files with one row per line (jsonl, txt): a unit is the lines that START inside one byte range.

Ranges are fixed at ``unit_bytes`` from the file's size alone, so planning reads nothing. A worker seeks to its
range, skips the tail of a line that began before it, and reads whole lines until one starts at or past its end:
every line belongs to exactly one unit, whatever the range size. Row counts are only known once a unit is read.

A line longer than ``LONG_LINE_BYTES`` is never read whole: ``lines`` yields a ``LongLine`` (where it is), whose
bytes are read again in blocks of ``BLOCK_BYTES`` by whoever parses it, so reading one row holds a fixed amount of
memory whatever its length.
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Iterator
from dataclasses import dataclass

from personamine.corpus.manifest import UnitRef
from personamine.corpus.readers.base import REMOTE_BLOCK, cannot_read, open_binary
from personamine.errors import PersonamineError

LONG_LINE_BYTES = 1 << 20  # a longer line is streamed (LongLine), not read into memory
BLOCK_BYTES = 1 << 20  # bytes read at a time from a long line


@dataclass(frozen=True)
class LongLine:
    """A line of more than ``LONG_LINE_BYTES`` bytes: its place in the file (without its newline), read in blocks."""

    url: str
    offset: int
    size: int

    def blocks(self, block: int = BLOCK_BYTES) -> Iterator[bytes]:
        try:
            handle = open_binary(self.url)
        except Exception as exc:
            raise cannot_read(self.url, exc) from exc
        with handle:
            handle.seek(self.offset)
            left = self.size
            while left > 0:
                data = handle.read(min(block, left))
                if not data:
                    raise PersonamineError(f"corpus file {self.url!r} changed while it was read (line at byte "
                                           f"{self.offset} ended early)")
                left -= len(data)
                yield data

    def text_blocks(self) -> Iterator[str]:
        """The line decoded as UTF-8, block by block (a character cut by a block's end is held for the next)."""
        decoder = codecs.getincrementaldecoder("utf-8")()
        done = 0
        for data in self.blocks():
            held = len(decoder.getstate()[0])
            try:
                text = decoder.decode(data, final=done + len(data) == self.size)
            except UnicodeDecodeError as exc:  # exc.start counts from the bytes the decoder held
                raise not_utf8(self.url, self.offset, exc.reason, self.offset + done - held + exc.start) from exc
            done += len(data)
            yield text


def byte_ranges(size: int, unit_bytes: int) -> list[tuple[int, int, int | None]]:
    return [(lo, min(lo + unit_bytes, size), None) for lo in range(0, size, unit_bytes)]


def lines(unit: UnitRef) -> Iterator[tuple[int, bytes | LongLine]]:
    """(byte offset, line without its newline) of each line starting in [unit.start, unit.stop); a ``LongLine`` in
    place of a line longer than ``LONG_LINE_BYTES``."""
    try:
        handle = open_binary(unit.url)
    except Exception as exc:
        raise cannot_read(unit.url, exc) from exc
    if not isinstance(handle, io.BufferedIOBase):  # fsspec's remote files take no size in readline(): this does
        handle = io.BufferedReader(handle, REMOTE_BLOCK)
    with handle:
        pos = unit.start
        if pos > 0:
            handle.seek(pos - 1)
            if handle.read(1) != b"\n":  # mid-line: that line belongs to the unit before
                pos += len(handle.readline())
        while pos < unit.stop:
            line = handle.readline(LONG_LINE_BYTES + 1)
            if not line:
                return
            if len(line) <= LONG_LINE_BYTES or line.endswith(b"\n"):
                yield pos, line.rstrip(b"\n").rstrip(b"\r")
                pos += len(line)
                continue
            size, tail = len(line), line[-2:]
            del line
            while not tail.endswith(b"\n"):  # find the line's end, holding one block at a time
                block = handle.readline(BLOCK_BYTES)
                if not block:
                    break
                size, tail = size + len(block), (tail + block)[-2:]
            content = size - (tail.endswith(b"\n") + tail.endswith(b"\r\n"))
            yield pos, LongLine(unit.url, pos, content)
            pos += size


def decode(unit: UnitRef, offset: int, line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise not_utf8(unit.url, offset, exc.reason, offset + exc.start) from exc


def not_utf8(url: str, line_offset: int, reason: str, byte: int) -> PersonamineError:
    return PersonamineError(f"corpus file {url!r} is not UTF-8: {reason} at byte {byte} "
                            f"(line {line_number(url, line_offset)})")


def line_number(url: str, offset: int) -> int:
    """1-based line number of the line starting at ``offset`` (only on an error path: reads the file up to it)."""
    count, done = 1, 0
    with open_binary(url) as handle:
        while done < offset:
            chunk = handle.read(min(1 << 20, offset - done))
            if not chunk:
                break
            count += chunk.count(b"\n")
            done += len(chunk)
    return count
