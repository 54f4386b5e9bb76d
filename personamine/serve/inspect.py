"""Live inspection: a typed text, or a chat rendered with the model's chat template, run through mining's own path
(``MiningEngine``: the same windows and sink prefix, batches, early-stopped forward, scoring rules and encoder, from
the file's own config), so what it shows for a text is what mining that text gives.

Per token of the text: its role, whether mining scores it (and, where not, why: a special token, the chat
template, a role the run does not score, a residual-norm outlier), the chosen features' activations, and the top
features of the whole SAE at that token. The model and SAE load once, on first use, on one worker thread, which
runs one request at a time; at most ``MAX_QUEUED`` wait, so the server answers everything else meanwhile.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from personamine.config import MineConfig
from personamine.errors import PersonamineError, one_line
from personamine.report.data import vocab_entry
from personamine.roles import ROLE, ROLES

if TYPE_CHECKING:
    import torch

    from personamine.model.loading import LoadedModel
    from personamine.serve.sources import ServedFile
    from personamine.shards.run import MiningEngine

MAX_TEXT_CHARS = 8000  # of a text, or of a chat's turns together
MAX_TOKENS = 2048  # of the text once tokenized (rendered)
MAX_CHOSEN = 32  # features whose activations are shown on the text
MAX_TOP = 32  # top features listed per token
MAX_TURNS = 64
MAX_QUEUED = 4  # requests waiting or running; more are refused (busy) until one finishes

# Why a token has activations or not: mining encodes only the tokens it scores.
STATES = ("scored", "a special token: never scored", "the chat template's own text: never scored",
          "a role this run does not score", "a residual-norm outlier (the sink rule): not scored")
SCORED, SPECIAL, TEMPLATE, UNSCORED_ROLE, OUTLIER = range(len(STATES))
_CHAT_ROLES = ("system", "user", "assistant")


class Busy(PersonamineError):
    """Too many inspections are waiting: the request is refused, not queued."""


class Unavailable(PersonamineError):
    """The file's model or SAE could not be loaded (the message says why)."""


class InspectionFailed(PersonamineError):
    """The model or encoder failed on a request (out of memory, a library's error): one line, not a traceback."""

    status = 500


@dataclass
class InspectRequest:
    file: int
    text: str | None  # a plain text, or None for a chat
    messages: list[dict[str, str]] | None
    features: list[int]  # features of the file whose activations are shown
    top: int = 10

    @classmethod
    def parse(cls, data: Any, files: list[ServedFile]) -> InspectRequest:
        """A request from JSON (or the page's form): every field checked, sizes capped, in one-line errors."""
        if not isinstance(data, dict):
            raise PersonamineError("an inspection is a JSON object: {\"text\": ...} or {\"messages\": [...]}")
        unknown = sorted(set(data) - {"file", "text", "messages", "features", "top"})
        if unknown:
            raise PersonamineError(f"unknown field(s): {', '.join(unknown)}")
        file = data.get("file", 0)
        if not isinstance(file, int) or isinstance(file, bool) or not 0 <= file < len(files):
            raise PersonamineError(f"file must be a number from 0 to {len(files) - 1}")
        text, messages = data.get("text"), data.get("messages")
        if (text is None) == (messages is None):
            raise PersonamineError("give either a text or messages (a chat), not both")
        if text is not None:
            if not isinstance(text, str) or not text.strip():
                raise PersonamineError("the text is empty")
            if len(text) > MAX_TEXT_CHARS:
                raise PersonamineError(f"the text is {len(text):,} characters; at most {MAX_TEXT_CHARS:,}")
        else:
            messages = _checked_messages(messages)
        top = data.get("top", 10)
        if not isinstance(top, int) or isinstance(top, bool) or not 0 <= top <= MAX_TOP:
            raise PersonamineError(f"top must be a number from 0 to {MAX_TOP}")
        features = data.get("features", [])
        if not isinstance(features, list) or not all(isinstance(f, int) and not isinstance(f, bool)
                                                     for f in features):
            raise PersonamineError("features must be a list of feature ids")
        features = list(dict.fromkeys(features))
        if len(features) > MAX_CHOSEN:
            raise PersonamineError(f"at most {MAX_CHOSEN} features at a time")
        held = files[file].feature_set
        missing = [f for f in features if f not in held]
        if missing:
            raise PersonamineError(f"feature(s) {', '.join(map(str, missing[:5]))} are not in "
                                   f"{files[file].path.name}: live inspection shows the file's own features (the top "
                                   "features at each token come from the whole SAE)")
        return cls(file, text, messages, features, top)


