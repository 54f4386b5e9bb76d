"""Responses on disk by request digest: one small JSON file each, written atomically, so a rerun or a resumed run
asks nothing twice and a crash never leaves a half-written entry."""

from __future__ import annotations

import json
from pathlib import Path

from personamine.atomic import atomic_write_bytes
from personamine.autointerp.backend import Response


class ResponseCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _file(self, key: str) -> Path:
        return self.path / key[:2] / f"{key}.json"

    def get(self, key: str) -> Response | None:
        try:
            data = json.loads(self._file(key).read_text(encoding="utf-8"))
            # Absent, unreadable, or JSON of another shape (a damaged or foreign file): ask again.
            return Response.from_json(data) if isinstance(data, dict) else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, key: str, response: Response) -> None:
        file = self._file(key)
        file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(file, json.dumps(response.to_json(), ensure_ascii=False).encode("utf-8"))
