"""One reader per corpus file format, behind one interface (``Reader``), chosen by file suffix."""

from __future__ import annotations

from personamine.corpus.readers.arrow import ArrowReader
from personamine.corpus.readers.base import MALFORMED, Reader, RowError, StreamedText
from personamine.corpus.readers.csv import CsvReader
from personamine.corpus.readers.jsonl import JsonLinesReader
from personamine.corpus.readers.parquet import ParquetReader
from personamine.corpus.readers.text import TextLinesReader

READERS: dict[str, Reader] = {r.format: r for r in (ParquetReader(), JsonLinesReader(), TextLinesReader(),
                                                     ArrowReader(), CsvReader())}
SUFFIXES: dict[str, str] = {suffix: r.format for r in READERS.values() for suffix in r.suffixes}

__all__ = ["MALFORMED", "READERS", "SUFFIXES", "Reader", "RowError", "StreamedText", "reader_for"]


def reader_for(format: str) -> Reader:
    return READERS[format]
