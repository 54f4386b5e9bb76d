"""Capture the residual stream after one layer and stop the forward pass there."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class _StopForward(Exception):
    pass


@torch.inference_mode()
def capture_residual(model: nn.Module, layer_module: nn.Module, input_ids: torch.Tensor,
                     attention_mask: torch.Tensor, position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Return the layer's output hidden states (B, T, D); nothing after that layer runs.

    ``attention_mask`` is a [B, T] padding mask, or a ready [B, 1, T, T] additive mask (packed windows, with their
    own ``position_ids``).

    transformers 5 decoder layers return a Tensor, older ones a tuple whose first item is the hidden states.
    """
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)
        raise _StopForward

    handle = layer_module.register_forward_hook(hook)
    try:
        extra = {} if position_ids is None else {"position_ids": position_ids}
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **extra)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError("the capture hook never ran: is the layer part of this model's forward pass?")
    return captured[0]


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
