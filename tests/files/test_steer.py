"""The steering file: what ``write_steering`` writes ``read_steering`` gives back, array for array; the summaries
computed from it (a continuation set's log-probability, shifts against the unsteered run); other files refused."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from personamine.errors import PersonamineError
from personamine.files.steer import (
    FORMAT,
    FORMAT_VERSION,
    PromptSetResults,
    SteeringResults,
    read_steering,
    write_steering,
)

N_IV, P, C, G = 3, 2, 3, 4  # interventions (0: unsteered), prompts, continuations, generated tokens
TERMS = 3  # intervention 1: ablate 5; intervention 2: clamp 5 + add 8


def prompt_set(rng, kind):
    tokens = rng.integers(0, 500, (N_IV, P, G)).astype(np.int32)
    length = np.array([[4, 2], [0, 3], [1, 4]], np.int32)
    tokens[np.arange(G)[None, None, :] >= length[..., None]] = -1
    stats = {name: rng.normal(size=TERMS) for name in ("before_mean", "after_mean", "before_fired_mean",
                                                       "after_fired_mean", "after_max", "target_error")}
    stats.update(n_positions=np.array([4, 6, 6]), n_fired=np.array([1, 2, 0]))
    return PromptSetResults(text=[f"{kind} prompt {p} ✓" for p in range(P)],
                            rendered=[f"<s><|user|>\n{kind} {p}</s>\n<|assistant|>\n" for p in range(P)],
                            logprob=rng.normal(-5, 2, (N_IV, P, C)),
                            kl=np.abs(rng.normal(size=(N_IV, P))) * [[0], [1], [1]],
                            tokens=tokens, length=length, finished=length < G,
                            responses=[[f"reply {i}.{p} é" for p in range(P)] for i in range(N_IV)], term_stats=stats)


@pytest.fixture
def results():
    rng = np.random.default_rng(7)
    return SteeringResults(
        attrs={"model": "tiny", "layer": 2, "alpha_scale": 3.5, "clamp_unit": "prompt-max"},
        config={"features": [5, 8], "alphas": [0.5], "nested": {"a": [1, 2]}},
        feature_ids=np.array([5, 8]), feature_scale=np.array([2.0, math.nan]),
        encoder_decoder_dot=np.array([0.9, 1.1]), decoder_norm=np.array([1.0, 0.5]), prompt_max=np.array([2.0, 0.0]),
        names=["unsteered", "ablate 5", "clamp 5=2x + add 8=0.5"], kinds=["none", "ablate", "mixed"],
        alphas=np.array([math.nan, math.nan, math.nan]), term_intervention=np.array([1, 2, 2]),
        term_feature=np.array([5, 5, 8]), term_kind=["ablate", "clamp", "add"],
        term_value=np.array([math.nan, 4.0, 1.75]), term_given=np.array([math.nan, 2.0, 0.5]),
        term_where=["", "active", ""], set_names=["assistant", "human"],
        continuations=["I am an AI", "As an assistant", "I feel"], continuation_set=np.array([0, 0, 1]),
        perplexity=np.array([12.5, 13.0, 20.25]),
        sets={"persona": prompt_set(rng, "persona"), "control": prompt_set(rng, "control")})


def equal(a, b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_what_is_written_reads_back(results, tmp_path):
    path = write_steering(tmp_path / "s.h5", results)
    got = read_steering(path)
    assert got.path == path and got.config == results.config
    assert {k: got.attrs[k] for k in results.attrs} == results.attrs
    assert got.attrs["format"] == FORMAT == "personamine.steer" and got.attrs["format_version"] == FORMAT_VERSION
    for name in ("feature_ids", "feature_scale", "encoder_decoder_dot", "decoder_norm", "prompt_max", "alphas",
                 "term_intervention", "term_feature", "term_value", "term_given", "continuation_set", "perplexity"):
        equal(getattr(got, name), getattr(results, name))
    for name in ("names", "kinds", "term_kind", "term_where", "set_names", "continuations"):
        assert getattr(got, name) == getattr(results, name), name
    assert list(got.sets) == ["persona", "control"]
    for kind, want in results.sets.items():
        have = got.sets[kind]
        assert have.text == want.text and have.rendered == want.rendered and have.responses == want.responses
        for name in ("logprob", "kl", "tokens", "length", "finished"):
            equal(getattr(have, name), getattr(want, name))
        assert have.tokens.dtype == np.int32 and have.finished.dtype == bool
        assert sorted(have.term_stats) == sorted(want.term_stats)
        for name, values in want.term_stats.items():
            equal(have.term_stats[name], values)


def test_a_set_that_is_absent_is_not_invented(results, tmp_path):
    del results.sets["control"]
    got = read_steering(write_steering(tmp_path / "s.h5", results))
    assert list(got.sets) == ["persona"]


def test_the_summaries_computed_from_the_arrays(results):
    lp = results.sets["persona"].logprob
    assistant = results.set_logprob("persona", "assistant")
    want = np.log(np.exp(lp[:, :, 0]) + np.exp(lp[:, :, 1]))  # the set's summed probability
    np.testing.assert_allclose(assistant, want, rtol=1e-12)
    np.testing.assert_array_equal(results.set_logprob("persona", "human"), lp[:, :, 2])
    assert results.features_of(0) == () and results.features_of(1) == (5,) and results.features_of(2) == (5, 8)
    rows = results.summary()
    assert [r["intervention"] for r in rows] == results.names and rows[0]["persona_delta_assistant"] == 0
    assert rows[2]["persona_delta_assistant"] == pytest.approx(float((want[2] - want[0]).mean()), abs=1e-12)
    assert rows[1]["control_kl"] == pytest.approx(float(results.sets["control"].kl[1].mean()))
    assert rows[2]["features"] == [5, 8] and rows[0]["persona_act_before"] == []
    stats = results.sets["persona"].term_stats
    assert rows[2]["persona_act_after"] == stats["after_fired_mean"][1:].tolist()
    table = results.table().splitlines()
    assert len(table) == 1 + N_IV and table[0].split()[:4] == ["intervention", "Δlog", "p", "assistant"]
    assert table[3].startswith("clamp 5=2x + add 8=0.5") and f"{rows[2]['perplexity']:.3f}" in table[3]
    before, after = stats["before_fired_mean"][1:], stats["after_fired_mean"][1:]
    assert table[3].endswith(f"{np.nanmean(before):.3g} -> {np.nanmean(after):.3g}")


def test_another_file_is_refused(results, tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.attrs["format"] = "personamine.discover"
    with pytest.raises(PersonamineError, match=r"^'.*other\.h5' is not a personamine steering file$"):
        read_steering(other)
    newer = write_steering(tmp_path / "newer.h5", results)
    with h5py.File(newer, "r+") as f:
        f.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(PersonamineError, match=f"has format version {FORMAT_VERSION + 1}; upgrade personamine to "
                                               "read it"):
        read_steering(newer)


def _with_directions(results):
    """Intervention 2 also caps a direction over layers 1 and 2 (two rows), with their stats per set."""
    results.direction_intervention = np.array([2, 2])
    results.direction_kind, results.direction_name = ["cap", "cap"], ["L1/last", "L2/last"]
    results.direction_layer, results.direction_target = np.array([1, 2]), ["[L{layer}/last]@1:3"] * 2
    results.direction_value, results.direction_given = np.array([0.5, 0.75]), np.array([25.0, 25.0])
    results.direction_percentile, results.direction_scale = np.array([True, True]), np.array([math.nan, math.nan])
    for data in results.sets.values():
        data.direction_stats = {"n_positions": np.array([6, 6]), "before_mean": np.array([1.0, 2.0]),
                                "after_mean": np.array([0.25, 0.5]), "n_active": np.array([3, 6]),
                                "active_fraction": np.array([0.5, 1.0]), "after_max": np.array([0.5, 0.75]),
                                "after_min": np.array([-1.0, -2.0])}
    return results


def test_direction_rows_read_back_and_show_in_the_table(results, tmp_path):
    got = read_steering(write_steering(tmp_path / "s.h5", _with_directions(results)))
    for name in ("direction_intervention", "direction_layer", "direction_value", "direction_given",
                 "direction_percentile", "direction_scale"):
        equal(getattr(got, name), getattr(results, name))
    assert got.direction_kind == ["cap", "cap"] and got.direction_name == ["L1/last", "L2/last"]
    assert got.directions_of(2) == ("[L{layer}/last]@1:3",) and got.directions_of(1) == ()
    for kind, data in results.sets.items():
        for name, values in data.direction_stats.items():
            equal(got.sets[kind].direction_stats[name], values)
    assert got.table().splitlines()[3].endswith("L1 1 -> 0.25 (cap 50%); L2 2 -> 0.5 (cap 100%)")


def test_a_version_1_file_reads_as_one_without_directions(results, tmp_path):
    path = write_steering(tmp_path / "v1.h5", results)
    with h5py.File(path, "r+") as f:  # the version 1 layout: no direction rows, no direction stats
        f.attrs["format_version"] = 1
        del f["directions"]
        for kind in results.sets:
            del f[f"{kind}/direction_stats"]
    got = read_steering(path)
    assert got.direction_intervention.size == 0 and got.direction_kind == [] and got.directions_of(2) == ()
    assert got.sets["persona"].direction_stats == {} and got.table() == results.table()
