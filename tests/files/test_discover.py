"""The discovery file: version 2 written and read back whole, version-1 files (one table, no statistics) still read,
and the selections mining makes from a file's statistics."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from personamine.config import MineConfig
from personamine.discovery.select import resolve_features
from personamine.errors import PersonamineError
from personamine.files.discover import (
    Decomposition,
    Direction,
    Ranking,
    Side,
    Table,
    read_discovery,
    read_discovery_ranking,
    write_discovery,
)
from personamine.model.prompts import RenderedPrompt


def ranking(n: int, rng: np.random.Generator, stats: bool = True) -> Ranking:
    values = {name: rng.normal(size=n) for name in ("score", "persona_mean", "control_mean", "persona_firing",
                                                    "control_firing")}
    extra = {}
    if stats:
        low = np.sort(rng.normal(size=n))[::-1]
        extra = dict(ci_low=low, ci_high=low + 1, p_value=rng.uniform(size=n), q_value=np.linspace(0.001, 0.5, n),
                     effect_size=rng.normal(size=n), support=rng.integers(0, 6, n))
    return Ranking(feature_ids=rng.permutation(50)[:n], **values, **extra)


def test_version_2_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    prompts = [RenderedPrompt(f"p{i}", f"<p{i}>", [1, 2, 3], [2]) for i in range(4)]
    tables = [Table(f"L{layer}", layer, "sae@trainer_0", pooling, ranking(10, rng), rng.normal(size=(4, 3)),
                    rng.normal(size=(4, 3))) for layer in (3, 7) for pooling in ("last", "response-mean")]
    direction = Direction(3, "last", rng.normal(size=16).astype(np.float32), 2.5, 0.8, (0.6, 0.95), (0.9, 0.7),
                          rng.normal(size=4), rng.normal(size=4),
                          {"L3": Decomposition("L3", np.arange(5), rng.normal(size=5), np.arange(5)[::-1].copy(),
                                               rng.normal(size=5), 0.4, 0.9)})
    path = write_discovery(tmp_path / "d.h5", {"model": "m", "contrast": "controls", "controls": True}, tables,
                           Side([p.text for p in prompts], prompts, ["r"] * 4), Side(["c"] * 4, prompts),
                           [direction])
    res = read_discovery(path)
    assert res.version == 2 and res.attrs["layer"] == 3 and res.attrs["position"] == "last"
    np.testing.assert_array_equal(res.feature_ids, tables[0].ranking.feature_ids)
    np.testing.assert_array_equal(res.ranking.q_value, tables[0].ranking.q_value)
    np.testing.assert_array_equal(res.persona_acts, tables[0].persona_acts.astype(np.float32))
    assert res.persona_response == ["r"] * 4 and res.control_response is None
    for t in tables:
        got = res.tables[(t.readout, t.pooling)]
        assert got.layer == t.layer and got.sae == t.sae
        for name in ("feature_ids", "score", "ci_low", "ci_high", "p_value", "q_value", "effect_size", "support"):
            np.testing.assert_array_equal(getattr(got.ranking, name), getattr(t.ranking, name))
    d = res.directions[(3, "last")]
    np.testing.assert_array_equal(d.vector, direction.vector)
    assert (d.norm, d.auroc, d.auroc_ci, d.split_half) == (2.5, 0.8, (0.6, 0.95), (0.9, 0.7))
    dec = d.decompositions["L3"]
    np.testing.assert_array_equal(dec.contribution_ids, np.arange(5)[::-1])
    assert (dec.reconstructed_share, dec.reconstructed_cosine) == (0.4, 0.9)
    assert "q" in res.table() and "AUROC 0.800" in res.directions_table()


def write_version_1(path, ids, score):
    """A discovery file as version 1 wrote it: one table, no statistics, no directions."""
    utf8 = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as f:
        f.attrs.update({"format": "personamine.discover", "format_version": 1, "model": "m", "layer": 2,
                        "sae": "s@trainer_0", "position": "last", "controls": True,
                        "config": json.dumps({"top": 2})})
        for name, value in (("feature_ids", ids), ("score", score), ("persona_mean", score),
                            ("control_mean", 0 * score), ("persona_firing", 0 * score + 1),
                            ("control_firing", 0 * score)):
            f.create_dataset(f"ranking/{name}", data=value)
        for kind in ("persona", "control"):
            f.create_dataset(f"prompts/{kind}_text", data=["a", "b"], dtype=utf8)
            f.create_dataset(f"prompts/{kind}_rendered", data=["<a>", "<b>"], dtype=utf8)
            f.create_dataset(f"prompts/{kind}_n_positions", data=np.ones(2, np.int64))
        g = f.create_group("activations")
        g.attrs["feature_ids"] = ids[:2]
        g.create_dataset("persona", data=np.ones((2, 2), np.float32))
        g.create_dataset("control", data=np.zeros((2, 2), np.float32))
    return path


def test_version_1_files_still_read(tmp_path):
    ids, score = np.array([5, 9, 1], np.int64), np.array([2.0, 1.0, 0.5])
    res = read_discovery(write_version_1(tmp_path / "v1.h5", ids, score))
    assert res.version == 1 and not res.ranking.has_statistics and res.tables == {} and res.directions == {}
    np.testing.assert_array_equal(res.feature_ids, ids)
    assert "95% CI" not in res.table() and res.summary().startswith("2 persona prompts vs 2 controls")
    np.testing.assert_array_equal(read_discovery_ranking(tmp_path / "v1.h5")[0], ids)
    # mining's plain selection reads it; a selection by q needs statistics it does not have
    assert resolve_features(MineConfig(features_from=str(tmp_path / "v1.h5"), top=2), 64).tolist() == [5, 9]
    with pytest.raises(PersonamineError, match="no statistics"):
        resolve_features(MineConfig(features_from=str(tmp_path / "v1.h5"), max_q=0.05), 64)


def test_mining_selects_by_q_and_ci(tmp_path):
    rng = np.random.default_rng(1)
    r = ranking(10, rng)
    r.q_value = np.array([0.01, 0.2, 0.03, 0.04, 0.5, 0.01, 0.9, 0.02, 0.3, 0.04])
    r.ci_low = np.array([0.5, 0.4, -0.1, 0.3, 0.2, 0.1, 0.05, 0.0, -0.2, 0.6])
    r.score = np.abs(r.score) + 0.1
    prompts = [RenderedPrompt("p", "<p>", [1], [0])]
    table = Table("L1", 1, "s", "last", r, np.zeros((1, 1)), np.zeros((1, 1)))
    path = write_discovery(tmp_path / "d.h5", {}, [table], Side(["p"], prompts), Side(["p"], prompts))
    pick = resolve_features(MineConfig(features_from=str(path), top=10, max_q=0.05), 64)
    assert pick.tolist() == r.feature_ids[r.q_value <= 0.05].tolist()
    pick = resolve_features(MineConfig(features_from=str(path), top=10, max_q=0.05, min_ci_low=0), 64)
    assert pick.tolist() == r.feature_ids[(r.q_value <= 0.05) & (r.ci_low > 0)].tolist()
    with pytest.raises(PersonamineError, match="passes"):
        resolve_features(MineConfig(features_from=str(path), max_q=0.001), 64)
