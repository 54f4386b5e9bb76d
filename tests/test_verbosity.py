"""--verbose is an environment variable, so processes started after it was set (Ray workers, subprocesses) see it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from personamine.verbosity import ENV, set_verbose, verbose


@pytest.mark.parametrize("value, on", [("", False), ("0", False), ("false", False), ("No", False), (" FALSE ", False),
                                       ("1", True), ("yes", True), ("true", True), ("2", True), ("on", True)])
def test_the_variable_is_read_on_every_call(monkeypatch, value, on):
    monkeypatch.setenv(ENV, value)
    assert verbose() is on


def test_unset_is_quiet(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert verbose() is False


def test_set_verbose_reaches_a_process_started_later(monkeypatch):
    monkeypatch.setenv(ENV, "")  # restored after the test, whatever set_verbose writes
    probe = [sys.executable, "-c", "from personamine.verbosity import verbose; print(verbose())"]
    set_verbose(True)
    assert ENV == "PERSONAMINE_VERBOSE" and verbose() is True
    assert subprocess.run(probe, capture_output=True, text=True, check=True).stdout == "True\n"
    set_verbose(False)
    assert verbose() is False
    assert subprocess.run(probe, capture_output=True, text=True, check=True).stdout == "False\n"
