"""Each prompt's reading at every readout in one forward per batch: the SAE codes of each readout (an SAE at a
layer), and the raw residual at each layer asked for, averaged over the prompt's positions for each pooling.
Prompts are right-padded into batches (a causal model's real positions never see the pads, so batching changes
nothing) and every activation is checked finite."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from personamine.errors import PersonamineError
from personamine.model.capture import capture_layers
from personamine.model.generate import pad_id
from personamine.model.loading import find_decoder_layers
from personamine.model.padding import right_pad
from personamine.model.prompts import RenderedPrompt
from personamine.saes.base import Sae, all_finite, overflow_hint


@dataclass
class Readout:
    """One SAE read at one layer's output: ``name`` keys its tables (``L10``; ``L10-t1`` when several trainers of a
    layer are read)."""

    name: str
    layer: int
    trainer: int
    sae: Sae
    encoder: object  # every feature, exactly (Sae.encoder(None))
    label: str  # the SAE as files name it (sae@trainer_N)


@dataclass
class Readings:
    codes: dict[tuple[str, str], np.ndarray]  # (readout name, pooling) -> [n, n_features] float32
    residuals: dict[tuple[int, str], np.ndarray]  # (layer, pooling) -> [n, hidden] float32


def prompt_batches(prompts: list[RenderedPrompt], batch_size: int, pad: int,
                   device: torch.device) -> Iterator[tuple[list[RenderedPrompt], torch.Tensor, torch.Tensor]]:
    for lo in range(0, len(prompts), batch_size):
        group = prompts[lo: lo + batch_size]
        yield group, *right_pad([p.ids for p in group], pad, device)


@torch.inference_mode()
def read_prompts(model: nn.Module, tokenizer, readouts: list[Readout], renderings: dict[str, list[RenderedPrompt]],
                 residual_layers: list[int], batch_size: int, bar=None) -> Readings:
    """Every pooling's renderings of the same ``n`` prompts (``renderings[pooling][i]``): renderings with the same
    tokens share one forward, which stops after the deepest layer read."""
    poolings = list(renderings)
    n = len(renderings[poolings[0]])
    # One forward per distinct token sequence; each carries the (pooling, prompt, positions) read from it.
    uses: dict[tuple[int, ...], list[tuple[str, int, RenderedPrompt]]] = {}
    for pooling, items in renderings.items():
        if len(items) != n:
            raise ValueError("every pooling renders the same prompts")
        for i, p in enumerate(items):
            uses.setdefault(tuple(p.ids), []).append((pooling, i, p))
    layers = find_decoder_layers(model)
    wanted = sorted({r.layer for r in readouts} | set(residual_layers))
    device = next(model.parameters()).device
    codes = {(r.name, pooling): np.zeros((n, r.encoder.n_features), np.float32)
             for r in readouts for pooling in poolings}
    residuals: dict[tuple[int, str], np.ndarray] = {}
    keys = list(uses)
    sequences = [uses[k][0][2] for k in keys]
    for lo, (_, input_ids, mask) in zip(range(0, len(keys), batch_size),
                                        prompt_batches(sequences, batch_size, pad_id(tokenizer), device), strict=True):
        hidden = capture_layers(model, {i: layers[i] for i in wanted}, input_ids, mask)
        targets = [(row, pooling, i, p) for row, key in enumerate(keys[lo: lo + batch_size])
                   for pooling, i, p in uses[key]]
        rows = torch.tensor([row for row, _, _, p in targets for _ in p.positions], device=device)
        cols = torch.tensor([c for _, _, _, p in targets for c in p.positions], device=device)
        which = torch.tensor([t for t, (_, _, _, p) in enumerate(targets) for _ in p.positions], device=device)
        if not bool((mask[rows, cols] == 1).all()):
            raise RuntimeError("a prompt position fell on padding")
        counts = torch.tensor([len(p.positions) for _, _, _, p in targets], dtype=torch.float32, device=device)
        for layer in residual_layers:
            picked = hidden[layer][rows, cols].float()
            means = torch.zeros((len(targets), picked.shape[1]), dtype=torch.float32, device=device)
            means.index_add_(0, which, picked)
            means = (means / counts[:, None]).cpu().numpy()
            for t, (_, pooling, i, _) in enumerate(targets):
                residuals.setdefault((layer, pooling), np.zeros((n, picked.shape[1]), np.float32))[i] = means[t]
        for readout in readouts:
            picked = hidden[readout.layer][rows, cols]
            for start, end, acts in readout.encoder.iter_encode(picked):
                if not all_finite(acts):  # one sum per block; the details only on failure
                    _nonfinite(acts, start, readout, targets, which, cols, tokenizer, model)
                summed = torch.zeros((len(targets), end - start), dtype=torch.float32, device=device)
                summed.index_add_(0, which, acts)
                means = (summed / counts[:, None]).cpu().numpy()
                for t, (_, pooling, i, _) in enumerate(targets):
                    codes[(readout.name, pooling)][i, start:end] = means[t]
        if bar is not None:
            bar.update(len(input_ids))
    return Readings(codes, residuals)


def prompt_vectors(loaded, encoder, prompts: list[RenderedPrompt], batch_size: int, bar=None) -> np.ndarray:
    """[len(prompts), n_features] float32: each prompt's SAE codes at ``loaded.layer``, averaged over its
    positions (``read_prompts`` with one readout and one pooling)."""
    readout = Readout("L", loaded.layer, 0, None, encoder, "")  # type: ignore[arg-type]
    return read_prompts(loaded.model, loaded.tokenizer, [readout], {"p": prompts}, [], batch_size, bar).codes[
        ("L", "p")]


def _nonfinite(acts, start: int, readout: Readout, targets, which, cols, tokenizer, model) -> None:
    bad = ~torch.isfinite(acts)
    p, f = (int(i) for i in bad.nonzero()[0])
    _, _, _, prompt = targets[int(which[p])]
    position = int(cols[p])
    token = tokenizer.decode([prompt.ids[position]])
    hint = overflow_hint(getattr(model, "dtype", None))
    raise PersonamineError(
        f"feature {int(readout.encoder.features[start + f])} is {float(acts[p, f])} on prompt {prompt.text!r}, token "
        f"{position} ({token!r}); {int(bad.sum()):,} of the batch's {bad.numel():,} activations are not finite: the "
        f"model's activations or the SAE's encoding overflowed{hint}")
