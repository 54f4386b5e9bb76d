"""Plain text: one document per line, in the column ``text``; a unit's rows are its lines, decoded."""

from __future__ import annotations

from personamine.corpus.manifest import CorpusFile, UnitRef
from personamine.corpus.readers.text import TextLinesReader

TEXTS = ["first document", "", "ünïcode — and a tab\there", "last, no newline"]


def test_units_and_rows(tmp_path):
    path = tmp_path / "corpus.raw"
    data = ("\r\n".join(TEXTS)).encode("utf-8")
    path.write_bytes(data)
    reader = TextLinesReader()
    file = CorpusFile(str(path), "text", len(data), "1")
    assert reader.format == "text" and reader.suffixes == (".txt", ".raw", ".text")
    assert reader.columns(file) == ["text"]
    plan = reader.plan(file, 16)
    assert plan == [(lo, min(lo + 16, len(data)), None) for lo in range(0, len(data), 16)]
    rows = [row for i, (lo, hi, n) in enumerate(plan)
            for row in reader.rows(UnitRef(i, str(path), "text", lo, hi, n, "1"), "text", False)]
    assert rows == TEXTS  # \r\n endings dropped, an empty line is an empty document
    assert list(reader.rows(UnitRef(0, str(path), "text", 0, len(data), None, "1"), "ignored", False)) == TEXTS


def test_an_empty_file_has_no_units(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    assert TextLinesReader().plan(CorpusFile(str(path), "text", 0, "1"), 100) == []
