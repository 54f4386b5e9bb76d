"""A corpus as files and units: a unit's reference carries its file, the row count is known only when every unit's
is, the fingerprint a resume compares, and the one line that says how a corpus changed."""

from __future__ import annotations

import pytest

from personamine.corpus.manifest import CorpusFile, Manifest, Unit, UnitRef, check_not_empty, describe_change
from personamine.errors import PersonamineError

A = CorpusFile("/data/a.parquet", "parquet", 1000, "111")
B = CorpusFile("/data/b.parquet", "parquet", 2000, "222")


def manifest(files=(A, B), units=None, **kwargs):
    units = units if units is not None else [Unit(0, 0, 0, 1, 10), Unit(1, 1, 0, 1, 7), Unit(2, 1, 1, 2, 5)]
    base = dict(source="data/", revision=None, column="text")
    base.update(kwargs)
    return Manifest(files=list(files), units=units, **base)


def test_a_units_reference_carries_its_file():
    m = manifest()
    assert len(m) == 3
    assert m.ref(2) == UnitRef(2, "/data/b.parquet", "parquet", 1, 2, 5, "222")
    assert m.ref(0) == UnitRef(0, "/data/a.parquet", "parquet", 0, 1, 10, "111")


def test_rows_are_known_only_when_every_unit_says():
    assert manifest().known_rows() == 22
    assert manifest(units=[Unit(0, 0, 0, 1, 10), Unit(1, 1, 0, 500, None)]).known_rows() is None
    assert manifest(units=[]).known_rows() == 0


def test_the_fingerprint_holds_files_revision_column_and_units():
    fp = manifest().fingerprint()
    assert fp["source"] == "data/" and fp["revision"] is None and fp["column"] == "text"
    assert fp["files"] == [{"url": "/data/a.parquet", "format": "parquet", "size": 1000, "version": "111"},
                           {"url": "/data/b.parquet", "format": "parquet", "size": 2000, "version": "222"}]
    assert fp == manifest().fingerprint() and len(fp["units"]) == 64
    regrouped = manifest(units=[Unit(0, 0, 0, 1, 10), Unit(1, 1, 0, 2, 12)])
    assert regrouped.fingerprint()["units"] != fp["units"]


@pytest.mark.parametrize("change, message", [
    (dict(source="other/"), "source was 'data/', now 'other/'"),
    (dict(revision="abc123"), "revision was None, now 'abc123'"),
    (dict(column="body"), "column was 'text', now 'body'"),
    (dict(files=(A,)), "file '/data/b.parquet' is gone"),
    (dict(files=(A, B, CorpusFile("/data/c.parquet", "parquet", 5, "3"))), "file '/data/c.parquet' was added"),
    (dict(files=(A, CorpusFile(B.url, "parquet", 2500, "222"))),
     "file '/data/b.parquet' changed size (2,000 -> 2,500 bytes)"),
    (dict(files=(CorpusFile(A.url, "parquet", 1000, "999"), B)),
     "file '/data/a.parquet' changed (modified 111 -> 999)"),
    (dict(units=[Unit(0, 0, 0, 1, 10), Unit(1, 1, 0, 1, 12)]), "its units changed (e.g. a different unit_bytes)"),
])
def test_a_change_is_described_in_one_line(change, message):
    before = manifest().fingerprint()
    assert describe_change(before, manifest(**change).fingerprint()) == message
    assert describe_change(before, manifest().fingerprint()) is None


def test_an_empty_corpus_is_refused_naming_its_files():
    with pytest.raises(PersonamineError) as info:
        check_not_empty(manifest(units=[]))
    assert str(info.value) == "corpus 'data/' has no documents (2 files, all empty)"
    with pytest.raises(PersonamineError, match=r"\(1 file, all empty\)$"):
        check_not_empty(manifest(files=(A,), units=[Unit(0, 0, 0, 1, 0)]))
    check_not_empty(manifest(units=[Unit(0, 0, 0, 64, None)]))  # unknown rows: found out when read
