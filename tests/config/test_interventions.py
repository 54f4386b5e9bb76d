"""The intervention grammar: ``ablate:12``, ``clamp:12=2x``, ``add:12=-4``, terms joined by ``+``; each term's label,
and the refusals (one line each)."""

from __future__ import annotations

import math

import pytest

from personamine.config.interventions import CLAMP_WHERE, KINDS, POSITIONS, TermSpec, parse_intervention, spec_number
from personamine.errors import PersonamineError


def test_the_vocabulary():
    assert KINDS == ("ablate", "clamp", "add")
    assert POSITIONS == ("all", "prompt", "generated")
    assert CLAMP_WHERE == ("active", "all")


def test_three_terms_with_spaces_and_every_number_form():
    terms = parse_intervention(" clamp : 4 = 0.5x + add:9=1e-1 + ablate : 0 ")
    assert terms == (TermSpec("clamp", 4, 0.5, True), TermSpec("add", 9, 0.1), TermSpec("ablate", 0))
    assert math.isnan(terms[2].given) and terms[2].relative is False
    assert parse_intervention("clamp:7=-3") == (TermSpec("clamp", 7, -3.0, False),)  # absolute, negative
    assert parse_intervention("add:7=2.50") == (TermSpec("add", 7, 2.5),)


def test_labels_print_the_term_as_it_was_meant():
    assert [t.label() for t in parse_intervention("ablate:3+clamp:4=2x+clamp:5=30.5+add:6=-0.25")] == [
        "ablate 3", "clamp 4=2x", "clamp 5=30.5", "add 6=-0.25"]
    assert TermSpec("add", 1, 1e-7).label() == "add 1=1e-07"
    assert spec_number(2.0) == "2" and spec_number(0.1 + 0.2) == "0.3" and spec_number(123456789.0) == "1.23457e+08"


@pytest.mark.parametrize("text, message", [
    ("clamp:3=2x+clamp:3=1", "each feature may appear in one term only"),  # the same kind twice
    ("ablate:3+ablate:3", "each feature may appear in one term only"),
    ("add:3=1+", "unknown kind ''"),  # a dangling '+'
    ("", "unknown kind ''"),
    ("add:3=", "'' is not a number"),
    ("clamp:3=x", "'' is not a number"),  # a multiple with no number
    ("add:3=1x", "'1x' is not a number"),  # only clamps take multiples
    ("clamp:3=1e999x", "'1e999' is not a finite number"),
    ("add:=1", "'' is not a feature id"),
    ("add:1.5=1", "'1.5' is not a feature id"),
    ("add 3=1", "unknown kind 'add3=1'"),  # spaces are dropped before parsing
])
def test_refusals_are_one_line_naming_the_text(text, message):
    with pytest.raises(PersonamineError) as info:
        parse_intervention(text)
    assert str(info.value).startswith(f"intervention {text!r}: "), str(info.value)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_term_specs_are_frozen_values():
    term = TermSpec("clamp", 2, 1.5, True)
    assert term == TermSpec("clamp", 2, 1.5, True) and hash(term) == hash(TermSpec("clamp", 2, 1.5, True))
    with pytest.raises(AttributeError):
        term.feature = 3  # type: ignore[misc]


def test_direction_terms_and_their_labels():
    from personamine.config.interventions import DIRECTION_KINDS, DirectionSpec

    assert DIRECTION_KINDS == ("add", "ablate", "cap", "floor")
    terms = parse_intervention("cap:[L{layer}/last]@8:12=p25 + floor:[axis]=-1.5+ablate:[a+b]@3+add:[x y]@0:2=0.5"
                               "+add:7=1")
    assert terms[:4] == (DirectionSpec("cap", "L{layer}/last", (8, 12), 25.0, True),
                         DirectionSpec("floor", "axis", None, -1.5), DirectionSpec("ablate", "a+b", (3, 4)),
                         DirectionSpec("add", "x y", (0, 2), 0.5))  # a name keeps its '+' and spaces
    assert terms[4] == TermSpec("add", 7, 1.0)
    assert [t.label() for t in terms] == ["cap [L{layer}/last]@8:12=p25", "floor [axis]=-1.5", "ablate [a+b]@3",
                                          "add [x y]@0:2=0.5", "add 7=1"]
    assert terms[0].layer_list() == [8, 9, 10, 11] and terms[1].layer_list(own=5) == [5]
    assert parse_intervention("cap:[d]@4:4=p0")[0].layer_list() == []  # an empty range: acts nowhere
    assert parse_intervention("cap:[d]=p100")[0].given == 100 and parse_intervention("cap:[d]=p0.5")[0].given == 0.5


@pytest.mark.parametrize("text, message", [
    ("cap:[d]=p101", "percentile 'p101' is outside 0-100"),
    ("floor:[d]=p-0.5", "percentile 'p-0.5' is outside 0-100"),
    ("cap:[d]=pnan", "'nan' is not a finite number"),
    ("cap:[d]", "cap needs a value"),
    ("ablate:[d]=1", "ablate takes no value"),
    ("clamp:[d]=1", "unknown kind 'clamp' for a direction"),
    ("add:[d", "a direction is named in brackets"),
    ("add:[]=1", "a direction is named in brackets"),
    ("add:[d]@5:3=1", "'@5:3' is not a range of layers"),
    ("add:[d]@x=1", "'@x' is not a layer or a range of layers"),
    ("add:[d]9=1", "'9' after [d]: give layers as @10 or @8:12"),
    ("add:[L{layer}]=1", "stands for a direction per layer: give the layers"),
])
def test_direction_refusals_are_one_line(text, message):
    with pytest.raises(PersonamineError) as info:
        parse_intervention(text)
    assert str(info.value).startswith(f"intervention {text!r}: ") and message in str(info.value), str(info.value)
    assert "\n" not in str(info.value)
