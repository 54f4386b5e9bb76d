"""Finding an SAE's layout: unknown layouts name the files found, formats can be forced, hook names parse."""

from __future__ import annotations

import pytest
from fixtures import SAE_LAYER

from personamine.errors import PersonamineError
from personamine.saes import read_sae_meta
from personamine.saes.hooks import parse_hook


def test_unknown_layout_names_the_files_found(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "sub").mkdir()
    with pytest.raises(PersonamineError, match=r"no SAE layout recognised in .*: found notes.txt, sub/, weights.bin "
                                               r"\(expected ae.pt"):
        read_sae_meta(str(tmp_path))


def test_a_release_root_needs_its_layer(tiny_sae_dir, tmp_path):
    # One layer folder: its name is the layer. Two: the error lists them and asks for one.
    assert read_sae_meta(str(tiny_sae_dir)).layer == SAE_LAYER
    for layer in (1, 3):
        (tmp_path / f"resid_post_layer_{layer}" / "trainer_0").mkdir(parents=True)
    with pytest.raises(PersonamineError, match="found resid_post_layer_1/, resid_post_layer_3/.*needs layer"):
        read_sae_meta(str(tmp_path))


def test_a_forced_format_looks_for_that_layout_only(tiny_sae_dir):
    with pytest.raises(PersonamineError, match="expected the saelens layout"):
        read_sae_meta(str(tiny_sae_dir), layer=SAE_LAYER, format="saelens")
    assert read_sae_meta(str(tiny_sae_dir), layer=SAE_LAYER, format="dictionary_learning").k == 8
    with pytest.raises(PersonamineError, match="unknown SAE format 'onnx'"):
        read_sae_meta(str(tiny_sae_dir), format="onnx")


def test_hub_repo_without_a_known_layout(tiny_sae_repo):
    # The repo exists in the offline cache, but not at this layer.
    with pytest.raises(PersonamineError, match="no SAE layout recognised in 'personamine-tests/tiny-saes'"):
        read_sae_meta(tiny_sae_repo, layer=SAE_LAYER + 1)
    with pytest.raises(PersonamineError, match="neither a path, a hub repo id"):
        read_sae_meta("no-such-release")


@pytest.mark.parametrize(("name", "kind", "captured"), [
    ("blocks.15.hook_resid_post", "resid_post", 15), ("blocks.15.hook_resid_pre", "resid_pre", 14),
    ("model.layers.19", "resid_post", 19), ("layers.10", "resid_post", 10), ("resid_post_layer_3", "resid_post", 3),
    ("model.layers.12.output", "resid_post", 12), ("blocks.4.hook_mlp_out", "not the residual stream", None),
    ("blocks.4.attn.hook_z", "not the residual stream", None), ("layers.4.mlp", "not the residual stream", None)])
def test_hook_names(name, kind, captured):
    hook = parse_hook(name, "test")
    assert (hook.kind, hook.captured_layer) == (kind, captured)
