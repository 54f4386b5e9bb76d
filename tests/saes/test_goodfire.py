"""Goodfire layout (one .pth): no library of Goodfire's installs, so the reference is the rule from public source:
sae-lens 6.54 ``get_goodfire_huggingface_loader`` maps ``encoder_linear.{weight,bias}`` to W_enc.T / b_enc and
``decoder_linear.{weight,bias}`` to W_dec.T / b_dec as a ``standard`` SAE with ``apply_b_dec_to_input: False``, i.e.
``relu(x @ encoder_linear.weight.T + encoder_linear.bias)``. sae-lens's own loader cannot load a tiny copy (it
hard-codes the two released repos and their 4096 width)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures import assert_codes_match, populate_hub_cache, random_activations

from personamine.errors import PersonamineError
from personamine.saes import load_sae, prepare_sae, read_sae_meta
from personamine.saes.locate import SaeSpec

D, F = 64, 80
FEATURES = np.array([79, 4, 40, 0])


def write_goodfire(folder, name: str = "Tiny-Instruct-SAE-l2.pth", seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    state = {"encoder_linear.weight": torch.randn(F, D, generator=gen) * 0.3,
             "encoder_linear.bias": torch.randn(F, generator=gen) - 1.5,
             "decoder_linear.weight": torch.randn(D, F, generator=gen) * 0.3,
             "decoder_linear.bias": torch.randn(D, generator=gen)}
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / name)
    return folder / name, state


def reference(state, x):
    return torch.relu(x @ state["encoder_linear.weight"].T + state["encoder_linear.bias"])


def test_encode_and_decode(tmp_path):
    path, state = write_goodfire(tmp_path / "gf")
    x = random_activations(d=D)
    want = reference(state, x)
    sae = load_sae(str(path))
    assert (sae.meta.format, sae.meta.architecture, sae.meta.layer) == ("goodfire", "standard", 2)
    assert_codes_match(sae.encode(x, chunk_size=25), want)
    assert_codes_match(sae.encoder(FEATURES, chunk_size=3).encode(x), want[:, FEATURES], False)
    recon = want @ state["decoder_linear.weight"].T + state["decoder_linear.bias"]
    torch.testing.assert_close(sae.decode(sae.encode(x)), recon, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae.decoder_directions(FEATURES), state["decoder_linear.weight"][:, FEATURES].T)


def test_layer_from_the_file_name(tmp_path):
    path, _ = write_goodfire(tmp_path / "gf")
    assert prepare_sae(SaeSpec(str(tmp_path / "gf")), hidden_size=D, num_layers=4)[1] == 2
    with pytest.raises(PersonamineError, match="the file name's -lN.*captures the output of decoder layer 1"):
        prepare_sae(SaeSpec(str(path), layer=1), hidden_size=D, num_layers=4)


def test_hub_repo_file(tmp_path, hf_home):
    path, state = write_goodfire(tmp_path / "repo", name="Tiny-Instruct-SAE-l2.pth")
    populate_hub_cache("personamine-tests/Tiny-Instruct-SAE-l2", tmp_path / "repo", hub_cache=hf_home / "hub")
    meta = read_sae_meta("personamine-tests/Tiny-Instruct-SAE-l2")
    assert (meta.format, meta.d_in, meta.d_sae, meta.layer) == ("goodfire", D, F, 2)
    x = random_activations(d=D)
    sae = load_sae("personamine-tests/Tiny-Instruct-SAE-l2", sae_id="Tiny-Instruct-SAE-l2.pth")
    assert_codes_match(sae.encode(x), reference(state, x))
