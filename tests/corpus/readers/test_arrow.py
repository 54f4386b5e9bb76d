"""Arrow IPC: in a file, a unit is one record batch (its row count from the footer); a stream, which has no footer,
is one unit; anything else is one line naming the file."""

from __future__ import annotations

import pyarrow as pa
import pytest

from personamine.corpus.manifest import CorpusFile, UnitRef
from personamine.corpus.readers.arrow import ArrowReader
from personamine.errors import PersonamineError

READER = ArrowReader()
TABLE = pa.table({"text": [f"t{i}" for i in range(9)], "ids": [[i, i + 1] for i in range(9)]})


def file_of(path):
    return CorpusFile(str(path), "arrow", path.stat().st_size, "1")


def read(file, plan, column):
    return [row for i, (lo, hi, n) in enumerate(plan)
            for row in READER.rows(UnitRef(i, file.url, "arrow", lo, hi, n, "1"), column, False)]


def test_a_file_has_one_unit_per_record_batch(tmp_path):
    path = tmp_path / "c.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, TABLE.schema) as writer:
        for lo, n in ((0, 4), (4, 1), (5, 4)):
            writer.write_table(TABLE.slice(lo, n))
    file = file_of(path)
    plan = READER.plan(file, 1)
    assert plan == [(0, 1, 4), (1, 2, 1), (2, 3, 4)]
    assert READER.columns(file) == ["text", "ids"]
    assert READER.column_type(file, "ids") == pa.list_(pa.int64())
    assert read(file, plan, "text") == TABLE.column("text").to_pylist()
    assert read(file, plan[1:2], "ids") == [[4, 5]]


def test_a_stream_is_one_unit(tmp_path):
    path = tmp_path / "s.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, TABLE.schema) as writer:
        writer.write_table(TABLE.slice(0, 3))
        writer.write_table(TABLE.slice(3, 6))
    file = file_of(path)
    assert READER.plan(file, 1) == [(0, 1, None)]
    assert READER.columns(file) == ["text", "ids"] and READER.column_type(file, "text") == pa.string()
    assert read(file, READER.plan(file, 1), "text") == TABLE.column("text").to_pylist()


def test_a_file_that_is_not_arrow_is_one_line(tmp_path):
    path = tmp_path / "x.arrow"
    path.write_bytes(b"definitely not an arrow file")
    with pytest.raises(PersonamineError) as info:
        READER.plan(file_of(path), 1)
    assert str(info.value).startswith(f"cannot read corpus file {str(path)!r}: ") and "\n" not in str(info.value)
