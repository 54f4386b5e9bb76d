"""The two exact encoders behind ``Sae.encoder`` (the contract: ``n_features``, ``chunks()``, ``iter_encode``,
``encode``; see ``personamine.saes``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from personamine.errors import PersonamineError

if TYPE_CHECKING:
    from personamine.saes.base import Sae


def _vector(tensor: torch.Tensor | None, index: torch.Tensor | slice) -> torch.Tensor | None:
    if tensor is None:
        return None
    part = tensor[index] if isinstance(index, slice) else tensor.index_select(0, index)
    return part.to(torch.float32)


class _Encoder:
    """Shared chunking of the two exact encoders."""

    features: np.ndarray
    chunk_size: int

    @property
    def n_features(self) -> int:
        return int(self.features.size)

    def chunks(self) -> list[tuple[int, int]]:
        n = self.n_features
        return [(start, min(start + self.chunk_size, n)) for start in range(0, n, self.chunk_size)]

    def iter_encode(self, x: torch.Tensor) -> Iterator[tuple[int, int, torch.Tensor]]:
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([acts for _, _, acts in self.iter_encode(x)], dim=-1)


class ElementwiseEncoder(_Encoder):
    """relu / jumprelu / gated: only the chosen features' rows are read (from the mapped file), exactly."""

    def __init__(self, sae: Sae, features: np.ndarray, device: torch.device, chunk_size: int,
                 resident: bool) -> None:
        self.sae, self.features, self.device, self.chunk_size = sae, features, device, chunk_size
        self.index = torch.from_numpy(features)
        self.resident = resident
        self._cache = self._params(slice(None)) if resident else None

    def _params(self, part: slice) -> dict[str, torch.Tensor | None]:
        sae, index = self.sae, self.index[part]
        rows = sae.enc.rows(index)
        out: dict[str, torch.Tensor | None] = {"weight": rows, "bias": _vector(sae.b_enc, index)}
        rule = sae.rule
        if rule.activation == "jumprelu":
            t = sae.threshold.float()
            if rule.score_norm:
                out["threshold"] = t if t.dim() == 0 else t.index_select(0, index)
                out["norm"] = sae.score_norms(index)
            else:
                # relu(z) * (z > t) is z where z > max(t, 0), else 0 (a float32 threshold round-trips a float).
                out["floor"] = t.clamp(min=0) if t.dim() == 0 else t.index_select(0, index).clamp(min=0)
        elif rule.activation == "gated":
            out["gate_bias"] = _vector(sae.b_gate, index)
            out["mag_weight"] = rows * _vector(sae.r_mag, index).exp()[:, None]
            out["mag_bias"] = _vector(sae.b_mag, index)
        return {k: (v.to(self.device) if v is not None else None) for k, v in out.items()}

    @property
    def nbytes(self) -> int:
        """Bytes the encoder keeps on its device (0 when rows are read chunk by chunk)."""
        return sum(v.numel() * v.element_size() for v in (self._cache or {}).values() if v is not None)

    def _chunk(self, start: int, end: int) -> dict[str, torch.Tensor | None]:
        if self._cache is None:
            return self._params(slice(start, end))
        return {k: (v if v is None or v.dim() == 0 else v[start:end]) for k, v in self._cache.items()}

    def iter_encode(self, x: torch.Tensor) -> Iterator[tuple[int, int, torch.Tensor]]:
        s = self.sae.prepare(x)
        activation = self.sae.rule.activation
        for start, end in self.chunks():
            p = self._chunk(start, end)
            pre = torch.nn.functional.linear(s, p["weight"], p["bias"])
            # No local keeps a chunk alive while the next is computed: one chunk in memory at a time.
            if activation == "relu":
                yield start, end, pre.relu_()
            elif activation == "jumprelu" and "floor" in p:
                floor = p["floor"]
                if floor.dim() == 0:
                    yield start, end, torch.nn.functional.threshold_(pre, float(floor), 0.0)
                else:
                    yield start, end, pre.masked_fill_(pre <= floor, 0.0)
            elif activation == "jumprelu":
                keep = (pre * p["norm"] > p["threshold"]) & (pre > 0)
                yield start, end, pre.masked_fill_(~keep, 0.0)
            else:  # gated
                gate = torch.nn.functional.linear(s, p["weight"], p["gate_bias"]) > 0
                mag = torch.nn.functional.linear(s, p["mag_weight"], p["mag_bias"]).relu_()
                yield start, end, mag.masked_fill_(~gate, 0.0)


