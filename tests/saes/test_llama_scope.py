"""Llama Scope layout (hyperparams.json + checkpoints/final.safetensors) against the training library's rule.

lm-saes (Language-Model-SAEs) cannot be installed here: its PyPI name is now a shim for ``llamascopium``, whose
stack is not this one. The reference below is its ``SparseAutoEncoder.encode`` / ``compute_norm_factor`` from the
public source (OpenMOSS/Language-Model-SAEs, src/lm_saes/sae.py): ``x * sqrt(d_model) / norm_in``, minus the
decoder bias only if ``apply_decoder_bias_to_pre_encoder``, ``hidden_pre = encoder(x)``, JumpReLU mask on
``hidden_pre * |decoder column|`` (``sparsity_include_decoder_norm``) against the scalar ``jump_relu_threshold``,
``feature_acts = hidden_pre * mask``; ``decoder(feature_acts)`` is in the output's scaled space."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from fixtures import assert_codes_match, populate_hub_cache, random_activations
from safetensors.torch import save_file

from personamine.errors import PersonamineError
from personamine.saes import load_sae, read_sae_meta

D, F = 64, 128
NORM_IN, NORM_OUT, THRESHOLD = 17.125, 19.5, 0.52734375
FEATURES = np.array([127, 9, 64, 0, 30])


def weights(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    decoder = torch.randn(D, F, generator=gen) * (0.05 + 0.15 * torch.rand(1, F, generator=gen))  # norms != 1
    return {"encoder.weight": (decoder.T * 4 + 0.1 * torch.randn(F, D, generator=gen)).contiguous().bfloat16(),
            "encoder.bias": (torch.randn(F, generator=gen) * 0.2).bfloat16(), "decoder.weight": decoder.bfloat16(),
            "decoder.bias": (torch.randn(D, generator=gen) * 0.1).bfloat16()}


def write_llama_scope(folder, **cfg_extra):
    (folder / "checkpoints").mkdir(parents=True)
    save_file(weights(), str(folder / "checkpoints" / "final.safetensors"))
    cfg = {"sae_type": "sae", "hook_point_in": "blocks.2.hook_resid_post", "hook_point_out": "blocks.2.hook_resid_post",
           "d_model": D, "expansion_factor": F // D, "d_sae": F, "act_fn": "jumprelu",
           "jump_relu_threshold": THRESHOLD, "norm_activation": "dataset-wise",
           "dataset_average_activation_norm": {"in": NORM_IN, "out": NORM_OUT}, "use_decoder_bias": True,
           "apply_decoder_bias_to_pre_encoder": False, "sparsity_include_decoder_norm": True, "top_k": 50,
           **cfg_extra}
    (folder / "hyperparams.json").write_text(json.dumps(cfg))
    return folder


def reference(x):
    w = {k: v.float() for k, v in weights().items()}
    hidden_pre = torch.nn.functional.linear(x * (math.sqrt(D) / NORM_IN), w["encoder.weight"], w["encoder.bias"])
    mask = hidden_pre * w["decoder.weight"].norm(dim=0) > THRESHOLD
    acts = hidden_pre * mask
    recon = torch.nn.functional.linear(acts, w["decoder.weight"], w["decoder.bias"]) / (math.sqrt(D) / NORM_OUT)
    return acts, recon


def test_encode_and_reconstruct_equal_the_lm_saes_rule(tmp_path):
    folder = write_llama_scope(tmp_path / "Tiny-L2R-2x")
    x = random_activations(d=D)
    want, recon = reference(x)
    sae = load_sae(str(folder))
    assert (sae.meta.format, sae.meta.layer, sae.meta.threshold) == ("llama_scope", 2, THRESHOLD)
    assert_codes_match(sae.encode(x, chunk_size=50), want)
    assert_codes_match(sae.encoder(FEATURES, chunk_size=2).encode(x), want[:, FEATURES], False)
    torch.testing.assert_close(sae.decode(sae.encode(x)), recon, rtol=1e-5, atol=1e-5)
    # Without the input scaling the codes are wrong: the normalisation is really applied.
    assert not torch.allclose(sae.encode(x * (NORM_IN / math.sqrt(D))), want)


def test_transcoders_are_refused(tmp_path):
    folder = write_llama_scope(tmp_path / "Tiny-L2M-2x", hook_point_in="blocks.2.ln2.hook_normalized",
                               hook_point_out="blocks.2.hook_mlp_out")
    with pytest.raises(PersonamineError, match="transcoder"):
        read_sae_meta(str(folder))


def test_hub_layout(tmp_path, hf_home):
    write_llama_scope(tmp_path / "repo" / "Tiny-L2R-2x")
    populate_hub_cache("personamine-tests/Tiny-LXR-2x", tmp_path / "repo", hub_cache=hf_home / "hub")
    meta = read_sae_meta("personamine-tests/Tiny-LXR-2x", sae_id="Tiny-L2R-2x")
    assert (meta.format, meta.d_in, meta.d_sae, meta.layer) == ("llama_scope", D, F, 2)
    x = random_activations(d=D)
    assert_codes_match(load_sae("personamine-tests/Tiny-LXR-2x", sae_id="Tiny-L2R-2x").encode(x), reference(x)[0])
