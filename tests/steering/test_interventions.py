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


def test_direction_terms_resolve_per_layer_with_their_units():
    import numpy as np

    units = {(f"L{layer}/x", layer): np.eye(4, dtype=np.float32)[layer] for layer in range(3)}
    units[("axis", 2)] = np.ones(4, np.float32) / 2
    table = {(f"L{layer}/x", layer): np.arange(101, dtype=np.float64) * (layer + 1) for layer in range(3)}
    specs = parse_intervention("cap:[L{layer}/x]@0:3=p12.5+add:[axis]=0.5+floor:[L1/x]@1=-2+add:3=1")
    iv = resolve(specs, clamp_scale={}, alpha_scale=10.0, where="active", units=units, own_layer={"axis": 2},
                 layer_scale=lambda layer: 100.0 + layer, percentiles_of=lambda name, layer: table[(name, layer)])
    got = [(d.kind, d.name, d.layer, d.value, d.target) for d in iv.directions]
    assert got == [("cap", "L0/x", 0, 12.5, "[L{layer}/x]@0:3"), ("cap", "L1/x", 1, 25.0, "[L{layer}/x]@0:3"),
                   ("cap", "L2/x", 2, 37.5, "[L{layer}/x]@0:3"),  # between whole percentiles: linear
                   ("add", "axis", 2, 51.0, "[axis]"),  # 0.5 x the median norm at layer 2 (its recorded layer)
                   ("floor", "L1/x", 1, -2.0, "[L1/x]@1")]
    assert iv.directions[3].scale == 102.0 and np.isnan(iv.directions[0].scale)
    assert iv.terms[0].value == 10.0 and iv.kind == "mixed" and iv.layers == (0, 1, 2)
    assert iv.name == "cap [L{layer}/x]@0:3=p12.5 + add [axis]=0.5 + floor [L1/x]@1=-2 + add 3=1"
    only_adds = resolve(parse_intervention("add:[axis]@2=0.5+add:7=0.5"), clamp_scale={}, alpha_scale=1.0,
                        where="active", units=units, layer_scale=lambda _: 1.0)
    assert only_adds.kind == "add" and only_adds.alpha == 0.5  # one alpha on a feature and a direction
