"""The corpus layer: files -> units from metadata, one reader per format, every row read exactly once."""

from __future__ import annotations

import json

import fixtures as fx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from personamine.corpus import CorpusSpec, iter_rows, open_manifest, unit_rows
from personamine.errors import PersonamineError


def all_rows(manifest, column="text"):
    return [row for u in range(len(manifest)) for row in unit_rows(manifest.ref(u), column)]


@pytest.mark.parametrize("unit_bytes", [1, 5, 64, 333, 1500, 1 << 20])
def test_line_units_hold_every_line_once_whatever_their_size(tiny_corpus_jsonl, tmp_path, unit_bytes):
    texts = [json.loads(line)["text"] for line in tiny_corpus_jsonl.read_text().splitlines()]
    manifest = open_manifest(CorpusSpec(str(tiny_corpus_jsonl), unit_bytes=unit_bytes))
    assert len(manifest) == -(-tiny_corpus_jsonl.stat().st_size // unit_bytes)
    assert all(u.rows is None for u in manifest.units)  # unknown until read: planning read nothing
    assert all_rows(manifest) == texts
    txt = tmp_path / "c.txt"
    good = [t for t in texts if isinstance(t, str)]
    txt.write_text("\n".join(good) + "\n", encoding="utf-8")
    assert all_rows(open_manifest(CorpusSpec(str(txt), unit_bytes=unit_bytes))) == good


def test_parquet_units_are_row_groups_from_the_footer(tmp_path):
    root = fx.write_corpus_files(tmp_path / "pq", "parquet", n_files=3, rows_per_group=7)
    manifest = open_manifest(CorpusSpec(str(root)))
    # 60 valid rows over 3 files of 20 rows: groups of 7, 7, 6 per file.
    assert [(u.file, u.start, u.rows) for u in manifest.units] == [
        (f, g, r) for f in range(3) for g, r in enumerate([7, 7, 6])]
    assert manifest.known_rows() == 60
    assert all_rows(manifest) == fx.corpus_texts()
    assert [r for _, r in iter_rows(manifest, start=13, stop=30)] == fx.corpus_texts()[13:30]


def test_formats_give_the_same_documents_in_path_order(tmp_path):
    expected = fx.corpus_texts()
    for fmt in ("parquet", "jsonl", "txt"):
        root = fx.write_corpus_files(tmp_path / fmt, fmt, n_files=4)
        assert all_rows(open_manifest(CorpusSpec(str(root), unit_bytes=700))) == expected, fmt
        # A glob and an explicit directory agree; hidden files (a writer's temp files) are not data.
        (root / ".part-99.tmp.jsonl").write_text('{"text": "hidden"}\n')
        assert all_rows(open_manifest(CorpusSpec(str(root / f"part-*.{fmt}")))) == expected


def test_arrow_file_stream_csv_and_json_array(tmp_path):
    texts = fx.corpus_texts()[:25]
    table = pa.table({"text": texts})
    with pa.OSFile(str(tmp_path / "f.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        for lo in range(0, 25, 10):
            writer.write_table(table.slice(lo, 10))
    manifest = open_manifest(CorpusSpec(str(tmp_path / "f.arrow")))
    assert [u.rows for u in manifest.units] == [10, 10, 5] and all_rows(manifest) == texts
    (tmp_path / "s").mkdir()
    with pa.OSFile(str(tmp_path / "s" / "s.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    assert all_rows(open_manifest(CorpusSpec(str(tmp_path / "s")))) == texts
    import pyarrow.csv as pcsv

    pcsv.write_csv(pa.table({"id": list(range(25)), "text": texts}), tmp_path / "c.csv")
    assert all_rows(open_manifest(CorpusSpec(str(tmp_path / "c.csv")))) == texts
    (tmp_path / "a.json").write_text(json.dumps([{"text": t} for t in texts]))
    assert all_rows(open_manifest(CorpusSpec(str(tmp_path / "a.json")))) == texts


def test_another_column_and_missing_keys(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"body": "one", "x": 1}\n\n{"body": "two"}\n{"x": 3, "body": null}\n')
    manifest = open_manifest(CorpusSpec(str(path), column="body"))
    assert all_rows(manifest, "body") == ["one", "two", None]  # a blank line is not a row


# ---------------------------------------------------------------- bad input: one line, naming the cause


def raises(match, spec):
    with pytest.raises(PersonamineError, match=match) as info:
        manifest = open_manifest(spec)
        all_rows(manifest, spec.column)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_mixed_formats_are_refused(tmp_path):
    fx.write_corpus_files(tmp_path, "parquet", n_files=1)
    fx.write_corpus_files(tmp_path, "jsonl", n_files=1)
    message = raises("mixes file formats", CorpusSpec(str(tmp_path)))
    assert "jsonl" in message and "parquet" in message


def test_truncated_parquet_names_the_file(tmp_path):
    root = fx.write_corpus_files(tmp_path / "pq", "parquet", n_files=2)
    bad = root / "part-01.parquet"
    bad.write_bytes(bad.read_bytes()[:300])
    raises(f"cannot read corpus file '{bad}'", CorpusSpec(str(root)))


def test_missing_column_lists_the_columns_found(tmp_path):
    root = fx.write_corpus_files(tmp_path / "pq", "parquet", n_files=1)
    raises("has no column 'body' \\(columns: id, text\\)", CorpusSpec(str(root), column="body"))


@pytest.mark.parametrize("content", ["", "\n\n\n"])
def test_empty_corpora(tmp_path, content):
    path = tmp_path / "e.jsonl"
    path.write_text(content)
    if not content:
        raises("has no documents", CorpusSpec(str(path)))
    else:  # blank lines are not rows: no documents, found once read
        assert all_rows(open_manifest(CorpusSpec(str(path)))) == []
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "e.parquet")
    raises("has no documents", CorpusSpec(str(tmp_path / "e.parquet")))


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"}\n{"text": oops}\n{"text": "d"}\n')
    raises(f"corpus file '{path}' line 3 is not a JSON object", CorpusSpec(str(path), unit_bytes=20))
    from personamine.corpus import MALFORMED

    manifest = open_manifest(CorpusSpec(str(path), unit_bytes=20))
    rows = [r for u in range(len(manifest)) for r in unit_rows(manifest.ref(u), "text", skip_malformed=True)]
    assert rows == ["a", "b", MALFORMED, "d"]


def test_non_utf8_byte_names_its_position(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"fine line\nbad \xff byte\n")
    raises("is not UTF-8: invalid start byte at byte 14 \\(line 2\\)", CorpusSpec(str(path)))


def test_a_mistyped_relative_path_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raises("corpus path 'does-not-exist.txt' does not exist", CorpusSpec("does-not-exist.txt"))
    raises("corpus path './data/x' does not exist", CorpusSpec("./data/x"))
    # An org/name that is no local path is a hub dataset: offline, that fails at once too, saying why.
    raises("'org/name' is not a local path, and the hub dataset cannot be resolved", CorpusSpec("org/name"))
