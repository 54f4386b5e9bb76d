"""Gemma Scope 1 (params.npz) and 2 (params.safetensors + config.json) against sae-lens's JumpReLUSAE.encode on the
same tensors (the conversion its gemma_2 / gemma_3 loaders make: apply_b_dec_to_input False, per-feature
threshold)."""

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

D, F = 64, 112
FEATURES = np.array([111, 5, 60, 0, 31])
SCOPE1 = "layer_2/width_16k/average_l0_10"
SCOPE2 = "resid_post/layer_2_width_16k_l0_small"


def tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w_dec = rng.standard_normal((F, D)).astype(np.float32) * 0.3
    return {"W_enc": (w_dec.T + 0.05 * rng.standard_normal((D, F))).astype(np.float32),
            "b_enc": (rng.standard_normal(F) * 0.2).astype(np.float32), "W_dec": w_dec,
            "b_dec": (rng.standard_normal(D) * 0.2).astype(np.float32),
            "threshold": (rng.random(F) * 1.5).astype(np.float32)}


def write_scope1(root):
    folder = root / SCOPE1
    folder.mkdir(parents=True)
    np.savez(folder / "params.npz", **tensors())
    return folder


def write_scope2(root):
    folder = root / SCOPE2
    folder.mkdir(parents=True)
    save_file({k.lower(): torch.from_numpy(v) for k, v in tensors().items()}, str(folder / "params.safetensors"))
    (folder / "config.json").write_text(json.dumps({"architecture": "jump_relu", "model_name": "gemma-v3-tiny-pt",
                                                    "hf_hook_point_in": "model.layers.2.output"}))
    return folder


def library_codes(x):
    from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig

    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=D, d_sae=F, apply_b_dec_to_input=False))
    sae.load_state_dict({k: torch.from_numpy(v) for k, v in tensors().items()})
    with torch.no_grad():
        return sae.encode(x)


@pytest.mark.parametrize("write", [write_scope1, write_scope2])
def test_encode_equals_saelens_jumprelu(write, tmp_path):
    folder = write(tmp_path / "gemma-scope-tiny-pt-res")
    x = random_activations(d=D)
    want = library_codes(x)
    sae = load_sae(str(folder))
    assert (sae.meta.format, sae.meta.layer, sae.meta.threshold_kind) == ("gemma_scope", 2, "per-feature")
    assert_codes_match(sae.encode(x, chunk_size=50), want)
    assert_codes_match(sae.encoder(FEATURES, chunk_size=2).encode(x), want[:, FEATURES], False)


def test_npz_members_are_memory_mapped(tmp_path):
    from personamine.saes.tensors import open_npz

    path = write_scope1(tmp_path / "r") / "params.npz"
    arrays = open_npz(path)
    pointer = arrays["W_enc"].data_ptr()
    spans = [[int(a, 16) for a in line.split()[0].split("-")] for line in open("/proc/self/maps")
             if line.rstrip().endswith(str(path))]
    assert any(lo <= pointer < hi for lo, hi in spans)  # the tensor's memory is the file's mapping
    np.testing.assert_array_equal(arrays["threshold"].numpy(), tensors()["threshold"])


def test_not_residual_stream_is_refused(tmp_path):
    folder = write_scope1(tmp_path / "gemma-scope-tiny-pt-mlp")
    with pytest.raises(PersonamineError, match="not the residual stream"):
        prepare_sae(SaeSpec(str(folder), layer=2), hidden_size=D, num_layers=4)


def test_hub_layouts(tmp_path, hf_home):
    write_scope1(tmp_path / "one")
    write_scope2(tmp_path / "two")
    populate_hub_cache("personamine-tests/gemma-scope-tiny-pt-res", tmp_path / "one", hub_cache=hf_home / "hub")
    populate_hub_cache("personamine-tests/gemma-scope-2-tiny-pt", tmp_path / "two", hub_cache=hf_home / "hub")
    x = random_activations(d=D)
    for repo, sae_id in (("personamine-tests/gemma-scope-tiny-pt-res", SCOPE1),
                         ("personamine-tests/gemma-scope-2-tiny-pt", SCOPE2)):
        meta = read_sae_meta(repo, sae_id=sae_id)
        assert (meta.format, meta.layer, meta.d_in, meta.d_sae) == ("gemma_scope", 2, D, F)
        assert_codes_match(load_sae(repo, sae_id=sae_id).encode(x), library_codes(x))
