"""Run configs: every field documented (for --help), unknown fields named with the closest real ones, bad values
refused with one line."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil

import pytest

import personamine
from personamine.config import MineConfig, check_fields, field_help
from personamine.errors import PersonamineError


def config_classes() -> list[type]:
    """Every dataclass named ``*Config`` defined anywhere in the package, so configs added later are covered."""
    found = {}
    for info in pkgutil.walk_packages(personamine.__path__, "personamine."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (isinstance(value, type) and dataclasses.is_dataclass(value) and value.__name__.endswith("Config")
                    and value.__module__ == module.__name__):
                found[f"{value.__module__}.{value.__name__}"] = value
    return [found[k] for k in sorted(found)]


def test_every_config_field_has_help():
    classes = config_classes()
    names = {c.__name__ for c in classes}
    assert {"MineConfig", "DiscoverConfig", "TrainSaeConfig", "DemoConfig"} <= names, names
    undocumented = [f"{c.__name__}.{name}" for c in classes for name, text in field_help(c).items()
                    if len(text.strip()) < 8]
    assert not undocumented, f"fields without a knob(default, 'help') text: {undocumented}"


def test_unknown_fields_suggest_the_closest_names(tmp_path):
    with pytest.raises(PersonamineError) as err:
        MineConfig.from_dict({"topk": 5, "layr": 3, "zzz": 1})
    assert str(err.value) == ("unknown config field(s): layr (did you mean layer or layers?), topk (did you mean "
                              "top_k or top?), zzz")
    job = tmp_path / "job.toml"
    job.write_text("ctx_lenn = 32\n")
    with pytest.raises(PersonamineError, match=r"ctx_lenn \(did you mean ctx_len\?\)"):
        MineConfig.from_toml(job)
    # The Python entry points: keyword arguments that are not fields.
    with pytest.raises(PersonamineError, match=r"unknown mine option\(s\): topk \(did you mean top_k or top\?\)"):
        personamine.mine(topk=5)
    with pytest.raises(PersonamineError, match=r"unknown discover option\(s\): promts \(did you mean prompts\?\)"):
        personamine.discover(promts="p.txt")
    check_fields(MineConfig, ["layer", "top_k"], "config field")  # known names pass


@pytest.mark.parametrize("field,value,message", [
    ("top", 0, "top must be at least 1, got 0"),
    ("batch_tokens", 0, "batch_tokens must be at least 1, got 0"),
    ("feature_chunk", 0, "feature_chunk must be at least 1, got 0"),
    ("max_tokens", -5, "max_tokens must be at least 1, got -5"),
    ("max_documents", 0, "max_documents must be at least 1, got 0"),
    ("norm_filter", -1.0, "norm_filter must be at least 0, got -1.0"),
    ("ctx_len", 3, "ctx_len must be at least 4, got 3"),
])
def test_out_of_range_values_are_refused(field, value, message):
    with pytest.raises(PersonamineError) as err:
        MineConfig(**{field: value})
    assert str(err.value) == message
