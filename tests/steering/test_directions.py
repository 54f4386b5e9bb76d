"""The units direction terms are given in, measured on the unsteered model: each layer's median residual norm over
the prompts' tokens and the percentiles of a direction's projections over the tokens the interventions act on,
against an independent computation (one unpadded forward per sequence, numpy's percentile)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures import SENTENCES

from personamine.steering.directions import measure_units


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def _after(model, ids, layer):
    seen = {}
    handle = model.model.layers[layer].register_forward_hook(
        lambda _m, _a, out: seen.__setitem__("h", out[0] if isinstance(out, tuple) else out))
    try:
        with torch.inference_mode():
            model(input_ids=torch.tensor([ids]))
    finally:
        handle.remove()
    return seen["h"][0].double().numpy()


@pytest.mark.parametrize("positions, counted", [("all", "persona"), ("generated", "both"), ("prompt", "control")])
def test_norms_and_percentiles_equal_an_independent_computation(tiny, positions, counted):
    model, tok = tiny
    special_ids = {*tok.all_special_ids, tok.pad_token_id}
    special = torch.zeros(model.get_input_embeddings().num_embeddings, dtype=torch.bool)
    special[list(special_ids)] = True
    ids = [tok(t)["input_ids"] for t in SENTENCES[:6]]
    # "prompt" and "response" halves of different lengths; one response holds the end token (special: left out).
    sequences = {"persona": [(s[: len(s) // 2], s[len(s) // 2:]) for s in ids[:3]],
                 "control": [(s[:3], s[3:] + [tok.eos_token_id]) for s in ids[3:]]}
    rng = np.random.default_rng(0)
    units = {}
    for name, layer in (("a", 1), ("b", 1), ("a", 3)):
        v = rng.standard_normal(64)
        units[(name, layer)] = (v / np.linalg.norm(v)).astype(np.float32)
    got = measure_units(model, list(model.model.layers), special, sequences, units, positions=positions,
                        percentile_prompts=counted, batch_size=2, pad=tok.pad_token_id)
    for layer in (1, 3):
        norms, rows = [], []
        for kind, items in sequences.items():
            for prompt, response in items:
                seq = prompt + response
                h = _after(model, seq, layer)
                real = np.array([t not in special_ids for t in seq])
                in_prompt = np.arange(len(seq)) < len(prompt)
                norms.append(np.linalg.norm(h[real & in_prompt], axis=-1))
                acting = {"all": real, "prompt": real & in_prompt, "generated": real & ~in_prompt}[positions]
                if counted in (kind, "both"):
                    rows.append(h[acting])
        norms_all = np.sort(np.concatenate(norms))
        assert got.layer_scale(layer) == pytest.approx(float(norms_all[(norms_all.size - 1) // 2]), rel=1e-5)
        for name in ("a", "b"):
            if (name, layer) not in units:
                continue
            proj = np.concatenate(rows) @ units[(name, layer)].astype(np.float64)
            np.testing.assert_allclose(got.percentiles_of(name, layer), np.percentile(proj, np.arange(101)),
                                       atol=1e-5)
