"""Line units: ranges fixed from the file's size alone; a unit holds the lines that START inside its range, so every
line belongs to exactly one unit whatever the range size; errors name the line."""

from __future__ import annotations

import pytest

from personamine.corpus.manifest import UnitRef
from personamine.corpus.readers.lines import byte_ranges, decode, line_number, lines
from personamine.errors import PersonamineError


def unit(path, start, stop):
    return UnitRef(0, str(path), "text", start, stop, None, "v")


def test_byte_ranges_cover_the_size_exactly():
    assert byte_ranges(10, 4) == [(0, 4, None), (4, 8, None), (8, 10, None)]
    assert byte_ranges(8, 4) == [(0, 4, None), (4, 8, None)]
    assert byte_ranges(3, 100) == [(0, 3, None)]
    assert byte_ranges(0, 4) == []


def test_a_line_belongs_to_the_unit_it_starts_in(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(b"aa\nbbbb\r\n\ncc")  # offsets: aa 0, bbbb 3, (empty) 9, cc 10; no final newline
    assert list(lines(unit(path, 0, 13))) == [(0, b"aa"), (3, b"bbbb"), (9, b""), (10, b"cc")]
    assert list(lines(unit(path, 0, 3))) == [(0, b"aa")]  # "bbbb" starts at 3: the next unit's
    assert list(lines(unit(path, 1, 4))) == [(3, b"bbbb")]  # "aa" began before 1: the unit before's
    assert list(lines(unit(path, 4, 10))) == [(9, b"")]
    assert list(lines(unit(path, 10, 13))) == [(10, b"cc")]
    for size in range(1, 14):
        found = [line for lo, hi, _ in byte_ranges(13, size) for line in lines(unit(path, lo, hi))]
        assert found == [(0, b"aa"), (3, b"bbbb"), (9, b""), (10, b"cc")], size


def test_line_numbers_and_a_decoding_error_naming_them(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(b"one\ntwo\nth\xc3ree\n")
    assert [line_number(str(path), offset) for offset in (0, 4, 8)] == [1, 2, 3]
    assert decode(unit(path, 0, 16), 4, b"two") == "two"
    with pytest.raises(PersonamineError) as info:
        decode(unit(path, 0, 16), 8, b"th\xc3ree")
    assert str(info.value) == (f"corpus file {str(path)!r} is not UTF-8: invalid continuation byte at byte 10 "
                               "(line 3)")


def test_an_unreadable_file_is_one_line(tmp_path):
    with pytest.raises(PersonamineError, match="^cannot read corpus file '.*gone.txt': FileNotFoundError: "):
        list(lines(unit(tmp_path / "gone.txt", 0, 10)))


def test_a_long_line_is_yielded_by_place_and_read_in_blocks(tmp_path, monkeypatch):
    from personamine.corpus.readers import lines as lines_module
    from personamine.corpus.readers.lines import LongLine

    monkeypatch.setattr(lines_module, "LONG_LINE_BYTES", 8)
    monkeypatch.setattr(lines_module, "BLOCK_BYTES", 3)
    path = tmp_path / "f.txt"
    path.write_bytes(b"short\n" + "é long line here\r\n".encode() + b"end")
    found = list(lines(unit(path, 0, path.stat().st_size)))
    assert found == [(0, b"short"), (6, LongLine(str(path), 6, 17)), (25, b"end")]
    assert b"".join(found[1][1].blocks()) == "é long line here".encode()
    assert "".join(found[1][1].text_blocks()) == "é long line here"  # "é" cut by a 3-byte block


def test_a_long_line_that_is_not_utf8_names_its_byte(tmp_path, monkeypatch):
    from personamine.corpus.readers import lines as lines_module

    monkeypatch.setattr(lines_module, "LONG_LINE_BYTES", 8)
    monkeypatch.setattr(lines_module, "BLOCK_BYTES", 4)
    path = tmp_path / "f.txt"
    path.write_bytes(b"one\nabcdefghij\xc3klmnop\n")
    (_, long_line), = [x for x in lines(unit(path, 0, 40)) if x[0] == 4]
    with pytest.raises(PersonamineError) as info:
        list(long_line.text_blocks())
    assert str(info.value) == (f"corpus file {str(path)!r} is not UTF-8: invalid continuation byte at byte 14 "
                               "(line 2)")


def test_a_remote_file_is_read_by_lines_and_long_lines_too(monkeypatch):
    """fsspec's files (hub, http, memory) take no size in readline(): lines() reads them through a buffer."""
    import fsspec

    from personamine.corpus.readers import lines as lines_module
    from personamine.corpus.readers.lines import LongLine

    monkeypatch.setattr(lines_module, "LONG_LINE_BYTES", 8)
    data = b"short\n" + "é long line here\n".encode() + b"end"
    with fsspec.open("memory://pm-lines/f.txt", "wb") as out:
        out.write(data)
    url = "memory://pm-lines/f.txt"
    found = list(lines(UnitRef(0, url, "text", 0, len(data), None, "v")))
    assert found == [(0, b"short"), (6, LongLine(url, 6, 17)), (24, b"end")]
    assert "".join(found[1][1].text_blocks()) == "é long line here"
