"""Steering's config: lists given as text (as flags give them), the units and positions it knows, and every refusal
in one line before anything loads (interventions included)."""

from __future__ import annotations

import pytest

from personamine.config.steer import ALPHA_UNITS, CLAMP_UNITS, SteerConfig
from personamine.errors import PersonamineError


def test_defaults():
    cfg = SteerConfig()
    assert cfg.model is None and cfg.sae is None and cfg.layer is None and cfg.features == []
    assert cfg.clamp == [2.0] and cfg.alphas == [-0.5, -0.25, -0.1, 0.1, 0.25, 0.5]
    assert (cfg.clamp_unit, cfg.clamp_where, cfg.alpha_unit, cfg.positions) == ("auto", "active", "residual-norm",
                                                                                "all")
    assert cfg.ablate and cfg.combine and not cfg.sample and (cfg.top, cfg.max_new_tokens, cfg.ppl_tokens) == (3, 40,
                                                                                                              2048)
    assert CLAMP_UNITS == ("auto", "corpus-max", "prompt-max", "absolute")
    assert ALPHA_UNITS == ("residual-norm", "absolute")
    assert SteerConfig().clamp is not cfg.clamp  # each config its own list


def test_lists_given_as_text():
    cfg = SteerConfig(features="3,5-6", clamp="1, 2.5", alphas="-1,,0.5")
    assert cfg.features == [3, 5, 6] and cfg.clamp == [1.0, 2.5] and cfg.alphas == [-1.0, 0.5]
    assert SteerConfig(clamp="", alphas=[1, 2]).clamp == [] and SteerConfig(alphas=[1, 2]).alphas == [1.0, 2.0]
    assert all(isinstance(v, float) for v in SteerConfig(alphas=[1, 2]).alphas)


@pytest.mark.parametrize("changes, message", [
    ({"alphas": "1,two"}, "alphas: cannot parse '1,two' as comma-separated numbers"),
    ({"clamp": [1.0, float("nan")]}, "clamp must be finite numbers, got nan"),
    ({"alphas": "inf"}, "alphas must be finite numbers, got inf"),
    ({"positions": "response"}, "positions must be one of all, prompt, generated, got 'response'"),
    ({"clamp_unit": "max"}, "clamp_unit must be one of auto, corpus-max, prompt-max, absolute, got 'max'"),
    ({"clamp_where": "some"}, "clamp_where must be one of active, all, got 'some'"),
    ({"alpha_unit": "norm"}, "alpha_unit must be one of residual-norm, absolute, got 'norm'"),
    ({"top": 0}, "top must be at least 1, got 0"),
    ({"max_new_tokens": 0}, "max_new_tokens must be at least 1, got 0"),
    ({"ppl_ctx_len": 0}, "ppl_ctx_len must be at least 1, got 0"),
    ({"n_prompts": 0}, "n_prompts must be at least 1, got 0"),
    ({"ppl_tokens": -1}, "ppl_tokens must not be negative, got -1"),
    ({"temperature": 0.0}, "temperature must be a positive number and top_p in (0, 1]"),
    ({"temperature": float("inf")}, "temperature must be a positive number and top_p in (0, 1]"),
    ({"top_p": 1.5}, "temperature must be a positive number and top_p in (0, 1]"),
    ({"interventions": ["ablate:3", "clamp:4"]}, "intervention 'clamp:4': clamp needs a value, e.g. clamp:4=2"),
])
def test_bad_values_are_one_line(changes, message):
    with pytest.raises(PersonamineError) as info:
        SteerConfig(**changes)
    assert str(info.value) == message


def test_zero_perplexity_tokens_and_valid_interventions_pass():
    cfg = SteerConfig(ppl_tokens=0, interventions=["ablate:3+add:4=-1", "clamp:2=2x"], top_p=1.0, n_prompts=1)
    assert cfg.interventions == ["ablate:3+add:4=-1", "clamp:2=2x"]  # kept as text: parsed again by the run
    assert SteerConfig(sae="s", top=2).to_dict()["top"] == 2
