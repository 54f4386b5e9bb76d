"""Documents -> token windows with real preceding context -> packed batches, and which of their tokens are scored.

A document's tokens (a text tokenized whole, with no special tokens added and special-token strings inside it
tokenized as plain text; or a conversation rendered with the chat template, see ``corpus.conversations``) are fed in
windows of at most ``ctx_len`` positions, each starting with a sink prefix (the first fed position is an
attention sink, and one non-BOS prefix token often makes the next token a second one):

- window 0 is ``prefix + tokens[0 : ctx_len - p]`` (a conversation brings its own BOS or template start, so it is
  fed as rendered, with no prefix: ``tokens[0 : ctx_len]``) and scores all of its document tokens;
- window j >= 1 scores the next ``stride`` tokens ``tokens[s : s + stride]`` and is fed with the
  ``ctx_len - p - stride`` tokens before them as context: ``prefix + tokens[s - (ctx_len - p - stride) : s + stride]``.

With ``C = ctx_len - p``, ``S = stride`` and ``F`` the tokens window 0 holds (``C``; ``ctx_len`` for a conversation),
window j >= 1 scores from ``s = F + (j - 1) S`` and starts (``Window.start``, the output's ``window_start``) at
``s - (C - S)``: ``j S`` for a text, ``j S + p`` for a conversation.

So every document token is scored exactly once, with at least ``ctx_len - p - stride`` real tokens before it (or the
document's start). ``stride`` defaults to ``ctx_len - p``: no overlap, each window a fresh text after the prefix.
Short windows share a row of the batch, each attending only to itself from position 0, so the model sees exactly
what it would see for that window alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from personamine.errors import PersonamineError
from personamine.merge.entries import TOKEN_FILL, WindowTable
from personamine.model.capture import capture_layers
from personamine.roles import CONTENT_ROLES, NO_ROLE, ROLE


@dataclass
class Document:
    uid: int  # the document's identity in the run (see shards.documents)
    ids: list[int]
    roles: np.ndarray | None = None  # int8 per token (None: all plain text)
    rendered: bool = False  # a chat rendering, which starts with its own BOS: window 0 gets no sink prefix


@dataclass
class Window:
    document: int
    start: int  # offset of the first fed document token within the document's tokens
    tokens: np.ndarray  # int32, prefix + document tokens
    roles: np.ndarray  # int8, the prefix's positions are ROLE["prefix"]
    score_from: int  # fed position where the scored tokens begin (after the prefix and any context)
    turns: np.ndarray | None = None  # int32 per fed position: the assistant turn it belongs to (0 = first), else -1


@dataclass
class WindowBatch:
    # What the model is fed: R rows of L positions. A row holds one window (right-padded; segment and unpack are
    # None when every row does) or several packed ones.
    input_ids: torch.Tensor  # [R, L] int64
    position_ids: torch.Tensor  # [R, L] int64, from 0 in each window
    segment: torch.Tensor | None  # [R, L] int64: the window each position belongs to, -1 for padding
    unpack: torch.Tensor | None  # [W, T] int64: flat index into R * L of each window's positions
    # Each window's own view, W windows of up to T positions:
    real: torch.Tensor  # [W, T] bool: the window's tokens (not padding)
    region: torch.Tensor  # [W, T] bool: real tokens the window scores (after its prefix and context)
    special: torch.Tensor  # [W, T] bool: region tokens whose id is a special token
    role_ok: torch.Tensor  # [W, T] bool: region tokens of a role the run scores
    roles: torch.Tensor  # [W, T] int64: each position's role (NO_ROLE past the window)
    windows: WindowTable  # [W] identities, tokens and roles (width ctx_len), built here so the prefetch thread pays
    turns: torch.Tensor | None = None  # [W, T] int64: each position's assistant turn, -1 outside one (conversations)


def cut_windows(doc: Document, prefix: list[int], ctx_len: int, stride: int | None = None) -> Iterator[Window]:
    """The document's windows (see the module docstring); ``stride=None`` means no overlap."""
    capacity = ctx_len - len(prefix)
    if capacity < 1:
        raise PersonamineError(f"ctx_len {ctx_len} leaves no room after the {len(prefix)}-token sink prefix")
    step = capacity if stride is None else stride
    if not 1 <= step <= capacity:
        raise PersonamineError(f"stride must be between 1 and ctx_len - {len(prefix)} (the sink prefix) = "
                               f"{capacity}, got {stride}")
    body = np.asarray(doc.ids, dtype=np.int32)
    roles = np.full(body.size, ROLE["text"], np.int8) if doc.roles is None else np.asarray(doc.roles, np.int8)
    head = np.asarray(prefix, dtype=np.int32)
    head_roles = np.full(head.size, ROLE["prefix"], np.int8)
    if body.size == 0:
        return
    turns = head_turns = None
    if doc.roles is not None:
        turns = assistant_turns(roles)
        head_turns = np.full(head.size, -1, np.int32)
    first = ctx_len if doc.rendered else capacity
    if doc.rendered:
        yield Window(doc.uid, 0, body[:first].copy(), roles[:first].copy(), 0,
                     None if turns is None else turns[:first].copy())
    else:
        yield Window(doc.uid, 0, np.concatenate([head, body[:first]]), np.concatenate([head_roles, roles[:first]]),
                     head.size, None if turns is None else np.concatenate([head_turns, turns[:first]]))
    context = capacity - step
    for s in range(first, body.size, step):
        lo = max(0, s - context)
        yield Window(doc.uid, lo, np.concatenate([head, body[lo:s + step]]),
                     np.concatenate([head_roles, roles[lo:s + step]]), head.size + s - lo,
                     None if turns is None else np.concatenate([head_turns, turns[lo:s + step]]))


