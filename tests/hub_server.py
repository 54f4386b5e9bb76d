"""A small Hugging Face Hub on 127.0.0.1 for the hub code path (``HfApi``, ``HfFileSystem``, `datasets`' data-file
resolution): the few endpoints they call for a dataset repo, served from a local directory at one commit, with HTTP
range requests. Every request is logged, so a test can check what was (and was not) downloaded.

Endpoints (the hub's public REST layout): repo info ``/api/datasets/<repo>[/revision/<rev>]``, tree listing
``/api/datasets/<repo>/tree/<rev>[/<path>]``, paths info ``POST /api/datasets/<repo>/paths-info/<rev>``, and file
contents ``/datasets/<repo>/resolve/<rev>/<path>`` (HEAD and GET, ``Range: bytes=a-b``).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FakeHub:
    def __init__(self, repo: str, root: Path, commit: str | None = None) -> None:
        self.repo, self.root = repo, Path(root)
        self.commit = commit or hashlib.sha1(repo.encode()).hexdigest()
        self.log: list[tuple[str, str, str]] = []  # (method, path, range header)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def files(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*") if p.is_file())

    def entry(self, path: Path) -> dict:
        rel = path.relative_to(self.root).as_posix()
        data = path.read_bytes()
        blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        out = {"type": "file", "path": rel, "size": len(data), "oid": blob}
        if path.suffix in (".parquet", ".arrow"):
            out["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return out

    def info(self) -> dict:
        siblings = []
        for p in self.files():
            e = self.entry(p)
            sib = {"rfilename": e["path"], "size": e["size"], "blobId": e["oid"]}
            if "lfs" in e:
                sib["lfs"] = {"sha256": e["lfs"]["oid"], "size": e["size"], "pointerSize": 134}
            siblings.append(sib)
        return {"_id": "x", "id": self.repo, "sha": self.commit, "private": False, "disabled": False,
                "gated": False, "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
                "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2026-01-01T00:00:00.000Z",
                "cardData": {}}

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _json(self, data, status=200) -> None:
                body = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _route(self, method: str) -> None:
                path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
                hub.log.append((method, path, self.headers.get("Range", "")))
                repo = re.escape(hub.repo)
                if m := re.fullmatch(rf"/api/datasets/{repo}(?:/revision/([^/]+))?", path):
                    return self._json(hub.info())
                if m := re.fullmatch(rf"/api/datasets/{repo}/tree/([^/]+)(?:/(.*))?", path):
                    return self._tree(m.group(2) or "")
                if m := re.fullmatch(rf"/api/datasets/{repo}/paths-info/([^/]+)", path):
                    return self._paths_info()
                if m := re.fullmatch(rf"/datasets/{repo}/resolve/([^/]+)/(.+)", path):
                    return self._file(m.group(2), body=method == "GET")
                self._json({"error": f"no route {path}"}, 404)

            def _tree(self, sub: str) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                recursive = query.get("recursive", ["false"])[0].lower() == "true"
                base = hub.root / sub
                if not base.is_dir():
                    return self._json({"error": "not found"}, 404)
                items = sorted(base.rglob("*") if recursive else base.iterdir())
                out = [hub.entry(p) if p.is_file() else {"type": "directory", "path": p.relative_to(hub.root)
                                                         .as_posix(), "oid": "0" * 40, "size": 0} for p in items]
                self._json(out)

            def _paths_info(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length).decode()
                form = json.loads(raw) if raw.startswith("{") else urllib.parse.parse_qs(raw)
                paths = form.get("paths", [])
                out = []
                for rel in paths:
                    p = hub.root / rel
                    if p.is_file():
                        out.append(hub.entry(p))
                    elif p.is_dir():
                        out.append({"type": "directory", "path": rel, "oid": "0" * 40, "size": 0})
                self._json(out)

            def _file(self, rel: str, body: bool) -> None:
                p = hub.root / rel
                if not p.is_file():
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = p.read_bytes()
                start, end = 0, len(data) - 1
                status = 200
                if m := re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "")):
                    start = int(m.group(1))
                    end = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
                    status = 206
                chunk = data[start:end + 1]
                self.send_response(status)
                self.send_header("Content-Length", str(len(chunk)))
                self.send_header("ETag", f'"{hub.entry(p)["oid"]}"')
                self.send_header("X-Repo-Commit", hub.commit)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if body:
                    self.wfile.write(chunk)

            def do_GET(self) -> None:
                self._route("GET")

            def do_HEAD(self) -> None:
                self._route("HEAD")

            def do_POST(self) -> None:
                self._route("POST")

        return Handler
