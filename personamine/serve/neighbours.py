"""A feature's nearest neighbours by decoder direction: the features whose decoder rows have the highest cosine
similarity with its own, among all of the SAE's features.

The unit decoder directions are computed once, on first use, on a thread of their own (so no page waits for
them), and kept: ``d_sae x d_in`` float32 values (2 GiB for a 131,072 x 4,096 SAE; 9 MB for the demo's
4,096 x 576), on the GPU when the SAE is used there. A feature's neighbours then cost one matrix-vector product, and
are cached.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from personamine.errors import one_line

if TYPE_CHECKING:
    import torch

    from personamine.saes.base import Sae

N_NEIGHBOURS = 12
_CHUNK_FEATURES = 8192  # decoder rows normalised at a time (bounds the transient float32 copy)
_CACHED = 4096


@dataclass
class NeighbourList:
    ready: bool
    note: str  # why there are none (still computing, no SAE), or where they come from
    neighbours: list[tuple[int, float]]  # (feature, cosine), most similar first


class DecoderNeighbours:
    """Cosine neighbours of one SAE's features; ``load`` gives the SAE (memory-mapped); ``device``: a run config's
    (auto: the GPU where there is one), resolved only when the directions are computed (torch loads then)."""

    def __init__(self, load: Callable[[], Sae], device: str = "auto") -> None:
        self._load, self._device = load, device
        self._lock = threading.Lock()
        self._future: Future | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._cache: OrderedDict[tuple[int, int], list[tuple[int, float]]] = OrderedDict()
        self.n_features = 0

    def start(self) -> Future:
        """Begin computing the unit directions (once); the future holds them, or the error that stopped it."""
        with self._lock:
            if self._future is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="personamine-neighbours")
                self._future = self._executor.submit(self._directions)
            return self._future

    def _directions(self) -> torch.Tensor:
        import torch

        from personamine.model.loading import pick_device

        device = pick_device(self._device)
        sae = self._load()
        n = sae.d_sae
        out = torch.empty(n, sae.d_in, dtype=torch.float32, device=device)
        for lo in range(0, n, _CHUNK_FEATURES):
            rows = sae.decoder_directions(np.arange(lo, min(lo + _CHUNK_FEATURES, n))).to(device)
            # A zero row (a dead feature's decoder) stays zero: its cosine with anything is 0.
            out[lo:lo + rows.shape[0]] = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.n_features = n
        return out

    def of(self, feature: int, n: int = N_NEIGHBOURS, wait: float = 2.0) -> NeighbourList:
        """The ``n`` features nearest to ``feature``; waits up to ``wait`` seconds for the directions the first time
        (a page then says they are still being computed)."""
        future = self.start()
        try:
            directions = future.result(timeout=wait)
        except FutureTimeout:
            return NeighbourList(False, "the SAE's decoder directions are still being computed: reload in a moment",
                                 [])
        except Exception as exc:  # any failure to load the SAE: the page says so, in one line
            return NeighbourList(False, f"no neighbours: the SAE could not be loaded ({one_line(str(exc))})", [])
        if not 0 <= feature < directions.shape[0]:
            return NeighbourList(False, f"feature {feature} is not in the SAE ({directions.shape[0]} features)", [])
        key = (feature, n)
        with self._lock:
            cached = self._cache.get(key)
        if cached is None:
            import torch

            with torch.inference_mode():
                cosine = directions @ directions[feature]
                cosine[feature] = -np.inf  # not its own neighbour
                values, ids = cosine.topk(min(n, directions.shape[0] - 1))
            cached = [(int(i), float(v)) for i, v in zip(ids.tolist(), values.tolist(), strict=True)]
            with self._lock:
                self._cache[key] = cached
                if len(self._cache) > _CACHED:
                    self._cache.popitem(last=False)
        return NeighbourList(True, f"by the cosine of decoder directions, among the SAE's {directions.shape[0]:,} "
                             "features", cached)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
