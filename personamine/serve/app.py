"""The routes: pages for a browser and the same data as JSON for scripts, all read-only.

    GET  /                               the index (?sort=COLUMN&dir=asc|desc&q=FILTER&page=N&n=ROWS)
    GET  /feature/{file}/{feature}       a feature's page
    GET  /inspect                        live inspection's form (?file=N&features=1,2 fills it; loads the model)
    POST /inspect                        an inspection, answered with the page and its result
    GET  /api/index, /api/feature/{file}/{feature}, /api/status; POST /api/inspect (JSON)

A file is named by its position among the files the server was started with, never by a path; nothing else is
served. Every request passes ``Guard``: a Host header that is not this server's is refused (a page elsewhere that
rebinds a name to 127.0.0.1 cannot read the files), a POST from another origin too, request bodies are capped, and
every response carries the report's Content-Security-Policy.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qs, urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from personamine.config import parse_feature_list
from personamine.errors import PersonamineError, one_line
from personamine.report.page import CSP
from personamine.serve.inspect import Busy, Inspector, InspectRequest, Unavailable, parse_chat
from personamine.serve.neighbours import DecoderNeighbours
from personamine.serve.pages import (
    feature_data,
    feature_extra,
    files_data,
    index_data,
    inspect_data,
    page_html,
)
from personamine.serve.sources import Sources

MAX_BODY_BYTES = 64 << 10  # an inspection's text is at most 8,000 characters: 64 KiB holds it in any encoding
SECURITY_HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"), (b"referrer-policy", b"same-origin"),
                    (b"cache-control", b"no-store")]


class RequestError(PersonamineError):
    """A request the server refuses, with its HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Guard:
    """Host and origin checks, the body cap's first line (a declared Content-Length), and the security headers."""

    def __init__(self, app: ASGIApp, hosts: set[str] | None) -> None:
        self.app, self.hosts = app, hosts  # hosts: the names this server answers to (None: any, when asked)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        refusal = None
        if self.hosts is not None and _hostname(host) not in self.hosts:
            refusal = PlainTextResponse("this server answers to 127.0.0.1 and localhost only", status_code=421)
        elif scope["method"] == "POST" and (origin := headers.get("origin")) and urlsplit(origin).netloc != host:
            refusal = PlainTextResponse("a request from another page's origin is refused", status_code=403)
        elif (length := headers.get("content-length")) is not None and (not length.isdigit()
                                                                          or int(length) > MAX_BODY_BYTES):
            refusal = PlainTextResponse(f"a request body is at most {MAX_BODY_BYTES:,} bytes", status_code=413)

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await (refusal or self.app)(scope, receive, secured)


def _hostname(host: str) -> str:
    if host.startswith("["):  # [::1]:8000
        return host[: host.find("]") + 1].lower()
    return host.rsplit(":", 1)[0].lower() if host.count(":") == 1 else host.lower()


