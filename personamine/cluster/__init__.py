"""Execution backends: the interface (``backend.Backend``) and one file per backend (``local``, ``ray_backend``).
Each runs the same shard function (``personamine.shards.run.run_shard``); ``configs`` validates cluster configs."""

from __future__ import annotations

from personamine.cluster.backend import Backend
from personamine.cluster.local import LocalBackend
from personamine.config import MineConfig
from personamine.shards.readouts import ReadoutSpec


def open_backend(config: MineConfig, readouts: list[ReadoutSpec]) -> Backend:
    """The backend ``config.backend`` names. Ray is imported only when asked for (it costs seconds)."""
    if config.backend == "ray":
        from personamine.cluster.ray_backend import RayBackend  # lazy: importing Ray costs seconds

        return RayBackend(config, readouts)
    return LocalBackend(config, readouts)
