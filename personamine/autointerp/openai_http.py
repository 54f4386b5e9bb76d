"""Explainer backend: any OpenAI-compatible ``/v1/chat/completions`` server (vLLM, llama.cpp's server, a hosted
API), through httpx.

The base URL and key come from the config or ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``; with no model named, the
server's first ``/v1/models`` entry answers (a vLLM server serves one). Requests run ``concurrency`` at a time, on
threads (so the call also works inside a notebook's running event loop), one httpx client per thread. Connection
errors, timeouts, 408/409/429 and 5xx answers are retried with exponential backoff (honouring ``Retry-After``);
other 4xx answers and malformed bodies are not (they would fail the same way again): the response carries the
error and the run counts it.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from personamine.autointerp.backend import OnDone, Request, Response
from personamine.errors import PersonamineError

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"  # vLLM's default
RETRY_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))
MAX_BACKOFF_S = 60.0


def parse_completion(data: object) -> Response:
    """A chat-completion body as a Response (raises KeyError/TypeError/IndexError/ValueError when malformed)."""
    choice = data["choices"][0]  # type: ignore[index]
    text = choice["message"]["content"] or ""
    if not isinstance(text, str):
        raise TypeError("message content is not a string")
    content = (choice.get("logprobs") or {}).get("content")
    if not content:
        return Response(text=text)
    tokens, logprobs = [], []
    for item in content:
        chosen = (str(item["token"]), float(item["logprob"]))
        alternatives = [(str(a["token"]), float(a["logprob"])) for a in item.get("top_logprobs") or []]
        tokens.append(chosen[0])
        logprobs.append(with_chosen(chosen, alternatives))
    return Response(text=text, tokens=tokens, logprobs=logprobs)


def with_chosen(chosen: tuple[str, float], alternatives: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """A generated step's alternatives with the generated token in them exactly once, at its own log-probability.

    The generated token may or may not be listed in ``top_logprobs`` as well (it is when it ranks among the top
    ones; a sampled token need not), and a listed copy need not carry exactly the float of the token's own
    ``logprob`` (so comparing (token, logprob) pairs would count it twice). The first entry with the generated
    token's text is that token: it is replaced by the token's own entry, so the token counts once; otherwise the
    token is put first."""
    for i, (token, _) in enumerate(alternatives):
        if token == chosen[0]:
            return [*alternatives[:i], chosen, *alternatives[i + 1:]]
    return [chosen, *alternatives]


class OpenAIBackend:
    def __init__(self, model: str | None = None, base_url: str | None = None, api_key: str | None = None, *,
                 concurrency: int = 8, max_retries: int = 4, timeout: float = 120.0, backoff: float = 1.0) -> None:
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        key = api_key or os.environ.get("OPENAI_API_KEY")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.concurrency, self.max_retries, self.timeout, self.backoff = concurrency, max_retries, timeout, backoff
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self.model = model or self._served_model()

    def _client(self) -> httpx.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx.Client(base_url=self.base_url, headers=self.headers,
                                                       timeout=self.timeout)
            with self._lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        with self._lock:
            for client in self._clients:
                client.close()
            self._clients.clear()
        self._local = threading.local()

    def _served_model(self) -> str:
        where = f"{self.base_url}/models"
        try:
            reply = self._client().get("/models")
            reply.raise_for_status()
            return str(reply.json()["data"][0]["id"])
        except httpx.HTTPStatusError as exc:
            raise PersonamineError(f"no model given and {where} answered HTTP {exc.response.status_code}") from exc
        except httpx.HTTPError as exc:
            raise PersonamineError(f"cannot reach the explainer server at {self.base_url}: {exc}") from exc
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise PersonamineError(f"no model given and {where} lists none") from exc

    def body(self, request: Request) -> dict:
        body = {"model": self.model, "messages": request.message_dicts(), "max_tokens": request.max_tokens,
                "temperature": request.temperature}
        if request.top_logprobs:
            body.update(logprobs=True, top_logprobs=request.top_logprobs)
        return body

    def complete(self, requests: list[Request], on_done: OnDone | None = None) -> list[Response]:
        def one(i: int) -> Response:
            response = self._send(requests[i])
            if on_done is not None:
                on_done(i, response)
            return response

        if self._pool is None:  # kept between calls, so each thread's client (and its connections) is reused
            self._pool = ThreadPoolExecutor(max_workers=max(1, self.concurrency), thread_name_prefix="personamine-http")
        return list(self._pool.map(one, range(len(requests))))

    def _send(self, request: Request) -> Response:
        body, error, attempt = self.body(request), "", 0
        for attempt in range(1, self.max_retries + 2):
            wait = self.backoff * 2 ** (attempt - 1)
            try:
                reply = self._client().post("/chat/completions", json=body)
            except httpx.TransportError as exc:  # refused, reset, timed out: worth another try
                error = f"{type(exc).__name__}: {exc}"
            else:
                if reply.status_code == 200:
                    try:
                        response = parse_completion(reply.json())
                    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
                        return Response(error=f"malformed response: {type(exc).__name__}: {exc}"[:300],
                                        attempts=attempt)
                    response.attempts = attempt
                    return response
                error = f"HTTP {reply.status_code}: {reply.text[:200]}"
                if reply.status_code not in RETRY_STATUS:
                    return Response(error=error, attempts=attempt)
                try:
                    wait = max(wait, float(reply.headers.get("retry-after", 0)))
                except ValueError:
                    pass
            if attempt <= self.max_retries:
                time.sleep(min(wait, MAX_BACKOFF_S))
        return Response(error=error, attempts=attempt)
