"""The version: one number, the installed distribution's, and what every output file records."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import h5py

import personamine
from personamine.version import __version__

REPO = Path(__file__).resolve().parents[1]


def test_the_version_is_the_distributions_and_the_projects():
    assert __version__ == importlib.metadata.version("personamine")
    assert __version__ == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert personamine.__version__ is __version__


def test_a_mining_file_records_the_version_that_wrote_it(tiny_mining_file):
    with h5py.File(tiny_mining_file) as f:
        assert f.attrs["personamine_version"] == __version__
    assert personamine.read_results(tiny_mining_file).attrs["personamine_version"] == __version__
