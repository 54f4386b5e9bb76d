"""The backend interface: where the shards of a run (mining or screening) execute. Every backend runs its task's one
per-shard function (``tasks.ShardTask``: ``personamine.shards.run.run_shard`` for mining), so a local run and a Ray
run compute the same thing by construction."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from personamine.cluster.tasks import MiningTask, ShardTask
from personamine.config import MineConfig, ScreenConfig
from personamine.saes import PreflightResult
from personamine.shards.plan import Schedule, Shard
from personamine.shards.readouts import ReadoutSpec


class Backend(ABC):
    """``start`` acquires workers, ``preflight`` checks each SAE readout on the first shards' tokens (by readout;
    empty: none ran), ``run`` runs every shard the schedule hands out, ``close`` releases the workers (always
    called). ``task`` is what each shard runs: by default mining ``readouts`` with ``config``."""

    def __init__(self, config: MineConfig | ScreenConfig, readouts: list[ReadoutSpec] | None = None,
                 task: ShardTask | None = None) -> None:
        if task is None:
            assert isinstance(config, MineConfig) and readouts is not None, "mining needs its readouts"
            task = MiningTask(config, readouts)
        self.config, self.readouts, self.task = config, readouts, task

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def preflight(self, shards: list[Shard], n_tokens: int, min_fve: float) -> dict[str, PreflightResult]: ...

    @abstractmethod
    def run(self, schedule: Schedule, on_result: Callable[[Any], None],
            on_batch: Callable[[int, int, int], None]) -> None:
        """Run until the schedule is finished: ``on_result`` gets each shard's result as it comes back,
        ``on_batch`` sees a local run's batches as they finish (a Ray run's shards' ``task.counts``)."""

    @abstractmethod
    def close(self) -> None: ...