def _checked_messages(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise PersonamineError("messages must be a non-empty list of {\"role\", \"content\"} turns")
    if len(messages) > MAX_TURNS:
        raise PersonamineError(f"at most {MAX_TURNS} turns")
    out = []
    for i, turn in enumerate(messages):
        if not isinstance(turn, dict) or set(turn) != {"role", "content"}:
            raise PersonamineError(f"turn {i} must be {{\"role\", \"content\"}}")
        role, content = turn["role"], turn["content"]
        if role not in _CHAT_ROLES or not isinstance(content, str):
            raise PersonamineError(f"turn {i}: the role is one of {', '.join(_CHAT_ROLES)} and the content a string")
        out.append({"role": role, "content": content})
    chars = sum(len(t["content"]) for t in out)
    if chars > MAX_TEXT_CHARS:
        raise PersonamineError(f"the chat is {chars:,} characters; at most {MAX_TEXT_CHARS:,}")
    return out


def parse_chat(text: str) -> list[dict[str, str]]:
    """The page's chat box: a line ``user: ...`` (or ``system:``, ``assistant:``) opens a turn; the lines after it,
    up to the next such line, continue it."""
    turns: list[dict[str, str]] = []
    for line in text.splitlines():
        head, sep, rest = line.partition(":")
        if sep and head.strip().lower() in _CHAT_ROLES:
            turns.append({"role": head.strip().lower(), "content": rest[1:] if rest.startswith(" ") else rest})
        elif turns:
            turns[-1]["content"] += "\n" + line
        elif line.strip():
            raise PersonamineError("a chat starts with a line \"user: ...\" (or \"system: ...\"); each line "
                                   "\"user:\", \"assistant:\" or \"system:\" opens a turn")
    if not turns:
        raise PersonamineError("the chat is empty: write a line \"user: ...\"")
    return turns


@dataclass
class _Loaded:
    engine: MiningEngine
    full: Any  # an encoder of every SAE feature (the engine's own when the file holds them all)
    column: dict[int, int]  # feature id -> its column in the engine's encoder


class Inspector:
    """The served files' models and SAEs, loaded on first use, and the one thread that runs inspections."""

    def __init__(self, files: list[ServedFile], *, model: str | None = None, sae: str | None = None,
                 device: str | None = None, enabled: bool = True) -> None:
        self.files, self.enabled = files, enabled
        self.overrides = {k: v for k, v in (("model", model), ("sae", sae), ("device", device)) if v is not None}
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="personamine-inspect")
        self._lock = threading.Lock()
        self._pending = 0
        self._loads: dict[int, Future] = {}
        self._models: dict[tuple, LoadedModel] = {}

    def config(self, file: int, require: tuple[str, ...] = ("model", "sae")) -> MineConfig:
        """The run config of a file as the engine uses it: the file's own, with the model, SAE or device given to
        ``serve`` instead, and no pre-flight (it measured the SAE when the file was mined). ``require``: fields
        the file (or ``serve``) must name, not left at their defaults."""
        saved = {k: v for k, v in self.files[file].config.items() if k in {f.name for f in
                                                                            dataclasses.fields(MineConfig)}}
        missing = [k for k in require if not saved.get(k) and k not in self.overrides]
        if missing:
            raise PersonamineError(f"{self.files[file].path.name} records no {' and no '.join(missing)} (give "
                                   f"{' and '.join('--' + k for k in missing)})")
        return MineConfig.from_dict({**saved, **self.overrides, "preflight_tokens": 0, "progress": False})

    def status(self, file: int) -> dict[str, str]:
        """{"state": off | idle | loading | ready | unavailable, "note": one line}."""
        if not self.enabled:
            return {"state": "off", "note": "live inspection is off (started with --no-inspect)"}
        future = self._loads.get(file)
        if future is None:
            return {"state": "idle", "note": "the model and SAE load on the first inspection"}
        if not future.done():
            return {"state": "loading", "note": "loading the model and the SAE"}
        error = future.exception()
        if error is not None:
            return {"state": "unavailable", "note": f"live inspection is unavailable: {one_line(str(error))}"}
        loaded: _Loaded = future.result()
        return {"state": "ready", "note": f"{loaded.engine.config.model} layer {loaded.engine.config.layer} on "
                                          f"{loaded.engine.device}, SAE {loaded.engine.config.sae}"}

    def warm(self, file: int) -> Future:
        """Start loading a file's model and SAE (once) on the worker thread."""
        with self._lock:
            future = self._loads.get(file)
            if future is None:
                if not self.enabled:
                    raise Unavailable("live inspection is off (started with --no-inspect)")
                future = self._loads[file] = self._executor.submit(self._load, file)
            return future

    def submit(self, request: InspectRequest) -> Future:
        """Queue an inspection; refused (Busy) when ``MAX_QUEUED`` are waiting or running."""
        load = self.warm(request.file)
        with self._lock:
            if self._pending >= MAX_QUEUED:
                raise Busy(f"{self._pending} inspections are queued: try again in a moment")
            self._pending += 1
        try:
            future = self._executor.submit(self._inspect, load, request)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(lambda _: self._release())
        return future

    def _release(self) -> None:
        with self._lock:
            self._pending -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- on the worker thread

    def _load(self, file: int) -> _Loaded:
        # torch and transformers are imported here, on the worker, never when the server starts.
        from personamine.model.loading import load_model
        from personamine.shards.run import MiningEngine

        cfg = self.config(file)
        if cfg.layer is None:
            raise PersonamineError(f"{self.files[file].path.name} records no layer")
        key = (cfg.model, cfg.layer, cfg.dtype, cfg.device, cfg.gguf_file, cfg.revision)
        loaded = self._models.get(key)
        if loaded is None:
            loaded = self._models[key] = load_model(cfg.model, cfg.layer, dtype=cfg.dtype, device=cfg.device,
                                                    gguf_file=cfg.gguf_file, revision=cfg.revision)
        features = self.files[file].feature_ids
        engine = MiningEngine(cfg, features, loaded)
        sae = engine.sae
        if features.size == sae.d_sae and bool((np.sort(features) == np.arange(sae.d_sae)).all()):
            full = engine.encoder
        else:
            full = sae.encoder(None, device=engine.device, chunk_size=cfg.feature_chunk, exact_topk=True,
                               resident=engine.device.type == "cuda")
        return _Loaded(engine, full, {int(f): c for c, f in enumerate(engine.encoder.features.tolist())})

    def _inspect(self, load: Future, request: InspectRequest) -> dict:
        import torch

        try:
            loaded = load.result()  # the load ran before this, on this same thread: it is done
        except Exception as exc:
            raise Unavailable(f"live inspection is unavailable: {one_line(str(exc))}") from exc
        began = time.perf_counter()
        try:
            with torch.inference_mode():
                out = inspect_text(loaded.engine, loaded.full, loaded.column, request)
        except PersonamineError:  # a text the engine refuses (too long, a chat the template refuses)
            raise
        except Exception as exc:
            raise InspectionFailed(f"the inspection failed: {type(exc).__name__}: {one_line(str(exc))}") from exc
        out["seconds"] = round(time.perf_counter() - began, 4)
        return out


