"""The one direction loader: every file kind gives the same named vectors, and bad files get one line."""

import json
import re

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from personamine.errors import PersonamineError
from personamine.files.directions import load_directions


@pytest.fixture
def vectors():
    return np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)


def test_every_kind_reads_the_same_vectors(tmp_path, vectors):
    np.save(tmp_path / "v.npy", vectors)
    (tmp_path / "v.json").write_text(json.dumps({"names": ["a", "b", "c"], "directions": {"b": {"layer": 4,
                                                                                                  "mean": 1.5}}}))
    save_file({"a": vectors[0], "b": vectors[1], "c": vectors[2]}, str(tmp_path / "v.safetensors"),
              metadata={"directions": json.dumps({"b": {"layer": 4, "mean": 1.5}})})
    torch.save({"a": torch.from_numpy(vectors[0]), "b": torch.from_numpy(vectors[1]),
                "c": torch.from_numpy(vectors[2])}, tmp_path / "v.pt")
    for name in ("v.npy", "v.safetensors", "v.pt"):
        found = load_directions(tmp_path / name, hidden_size=8)
        assert [d.name for d in found] == ["a", "b", "c"], name
        np.testing.assert_array_equal(np.stack([d.vector for d in found]), vectors)
    b = load_directions(tmp_path / "v.npy", names=["b"])[0]
    assert (b.layer, b.mean) == (4, 1.5)
    np.testing.assert_allclose(b.unit, vectors[1] / np.linalg.norm(vectors[1]), rtol=1e-6)
    # a layer filter keeps the directions found there and those whose layer is unknown
    assert [d.name for d in load_directions(tmp_path / "v.npy", layer=5)] == ["a", "c"]


def test_unnamed_arrays_and_stacked_tensors(tmp_path, vectors):
    np.save(tmp_path / "plain.npy", vectors)
    assert [d.name for d in load_directions(tmp_path / "plain.npy")] == ["d0", "d1", "d2"]
    torch.save(torch.from_numpy(vectors[0]), tmp_path / "one.pt")
    assert [d.name for d in load_directions(tmp_path / "one.pt")] == ["d0"]
    save_file({"axis": vectors}, str(tmp_path / "stack.safetensors"))
    assert [d.name for d in load_directions(tmp_path / "stack.safetensors")] == ["axis/0", "axis/1", "axis/2"]


@pytest.mark.parametrize(("make", "message"), [
    (lambda p, v: np.save(p / "x.npy", v), "is 8 wide, but the model's residual stream is 16"),
    (lambda p, v: np.save(p / "x.npy", np.zeros((1, 16), np.float32)), "all zeros"),
    (lambda p, v: np.save(p / "x.npy", np.full((1, 16), np.nan, np.float32)), "NaN or infinite"),
    (lambda p, v: (p / "x.npy").write_bytes(b"not an array"), "not a readable .npy"),
    (lambda p, v: np.save(p / "x.npy", np.ones((2, 2, 16), np.float32)), "not [n, hidden]"),
    (lambda p, v: (np.save(p / "x.npy", np.ones((2, 16), np.float32)),
                   (p / "x.json").write_text('{"names": ["a", "a"]}')), "names two directions alike"),
    (lambda p, v: (np.save(p / "x.npy", np.ones((2, 16), np.float32)),
                   (p / "x.json").write_text('{"names": ["a"]}')), "names 1 directions but"),
])
def test_bad_files_get_one_line(tmp_path, vectors, make, message):
    make(tmp_path, vectors)
    with pytest.raises(PersonamineError, match=re.escape(message)):
        load_directions(tmp_path / "x.npy", hidden_size=16)


def test_missing_names_and_kinds(tmp_path, vectors):
    np.save(tmp_path / "v.npy", vectors)
    with pytest.raises(PersonamineError, match="has no direction 'zz'; it has d0, d1, d2"):
        load_directions(tmp_path / "v.npy", names=["zz"])
    with pytest.raises(PersonamineError, match="not found"):
        load_directions(tmp_path / "none.npy")
    (tmp_path / "v.txt").write_text("1 2 3")
    with pytest.raises(PersonamineError, match="use a discovery .h5"):
        load_directions(tmp_path / "v.txt")
