"""dictionary_learning layouts: BatchTopK, Matryoshka BatchTopK and TopK against the library's own encode; the
hub release layout; an ae.pt whose layer is unknown; read-only feature arrays."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from fixtures import SAE_LAYER, assert_codes_match, populate_hub_cache, random_activations, sae_config, sae_file

from personamine.errors import PersonamineError
from personamine.saes import load_sae, prepare_sae, read_sae_meta
from personamine.saes.locate import SaeSpec

D, F, K = 64, 96, 8
FEATURES = np.array([95, 2, 50, 0, 13])


def save(sae, folder, dict_class: str, layer: int = 2):
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(sae.state_dict(), folder / "ae.pt")
    cfg = sae_config(layer, D, F, K)
    cfg["trainer"]["dict_class"] = dict_class
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def test_batchtopk_equals_the_library(tiny_sae_dir):
    from dictionary_learning.trainers import BatchTopKSAE

    ref = BatchTopKSAE.from_pretrained(str(sae_file(tiny_sae_dir)), device="cpu")
    x = random_activations() * 0.05 + ref.b_dec.detach()
    with torch.no_grad():
        want = ref.encode(x)
    sae = load_sae(str(tiny_sae_dir), layer=SAE_LAYER)
    assert sae.meta.architecture == "batchtopk" and sae.meta.threshold == float(ref.threshold)
    assert_codes_match(sae.encode(x, chunk_size=30), want)
    assert_codes_match(sae.encoder(FEATURES * 2, chunk_size=2).encode(x), want[:, FEATURES * 2], False)


def test_matryoshka_equals_the_library(tmp_path):
    from dictionary_learning.trainers.matryoshka_batch_top_k import MatryoshkaBatchTopKSAE

    torch.manual_seed(0)
    ref = MatryoshkaBatchTopKSAE(D, F, K, group_sizes=[32, 64])
    with torch.no_grad():
        ref.threshold.fill_(0.3)
        ref.b_enc.normal_(0, 0.1)
    folder = save(ref, tmp_path / "resid_post_layer_2" / "trainer_0", "MatryoshkaBatchTopKSAE")
    x = random_activations() * 0.2
    with torch.no_grad():
        want = ref.encode(x)
    sae = load_sae(str(folder))
    assert sae.meta.architecture == "matryoshka_batchtopk" and sae.meta.layer == 2
    assert_codes_match(sae.encode(x), want)
    assert_codes_match(sae.encoder(FEATURES, chunk_size=3).encode(x), want[:, FEATURES], False)


def test_topk_equals_the_library_in_the_exact_mode(tmp_path):
    from dictionary_learning.trainers.top_k import AutoEncoderTopK

    torch.manual_seed(1)
    ref = AutoEncoderTopK(D, F, K)
    with torch.no_grad():
        ref.encoder.bias.normal_(0, 0.1)
    folder = save(ref, tmp_path / "topk", "AutoEncoderTopK")
    x = random_activations()
    with torch.no_grad():
        want = ref.encode(x)
    sae = load_sae(str(folder))
    assert sae.meta.architecture == "topk" and sae.is_topk
    assert_codes_match(sae.encode(x), want)
    assert_codes_match(sae.encoder(FEATURES, chunk_size=7, exact_topk=True).encode(x), want[:, FEATURES], False)
    with pytest.raises(PersonamineError, match="not exact"):
        sae.encoder(FEATURES)


def test_hub_release_metadata_reads_only_config_json(tiny_sae_dir, tiny_sae_repo, monkeypatch):
    import huggingface_hub

    fetched = []
    real = huggingface_hub.hf_hub_download
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda repo, name, **kw: fetched.append(name) or real(repo, name, **kw))
    meta = read_sae_meta(tiny_sae_repo, layer=SAE_LAYER)
    assert f"resid_post_layer_{SAE_LAYER}/trainer_0/config.json" in fetched
    assert not [name for name in fetched if name.endswith((".pt", ".pth", ".safetensors", ".npz"))], fetched
    assert (meta.d_in, meta.d_sae, meta.k, meta.layer, meta.trainer) == (D, 256, 8, SAE_LAYER, 0)
    assert meta.threshold is None  # in ae.pt, which the driver never fetches
    sae = load_sae(tiny_sae_repo, layer=SAE_LAYER)
    assert sae.meta.threshold > 0 and "ae.pt" in fetched[-1]


def test_neuronpedia_ids_for_hosted_releases(tmp_path, hf_home, tiny_sae_dir):
    for trainer in (0, 1):
        dst = tmp_path / "andyrdt" / f"resid_post_layer_{SAE_LAYER}" / f"trainer_{trainer}"
        shutil.copytree(sae_file(tiny_sae_dir).parent, dst)
    populate_hub_cache("andyrdt/saes-llama-3.1-8b-instruct", tmp_path / "andyrdt", hub_cache=hf_home / "hub")
    one = read_sae_meta("andyrdt/saes-llama-3.1-8b-instruct", layer=SAE_LAYER, trainer=1)
    assert one.neuronpedia == f"llama3.1-8b-it/{SAE_LAYER}-resid-post-aa"
    assert read_sae_meta("andyrdt/saes-llama-3.1-8b-instruct", layer=SAE_LAYER, trainer=0).neuronpedia is None
    assert "k=8" in one.describe() and "trainer 1" in one.describe()


def test_an_sae_without_config_is_used_only_with_a_warning(tiny_sae_dir, tmp_path):
    """Issue 18 point 5: an ae.pt whose layer nothing declares is never used silently."""
    bare = tmp_path / "copied" / "ae.pt"
    bare.parent.mkdir()
    shutil.copyfile(sae_file(tiny_sae_dir), bare)
    with pytest.warns(UserWarning, match="does not declare the layer it was trained on .*no config.json beside "
                                         "it.*using it on layer 3 unchecked"):
        meta, layer = prepare_sae(SaeSpec(str(bare), layer=3), hidden_size=D, num_layers=4)
    assert layer == 3 and meta.hook is None
    with pytest.raises(PersonamineError, match="does not declare the layer .*pass layer"):
        prepare_sae(SaeSpec(str(bare)), hidden_size=D, num_layers=4)
    # Inside a release folder, the folder's name declares it.
    meta, layer = prepare_sae(SaeSpec(str(tiny_sae_dir)), hidden_size=D, num_layers=4)
    assert layer == SAE_LAYER and meta.hook.source == "config.json trainer.submodule_name"


def test_read_only_feature_arrays_do_not_warn(tiny_sae_dir):
    """Issue 18 point 6: arrays from ray.get are read-only; torch must not warn about them."""
    features = np.arange(0, 256, 5)
    features.setflags(write=False)
    sae = load_sae(str(tiny_sae_dir), layer=SAE_LAYER)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for exact in (False, True):
            sae.encoder(features, exact_topk=exact).encode(random_activations(10))
        sae.decoder_directions(features)


def test_missing_tensor_and_width(tmp_path, tiny_sae_dir):
    state = torch.load(sae_file(tiny_sae_dir), weights_only=True)
    del state["b_dec"]
    folder = tmp_path / "broken"
    folder.mkdir()
    torch.save(state, folder / "ae.pt")
    shutil.copyfile(sae_file(tiny_sae_dir).with_name("config.json"), folder / "config.json")
    with pytest.raises(PersonamineError, match=r"ae.pt\) is missing tensor\(s\) b_dec"):
        load_sae(str(folder))
    with pytest.raises(PersonamineError, match="has width 64, but the model's hidden size is 576"):
        prepare_sae(SaeSpec(str(tiny_sae_dir)), hidden_size=576, num_layers=30)
