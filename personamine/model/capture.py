"""Capture the residual stream after one or several layers in one forward, stopping the pass after the deepest."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class _StopForward(Exception):
    pass


@torch.inference_mode()
def capture_layers(model: nn.Module, layer_modules: dict[int, nn.Module], input_ids: torch.Tensor,
                   attention_mask: torch.Tensor, position_ids: torch.Tensor | None = None) -> dict[int, torch.Tensor]:
    """Each given layer's output hidden states (B, T, D), keyed as ``layer_modules`` is, from one forward that stops
    after the deepest of them (the one ``model`` runs last): nothing after it runs.

    ``attention_mask`` is a [B, T] padding mask, or a ready [B, 1, T, T] additive mask (packed windows, with their
    own ``position_ids``). transformers 5 decoder layers return a Tensor, older ones a tuple whose first item is
    the hidden states.
    """
    if not layer_modules:
        raise ValueError("no layer to capture")
    captured: dict[int, torch.Tensor] = {}
    if len(layer_modules) == 1:
        deepest = next(iter(layer_modules))
    else:  # modules are registered in the order a decoder runs them
        rank = {id(m): i for i, m in enumerate(model.modules())}
        deepest = max(layer_modules, key=lambda k: rank[id(layer_modules[k])])

    def hook_for(key: int):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            captured[key] = output[0] if isinstance(output, tuple) else output
            if key == deepest:
                raise _StopForward
        return hook

    handles = [module.register_forward_hook(hook_for(key)) for key, module in layer_modules.items()]
    try:
        extra = {} if position_ids is None else {"position_ids": position_ids}
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **extra)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    missing = sorted(set(layer_modules) - set(captured))
    if missing:
        raise RuntimeError(f"the capture hook never ran for {missing}: are they part of this model's forward pass?")
    return captured


def capture_residual(model: nn.Module, layer_module: nn.Module, input_ids: torch.Tensor,
                     attention_mask: torch.Tensor, position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """One layer's output hidden states (B, T, D) (``capture_layers`` with one layer)."""
    return capture_layers(model, {0: layer_module}, input_ids, attention_mask, position_ids)[0]


@contextmanager
def record_output(module: nn.Module | None) -> Iterator[list[torch.Tensor]]:
    """Collect ``module``'s output during a forward inside the block (the forward continues; None: nothing)."""
    seen: list[torch.Tensor] = []
    if module is None:
        yield seen
        return

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        seen.append(output[0] if isinstance(output, tuple) else output)

    handle = module.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()
