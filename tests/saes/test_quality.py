"""The pre-flight quality check: variance explained and L0 against a brute-force computation, the right layer
passes, an SAE run one layer off either way is refused, and mine / discover store (or refuse on) it."""

from __future__ import annotations

import shutil
import warnings

import h5py
import numpy as np
import pytest
import torch
from fixtures import SAE_LAYER, TINY_NUM_LAYERS, corpus_rows, layer_activations, sae_file

import personamine
from personamine.errors import PersonamineError
from personamine.saes import load_sae, preflight

TEXTS = [r["text"] for r in corpus_rows() if isinstance(r["text"], str)]


@pytest.fixture(scope="module")
def layers(tiny_model_dir):
    return {i: layer_activations(tiny_model_dir, i, TEXTS) for i in range(TINY_NUM_LAYERS)}


def test_fve_and_l0_equal_brute_force(tiny_sae_dir, layers):
    from dictionary_learning.trainers import BatchTopKSAE

    ref = BatchTopKSAE.from_pretrained(str(sae_file(tiny_sae_dir)), device="cpu")
    x = layers[SAE_LAYER]
    with torch.no_grad():
        codes = ref.encode(x)
        err = (x - ref.decode(codes)).double().pow(2).sum()
    want = 1 - float(err / (x.double() - x.double().mean(0)).pow(2).sum())
    got = preflight(load_sae(str(tiny_sae_dir)), x, chunk_size=50)
    assert got.fve == pytest.approx(want, abs=1e-6) and got.n_tokens == x.shape[0]
    assert got.l0 == pytest.approx(float((codes > 0).sum(1).double().mean()))


def run_at(sae, layers, layer):
    neighbours = {i: layers[i] for i in (layer - 1, layer + 1) if i in layers}
    return preflight(sae, layers[layer], layer=layer, neighbours=neighbours)


def test_the_right_layer_passes_and_one_off_either_way_is_refused(tiny_sae_dir, layers):
    sae = load_sae(str(tiny_sae_dir))
    right = run_at(sae, layers, SAE_LAYER)
    assert right.passed and right.fve > 0.5, right.summary()
    right.check()
    for wrong in (SAE_LAYER - 1, SAE_LAYER + 1):
        result = run_at(sae, layers, wrong)
        assert not result.passed and result.better_neighbour() == SAE_LAYER, result.summary()
        with pytest.raises(PersonamineError, match=f"fits layer {SAE_LAYER} better .* Likely causes: the wrong layer"):
            result.check()
        with pytest.warns(UserWarning, match="allowed by allow_low_fve"):
            result.check(allow=True)


def test_a_low_fve_is_refused(tiny_sae_dir, layers):
    sae = load_sae(str(tiny_sae_dir))
    # Activations of another model, simulated: same mean and spread per dimension, no structure.
    x = layers[SAE_LAYER]
    other = x.mean(0) + x.std(0) * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    result = preflight(sae, other, layer=SAE_LAYER)
    assert result.fve < 0.5
    with pytest.raises(PersonamineError, match="below the 50% minimum.*missing input normalisation.*--allow-low-fve"):
        result.check()


@pytest.fixture
def unlabelled_sae(tiny_sae_dir, tmp_path):
    """The fixture SAE's ae.pt alone: nothing says its layer, so only the quality check can catch a wrong one."""
    bare = tmp_path / "bare" / "ae.pt"
    bare.parent.mkdir()
    shutil.copyfile(sae_file(tiny_sae_dir), bare)
    return bare


def mine_args(model, sae, corpus, tmp_path, layer, **extra):
    return dict(model=str(model), layer=layer, sae=str(sae), corpus=str(corpus), features=[0, 5, 9], ctx_len=16,
                top_k=3, n_shards=2, output=str(tmp_path / "out.h5"), progress=False, **extra)


def test_mining_stores_the_check_and_refuses_a_wrong_layer(tiny_model_dir, unlabelled_sae, tiny_corpus_jsonl,
                                                          tmp_path):
    with pytest.warns(UserWarning, match="does not declare the layer"):
        out = personamine.mine(**mine_args(tiny_model_dir, unlabelled_sae, tiny_corpus_jsonl, tmp_path, SAE_LAYER))
    with h5py.File(out) as f:
        assert f.attrs["preflight_fve"] > 0.5 and f.attrs["preflight_tokens"] > 1000
        assert f.attrs[f"preflight_fve_layer_{SAE_LAYER + 1}"] < f.attrs["preflight_fve"]
        assert f.attrs["sae_format"] == "dictionary_learning" and f.attrs["sae_k"] == 8
    # A hosted SAE's features link to their Neuronpedia pages in the report.
    from personamine.report.data import report_data

    with h5py.File(out, "r+") as f:
        f.attrs["sae_neuronpedia"] = "llama3.1-8b-it/2-resid-post-aa"
    entries = report_data(personamine.read_results(out))["features"]
    assert [e["np"] for e in entries] == [f"https://www.neuronpedia.org/llama3.1-8b-it/2-resid-post-aa/{f}"
                                          for f in (0, 5, 9)]
    bad = tmp_path / "bad"
    bad.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(PersonamineError, match=f"at layer {SAE_LAYER + 1} .*fits layer {SAE_LAYER} better"):
            personamine.mine(**mine_args(tiny_model_dir, unlabelled_sae, tiny_corpus_jsonl, bad, SAE_LAYER + 1))
    assert not list(bad.iterdir())  # refused before anything was written


def test_discovery_stores_the_check(tiny_model_dir, tiny_sae_dir, tmp_path):
    path = personamine.discover(model=str(tiny_model_dir), sae=str(tiny_sae_dir), output=str(tmp_path / "d.h5"),
                                progress=False)
    found = personamine.read_discovery(path)
    assert found.attrs["layer"] == SAE_LAYER  # derived from the SAE
    assert found.attrs["preflight_fve"] > 0.5 and found.attrs["preflight_tokens"] > 50
    assert np.isfinite(found.attrs["preflight_l0"])
