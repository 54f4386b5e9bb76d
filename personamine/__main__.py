"""``python -m personamine ...``: the ``personamine`` command, for an environment where its script is not on PATH."""

import sys

from personamine.jobs.cli import main

if __name__ == "__main__":  # importing the module (a tool listing the package's modules) runs nothing
    sys.exit(main())
