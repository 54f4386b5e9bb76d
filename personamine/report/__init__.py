"""``personamine.report(...)``: one self-contained HTML page to read a mining run's features like a researcher."""

from __future__ import annotations

import sys
import types
from pathlib import Path

from personamine.atomic import atomic_write_bytes, check_writable
from personamine.files.discover import read_discovery
from personamine.files.mine import MineResults, holds_directions, read_results, readouts_of
from personamine.files.screen import read_screening
from personamine.files.steer import read_steering
from personamine.report.data import report_data
from personamine.report.explanations import explanations_html
from personamine.report.page import render_page
from personamine.report.readouts import readouts_data
from personamine.report.screening import screening_html
from personamine.report.steering import steering_html

__all__ = ["report"]


def report(results: str | Path | MineResults, output: str | Path | None = None, *,
           discovery: str | Path | None = None, features: list[int] | None = None,
           steering: str | Path | None = None, explanations: str | Path | None = None,
           screening: str | Path | None = None) -> Path:
    """Write an offline HTML report of a mining file; return its path.

    ``results``: a mining HDF5 file (or what ``read_results`` returned), or the index of a run with several readouts
    (``mine(layers=..., directions=...)``): then the page has one part per readout in the run's order, each SAE
    readout's features as for a single file and each directions readout's directions (signed statistics, signed
    histogram, percentiles, both tails, the documents of highest and lowest mean projection). ``output``: default
    ``<results>.html`` beside it. ``discovery``: a discovery file, adding its score, persona/control firing and
    per-prompt activations (with several readouts, to the SAE readouts at its layer). ``features``: only these ids,
    in this order (default: all, in discovery rank order when a discovery file is given; with several readouts, of
    each SAE readout). ``steering``: a ``personamine steer`` file, adding a steering section (metrics, curves,
    generations). ``explanations``: a file written by ``personamine.explain``, adding each feature's explanation and
    scores. ``screening``: a ``personamine screen`` file, adding its ranked samples (top and bottom, both responses).
    """
    if output is not None:
        check_writable(output, "report")  # before reading anything
    if isinstance(results, MineResults):
        parts, where = [results], results.path
    else:
        where = Path(results)
        files = readouts_of(where)
        parts = [read_results(path, None if holds_directions(path) else features) for path in files.values()]
    disc = None
    if discovery is not None:
        disc = read_discovery(discovery)
    out = Path(output) if output is not None else where.with_suffix(".html")
    check_writable(out, "report")
    single = len(parts) == 1 and not parts[0].is_directions and parts[0].path == where
    anchor = ""
    if single:
        data = report_data(parts[0], features, disc)
        shown = [f["id"] for f in data["features"]]
    else:
        data = readouts_data(where, parts, features, disc)
        # Steering and explanations link to the features of the run's first SAE readout (the one they were made from)
        first = next((r for r in data["readouts"] if r["kind"] == "sae"), None)
        shown = [f["id"] for f in first["features"]] if first else []
        anchor = first["id_prefix"] if first else ""
    extra = ""
    if steering is not None:
        extra += steering_html(read_steering(steering), shown, anchor_prefix=anchor)
    if explanations is not None:
        extra += explanations_html(explanations, shown, anchor_prefix=anchor)
    if screening is not None:
        extra += screening_html(read_screening(screening))
    page = render_page(data, title=f"personamine report: {where.name}", extra=extra)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, page.encode("utf-8"))
    return out


class _CallableModule(types.ModuleType):
    """``personamine.report`` is both this package and the notebook call ``personamine.report(...)``: importing the
    package binds the package to that attribute, so the package itself must be callable."""

    def __call__(self, *args, **kwargs) -> Path:
        return report(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
