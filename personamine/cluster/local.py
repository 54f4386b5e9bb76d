"""In-process backend: one engine on one device, shards in order."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from personamine.config import MineConfig
from personamine.shards.plan import Shard
from personamine.shards.run import MiningEngine, ShardResult, run_shard


def run_local(config: MineConfig, features: np.ndarray, shards: list[Shard],
              on_result: Callable[[ShardResult], None], on_tokens: Callable[[int], None]) -> None:
    if not shards:
        return
    engine = MiningEngine(config, features)
    for shard in shards:
        on_result(run_shard(engine, shard, on_batch=on_tokens))
