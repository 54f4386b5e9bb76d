"""What a backend runs on each shard of work: a ``ShardTask`` names the engine a worker builds once and the one
per-shard function every backend calls with it, so a local run and a Ray run compute the same thing by construction.
Mining (``MiningTask``: ``shards.run.run_shard``) and screening (``ScreeningTask``: ``shards.screen.run_screen_shard``)
are the two; a task is pickled to each Ray actor, so it holds only its config and arrays."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np

from personamine.config import MineConfig, ScreenConfig
from personamine.saes import PreflightResult
from personamine.shards.plan import Shard
from personamine.shards.preflight import preflight_engine
from personamine.shards.readouts import ReadoutSpec
from personamine.shards.run import MiningEngine, ShardResult, run_shard
from personamine.shards.screen import ScreenEngine, ScreenResult, run_screen_shard

OnBatch = Callable[[int, int, int], None]


class ShardTask(ABC):
    """``engine()`` is built once per worker; ``run`` computes one shard's result (it has ``shard`` and
    ``coverage``, what the schedule records); ``counts`` is what a finished result reports to ``on_batch`` when the
    worker's own batches are not seen (Ray)."""

    config: Any

    @abstractmethod
    def engine(self) -> Any: ...

    @abstractmethod
    def run(self, engine: Any, shard: Shard, on_batch: OnBatch | None) -> Any: ...

    @abstractmethod
    def counts(self, result: Any) -> tuple[int, int, int]: ...

    def preflight(self, engine: Any, shards: list[Shard], n_tokens: int,
                  min_fve: float) -> dict[str, PreflightResult]:
        """Checks on the first shards before the run, by readout (empty: this task has none)."""
        return {}

    @staticmethod
    def device(engine: Any) -> str:
        return str(engine.device)


class MiningTask(ShardTask):
    def __init__(self, config: MineConfig, readouts: list[ReadoutSpec]) -> None:
        self.config, self.readouts = config, readouts

    def engine(self) -> MiningEngine:
        return MiningEngine(self.config, self.readouts)

    def run(self, engine: MiningEngine, shard: Shard, on_batch: OnBatch | None) -> ShardResult:
        return run_shard(engine, shard, on_batch=on_batch)

    def counts(self, result: ShardResult) -> tuple[int, int, int]:
        counters = result.stats.counters
        return counters["tokens_fed"], sum(u.tokens for u in result.coverage.units), counters["tokens_scored"]

    def preflight(self, engine: MiningEngine, shards: list[Shard], n_tokens: int,
                  min_fve: float) -> dict[str, PreflightResult]:
        return preflight_engine(engine, shards, n_tokens, min_fve)


class ScreeningTask(ShardTask):
    def __init__(self, config: ScreenConfig, units: np.ndarray) -> None:
        self.config, self.units = config, units

    def engine(self) -> ScreenEngine:
        return ScreenEngine(self.config, self.units)

    def run(self, engine: ScreenEngine, shard: Shard, on_batch: OnBatch | None) -> ScreenResult:
        return run_screen_shard(engine, shard, on_batch=on_batch)

    def counts(self, result: ScreenResult) -> tuple[int, int, int]:
        return (result.counters["n_samples"], result.counters["tokens_generated"],
                sum(u.rows for u in result.coverage.units))
