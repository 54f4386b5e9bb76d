"""Parquet: a unit is one row group; row counts and columns come from the footer."""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

from personamine.corpus.manifest import CorpusFile, UnitRef
from personamine.corpus.readers.base import cannot_read, open_binary

_BATCH_ROWS = 1024  # rows decoded at a time: memory follows this, not the row group


@lru_cache(maxsize=8)
def _parquet_file(url: str, version: str = ""):
    """An open file with its footer parsed, kept for the next unit of the same file (one footer read per file)."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(open_binary(url))
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for truncated or foreign files
        raise cannot_read(url, exc) from exc


class ParquetReader:
    format = "parquet"
    suffixes = (".parquet",)

    def plan(self, file: CorpusFile, unit_bytes: int) -> list[tuple[int, int, int | None]]:
        meta = _parquet_file(file.url, file.version).metadata
        return [(i, i + 1, meta.row_group(i).num_rows) for i in range(meta.num_row_groups)]

    def columns(self, file: CorpusFile) -> list[str]:
        return list(_parquet_file(file.url, file.version).schema_arrow.names)

    def column_type(self, file: CorpusFile, column: str):
        """The column's Arrow type, from the footer."""
        return _parquet_file(file.url, file.version).schema_arrow.field(column).type

    def rows(self, unit: UnitRef, column: str, skip_malformed: bool) -> Iterator[object]:
        source = _parquet_file(unit.url, unit.version)
        try:
            for batch in source.iter_batches(batch_size=_BATCH_ROWS, row_groups=[unit.start], columns=[column]):
                yield from batch.column(0).to_pylist()
        except Exception as exc:
            raise cannot_read(unit.url, exc) from exc
