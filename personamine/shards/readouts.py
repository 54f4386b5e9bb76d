"""What a mining run reads off the residual stream: its readouts, each at one layer, all from one forward.

A readout is an SAE with the features it mines (the classic run), or a set of directions in the residual stream
(persona vectors, the Assistant axis, probes), read as projections. The model runs once per batch, to the deepest
readout's layer; each readout encodes its own layer's residual, with the sink guard and the norm filter applied per
layer, exactly as a run of that readout alone would. A readout's results are therefore the same, byte for byte, as
its single run's (``tests/shards/test_readouts.py`` holds this against single runs).

A directions readout's value at a token is the signed projection ``h . v_hat`` (minus the direction's reference
``mean`` with ``center_directions``). It is mined as two nonnegative channels per direction, so the top-k buffers,
interval samples, histograms and exact sums serve both tails unchanged: channel ``i`` is ``max(0, p_i)`` (its top
windows are where the direction reads highest) and channel ``n + i`` is ``max(0, -p_i)`` (its top windows are the
bottom tail). A window's stored per-token values are that channel's: the positive (or negated negative) part of the
projection. The signed statistics follow exactly: the sum is ``sum(i) - sum(n + i)``, the maximum ``max(i)``, the
minimum ``-max(n + i)``, and the signed histogram is channel ``n + i``'s mirrored, the zeros, then channel ``i``'s.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from personamine.config import MineConfig
from personamine.files.directions import NamedDirection
from personamine.merge.documents import DocumentScores


@dataclass(frozen=True)
class ReadoutSpec:
    """One readout, as the driver plans it and ships it to the workers (plain data: picklable for Ray)."""

    name: str  # "L15" for an SAE, "directions-L15" for directions; the output file's suffix
    layer: int
    config: MineConfig  # for an SAE: the config its single run would have; for directions: the run's, at ``layer``
    features: np.ndarray  # SAE feature ids mined, or the channel ids 0 .. 2n-1 of n directions
    directions: tuple[NamedDirection, ...] = ()  # set for a directions readout
    document_scores: bool = False  # keep each channel's per-document mean and max (directions: always)

    @property
    def kind(self) -> str:
        return "directions" if self.directions else "sae"

    @property
    def channel_names(self) -> list[str]:
        """Directions: each channel's name, ``name`` for the positive part and ``name (-)`` for the negative."""
        names = [d.name for d in self.directions]
        return names + [f"{n} (-)" for n in names]


