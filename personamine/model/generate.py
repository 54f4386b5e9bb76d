"""Batched generation from rendered prompts (discovery's own responses; steering's, with its hooks active).

``transformers``' own ``generate`` (left padding, attention mask, KV cache), with every option that changes
which tokens come out set explicitly: values left unset would be filled from the model's
``generation_config.json`` (Llama-3.1-Instruct's turns sampling on at temperature 0.6).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from personamine.model.padding import left_pad


@dataclass
class GenerationSettings:
    max_new_tokens: int = 40
    sample: bool = False  # False: greedy
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 16


@dataclass
class Generations:
    token_ids: np.ndarray  # [P, max_new_tokens] int32, -1 past each response's end (the end token not included)
    length: np.ndarray  # [P] int32 tokens per response
    finished: np.ndarray  # [P] bool: the response ended with an end-of-turn token (else it hit max_new_tokens)


def end_ids(model: nn.Module, tokenizer) -> list[int]:
    """Tokens that end a response: the model's generation config's and the tokenizer's EOS."""
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids = [configured] if isinstance(configured, int) else list(configured or [])
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return sorted(set(int(i) for i in ids))


def pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pad or 0)


def generate(model: nn.Module, tokenizer, prompts: list[list[int]], settings: GenerationSettings, *,
             around_batch: Callable[[torch.Tensor], AbstractContextManager] | None = None) -> Generations:
    """Responses to ``prompts`` (token ids, already rendered). ``around_batch(attention_mask)`` is entered around
    each batch's generation (steering activates its hooks there)."""
    from transformers import GenerationConfig

    stop, pad = end_ids(model, tokenizer), pad_id(tokenizer)
    sampling = {"temperature": settings.temperature, "top_p": settings.top_p, "top_k": 0} if settings.sample else {
        "temperature": 1.0, "top_p": 1.0}
    config = GenerationConfig(max_new_tokens=settings.max_new_tokens, min_new_tokens=0, do_sample=settings.sample,
                              num_beams=1, repetition_penalty=1.0, no_repeat_ngram_size=0, pad_token_id=pad,
                              eos_token_id=stop, **sampling)
    device = next(model.parameters()).device
    n = settings.max_new_tokens
    out = np.full((len(prompts), n), -1, dtype=np.int32)
    length = np.zeros(len(prompts), dtype=np.int32)
    finished = np.zeros(len(prompts), dtype=bool)
    stop_set = set(stop)
    for batch, lo in enumerate(range(0, len(prompts), settings.batch_size)):
        group = prompts[lo: lo + settings.batch_size]
        ids, mask, _ = left_pad(group, pad, device)
        if settings.sample:
            torch.manual_seed(settings.seed + batch)  # the same draws for every intervention
        with torch.inference_mode(), (around_batch(mask) if around_batch is not None else nullcontext()):
            sequences = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        for row, tokens in enumerate(sequences[:, ids.shape[1]:].tolist()):
            end = next((j for j, t in enumerate(tokens) if t in stop_set), None)
            keep = tokens if end is None else tokens[:end]
            out[lo + row, : len(keep)] = keep
            length[lo + row], finished[lo + row] = len(keep), end is not None
    return Generations(out, length, finished)
