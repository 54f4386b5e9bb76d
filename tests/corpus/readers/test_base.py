"""What every reader shares: local paths and fsspec URLs open alike, a failure to read is one line naming the file
and the cause, and the marker yielded for a skipped unparseable row."""

from __future__ import annotations

import pytest

from personamine.corpus.readers import READERS, SUFFIXES, reader_for
from personamine.corpus.readers.base import MALFORMED, REMOTE_BLOCK, RowError, cannot_read, open_binary
from personamine.errors import PersonamineError


def test_a_path_and_a_file_url_read_the_same_bytes(tmp_path):
    path = tmp_path / "data.txt"
    path.write_bytes(b"alpha\nbeta\n")
    with open_binary(str(path)) as local, open_binary(path.as_uri()) as remote:
        assert local.read() == remote.read() == b"alpha\nbeta\n"
    with open_binary(path.as_uri()) as handle:
        handle.seek(6)
        assert handle.read(4) == b"beta"
    assert REMOTE_BLOCK == 1 << 20


def test_cannot_read_is_one_line_with_the_cause():
    error = cannot_read("/d/x.parquet", ValueError("bad magic\nsecond line of detail"))
    assert isinstance(error, PersonamineError)
    assert str(error) == "cannot read corpus file '/d/x.parquet': ValueError: bad magic"
    assert str(cannot_read("/d/y.csv", OSError())) == "cannot read corpus file '/d/y.csv': OSError"


def test_the_malformed_marker_and_row_errors():
    assert repr(MALFORMED) == "MALFORMED" and MALFORMED is not None
    assert issubclass(RowError, PersonamineError)
    with pytest.raises(FileNotFoundError):
        open_binary("/no/such/file.jsonl")


def test_every_reader_is_found_by_format_and_suffix():
    assert sorted(READERS) == ["arrow", "csv", "jsonl", "parquet", "text"]
    assert SUFFIXES == {".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".txt": "text", ".raw": "text",
                        ".text": "text", ".arrow": "arrow", ".csv": "csv"}
    for name, reader in READERS.items():
        assert reader_for(name) is reader and reader.format == name
        assert all(callable(getattr(reader, m)) for m in ("plan", "columns", "rows"))