def inspect_text(engine: MiningEngine, full: Any, column: dict[int, int], request: InspectRequest) -> dict:
    """One inspection through ``engine`` (mining's windows, forward, scoring rules and encoder); ``full`` encodes
    every SAE feature for the top features at each token."""
    from personamine.corpus.conversations import ChatRenderer, parse_turns
    from personamine.model.prompts import tokenize
    from personamine.shards.windows import Document

    cfg, tokenizer = engine.config, engine.loaded.tokenizer
    if request.messages is not None:
        renderer = engine.documents.renderer or ChatRenderer(
            tokenizer, system_prompt=cfg.system_prompt, date_string=cfg.date_string,
            generation_prompt=cfg.generation_prompt)
        rendered = renderer.render(parse_turns(request.messages))
        doc = Document(0, rendered.ids, rendered.roles, rendered=True)
    else:
        doc = Document(0, tokenize(tokenizer, [request.text])[0])
    n = len(doc.ids)
    if n == 0:
        raise PersonamineError("the text has no tokens")
    if n > MAX_TOKENS:
        raise PersonamineError(f"the text is {n:,} tokens; at most {MAX_TOKENS:,}")
    roles = np.asarray(doc.roles, np.int8) if doc.roles is not None else np.full(n, ROLE["text"], np.int8)
    chosen = np.array([column[f] for f in request.features], np.int64)
    acts = np.zeros((chosen.size, n), np.float32)
    state = np.full(n, UNSCORED_ROLE, np.int8)
    top_values = np.zeros((n, request.top), np.float32)
    top_ids = np.full((n, request.top), -1, np.int64)
    windows = []
    same = full is engine.encoder
    for batch in engine.document_batches([doc]):
        hidden, tokens, outlier = engine.capture(batch)
        table = batch.windows
        head = (table.roles == ROLE["prefix"]).sum(axis=1)  # the sink prefix leads each fed window
        region, special = batch.region.cpu().numpy(), batch.special.cpu().numpy()
        role_ok, outliers = batch.role_ok.cpu().numpy(), outlier.cpu().numpy()
        for w in range(len(table)):
            positions = np.nonzero(region[w])[0]
            at = table.window_start[w] + positions - head[w]
            state[at] = np.where(special[w, positions], SPECIAL, np.where(
                ~role_ok[w, positions], np.where(roles[at] == ROLE["template"], TEMPLATE, UNSCORED_ROLE),
                np.where(outliers[w, positions], OUTLIER, SCORED)))
            windows.append({"start": int(table.window_start[w]), "fed": int(table.length[w]),
                            "scores_from": int(at[0]) if at.size else None, "scores_to": int(at[-1]) + 1
                            if at.size else None})
        window, position = tokens.window.cpu().numpy(), tokens.position.cpu().numpy()
        at = table.window_start[window] + position - head[window]
        if not at.size:
            continue
        x = hidden[tokens.window, tokens.position]
        best_values = best_ids = None
        for start, end, block in engine.encoder.iter_encode(x):
            _finite(block, cfg.allow_nonfinite)
            inside = (chosen >= start) & (chosen < end)
            if inside.any():
                acts[np.nonzero(inside)[0][:, None], at[None, :]] = block[:, chosen[inside] - start].T.cpu().numpy()
            if same and request.top:
                best_values, best_ids = _merge_top(best_values, best_ids, block, start, request.top)
        if not same and request.top:
            for start, _, block in full.iter_encode(x):
                _finite(block, cfg.allow_nonfinite)
                best_values, best_ids = _merge_top(best_values, best_ids, block, start, request.top)
        if best_values is not None:
            ids = full.features[best_ids.cpu().numpy()]  # columns of the encoder -> SAE feature ids
            values = best_values.cpu().numpy()
            order = np.argsort(-values, axis=1, kind="stable")
            values, ids = np.take_along_axis(values, order, 1), np.take_along_axis(ids, order, 1)
            k = values.shape[1]
            top_values[at, :k], top_ids[at, :k] = values, np.where(values > 0, ids, -1)
    vocab = _vocab(tokenizer, sorted(set(doc.ids) | set(engine.prefix)))
    top = [[[int(f), float(v)] for f, v in zip(fs, vs, strict=True) if f >= 0]
           for fs, vs in zip(top_ids.tolist(), top_values.tolist(), strict=True)]
    return {
        "file": request.file, "mode": "chat" if request.messages is not None else "text",
        "tokens": [int(i) for i in doc.ids], "roles": roles.astype(int).tolist(), "state": state.astype(int).tolist(),
        "features": request.features, "activations": acts.tolist(), "top": top, "windows": windows, "vocab": vocab,
        "states": list(STATES), "role_names": list(ROLES),
        "rules": {"ctx_len": cfg.ctx_len, "stride": cfg.stride, "norm_filter": cfg.norm_filter,
                  "score_roles": cfg.score_roles or [r for r in ROLES[:4]], "sink_prefix": list(engine.prefix)},
    }