def assistant_turns(roles: np.ndarray, after_assistant: bool = False, turns_before: int = 0) -> np.ndarray:
    """int32 per token: which assistant turn of the document it belongs to (0 = the first run of assistant tokens),
    -1 for every other token. For a later piece of a document: ``after_assistant`` says the token before it was an
    assistant token, ``turns_before`` how many turns began before it."""
    assistant = roles == ROLE["assistant"]
    starts = assistant & ~np.concatenate([[after_assistant], assistant[:-1]])
    return np.where(assistant, turns_before + np.cumsum(starts) - 1, -1).astype(np.int32)


def build_batch(rows: list[list[Window]], *, ctx_len: int, pad_id: int, special_ids: np.ndarray,
                device: torch.device, score_roles: np.ndarray | None = None) -> WindowBatch:
    """Lay out ``rows`` (from :func:`pack_batches`) for the model, and each window's own [W, T] view.

    ``score_roles``: role codes the run scores (default: every content role)."""
    windows = [w for row in rows for w in row]
    lengths = np.array([w.tokens.size for w in windows], dtype=np.int32)
    width = int(lengths.max())
    token_ids = np.full((len(windows), ctx_len), TOKEN_FILL, dtype=np.int32)
    roles = np.full((len(windows), ctx_len), NO_ROLE, dtype=np.int8)
    turns = np.full((len(windows), ctx_len), -1, dtype=np.int64) if any(w.turns is not None for w in windows) \
        else None
    for i, w in enumerate(windows):
        token_ids[i, : w.tokens.size] = w.tokens
        roles[i, : w.tokens.size] = w.roles
        if turns is not None and w.turns is not None:
            turns[i, : w.tokens.size] = w.turns
    fed, fed_roles = token_ids[:, :width], roles[:, :width]
    real = fed != TOKEN_FILL
    positions = np.arange(width)[None, :]
    region = real & (positions >= np.array([w.score_from for w in windows])[:, None])
    special = region & np.isin(fed, special_ids)
    wanted = np.array([ROLE[r] for r in CONTENT_ROLES]) if score_roles is None else score_roles
    role_ok = region & np.isin(fed_roles, wanted)
    segment = unpack = None
    if len(rows) == len(windows):  # one window per row: plain right padding
        input_ids = np.where(real, fed, pad_id).astype(np.int64)
        position_ids = np.broadcast_to(positions, fed.shape).astype(np.int64)
    else:
        row_len = max(sum(w.tokens.size for w in row) for row in rows)
        input_ids = np.full((len(rows), row_len), pad_id, dtype=np.int64)
        position_ids = np.zeros((len(rows), row_len), dtype=np.int64)
        segment = np.full((len(rows), row_len), -1, dtype=np.int64)  # padding is a segment of its own
        unpack = np.zeros((len(windows), width), dtype=np.int64)
        i = 0
        for r, row in enumerate(rows):
            offset = 0
            for w in row:
                n = w.tokens.size
                input_ids[r, offset:offset + n] = w.tokens
                position_ids[r, offset:offset + n] = np.arange(n)
                segment[r, offset:offset + n] = i
                unpack[i, :n] = r * row_len + offset + np.arange(n)
                unpack[i, n:] = r * row_len + offset  # beyond the window: any valid index; never scored
                offset += n
                i += 1

    def dev(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(device)

    return WindowBatch(
        input_ids=dev(input_ids), position_ids=dev(position_ids),
        segment=None if segment is None else dev(segment), unpack=None if unpack is None else dev(unpack),
        real=dev(real), region=dev(region), special=dev(special), role_ok=dev(role_ok),
        roles=dev(fed_roles.astype(np.int64)),
        windows=WindowTable.build(np.array([w.document for w in windows], dtype=np.int64),
                                  np.array([w.start for w in windows], dtype=np.int64), lengths, token_ids, roles),
        turns=None if turns is None else dev(turns[:, :width]),
    )


def capture_windows(model: torch.nn.Module, layer_module: torch.nn.Module, batch: WindowBatch) -> torch.Tensor:
    """The layer's residual stream for each window of ``batch``, [W, T, D]; positions past a window's end hold
    arbitrary values (``batch.real`` is False there)."""
    return capture_windows_at(model, {0: layer_module}, batch)[0]


def capture_windows_at(model: torch.nn.Module, layer_modules: dict[int, torch.nn.Module],
                       batch: WindowBatch) -> dict[int, torch.Tensor]:
    """``capture_windows`` at several layers from one forward, stopping after the deepest: each key's [W, T, D]."""
    if batch.segment is None:
        return capture_layers(model, layer_modules, batch.input_ids, batch.real.long(),
                              position_ids=batch.position_ids)
    seg = batch.segment
    row_len = seg.shape[1]
    causal = torch.ones(row_len, row_len, dtype=torch.bool, device=seg.device).tril()
    allowed = (seg[:, :, None] == seg[:, None, :]) & causal
    dtype = getattr(model, "dtype", torch.float32)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=seg.device).masked_fill_(~allowed, torch.finfo(dtype).min)
    hidden = capture_layers(model, layer_modules, batch.input_ids, mask[:, None], position_ids=batch.position_ids)
    return {key: h.reshape(-1, h.shape[-1])[batch.unpack] for key, h in hidden.items()}


