"""``personamine.serve(...)``: a local web app to browse mining files of any size (an index sorted, filtered and paged
on the server, a page per feature with the report's sections and its neighbours) and to run the model on a text of
your own (live inspection). See docs/serve.md."""

from __future__ import annotations

import sys
import types
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from personamine.errors import PersonamineError

if TYPE_CHECKING:
    from personamine.serve.server import RunningServer

__all__ = ["serve"]

DEFAULT_PORT = 8000


def serve(results: str | Path | list[str | Path], *, discovery: str | Path | None = None,
          explanations: str | Path | None = None, steering: str | Path | None = None, model: str | None = None,
          sae: str | None = None, device: str | None = None, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
          inspect: bool = True, quiet: bool = False) -> RunningServer:
    """Start the browser on ``results`` (one mining file or several) and print its address; return the running
    server (``.url``, ``.stop()``, ``.wait()`` blocks until Ctrl-C, as ``personamine serve`` does).

    ``discovery``, ``explanations``, ``steering``: files whose columns and sections the pages add, as the report's.
    ``model``, ``sae``, ``device``: for live inspection and neighbours, instead of what each file records.
    ``host``: 127.0.0.1 unless asked (another address serves the files to whoever reaches it: a warning says so).
    ``port``: 0 picks a free one. ``inspect=False``: no live inspection (the model never loads).
    """
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise PersonamineError(f"personamine serve needs the [serve] extra (pip install 'personamine[serve]'): "
                               f"{exc}") from None
    from personamine.serve.app import create_app
    from personamine.serve.inspect import Inspector
    from personamine.serve.neighbours import DecoderNeighbours
    from personamine.serve.server import LOOPBACK_NAMES, is_loopback, start
    from personamine.serve.sources import open_sources

    paths = [results] if isinstance(results, (str, Path)) else list(results)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise PersonamineError(f"port must be 0 to 65535, got {port!r}")
    sources = open_sources(paths, discovery=discovery, explanations=explanations, steering=steering)
    inspector = Inspector(sources.files, model=model, sae=sae, device=device, enabled=inspect)
    neighbours = _neighbours(sources, inspector, DecoderNeighbours)
    local = is_loopback(host)
    if not local:
        warnings.warn(f"serving on {host}: anyone who can reach this address can read the files served and run the "
                      "model on their texts (there is no login); the default, 127.0.0.1, serves this machine only",
                      UserWarning, stacklevel=2)
    # On a loopback address the server answers to its loopback names (and the one it was given) only.
    named = f"[{host.strip('[]')}]" if ":" in host else host.lower()
    app = create_app(sources, inspector, neighbours, hosts=LOOPBACK_NAMES | {named} if local else None)
    closers = [inspector.close, *(n.close for n in {id(n): n for n in neighbours.values() if n}.values())]
    running = start(app, host, port, closers)
    if not quiet:
        print(f"personamine serve: {sources.index.size:,} features of {len(sources.files)} file(s) at {running.url} "
              "(Ctrl-C stops it)", flush=True)
    return running


def _neighbours(sources, inspector, factory) -> dict:
    """One neighbour index per distinct SAE of the files (None where a file's config names none). The SAE loads on
    the index's own thread, on first use: torch is not imported until then."""
    by_sae, out = {}, {}
    for served in sources.files:
        try:
            config = inspector.config(served.number, require=("sae",))
        except PersonamineError:  # the file names no SAE: its pages say so
            out[served.number] = None
            continue
        key = (config.sae, config.sae_id, config.sae_trainer, config.layer, config.sae_format)
        if key not in by_sae:
            by_sae[key] = factory(lambda config=config: _load_sae(config), device=config.device)
        out[served.number] = by_sae[key]
    return out


def _load_sae(config):
    from personamine.saes import load_sae, sae_spec

    return load_sae(sae_spec(config))


class _CallableModule(types.ModuleType):
    """``personamine.serve`` is both this package and the notebook call ``personamine.serve(...)`` (as
    ``personamine.report`` is): importing the package binds it to that attribute, so the package must be callable."""

    def __call__(self, *args, **kwargs) -> RunningServer:
        return serve(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
