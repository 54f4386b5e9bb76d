"""What an intervention is: one or more terms, each acting on one SAE feature at the SAE's layer.

- ``ablate f``: ``h - a_f(h) * d_f`` (the feature's whole contribution to the reconstruction removed);
- ``clamp f = v``: ``h + (v - a_f(h)) * d_f`` where the feature fires (``where="active"``) or at every position
  (``where="all"``);
- ``add f = alpha``: ``h + alpha * d_f / ||d_f||``.

``d_f = W_dec[:, f]``. The terms of one intervention all read the same unmodified residual and their changes are
summed, so the order they are written in does not matter.

Users write them as text, terms joined by ``+``: ``ablate:12``, ``clamp:12=2x`` (a multiple of the clamp unit,
e.g. the feature's corpus max), ``clamp:12=30`` (an absolute activation), ``add:12=-4`` (alpha, in the alpha unit),
``ablate:12+ablate:40``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from personamine.config.interventions import CLAMP_WHERE, KINDS, POSITIONS, TermSpec, parse_intervention, spec_number

# The grammar is the config's; its names stay importable from here, beside what the terms do.
__all__ = ["CLAMP_WHERE", "KINDS", "POSITIONS", "UNSTEERED", "Intervention", "Term", "TermSpec", "name_of",
           "parse_intervention", "resolve", "sweep"]


@dataclass(frozen=True)
class Term:
    kind: str
    feature: int
    value: float = math.nan  # clamp: the activation it sets; add: alpha in residual units (along d_f / ||d_f||)
    where: str = "active"  # clamp only
    given: float = math.nan  # the value as given (multiple or alpha in its unit), for labels and curves


@dataclass(frozen=True)
class Intervention:
    name: str
    terms: tuple[Term, ...]

    @property
    def features(self) -> tuple[int, ...]:
        return tuple(sorted({t.feature for t in self.terms}))

    @property
    def kind(self) -> str:
        """The terms' common kind, "mixed", or "none" (the unsteered run)."""
        kinds = {t.kind for t in self.terms}
        return kinds.pop() if len(kinds) == 1 else ("none" if not kinds else "mixed")

    @property
    def alpha(self) -> float:
        """The common alpha (as given) of an intervention that only adds, else NaN."""
        if self.kind != "add" or len({t.given for t in self.terms}) != 1:
            return math.nan
        return self.terms[0].given


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


def name_of(specs: tuple[TermSpec, ...]) -> str:
    """``ablate 12``, ``add 12+40=-4`` (one kind and value on several features), or the labels joined by `` + ``."""
    first = specs[0]
    if len(specs) > 1 and len({(s.kind, spec_number(s.given), s.relative) for s in specs}) == 1:
        tail = "" if first.kind == "ablate" else f"={spec_number(first.given)}{'x' if first.relative else ''}"
        return f"{first.kind} {'+'.join(str(s.feature) for s in specs)}{tail}"
    return " + ".join(s.label() for s in specs)


def resolve(specs: tuple[TermSpec, ...], *, clamp_scale: dict[int, float], alpha_scale: float,
            where: str) -> Intervention:
    """Put every value in absolute units: clamp multiples times the feature's scale, alphas times ``alpha_scale``."""
    terms = []
    for s in specs:
        if s.kind == "ablate":
            terms.append(Term("ablate", s.feature))
        elif s.kind == "clamp":
            value = s.given * clamp_scale[s.feature] if s.relative else s.given
            terms.append(Term("clamp", s.feature, value, where, s.given))
        else:
            terms.append(Term("add", s.feature, s.given * alpha_scale, given=s.given))
    return Intervention(name_of(specs), tuple(terms))
