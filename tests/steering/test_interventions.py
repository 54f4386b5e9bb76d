"""Interventions as text, the standard sweep, and values put in absolute units."""

from __future__ import annotations

import math

import pytest

from personamine.errors import PersonamineError
from personamine.steering.interventions import TermSpec, parse_intervention, resolve, sweep


def test_parse_every_kind_and_combinations():
    assert parse_intervention("ablate:12") == (TermSpec("ablate", 12),)
    assert parse_intervention("clamp:12=2x") == (TermSpec("clamp", 12, 2.0, True),)
    assert parse_intervention("clamp:12=30.5") == (TermSpec("clamp", 12, 30.5, False),)
    assert parse_intervention("add:12=-4") == (TermSpec("add", 12, -4.0),)
    assert parse_intervention("ablate:12 + add:40=0.5") == (TermSpec("ablate", 12), TermSpec("add", 40, 0.5))


@pytest.mark.parametrize("text, message", [
    ("remove:12", "unknown kind 'remove'"),
    ("ablate:x", "'x' is not a feature id"),
    ("ablate:12=3", "ablate takes no value"),
    ("clamp:12", "clamp needs a value"),
    ("add:12=nan", "'nan' is not a finite number"),
    ("add:12=inf", "'inf' is not a finite number"),
    ("add:12=-inf", "'-inf' is not a finite number"),
    ("clamp:12=twox", "'two' is not a number"),
    ("ablate:12+add:12=1", "each feature may appear in one term only"),
])
def test_bad_interventions_are_one_line_errors(text, message):
    with pytest.raises(PersonamineError, match=message) as info:
        parse_intervention(text)
    assert "\n" not in str(info.value)


def test_sweep_and_names():
    plan = sweep([3, 7], ablate=True, clamp=[2.0], alphas=[-1.0, 1.0], combine=True)
    names = [resolve(s, clamp_scale={3: 10.0, 7: 4.0}, alpha_scale=5.0, where="active").name for s in plan]
    assert names == ["ablate 3", "clamp 3=2x", "add 3=-1", "add 3=1",
                     "ablate 7", "clamp 7=2x", "add 7=-1", "add 7=1",
                     "ablate 3+7", "clamp 3+7=2x", "add 3+7=-1", "add 3+7=1"]
    assert len(sweep([3], ablate=False, clamp=[], alphas=[1.0], combine=True)) == 1  # one feature: no combination


def test_resolve_puts_values_in_absolute_units():
    iv = resolve(parse_intervention("clamp:3=2x+clamp:7=1.5+add:9=-0.5+ablate:4"),
                 clamp_scale={3: 10.0, 7: 4.0, 9: 1.0, 4: 1.0}, alpha_scale=8.0, where="all")
    clamp3, clamp7, add9, ablate4 = iv.terms
    assert (clamp3.value, clamp3.given, clamp3.where) == (20.0, 2.0, "all")
    assert clamp7.value == 1.5  # absolute: not multiplied
    assert (add9.value, add9.given) == (-4.0, -0.5)
    assert math.isnan(ablate4.value)
    assert iv.kind == "mixed" and math.isnan(iv.alpha) and iv.features == (3, 4, 7, 9)
    assert iv.name == "clamp 3=2x + clamp 7=1.5 + add 9=-0.5 + ablate 4"
    added = resolve(parse_intervention("add:3=2+add:7=2"), clamp_scale={}, alpha_scale=3.0, where="active")
    assert added.kind == "add" and added.alpha == 2.0 and added.name == "add 3+7=2"
