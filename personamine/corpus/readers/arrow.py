"""Arrow IPC (``.arrow``): a unit is one record batch of an IPC file; an IPC stream (what `datasets` caches) has no
footer to find its batches by, so it is one unit."""

from __future__ import annotations

from collections.abc import Iterator

from personamine.corpus.manifest import CorpusFile, UnitRef
from personamine.corpus.readers.base import cannot_read, open_binary


def _open(url: str):
    import pyarrow as pa

    handle = open_binary(url)
    try:
        return pa.ipc.open_file(handle), True
    except pa.ArrowInvalid:
        handle.seek(0)
        try:
            return pa.ipc.open_stream(handle), False
        except Exception as exc:
            raise cannot_read(url, exc) from exc


class ArrowReader:
    format = "arrow"
    suffixes = (".arrow",)

    def plan(self, file: CorpusFile, unit_bytes: int) -> list[tuple[int, int, int | None]]:
        reader, is_file = _open(file.url)
        if not is_file:
            return [(0, 1, None)]
        return [(i, i + 1, reader.get_batch(i).num_rows) for i in range(reader.num_record_batches)]

    def columns(self, file: CorpusFile) -> list[str]:
        return list(_open(file.url)[0].schema.names)

    def column_type(self, file: CorpusFile, column: str):
        """The column's Arrow type, from the schema."""
        return _open(file.url)[0].schema.field(column).type

    def rows(self, unit: UnitRef, column: str, skip_malformed: bool) -> Iterator[object]:
        reader, is_file = _open(unit.url)
        try:
            batches = [reader.get_batch(unit.start)] if is_file else reader
            for batch in batches:
                yield from batch.column(batch.schema.get_field_index(column)).to_pylist()
        except Exception as exc:
            raise cannot_read(unit.url, exc) from exc
