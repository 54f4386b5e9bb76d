"""EleutherAI sparsify layout (layers.N/{cfg.json, sae.safetensors}): exact top-k against SparseCoder.encode."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fixtures import assert_codes_match, populate_hub_cache, random_activations
from safetensors.torch import save_file

from personamine.errors import PersonamineError
from personamine.saes import load_sae, prepare_sae, read_sae_meta
from personamine.saes.locate import SaeSpec

D_IN, N_LATENTS, K = 64, 128, 6
FEATURES = np.array([100, 7, 64, 1, 33, 127])


def write_sparsify(root, layer: int = 2, seed: int = 0, **cfg_extra):
    """What ``SparseCoder.save_to_disk`` writes (eai-sparsify 1.3.3): safetensors of the module's parameters and
    cfg.json = SparseCoderConfig fields + d_in, under the hookpoint's folder."""
    gen = torch.Generator().manual_seed(seed)
    w_dec = torch.nn.functional.normalize(torch.randn(N_LATENTS, D_IN, generator=gen), dim=1)
    tensors = {"encoder.weight": w_dec + 0.05 * torch.randn(N_LATENTS, D_IN, generator=gen),
               "encoder.bias": torch.randn(N_LATENTS, generator=gen) * 0.1, "W_dec": w_dec,
               "b_dec": torch.randn(D_IN, generator=gen) * 0.3}
    folder = root / f"layers.{layer}"
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "sae.safetensors"))
    cfg = {"activation": "topk", "expansion_factor": 32, "normalize_decoder": True, "num_latents": N_LATENTS,
           "k": K, "multi_topk": False, "skip_connection": False, "transcode": False, "d_in": D_IN, **cfg_extra}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


def library_codes(folder, x):
    from sparsify import SparseCoder

    coder = SparseCoder.load_from_disk(folder)
    with torch.no_grad():
        out = coder.encode(x)
    return torch.zeros(x.shape[0], coder.num_latents).scatter_(1, out.top_indices, out.top_acts)


def test_exact_topk_equals_sparsify(tmp_path):
    folder = write_sparsify(tmp_path / "repo")
    x = random_activations(d=D_IN)
    want = library_codes(folder, x)
    assert int((want > 0).sum(1).max()) == K
    sae = load_sae(str(tmp_path / "repo"), layer=2)
    assert sae.meta.format == "sparsify" and sae.meta.k == K and sae.hook.captured_layer == 2
    assert_codes_match(sae.encode(x, chunk_size=50), want)
    for chunk in (3, 1000):  # the top-k scan over all features, in small and single chunks
        got = sae.encoder(FEATURES, chunk_size=chunk, exact_topk=True).encode(x)
        assert_codes_match(got, want[:, FEATURES], check_sparsity=False)


def test_a_subset_without_the_exact_mode_is_refused(tmp_path):
    write_sparsify(tmp_path / "repo")
    sae = load_sae(str(tmp_path / "repo" / "layers.2"))
    with pytest.raises(PersonamineError, match="TopK SAE \\(k=6\\)"):
        sae.encoder(FEATURES)


def test_hookpoint_folder_is_the_layer(tmp_path):
    write_sparsify(tmp_path / "repo", layer=2)
    meta, layer = prepare_sae(SaeSpec(str(tmp_path / "repo" / "layers.2")), hidden_size=D_IN, num_layers=4)
    assert layer == 2
    with pytest.raises(PersonamineError, match="layers.2 \\(the output of decoder layer 2.*captures the output of "
                                               "decoder layer 3"):
        prepare_sae(SaeSpec(str(tmp_path / "repo" / "layers.2"), layer=3), hidden_size=D_IN, num_layers=4)


def test_transcoders_are_refused(tmp_path):
    folder = write_sparsify(tmp_path / "repo", transcode=True)
    with pytest.raises(PersonamineError, match="transcoder"):
        read_sae_meta(str(folder))


def test_hub_layout(tmp_path, hf_home):
    folder = write_sparsify(tmp_path / "repo", layer=2)
    populate_hub_cache("personamine-tests/sparsify-tiny", tmp_path / "repo", hub_cache=hf_home / "hub")
    meta = read_sae_meta("personamine-tests/sparsify-tiny", layer=2)
    assert (meta.format, meta.d_sae, meta.layer) == ("sparsify", N_LATENTS, 2)
    x = random_activations(d=D_IN)
    sae = load_sae("personamine-tests/sparsify-tiny", sae_id="layers.2")
    assert_codes_match(sae.encode(x), library_codes(folder, x))
