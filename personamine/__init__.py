"""personamine: find the SAE features a chat model uses for its Assistant self, and mine a corpus for them.

Notebook API: ``personamine.mine(...)``, ``personamine.discover(...)``, ``personamine.steer(...)``,
``personamine.explain(...)``, ``personamine.screen(...)`` (a conversation corpus ranked by projection difference),
``personamine.report(...)``, ``personamine.serve(...)`` (a local feature browser),
``personamine.read_results(path, readout=...)``, ``personamine.readouts_of(path)`` (a run's readouts),
``personamine.load_directions(path)`` (directions from any file that holds them), ``personamine.read_discovery(path)``,
``personamine.read_steering(path)``, ``personamine.read_explanations(path)``, ``personamine.read_screening(path)``,
``personamine.load_sae(...)`` (any supported SAE layout: see ``personamine.saes``),
``personamine.export_neuronpedia(results, output)``
(Neuronpedia's import bundle), and every run's config class.
Imports are lazy so ``import personamine`` (and the CLI's ``--help``) does not pay for torch and transformers.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from personamine.version import __version__  # noqa: F401  (public: personamine.__version__)

# Each public name and the module that defines it, imported on first use.
_PUBLIC = {
    "mine": "personamine.jobs.mine",
    "discover": "personamine.jobs.discover",
    "steer": "personamine.jobs.steer",
    "screen": "personamine.jobs.screen",
    "explain": "personamine.jobs.explain",
    "report": "personamine.report",
    "read_results": "personamine.files.mine",
    "readouts_of": "personamine.files.mine",
    "load_directions": "personamine.files.directions",
    "read_discovery": "personamine.files.discover",
    "read_steering": "personamine.files.steer",
    "read_explanations": "personamine.files.explain",
    "read_screening": "personamine.files.screen",
    "load_sae": "personamine.saes",
    "MineConfig": "personamine.config",
    "DiscoverConfig": "personamine.config",
    "SteerConfig": "personamine.config",
    "ExplainConfig": "personamine.config",
    "ScreenConfig": "personamine.config",
    "PersonamineError": "personamine.errors",
    "export_neuronpedia": "personamine.export",
    "serve": "personamine.serve",
}

__all__ = sorted([*_PUBLIC, "__version__"])


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(name)
    return getattr(import_module(_PUBLIC[name]), name)
