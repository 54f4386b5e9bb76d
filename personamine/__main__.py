"""``python -m personamine ...``: the ``personamine`` command, for an environment where its script is not on PATH."""

import sys

from personamine.jobs.cli import main

sys.exit(main())
