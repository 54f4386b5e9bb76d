"""The explanations run's config: feature lists and scorers given as text, the output's default name, the API key
never serialised, and the refusals in one line."""

from __future__ import annotations

import pytest

from personamine.config.explain import BACKENDS, SCORERS, ExplainConfig
from personamine.errors import PersonamineError


def test_defaults():
    cfg = ExplainConfig(results="m.h5")
    assert cfg.backend == "local" and cfg.model is None and cfg.features == [] and cfg.scorers == list(SCORERS)
    assert (cfg.n_explain, cfg.n_test, cfg.n_negatives, cfg.texts_per_prompt) == (10, 20, 20, 1)
    assert cfg.temperature == 0.0 and cfg.mark_threshold == 0.3 and cfg.top_logprobs == 20
    assert SCORERS == ("detection", "fuzzing") and BACKENDS == ("local", "openai")
    assert ExplainConfig(results="n.h5").scorers is not cfg.scorers


def test_text_forms_of_lists():
    assert ExplainConfig(results="m.h5", features="all").features == []  # every feature of the file
    assert ExplainConfig(results="m.h5", features="2,5-6").features == [2, 5, 6]
    assert ExplainConfig(results="m.h5", scorers="fuzzing,").scorers == ["fuzzing"]


def test_output_path_and_the_secret_key():
    assert str(ExplainConfig(results="a/b.h5", output="c/d.h5").output_path()) == "c/d.h5"
    assert str(ExplainConfig(results="a/mine.hdf5").output_path()) == "a/mine.explanations.h5"
    data = ExplainConfig(results="m.h5", api_key="sk-secret", backend="openai").to_dict()
    assert "api_key" not in data and "sk-secret" not in repr(data) and data["backend"] == "openai"


@pytest.mark.parametrize("changes, message", [
    ({"scorers": ""}, "scorers must be among detection, fuzzing, got ''"),
    ({"scorers": ["detection", "simulation"]}, "scorers must be among detection, fuzzing, got 'detection, "
                                               "simulation'"),
    ({"texts_per_prompt": 0}, "texts_per_prompt must be at least 1, got 0"),
    ({"concurrency": 0}, "concurrency must be at least 1, got 0"),
    ({"explanation_tokens": 0}, "explanation_tokens must be at least 1, got 0"),
    ({"n_test": -1}, "n_test must not be negative, got -1"),
    ({"n_negatives": -2}, "n_negatives must not be negative, got -2"),
    ({"top_logprobs": -1}, "top_logprobs must not be negative, got -1"),
    ({"persona_prompts": -1}, "persona_prompts must not be negative, got -1"),
    ({"mark_threshold": -0.1}, "mark_threshold must be in [0, 1), got -0.1"),
    ({"mark_threshold": 1.0}, "mark_threshold must be in [0, 1), got 1.0"),
    ({"features": "x"}, "cannot parse feature list 'x': expected ids like 1,5,9 or 3-6"),
])
def test_bad_values_are_one_line(changes, message):
    with pytest.raises(PersonamineError) as info:
        ExplainConfig(results="m.h5", **changes)
    assert str(info.value) == message


def test_zero_counts_that_switch_scoring_parts_off_pass():
    cfg = ExplainConfig(results="m.h5", n_test=0, n_negatives=0, top_logprobs=0, persona_prompts=0, mark_threshold=0)
    assert (cfg.n_test, cfg.n_negatives, cfg.top_logprobs) == (0, 0, 0)
