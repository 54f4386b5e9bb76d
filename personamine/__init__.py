"""personamine: find the SAE features a chat model uses for its Assistant self, and mine a corpus for them.

Notebook API: ``personamine.mine(...)``, ``personamine.discover(...)``, ``personamine.steer(...)``,
``personamine.explain(...)``, ``personamine.read_results(path)``, ``personamine.read_steering(path)``,
``personamine.read_explanations(path)``, ``personamine.load_sae(...)`` (any supported SAE layout: see
``personamine.saes``).
Imports are lazy so ``import personamine`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["ExplainConfig", "MineConfig", "PersonamineError", "SteerConfig", "__version__", "discover", "explain",
           "load_sae", "mine", "read_discovery", "read_explanations", "read_results", "read_steering", "report",
           "steer"]


def __getattr__(name: str) -> Any:
    if name == "mine":
        from personamine.jobs.mine import mine

        return mine
    if name == "MineConfig":
        from personamine.config import MineConfig

        return MineConfig
    if name == "read_results":
        from personamine.merge.hdf5 import read_results

        return read_results
    if name == "discover":
        from personamine.jobs.discover import discover

        return discover
    if name == "read_discovery":
        from personamine.jobs.discover import read_discovery

        return read_discovery
    if name == "steer":
        from personamine.jobs.steer import steer

        return steer
    if name == "SteerConfig":
        from personamine.jobs.steer import SteerConfig

        return SteerConfig
    if name == "read_steering":
        from personamine.steering.hdf5 import read_steering

        return read_steering
    if name == "report":
        from personamine.report import report

        return report
    if name == "load_sae":
        from personamine.saes import load_sae

        return load_sae
    if name in ("explain", "ExplainConfig"):
        from personamine.jobs import explain as _explain

        return getattr(_explain, name)
    if name == "read_explanations":
        from personamine.autointerp.store import read_explanations

        return read_explanations
    if name == "PersonamineError":
        from personamine.errors import PersonamineError

        return PersonamineError
    raise AttributeError(name)
