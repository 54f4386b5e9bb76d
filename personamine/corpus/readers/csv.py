"""CSV: quoted fields may hold newlines, so a file cannot be cut at a byte offset; a unit is one whole file, read
in streaming blocks."""

from __future__ import annotations

from collections.abc import Iterator

from personamine.corpus.manifest import CorpusFile, UnitRef
from personamine.corpus.readers.base import cannot_read, open_binary


def _reader(url: str):
    from pyarrow import csv

    try:
        return csv.open_csv(open_binary(url))
    except Exception as exc:
        raise cannot_read(url, exc) from exc


class CsvReader:
    format = "csv"
    suffixes = (".csv",)

    def plan(self, file: CorpusFile, unit_bytes: int) -> list[tuple[int, int, int | None]]:
        return [(0, file.size, None)] if file.size else []

    def columns(self, file: CorpusFile) -> list[str]:
        return list(_reader(file.url).schema.names)

    def column_type(self, file: CorpusFile, column: str):
        """The column's type as pyarrow infers it from the file's first block."""
        return _reader(file.url).schema.field(column).type

    def rows(self, unit: UnitRef, column: str, skip_malformed: bool) -> Iterator[object]:
        reader = _reader(unit.url)
        index = reader.schema.get_field_index(column)
        try:
            for batch in reader:
                yield from batch.column(index).to_pylist()
        except Exception as exc:
            raise cannot_read(unit.url, exc) from exc
