"""``personamine.discover(...)``: a config, keyword arguments, or both (keywords override the config, which is left
as it was); unknown keywords named in one line before anything runs."""

from __future__ import annotations

import pytest
from fixtures import SAE_LAYER

import personamine
from personamine.config import DiscoverConfig
from personamine.jobs.discover import discover


def test_keywords_override_a_given_config(tiny_model_dir, tiny_sae_dir, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("Who are you?\nHow do you feel?\n")
    cfg = DiscoverConfig(model=str(tiny_model_dir), layer=SAE_LAYER, sae=str(tiny_sae_dir), prompts=str(prompts),
                         control=False, top=7, preflight=False, progress=False, output=str(tmp_path / "ignored.h5"))
    path = discover(cfg, output=str(tmp_path / "d.h5"), top=3)
    assert path == tmp_path / "d.h5" and not (tmp_path / "ignored.h5").exists()
    found = personamine.read_discovery(path)
    assert found.config["top"] == 3 and found.config["output"] == str(tmp_path / "d.h5")
    assert found.config["prompts"] == str(prompts) and found.persona_acts.shape[1] == 3
    assert cfg.top == 7 and cfg.output == str(tmp_path / "ignored.h5")  # the caller's config is untouched
    assert personamine.discover is discover


@pytest.mark.parametrize("kwargs, message", [
    ({"layr": 2}, "unknown discover option(s): layr (did you mean layer or layers?)"),
    ({"top_k": 5, "contrl": False}, "unknown discover option(s): contrl (did you mean control or controls or "
                                    "contrast?), top_k (did you mean top_p or top?)"),
])
def test_unknown_keywords_are_one_line_with_or_without_a_config(kwargs, message, tmp_path):
    for args in ((), (DiscoverConfig(output=str(tmp_path / "x.h5")),)):
        with pytest.raises(personamine.PersonamineError) as info:
            discover(*args, **kwargs)
        assert str(info.value) == message
    assert list(tmp_path.iterdir()) == []


def test_a_bad_value_is_refused_before_anything_loads(tmp_path):
    with pytest.raises(personamine.PersonamineError, match="^position must be among last, assistant-header, "
                                                           "prompt-mean, user, response-mean, got 'end'$"):
        discover(model=str(tmp_path / "no-model"), position="end")
