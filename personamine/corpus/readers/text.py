"""Plain text (``.txt``, ``.raw``, ``.text``): one document per line, in the column ``text``. A line longer than
``lines.LONG_LINE_BYTES`` is yielded as a ``StreamedText`` that decodes it block by block."""

from __future__ import annotations

from collections.abc import Iterator

from personamine.corpus.manifest import CorpusFile, UnitRef
from personamine.corpus.readers.base import StreamedText
from personamine.corpus.readers.lines import LongLine, byte_ranges, decode, lines


class TextLinesReader:
    format = "text"
    suffixes = (".txt", ".raw", ".text")

    def plan(self, file: CorpusFile, unit_bytes: int) -> list[tuple[int, int, int | None]]:
        return byte_ranges(file.size, unit_bytes)

    def columns(self, file: CorpusFile) -> list[str]:
        return ["text"]

    def rows(self, unit: UnitRef, column: str, skip_malformed: bool) -> Iterator[object]:
        for offset, raw in lines(unit):
            yield StreamedText(raw.text_blocks) if isinstance(raw, LongLine) else decode(unit, offset, raw)
