"""The pre-flight on the engine's own windows: its variance explained and L0, at the captured layer and both
neighbours, equal those of every scored token computed here one document at a time through the full model and
dictionary_learning's own SAE; too few tokens skip the check; the budget cuts the tokens."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fixtures import SAE_LAYER, corpus_texts, sae_file

from personamine.config import MineConfig
from personamine.corpus import CorpusSpec, open_manifest
from personamine.shards.plan import Shard
from personamine.shards.preflight import PREFLIGHT_MIN_TOKENS, preflight_engine
from personamine.shards.run import MiningEngine

TEXTS = corpus_texts()[:6]  # 848 tokens, each document one window


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tiny_sae_dir, tmp_path_factory):
    corpus = tmp_path_factory.mktemp("preflight") / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    # Windows long enough for every document to be one window; no norm filter, so every document token is scored.
    cfg = MineConfig(model=str(tiny_model_dir), layer=SAE_LAYER, sae=str(tiny_sae_dir), corpus=str(corpus),
                     features=[0, 1], ctx_len=512, norm_filter=0, unit_bytes=700, progress=False)
    engine = MiningEngine(cfg, np.array([0, 1]))
    manifest = open_manifest(CorpusSpec(str(corpus), unit_bytes=700))
    shards = [Shard((manifest.ref(i),)) for i in range(len(manifest))]
    return engine, shards


@torch.no_grad()
def reference(model_dir, sae_dir, texts):
    """Per layer: (FVE, L0) over every token of every document, each fed alone behind the BOS sink prefix."""
    from fixtures import batchtopk_sae_class
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    sae = batchtopk_sae_class().from_pretrained(str(sae_file(sae_dir)), device="cpu")
    hidden = {layer: [] for layer in (SAE_LAYER - 1, SAE_LAYER, SAE_LAYER + 1)}
    # Each decoder layer's own output (hidden_states would give the last layer's after the final norm).
    seen = {}
    for layer in hidden:
        model.model.layers[layer].register_forward_hook(
            lambda _m, _a, out, layer=layer: seen.__setitem__(layer, out[0] if isinstance(out, tuple) else out))
    for text in texts:
        ids = tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        model(torch.tensor([[tok.bos_token_id, *ids]]))
        for layer in hidden:
            hidden[layer].append(seen[layer][0, 1:])
    out = {}
    for layer, parts in hidden.items():
        x = torch.cat(parts)
        codes = sae.encode(x)
        err = (x - sae.decode(codes)).double().pow(2).sum()
        total = (x.double() - x.double().mean(0)).pow(2).sum()
        out[layer] = (1 - float(err / total), float((codes > 0).sum(1).double().mean()), x.shape[0])
    return out


def test_fve_and_l0_equal_an_independent_computation(setup, tiny_model_dir, tiny_sae_dir):
    engine, shards = setup
    want = reference(tiny_model_dir, tiny_sae_dir, TEXTS)
    got = preflight_engine(engine, shards, n_tokens=10**6, min_fve=0.5)[f"L{SAE_LAYER}"]  # by readout
    assert got.n_tokens == want[SAE_LAYER][2] > PREFLIGHT_MIN_TOKENS
    assert got.layer == SAE_LAYER and got.min_fve == 0.5
    assert got.fve == pytest.approx(want[SAE_LAYER][0], abs=1e-5)
    assert got.l0 == pytest.approx(want[SAE_LAYER][1], abs=1e-9)
    assert sorted(got.neighbours) == [SAE_LAYER - 1, SAE_LAYER + 1]
    for layer in (SAE_LAYER - 1, SAE_LAYER + 1):
        assert got.neighbours[layer] == pytest.approx(want[layer][0], abs=1e-5), layer
    assert got.passed, got.summary()  # the calibrated SAE fits its own layer best


def test_the_budget_cuts_the_tokens_and_too_few_skip_the_check(setup, tmp_path):
    engine, shards = setup
    assert preflight_engine(engine, shards, n_tokens=300, min_fve=0.5)[f"L{SAE_LAYER}"].n_tokens == 300
    small = tmp_path / "small.jsonl"  # two short documents: far fewer than PREFLIGHT_MIN_TOKENS scored tokens
    small.write_text("".join(json.dumps({"text": t}) + "\n" for t in ("the cat sleeps", "I think so")))
    manifest = open_manifest(CorpusSpec(str(small)))
    few = [Shard((manifest.ref(0),))]
    assert preflight_engine(engine, few, n_tokens=4096, min_fve=0.5) == {}  # no check, rather than noise
    # ... unless the budget asked for is itself that small: then it is measured on what there is.
    assert preflight_engine(engine, few, n_tokens=3, min_fve=0.5)[f"L{SAE_LAYER}"].n_tokens == 3
