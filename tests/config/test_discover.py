"""Discovery's config: the fields it shares with mining documented once, its defaults, and its refusals."""

from __future__ import annotations

import pytest

from personamine.config.discover import POSITIONS, DiscoverConfig
from personamine.config.fields import field_help
from personamine.config.mine import MineConfig
from personamine.errors import PersonamineError


def test_defaults():
    cfg = DiscoverConfig()
    assert cfg.model == "builtin:smollm2-135m-instruct" and cfg.sae == "" and cfg.layer is None
    assert (cfg.position, cfg.top, cfg.batch_size, cfg.feature_chunk) == ("last", 100, 16, 8192)
    assert cfg.control and cfg.preflight and cfg.prompts is None and cfg.controls is None
    assert cfg.date_string == "26 Jul 2024" and cfg.output == "personamine-out/discover.h5"
    assert POSITIONS == ("last", "assistant-header", "prompt-mean", "user", "response-mean")
    assert (cfg.contrast, cfg.responses, cfg.n_boot, cfg.seed, cfg.layers, cfg.direction_layers) == (
        "controls", "generate", 1000, 0, [], [])
    assert cfg.positions == ["last"] and DiscoverConfig(control=False).contrast == "none"


def test_shared_fields_have_minings_help_word_for_word():
    mine, mine_defaults, disc = field_help(MineConfig), MineConfig(), field_help(DiscoverConfig)
    for name in ("model", "layer", "gguf_file", "revision", "dtype", "device", "sae", "sae_trainer",
                 "allow_uncalibrated", "feature_chunk", "progress"):
        assert disc[name] == mine[name], name
        assert getattr(DiscoverConfig(), name) == getattr(mine_defaults, name), name


@pytest.mark.parametrize("position", POSITIONS)
def test_every_position_is_accepted(position):
    assert DiscoverConfig(position=position).position == position


@pytest.mark.parametrize("changes, message", [
    ({"position": "first"}, "position must be among last, assistant-header, prompt-mean, user, response-mean, got "
                            "'first'"),
    ({"position": "last,first"}, "position must be among last, assistant-header, prompt-mean, user, response-mean, "
                                 "got 'last,first'"),
    ({"contrast": "pairs"}, "contrast must be one of controls, roles, models, none, got 'pairs'"),
    ({"contrast": "models"}, "contrast models needs model_b, the other model"),
    ({"responses": "maybe"}, "responses must be one of generate, given, got 'maybe'"),
    ({"n_boot": 1}, "n_boot must be at least 2, got 1"),
    ({"layers": "3,-1"}, "layers must not be negative, got [3, -1]"),
    ({"directions_out": "v.txt"}, "directions_out must name a .safetensors or .npy file, got 'v.txt'"),
    ({"top": 0}, "top must be at least 1, got 0"),
    ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
    ({"feature_chunk": -1}, "feature_chunk must be at least 1, got -1"),
    ({"sae_trainer": -1}, "sae_trainer must be at least 0, got -1"),
])
def test_bad_values_are_one_line(changes, message):
    with pytest.raises(PersonamineError) as info:
        DiscoverConfig(**changes)
    assert str(info.value) == message


def test_several_positions_and_layers_parse_from_text():
    cfg = DiscoverConfig(position="last, response-mean,last", layers="3-5,9", sae_trainers="0,1")
    assert cfg.positions == ["last", "response-mean"] and cfg.layers == [3, 4, 5, 9] and cfg.sae_trainers == [0, 1]
    assert DiscoverConfig(position=["user", "last"]).positions == ["user", "last"]


def test_to_dict_holds_every_field():
    cfg = DiscoverConfig(sae="x", top=3, position="user")
    data = cfg.to_dict()
    assert DiscoverConfig(**data) == cfg and data["top"] == 3 and data["position"] == "user"
