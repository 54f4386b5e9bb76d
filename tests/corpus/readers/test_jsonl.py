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


# ---------------------------------------------------------------- lines too long to hold whole


@pytest.fixture()
def tiny_blocks(monkeypatch):
    """Long lines, blocks and decoded spans shrunk to a few bytes, so small files take the streamed path."""
    from personamine.corpus.readers import jsonl, lines

    monkeypatch.setattr(lines, "LONG_LINE_BYTES", 50)
    monkeypatch.setattr(lines, "BLOCK_BYTES", 7)
    monkeypatch.setattr(jsonl, "_SPAN_CHARS", 16)
    monkeypatch.setattr(jsonl, "SHORT_STRING_CHARS", 10)


def streamed(value):
    from personamine.corpus.readers.base import StreamedText

    return "".join(value.blocks()) if isinstance(value, StreamedText) else value


def test_a_long_line_is_streamed_and_reads_as_json_loads(tmp_path, tiny_blocks):
    """Random rows of escapes, quotes, multi-byte and astral characters (written as UTF-8 or as \\u escapes, pairs
    included), cut into 7-byte blocks and 16-character spans anywhere: every value is what ``json.loads`` reads."""
    import random

    from personamine.corpus.readers.base import StreamedText

    rng = random.Random(0)
    alphabet = ["a", " ", "\\", '"', "\n", "é", "日", "\U0001F600", "\x01", "\t", "\ud83d"]
    path = tmp_path / "c.jsonl"
    kinds = set()
    for _ in range(300):
        rows = []
        for _ in range(rng.randint(1, 4)):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
            row = {"id": rng.randint(0, 9), "text": text, "meta": {"a": [1, "x\\y", {"b": None}]}}
            if rng.random() < 0.2:
                row = {"other": text}
            elif rng.random() < 0.2:
                row["text"] = [1, 2, {"k": text}]
            rows.append(row)
        with open(path, "w", encoding="utf-8") as out:
            for row in rows:
                ascii_only = "\ud83d" in json.dumps(row, ensure_ascii=False) or rng.random() < 0.5
                out.write(json.dumps(row, ensure_ascii=ascii_only) + "\n")
        got = read_all(path, unit_bytes=1 << 20)
        kinds.update(type(v).__name__ for v in got)
        assert [streamed(v) for v in got] == [row.get("text") for row in rows]
        assert READER.columns(file_of(path)) == list(rows[0])
    assert StreamedText.__name__ in kinds and "str" in kinds


@pytest.mark.parametrize("line, reason", [
    ('{"text": "abc' + "x" * 100 + '"', "expecting ',' or '}' at character 114, found 'the end'"),
    ('{"text": "a\\q' + "x" * 100 + '"}', "invalid escape at character 11"),
    ('{"text": ' + "[1,2" * 40 + "}", "unbalanced '}' at character 169"),
    ('{"text": "' + "x" * 100 + '"} x', "extra data at character 113"),
    ('["' + "x" * 100 + '"]', "expecting '{' at character 0, found '['"),
    ('{"text": "a\x01' + "x" * 100 + '"}', "invalid control character at character 11"),
    ('{"a": tru' + " " * 100 + "}", "expecting a value at character 6"),
])
def test_a_long_line_that_is_not_a_json_object_is_named_before_any_of_it_is_used(tmp_path, tiny_blocks, line, reason):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "fine"}\n' + line + "\n")
    with pytest.raises(RowError) as info:
        read_all(path)
    assert str(info.value) == (f"corpus file {str(path)!r} line 2 is not a JSON object: {reason} "
                               "(skip_malformed_rows skips and counts such rows)")
    assert read_all(path, skip=True) == ["fine", MALFORMED]


def test_a_long_blank_line_is_not_a_row(tmp_path, tiny_blocks):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "a"}\n' + " " * 200 + '\n{"text": "b"}\n')
    assert read_all(path) == ["a", "b"]
