"""What an intervention is: one or more terms, each acting on one SAE feature at the SAE's layer or on a
residual-stream direction at one or more layers.

- ``ablate f``: ``h - a_f(h) * d_f`` (the feature's whole contribution to the reconstruction removed);
- ``clamp f = v``: ``h + (v - a_f(h)) * d_f`` where the feature fires (``where="active"``) or at every position
  (``where="all"``);
- ``add f = alpha``: ``h + alpha * d_f / ||d_f||``.

``d_f = W_dec[:, f]``. The feature terms of one intervention all read the same unmodified residual and their changes
are summed, so the order they are written in does not matter.

On a direction ``v`` (``v_hat = v / ||v||``, ``p = h . v_hat``), at each layer of its range:

- ``add``: ``h + alpha * v_hat`` (alpha in the alpha unit: by default the median residual norm at that layer);
- ``ablate``: ``h - p * v_hat``;
- ``cap``: ``h - max(0, p - tau) * v_hat`` (no projection above ``tau``, the Assistant Axis code's capping);
- ``floor``: ``h + max(0, tau - p) * v_hat`` (no projection below ``tau``).

Direction terms act after the feature terms (at the SAE's layer) and one after the other, in the order written, so
a cap or floor written last holds on the layer's output.

Users write them as text, terms joined by ``+``: ``ablate:12``, ``clamp:12=2x`` (a multiple of the clamp unit,
e.g. the feature's corpus max), ``clamp:12=30`` (an absolute activation), ``add:12=-4`` (alpha, in the alpha unit),
``ablate:12+ablate:40``, ``floor:[L{layer}/last]@8:12=p25`` (see ``personamine.config.interventions``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from personamine.config.interventions import (
    CLAMP_WHERE,
    DIRECTION_KINDS,
    KINDS,
    LAYER_TEMPLATE,
    POSITIONS,
    DirectionSpec,
    Spec,
    TermSpec,
    parse_intervention,
    spec_number,
)
from personamine.errors import PersonamineError

# The grammar is the config's; its names stay importable from here, beside what the terms do.
__all__ = ["CLAMP_WHERE", "DIRECTION_KINDS", "KINDS", "POSITIONS", "UNSTEERED", "DirectionSpec", "DirectionTerm",
           "Intervention", "PercentileSource", "Term", "TermSpec", "name_of", "parse_intervention", "resolve",
           "sweep"]

# The 101 percentiles (0, 1, ..., 100) of a direction's projection at a layer: where cap and floor percentiles come
# from. One source measures them on the run's prompts (``personamine.steering.directions``); any function of this
# shape (e.g. one reading a file of stored percentiles) plugs in the same way.
PercentileSource = Callable[[str, int], np.ndarray]


@dataclass(frozen=True)
class Term:
    kind: str
    feature: int
    value: float = math.nan  # clamp: the activation it sets; add: alpha in residual units (along d_f / ||d_f||)
    where: str = "active"  # clamp only
    given: float = math.nan  # the value as given (multiple or alpha in its unit), for labels and curves


@dataclass(frozen=True)
class DirectionTerm:
    """A direction term at one layer, its value in absolute units."""

    kind: str  # add, ablate, cap or floor
    name: str  # the direction's name in the direction file
    layer: int
    unit: np.ndarray  # [hidden] float32 v_hat
    value: float = math.nan  # add: alpha times the layer's scale; cap/floor: tau
    given: float = math.nan  # alpha or tau or the percentile, as given
    percentile: bool = False
    target: str = ""  # the spec's "[name]@layers", shared by every layer of one term
    scale: float = math.nan  # add: what alpha multiplies at this layer


@dataclass(frozen=True)
class Intervention:
    name: str
    terms: tuple[Term, ...]
    directions: tuple[DirectionTerm, ...] = ()

    @property
    def features(self) -> tuple[int, ...]:
        return tuple(sorted({t.feature for t in self.terms}))

    @property
    def kind(self) -> str:
        """The terms' common kind, "mixed", or "none" (the unsteered run)."""
        kinds = {t.kind for t in self.terms} | {d.kind for d in self.directions}
        return kinds.pop() if len(kinds) == 1 else ("none" if not kinds else "mixed")

    @property
    def alpha(self) -> float:
        """The common alpha (as given) of an intervention that only adds, else NaN."""
        given = {t.given for t in self.terms} | {d.given for d in self.directions}
        if self.kind != "add" or len(given) != 1:
            return math.nan
        return given.pop()

    @property
    def layers(self) -> tuple[int, ...]:
        """The layers its direction terms act at."""
        return tuple(sorted({d.layer for d in self.directions}))


