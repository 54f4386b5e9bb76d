"""The screening file: written atomically, read back whole; the ranking puts NaN last and keeps corpus order in
ties; another kind of file is refused in one line."""

from __future__ import annotations

import numpy as np
import pytest

from personamine.errors import PersonamineError
from personamine.files.screen import rank, read_screening, write_screening


def test_rank_largest_first_nan_last_ties_in_corpus_order():
    diff = np.array([[0.5, 1.0], [np.nan, 2.0], [2.0, 1.0], [0.5, -1.0]])
    assert rank(diff).tolist() == [[2, 0, 3, 1], [1, 0, 2, 3]]


def test_round_trip(tmp_path):
    n = 3
    columns = {"unit": np.array([0, 0, 1]), "row": np.array([0, 2, 0]), "document": np.array([0, 2, 3]),
               "response_tokens": np.array([4, 5, 6], np.int32), "own_tokens": np.array([7, 0, 9], np.int32),
               "own_finished": np.array([True, True, False]),
               "projection_response": np.array([[1.0], [2.0], [3.0]]),
               "projection_own": np.array([[0.5], [np.nan], [4.0]])}
    texts = {"prompt": ["p0", "p1", "p2"], "response": ["r0", "r1 é", "r2"], "own": ["o0", "", "o2"]}
    path = write_screening(tmp_path / "s.h5", names=["L2/response"], units=np.eye(1, 4, dtype=np.float32),
                           columns=columns, texts=texts, attrs={"config": "{}", "layer": 2})
    got = read_screening(path)
    assert got.names == ["L2/response"] and got.response == texts["response"] and got.own == texts["own"]
    np.testing.assert_array_equal(got.difference[:, 0], [0.5, np.nan, -1.0])
    assert got.order.tolist() == [[0, 2, 1]]
    assert [r["document"] for r in got.ranked("L2/response")] == [0, 3, 2] and len(got.ranked()) == n
    assert "3 samples ranked" in got.table()
    assert list(tmp_path.iterdir()) == [path]  # no temp file left


def test_another_file_is_refused(tmp_path):
    other = tmp_path / "x.h5"
    import h5py

    with h5py.File(other, "w") as f:
        f.attrs["format"] = "personamine.mine"
        f.attrs["format_version"] = 1
    with pytest.raises(PersonamineError, match="not a personamine screening file"):
        read_screening(other)
