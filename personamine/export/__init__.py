"""A mining file in other tools' formats: ``personamine.export_neuronpedia(...)`` writes the bundle Neuronpedia
imports (``personamine export neuronpedia`` on the command line; see ``personamine.export.neuronpedia``)."""

from __future__ import annotations

from personamine.export.neuronpedia import describe_export, export_neuronpedia

__all__ = ["describe_export", "export_neuronpedia"]
