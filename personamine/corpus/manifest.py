"""A corpus as files and their units, planned from metadata only.

A **unit** is the leaf of the computation: one parquet row group, one Arrow record batch, the lines of a jsonl or
txt file that start inside one byte range, or one whole csv file. Files are listed in path order and units in file
order, which is the order a plain read of the corpus gives its rows, so a document's global index is the number of
rows in the units before its unit plus its row in the unit. Planning reads a footer (parquet, arrow) or a size (line
files) per file, never a row: its cost grows with the number of files, not with the corpus.

Row counts are known at planning time for parquet and arrow units and only after a unit is read for line-block
units; whoever needs global indices gets them from the units' results (``personamine.shards.plan``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from personamine.errors import PersonamineError


@dataclass(frozen=True)
class CorpusFile:
    url: str  # an fsspec url: a local path or hf://datasets/<repo>@<commit>/<path>
    format: str  # a reader name: parquet, jsonl, text, arrow, csv
    size: int
    version: str  # what changes when the file does: its mtime locally, its blob or LFS hash on the hub


@dataclass(frozen=True)
class Unit:
    index: int  # position in the manifest's unit table
    file: int  # position in the manifest's files
    start: int  # row group or record batch index, or the first byte of a line block
    stop: int  # exclusive: start + 1 for a row group or batch, the byte after a line block
    rows: int | None  # rows in the unit when the file's metadata says (parquet, arrow), else None


@dataclass(frozen=True)
class UnitRef:
    """Everything a worker needs to read one unit, without the manifest."""

    index: int
    url: str
    format: str
    start: int
    stop: int
    rows: int | None
    version: str  # the file's version: a cached open file is reused only for the same one


@dataclass
class Manifest:
    source: str  # the corpus as the user named it
    revision: str | None  # the pinned hub commit of a hub dataset
    column: str  # the column read from each row
    files: list[CorpusFile]
    units: list[Unit]

    def __len__(self) -> int:
        return len(self.units)

    def ref(self, index: int) -> UnitRef:
        unit = self.units[index]
        file = self.files[unit.file]
        return UnitRef(unit.index, file.url, file.format, unit.start, unit.stop, unit.rows, file.version)

    def known_rows(self) -> int | None:
        """Rows in the whole corpus, when every unit's count is in the metadata."""
        if any(u.rows is None for u in self.units):
            return None
        return sum(u.rows for u in self.units)  # type: ignore[misc]

    def fingerprint(self) -> dict:
        """What a resumed run must find unchanged: the files (path, size, version), the revision and the units."""
        units = hashlib.sha256(json.dumps([[u.file, u.start, u.stop, u.rows] for u in self.units]).encode())
        return {"source": self.source, "revision": self.revision, "column": self.column,
                "files": [asdict(f) for f in self.files], "units": units.hexdigest()}


def describe_change(before: dict, after: dict) -> str | None:
    """One line naming how a corpus fingerprint changed, or None if it did not."""
    if before == after:
        return None
    for key in ("source", "revision", "column"):
        if before.get(key) != after.get(key):
            return f"{key} was {before.get(key)!r}, now {after.get(key)!r}"
    old = {f["url"]: f for f in before.get("files", [])}
    new = {f["url"]: f for f in after.get("files", [])}
    for url in sorted(old.keys() - new.keys()):
        return f"file {url!r} is gone"
    for url in sorted(new.keys() - old.keys()):
        return f"file {url!r} was added"
    for url in sorted(new):
        a, b = old[url], new[url]
        if a["size"] != b["size"]:
            return f"file {url!r} changed size ({a['size']:,} -> {b['size']:,} bytes)"
        if a != b:
            return f"file {url!r} changed (modified {a['version']} -> {b['version']})"
    return "its units changed (e.g. a different unit_bytes)"


def check_not_empty(manifest: Manifest) -> None:
    if not manifest.units or manifest.known_rows() == 0:
        n = len(manifest.files)
        raise PersonamineError(f"corpus {manifest.source!r} has no documents ({n} file{'s' * (n != 1)}, all empty)")
