"""The demo's configs: the documented defaults (sized for a laptop's CPU) and the bounds they keep."""

from __future__ import annotations

import pytest

from personamine.config.demo import DEMO_CONVERSATIONS, DEMO_CORPUS, DemoConfig, DemoSteerConfig
from personamine.errors import PersonamineError


def test_demo_defaults():
    cfg = DemoConfig()
    assert cfg.model == "builtin:smollm2-135m-instruct" and cfg.layer == 10 and cfg.sae is None
    assert cfg.corpus == DEMO_CORPUS == "builtin:chat-and-prose"
    assert cfg.mine_corpus == DEMO_CONVERSATIONS == "builtin:conversations" and cfg.messages_column == "messages"
    assert (cfg.dict_size, cfg.k, cfg.train_tokens, cfg.top, cfg.mine_tokens) == (4096, 32, 100_000, 20, 200_000)
    assert cfg.score_roles == ["assistant"] and DemoConfig().score_roles is not cfg.score_roles
    assert cfg.output_dir == "personamine-demo" and cfg.to_dict()["layer"] == 10


@pytest.mark.parametrize("changes, message", [
    ({"dict_size": 0}, "dict_size must be at least 1, got 0"),
    ({"top": 0}, "top must be at least 1, got 0"),
    ({"mine_tokens": 0}, "mine_tokens must be at least 1, got 0"),
    ({"mine_ctx_len": 3}, "mine_ctx_len must be at least 4, got 3"),
    ({"ctx_len": 2}, "ctx_len must be at least 4, got 2"),
    ({"show": -1}, "show must be at least 0, got -1"),
    ({"train_from_document": -5}, "train_from_document must be at least 0, got -5"),
])
def test_demo_bounds_are_one_line(changes, message):
    with pytest.raises(PersonamineError) as info:
        DemoConfig(**changes)
    assert str(info.value) == message


def test_demo_steer_defaults():
    cfg = DemoSteerConfig()
    assert cfg.output_dir == DemoConfig().output_dir  # it reads what the demo wrote
    assert (cfg.top, cfg.n_prompts, cfg.max_new_tokens, cfg.ppl_tokens, cfg.show) == (3, 6, 20, 512, 2)
    assert cfg.alphas == [-0.5, -0.25, 0.25, 0.5] and cfg.clamp == [2.0] and cfg.combine is False
    assert DemoSteerConfig(top=1).to_dict() == {**cfg.to_dict(), "top": 1}
