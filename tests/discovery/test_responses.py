"""The model's own responses, generated once for response pooling: greedy by default, equal to transformers'
generate run alone on each prompt; an empty response is refused in one line."""

from __future__ import annotations

import pytest
import torch

from personamine.config import DiscoverConfig
from personamine.discovery.responses import generate_responses
from personamine.errors import PersonamineError

PROMPTS = ["Who are you?", "How do you feel today, after such a long and quiet afternoon?", "Are you conscious?"]


@torch.no_grad()
def test_greedy_responses_equal_generate_alone(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    cfg = DiscoverConfig(max_new_tokens=5, batch_size=2)
    got = generate_responses(model, tok, PROMPTS, "Be brief.", cfg)
    for text, response in zip(PROMPTS, got, strict=True):
        ids = tok.apply_chat_template([{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}],
                                      add_generation_prompt=True, tokenize=True)["input_ids"]
        out = model.generate(torch.tensor([ids]), max_new_tokens=5, do_sample=False, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.eos_token_id)[0, len(ids):].tolist()
        out = out[: out.index(tok.eos_token_id)] if tok.eos_token_id in out else out
        assert response == tok.decode(out, skip_special_tokens=True).strip()


@torch.no_grad()
def test_an_empty_response_is_refused(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    model.generation_config.eos_token_id = list(range(len(tok)))  # every token ends the turn at once
    with pytest.raises(PersonamineError, match="response to .* is empty"):
        generate_responses(model, tok, PROMPTS[:1], None, DiscoverConfig(max_new_tokens=3))
