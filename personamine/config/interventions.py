"""The intervention grammar a steering run is configured with, terms joined by ``+`` (``parse_intervention``):

- on an SAE feature at the SAE's layer: ``ablate:12``, ``clamp:12=2x``, ``add:12=-4``;
- on a residual-stream direction (a name in the run's direction file, in brackets), over one layer or a half-open
  range of layers (``@10`` or ``@8:12``, as the Assistant Axis code's ``layers_56:72``; left out: the layer the file
  records for the direction): ``add:[L10/last]@10=0.5`` (alpha), ``ablate:[axis]@8:12``,
  ``cap:[axis]@8:12=p25`` (a ceiling at the 25th percentile, 0-100, of the direction's projections) or
  ``cap:[axis]=3.5`` (an absolute projection), and ``floor:[axis]@8:12=p25`` (the same from below). ``{layer}`` in a
  name stands for each layer of the range, so each layer uses its own direction: ``floor:[L{layer}/last]@8:12=p25``.

What the terms do to the residual stream is ``personamine.steering``'s."""

from __future__ import annotations

import math
from dataclasses import dataclass

from personamine.errors import PersonamineError

KINDS = ("ablate", "clamp", "add")
DIRECTION_KINDS = ("add", "ablate", "cap", "floor")
LAYER_TEMPLATE = "{layer}"
POSITIONS = ("all", "prompt", "generated")  # where an intervention acts (special tokens never)
CLAMP_WHERE = ("active", "all")
PERCENTILE_PROMPTS = ("persona", "control", "both")  # the prompts a cap or floor percentile is measured on


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


@dataclass(frozen=True)
class DirectionSpec:
    """A direction term as the user gave it: ``kind:[name]@layers=value``."""

    kind: str
    name: str  # as written; LAYER_TEMPLATE stands for each layer
    layers: tuple[int, int] | None = None  # [start, stop); None: the direction's own layer
    given: float = math.nan  # add: alpha in the alpha unit; cap/floor: the projection or the percentile
    percentile: bool = False  # cap/floor given as a percentile ("p25")

    def layer_list(self, own: int | None = None) -> list[int]:
        """The layers it acts at; ``own`` is the direction's recorded layer, used when no range was given."""
        if self.layers is None:
            return [] if own is None else [own]
        return list(range(*self.layers))

    def target(self) -> str:
        """``[name]@8:12`` (the direction and its layers, without the kind or value)."""
        if self.layers is None:
            at = ""
        else:
            start, stop = self.layers
            at = f"@{start}" if stop == start + 1 else f"@{start}:{stop}"
        return f"[{self.name}]{at}"

    def label(self) -> str:
        if self.kind == "ablate":
            return f"ablate {self.target()}"
        return f"{self.kind} {self.target()}={'p' if self.percentile else ''}{spec_number(self.given)}"


Spec = TermSpec | DirectionSpec


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


def _split_terms(text: str) -> list[str]:
    """The terms of ``text``, split at ``+`` outside brackets (a direction's name may hold anything but ``]``)."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(depth - 1, 0)
        if ch == "+" and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts]


def parse_intervention(text: str) -> tuple[Spec, ...]:
    """``"ablate:12+clamp:40=2x+cap:[axis]@8:12=p25"`` -> its terms."""
    terms: list[Spec] = []
    what = f"intervention {text!r}"
    for part in _split_terms(text):
        kind, _, rest = part.partition(":")
        kind, rest = kind.replace(" ", ""), rest.strip()
        if rest.startswith("["):
            terms.append(_direction_term(kind, rest, what))
            continue
        rest = rest.replace(" ", "")
        feature_text, eq, value_text = rest.partition("=")
        if kind not in KINDS:
            raise PersonamineError(f"{what}: unknown kind {kind!r} (use {', '.join(KINDS)} on a feature, e.g. "
                                   "ablate:12, clamp:12=2x, add:12=-4, or add, ablate, cap, floor on a [direction])")
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
    features = [t for t in terms if isinstance(t, TermSpec)]
    if len({t.feature for t in features}) != len(features):
        raise PersonamineError(f"intervention {text!r}: each feature may appear in one term only")
    return tuple(terms)


def _direction_term(kind: str, rest: str, what: str) -> DirectionSpec:
    if kind not in DIRECTION_KINDS:
        raise PersonamineError(f"{what}: unknown kind {kind!r} for a direction (use {', '.join(DIRECTION_KINDS)}, "
                               "e.g. cap:[axis]@8:12=p25)")
    name, closed, tail = rest[1:].partition("]")
    if not closed or not name:
        raise PersonamineError(f"{what}: a direction is named in brackets, e.g. {kind}:[L10/last]")
    tail = tail.replace(" ", "")
    where, eq, value_text = tail.partition("=")
    layers = None
    if where:
        if not where.startswith("@"):
            raise PersonamineError(f"{what}: {where!r} after [{name}]: give layers as @10 or @8:12")
        first, colon, last = where[1:].partition(":")
        try:
            start = int(first)
            stop = int(last) if colon else start + 1
        except ValueError as exc:
            raise PersonamineError(f"{what}: {where!r} is not a layer or a range of layers (@10, @8:12)") from exc
        if start < 0 or stop < start:
            raise PersonamineError(f"{what}: {where!r} is not a range of layers: start at 0 or above, stop at the "
                                   "start or after it")
        layers = (start, stop)
    elif LAYER_TEMPLATE in name:
        raise PersonamineError(f"{what}: [{name}] stands for a direction per layer: give the layers, e.g. @8:12")
    if kind == "ablate":
        if eq:
            raise PersonamineError(f"{what}: ablate takes no value")
        return DirectionSpec("ablate", name, layers)
    if not eq:
        raise PersonamineError(f"{what}: {kind} needs a value, e.g. {kind}:[{name}]=" +
                               ("0.5" if kind == "add" else "p25"))
    percentile = kind in ("cap", "floor") and value_text.startswith("p")
    value = _finite(value_text.removeprefix("p") if percentile else value_text, what)
    if percentile and not 0 <= value <= 100:
        raise PersonamineError(f"{what}: percentile {value_text!r} is outside 0-100")
    return DirectionSpec(kind, name, layers, value, percentile)