def scored_tokens(hidden: torch.Tensor, batch: WindowBatch, norm_filter: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(scored, outlier) masks [W, T]: the tokens mining (and SAE training) score.

    Tokens of the window's scored region, of a scored role, that are not special are eligible; an eligible token
    whose residual norm exceeds ``norm_filter`` times the lower median norm of the eligible tokens OF ITS OWN WINDOW
    is an outlier (massive activations, arXiv:2402.17762), never a batch statistic, so results do not depend on
    batching. ``norm_filter <= 0`` disables the filter.
    """
    eligible = batch.role_ok & ~batch.special
    if norm_filter <= 0:
        return eligible, torch.zeros_like(eligible)
    norms = hidden.float().norm(dim=-1)
    median = torch.where(eligible, norms, torch.nan).nanmedian(dim=1).values
    outlier = eligible & (norms > norm_filter * median[:, None])
    return eligible & ~outlier, outlier


def pack_batches(windows: Iterable[Window], batch_tokens: int, pool_batches: int = 4) -> Iterator[list[list[Window]]]:
    """Pack windows into rows, and rows into batches of at most ``batch_tokens`` fed positions.

    A row holds one full window, or several short ones (the last window of each document, short documents) that
    each attend only to themselves with their own positions, so a batch carries almost no padding. Windows are
    pooled a few batches at a time and packed best-fit, longest first.
    """
    pool: list[Window] = []
    pool_tokens = 0
    for window in windows:
        pool.append(window)
        pool_tokens += window.tokens.size
        if pool_tokens >= batch_tokens * pool_batches:
            yield from _split_pool(pool, batch_tokens)
            pool, pool_tokens = [], 0
    if pool:
        yield from _split_pool(pool, batch_tokens)


def _split_pool(pool: list[Window], batch_tokens: int) -> Iterator[list[list[Window]]]:
    pool.sort(key=lambda w: -w.tokens.size)  # stable: equal lengths keep corpus order
    row_len = pool[0].tokens.size
    rows: list[list[Window]] = []
    fill: list[int] = []
    by_room: list[list[int]] = [[] for _ in range(row_len + 1)]  # open rows by free positions
    for window in pool:
        n = window.tokens.size
        room = next((r for r in range(n, row_len) if by_room[r]), None)
        if room is None:
            rows.append([window])
            fill.append(n)
            row = len(rows) - 1
        else:
            row = by_room[room].pop(0)
            rows[row].append(window)
            fill[row] += n
        if fill[row] < row_len:
            by_room[row_len - fill[row]].append(row)
    order = sorted(range(len(rows)), key=lambda r: -fill[r])  # stable
    batch: list[list[Window]] = []
    width = 0  # the batch's first row is its fullest
    for r in order:
        if batch and (len(batch) + 1) * width > batch_tokens:
            yield batch
            batch = []
        if not batch:
            width = fill[r]
        batch.append(rows[r])
    if batch:
        yield batch
