"""SAE training's config: the schedule's defaults derived from ``steps``, and the refusals that would leave an SAE
uncalibrated or a run meaningless."""

from __future__ import annotations

import pytest

from personamine.config.fields import field_help
from personamine.config.mine import MineConfig
from personamine.config.train_sae import TrainSaeConfig
from personamine.errors import PersonamineError


def test_defaults_and_the_schedule_derived_from_steps():
    cfg = TrainSaeConfig()
    assert (cfg.layer, cfg.dict_size, cfg.k, cfg.steps, cfg.batch_size) == (15, 4096, 32, 1500, 1024)
    assert (cfg.resolved_warmup(), cfg.resolved_threshold_start()) == (75, 750)
    assert cfg.corpus == "builtin:chat-and-prose" and cfg.held_out == 0.05 and cfg.output == "personamine-out/sae"
    short = TrainSaeConfig(steps=41)
    assert (short.resolved_warmup(), short.resolved_threshold_start()) == (2, 20)
    given = TrainSaeConfig(steps=100, warmup_steps=0, threshold_start_step=10)
    assert (given.resolved_warmup(), given.resolved_threshold_start()) == (0, 10)  # 0 is a value, not "unset"
    assert field_help(TrainSaeConfig)["ctx_len"] == field_help(MineConfig)["ctx_len"]


@pytest.mark.parametrize("changes, message", [
    ({"steps": 2}, "steps (2) must exceed threshold_start_step (1) + 1, or the SAE's threshold is never calibrated"),
    ({"steps": 100, "threshold_start_step": 99}, "steps (100) must exceed threshold_start_step (99) + 1"),
    ({"steps": 100, "warmup_steps": 100, "threshold_start_step": 5}, "warmup_steps (100) must be below steps (100)"),
    ({"held_out": 1.0}, "held_out must be a fraction between 0 and 1, got 1.0"),
    ({"skip_documents": -1}, "skip_documents must not be negative, got -1"),
    ({"ctx_len": 3}, "ctx_len must be at least 4, got 3"),
    ({"k": 0}, "k must be at least 1, got 0"),
    ({"max_tokens": 0}, "max_tokens must be at least 1, got 0"),
    ({"max_documents": 0}, "max_documents must be at least 1, got 0"),
    ({"norm_filter": -1.0}, "norm_filter must be at least 0, got -1.0"),
    ({"trainer": -1}, "trainer must be at least 0, got -1"),
    ({"k": 65, "dict_size": 64}, "k (65) cannot exceed dict_size (64)"),
])
def test_bad_values_are_one_line(changes, message):
    with pytest.raises(PersonamineError) as info:
        TrainSaeConfig(**changes)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_the_smallest_schedule_that_calibrates():
    assert TrainSaeConfig(steps=4, threshold_start_step=2, warmup_steps=0).steps == 4  # steps > start + 1
    assert TrainSaeConfig(k=64, dict_size=64).k == 64
