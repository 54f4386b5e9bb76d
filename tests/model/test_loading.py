"""Truncated loading, the early-stop hook, and targeted SAE reads."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import torch
from fixtures import SAE_LAYER, TINY_NUM_LAYERS, sae_file

from personamine.model.capture import capture_residual
from personamine.model.loading import load_model
from personamine.saes import load_sae


def test_only_layers_up_to_l_are_loaded_and_nothing_after_runs(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    loaded = load_model(str(tiny_model_dir), SAE_LAYER)
    assert len(loaded.model.layers) == SAE_LAYER + 1 < TINY_NUM_LAYERS
    calls = []
    loaded.model.norm.register_forward_hook(lambda *a: calls.append("norm"))
    ids = loaded.tokenizer(["the cat sleeps in the garden", "I think"], return_tensors="pt", padding=True)
    h = capture_residual(loaded.model, loaded.layer_module, ids["input_ids"], ids["attention_mask"])
    assert calls == []  # the final norm (after every layer) never ran
    full = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        ref = full(**ids, output_hidden_states=True).hidden_states[SAE_LAYER + 1]
    mask = ids["attention_mask"].bool()
    assert torch.equal(h[mask], ref[mask])


def test_tuple_returning_layers_are_handled():
    class Layer(torch.nn.Module):
        def forward(self, x):
            return (x * 2, "cache")

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList([Layer(), Layer()])

        def forward(self, input_ids, attention_mask, use_cache):
            x = input_ids.float()
            for layer in self.layers:
                x = layer(x)[0]
            raise AssertionError("the forward should have stopped")

    model = Model()
    out = capture_residual(model, model.layers[0], torch.ones(1, 3), torch.ones(1, 3))
    assert torch.equal(out, torch.full((1, 3), 2.0))


def test_targeted_encoder_equals_full_encode(tiny_sae_dir):
    from dictionary_learning.trainers import BatchTopKSAE

    ae = sae_file(tiny_sae_dir)
    sae = BatchTopKSAE.from_pretrained(str(ae), device="cpu")
    x = torch.randn(50, 64) * 3
    features = np.array([7, 3, 200, 255, 0])
    got = load_sae(str(ae)).encoder(features, device=torch.device("cpu")).encode(x)
    want = sae.encode(x)[:, features]
    # Bitwise with some BLAS builds, not all: MKL on an AVX-512 machine blocks a [50, 64] x [64, 5] product
    # differently from [64, 256], which moves the last bit (measured 1.9e-6 at values near 4, i.e. one ulp).
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert (want > 0).any()
    chunked = load_sae(str(ae)).encoder(np.arange(256), device=torch.device("cpu"), chunk_size=37).encode(x)
    torch.testing.assert_close(chunked, sae.encode(x), rtol=1e-6, atol=1e-6)


def test_targeted_mode_reads_only_the_needed_rows(tmp_path):
    """In a fresh process, a 20-row read of a 512 MiB SAE stays far below the file's size in RSS."""
    script = textwrap.dedent(f"""
        import resource, sys, numpy as np, torch
        sys.path.insert(0, {str(tmp_path)!r})
        from personamine.saes import load_sae
        from pathlib import Path
        path = Path({str(tmp_path / "big.pt")!r})
        torch.save({{"encoder.weight": torch.randn(65536, 2048), "encoder.bias": torch.zeros(65536),
                    "decoder.weight": torch.zeros(1).expand(2048, 65536), "b_dec": torch.zeros(2048),
                    "threshold": torch.tensor(0.5), "k": torch.tensor(32, dtype=torch.int32)}}, path)
        import gc; gc.collect()
        import psutil
        before = psutil.Process().memory_info().rss
        mode = sys.argv[1]
        if mode == "targeted":
            enc = load_sae(str(path)).encoder(np.arange(0, 65536, 3277)[:20], device=torch.device("cpu"))
        else:
            state = torch.load(path, weights_only=True)
            w = state["encoder.weight"].clone()
        print((psutil.Process().memory_info().rss - before) // 2**20)
    """)
    grow = {mode: int(subprocess.run([sys.executable, "-c", script, mode], check=True, capture_output=True,
                                     text=True).stdout.split()[-1]) for mode in ("targeted", "whole")}
    assert grow["whole"] > 400
    assert grow["targeted"] < 50, grow


def test_a_truncated_load_is_quiet_unless_verbose(tiny_model_dir, caplog, monkeypatch):
    """The layers past `layer` and the LM head are skipped on purpose: transformers' LOAD REPORT of them is held
    back; with PERSONAMINE_VERBOSE (the CLI's --verbose) it shows as before. (tests/jobs/test_cli.py checks a real
    process's stderr.)"""
    monkeypatch.delenv("PERSONAMINE_VERBOSE", raising=False)
    load_model(str(tiny_model_dir), 1)
    assert not [r for r in caplog.records if "LOAD REPORT" in r.getMessage()]
    monkeypatch.setenv("PERSONAMINE_VERBOSE", "1")
    load_model(str(tiny_model_dir), 1)
    assert [r for r in caplog.records if "LOAD REPORT" in r.getMessage() and "UNEXPECTED" in r.getMessage()]


def test_weights_missing_or_unused_beyond_the_truncation_are_named(tiny_model_dir, tmp_path, recwarn):
    """What the held-back report would have said that matters: a weight the checkpoint lacks (randomly
    initialised) or one no part of the model takes, each named in one warning. Skipped layers are not."""
    import shutil

    from safetensors.torch import load_file, save_file

    from personamine.model.loading import skipped_on_purpose

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    weights = load_file(broken / "model.safetensors")
    del weights["model.layers.0.mlp.up_proj.weight"]
    weights["model.extra_probe.weight"] = torch.zeros(3)
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    load_model(str(broken), 1)
    messages = [str(w.message) for w in recwarn]
    assert messages == [f"model {str(broken)!r}: 1 weight(s) are not in the checkpoint and were randomly initialised "
                        "(layers.0.mlp.up_proj.weight): activations will not be the model's",
                        f"model {str(broken)!r}: 1 checkpoint weight(s) were not used (model.extra_probe.weight): is "
                        "the architecture the one you expect?"]
    assert not any("layers.2" in m or "lm_head" in m for m in messages)
    assert skipped_on_purpose("model.layers.12.mlp.up_proj.weight", 11)
    assert skipped_on_purpose("lm_head.weight", 11) and skipped_on_purpose("transformer.h.5.attn.weight", 4)
    assert not skipped_on_purpose("model.layers.11.mlp.up_proj.weight", 11)
    assert not skipped_on_purpose("model.norm.weight", 11)


def test_long_documents_do_not_warn(tiny_model_dir, caplog):
    """Mining tokenizes whole documents and windows them on purpose: no "longer than the maximum" warning."""
    from transformers import AutoTokenizer

    from personamine.model.loading import load_tokenizer

    def warned() -> bool:
        return any("Token indices sequence length" in r.getMessage() for r in caplog.records)

    long = "the cat sleeps in the garden " * 500
    plain = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert len(plain(long)["input_ids"]) > plain.model_max_length
    assert warned()  # what transformers says by itself
    caplog.clear()
    load_tokenizer.cache_clear()
    load_tokenizer(str(tiny_model_dir))(long)
    assert not warned()
