"""Documents → fixed-length token windows, each fed to the model as a fresh text.

A document is tokenized whole (no truncation, no special tokens; special-token strings inside the text are
tokenized as plain text). Its tokens are cut into consecutive chunks of ``ctx_len - len(prefix)`` content tokens;
each window is ``prefix + chunk``, where the prefix is the tokenizer's own BOS when it adds one, else two special
tokens, a document separator then BOS (NOTES §4: the first fed position is an attention sink, and one non-BOS
prefix token often makes the next token a second one). The last chunk of a document may be shorter; short windows
share a row of the batch, each attending only to itself from position 0, so the model sees exactly what it would
see for that window alone. So every content token is scored exactly once, never at position 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from personamine.errors import PersonamineError
from personamine.merge.entries import TOKEN_FILL, WindowTable
from personamine.model.capture import capture_residual


@dataclass
class Window:
    document: int
    start: int  # offset of the first content token within the document's tokens
    tokens: np.ndarray  # int32, prefix + content


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
    content: torch.Tensor  # [W, T] bool: real tokens after the prefix
    special: torch.Tensor  # [W, T] bool: content tokens whose id is a special token
    windows: WindowTable  # [W] identities and tokens (width ctx_len), built here so the prefetch thread pays for it


def sink_prefix_ids(tokenizer, sink_prefix: list[str] | None = None) -> list[int]:
    """Token ids every window starts with; never scored."""
    if sink_prefix:
        ids = tokenizer.convert_tokens_to_ids(list(sink_prefix))
        unknown = [t for t, i in zip(sink_prefix, ids, strict=True) if i is None or i == tokenizer.unk_token_id]
        if unknown:
            raise PersonamineError(f"sink_prefix token(s) not in the vocabulary: {', '.join(unknown)}")
        return [int(i) for i in ids]
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    added = with_special[: len(with_special) - len(plain)] if with_special[-len(plain):] == plain else []
    if added:
        return [int(i) for i in added]
    # Measured on SmolLM2 (NOTES §4): a document separator then BOS (`<|endoftext|><|im_start|>`, its unk and bos)
    # keeps every content token at a normal norm; after `<|im_end|>` (eos) the next token becomes a second sink.
    separator = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else tokenizer.eos_token_id
    ids = [int(i) for i in dict.fromkeys(i for i in (separator, tokenizer.bos_token_id) if i is not None)]
    if not ids:
        raise PersonamineError("the tokenizer adds no BOS and has no bos/eos token: set sink_prefix")
    return ids


def special_token_ids(tokenizer, prefix: list[int]) -> np.ndarray:
    ids = set(tokenizer.all_special_ids) | set(prefix)
    if tokenizer.pad_token_id is not None:
        ids.add(tokenizer.pad_token_id)
    return np.array(sorted(ids), dtype=np.int64)


def tokenize(tokenizer, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    return tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def cut_windows(document: int, ids: list[int], prefix: list[int], ctx_len: int) -> Iterator[Window]:
    step = ctx_len - len(prefix)
    if step < 1:
        raise PersonamineError(f"ctx_len {ctx_len} leaves no room after the {len(prefix)}-token sink prefix")
    head = np.asarray(prefix, dtype=np.int32)
    body = np.asarray(ids, dtype=np.int32)
    for start in range(0, body.size, step):
        yield Window(document, start, np.concatenate([head, body[start:start + step]]))


def build_batch(rows: list[list[Window]], *, prefix_len: int, ctx_len: int, pad_id: int,
                special_ids: np.ndarray, device: torch.device) -> WindowBatch:
    """Lay out ``rows`` (from :func:`pack_batches`) for the model, and each window's own [W, T] view."""

    windows = [w for row in rows for w in row]
    lengths = np.array([w.tokens.size for w in windows], dtype=np.int32)
    width = int(lengths.max())
    token_ids = np.full((len(windows), ctx_len), TOKEN_FILL, dtype=np.int32)
    for i, w in enumerate(windows):
        token_ids[i, : w.tokens.size] = w.tokens
    fed = token_ids[:, :width]
    real = fed != TOKEN_FILL
    positions = np.arange(width)[None, :]
    content = real & (positions >= prefix_len)
    special = content & np.isin(fed, special_ids)
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
    return WindowBatch(
        input_ids=torch.from_numpy(input_ids).to(device), position_ids=torch.from_numpy(position_ids).to(device),
        segment=None if segment is None else torch.from_numpy(segment).to(device),
        unpack=None if unpack is None else torch.from_numpy(unpack).to(device),
        real=torch.from_numpy(real).to(device),
        content=torch.from_numpy(content).to(device), special=torch.from_numpy(special).to(device),
        windows=WindowTable.build(np.array([w.document for w in windows], dtype=np.int64),
                                  np.array([w.start for w in windows], dtype=np.int64), lengths, token_ids),
    )


def capture_windows(model: torch.nn.Module, layer_module: torch.nn.Module, batch: WindowBatch) -> torch.Tensor:
    """The layer's residual stream for each window of ``batch``, [W, T, D]; positions past a window's end hold
    arbitrary values (``batch.real`` is False there)."""
    if batch.segment is None:
        return capture_residual(model, layer_module, batch.input_ids, batch.real.long(),
                                position_ids=batch.position_ids)
    seg = batch.segment
    row_len = seg.shape[1]
    causal = torch.ones(row_len, row_len, dtype=torch.bool, device=seg.device).tril()
    allowed = (seg[:, :, None] == seg[:, None, :]) & causal
    dtype = getattr(model, "dtype", torch.float32)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=seg.device).masked_fill_(~allowed, torch.finfo(dtype).min)
    hidden = capture_residual(model, layer_module, batch.input_ids, mask[:, None], position_ids=batch.position_ids)
    return hidden.reshape(-1, hidden.shape[-1])[batch.unpack]


def scored_tokens(hidden: torch.Tensor, batch: WindowBatch, norm_filter: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(scored, outlier) masks [W, T]: the tokens mining (and SAE training) score.

    Content tokens that are not special are eligible; an eligible token whose residual norm exceeds
    ``norm_filter`` times the median norm of the eligible tokens OF ITS OWN WINDOW is an outlier (NOTES §4), never a
    batch statistic, so results do not depend on batching. ``norm_filter <= 0`` disables the filter.
    """
    eligible = batch.content & ~batch.special
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
