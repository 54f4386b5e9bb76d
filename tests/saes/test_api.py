"""The SAE functions runs call: the spec a config names, metadata without weights, the driver's checks (the layer
taken from the SAE, width and range refused naming both sides), the actor's load with its checks, Neuronpedia URLs."""

from __future__ import annotations

import pytest
from fixtures import SAE_DICT_SIZE, SAE_LAYER, TINY_HIDDEN_SIZE, TINY_NUM_LAYERS

from personamine.config import DiscoverConfig, MineConfig
from personamine.errors import PersonamineError
from personamine.saes.api import (
    LOADERS,
    load_checked,
    load_sae,
    locate,
    neuronpedia_url,
    prepare_sae,
    read_sae_meta,
    sae_spec,
)
from personamine.saes.locate import SaeSpec


def test_the_spec_a_config_names():
    spec = sae_spec(MineConfig(sae="repo/x", sae_trainer=2, layer=5, sae_id="layer_5", sae_format="saelens"))
    assert spec == SaeSpec(sae="repo/x", sae_id="layer_5", trainer=2, layer=5, format="saelens")
    assert sae_spec(DiscoverConfig(sae="d")) == SaeSpec(sae="d", sae_id=None, trainer=0, layer=None, format="auto")
    assert sorted(LOADERS) == ["dictionary_learning", "gemma_scope", "goodfire", "llama_scope", "saelens", "sparsify"]


def test_metadata_and_weights_describe_the_same_sae(tiny_sae_dir):
    folder, loader, neuronpedia = locate(SaeSpec(sae=str(tiny_sae_dir), layer=SAE_LAYER))
    assert loader is LOADERS["dictionary_learning"] and neuronpedia is None
    meta = read_sae_meta(str(tiny_sae_dir), layer=SAE_LAYER)
    sae = load_sae(SaeSpec(sae=str(tiny_sae_dir), layer=SAE_LAYER))
    assert (meta.d_in, meta.d_sae, meta.k, meta.layer) == (TINY_HIDDEN_SIZE, SAE_DICT_SIZE, 8, SAE_LAYER)
    assert (sae.d_in, sae.d_sae, sae.meta.k, sae.meta.layer) == (meta.d_in, meta.d_sae, meta.k, meta.layer)
    assert sae.meta.threshold == pytest.approx(meta.threshold) and meta.threshold > 0


def test_the_driver_takes_the_layer_from_the_sae_and_announces_it(tiny_sae_dir, capsys):
    spec = SaeSpec(sae=str(tiny_sae_dir), layer=None)
    meta, layer = prepare_sae(spec, hidden_size=TINY_HIDDEN_SIZE, num_layers=TINY_NUM_LAYERS, model="tiny",
                              announce=True)
    assert layer == SAE_LAYER == meta.layer
    assert capsys.readouterr().err == f"personamine: {meta.describe()}\n"
    _, given = prepare_sae(SaeSpec(sae=str(tiny_sae_dir), layer=SAE_LAYER), hidden_size=TINY_HIDDEN_SIZE,
                           num_layers=TINY_NUM_LAYERS)
    assert given == SAE_LAYER and capsys.readouterr().err == ""  # quiet unless asked


@pytest.mark.parametrize("layer, hidden, layers, message", [
    (SAE_LAYER, 32, TINY_NUM_LAYERS, f"has width {TINY_HIDDEN_SIZE}, but the model's hidden size is 32"),
    (9, TINY_HIDDEN_SIZE, TINY_NUM_LAYERS, "layer 9 is out of range"),
    (None, TINY_HIDDEN_SIZE, 2, f"layer {SAE_LAYER} is out of range"),  # the SAE's own layer, past the model's end
])
def test_the_driver_refuses_in_one_line(tiny_sae_dir, layer, hidden, layers, message):
    with pytest.raises(PersonamineError, match=message) as info:
        prepare_sae(SaeSpec(sae=str(tiny_sae_dir), layer=layer), hidden_size=hidden, num_layers=layers, model="m")
    assert "\n" not in str(info.value)


def test_the_actors_load_repeats_the_checks_on_the_weights(tiny_sae_dir, tmp_path):
    spec = SaeSpec(sae=str(tiny_sae_dir), layer=SAE_LAYER)
    sae = load_checked(spec, hidden_size=TINY_HIDDEN_SIZE, layer=SAE_LAYER)
    assert sae.d_sae == SAE_DICT_SIZE
    with pytest.raises(PersonamineError, match="but the model's hidden size is 48"):
        load_checked(spec, hidden_size=48, layer=SAE_LAYER)
    with pytest.raises(PersonamineError, match=f"was trained on resid_post_layer_{SAE_LAYER} .* but the run captures "
                                               f"the output of decoder layer {SAE_LAYER + 1}"):
        load_checked(spec, hidden_size=TINY_HIDDEN_SIZE, layer=SAE_LAYER + 1)
    bare = tmp_path / "ae.pt"  # the same weights with no config: nothing says the layer, so no layer is refused
    bare.write_bytes((tiny_sae_dir / f"resid_post_layer_{SAE_LAYER}" / "trainer_0" / "ae.pt").read_bytes())
    assert load_checked(SaeSpec(sae=str(bare)), hidden_size=TINY_HIDDEN_SIZE, layer=0).meta.layer is None


def test_neuronpedia_urls_only_for_hosted_saes(tiny_sae_dir):
    meta = read_sae_meta(str(tiny_sae_dir), layer=SAE_LAYER)
    assert neuronpedia_url(meta, 5) is None
    meta.neuronpedia = "llama3.1-8b-it/2-resid-post-aa"
    assert neuronpedia_url(meta, 5) == "https://www.neuronpedia.org/llama3.1-8b-it/2-resid-post-aa/5"
