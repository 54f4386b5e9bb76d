"""Judge-free measurements of a steered model: no second model reads the outputs, only the model's own numbers.

- **continuation log-probabilities**: ``log p(c | prompt) = sum_i log p(c_i | prompt, c_<i)`` from one forward of
  ``prompt + c``, for each identity statement ``c``; the continuation's tokens count as generated positions;
- **next-token distribution at the first generated position** (the last prompt token), from the same forwards;
  KL divergences against the unsteered one are taken from it;
- **perplexity** of corpus windows, intervened at every position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from personamine.steering.hooks import Steering, fixed_positions
from personamine.steering.padding import left_pad

_LOGIT_BUDGET = 1 << 28  # floats of [rows, positions, vocab] logits held at once (1 GiB in fp32)


@dataclass
class Scores:
    logprob: np.ndarray  # [P, C] float64: log p(continuation c | prompt p)
    first: torch.Tensor  # [P, V] float32 log-probabilities of the first generated token


def score_continuations(model: nn.Module, steering: Steering, prompts: list[list[int]],
                        continuations: list[list[int]], mode: str, batch_size: int, pad: int) -> Scores:
    """Every (prompt, continuation) pair in one left-padded forward each, acting at ``mode`` positions."""
    device = next(model.parameters()).device
    pairs = [(p, c) for p in range(len(prompts)) for c in range(len(continuations))]
    logprob = np.zeros((len(prompts), len(continuations)), dtype=np.float64)
    first: torch.Tensor | None = None
    vocab = model.get_output_embeddings().weight.shape[0]
    keep = max(len(c) for c in continuations) + 1
    rows = max(1, min(batch_size, _LOGIT_BUDGET // (keep * vocab)))
    for lo in range(0, len(pairs), rows):
        group = pairs[lo: lo + rows]
        ids, mask, positions = left_pad([prompts[p] + continuations[c] for p, c in group], pad, device)
        width = ids.shape[1]
        cont_len = torch.tensor([len(continuations[c]) for _, c in group], device=device)
        generated = torch.arange(width, device=device) >= width - cont_len[:, None]
        region = {"all": mask.bool(), "prompt": mask.bool() & ~generated, "generated": generated}[mode]
        with torch.inference_mode(), steering.positions(fixed_positions(region)):
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False,
                           logits_to_keep=keep).logits
        with torch.inference_mode():
            logp = logits.float().log_softmax(-1)  # [B, keep, V]; kept column j is sequence column width-keep+j
            del logits
            targets = ids[:, width - keep + 1:]  # what kept columns 0..keep-2 predict
            token_lp = logp[:, :-1].gather(-1, targets[..., None])[..., 0]
            j = torch.arange(keep - 1, device=device)
            in_cont = j >= keep - 1 - cont_len[:, None]
            sums = (token_lp * in_cont).sum(-1, dtype=torch.float64).cpu().numpy()
            last_prompt = keep - 1 - cont_len  # kept column of each row's last prompt token
            if first is None:
                first = torch.empty((len(prompts), vocab), dtype=torch.float32, device=device)
            for r, (p, c) in enumerate(group):
                logprob[p, c] = sums[r]
                if c == 0:
                    first[p] = logp[r, last_prompt[r]]
    return Scores(logprob, first)


def kl_divergence(reference: torch.Tensor, other: torch.Tensor) -> np.ndarray:
    """``KL(reference || other)`` per row, from log-probabilities [P, V], in nats."""
    with torch.inference_mode():
        return torch.nn.functional.kl_div(other, reference, log_target=True, reduction="none").sum(
            -1, dtype=torch.float64).cpu().numpy()


def corpus_nll(model: nn.Module, steering: Steering, windows: list[list[int]], n_prefix: int, batch_size: int,
               pad: int) -> tuple[float, int]:
    """(summed negative log-likelihood, tokens predicted) over the windows' tokens after their ``n_prefix`` sink
    prefix, with the intervention at every position."""
    device = next(model.parameters()).device
    vocab = model.get_output_embeddings().weight.shape[0]
    width = max(len(w) for w in windows)
    rows = max(1, min(batch_size, _LOGIT_BUDGET // (width * vocab)))
    total, count = 0.0, 0
    for lo in range(0, len(windows), rows):
        group = windows[lo: lo + rows]
        ids, mask, positions = left_pad(group, pad, device)
        with torch.inference_mode(), steering.positions(fixed_positions(mask.bool())):
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits
        with torch.inference_mode():
            w = ids.shape[1]
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:],
                                                    reduction="none")
            del logits
            lengths = torch.tensor([len(g) for g in group], device=device)
            # Column t+1 holds a content token when it lies past the row's padding and sink prefix.
            target_col = torch.arange(1, w, device=device)
            scored = target_col >= w - lengths[:, None] + n_prefix
            total += float(nll[scored].sum(dtype=torch.float64))
            count += int(scored.sum())
    return total, count
