"""Plain text (``.txt``, ``.raw``, ``.text``): one document per line, in the column ``text``."""

from __future__ import annotations

from collections.abc import Iterator

from personamine.corpus.manifest import CorpusFile, UnitRef
from personamine.corpus.readers.lines import byte_ranges, decode, lines


class TextLinesReader:
    format = "text"
    suffixes = (".txt", ".raw", ".text")

    def plan(self, file: CorpusFile, unit_bytes: int) -> list[tuple[int, int, int | None]]:
        return byte_ranges(file.size, unit_bytes)

    def columns(self, file: CorpusFile) -> list[str]:
        return ["text"]

    def rows(self, unit: UnitRef, column: str, skip_malformed: bool) -> Iterator[object]:
        for offset, raw in lines(unit):
            yield decode(unit, offset, raw)