UNSTEERED = Intervention("unsteered", ())


def sweep(features: list[int], *, ablate: bool, clamp: list[float], alphas: list[float],
          combine: bool) -> list[tuple[TermSpec, ...]]:
    """The standard plan: per feature, ablate, clamp at each multiple, add at each alpha; with ``combine`` and
    several features, the same once more on all of them together."""
    groups = [[f] for f in features]
    if combine and len(features) > 1:
        groups.append(list(features))
    plan: list[tuple[TermSpec, ...]] = []
    for group in groups:
        if ablate:
            plan.append(tuple(TermSpec("ablate", f) for f in group))
        plan += [tuple(TermSpec("clamp", f, m, True) for f in group) for m in clamp]
        plan += [tuple(TermSpec("add", f, a) for f in group) for a in alphas]
    return plan


def name_of(specs: tuple[Spec, ...]) -> str:
    """``ablate 12``, ``add 12+40=-4`` (one kind and value on several features), or the labels joined by `` + ``."""
    first = specs[0]
    same = len({(s.kind, spec_number(s.given), getattr(s, "relative", None)) for s in specs}) == 1
    if len(specs) > 1 and all(isinstance(s, TermSpec) for s in specs) and same:
        tail = "" if first.kind == "ablate" else f"={spec_number(first.given)}{'x' if first.relative else ''}"
        return f"{first.kind} {'+'.join(str(s.feature) for s in specs)}{tail}"
    return " + ".join(s.label() for s in specs)


def resolve(specs: tuple[Spec, ...], *, clamp_scale: dict[int, float], alpha_scale: float, where: str,
            units: dict[tuple[str, int], np.ndarray] | None = None, own_layer: dict[str, int | None] | None = None,
            layer_scale: Callable[[int], float] | None = None,
            percentiles_of: PercentileSource | None = None) -> Intervention:
    """Put every value in absolute units: clamp multiples times the feature's scale, feature alphas times
    ``alpha_scale``; for direction terms, at each of their layers, alphas times ``layer_scale(layer)`` and
    percentiles read from ``percentiles_of(name, layer)`` (linear between its whole percentiles, as numpy's default
    percentile). ``units`` holds each direction's unit vector by (name, layer), ``own_layer`` its recorded layer."""
    terms, directions = [], []
    for s in specs:
        if isinstance(s, DirectionSpec):
            directions += _direction_terms(s, units or {}, own_layer or {}, layer_scale, percentiles_of)
        elif s.kind == "ablate":
            terms.append(Term("ablate", s.feature))
        elif s.kind == "clamp":
            value = s.given * clamp_scale[s.feature] if s.relative else s.given
            terms.append(Term("clamp", s.feature, value, where, s.given))
        else:
            terms.append(Term("add", s.feature, s.given * alpha_scale, given=s.given))
    return Intervention(name_of(specs), tuple(terms), tuple(directions))


def direction_names(spec: DirectionSpec, own_layer: dict[str, int | None]) -> list[tuple[str, int]]:
    """(name in the file, layer) at each layer ``spec`` acts at: ``{layer}`` filled in."""
    return [(spec.name.replace(LAYER_TEMPLATE, str(layer)), layer)
            for layer in spec.layer_list(own_layer.get(spec.name))]


def _direction_terms(s: DirectionSpec, units: dict[tuple[str, int], np.ndarray], own_layer: dict[str, int | None],
                     layer_scale: Callable[[int], float] | None,
                     percentiles_of: PercentileSource | None) -> list[DirectionTerm]:
    out = []
    for name, layer in direction_names(s, own_layer):
        value, scale = math.nan, math.nan
        if s.kind == "add":
            scale = layer_scale(layer) if layer_scale is not None else 1.0
            value = s.given * scale
        elif s.kind in ("cap", "floor"):
            if s.percentile:
                if percentiles_of is None:
                    raise PersonamineError(f"{s.label()}: no percentiles of the direction to read the threshold from")
                table = np.asarray(percentiles_of(name, layer), np.float64)
                value = float(np.interp(s.given, np.arange(table.size), table))
            else:
                value = s.given
        out.append(DirectionTerm(s.kind, name, layer, units[(name, layer)], value, s.given, s.percentile,
                                 s.target(), scale))
    return out
