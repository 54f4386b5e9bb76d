"""JSON Lines: one object per line (blank lines are not rows), the column's value or None; a ``.json`` array read
whole as one unit; rows that are not objects named by line, or skipped as MALFORMED when asked."""

from __future__ import annotations

import json

import pytest

from personamine.corpus.manifest import CorpusFile, UnitRef
from personamine.corpus.readers.base import MALFORMED, RowError
from personamine.corpus.readers.jsonl import JsonLinesReader
from personamine.errors import PersonamineError

READER = JsonLinesReader()


def file_of(path):
    return CorpusFile(str(path), "jsonl", path.stat().st_size, "1")


def read_all(path, column="text", unit_bytes=1 << 20, skip=False):
    file = file_of(path)
    return [row for i, (lo, hi, n) in enumerate(READER.plan(file, unit_bytes))
            for row in READER.rows(UnitRef(i, str(path), "jsonl", lo, hi, n, "1"), column, skip)]


def test_rows_columns_and_units(tmp_path):
    path = tmp_path / "c.jsonl"
    rows = [{"text": "a", "n": 1}, {"text": "bé", "tags": ["x"]}, {"n": 3}, {"text": None}]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows[:2]) + "\n\n  \n"
                    + "\n".join(json.dumps(r) for r in rows[2:]) + "\n", encoding="utf-8")
    assert READER.columns(file_of(path)) == ["text", "n"]  # from the first row
    assert READER.plan(file_of(path), 10) == [(lo, min(lo + 10, path.stat().st_size), None)
                                              for lo in range(0, path.stat().st_size, 10)]
    for unit_bytes in (1, 7, 10, 1000):
        assert read_all(path, unit_bytes=unit_bytes) == ["a", "bé", None, None], unit_bytes
    assert read_all(path, "n") == [1, None, 3, None]
    assert read_all(path, "tags") == [None, ["x"], None, None]


def test_a_json_array_file_is_one_unit(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("\n  " + json.dumps([{"text": "one", "k": 1}, {"text": "two"}, {"k": 2}], indent=2))
    file = file_of(path)
    assert READER.plan(file, 8) == [(0, file.size, None)]
    assert READER.columns(file) == ["text", "k"]
    assert read_all(path, unit_bytes=8) == ["one", "two", None]
    lines = tmp_path / "lines.json"  # .json holding JSON Lines: byte units as for .jsonl
    lines.write_text('{"text": "x"}\n{"text": "y"}\n')
    assert len(READER.plan(file_of(lines), 8)) == 4 and read_all(lines, unit_bytes=8) == ["x", "y"]


def test_rows_that_are_not_objects(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "a"}\n["a", "list"]\n{"text": "c"}\n{broken\n')
    with pytest.raises(RowError) as info:
        read_all(path)
    assert str(info.value) == (f"corpus file {str(path)!r} line 2 is not a JSON object: a JSON list, not an object "
                               "(skip_malformed_rows skips and counts such rows)")
    assert read_all(path, skip=True) == ["a", MALFORMED, "c", MALFORMED]
    bad = tmp_path / "bad.json"
    bad.write_text('[{"text": "a"}, "b"]')
    with pytest.raises(PersonamineError, match=r"^corpus file '.*bad\.json': element 1 of its JSON array is not an "
                                               r"object$"):
        read_all(bad)
    torn = tmp_path / "torn.json"
    torn.write_text('[{"text": "a"}, {"text"')
    with pytest.raises(PersonamineError, match=r"^cannot read corpus file '.*torn\.json': JSONDecodeError: "):
        read_all(torn)


def test_an_empty_file_has_no_columns_and_no_units(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text("")
    assert READER.columns(file_of(path)) == [] and READER.plan(file_of(path), 10) == []
