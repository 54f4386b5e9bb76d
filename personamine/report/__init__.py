"""``personamine.report(...)``: one self-contained HTML page to read a mining run's features like a researcher."""

from __future__ import annotations

import sys
import types
from pathlib import Path

from personamine.atomic import atomic_write_bytes, check_writable
from personamine.files.discover import read_discovery
from personamine.files.mine import MineResults, read_results
from personamine.files.screen import read_screening
from personamine.files.steer import read_steering
from personamine.report.data import report_data
from personamine.report.explanations import explanations_html
from personamine.report.page import render_page
from personamine.report.screening import screening_html
from personamine.report.steering import steering_html

__all__ = ["report"]


def report(results: str | Path | MineResults, output: str | Path | None = None, *,
           discovery: str | Path | None = None, features: list[int] | None = None,
           steering: str | Path | None = None, explanations: str | Path | None = None,
           screening: str | Path | None = None) -> Path:
    """Write an offline HTML report of a mining file; return its path.

    ``results``: a mining HDF5 file (or what ``read_results`` returned). ``output``: default ``<results>.html``
    beside it. ``discovery``: a discovery file, adding its score, persona/control firing and per-prompt activations.
    ``features``: only these ids, in this order (default: all, in discovery rank order when a discovery file is given).
    ``steering``: a ``personamine steer`` file, adding a steering section (metrics, curves, generations).
    ``explanations``: a file written by ``personamine.explain``, adding each feature's explanation and scores.
    ``screening``: a ``personamine screen`` file, adding its ranked samples (top and bottom, both responses).
    """
    if output is not None:
        check_writable(output, "report")  # before reading anything
    res = results if isinstance(results, MineResults) else read_results(results, features)
    disc = None
    if discovery is not None:
        disc = read_discovery(discovery)
    out = Path(output) if output is not None else res.path.with_suffix(".html")
    check_writable(out, "report")
    data = report_data(res, features, disc)
    shown = [f["id"] for f in data["features"]]
    extra = ""
    if steering is not None:
        extra += steering_html(read_steering(steering), shown)
    if explanations is not None:
        extra += explanations_html(explanations, shown)
    if screening is not None:
        extra += screening_html(read_screening(screening))
    page = render_page(data, title=f"personamine report: {res.path.name}", extra=extra)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, page.encode("utf-8"))
    return out


class _CallableModule(types.ModuleType):
    """``personamine.report`` is both this package and the notebook call ``personamine.report(...)``: importing the
    package binds the package to that attribute, so the package itself must be callable."""

    def __call__(self, *args, **kwargs) -> Path:
        return report(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
