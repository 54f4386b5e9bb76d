"""In-process backend: one engine on one device, shards in schedule order."""

from __future__ import annotations

from collections.abc import Callable

from personamine.cluster.backend import Backend
from personamine.config import MineConfig
from personamine.saes import PreflightResult
from personamine.shards.plan import Schedule, Shard
from personamine.shards.preflight import preflight_engine
from personamine.shards.readouts import ReadoutSpec
from personamine.shards.run import MiningEngine, ShardResult, run_shard


class LocalBackend(Backend):
    def __init__(self, config: MineConfig, readouts: list[ReadoutSpec]) -> None:
        super().__init__(config, readouts)
        self.engine: MiningEngine | None = None

    def start(self) -> None:
        """Nothing to start: the engine loads on the first shard (a resumed, finished run needs none)."""

    def preflight(self, shards: list[Shard], n_tokens: int, min_fve: float) -> dict[str, PreflightResult]:
        self.engine = self.engine or MiningEngine(self.config, self.readouts)
        return preflight_engine(self.engine, shards, n_tokens, min_fve)

    def run(self, schedule: Schedule, on_result: Callable[[ShardResult], None],
            on_batch: Callable[[int, int, int], None]) -> None:
        while not schedule.finished():
            shard = schedule.next()
            if shard is None:  # nothing is in flight here, so an unfinished schedule always has a next shard
                raise RuntimeError("the schedule is not finished but has no shard to run")
            self.engine = self.engine or MiningEngine(self.config, self.readouts)
            on_result(run_shard(self.engine, shard, on_batch=on_batch))

    def close(self) -> None:
        self.engine = None
