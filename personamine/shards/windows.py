"""Documents → fixed-length token windows, each fed to the model as a fresh text.

A document is tokenized whole (no truncation, no special tokens; special-token strings inside the text are
tokenized as plain text). Its tokens are cut into consecutive chunks of ``ctx_len - len(prefix)`` content tokens;
each window is ``prefix + chunk``, where the prefix is the tokenizer's own BOS when it adds one, else two special
tokens, a document separator then BOS (NOTES §4: the first fed position is an attention sink, and one non-BOS
prefix token often makes the next token a second one). The last chunk of a document may be shorter; it is padded
in the batch and the padding is masked. So every content token is scored exactly once, never at position 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from personamine.errors import PersonamineError


@dataclass
class Window:
    document: int
    start: int  # offset of the first content token within the document's tokens
    tokens: np.ndarray  # int32, prefix + content


@dataclass
class WindowBatch:
    input_ids: torch.Tensor  # [B, T] int64
    attention_mask: torch.Tensor  # [B, T]
    content: torch.Tensor  # [B, T] bool: real tokens after the prefix
    special: torch.Tensor  # [B, T] bool: content tokens whose id is a special token
    document: np.ndarray  # [B] int64
    start: np.ndarray  # [B] int64
    length: np.ndarray  # [B] int32
    token_ids: np.ndarray  # [B, ctx_len] int32, TOKEN_FILL beyond length


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


def build_batch(windows: list[Window], *, prefix_len: int, ctx_len: int, pad_id: int,
                special_ids: np.ndarray, device: torch.device) -> WindowBatch:
    from personamine.merge.topk import TOKEN_FILL

    lengths = np.array([w.tokens.size for w in windows], dtype=np.int32)
    width = int(lengths.max())
    token_ids = np.full((len(windows), ctx_len), TOKEN_FILL, dtype=np.int32)
    for row, w in enumerate(windows):
        token_ids[row, : w.tokens.size] = w.tokens
    fed = token_ids[:, :width]
    real = fed != TOKEN_FILL
    positions = np.arange(width)[None, :]
    content = real & (positions >= prefix_len)
    special = content & np.isin(fed, special_ids)
    input_ids = np.where(real, fed, pad_id).astype(np.int64)
    return WindowBatch(
        input_ids=torch.from_numpy(input_ids).to(device),
        attention_mask=torch.from_numpy(real.astype(np.int64)).to(device),
        content=torch.from_numpy(content).to(device), special=torch.from_numpy(special).to(device),
        document=np.array([w.document for w in windows], dtype=np.int64),
        start=np.array([w.start for w in windows], dtype=np.int64), length=lengths, token_ids=token_ids,
    )


def pack_batches(windows: Iterable[Window], batch_tokens: int, pool_batches: int = 4) -> Iterator[list[Window]]:
    """Group windows into batches of at most ``batch_tokens`` padded tokens.

    Windows are pooled a few batches at a time and sorted by length inside the pool, so the short last window of
    each document rides with others of its size instead of padding a full batch.
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


def _split_pool(pool: list[Window], batch_tokens: int) -> Iterator[list[Window]]:
    pool.sort(key=lambda w: -w.tokens.size)  # stable: equal lengths keep corpus order
    batch: list[Window] = []
    for window in pool:
        width = batch[0].tokens.size if batch else window.tokens.size
        if batch and (len(batch) + 1) * width > batch_tokens:
            yield batch
            batch = []
        batch.append(window)
    if batch:
        yield batch
