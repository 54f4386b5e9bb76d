"""The persona direction and its SAE decomposition against an independent computation: every prompt alone through
the full model (``output_hidden_states``), codes from dictionary_learning's own ``BatchTopKSAE.encode``; several
layers and trainers in one forward equal one run each."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fixtures import SAE_LAYER, sae_file

import personamine
from personamine.files.discover import read_discovery

PERSONA = ["Who are you?", "What's it like to be you, deep down, when nobody is asking you anything at all?",
           "How do you feel?", "Are you conscious?", "What do you dream about when the garden is quiet?",
           "Do you have a self?"]
CONTROL = ["Who was Ada Lovelace?", "What's it like to be a bat?", "How does a cat feel?",
           "Are dolphins conscious, and do they dream about the sea at night?", "What do dogs dream about?",
           "Does the river have a name?"]


@pytest.fixture
def pair_files(tmp_path):
    persona, control = tmp_path / "persona.jsonl", tmp_path / "control.jsonl"
    persona.write_text("".join(json.dumps({"content": p}) + "\n" for p in PERSONA))
    control.write_text("".join(json.dumps({"content": c}) + "\n" for c in CONTROL))
    return str(persona), str(control)


def run(model_dir, sae_dir, files, tmp_path, name="d.h5", **extra):
    kwargs = dict(model=str(model_dir), sae=str(sae_dir), prompts=files[0], controls=files[1],
                  output=str(tmp_path / name), progress=False, top=16, n_boot=200, preflight=False)
    kwargs.update(extra)
    return read_discovery(personamine.discover(**kwargs))


@torch.no_grad()
def hidden_means(model_dir, texts, layer, position):
    """[n, hidden] float64: each prompt's residual after ``layer``, at its last token or averaged over its
    non-special tokens, from the full model alone."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    for text in texts:
        ids = list(tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                           tokenize=True)["input_ids"])
        h = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[layer + 1][0].double()
        keep = [len(ids) - 1] if position == "last" else [i for i, t in enumerate(ids) if t not in
                                                           set(tok.all_special_ids)]
        out.append(h[keep].mean(0).numpy())
    return np.stack(out)


@pytest.mark.parametrize("position", ["last", "prompt-mean"])
def test_direction_equals_an_independent_difference_of_means(position, tiny_model_dir, tiny_sae_dir, pair_files,
                                                             tmp_path):
    from dictionary_learning.trainers import BatchTopKSAE

    res = run(tiny_model_dir, tiny_sae_dir, pair_files, tmp_path, position=position)
    d = res.directions[(SAE_LAYER, position)]
    a, b = hidden_means(tiny_model_dir, PERSONA, SAE_LAYER, position), hidden_means(tiny_model_dir, CONTROL,
                                                                                   SAE_LAYER, position)
    v = a.mean(0) - b.mean(0)
    np.testing.assert_allclose(d.vector, v, atol=1e-4, rtol=0)
    assert d.norm == pytest.approx(np.linalg.norm(v), rel=1e-4)
    unit = v / np.linalg.norm(v)
    pa, pb = a @ unit, b @ unit
    np.testing.assert_allclose(d.projection_a, pa, atol=1e-4)
    brute = np.mean([(x > y) + 0.5 * (x == y) for x in pa for y in pb])
    assert d.auroc == pytest.approx(brute, abs=1e-12)
    assert d.auroc_ci[0] <= d.auroc <= d.auroc_ci[1]
    assert -1 <= d.split_half[1] <= d.split_half[0] <= 1

    # The decomposition: decoder cosines and each feature's share of the projection difference.
    sae = BatchTopKSAE.from_pretrained(str(sae_file(tiny_sae_dir)), device="cpu")
    dec = d.decompositions["L2"]
    w = sae.decoder.weight.detach().double().T.numpy()  # [F, hidden]
    cosine = (w @ unit) / np.linalg.norm(w, axis=1)
    np.testing.assert_allclose(dec.cosine, np.sort(cosine)[::-1][: dec.cosine.size], atol=1e-6)
    assert dec.cosine_ids[0] == int(np.argmax(cosine))
    ref_a = hidden_codes(sae, tiny_model_dir, PERSONA, position)
    ref_b = hidden_codes(sae, tiny_model_dir, CONTROL, position)
    delta = ref_a.mean(0) - ref_b.mean(0)
    contribution = delta * (w @ unit)
    np.testing.assert_allclose(dec.contribution, np.sort(contribution)[::-1][: dec.contribution.size], atol=1e-4)
    r = delta @ w
    assert dec.reconstructed_share == pytest.approx(float(r @ v) / float(v @ v), abs=1e-4)
    assert dec.reconstructed_cosine == pytest.approx(float(r @ v) / (np.linalg.norm(r) * np.linalg.norm(v)),
                                                     abs=1e-4)


