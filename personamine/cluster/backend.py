"""The backend interface: where the shards of a mining run execute. Every backend runs the same per-shard function
(``personamine.shards.run.run_shard``), so a local run and a Ray run compute the same thing by construction."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from personamine.config import MineConfig
from personamine.saes import PreflightResult
from personamine.shards.plan import Schedule, Shard
from personamine.shards.readouts import ReadoutSpec
from personamine.shards.run import ShardResult


class Backend(ABC):
    """``start`` acquires workers, ``preflight`` checks the SAE on the first shards' tokens (None: no check ran),
    ``run`` mines every shard the schedule hands out, ``close`` releases the workers (always called)."""

    def __init__(self, config: MineConfig, readouts: list[ReadoutSpec]) -> None:
        self.config, self.readouts = config, readouts

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def preflight(self, shards: list[Shard], n_tokens: int, min_fve: float) -> dict[str, PreflightResult]: ...

    @abstractmethod
    def run(self, schedule: Schedule, on_result: Callable[[ShardResult], None],
            on_batch: Callable[[int, int, int], None]) -> None:
        """Mine until the schedule is finished: ``on_result`` gets each shard's result as it comes back,
        ``on_batch(shard's batches done, tokens, windows)`` sees a local run's batches as they finish."""

    @abstractmethod
    def close(self) -> None: ...