class DirectionEncoder:
    """The encoder contract (``n_features``, ``features``, ``chunks``, ``iter_encode``) for directions: each block
    is ``[relu(p), relu(-p)]`` of the projections ``p = x @ v_hat.T - mean`` [P, n], in float32."""

    def __init__(self, directions: tuple[NamedDirection, ...], *, center: bool, device: torch.device) -> None:
        units = np.stack([d.unit for d in directions]).astype(np.float32)  # [n, hidden]
        self.n_directions = len(directions)
        self.units = torch.from_numpy(units).to(device)
        means = [d.mean if center and d.mean is not None else 0.0 for d in directions]
        self.means = torch.tensor(means, dtype=torch.float32, device=device)
        self.features = np.arange(2 * self.n_directions, dtype=np.int64)
        self.n_features = self.features.size

    def chunks(self) -> Iterator[tuple[int, int]]:
        yield 0, self.n_features

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """[P, n] signed projections of the rows of ``x`` [P, hidden]."""
        return x.float() @ self.units.T - self.means

    def split(self, projection: torch.Tensor) -> torch.Tensor:
        """[P, 2n]: the positive and the negative parts of ``projection``."""
        return torch.cat([projection.clamp(min=0), (-projection).clamp(min=0)], dim=1)

    def iter_encode(self, x: torch.Tensor) -> Iterator[tuple[int, int, torch.Tensor]]:
        yield 0, self.n_features, self.split(self.project(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.split(self.project(x))


class DocumentScorer:
    """Builds a shard's ``DocumentScores`` batch by batch: per-batch sums on the device, folded on the host into
    running per-document rows (a document's windows may span batches)."""

    def __init__(self, n_channels: int) -> None:
        self.n_channels = n_channels
        self.rows: dict[int, list] = {}  # uid -> [n, total f64[C], max f32[C], min f32[C]]
        self.turns: dict[tuple[int, int], list] = {}  # (uid, turn) -> [n, total f64[C]]

    def add(self, document: torch.Tensor, turn: torch.Tensor | None, values: torch.Tensor, start: int = 0) -> None:
        """``document`` [P] uids, ``turn`` [P] (-1: not in an assistant turn) and ``values`` [P, c] (channels
        ``start`` .. ``start + c``; a batch's chunks come in order from 0) of a batch's scored tokens, in the batch's
        row-major order."""
        if document.numel() == 0:
            return
        # On the host: the float64 sums then run in one fixed order on any device (CUDA's index_add_ does not)
        document, values = document.cpu(), values.float().cpu()
        turn = None if turn is None else turn.cpu()
        end = start + values.shape[1]
        uids, inverse = torch.unique(document, return_inverse=True)
        total, count = _segment_sums(inverse, uids.numel(), values)
        index = inverse[:, None].expand(-1, values.shape[1])
        high = torch.full((uids.numel(), values.shape[1]), -torch.inf).scatter_reduce(0, index, values, "amax")
        low = torch.full((uids.numel(), values.shape[1]), torch.inf).scatter_reduce(0, index, values, "amin")
        for uid, n, t, hi, lo in zip(uids.tolist(), count.tolist(), total.numpy(), high.numpy(), low.numpy(),
                                     strict=True):
            row = self.rows.get(uid)
            if row is None:
                c = self.n_channels
                row = self.rows[uid] = [0, np.zeros(c), np.full(c, -np.inf, np.float32), np.full(c, np.inf, np.float32)]
            if start == 0:
                row[0] += n
            row[1][start:end] += t
            np.maximum(row[2][start:end], hi, out=row[2][start:end])
            np.minimum(row[3][start:end], lo, out=row[3][start:end])
        if turn is None or not bool((turn >= 0).any()):
            return
        keep = turn >= 0
        key = document[keep] * 65536 + turn[keep]  # < 2**16 assistant turns per conversation
        keys, inverse = torch.unique(key, return_inverse=True)
        total, count = _segment_sums(inverse, keys.numel(), values[keep])
        for k, n, t in zip(keys.tolist(), count.tolist(), total.numpy(), strict=True):
            cell = (k >> 16, k & 0xFFFF)
            row = self.turns.get(cell)
            if row is None:
                row = self.turns[cell] = [0, np.zeros(self.n_channels)]
            if start == 0:
                row[0] += n
            row[1][start:end] += t

    def result(self) -> DocumentScores:
        c = self.n_channels
        uids = sorted(self.rows)
        cells = sorted(self.turns)
        rows = [self.rows[u] for u in uids]
        turns = [self.turns[k] for k in cells]
        return DocumentScores(
            np.array(uids, np.int64), np.array([r[0] for r in rows], np.int64),
            np.array([r[1] for r in rows], np.float64).reshape(-1, c),
            np.array([r[2] for r in rows], np.float32).reshape(-1, c),
            np.array([r[3] for r in rows], np.float32).reshape(-1, c),
            np.array([k[0] for k in cells], np.int64), np.array([k[1] for k in cells], np.int64),
            np.array([t[0] for t in turns], np.int64), np.array([t[1] for t in turns], np.float64).reshape(-1, c))


def _segment_sums(inverse: torch.Tensor, n: int, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per segment (``inverse`` gives each row's), the float64 sum of its rows of ``values`` and its row count."""
    total = torch.zeros(n, values.shape[1], dtype=torch.float64).index_add_(0, inverse, values.double())
    return total, torch.bincount(inverse, minlength=n)
