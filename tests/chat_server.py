"""A real OpenAI-compatible chat server on 127.0.0.1 for the HTTP backend's tests: a real model (transformers,
greedy) behind ``http.server``, with ``/v1/models`` and ``/v1/chat/completions`` (``logprobs``/``top_logprobs``),
and switchable faults: answer 503, hang up, or hang past the client's timeout for the first requests, or send a
malformed body for every k-th one. Written from the OpenAI API reference, independently of personamine's client."""

from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch


class ChatServer:
    def __init__(self, model_dir, name: str = "tiny-chat", *, fail_first: int = 0, drop_next: int = 0,
                 hang_next: int = 0, hang_seconds: float = 0.0, malformed_every: int = 0,
                 reject_all: bool = False, edit=None) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.name = name
        self.fail_first, self.drop_next, self.hang_next = fail_first, drop_next, hang_next
        self.hang_seconds = hang_seconds
        self.malformed_every, self.reject_all = malformed_every, reject_all
        self.edit = edit  # called on each completion body before it is sent (to play another server's habits)
        self.posts = 0  # chat requests received, faults included
        self.authorization: str | None = None
        self.sent: list[dict] = []  # every well-formed completion body sent
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def completion(self, body: dict) -> dict:
        return greedy_completion(self.tok, self.model, body, self.name)

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, payload: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout under test)
                    pass

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    self._send(200, json.dumps({"object": "list", "data": [{"id": server.name}]}).encode())
                else:
                    self._send(404, b"{}")

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.posts += 1
                    n = server.posts
                    server.authorization = self.headers.get("Authorization")
                if self.path != "/v1/chat/completions" or server.reject_all:
                    return self._send(400, b'{"error": {"message": "bad request"}}')
                if n <= server.fail_first:
                    return self._send(503, b'{"error": {"message": "overloaded"}}')
                if n <= server.fail_first + server.drop_next:
                    self.close_connection = True  # hang up without an answer
                    return None
                if n <= server.fail_first + server.drop_next + server.hang_next:
                    time.sleep(server.hang_seconds)  # past the client's timeout: it has hung up
                    return self._send(503, b"{}")
                if server.malformed_every and n % server.malformed_every == 0:
                    bad = (b"<html>not json", b'{"choices": []}', b'{"choices": [{"message": {}}]}')
                    return self._send(200, bad[n // server.malformed_every % 3])
                with server.lock:  # one generation at a time
                    reply = server.completion(body)
                    if server.edit is not None:
                        server.edit(reply)
                    server.sent.append(reply)
                self._send(200, json.dumps(reply).encode())

        return Handler


@torch.no_grad()
def greedy_completion(tok, model, body: dict, name: str = "model") -> dict:
    """A chat-completion body for ``body`` (messages, max_tokens, logprobs, top_logprobs): greedy decoding one
    token at a time with the full forward, no cache, no batching."""
    text = tok.apply_chat_template(body["messages"], add_generation_prompt=True, tokenize=False)
    ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    out, content = [], []
    for _ in range(int(body.get("max_tokens", 16))):
        logprobs = torch.log_softmax(model(ids).logits[0, -1].float(), dim=-1)
        nxt = int(logprobs.argmax())
        if nxt == tok.eos_token_id:
            break
        top = torch.topk(logprobs, min(int(body.get("top_logprobs") or 0), logprobs.numel()))
        content.append({"token": tok.decode([nxt]), "logprob": float(logprobs[nxt]),
                        "top_logprobs": [{"token": tok.decode([int(i)]), "logprob": float(v)}
                                         for v, i in zip(top.values, top.indices, strict=True)]})
        out.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    choice = {"index": 0, "message": {"role": "assistant", "content": tok.decode(out)}, "finish_reason": "stop"}
    if body.get("logprobs"):
        choice["logprobs"] = {"content": content}
    return {"id": "cmpl-test", "object": "chat.completion", "model": name, "choices": [choice]}


def reference_probability(tok, model, messages: list[dict], max_tokens: int) -> float | None:
    """P(yes) / P(yes + no) over the WHOLE vocabulary at the first answer word the model writes greedily (else its
    first token), from the model itself: the rule the README states, restated."""
    body = {"messages": messages, "max_tokens": max_tokens, "logprobs": True, "top_logprobs": 10**9}
    content = greedy_completion(tok, model, body)["choices"][0]["logprobs"]["content"]
    if not content:
        return None
    words = {"1": 1, "yes": 1, "0": 0, "no": 0}
    at = next((i for i, c in enumerate(content) if c["token"].strip().lower() in words), 0)
    mass = [0.0, 0.0]
    for alt in content[at]["top_logprobs"]:
        if (w := alt["token"].strip().lower()) in words:
            mass[words[w]] += math.exp(alt["logprob"])
    return mass[1] / sum(mass) if sum(mass) else None
