"""What every config is made of: a field and its help in one ``knob``, keyword overrides checked by name, bounds and
feature lists; every refusal one line."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from personamine.config.fields import (
    DEFAULT_DATE,
    DEFAULT_MODEL,
    at_least,
    check_fields,
    field_help,
    knob,
    parse_feature_list,
    resolve_config,
)
from personamine.errors import PersonamineError


@dataclass
class Toy:
    width: int = knob(8, "how wide")
    height: int | None = knob(None, "how tall")
    names: list[str] = knob(help="some names", factory=lambda: ["a"])
    scale: float = knob(1.0)


def test_knob_carries_the_default_the_factory_and_the_help():
    a, b = Toy(), Toy()
    assert (a.width, a.height, a.names, a.scale) == (8, None, ["a"], 1.0)
    a.names.append("b")
    assert b.names == ["a"]  # a factory: each config its own list
    assert field_help(Toy) == {"width": "how wide", "height": "how tall", "names": "some names", "scale": ""}

    @dataclass
    class Required:
        path: str = knob(help="no default: the caller must give it")

    assert Required("x").path == "x" and field_help(Required) == {"path": "no default: the caller must give it"}
    with pytest.raises(TypeError):
        Required()


def test_resolve_config_builds_or_overrides():
    assert resolve_config(Toy, None, {"width": 3}, "toy") == Toy(width=3)
    given = Toy(width=5, height=2)
    assert resolve_config(Toy, given, {}, "toy") is given  # nothing to override: the config itself
    changed = resolve_config(Toy, given, {"height": 9}, "toy")
    assert changed == Toy(width=5, height=9) and given.height == 2  # a copy: the caller's config is untouched


def test_unknown_names_are_one_error_with_the_closest_fields():
    with pytest.raises(PersonamineError) as info:
        resolve_config(Toy, None, {"widht": 1, "heigth": 2, "colour": 3}, "toy")
    assert str(info.value) == ("unknown toy option(s): colour, heigth (did you mean height?), widht (did you mean "
                               "width?)")
    with pytest.raises(PersonamineError, match=r"^unknown config field\(s\): scales \(did you mean scale\?\)$"):
        check_fields(Toy, ["width", "scales"], "config field")
    check_fields(Toy, [], "config field")


def test_at_least_skips_unset_fields_and_names_the_first_too_small():
    at_least(Toy(height=None), 1, "height")  # None: not set
    at_least(Toy(width=4), 4, "width")  # the bound itself passes
    with pytest.raises(PersonamineError) as info:
        at_least(Toy(width=3, height=0), 4, "width", "height")
    assert str(info.value) == "width must be at least 4, got 3"
    with pytest.raises(PersonamineError, match=r"^scale must be at least 0\.5, got 0\.25$"):
        at_least(Toy(scale=0.25), 0.5, "scale")


@pytest.mark.parametrize("text, ids", [("1,5,9", [1, 5, 9]), ("3-6", [3, 4, 5, 6]), ("7", [7]),
                                       (" 1 , 3-4 ,, 10 ", [1, 3, 4, 10]), ("", []), ("5-5", [5]), ("6-4", []),
                                       ("-3", [-3])])
def test_feature_lists(text, ids):
    assert parse_feature_list(text) == ids


@pytest.mark.parametrize("text", ["a", "1,x", "1-", "1-2-3", "1.5"])
def test_a_feature_list_that_does_not_parse_is_one_line(text):
    with pytest.raises(PersonamineError) as info:
        parse_feature_list(text)
    assert str(info.value) == f"cannot parse feature list {text!r}: expected ids like 1,5,9 or 3-6"


def test_the_shared_defaults():
    assert DEFAULT_MODEL == "builtin:smollm2-135m-instruct"
    assert DEFAULT_DATE == "26 Jul 2024"
