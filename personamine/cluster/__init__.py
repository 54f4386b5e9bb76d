"""Execution backends: the interface (``backend.Backend``) and one file per backend (``local``, ``ray_backend``).
Each runs the same shard function, its task's (``tasks``: mining's ``run_shard``, screening's
``run_screen_shard``); ``configs`` validates cluster configs."""

from __future__ import annotations

from personamine.cluster.backend import Backend
from personamine.cluster.local import LocalBackend
from personamine.cluster.tasks import ShardTask
from personamine.config import MineConfig, ScreenConfig
from personamine.shards.readouts import ReadoutSpec


def open_backend(config: MineConfig | ScreenConfig, readouts: list[ReadoutSpec] | None = None,
                 task: ShardTask | None = None) -> Backend:
    """The backend ``config.backend`` names, running ``task`` on each shard (default: mining ``readouts``). Ray is
    imported only when asked for (it costs seconds)."""
    if config.backend == "ray":
        from personamine.cluster.ray_backend import RayBackend  # lazy: importing Ray costs seconds

        return RayBackend(config, readouts, task)
    return LocalBackend(config, readouts, task)
