"""Files with one row per line (jsonl, txt): a unit is the lines that START inside one byte range.

Ranges are fixed at ``unit_bytes`` from the file's size alone, so planning reads nothing. A worker seeks to its
range, skips the tail of a line that began before it, and reads whole lines until one starts at or past its end:
every line belongs to exactly one unit, whatever the range size. Row counts are only known once a unit is read.
"""

from __future__ import annotations

from collections.abc import Iterator

from personamine.corpus.manifest import UnitRef
from personamine.corpus.readers.base import cannot_read, open_binary
from personamine.errors import PersonamineError


def byte_ranges(size: int, unit_bytes: int) -> list[tuple[int, int, int | None]]:
    return [(lo, min(lo + unit_bytes, size), None) for lo in range(0, size, unit_bytes)]


def lines(unit: UnitRef) -> Iterator[tuple[int, bytes]]:
    """(byte offset, line without its newline) of each line starting in [unit.start, unit.stop)."""
    try:
        handle = open_binary(unit.url)
    except Exception as exc:
        raise cannot_read(unit.url, exc) from exc
    with handle:
        pos = unit.start
        if pos > 0:
            handle.seek(pos - 1)
            if handle.read(1) != b"\n":  # mid-line: that line belongs to the unit before
                pos += len(handle.readline())
        while pos < unit.stop:
            line = handle.readline()
            if not line:
                return
            yield pos, line.rstrip(b"\n").rstrip(b"\r")
            pos += len(line)


def decode(unit: UnitRef, offset: int, line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PersonamineError(
            f"corpus file {unit.url!r} is not UTF-8: {exc.reason} at byte {offset + exc.start} "
            f"(line {line_number(unit.url, offset)})") from exc


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
