"""The units direction terms are given in, measured on the run's own prompts with the model unsteered.

- **alpha**: at each layer a direction term acts at, the median residual norm there over the prompts' tokens (both
  sets, special tokens left out), as the feature terms' alpha unit is at the SAE's layer;
- **percentiles** of a direction's projection ``h . v_hat`` at a layer, over the tokens the interventions act on
  (``positions``: the prompt's, the unsteered response's, or both; special tokens never) of the chosen prompt set
  (``percentile_prompts``: by default the persona prompts, the Assistant talking about itself): ``percentiles_of``
  returns the 101 whole percentiles, the shape any other source of stored percentiles plugs in with
  (``personamine.steering.interventions.PercentileSource``).

Each sequence is the prompt followed by the unsteered response, run once without a cache, the pass stopping after
the deepest layer needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from personamine.errors import PersonamineError
from personamine.model.capture import capture_layers
from personamine.model.padding import right_pad


@dataclass
class PromptUnits:
    """Median residual norms per layer and percentile tables per (direction, layer)."""

    norms: dict[int, float]
    percentiles: dict[tuple[str, int], np.ndarray]  # [101]: percentiles 0, 1, ..., 100

    def layer_scale(self, layer: int) -> float:
        return self.norms[layer]

    def percentiles_of(self, name: str, layer: int) -> np.ndarray:
        return self.percentiles[(name, layer)]


def measure_units(model: nn.Module, layers: list[nn.Module], special: torch.Tensor,
                  sequences: dict[str, list[tuple[list[int], list[int]]]],
                  units: dict[tuple[str, int], np.ndarray], *, positions: str, percentile_prompts: str,
                  batch_size: int, pad: int) -> PromptUnits:
    """``sequences``: per prompt set, (prompt ids, unsteered response ids) per prompt; ``units``: the unit vector of
    each direction at each layer it acts at; ``special``: a [vocab] bool mask of the tokens never acted on."""
    device = next(model.parameters()).device
    wanted = sorted({layer for _, layer in units})
    by_layer = {layer: [key for key in units if key[1] == layer] for layer in wanted}
    vectors = {layer: torch.stack([torch.from_numpy(np.asarray(units[k], np.float32)) for k in keys]).to(device)
               for layer, keys in by_layer.items()}
    norms: dict[int, list[torch.Tensor]] = {layer: [] for layer in wanted}
    projections: dict[int, list[torch.Tensor]] = {layer: [] for layer in wanted}
    counted = ("persona", "control") if percentile_prompts == "both" else (percentile_prompts,)
    for kind, items in sequences.items():
        for lo in range(0, len(items), batch_size):
            group = items[lo: lo + batch_size]
            ids, mask = right_pad([p + r for p, r in group], pad, device)
            col = torch.arange(ids.shape[1], device=device)
            n_prompt = torch.tensor([len(p) for p, _ in group], device=device)[:, None]
            real = mask.bool() & ~special[ids]
            in_prompt = real & (col < n_prompt)
            acting = {"prompt": in_prompt, "generated": real & ~in_prompt, "all": real}[positions]
            captured = capture_layers(model, {layer: layers[layer] for layer in wanted}, ids, mask)
            for layer, h in captured.items():
                h = h.float()
                norms[layer].append(h[in_prompt].norm(dim=-1))
                if kind in counted:
                    projections[layer].append(h[acting] @ vectors[layer].T)
    out_norms = {layer: float(torch.cat(v).median()) for layer, v in norms.items()}
    tables = {}
    for layer, keys in by_layer.items():
        p = torch.cat(projections[layer]).double().cpu().numpy()
        if p.shape[0] == 0:
            raise PersonamineError(f"no {positions} tokens of the {percentile_prompts} prompts to measure the "
                                   "directions' percentiles on")
        for j, key in enumerate(keys):
            tables[key] = np.percentile(p[:, j], np.arange(101))
    return PromptUnits(out_norms, tables)
