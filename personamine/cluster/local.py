"""In-process backend: one engine (the task's) on one device, shards in schedule order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from personamine.cluster.backend import Backend
from personamine.cluster.tasks import ShardTask
from personamine.config import MineConfig, ScreenConfig
from personamine.saes import PreflightResult
from personamine.shards.plan import Schedule, Shard
from personamine.shards.readouts import ReadoutSpec


class LocalBackend(Backend):
    def __init__(self, config: MineConfig | ScreenConfig, readouts: list[ReadoutSpec] | None = None,
                 task: ShardTask | None = None) -> None:
        super().__init__(config, readouts, task)
        self.engine: Any = None

    def start(self) -> None:
        """Nothing to start: the engine loads on the first shard (a resumed, finished run needs none)."""

    def preflight(self, shards: list[Shard], n_tokens: int, min_fve: float) -> dict[str, PreflightResult]:
        self.engine = self.engine or self.task.engine()
        return self.task.preflight(self.engine, shards, n_tokens, min_fve)

    def run(self, schedule: Schedule, on_result: Callable[[Any], None],
            on_batch: Callable[[int, int, int], None]) -> None:
        while not schedule.finished():
            shard = schedule.next()
            if shard is None:  # nothing is in flight here, so an unfinished schedule always has a next shard
                raise RuntimeError("the schedule is not finished but has no shard to run")
            self.engine = self.engine or self.task.engine()
            on_result(self.task.run(self.engine, shard, on_batch))

    def close(self) -> None:
        self.engine = None
