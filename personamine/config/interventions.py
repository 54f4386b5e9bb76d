"""The intervention grammar a steering run is configured with: ``ablate:12``, ``clamp:12=2x``, ``add:12=-4``, terms
joined by ``+`` (``parse_intervention``). What the terms do to the residual stream is ``personamine.steering``'s."""

from __future__ import annotations

import math
from dataclasses import dataclass

from personamine.errors import PersonamineError

KINDS = ("ablate", "clamp", "add")
POSITIONS = ("all", "prompt", "generated")  # where an intervention acts (special tokens never)
CLAMP_WHERE = ("active", "all")


@dataclass(frozen=True)
class TermSpec:
    """A term as the user gave it, before its value is put in absolute units."""

    kind: str
    feature: int
    given: float = math.nan  # clamp: the value or multiple; add: alpha in the alpha unit
    relative: bool = False  # clamp given as a multiple ("2x")

    def label(self) -> str:
        if self.kind == "ablate":
            return f"ablate {self.feature}"
        return f"{self.kind} {self.feature}={spec_number(self.given)}{'x' if self.relative else ''}"


def spec_number(value: float) -> str:
    return f"{value:g}"


def _finite(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise PersonamineError(f"{what}: {text!r} is not a number") from exc
    if not math.isfinite(value):
        raise PersonamineError(f"{what}: {text!r} is not a finite number")
    return value


def parse_intervention(text: str) -> tuple[TermSpec, ...]:
    """``"ablate:12+clamp:40=2x"`` -> its terms."""
    terms = []
    for part in text.replace(" ", "").split("+"):
        kind, _, rest = part.partition(":")
        feature_text, eq, value_text = rest.partition("=")
        what = f"intervention {text!r}"
        if kind not in KINDS:
            raise PersonamineError(f"{what}: unknown kind {kind!r} (use {', '.join(KINDS)}, e.g. ablate:12, "
                                   "clamp:12=2x, add:12=-4)")
        try:
            feature = int(feature_text)
        except ValueError as exc:
            raise PersonamineError(f"{what}: {feature_text!r} is not a feature id") from exc
        if kind == "ablate":
            if eq:
                raise PersonamineError(f"{what}: ablate takes no value")
            terms.append(TermSpec("ablate", feature))
            continue
        if not eq:
            raise PersonamineError(f"{what}: {kind} needs a value, e.g. {kind}:{feature}=2")
        relative = kind == "clamp" and value_text.endswith("x")
        terms.append(TermSpec(kind, feature, _finite(value_text.removesuffix("x") if relative else value_text,
                                                     what), relative))
    if len({(t.kind, t.feature) for t in terms}) != len(terms) or len({t.feature for t in terms}) != len(terms):
        raise PersonamineError(f"intervention {text!r}: each feature may appear in one term only")
    return tuple(terms)
