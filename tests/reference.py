"""A brute-force reference miner, written independently of personamine's engine.

Each window is run alone through the FULL model with ``output_hidden_states`` and encoded with the full
``BatchTopKSAE.encode``; selection is plain Python sorting. The windowing, role, masking and display-span rules are
the ones the README documents, restated here from the spec rather than imported. Conversations come in already
rendered (ids + roles): role finding is tested on its own (test_conversations.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

TEXT, PREFIX = 0, 5  # role codes (README, "Roles")
CONTENT_ROLES = (0, 1, 2, 3)


@dataclass
class RefEntry:
    score: float
    document: int
    window_start: int
    tokens: tuple[int, ...]  # the display span (the whole fed window when it is no longer than example_len)
    activations: np.ndarray  # over the span
    span_start: int = 0
    roles: tuple[int, ...] = ()
    fed: tuple[int, ...] = ()  # the whole fed window (what dedupe compares)


@dataclass
class RefDoc:
    index: int
    ids: list[int]
    roles: list[int] | None = None  # None: plain text
    rendered: bool = False  # a chat rendering: its first window is fed as rendered, with no prefix


@dataclass
class RefWindow:
    """A fed window as a negative candidate: its scored tokens' count, each feature's max over them, and the display
    span around its last scored token (where mining places a negative's span)."""

    document: int
    window_start: int
    fed: tuple[int, ...]
    n_scored: int
    maxima: np.ndarray  # [len(features)]
    span: tuple[int, ...]
    span_start: int


@dataclass
class RefStats:
    active: dict[int, int] = field(default_factory=dict)
    values: dict[int, list[float]] = field(default_factory=dict)  # every nonzero activation, for exact sums
    max: dict[int, float] = field(default_factory=dict)
    role_active: dict[tuple[int, int], int] = field(default_factory=dict)
    role_scored: dict[int, int] = field(default_factory=dict)
    tokens_scored: int = 0
    windows: list[RefWindow] = field(default_factory=list)

    def exact_sum(self, f: int) -> float:
        return math.fsum(self.values.get(f, []))


def load_texts(corpus_jsonl: Path) -> list[object]:
    return [json.loads(line)["text"] for line in corpus_jsonl.read_text().splitlines()]


def line_uids(corpus_jsonl: Path, unit_bytes: int) -> list[int]:
    """The in-run identity of each line of a one-file jsonl corpus, restated from the README: a line belongs to unit
    ``first byte // unit_bytes``, and its uid is ``unit << 32 | (its rank among that unit's lines)``."""
    uids, offset, rank, unit = [], 0, 0, -1
    for line in corpus_jsonl.read_bytes().splitlines(keepends=True):
        here = offset // unit_bytes
        rank = rank + 1 if here == unit else 0
        unit = here
        uids.append(unit << 32 | rank)
        offset += len(line)
    return uids


def windows_of(doc: RefDoc, prefix: list[int], ctx_len: int, stride: int | None):
    """(window_start, fed tokens, fed roles, first scored position) of each window, from the README's rule."""
    roles = doc.roles if doc.roles is not None else [TEXT] * len(doc.ids)
    capacity = ctx_len - len(prefix)
    step = stride or capacity
    if not doc.ids:
        return
    first = ctx_len if doc.rendered else capacity
    if doc.rendered:
        yield 0, doc.ids[:first], roles[:first], 0
    else:
        yield 0, prefix + doc.ids[:first], [PREFIX] * len(prefix) + roles[:first], len(prefix)
    s = first
    while s < len(doc.ids):
        lo = max(0, s - (capacity - step))
        yield lo, prefix + doc.ids[lo:s + step], [PREFIX] * len(prefix) + roles[lo:s + step], len(prefix) + s - lo
        s += step


def scored_positions(h: torch.Tensor, fed: list[int], roles: list[int], score_from: int, special: set[int],
                     score_roles: tuple[int, ...], norm_filter: float) -> list[bool]:
    """Which fed positions a window scores (README, "Which tokens are scored"): in its region, not special, of a
    scored role, and not a norm outlier (norm above ``norm_filter`` times the lower median of the eligible ones)."""
    eligible = [i >= score_from and fed[i] not in special and roles[i] in score_roles for i in range(len(fed))]
    if norm_filter <= 0:
        return eligible
    norms = h.norm(dim=-1)
    vals = sorted(norms[i].item() for i in range(len(fed)) if eligible[i])
    if not vals:
        return eligible
    median = vals[(len(vals) - 1) // 2]  # lower median
    return [e and norms[i].item() <= norm_filter * median for i, e in enumerate(eligible)]


def ref_docs(model_dir: Path, kind: str, rows: list) -> list[RefDoc]:
    """Reference documents: texts tokenized whole (no special tokens added), or conversations rendered with the
    chat template (``kind`` "text" or "chat")."""
    from transformers import AutoTokenizer

    from personamine.corpus.conversations import ChatRenderer, parse_turns

    tok = AutoTokenizer.from_pretrained(model_dir)
    if kind == "text":
        return [RefDoc(i, tok(t, add_special_tokens=False, split_special_tokens=True)["input_ids"])
                for i, t in enumerate(rows)]
    renderer = ChatRenderer(tok, date_string="26 Jul 2024")
    docs = []
    for i, turns in enumerate(rows):
        rendered = renderer.render(parse_turns(turns))
        docs.append(RefDoc(i, rendered.ids, rendered.roles.tolist(), rendered=True))
    return docs


@torch.no_grad()
def reference_mine(model_dir: Path, ae_path: Path, docs: list[RefDoc], *, layer: int, features: list[int],
                   ctx_len: int, prefix: list[int], stride: int | None = None, norm_filter: float = 10.0,
                   dedupe: bool = True, top_k: int | None = None, example_len: int = 64,
                   score_roles: tuple[int, ...] = CONTENT_ROLES) -> tuple[dict[int, list[RefEntry]], RefStats]:
    """Every window alone through the full model; the top windows per feature and the statistics of every token."""
    from fixtures import batchtopk_sae_class
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    sae = batchtopk_sae_class().from_pretrained(str(ae_path), device="cpu")
    special = set(tok.all_special_ids) | set(prefix) | {tok.pad_token_id}
    entries: dict[int, list[RefEntry]] = {f: [] for f in features}
    stats = RefStats()
    width = min(example_len, ctx_len)
    before = width - 1 - width // 4
    for doc in docs:
        for start, fed, roles, score_from in windows_of(doc, prefix, ctx_len, stride):
            out = model(torch.tensor([fed]), output_hidden_states=True)
            h = out.hidden_states[layer + 1][0]
            scored = scored_positions(h, fed, roles, score_from, special, score_roles, norm_filter)
            stats.tokens_scored += sum(scored)
            for i, s in enumerate(scored):
                if s:
                    stats.role_scored[roles[i]] = stats.role_scored.get(roles[i], 0) + 1
            codes = sae.encode(h)
            mask = torch.tensor(scored, dtype=torch.float32)[:, None]
            acts = (codes[:, features] * mask).numpy()
            last = max((i for i, s in enumerate(scored) if s), default=-1)
            lo = 0 if len(fed) <= width else min(max(last - before, 0), len(fed) - width)
            stats.windows.append(RefWindow(doc.index, start, tuple(fed), sum(scored), acts.max(0),
                                           tuple(fed[lo:lo + width]), lo))
            for j, f in enumerate(features):
                column = acts[:, j]
                for i in np.nonzero(column > 0)[0]:
                    stats.active[f] = stats.active.get(f, 0) + 1
                    stats.values.setdefault(f, []).append(float(column[i]))
                    key = (f, roles[i])
                    stats.role_active[key] = stats.role_active.get(key, 0) + 1
                score = float(column.max())
                stats.max[f] = max(stats.max.get(f, 0.0), score)
                if score > 0:
                    peak = int(np.argmax(column))  # the first position of the largest value
                    lo = 0 if len(fed) <= width else min(max(peak - before, 0), len(fed) - width)
                    entries[f].append(RefEntry(score, doc.index, start, tuple(fed[lo:lo + width]),
                                               column[lo:lo + width].copy(), lo, tuple(roles[lo:lo + width]),
                                               tuple(fed)))
    result = {}
    for f, items in entries.items():
        items.sort(key=lambda e: (-e.score, e.document, e.window_start))
        kept, seen = [], set()
        for e in items:
            if dedupe and e.fed in seen:
                continue
            seen.add(e.fed)
            kept.append(e)
        result[f] = kept if top_k is None else kept[:top_k]
    return result, stats


_M64 = 2**64 - 1


def splitmix64_int(x: int) -> int:
    """Reference splitmix64 on Python ints (Steele, Lea & Flood 2014), independent of the numpy version."""
    z = (x + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def key_int(document: int, start: int) -> int:
    return splitmix64_int(splitmix64_int(document) ^ start) >> 1


def reference_negatives(windows: list[RefWindow], features: list[int], m: int, dedupe: bool = True,
                        document_key=None) -> dict[int, list[RefWindow]]:
    """Per feature, the m smallest-key windows with a scored token where it never fires, one per distinct fed
    content (the smallest-key copy). ``document_key(document)``: the identity the key hashes (default: itself)."""
    doc_key = document_key or (lambda d: d)
    result = {}
    ordered = sorted(windows, key=lambda w: (key_int(doc_key(w.document), w.window_start), w.document,
                                             w.window_start))
    for j, f in enumerate(features):
        kept, seen = [], set()
        for w in ordered:
            if w.n_scored == 0 or dedupe and w.fed in seen:
                continue
            seen.add(w.fed)  # a content that fires somewhere is not a negative in any copy either
            if float(w.maxima[j]) == 0 and len(kept) < m:
                kept.append(w)
        result[f] = kept
    return result


def reference_topk(model_dir: Path, ae_path: Path, texts: list[object], *, layer: int, features: list[int],
                   ctx_len: int, top_k: int | None, prefix: list[int], norm_filter: float = 10.0,
                   dedupe: bool = True) -> dict[int, list[RefEntry]]:
    """The reference on a text corpus (documents tokenized whole, no special tokens added), no overlap."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    docs = [RefDoc(i, tok(t, add_special_tokens=False, split_special_tokens=True)["input_ids"])
            for i, t in enumerate(texts) if isinstance(t, str)]
    return reference_mine(model_dir, ae_path, docs, layer=layer, features=features, ctx_len=ctx_len, prefix=prefix,
                          norm_filter=norm_filter, dedupe=dedupe, top_k=top_k, example_len=max(ctx_len, 64))[0]


ASSISTANT = 3  # role code (README, "Roles")


@dataclass
class RefProjections:
    """Per document: scored tokens, and per direction the sum, max and min of the projection; per (document,
    assistant turn): tokens and sums; per fed window: each direction's max and min over its scored tokens."""

    documents: dict[int, tuple[int, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    turns: dict[tuple[int, int], tuple[int, np.ndarray]] = field(default_factory=dict)
    windows: list[tuple[int, int, np.ndarray, np.ndarray]] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)  # every scored token's projections


@torch.no_grad()
def reference_projections(model_dir: Path, units: np.ndarray, docs: list[RefDoc], *, layer: int, ctx_len: int,
                          prefix: list[int], stride: int | None = None, norm_filter: float = 10.0,
                          score_roles: tuple[int, ...] = CONTENT_ROLES) -> RefProjections:
    """Every window alone through the full model (``output_hidden_states``); each scored token's projection
    ``h . u`` on the unit vectors ``units`` [n, hidden], in float64."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    special = set(tok.all_special_ids) | set(prefix) | {tok.pad_token_id}
    u = torch.from_numpy(np.asarray(units, np.float64))
    out = RefProjections()
    for doc in docs:
        roles_all = doc.roles if doc.roles is not None else [TEXT] * len(doc.ids)
        turn_of, turn = [], -1
        for i, r in enumerate(roles_all):  # the k-th run of assistant tokens is assistant turn k
            if r == ASSISTANT and (i == 0 or roles_all[i - 1] != ASSISTANT):
                turn += 1
            turn_of.append(turn if r == ASSISTANT else -1)
        n, total = 0, np.zeros(len(units))
        high, low = np.full(len(units), -np.inf), np.full(len(units), np.inf)
        for start, fed, roles, score_from in windows_of(doc, prefix, ctx_len, stride):
            h = model(torch.tensor([fed]), output_hidden_states=True).hidden_states[layer + 1][0]
            scored = scored_positions(h, fed, roles, score_from, special, score_roles, norm_filter)
            p = (h.double() @ u.T).numpy()
            rows = [i for i, s in enumerate(scored) if s]
            if not rows:
                continue
            block = p[rows]
            out.values.append(block)
            n += len(rows)
            total += block.sum(0)
            high, low = np.maximum(high, block.max(0)), np.minimum(low, block.min(0))
            out.windows.append((doc.index, start, block.max(0), block.min(0)))
            offset = start - (len(prefix) if not (doc.rendered and start == 0) else 0)
            for i in rows:
                t = turn_of[offset + i]
                if t >= 0:
                    k, s = out.turns.get((doc.index, t), (0, np.zeros(len(units))))
                    out.turns[(doc.index, t)] = (k + 1, s + p[i])
        if n:
            out.documents[doc.index] = (n, total, high, low)
    return out
