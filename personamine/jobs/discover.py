"""``personamine.discover(...)``: the entry point (the run is ``personamine.discovery``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from personamine.config import DiscoverConfig, resolve_config
from personamine.discovery.run import run_discovery


def discover(config: DiscoverConfig | None = None, /, **overrides: Any) -> Path:
    """Rank SAE features by how much more they fire on self-referential prompts than on controls.

    ``config`` is a :class:`DiscoverConfig` or None (then keyword arguments are its fields); keyword arguments
    override a given config. Writes one HDF5 file (read it with ``personamine.read_discovery``) and returns its
    path.
    """
    return run_discovery(resolve_config(DiscoverConfig, config, overrides, "discover"))