@torch.no_grad()
def hidden_codes(sae, model_dir, texts, position):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    for text in texts:
        ids = list(tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                           tokenize=True)["input_ids"])
        h = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[SAE_LAYER + 1][0]
        keep = [len(ids) - 1] if position == "last" else [i for i, t in enumerate(ids) if t not in
                                                           set(tok.all_special_ids)]
        out.append(sae.encode(h[keep]).double().mean(0).numpy())
    return np.stack(out)


def test_several_layers_and_trainers_in_one_forward_equal_one_run_each(tiny_model_dir, multi_layer_sae_dir,
                                                                        pair_files, tmp_path):
    together = run(tiny_model_dir, multi_layer_sae_dir, pair_files, tmp_path, layers=[1, 2, 3],
                   position="last,prompt-mean")
    assert sorted(together.tables) == [(r, p) for r in ("L1", "L2", "L3") for p in ("last", "prompt-mean")]
    assert sorted(together.directions) == [(layer, p) for layer in (1, 2, 3) for p in ("last", "prompt-mean")]
    for layer in (1, 2, 3):
        alone = run(tiny_model_dir, multi_layer_sae_dir, pair_files, tmp_path, name=f"L{layer}.h5", layer=layer,
                    position="last,prompt-mean")
        for pooling in ("last", "prompt-mean"):
            a, b = together.tables[(f"L{layer}", pooling)], alone.tables[(f"L{layer}", pooling)]
            np.testing.assert_array_equal(a.ranking.feature_ids, b.ranking.feature_ids)
            for name in ("score", "ci_low", "ci_high", "p_value", "effect_size", "support"):
                np.testing.assert_array_equal(getattr(a.ranking, name), getattr(b.ranking, name))
            np.testing.assert_array_equal(a.persona_acts, b.persona_acts)
            np.testing.assert_array_equal(together.directions[(layer, pooling)].vector,
                                          alone.directions[(layer, pooling)].vector)
        # q-values are over every feature of one SAE and pooling, so they agree too
        np.testing.assert_array_equal(together.tables[(f"L{layer}", "last")].ranking.q_value,
                                      alone.tables[(f"L{layer}", "last")].ranking.q_value)
    # Mining a layer with features_from takes that layer's table (at the primary pooling), not the primary's.
    from personamine.config import MineConfig
    from personamine.discovery.select import resolve_features

    for layer in (1, 3):
        want = together.tables[(f"L{layer}", "last")].ranking
        picked = resolve_features(MineConfig(layer=layer, features_from=str(together.path), top=4,
                                             positive_only=False), 256)
        np.testing.assert_array_equal(picked, want.feature_ids[:4])
    trainers = run(tiny_model_dir, multi_layer_sae_dir, pair_files, tmp_path, name="t.h5", layer=2,
                   sae_trainers=[0, 1])
    assert sorted(trainers.tables) == [("L2-t0", "last"), ("L2-t1", "last")]
    assert sorted(trainers.directions[(2, "last")].decompositions) == ["L2-t0", "L2-t1"]
    assert trainers.tables[("L2-t1", "last")].sae.endswith("@trainer_1")
    picked = resolve_features(MineConfig(layer=2, sae_trainer=1, features_from=str(trainers.path), top=4,
                                         positive_only=False), 256)
    np.testing.assert_array_equal(picked, trainers.tables[("L2-t1", "last")].ranking.feature_ids[:4])


def test_directions_export_for_other_tools(tiny_model_dir, tiny_sae_dir, pair_files, tmp_path):
    from safetensors.numpy import load_file

    res = run(tiny_model_dir, tiny_sae_dir, pair_files, tmp_path, directions_out=str(tmp_path / "v.safetensors"))
    tensors = load_file(str(tmp_path / "v.safetensors"))
    np.testing.assert_array_equal(tensors[f"L{SAE_LAYER}/last"], res.directions[(SAE_LAYER, "last")].vector)
    from personamine.files.discover import export_directions

    export_directions(res.path, tmp_path / "v.npy")
    names = json.loads((tmp_path / "v.json").read_text())["names"]
    np.testing.assert_array_equal(np.load(tmp_path / "v.npy")[names.index(f"L{SAE_LAYER}/last")],
                                  res.directions[(SAE_LAYER, "last")].vector)
    # the loader mining and steering share reads all three alike, with the layer and the sides' midpoint
    from personamine.files.directions import load_directions

    d = res.directions[(SAE_LAYER, "last")]
    for source in (res.path, tmp_path / "v.npy", tmp_path / "v.safetensors"):
        (found,) = load_directions(source, names=[f"L{SAE_LAYER}/last"])
        np.testing.assert_array_equal(found.vector, d.vector)
        assert found.layer == SAE_LAYER
        assert found.mean == pytest.approx((d.projection_a.mean() + d.projection_b.mean()) / 2)
