"""``python -m personamine`` is the ``personamine`` command."""

from __future__ import annotations

import subprocess
import sys

from fixtures import user_env


def test_python_dash_m_personamine_runs_the_command_line():
    done = subprocess.run([sys.executable, "-m", "personamine", "mine", "--bogus-flag"], capture_output=True,
                          text=True, env=user_env(), timeout=120)
    assert done.returncode == 2
    assert "unrecognized arguments: --bogus-flag" in done.stderr
    done = subprocess.run([sys.executable, "-m", "personamine", "--help"], capture_output=True, text=True,
                          env=user_env(), timeout=120)
    assert done.returncode == 0 and "mine" in done.stdout
