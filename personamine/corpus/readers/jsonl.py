"""JSON Lines (``.jsonl``, ``.json``): one JSON object per line; blank lines are not rows.

A ``.json`` file that holds one JSON array instead is read whole, as one unit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from personamine.corpus.manifest import CorpusFile, UnitRef
from personamine.corpus.readers.base import MALFORMED, RowError, cannot_read, open_binary
from personamine.corpus.readers.lines import byte_ranges, decode, line_number, lines
from personamine.errors import PersonamineError


def _is_array(url: str) -> bool:
    with open_binary(url) as handle:
        head = handle.read(4096).lstrip()
    return head.startswith(b"[")


class JsonLinesReader:
    format = "jsonl"
    suffixes = (".jsonl", ".json")

    def plan(self, file: CorpusFile, unit_bytes: int) -> list[tuple[int, int, int | None]]:
        if file.url.endswith(".json") and file.size and _is_array(file.url):
            return [(0, file.size, None)]
        return byte_ranges(file.size, unit_bytes)

    def columns(self, file: CorpusFile) -> list[str]:
        for row in self.rows(UnitRef(0, file.url, self.format, 0, file.size, None, file.version), "", False,
                             keys=True):
            return list(row)
        return []

    def rows(self, unit: UnitRef, column: str, skip_malformed: bool, keys: bool = False) -> Iterator[object]:
        if unit.url.endswith(".json") and unit.start == 0 and _is_array(unit.url):
            yield from self._array(unit, column, keys)
            return
        for offset, raw in lines(unit):
            text = decode(unit, offset, raw)
            if not text.strip():
                continue
            try:
                row = json.loads(text)
                if not isinstance(row, dict):
                    raise ValueError(f"a JSON {type(row).__name__}, not an object")
            except ValueError as exc:
                if skip_malformed:
                    yield MALFORMED
                    continue
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                raise RowError(f"corpus file {unit.url!r} line {line_number(unit.url, offset)} is not a JSON "
                               f"object: {reason} (skip_malformed_rows skips and counts such rows)") from None
            yield row if keys else row.get(column)

    def _array(self, unit: UnitRef, column: str, keys: bool) -> Iterator[object]:
        try:
            with open_binary(unit.url) as handle:
                data = json.load(handle)
        except (ValueError, OSError) as exc:
            raise cannot_read(unit.url, exc) from exc
        for i, row in enumerate(data):
            if not isinstance(row, dict):
                raise PersonamineError(f"corpus file {unit.url!r}: element {i} of its JSON array is not an object")
            yield row if keys else row.get(column)
