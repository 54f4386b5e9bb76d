"""The interface every corpus reader implements, and what they share."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import fsspec

from personamine.corpus.manifest import CorpusFile, UnitRef
from personamine.errors import PersonamineError


class RowError(PersonamineError):
    """A row that cannot be parsed (malformed JSON): the message names the file and the line."""


class _Malformed:
    def __repr__(self) -> str:
        return "MALFORMED"


MALFORMED = _Malformed()  # yielded in place of an unparseable row when the run skips such rows


class StreamedText:
    """A text too long to hold whole (a line of more than ``lines.LONG_LINE_BYTES``), yielded in place of a ``str``:
    ``blocks()`` reads it again, block by block, each time it is called. Never empty."""

    def __init__(self, blocks: Callable[[], Iterator[str]]) -> None:
        self.blocks = blocks

    def __repr__(self) -> str:
        return "StreamedText(...)"


class Reader(Protocol):
    format: str
    suffixes: tuple[str, ...]

    def plan(self, file: CorpusFile, unit_bytes: int) -> list[tuple[int, int, int | None]]:
        """The file's units as (start, stop, rows or None), from its metadata (a footer, its size) only."""
        ...

    def columns(self, file: CorpusFile) -> list[str]:
        """Column names of the file's rows (from its footer, or its first row)."""
        ...

    def rows(self, unit: UnitRef, column: str, skip_malformed: bool) -> Iterator[object]:
        """The ``column`` value of each row of the unit, in order (None where a row lacks it; ``MALFORMED``
        where a row cannot be parsed and ``skip_malformed`` is set)."""
        ...


REMOTE_BLOCK = 1 << 20  # bytes fetched per range request of a remote file: a footer or a row group, not the file


def open_binary(url: str):
    if "://" in url:
        return fsspec.open(url, "rb", block_size=REMOTE_BLOCK).open()
    return open(url, "rb")


def cannot_read(url: str, exc: BaseException) -> PersonamineError:
    text = str(exc).strip().splitlines()
    cause = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return PersonamineError(f"cannot read corpus file {url!r}: {cause}")
