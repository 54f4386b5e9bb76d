"""CSV: quoted fields may hold newlines, so a unit is one whole file; the column types are what pyarrow infers."""

from __future__ import annotations

import pyarrow as pa
import pytest

from personamine.corpus.manifest import CorpusFile, UnitRef
from personamine.corpus.readers.csv import CsvReader
from personamine.errors import PersonamineError

READER = CsvReader()


def file_of(path):
    return CorpusFile(str(path), "csv", path.stat().st_size, "1")


def rows(path, column):
    file = file_of(path)
    return [row for i, (lo, hi, n) in enumerate(READER.plan(file, 4))
            for row in READER.rows(UnitRef(i, file.url, "csv", lo, hi, n, "1"), column, False)]


def test_one_unit_per_file_with_quoted_newlines(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('id,text\n1,plain\n2,"two\nlines, and a comma"\n3,"say ""hi"""\n', encoding="utf-8")
    file = file_of(path)
    assert READER.plan(file, 4) == [(0, file.size, None)]  # unit_bytes cannot cut a csv
    assert READER.columns(file) == ["id", "text"]
    assert READER.column_type(file, "id") == pa.int64() and READER.column_type(file, "text") == pa.string()
    assert rows(path, "text") == ["plain", "two\nlines, and a comma", 'say "hi"']
    assert rows(path, "id") == [1, 2, 3]


def test_an_empty_file_has_no_units(tmp_path):
    path = tmp_path / "e.csv"
    path.write_bytes(b"")
    assert READER.plan(file_of(path), 4) == []


def test_a_row_with_too_many_fields_is_one_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("id,text\n1,a\n2,b,extra\n")
    with pytest.raises(PersonamineError) as info:
        rows(path, "text")
    assert str(info.value).startswith(f"cannot read corpus file {str(path)!r}: ") and "\n" not in str(info.value)
