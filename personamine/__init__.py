"""personamine: find the SAE features a chat model uses for its Assistant self, and mine a corpus for them.

Notebook API: ``personamine.mine(...)``, ``personamine.discover(...)``, ``personamine.read_results(path)``,
``personamine.explain(...)``, ``personamine.read_explanations(path)``.
Imports are lazy so ``import personamine`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["ExplainConfig", "MineConfig", "PersonamineError", "__version__", "discover", "explain", "mine",
           "read_discovery", "read_explanations", "read_results", "report"]


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
    if name == "report":
        from personamine.report import report

        return report
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
