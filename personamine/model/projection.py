"""A response's projection on residual-stream directions: the mean over the response's tokens of ``h . v_hat`` at one
layer, read with the prompt before it (persona vectors' data screening, arXiv 2507.21509)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from personamine.model.capture import capture_residual
from personamine.model.padding import right_pad


@torch.inference_mode()
def response_projections(model: nn.Module, layer_module: nn.Module, prompts: list[list[int]],
                         responses: list[list[int]], units: torch.Tensor, pad_id: int) -> np.ndarray:
    """[N, K] float64: for each (prompt, response) pair of token ids, read as one sequence ``prompt + response``, the
    mean over the response's positions of the layer's output dotted with each unit vector (``units``: [D, K]
    float32). One forward for the whole list (the caller batches), right-padded so each sequence sits at its own
    positions and never sees the pads; the forward stops at the layer. An empty response has no mean: NaN."""
    out = np.full((len(prompts), units.shape[1]), np.nan)
    device = units.device
    ids, mask = right_pad([p + r for p, r in zip(prompts, responses, strict=True)], pad_id, device)
    hidden = capture_residual(model, layer_module, ids, mask)
    dots = (hidden.float() @ units).double()  # [B, T, K]
    for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        if response:
            out[i] = dots[i, len(prompt): len(prompt) + len(response)].mean(0).cpu().numpy()
    return out
