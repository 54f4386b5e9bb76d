"""Logit lens from two checkpoint tensors equals the full model's W_U @ (norm_weight * W_dec[:, f])."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from fixtures import mine_kwargs, populate_hub_cache, sae_file

import personamine
from personamine.errors import PersonamineError
from personamine.saes.logit_lens import logit_lens

FEATURES = [0, 3, 17, 100, 255]


def full_model_lens(model_dir, ae_path, features, n):
    """The definition, from the FULL model and the dictionary_learning SAE: no personamine code involved."""
    from dictionary_learning.trainers import BatchTopKSAE
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    sae = BatchTopKSAE.from_pretrained(str(ae_path), device="cpu")
    with torch.no_grad():
        w_dec = sae.decoder.weight[:, features]  # [D, F]
        logits = model.get_output_embeddings().weight @ (model.model.norm.weight[:, None] * w_dec)  # [V, F]
    up = logits.topk(n, dim=0)
    down = logits.topk(n, dim=0, largest=False)
    return up.indices.T.numpy(), up.values.T.numpy(), down.indices.T.numpy(), down.values.T.numpy()


def assert_lens_equal(lens, expected):
    ids_up, v_up, ids_down, v_down = expected
    np.testing.assert_array_equal(lens.promoted_ids, ids_up)
    np.testing.assert_array_equal(lens.suppressed_ids, ids_down)
    np.testing.assert_allclose(lens.promoted_values, v_up, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lens.suppressed_values, v_down, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def ae_path(tiny_sae_dir):
    return sae_file(tiny_sae_dir)


@pytest.fixture(scope="module")
def tied_sharded_dir(tiny_model_dir, tmp_path_factory):
    """A tiny Llama like the fixture's but with tied embeddings, saved in several safetensors shards + an index."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("tied-sharded")
    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.tie_word_embeddings = True
    torch.manual_seed(1)
    AutoModelForCausalLM.from_config(config).save_pretrained(out, max_shard_size="40KB")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    # The cases this fixture exists for: several files, and no lm_head tensor at all.
    assert len(set(index["weight_map"].values())) > 2
    assert "lm_head.weight" not in index["weight_map"]
    return out


def test_untied_single_file_equals_full_model(tiny_model_dir, ae_path):
    assert not (tiny_model_dir / "model.safetensors.index.json").exists()
    lens = logit_lens(str(tiny_model_dir), ae_path, np.array(FEATURES), top_n=12)
    assert lens.attrs["unembedding"] == "lm_head.weight"
    assert_lens_equal(lens, full_model_lens(tiny_model_dir, ae_path, FEATURES, 12))


def test_tied_sharded_checkpoint_equals_full_model(tied_sharded_dir, ae_path):
    # Small chunks make the feature and vocabulary loops run several rounds.
    lens = logit_lens(str(tied_sharded_dir), ae_path, np.array(FEATURES), top_n=7, feature_chunk=2, vocab_chunk=50)
    assert lens.attrs["unembedding"] == "model.embed_tokens.weight"
    assert_lens_equal(lens, full_model_lens(tied_sharded_dir, ae_path, FEATURES, 7))


def test_hub_repo_from_offline_cache(tied_sharded_dir, ae_path, hf_home):
    repo = "personamine-tests/tiny-llama-tied"
    populate_hub_cache(repo, tied_sharded_dir, hub_cache=hf_home / "hub")
    lens = logit_lens(repo, ae_path, np.array(FEATURES), top_n=7)
    assert_lens_equal(lens, full_model_lens(tied_sharded_dir, ae_path, FEATURES, 7))


def test_n_vocab_limits_the_ranking(tiny_model_dir, ae_path):
    lens = logit_lens(str(tiny_model_dir), ae_path, np.array(FEATURES), top_n=5, n_vocab=100)
    assert lens.promoted_ids.max() < 100 and lens.suppressed_ids.max() < 100
    # Restricted to rows < 100, it is the full-model ranking of those rows.
    from transformers import AutoModelForCausalLM

    from personamine.saes.tensors import open_torch

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    w_dec = open_torch(ae_path)["decoder.weight"][:, FEATURES].float()
    with torch.no_grad():
        logits = model.lm_head.weight[:100] @ (model.model.norm.weight[:, None] * w_dec)
    np.testing.assert_array_equal(lens.promoted_ids, logits.topk(5, dim=0).indices.T.numpy())


def test_checkpoint_without_safetensors_is_a_clear_error(tiny_model_dir, ae_path, tmp_path):
    shutil.copy(tiny_model_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(PersonamineError, match="needs a safetensors checkpoint"):
        logit_lens(str(tmp_path), ae_path, np.array(FEATURES))


def test_mining_file_stores_the_lens(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, ae_path, tmp_path):
    res = personamine.read_results(personamine.mine(
        **mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp_path, max_documents=6)))
    from transformers import AutoTokenizer

    n_vocab = len(AutoTokenizer.from_pretrained(tiny_model_dir))
    direct = logit_lens(str(tiny_model_dir), ae_path, res.feature_ids, n_vocab=n_vocab)
    for name, value in direct.arrays().items():
        np.testing.assert_array_equal(getattr(res.logit_lens, name), value, err_msg=name)
    assert res.logit_lens.promoted_ids.shape == (len(res.feature_ids), 10)
    assert res.logit_lens.promoted_ids.max() < n_vocab
    # Every lens token can be printed from the file alone.
    assert set(res.logit_lens.promoted_ids.ravel().tolist()) <= set(res.vocab_text)
