"""Where an SAE reads the model, and whether that is where a run captures it.

personamine captures the residual stream after one decoder layer: the output of ``model.layers[L]``. The names
formats use for that point differ, and an off-by-one between them silently mines noise (each library's source
says which point it means):

- ``blocks.L.hook_resid_post`` (SAELens, Gemma Scope, Llama Scope), dictionary_learning's ``resid_post_layer_L``,
  sparsify's ``layers.L`` and the HF-style ``model.layers.L``: the output of decoder layer L.
- ``blocks.L.hook_resid_pre``: the input of layer L, i.e. the output of layer L-1 (L = 0 is the embeddings).
- anything else (``hook_mlp_out``, ``attn.hook_z``, ``layers.L.mlp``, transcoders): not the residual stream.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

from personamine.errors import PersonamineError

RESID_POST = "resid_post"
RESID_PRE = "resid_pre"

_PATTERNS = (
    (re.compile(r"^blocks\.(\d+)\.hook_resid_post$"), RESID_POST),
    (re.compile(r"^blocks\.(\d+)\.hook_resid_pre$"), RESID_PRE),
    (re.compile(r"^resid_post_layer_(\d+)$"), RESID_POST),
    (re.compile(r"^(?:model\.)?layers\.(\d+)(?:\.output)?$"), RESID_POST),
    (re.compile(r"^blocks\.(\d+)\.(.+)$"), None),
    (re.compile(r"^(?:model\.)?layers\.(\d+)\.(.+)$"), None),
    (re.compile(r"^(?:mlp|attn)_out_layer_(\d+)$"), None),
)


@dataclass(frozen=True)
class Hook:
    """The point an SAE was trained on: its ``kind`` and ``layer`` in the format's own numbering."""

    kind: str  # resid_post, resid_pre, or a description of a point that is not the residual stream
    layer: int | None
    name: str  # as the SAE declares it
    source: str  # where it was read, for messages ("cfg.json metadata.hook_name", "folder name", ...)
    said: str = ""  # the value as its source wrote it, when not ``name`` (a bare layer number: "99")

    @property
    def is_residual(self) -> bool:
        return self.kind in (RESID_POST, RESID_PRE)

    @property
    def captured_layer(self) -> int | None:
        """The decoder layer whose output this is (resid_pre of L is the output of L-1)."""
        if self.layer is None or not self.is_residual:
            return None
        return self.layer - 1 if self.kind == RESID_PRE else self.layer

    def describe(self) -> str:
        where = f"the output of decoder layer {self.captured_layer}" if self.captured_layer is not None else "?"
        return f"{self.name} ({where}; from {self.source})"


def parse_hook(name: str, source: str) -> Hook:
    for pattern, kind in _PATTERNS:
        match = pattern.match(name)
        if match:
            return Hook(kind=kind or "not the residual stream", layer=int(match.group(1)), name=name, source=source)
    return Hook(kind=f"unknown hook point {name!r}", layer=None, name=name, source=source)


def agreeing(hooks: list[Hook | None], what: str) -> Hook | None:
    """The first of ``hooks`` (one SAE's hook as each of its sources declares it, most trusted first: a config's
    hook name, its layer field, the folder's name) after checking that every source naming a layer names the same
    one: a config saying layer 99 in a folder named for layer 15 is refused in one line naming both, never
    silently resolved. None when no source declares one."""
    named = [h for h in hooks if h is not None and h.layer is not None]
    for other in named[1:]:
        if other.layer != named[0].layer:
            first = named[0]
            raise PersonamineError(f"SAE {what} declares two layers: {first.source} says "
                                   f"{first.said or first.name}, but {other.source} says {other.said or other.name}; "
                                   "fix its config (or folder name) to the layer it was trained on")
    return named[0] if named else next((h for h in hooks if h is not None), None)


def resolve_layer(layer: int | None, hook: Hook | None, what: str) -> int:
    """The decoder layer a run captures: ``layer`` if given, else the one the SAE declares."""
    if layer is not None:
        return layer
    if hook is not None and hook.captured_layer is not None:
        if hook.captured_layer < 0:
            raise PersonamineError(f"SAE {what} reads {hook.name}, the embeddings: not a decoder layer's output")
        return hook.captured_layer
    raise PersonamineError(f"SAE {what} does not declare the layer it was trained on: pass layer (--layer)")


def check_hook(hook: Hook | None, layer: int, what: str, why: str = "") -> None:
    """Raise when the SAE's hook is not the output of decoder ``layer``; warn when the SAE does not say (``why``:
    what its files lack)."""
    if hook is None or hook.layer is None:
        why = f" ({why})" if why else ""
        warnings.warn(f"SAE {what} does not declare the layer it was trained on{why}: using it on layer {layer} "
                      "unchecked (the pre-flight quality check still measures the fit)", UserWarning, stacklevel=3)
        return
    if not hook.is_residual:
        raise PersonamineError(f"SAE {what} reads {hook.name} ({hook.kind}, from {hook.source}); personamine "
                               "captures the residual stream after a decoder layer")
    if hook.captured_layer != layer:
        raise PersonamineError(f"SAE {what} was trained on {hook.describe()}, but the run captures the output of "
                               f"decoder layer {layer} (blocks.{layer}.hook_resid_post)")
