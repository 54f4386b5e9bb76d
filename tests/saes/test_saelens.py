"""SAELens layout (cfg.json + sae_weights.safetensors): exact encoding against sae-lens's own SAE.encode."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from fixtures import (
    SAELENS_D_IN,
    SAELENS_D_SAE,
    assert_codes_match,
    populate_hub_cache,
    random_activations,
    sae_config,
    write_saelens,
)
from safetensors.torch import save_file

from personamine.errors import PersonamineError
from personamine.saes import load_sae, prepare_sae, read_sae_meta
from personamine.saes.locate import SaeSpec

D_IN, D_SAE = SAELENS_D_IN, SAELENS_D_SAE
FEATURES = np.array([90, 3, 41, 0, 77])


def library_codes(folder, x):
    from sae_lens import SAE

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sae = SAE.load_from_disk(str(folder), device="cpu")
    with torch.no_grad():
        return sae.encode(x)


CASES = [("standard", {}), ("jumprelu", {}), ("gated", {}), ("jumprelu", {"apply_b_dec": False}),
         ("standard", {"normalize": "constant_norm_rescale"}), ("jumprelu", {"normalize": "layer_norm"}),
         ("topk", {}), ("topk", {"rescale": True})]


@pytest.mark.parametrize(("architecture", "options"), CASES)
def test_encode_equals_saelens(architecture, options, tmp_path):
    folder = write_saelens(tmp_path / "sae", architecture, **options)
    x = random_activations(d=D_IN)
    want = library_codes(folder, x)
    sae = load_sae(str(folder))
    assert sae.meta.architecture == architecture and sae.meta.format == "saelens"
    assert_codes_match(sae.encode(x, chunk_size=40), want)  # all features, in chunks
    targeted = sae.encoder(FEATURES, chunk_size=2, exact_topk=True).encode(x)
    assert_codes_match(targeted, want[:, FEATURES], check_sparsity=False)


def test_topk_subset_needs_the_exact_mode(tmp_path):
    sae = load_sae(str(write_saelens(tmp_path / "sae", "topk")))
    with pytest.raises(PersonamineError, match="TopK SAE .* not exact; pass exact_topk"):
        sae.encoder(FEATURES)
    sae.encoder(np.arange(D_SAE))  # every feature is exact without asking


def test_reconstruction_equals_saelens_decode(tmp_path):
    from sae_lens import SAE

    folder = write_saelens(tmp_path / "sae", "jumprelu", normalize="constant_norm_rescale")
    x = random_activations(d=D_IN)
    lib = SAE.load_from_disk(str(folder), device="cpu")
    with torch.no_grad():
        want = lib.decode(lib.encode(x))  # decode undoes the per-token normalisation
    sae = load_sae(str(folder))
    torch.testing.assert_close(sae.decode(sae.encode(x), x=x), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae.decoder_directions(FEATURES), lib.W_dec[FEATURES].detach())


def test_hook_names_map_to_the_captured_layer(tmp_path):
    pre = write_saelens(tmp_path / "pre", "standard", hook="blocks.3.hook_resid_pre")
    meta, layer = prepare_sae(SaeSpec(str(pre)), hidden_size=D_IN, num_layers=4)
    assert layer == 2 and meta.hook.captured_layer == 2  # resid_pre of 3 is the output of layer 2
    with pytest.raises(PersonamineError, match=r"blocks\.3\.hook_resid_pre \(the output of decoder layer 2.*but the "
                                               r"run captures the output of decoder layer 3"):
        prepare_sae(SaeSpec(str(pre), layer=3), hidden_size=D_IN, num_layers=4)
    mlp = write_saelens(tmp_path / "mlp", "standard", hook="blocks.2.hook_mlp_out")
    with pytest.raises(PersonamineError, match="hook_mlp_out .*captures the residual stream"):
        prepare_sae(SaeSpec(str(mlp), layer=2), hidden_size=D_IN, num_layers=4)
    with pytest.raises(PersonamineError, match="has width 64, but the model's hidden size is 32"):
        prepare_sae(SaeSpec(str(pre)), hidden_size=32, num_layers=4)


def test_missing_tensor_is_named(tmp_path):
    folder = write_saelens(tmp_path / "sae", "jumprelu")
    from safetensors.torch import load_file

    tensors = load_file(str(folder / "sae_weights.safetensors"))
    del tensors["threshold"]
    save_file(tensors, str(folder / "sae_weights.safetensors"))
    with pytest.raises(PersonamineError, match="missing tensor\\(s\\) threshold"):
        load_sae(str(folder))


def test_hub_folder_reads_only_the_config_for_metadata(tmp_path, hf_home, monkeypatch):
    import huggingface_hub

    write_saelens(tmp_path / "repo" / "blocks.2.hook_resid_post", "jumprelu")
    populate_hub_cache("personamine-tests/saelens-tiny", tmp_path / "repo", hub_cache=hf_home / "hub")
    fetched = []
    real = huggingface_hub.hf_hub_download
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, name, **kw: fetched.append(name)
                        or real(repo, name, **kw))
    meta = read_sae_meta("personamine-tests/saelens-tiny", sae_id="blocks.2.hook_resid_post")
    assert "blocks.2.hook_resid_post/cfg.json" in fetched
    assert not [name for name in fetched if name.endswith((".safetensors", ".pt", ".pth", ".npz"))], fetched
    assert (meta.d_in, meta.d_sae, meta.layer) == (D_IN, D_SAE, 2)
    x = random_activations(d=D_IN)
    sae = load_sae("personamine-tests/saelens-tiny", sae_id="blocks.2.hook_resid_post")
    assert_codes_match(sae.encode(x), library_codes(tmp_path / "repo" / "blocks.2.hook_resid_post", x))


def test_saelens_release_is_read_from_the_installed_directory(tmp_path, hf_home, tiny_model_dir):
    """A release name + sae_id resolve through sae-lens's own pretrained directory (here the andyrdt release, a
    dictionary_learning layout), and carry its Neuronpedia id."""
    from fixtures import build_batchtopk_sae

    root = tmp_path / "andyrdt"
    sae = build_batchtopk_sae(D_IN, D_SAE, 8, threshold=0.2, seed=0)
    folder = root / "resid_post_layer_3" / "trainer_1"
    folder.mkdir(parents=True)
    torch.save(sae.state_dict(), folder / "ae.pt")
    (folder / "config.json").write_text(json.dumps(sae_config(3, D_IN, D_SAE, 8)))
    populate_hub_cache("andyrdt/saes-llama-3.1-8b-instruct", root, hub_cache=hf_home / "hub")
    meta = read_sae_meta("llama-3.1-8b-instruct-andyrdt", sae_id="resid_post_layer_3_trainer_1")
    assert meta.format == "dictionary_learning" and meta.trainer == 1 and meta.layer == 3
    assert meta.neuronpedia == "llama3.1-8b-it/3-resid-post-aa"
    with pytest.raises(PersonamineError, match="needs a sae_id"):
        read_sae_meta("llama-3.1-8b-instruct-andyrdt")
