"""Screening's config: execution fields stay out of the fingerprint (a resume may change them), what the result
depends on does not; a TOML job file reads as flags do."""

from __future__ import annotations

import pytest

from personamine.config import ScreenConfig
from personamine.errors import PersonamineError


def test_fingerprint_ignores_execution_fields_only():
    base = ScreenConfig(directions="d.npy", corpus="c.jsonl")
    assert base.fingerprint() == base.replace(n_shards=4, backend="ray", output="x.h5", progress=False).fingerprint()
    assert base.fingerprint() != base.replace(max_new_tokens=5).fingerprint()
    assert base.fingerprint() != base.replace(batch_size=3).fingerprint()  # padding moves rounding and greedy choices


def test_toml_and_bounds(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text('directions = "d.npy"\ncorpus = "c.jsonl"\nlayer = 3\n')
    assert ScreenConfig.from_toml(job, batch_size=2).layer == 3
    with pytest.raises(PersonamineError, match="batch_size must be at least 1"):
        ScreenConfig(batch_size=0)
    with pytest.raises(PersonamineError, match="unknown config field"):
        ScreenConfig.from_dict({"layr": 3})