def _vocab(tokenizer, ids: list[int]) -> dict[str, list]:
    """The tokens as the page's script reads them, from the tokenizer as mining stores them (its byte-level piece
    and its decoded text)."""
    pieces = tokenizer.convert_ids_to_tokens(ids)
    return {str(i): vocab_entry(i, tokenizer.decode([i]), str(p)) for i, p in zip(ids, pieces, strict=True)}


def _finite(block: torch.Tensor, allow: bool) -> None:
    """Mining's rule for NaN and infinity: an error, or (``allow_nonfinite``) read as 0."""
    import torch

    from personamine.saes.base import all_finite

    if all_finite(block):
        return
    if not allow:
        raise PersonamineError("the SAE's encoding of this text is not finite (NaN or infinity): the model's "
                               "activations or the encoding overflowed")
    block.masked_fill_(~torch.isfinite(block), 0.0)


def _merge_top(values: torch.Tensor | None, ids: torch.Tensor | None, block: torch.Tensor, start: int,
               k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each token's ``k`` largest activations so far, merged with a block of columns ``start..``."""
    import torch

    block_ids = torch.arange(start, start + block.shape[1], device=block.device).expand_as(block)
    if values is not None:
        block = torch.cat([values, block], dim=1)
        block_ids = torch.cat([ids, block_ids], dim=1)
    best = min(k, block.shape[1])
    values, where = block.topk(best, dim=1)
    return values, block_ids.gather(1, where)
