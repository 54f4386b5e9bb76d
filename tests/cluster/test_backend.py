"""The backend interface: a backend must implement all four steps, every backend is one, and the config picks which
one a run gets (Ray only when asked for)."""

from __future__ import annotations

import numpy as np
import pytest

from personamine.cluster import open_backend
from personamine.cluster.backend import Backend
from personamine.cluster.local import LocalBackend
from personamine.config import MineConfig
from personamine.shards.run import sae_readout


def test_an_incomplete_backend_cannot_be_made():
    class NoRun(Backend):
        def start(self): ...
        def preflight(self, shards, n_tokens, min_fve): ...
        def close(self): ...

    with pytest.raises(TypeError, match=r"abstract method '?run'?$"):
        NoRun(MineConfig(), np.array([1]))
    with pytest.raises(TypeError, match=r"abstract methods '?close'?, '?preflight'?, '?run'?, '?start'?$"):
        Backend(MineConfig(), np.array([1]))  # type: ignore[abstract]


def test_a_complete_backend_holds_its_config_and_readouts():
    class Complete(Backend):
        def start(self): ...
        def preflight(self, shards, n_tokens, min_fve): return None
        def run(self, schedule, on_result, on_batch): ...
        def close(self): ...

    cfg = MineConfig(top_k=3, layer=2)
    readouts = [sae_readout(cfg, np.array([4, 9]))]
    backend = Complete(cfg, readouts)
    assert backend.config is cfg and backend.readouts is readouts


def test_the_config_picks_the_backend():
    readouts = [sae_readout(MineConfig(layer=2), np.array([0, 1]))]
    local = open_backend(MineConfig(), readouts)
    assert type(local) is LocalBackend and isinstance(local, Backend)
    assert local.engine is None  # nothing loads until a shard (or the pre-flight) needs the engine
    from personamine.cluster.ray_backend import RayBackend

    ray = open_backend(MineConfig(backend="ray", ray_address="127.0.0.1:1"), readouts)
    assert type(ray) is RayBackend and isinstance(ray, Backend)
    assert ray.connected is False and ray.driver is None  # nothing is started or joined until start()
    assert ray.config.ray_address == "127.0.0.1:1" and ray.readouts is readouts
