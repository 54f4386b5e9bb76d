"""The Assistant's own responses to the prompts, generated once (greedy by default) for response pooling and stored
in the discovery file."""

from __future__ import annotations

from torch import nn

from personamine.config import DiscoverConfig
from personamine.errors import PersonamineError
from personamine.model.generate import GenerationSettings, generate
from personamine.model.prompts import render_prompts


def generate_responses(model: nn.Module, tokenizer, texts: list[str], system_prompt: str | None,
                       cfg: DiscoverConfig) -> list[str]:
    """One response per prompt, rendered as discovery renders it (a user turn and the generation prompt); the
    response is the decoded text up to the end-of-turn token, without special tokens."""
    prompts = [p.ids for p in render_prompts(tokenizer, texts, system_prompt=system_prompt,
                                             date_string=cfg.date_string)]
    settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, sample=cfg.sample, temperature=cfg.temperature,
                                  top_p=cfg.top_p, seed=cfg.seed, batch_size=cfg.batch_size)
    out = generate(model, tokenizer, prompts, settings)
    responses = [tokenizer.decode(out.token_ids[i, : out.length[i]].tolist(), skip_special_tokens=True).strip()
                 for i in range(len(texts))]
    empty = [texts[i] for i, r in enumerate(responses) if not r]
    if empty:
        raise PersonamineError(f"the model's response to {empty[0]!r} is empty ({len(empty)} of {len(texts)} "
                               "prompts): response-mean has nothing to read; give responses in the prompts file "
                               "(responses given) or raise max_new_tokens")
    return responses
