"""The SAE's pre-flight quality check, run on the discovery prompts before anything is ranked."""

from __future__ import annotations

import sys

import torch

from personamine.config import DiscoverConfig
from personamine.discovery.vectors import prompt_batches
from personamine.model.capture import capture_layers
from personamine.model.generate import pad_id
from personamine.model.loading import find_decoder_layers
from personamine.model.prompts import RenderedPrompt, sink_prefix_ids, special_token_ids
from personamine.saes import PreflightResult, preflight


def preflight_on_prompts(loaded, sae, prompts: list[RenderedPrompt], cfg: DiscoverConfig) -> PreflightResult:
    """The SAE's quality check on the prompts: every non-special token but the first of each (the attention sink),
    minus norm outliers (10x the prompt's median norm, mining's rule), at the layer and its two neighbours; refuses
    (or, with allow_low_fve, warns) before anything is ranked. ``loaded`` holds one layer past ``loaded.layer``."""
    tok, layer = loaded.tokenizer, loaded.layer
    special = set(special_token_ids(tok, sink_prefix_ids(tok)).tolist())
    layers = find_decoder_layers(loaded.model)
    wanted = [i for i in (layer - 1, layer, layer + 1) if 0 <= i < len(layers)]
    hidden: dict[int, list] = {i: [] for i in wanted}
    with torch.inference_mode():
        for group, input_ids, mask in prompt_batches(prompts, cfg.batch_size, pad_id(tok), loaded.device):
            out = capture_layers(loaded.model, {i: layers[i] for i in wanted}, input_ids, mask)
            for row, p in enumerate(group):
                cols = torch.tensor([c for c in range(1, len(p.ids)) if p.ids[c] not in special],
                                    dtype=torch.long, device=out[layer].device)
                norms = out[layer][row, cols].float().norm(dim=-1)
                cols = cols[norms <= 10 * norms.median()] if cols.numel() else cols
                for i in wanted:
                    hidden[i].append(out[i][row, cols].float())
    rows = {i: torch.cat(parts) for i, parts in hidden.items()}
    result = preflight(sae, rows.pop(layer), layer=layer, neighbours=rows, min_fve=cfg.min_fve,
                       chunk_size=cfg.feature_chunk)
    if cfg.progress:
        print(f"personamine: {result.summary()}", file=sys.stderr)
    result.check(cfg.allow_low_fve)
    return result
