"""The corpus layer: files -> units (``manifest``), one reader per format (``readers``), hub resolution (``hub``).

``open_manifest(spec)`` plans a corpus from metadata only; ``unit_rows(ref, ...)`` reads one unit's rows anywhere
(a worker needs only the ``UnitRef``, never the whole manifest).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from personamine.corpus.manifest import CorpusFile, Manifest, Unit, UnitRef, check_not_empty, describe_change
from personamine.corpus.readers import MALFORMED, READERS
from personamine.corpus.sources import one_format, resolve_files
from personamine.errors import PersonamineError

__all__ = ["MALFORMED", "CorpusFile", "CorpusSpec", "Manifest", "Resolved", "Unit", "UnitRef", "check_column_type",
           "describe_change", "iter_rows", "open_manifest", "resolve_corpus", "unit_rows"]

DEFAULT_UNIT_BYTES = 8 << 20


@dataclass(frozen=True)
class CorpusSpec:
    corpus: str
    corpus_config: str | None = None
    split: str = "train"
    column: str = "text"
    revision: str | None = None
    unit_bytes: int = DEFAULT_UNIT_BYTES


@dataclass(frozen=True)
class Resolved:
    """A corpus's files (and its pinned hub commit): cheap to find, before any file is opened."""

    files: list[CorpusFile]
    revision: str | None


def resolve_corpus(spec: CorpusSpec) -> Resolved:
    if spec.unit_bytes < 1:
        raise PersonamineError(f"unit_bytes must be at least 1, got {spec.unit_bytes}")
    files, revision = resolve_files(spec.corpus, spec.corpus_config, spec.split, spec.revision)
    one_format(spec.corpus, files)
    return Resolved(files, revision)


def open_manifest(spec: CorpusSpec, resolved: Resolved | None = None) -> Manifest:
    """The corpus's files and units, from footers and sizes; checks the column exists in every file."""
    resolved = resolved or resolve_corpus(spec)
    files, revision = resolved.files, resolved.revision
    reader = READERS[files[0].format]
    units: list[Unit] = []
    for i, file in enumerate(files):
        planned = reader.plan(file, spec.unit_bytes)
        if planned:
            columns = reader.columns(file)
            if columns and spec.column not in columns:
                raise PersonamineError(f"corpus file {file.url!r} has no column {spec.column!r} (columns: "
                                       f"{', '.join(map(str, columns))}); set text_column (or messages_column)")
        base = len(units)
        units.extend(Unit(base + j, i, start, stop, rows) for j, (start, stop, rows) in enumerate(planned))
    manifest = Manifest(spec.corpus, revision, spec.column, files, units)
    check_not_empty(manifest)
    return manifest


_KINDS = {"text": ("strings", "text_column"), "tokens": ("lists of token ids", "tokens_column"),
          "messages": ("lists of turns", "messages_column")}


def _holds(kind: str, arrow_type) -> bool:
    import pyarrow as pa

    types = pa.types
    if types.is_null(arrow_type):  # every value null: mining counts them as skipped
        return True
    if kind == "text":
        return types.is_string(arrow_type) or types.is_large_string(arrow_type) or \
            getattr(types, "is_string_view", lambda _: False)(arrow_type)
    if not (types.is_list(arrow_type) or types.is_large_list(arrow_type) or types.is_fixed_size_list(arrow_type)):
        return False
    value = arrow_type.value_type
    if kind == "tokens":
        return types.is_integer(value) or types.is_null(value)
    return types.is_struct(value) or types.is_map(value) or types.is_null(value)


def check_column_type(manifest: Manifest, kind: str) -> None:
    """Before any row is read: a file whose schema types the column (parquet, arrow, csv) must hold ``kind`` ("text",
    "tokens" or "messages") there; a number column read as text is refused naming the file, the column and its
    type (line formats have no schema: each row's value is checked as it is read)."""
    what, flag = _KINDS[kind]
    typer = getattr(READERS[manifest.files[0].format], "column_type", None)
    if typer is None:
        return
    for index in sorted({unit.file for unit in manifest.units}):
        file = manifest.files[index]
        found = typer(file, manifest.column)
        if not _holds(kind, found):
            raise PersonamineError(f"corpus file {file.url!r}: column {manifest.column!r} holds {found}, not "
                                   f"{what}; set {flag} to a column of {what}")


def unit_rows(ref: UnitRef, column: str, skip_malformed: bool = False) -> Iterator[object]:
    return READERS[ref.format].rows(ref, column, skip_malformed)


def iter_rows(manifest: Manifest, start: int = 0, stop: int | None = None,
              skip_malformed: bool = False) -> Iterator[tuple[int, object]]:
    """(global index, value) of rows ``start..stop-1`` in corpus order, read sequentially: for a single process
    (``train-sae``); units before ``start`` are skipped by their row counts where the metadata gives them, else read."""
    index = 0
    for u in range(len(manifest)):
        ref = manifest.ref(u)
        if ref.rows is not None and index + ref.rows <= start:
            index += ref.rows
            continue
        for value in unit_rows(ref, manifest.column, skip_malformed):
            if stop is not None and index >= stop:
                return
            if index >= start:
                yield index, value
            index += 1
