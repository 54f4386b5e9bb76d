"""Each prompt's SAE codes averaged over its positions, in batches of right-padded prompts, with every activation
checked finite."""

from __future__ import annotations

import numpy as np
import torch

from personamine.errors import PersonamineError
from personamine.model.capture import capture_residual
from personamine.model.prompts import RenderedPrompt
from personamine.saes.base import all_finite, overflow_hint


def prompt_batches(prompts: list[RenderedPrompt], batch_size: int, pad_id: int, device: torch.device):
    for lo in range(0, len(prompts), batch_size):
        group = prompts[lo: lo + batch_size]
        width = max(len(p.ids) for p in group)
        input_ids = torch.full((len(group), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for row, p in enumerate(group):
            # Right padding: a causal model's real positions never see the pads, so batching changes nothing.
            input_ids[row, : len(p.ids)] = torch.tensor(p.ids)
            mask[row, : len(p.ids)] = 1
        yield group, input_ids.to(device), mask.to(device)


def prompt_vectors(loaded, encoder, prompts: list[RenderedPrompt], batch_size: int, bar=None) -> np.ndarray:
    """[len(prompts), n_features] float32: each prompt's SAE codes averaged over its positions."""
    with torch.inference_mode():
        return _prompt_vectors(loaded, encoder, prompts, batch_size, bar)


def _prompt_vectors(loaded, encoder, prompts: list[RenderedPrompt], batch_size: int, bar) -> np.ndarray:
    tok = loaded.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out = np.zeros((len(prompts), encoder.n_features), dtype=np.float32)
    row0 = 0
    for group, input_ids, mask in prompt_batches(prompts, batch_size, int(pad or 0), loaded.device):
        hidden = capture_residual(loaded.model, loaded.layer_module, input_ids, mask)
        rows = torch.tensor([r for r, p in enumerate(group) for _ in p.positions], device=hidden.device)
        cols = torch.tensor([c for p in group for c in p.positions], device=hidden.device)
        if not bool((mask[rows, cols] == 1).all()):
            raise RuntimeError("a prompt position fell on padding")
        picked = hidden[rows, cols]  # [n_positions, D]
        counts = torch.tensor([len(p.positions) for p in group], dtype=torch.float32, device=hidden.device)
        for start, end, acts in encoder.iter_encode(picked):
            if not all_finite(acts):  # one sum per block; the details only on failure
                _nonfinite(acts, start, encoder, group, rows, cols, loaded)
            summed = torch.zeros((len(group), end - start), dtype=torch.float32, device=hidden.device)
            summed.index_add_(0, rows, acts)
            out[row0: row0 + len(group), start:end] = (summed / counts[:, None]).cpu().numpy()
        row0 += len(group)
        if bar is not None:
            bar.update(len(group))
    return out


def _nonfinite(acts, start: int, encoder, group: list[RenderedPrompt], rows, cols, loaded) -> None:
    bad = ~torch.isfinite(acts)
    p, f = (int(i) for i in bad.nonzero()[0])
    prompt, position = group[int(rows[p])], int(cols[p])
    token = loaded.tokenizer.decode([prompt.ids[position]])
    hint = overflow_hint(getattr(loaded.model, "dtype", None))
    raise PersonamineError(
        f"feature {int(encoder.features[start + f])} is {float(acts[p, f])} on prompt {prompt.text!r}, token "
        f"{position} ({token!r}); {int(bad.sum()):,} of the batch's {bad.numel():,} activations are not finite: the "
        f"model's activations or the SAE's encoding overflowed{hint}")
