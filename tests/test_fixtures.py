"""Self-tests: the shared fixtures are what conftest.py claims they are."""

from __future__ import annotations

import json
from pathlib import Path

import fixtures as fx
import pytest
import torch


def test_env_is_offline_and_isolated(hf_home: Path) -> None:
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE
    assert Path(constants.HF_HUB_CACHE).resolve() == (hf_home / "hub").resolve()


def test_tiny_model_loads_and_tokenizer_adds_bos_once(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size) == (fx.TINY_NUM_LAYERS, fx.TINY_HIDDEN_SIZE)
    assert cfg.vocab_size >= len(tok)
    assert tok.padding_side == "right"
    assert tok.pad_token == "<pad>" and tok.pad_token_id != tok.eos_token_id

    ids = tok("hello world").input_ids
    assert ids[0] == tok.bos_token_id
    assert ids.count(tok.bos_token_id) == 1
    assert tok.unk_token_id not in tok("Zebras juggle quickly!").input_ids  # byte-level: no <unk>

    # Forward pass exposes embeddings + one hidden state per layer.
    out = model(**tok(["hello world"], return_tensors="pt"), output_hidden_states=True)
    assert len(out.hidden_states) == fx.TINY_NUM_LAYERS + 1


def test_chat_template_renders_bos_once(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    msgs = [{"role": "system", "content": "You are a model."}, {"role": "user", "content": "Who are you?"}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == "<s><|system|>\nYou are a model.</s>\n<|user|>\nWho are you?</s>\n<|assistant|>\n"
    # The rendered string already holds BOS, so it must be tokenized without special tokens.
    ids = tok(text, add_special_tokens=False).input_ids
    assert ids.count(tok.bos_token_id) == 1
    for role in fx.CHAT_ROLE_TOKENS:
        assert role in tok.all_special_tokens
    assert len(tok.tokenize("<|assistant|>")) == 1


def test_nobos_tokenizer_adds_nothing(tiny_model_dir: Path, tiny_model_dir_nobos: Path) -> None:
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir_nobos)
    assert tok.bos_token == "<s>"
    assert tok("hello world").input_ids == tok("hello world", add_special_tokens=False).input_ids
    assert tok.bos_token_id not in tok("hello world").input_ids
    a = load_file(tiny_model_dir / "model.safetensors")
    b = load_file(tiny_model_dir_nobos / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sae_release_layout_and_threshold(tiny_sae_dir: Path) -> None:
    from dictionary_learning.trainers import BatchTopKSAE

    trainer_dir = tiny_sae_dir / f"resid_post_layer_{fx.SAE_LAYER}" / "trainer_0"
    sae = BatchTopKSAE.from_pretrained(trainer_dir / "ae.pt")
    shape = (sae.activation_dim, sae.dict_size, int(sae.k))
    assert shape == (fx.TINY_HIDDEN_SIZE, fx.SAE_DICT_SIZE, fx.SAE_K)
    assert float(sae.threshold) > 0
    cfg = json.loads((trainer_dir / "config.json").read_text())
    assert cfg["trainer"]["dict_class"] == "BatchTopKSAE"
    assert cfg["trainer"]["layer"] == fx.SAE_LAYER
    assert cfg["trainer"]["submodule_name"] == f"resid_post_layer_{fx.SAE_LAYER}"
    assert cfg["buffer"]["d_submodule"] == fx.TINY_HIDDEN_SIZE


def test_sae_features_fire_on_tiny_model(tiny_model_dir: Path, tiny_sae_dir: Path) -> None:
    from dictionary_learning.trainers import BatchTopKSAE

    ae_path = tiny_sae_dir / f"resid_post_layer_{fx.SAE_LAYER}" / "trainer_0" / "ae.pt"
    sae = BatchTopKSAE.from_pretrained(ae_path)
    # Held-out text (not the calibration sentences) so the check is not circular.
    texts = ["You are an assistant model, and the cat is a bat.", "I feel that I think about music."]
    acts = fx.layer_activations(tiny_model_dir, fx.SAE_LAYER, texts)
    with torch.no_grad():
        feats = sae.encode(acts)
    frac = (feats > 0).float().mean().item()
    assert 0.01 < frac < 0.5, frac
    assert (feats > 0).any(0).sum() > fx.SAE_DICT_SIZE // 4  # many distinct features, not a few


def test_hub_download_offline(tiny_sae_repo: str) -> None:
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(tiny_sae_repo, f"resid_post_layer_{fx.SAE_LAYER}/trainer_0/ae.pt")
    assert Path(path).is_file()
    cfg = hf_hub_download(tiny_sae_repo, f"resid_post_layer_{fx.SAE_LAYER}/trainer_0/config.json")
    assert json.loads(Path(cfg).read_text())["trainer"]["k"] == fx.SAE_K


def test_make_sae_release_broken_variants(tmp_path: Path) -> None:
    from dictionary_learning.trainers import BatchTopKSAE

    d = fx.make_sae_release(tmp_path, layer=3, activation_dim=32, dict_size=128, k=4, threshold=-1.0, seed=0)
    assert d == tmp_path / "resid_post_layer_3" / "trainer_0"
    sae = BatchTopKSAE.from_pretrained(d / "ae.pt")
    assert sae.activation_dim == 32 and float(sae.threshold) == -1.0
    assert json.loads((d / "config.json").read_text())["trainer"]["layer"] == 3


def test_corpus_files(tiny_corpus_jsonl: Path, tiny_corpus_parquet: Path, tiny_model_dir: Path) -> None:
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    rows = [json.loads(line) for line in tiny_corpus_jsonl.read_text().splitlines()]
    texts = [r["text"] for r in rows if isinstance(r["text"], str)]
    assert len(texts) == fx.CORPUS_N_VALID
    assert sum(r["text"] is None for r in rows) == 1
    assert sum(isinstance(r["text"], int) for r in rows) == 1
    assert texts.count(fx.DUPLICATE_TEXT) == 2
    assert len(set(texts)) == fx.CORPUS_N_VALID - 1

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    lengths = [len(ids) for ids in tok(texts, add_special_tokens=False).input_ids]
    assert min(lengths) <= 4
    assert sum(n > 200 for n in lengths) >= fx.N_LONG_DOCS

    table = pq.read_table(tiny_corpus_parquet)
    assert table.column("text").to_pylist() == texts


@pytest.mark.parametrize("add_bos", [True, False])
def test_tokenizer_is_deterministic(add_bos: bool) -> None:
    a, b = fx.train_tokenizer(add_bos), fx.train_tokenizer(add_bos)
    assert a.get_vocab() == b.get_vocab()
