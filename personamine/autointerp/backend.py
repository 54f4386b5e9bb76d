"""One interface for every explainer model: a batch of chat requests in, one response each out.

A backend never raises for one failed request: its response carries ``error`` and the run counts it. Variants:
``openai_http`` (any OpenAI-compatible ``/v1/chat/completions`` server) and ``hf_local`` (a transformers model in
process). ``CachedBackend`` sits in front of either and answers every request it has seen from disk.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol


@dataclass(frozen=True)
class Request:
    messages: tuple[tuple[str, str], ...]  # (role, content)
    max_tokens: int
    temperature: float = 0.0
    top_logprobs: int = 0  # alternatives wanted per generated token (0: no log-probabilities)
    # Words whose log-probability is wanted at every generated position: a backend that sees the whole distribution
    # adds every token spelling one of them (stripped, lowercased) to the alternatives.
    watch: tuple[str, ...] = ()

    @classmethod
    def chat(cls, messages: list[dict], **kwargs) -> Request:
        return cls(tuple((m["role"], m["content"]) for m in messages), **kwargs)

    def message_dicts(self) -> list[dict]:
        return [{"role": r, "content": c} for r, c in self.messages]

    def digest(self, model: str) -> str:
        """The cache key: the model and everything that shapes its answer."""
        data = json.dumps({"model": model, **asdict(self)}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(data.encode()).hexdigest()


@dataclass
class Response:
    text: str = ""
    tokens: list[str] | None = None  # the generated tokens' text, when the backend gives them
    logprobs: list[list[tuple[str, float]]] | None = None  # per generated token: (alternative, log-probability)
    error: str | None = None
    cached: bool = False
    attempts: int = 1  # HTTP requests made (retries included); 0 from the cache

    def to_json(self) -> dict:
        return {"text": self.text, "tokens": self.tokens, "logprobs": self.logprobs}

    @classmethod
    def from_json(cls, data: dict) -> Response:
        logprobs = [[(str(t), float(lp)) for t, lp in step] for step in data["logprobs"]] if data.get(
            "logprobs") is not None else None
        return cls(text=data["text"], tokens=data.get("tokens"), logprobs=logprobs, cached=True, attempts=0)


OnDone = Callable[[int, Response], None]  # (index in the batch, its response), called as each finishes


class Backend(Protocol):
    model: str  # what answers: the served model's name, or the local model's id (part of every cache key)

    def complete(self, requests: list[Request], on_done: OnDone | None = None) -> list[Response]:
        """One response per request, in order. ``on_done`` may be called from worker threads."""
        ...


class CachedBackend:
    """Answers seen requests from ``cache``, sends the rest (each distinct one once), and stores every success
    as soon as it arrives, so an interrupted run resumes where it stopped."""

    def __init__(self, backend: Backend, cache) -> None:
        self.backend, self.cache, self.model = backend, cache, backend.model
        self.n_sent = 0

    def complete(self, requests: list[Request], progress: Callable[[int], None] | None = None) -> list[Response]:
        """``progress(n)``: n more of ``requests`` are answered."""
        keys = [r.digest(self.model) for r in requests]
        count = {k: keys.count(k) for k in dict.fromkeys(keys)} if progress is not None else {}
        found = {k: self.cache.get(k) for k in dict.fromkeys(keys)}
        missing = [k for k, v in found.items() if v is None]
        if progress is not None:
            progress(len(requests) - sum(count[k] for k in missing))
        if missing:
            first = dict(zip(keys, requests, strict=True))
            self.n_sent += len(missing)

            def done(i: int, response: Response) -> None:
                if response.error is None:
                    self.cache.put(missing[i], response)
                if progress is not None:
                    progress(count[missing[i]])

            for k, response in zip(missing, self.backend.complete([first[k] for k in missing], done), strict=True):
                found[k] = response
        return [found[k] for k in keys]
