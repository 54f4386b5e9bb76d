"""A response's projection equals an independent computation: one sequence at a time, the full model with
output_hidden_states, the mean over the response's positions of h . v / ||v||."""

from __future__ import annotations

import numpy as np
import torch
from fixtures import SAE_LAYER, TINY_HIDDEN_SIZE
from transformers import AutoModelForCausalLM

from personamine.model.loading import find_decoder_layers
from personamine.model.projection import response_projections


def test_batched_projection_equals_one_sequence_full_forward(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((2, TINY_HIDDEN_SIZE)).astype(np.float32) * 3
    units = torch.from_numpy((vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).T.copy())
    prompts = [[1, 5, 9, 14], [1, 7], [1, 3, 3, 8, 20, 21, 4]]
    responses = [[30, 31, 32], [40, 41, 42, 43, 44, 45], []]
    got = response_projections(model, find_decoder_layers(model)[SAE_LAYER], prompts, responses, units, pad_id=0)
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        if not r:
            assert np.isnan(got[i]).all()  # an empty response has no mean
            continue
        with torch.no_grad():
            h = model(torch.tensor([p + r]), output_hidden_states=True).hidden_states[SAE_LAYER + 1][0].double()
        want = (h[len(p):] @ torch.from_numpy(vectors.T).double()).mean(0).numpy() / np.linalg.norm(vectors, axis=1)
        np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-5)