class ExactTopKEncoder(_Encoder):
    """Exact codes of a TopK SAE for any subset of features, in bounded memory.

    Each batch is encoded against every feature, chunk by chunk, keeping only each token's k largest scores so far
    ([N, k] values and feature ids); the chosen features' codes are then the token's top-k values placed at their
    columns. Memory: one [N, chunk] block plus [N, 2k]; cost: a full encoder pass per batch whatever the number of
    chosen features, plus a top-k merge per chunk.
    """

    def __init__(self, sae: Sae, features: np.ndarray, device: torch.device, chunk_size: int,
                 resident: bool) -> None:
        self.sae, self.features, self.device, self.chunk_size = sae, features, device, chunk_size
        self.k = int(sae.rule.k)
        if not 0 < self.k <= sae.d_sae:
            raise PersonamineError(f"SAE {sae.meta.source}: k={self.k} is not between 1 and {sae.d_sae}")
        position = torch.full((sae.d_sae,), -1, dtype=torch.int64)
        position[torch.from_numpy(features)] = torch.arange(features.size)
        self.position = position.to(device)
        self.resident = resident
        self._blocks = [self._block(lo, hi) for lo, hi in self._spans()] if resident else None

    @property
    def nbytes(self) -> int:
        """Bytes the encoder keeps on its device (0 when rows are read chunk by chunk)."""
        return sum(t.numel() * t.element_size() for block in (self._blocks or []) for t in block if t is not None)

    def _spans(self) -> list[tuple[int, int]]:
        n = self.sae.d_sae
        return [(lo, min(lo + self.chunk_size, n)) for lo in range(0, n, self.chunk_size)]

    def _block(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        part = slice(lo, hi)
        norm = self.sae.score_norms(part).to(self.device) if self.sae.rule.score_norm else None
        bias = _vector(self.sae.b_enc, part)
        return self.sae.enc.rows(part).to(self.device), bias.to(self.device) if bias is not None else None, norm

    def top_k(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each token's k largest scores (relu'd) and their feature ids, [N, k] each."""
        s = self.sae.prepare(x)
        values = ids = None
        for i, (lo, hi) in enumerate(self._spans()):
            weight, bias, norm = self._blocks[i] if self._blocks is not None else self._block(lo, hi)
            score = torch.nn.functional.linear(s, weight, bias)
            if norm is not None:
                score = score * norm
            chunk_ids = torch.arange(lo, hi, device=score.device).expand_as(score)
            if values is not None:
                score = torch.cat([values, score], dim=1)
                chunk_ids = torch.cat([ids, chunk_ids], dim=1)
            best = min(self.k, score.shape[1])
            values, where = score.topk(best, dim=1, sorted=False)
            ids = chunk_ids.gather(1, where)
        return values.relu_(), ids

    def iter_encode(self, x: torch.Tensor) -> Iterator[tuple[int, int, torch.Tensor]]:
        values, ids = self.top_k(x)
        column = self.position[ids]  # [N, k]: where each top feature sits among the chosen ones, -1 if not chosen
        for start, end in self.chunks():
            acts = torch.zeros(x.shape[0], end - start, dtype=torch.float32, device=values.device)
            row, slot = ((column >= start) & (column < end)).nonzero(as_tuple=True)
            acts[row, column[row, slot] - start] = values[row, slot]
            yield start, end, acts
