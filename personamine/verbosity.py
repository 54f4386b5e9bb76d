"""Whether libraries may talk: off by default, on with ``personamine --verbose`` or ``PERSONAMINE_VERBOSE=1``.

It is an environment variable, not a module global, so Ray workers and subprocesses started after it was set
behave the same as the process that set it.
"""

from __future__ import annotations

import os

ENV = "PERSONAMINE_VERBOSE"


def verbose() -> bool:
    return os.environ.get(ENV, "").strip().lower() not in ("", "0", "false", "no")


def set_verbose(on: bool) -> None:
    os.environ[ENV] = "1" if on else "0"
