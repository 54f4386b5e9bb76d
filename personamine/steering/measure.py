"""Judge-free measurements of a steered model: no second model reads the outputs, only the model's own numbers.

- **continuation log-probabilities**: ``log p(c | prompt) = sum_i log p(c_i | prompt, c_<i)`` for each identity
  statement ``c``, the prompt run once and every continuation from its KV cache (the same numbers as one forward of
  ``prompt + c``, up to float rounding; the tests check it); the continuation's tokens count as generated positions;
- **next-token distribution at the first generated position** (the last prompt token), from the prompt's forward;
  KL divergences against the unsteered one are taken from it;
- **perplexity** of corpus windows, intervened at every position.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from personamine.model.padding import left_pad, right_pad
from personamine.steering.hooks import Steering, fixed_positions

_LOGIT_BUDGET = 1 << 28  # floats of [rows, positions, vocab] logits held at once (1 GiB in fp32)


@dataclass
class Scores:
    logprob: np.ndarray  # [P, C] float64: log p(continuation c | prompt p)
    first: torch.Tensor  # [P, V] float32 log-probabilities of the first generated token


def _cache_kwarg(model: nn.Module) -> str:
    """transformers renamed ``past_key_values`` to ``cache`` (5.x); take whichever this version's forward has."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def score_continuations(model: nn.Module, steering: Steering, prompts: list[list[int]],
                        continuations: list[list[int]], mode: str, batch_size: int, pad: int) -> Scores:
    """Each prompt once (left-padded, acting at its positions unless ``mode`` is "generated"), then every
    continuation from the prompt's KV cache (acting at its tokens unless ``mode`` is "prompt")."""
    device = next(model.parameters()).device
    n_cont, cont_width = len(continuations), max(len(c) for c in continuations)
    vocab = model.get_output_embeddings().weight.shape[0]
    logprob = np.zeros((len(prompts), n_cont), dtype=np.float64)
    first = torch.empty((len(prompts), vocab), dtype=torch.float32, device=device)
    # The continuation forward holds [prompts * continuations, cont_width, vocab] logits.
    chunk = max(1, min(batch_size, _LOGIT_BUDGET // (n_cont * cont_width * vocab)))
    cont_ids, cont_mask = right_pad(continuations, pad, device)
    cache_kwarg = _cache_kwarg(model)
    for lo in range(0, len(prompts), chunk):
        group = prompts[lo: lo + chunk]
        ids, mask, positions = left_pad(group, pad, device)
        acting = mask.bool() if mode != "generated" else torch.zeros_like(mask, dtype=torch.bool)
        with torch.inference_mode(), steering.positions(fixed_positions(acting)):
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                        logits_to_keep=1)
        with torch.inference_mode():
            # Left padding puts every prompt's last token in the last column.
            head = out.logits[:, -1].float().log_softmax(-1)
            first[lo: lo + len(group)] = head
            cache = out.cache if hasattr(out, "cache") else out.past_key_values
            del out
            cache.batch_repeat_interleave(n_cont)  # row g * n_cont + c: prompt g, continuation c
            c_ids, c_mask = cont_ids.repeat(len(group), 1), cont_mask.repeat(len(group), 1)
            c_pos = mask.sum(-1).repeat_interleave(n_cont)[:, None] + torch.arange(cont_width, device=device)
        acting = c_mask.bool() if mode != "prompt" else torch.zeros_like(c_mask, dtype=torch.bool)
        with torch.inference_mode(), steering.positions(fixed_positions(acting)):
            logits = model(input_ids=c_ids, attention_mask=torch.cat([mask.repeat_interleave(n_cont, 0), c_mask], 1),
                           position_ids=c_pos, use_cache=False, **{cache_kwarg: cache}).logits
        with torch.inference_mode():
            del cache
            logp = logits.float().log_softmax(-1)  # [rows, cont_width, V]: column i predicts token i + 1
            del logits
            token_lp = torch.cat([head.repeat_interleave(n_cont, 0).gather(-1, c_ids[:, :1]),
                                  logp[:, :-1].gather(-1, c_ids[:, 1:, None])[..., 0]], 1)
            sums = (token_lp * c_mask).sum(-1, dtype=torch.float64).cpu().numpy().reshape(len(group), n_cont)
            logprob[lo: lo + len(group)] = sums
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
