"""Where personamine keeps files it derives once and reuses (built-in corpora, converted models)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "PERSONAMINE_CACHE"


def cache_dir() -> Path:
    """Root of personamine's cache: ``$PERSONAMINE_CACHE`` if set, else ``~/.cache/personamine``.

    Read on every call (not at import) so tests and jobs can redirect it with the environment.
    The directory is not created here; writers create the subdirectory they need.
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "personamine"
