"""Discovery's pre-flight on the prompts: every non-special token but each prompt's first, norm outliers dropped, at
the layer and both neighbours; its figures equal those computed here one prompt at a time through the full model
and dictionary_learning's own SAE; a poor fit is refused in one line (or, when allowed, warned about)."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from fixtures import SAE_LAYER, sae_file

from personamine.config import DiscoverConfig
from personamine.discovery.preflight import preflight_on_prompts
from personamine.errors import PersonamineError
from personamine.model.loading import find_decoder_layers, load_model
from personamine.model.prompts import builtin_prompts_path, load_prompts, render_prompts
from personamine.saes import load_sae

LAYERS = (SAE_LAYER - 1, SAE_LAYER, SAE_LAYER + 1)


@pytest.fixture(scope="module")
def parts(tiny_model_dir, tiny_sae_dir):
    loaded = load_model(str(tiny_model_dir), SAE_LAYER + 1, dtype="float32", device="cpu")
    loaded = dataclasses.replace(loaded, layer=SAE_LAYER, layer_module=find_decoder_layers(loaded.model)[SAE_LAYER])
    texts = load_prompts(builtin_prompts_path("persona"))[:12] + load_prompts(builtin_prompts_path("control"))[:12]
    prompts = render_prompts(loaded.tokenizer, texts)
    return loaded, load_sae(str(tiny_sae_dir), layer=SAE_LAYER), prompts


@torch.no_grad()
def reference(model_dir, sae_dir, prompts):
    from fixtures import batchtopk_sae_class
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    sae = batchtopk_sae_class().from_pretrained(str(sae_file(sae_dir)), device="cpu")
    special = set(tok.all_special_ids) | {tok.pad_token_id}
    seen = {}
    for layer in LAYERS:  # each decoder layer's own output
        model.model.layers[layer].register_forward_hook(
            lambda _m, _a, out, layer=layer: seen.__setitem__(layer, out[0] if isinstance(out, tuple) else out))
    hidden = {layer: [] for layer in LAYERS}
    for p in prompts:
        model(torch.tensor([p.ids]))
        keep = [c for c in range(1, len(p.ids)) if p.ids[c] not in special]
        norms = seen[SAE_LAYER][0, keep].norm(dim=-1)
        median = sorted(norms.tolist())[(len(keep) - 1) // 2]  # the lower median
        keep = [c for c, n in zip(keep, norms.tolist(), strict=True) if n <= 10 * median]
        for layer in LAYERS:
            hidden[layer].append(seen[layer][0, keep])
    out = {}
    for layer, rows in hidden.items():
        x = torch.cat(rows)
        codes = sae.encode(x)
        err = (x - sae.decode(codes)).double().pow(2).sum()
        out[layer] = (1 - float(err / (x.double() - x.double().mean(0)).pow(2).sum()),
                      float((codes > 0).sum(1).double().mean()), x.shape[0])
    return out


def test_the_figures_equal_an_independent_computation(parts, tiny_model_dir, tiny_sae_dir, capsys):
    loaded, sae, prompts = parts
    want = reference(tiny_model_dir, tiny_sae_dir, prompts)
    got = preflight_on_prompts(loaded, sae, prompts, DiscoverConfig(batch_size=5, progress=True))
    assert got.n_tokens == want[SAE_LAYER][2] and got.layer == SAE_LAYER
    assert got.fve == pytest.approx(want[SAE_LAYER][0], abs=1e-5)
    assert got.l0 == pytest.approx(want[SAE_LAYER][1], abs=1e-9)
    assert sorted(got.neighbours) == [SAE_LAYER - 1, SAE_LAYER + 1]
    for layer in (SAE_LAYER - 1, SAE_LAYER + 1):
        assert got.neighbours[layer] == pytest.approx(want[layer][0], abs=1e-5), layer
    assert capsys.readouterr().err == f"personamine: {got.summary()}\n"  # progress on: the figures, one line


def test_a_poor_fit_is_refused_or_with_allow_low_fve_warned(parts, capsys):
    loaded, sae, prompts = parts
    strict = DiscoverConfig(min_fve=0.99, progress=False)
    with pytest.raises(PersonamineError) as info:
        preflight_on_prompts(loaded, sae, prompts, strict)
    message = str(info.value)
    assert "below the 99% minimum" in message and message.endswith("Pass --allow-low-fve to run anyway")
    assert "\n" not in message and capsys.readouterr().err == ""  # progress off: nothing printed
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = preflight_on_prompts(loaded, sae, prompts, dataclasses.replace(strict, allow_low_fve=True))
    assert not result.passed and result.min_fve == 0.99
    assert [str(w.message).endswith("(allowed by allow_low_fve)") for w in caught] == [True]
