"""Parquet: a unit is one row group; its row count, the columns and their types come from the footer; one unit's
rows are that row group's values, in order."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from personamine.corpus.manifest import CorpusFile, UnitRef
from personamine.corpus.readers.parquet import ParquetReader
from personamine.errors import PersonamineError

READER = ParquetReader()
TEXTS = [f"document {i}" if i % 7 else None for i in range(23)]


def write(path, **columns):
    pq.write_table(pa.table(columns), path, row_group_size=5)
    stat = path.stat()
    return CorpusFile(str(path), "parquet", stat.st_size, str(stat.st_mtime_ns))


def test_units_are_row_groups_with_their_counts(tmp_path):
    file = write(tmp_path / "c.parquet", text=TEXTS, n=list(range(23)))
    plan = READER.plan(file, unit_bytes=1)  # the byte size plays no part
    assert plan == [(0, 1, 5), (1, 2, 5), (2, 3, 5), (3, 4, 5), (4, 5, 3)]
    assert READER.columns(file) == ["text", "n"]
    assert READER.column_type(file, "text") == pa.string() and READER.column_type(file, "n") == pa.int64()
    rows = [row for i, (lo, hi, n) in enumerate(plan)
            for row in READER.rows(UnitRef(i, file.url, "parquet", lo, hi, n, file.version), "text", False)]
    assert rows == TEXTS  # nulls stay None, in order
    third = UnitRef(2, file.url, "parquet", 2, 3, 5, file.version)
    assert list(READER.rows(third, "n", False)) == [10, 11, 12, 13, 14]


def test_a_rewritten_file_is_read_again_not_from_the_cached_footer(tmp_path):
    path = tmp_path / "c.parquet"
    old = write(path, text=["a", "b"])
    assert list(READER.rows(UnitRef(0, old.url, "parquet", 0, 1, 2, old.version), "text", False)) == ["a", "b"]
    write(path, text=["c", "d", "e", "f", "g", "h"])
    os.utime(path, ns=(1, 1))  # a version that differs from the old one even on a coarse clock
    new = CorpusFile(str(path), "parquet", path.stat().st_size, str(path.stat().st_mtime_ns))
    assert new.version == "1" != old.version
    assert READER.plan(new, 1) == [(0, 1, 5), (1, 2, 1)]
    assert list(READER.rows(UnitRef(1, new.url, "parquet", 1, 2, 1, new.version), "text", False)) == ["h"]


def test_a_file_that_is_not_parquet_is_one_line(tmp_path):
    path = tmp_path / "fake.parquet"
    path.write_bytes(b"PAR1 this is not really parquet")
    with pytest.raises(PersonamineError) as info:
        READER.plan(CorpusFile(str(path), "parquet", path.stat().st_size, "x"), 1)
    assert str(info.value).startswith(f"cannot read corpus file {str(path)!r}: ")
    assert "\n" not in str(info.value)
