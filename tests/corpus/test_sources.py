"""Which files a corpus name means: a file, a directory (hidden entries are not data), a glob, a built-in name; a name
that can only be a path never goes to the hub; one format per corpus."""

from __future__ import annotations

import pytest

from personamine.corpus.manifest import CorpusFile
from personamine.corpus.sources import local_files, looks_like_path, one_format, resolve_files
from personamine.errors import PersonamineError


@pytest.mark.parametrize("name, path", [
    ("/abs/dir", True), ("./rel", True), ("~/corpus", True), ("../up", True), ("a/b/c", True),
    ("data.jsonl", True), ("Data.PARQUET", True), ("notes.txt", True), ("x.csv", True), ("x.arrow", True),
    ("wikitext", False), ("org/name", False), ("org/name.v2", False), ("HuggingFaceFW/fineweb-edu", False),
])
def test_what_can_only_be_a_path(name, path):
    assert looks_like_path(name) is path


def test_a_file_and_a_directory_in_path_order_without_hidden_entries(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / ".git").mkdir()
    for rel in ("b/2.jsonl", "a.jsonl", "b/10.jsonl", ".git/x.jsonl", "b/.partial.jsonl", "README.md", "c.JSONL"):
        (tmp_path / rel).write_text('{"text": "x"}\n')
    files = local_files(str(tmp_path))
    assert [f.url for f in files] == [str(tmp_path / p) for p in ("a.jsonl", "b/10.jsonl", "b/2.jsonl", "c.JSONL")]
    one = local_files(str(tmp_path / "a.jsonl"))
    stat = (tmp_path / "a.jsonl").stat()
    assert one == [CorpusFile(str(tmp_path / "a.jsonl"), "jsonl", stat.st_size, str(stat.st_mtime_ns))]
    assert [f.url for f in local_files(str(tmp_path / "b" / "*.jsonl"))] == [str(tmp_path / "b" / "10.jsonl"),
                                                                            str(tmp_path / "b" / "2.jsonl")]
    assert local_files("some-org/some-dataset") is None  # not local: a hub dataset


def test_local_names_that_find_nothing_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.md").write_text("x")
    cases = [
        (str(tmp_path / "empty"), f"corpus directory {str(tmp_path / 'empty')!r} holds no corpus files (.arrow, "
                                  ".csv, .json, .jsonl, .parquet, .raw, .text, .txt)"),
        (str(tmp_path / "*.parquet"), f"corpus pattern {str(tmp_path / '*.parquet')!r} matches no files"),
        (str(tmp_path / "nope.jsonl"), f"corpus path {str(tmp_path / 'nope.jsonl')!r} does not exist"),
        (str(tmp_path / "notes.md"), f"corpus file {str(tmp_path / 'notes.md')!r} has no corpus suffix (supported: "
                                     ".arrow, .csv, .json, .jsonl, .parquet, .raw, .text, .txt)"),
        (str(tmp_path / "*.md"), f"corpus file {str(tmp_path / 'notes.md')!r} has no corpus suffix"),
    ]
    for name, message in cases:
        with pytest.raises(PersonamineError) as info:
            local_files(name)
        assert str(info.value).startswith(message), (name, str(info.value))


def test_one_format_per_corpus():
    parquet = CorpusFile("/d/a.parquet", "parquet", 1, "1")
    assert one_format("d", [parquet, CorpusFile("/d/b.parquet", "parquet", 1, "1")]) == "parquet"
    with pytest.raises(PersonamineError) as info:
        one_format("d", [parquet, CorpusFile("/d/c.txt", "text", 1, "1")])
    assert str(info.value) == ("corpus 'd' mixes file formats (parquet, text, e.g. '/d/a.parquet', '/d/c.txt'): give "
                               "one format per corpus")


def test_resolve_files(tmp_path):
    (tmp_path / "a.txt").write_text("one\n")
    files, revision = resolve_files(str(tmp_path / "a.txt"), None, "train", None)
    assert [f.format for f in files] == ["text"] and revision is None
    with pytest.raises(PersonamineError, match="^no corpus given: pass a file, a directory, a glob, a built-in name "
                                               "or a hub dataset$"):
        resolve_files("", None, "train", None)
    with pytest.raises(PersonamineError) as info:
        resolve_files("builtin:no-such-corpus", None, "train", None)
    # The KeyError's message, without the quotes a KeyError puts around it.
    assert str(info.value).startswith("Unknown built-in corpus 'builtin:no-such-corpus'; available: builtin:")
    assert "builtin:chat-and-prose" in str(info.value) and "\n" not in str(info.value)
