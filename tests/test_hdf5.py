"""The results reader: reading only some features gives exactly those rows of a whole read."""

from __future__ import annotations

import numpy as np
import pytest
from test_report import synthetic_results

import personamine
from personamine.errors import PersonamineError

PER_FEATURE = ("score", "token_ids", "activations", "document", "window_start", "length", "active_tokens",
               "activation_sum", "max", "histogram")


def test_reading_some_features_equals_those_rows_of_the_whole_file(tmp_path):
    path = synthetic_results(tmp_path / "r.h5", 30, windows_per_feature=30)
    whole = personamine.read_results(path)
    wanted = [int(whole.feature_ids[i]) for i in (17, 2, 29, 2)]  # any order, a repeat: read in the file's order
    part = personamine.read_results(path, features=wanted)
    rows = [2, 17, 29]
    assert part.feature_ids.tolist() == whole.feature_ids[rows].tolist()
    for name in PER_FEATURE:
        np.testing.assert_array_equal(getattr(part, name), getattr(whole, name)[rows], err_msg=name)
    for name in ("promoted_ids", "promoted_values", "suppressed_ids", "suppressed_values"):
        np.testing.assert_array_equal(getattr(part.logit_lens, name), getattr(whole.logit_lens, name)[rows])
    assert part.tokens_scored == whole.tokens_scored and part.counters == whole.counters
    for fid in wanted:
        assert part.examples(fid) and all(
            a["document"] == b["document"] and np.array_equal(a["activations"], b["activations"])
            for a, b in zip(part.examples(fid), whole.examples(fid), strict=True))
        mine, theirs = part.interval_samples(fid), whole.interval_samples(fid)
        assert mine.keys() == theirs.keys() and len(mine) > 0
        for interval in mine:
            assert [(s["document"], s["window_start"], s["token_ids"].tolist(), s["activations"].tolist())
                    for s in mine[interval]] == [(s["document"], s["window_start"], s["token_ids"].tolist(),
                                                   s["activations"].tolist()) for s in theirs[interval]]
    assert len(part.samples) < len(whole.samples)


def test_reading_a_feature_the_file_lacks_is_a_clear_error(tmp_path):
    path = synthetic_results(tmp_path / "r.h5", 5, windows_per_feature=10)
    with pytest.raises(PersonamineError, match="feature 4 is not in"):
        personamine.read_results(path, features=[3, 4])
    with pytest.raises(PersonamineError, match="no features"):
        personamine.read_results(path, features=[])