async def _body(request: Request) -> bytes:
    """The body, at most MAX_BODY_BYTES whatever the client declared (a chunked body declares nothing)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise RequestError(f"a request body is at most {MAX_BODY_BYTES:,} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def _number(value: str | None, default: int, name: str, low: int = 0) -> int:
    if value is None or value == "":
        return default
    if not value.isdigit() or len(value) > 9 or int(value) < low:
        raise RequestError(f"{name} must be a whole number of at least {low}")
    return int(value)


def create_app(sources: Sources, inspector: Inspector, neighbours: dict[int, DecoderNeighbours | None],
               hosts: set[str] | None) -> ASGIApp:
    """The app over opened ``sources``; ``neighbours`` per file number; ``hosts``: the Host names it answers to."""

    def error_page(message: str, status: int) -> HTMLResponse:
        return HTMLResponse(page_html("error", "personamine serve", {"files": files_data(sources),
                                                                      "error": message}), status_code=status)

    def index_page_of(request: Request):
        q = request.query_params
        sort, direction = q.get("sort", "#"), q.get("dir", "asc")
        if direction not in ("asc", "desc"):
            raise RequestError("dir is asc or desc")
        if sort != "#":
            sources.index.column(sort)  # an unknown column is a one-line error
        return sources.index.page(sort=sort, descending=direction == "desc", query=q.get("q", ""),
                                  page=_number(q.get("page"), 0, "page"), size=_number(q.get("n"), 50, "n", 1))

    def feature_of(request: Request) -> tuple[int, int]:
        file, feature = request.path_params["file"], request.path_params["feature"]
        if not 0 <= file < len(sources.files):
            raise RequestError(f"there is no file {file} (this server has {len(sources.files)})", 404)
        if feature not in sources.files[file].feature_set:
            raise RequestError(f"feature {feature} is not in {sources.files[file].path.name}", 404)
        return file, feature

    async def index(request: Request) -> Response:
        try:
            page = await run_in_threadpool(index_page_of, request)
        except PersonamineError as exc:
            return error_page(str(exc), getattr(exc, "status", 400))
        return HTMLResponse(page_html("index", "personamine serve", index_data(sources, page)))

    async def api_index(request: Request) -> Response:
        try:
            page = await run_in_threadpool(index_page_of, request)
        except PersonamineError as exc:
            return JSONResponse({"error": str(exc)}, status_code=getattr(exc, "status", 400))
        return JSONResponse(index_data(sources, page)["index"])

    async def feature(request: Request) -> Response:
        try:
            file, feature_id = feature_of(request)
            data = await run_in_threadpool(feature_data, sources, file, feature_id, neighbours.get(file))
            extra = await run_in_threadpool(feature_extra, sources, feature_id)
        except PersonamineError as exc:
            return error_page(str(exc), getattr(exc, "status", 400))
        return HTMLResponse(page_html("feature", f"feature {feature_id}", data, extra))

    async def api_feature(request: Request) -> Response:
        try:
            file, feature_id = feature_of(request)
            data = await run_in_threadpool(feature_data, sources, file, feature_id, neighbours.get(file))
        except PersonamineError as exc:
            return JSONResponse({"error": str(exc)}, status_code=getattr(exc, "status", 400))
        return JSONResponse(data)

    def status_of(file: int) -> dict:
        return inspector.status(file)

    async def inspect_form(request: Request) -> Response:
        q = request.query_params
        try:
            file = _number(q.get("file"), 0, "file")
            if file >= len(sources.files):
                raise RequestError(f"there is no file {file}", 404)
            features = q.get("features", "")
            if len(features) > 400:
                raise RequestError("features is at most 400 characters")
        except PersonamineError as exc:
            return error_page(str(exc), getattr(exc, "status", 400))
        if inspector.enabled:
            inspector.warm(file)  # the model loads while the user types
        form = {"file": file, "mode": "chat" if sources.files[file].config.get("messages_column") else "text",
                "text": "", "features": features or default_features(file), "top": 10}
        return HTMLResponse(page_html("inspect", "live inspection", inspect_data(sources, status_of(file), form)))

    def default_features(file: int) -> str:
        index = sources.index
        order = index.default_order[index.file_of[index.default_order] == file][:3]
        return ",".join(str(int(index.feature_ids[r])) for r in order)

    async def run_inspection(request_data: dict) -> dict:
        parsed = InspectRequest.parse(request_data, sources.files)
        return await asyncio.wrap_future(inspector.submit(parsed))

    async def inspect_post(request: Request) -> Response:
        form = {"file": 0, "mode": "text", "text": "", "features": "", "top": 10}
        try:
            fields = parse_qs((await _body(request)).decode("utf-8"), keep_blank_values=True, max_num_fields=16)
            value = {k: v[-1] for k, v in fields.items()}
            form.update(file=_number(value.get("file"), 0, "file"), mode=value.get("mode", "text"),
                        text=value.get("text", ""), features=value.get("features", ""),
                        top=_number(value.get("top"), 10, "top"))
            if form["file"] >= len(sources.files):
                raise RequestError(f"there is no file {form['file']}", 404)
            if form["mode"] not in ("text", "chat"):
                raise RequestError("mode is text or chat")
            request_data = {"file": form["file"], "features": parse_feature_list(form["features"][:400]),
                            "top": form["top"]}
            if form["mode"] == "chat":
                request_data["messages"] = parse_chat(form["text"])
            else:
                request_data["text"] = form["text"]
            result = await run_inspection(request_data)
        except (PersonamineError, UnicodeDecodeError, ValueError) as exc:
            status = getattr(exc, "status", 503 if isinstance(exc, (Busy, Unavailable)) else 400)
            data = inspect_data(sources, status_of(form["file"]), form, error=one_line(str(exc)))
            return HTMLResponse(page_html("inspect", "live inspection", data), status_code=status)
        data = inspect_data(sources, status_of(form["file"]), form, result)
        return HTMLResponse(page_html("inspect", "live inspection", data))

    async def api_inspect(request: Request) -> Response:
        try:
            try:
                request_data = json.loads(await _body(request))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise RequestError(f"the body is not JSON: {exc}") from None
            result = await run_inspection(request_data)
        except PersonamineError as exc:
            status = getattr(exc, "status", 503 if isinstance(exc, (Busy, Unavailable)) else 400)
            return JSONResponse({"error": one_line(str(exc))}, status_code=status)
        return JSONResponse(result)

    async def api_status(request: Request) -> Response:
        return JSONResponse({"files": files_data(sources), "features": sources.index.size,
                             "inspection": [status_of(f.number) for f in sources.files]})

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/feature/{file:int}/{feature:int}", feature, methods=["GET"]),
        Route("/inspect", inspect_form, methods=["GET"]),
        Route("/inspect", inspect_post, methods=["POST"]),
        Route("/api/index", api_index, methods=["GET"]),
        Route("/api/feature/{file:int}/{feature:int}", api_feature, methods=["GET"]),
        Route("/api/inspect", api_inspect, methods=["POST"]),
        Route("/api/status", api_status, methods=["GET"]),
    ]
    return Guard(Starlette(routes=routes), hosts)
