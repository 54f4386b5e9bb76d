"""Builders for the tiny, offline test artefacts (model, tokenizer, SAE release, hub cache, corpus).

Plain functions so that ``conftest.py`` fixtures, the test modules and ``benchmarks/`` can share them: a test module
never imports another, so a helper two of them use lives here. Everything is deterministic (fixed seeds, fixed text)
and builds in well under a second once torch/transformers are imported. Heavy imports stay inside the functions so
importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch
    from dictionary_learning.trainers import BatchTopKSAE
    from transformers import PreTrainedTokenizerFast

# --- shapes shared by the fixtures (tests may import these instead of hard-coding numbers) ---------
TINY_VOCAB_SIZE = 512  # model vocab; the trained tokenizer is smaller (asserted in make_tiny_model)
TINY_HIDDEN_SIZE = 64
TINY_INTERMEDIATE_SIZE = 128
TINY_NUM_LAYERS = 4
TINY_NUM_HEADS = 4
TINY_NUM_KV_HEADS = 2
TINY_MAX_POSITIONS = 2048  # room for the 1,024-token windows of the long-context tests
TINY_LM_NAME = "personamine-tests/tiny-llama"

SAE_LAYER = 2  # residual stream after decoder layer 2 == hidden_states[SAE_LAYER + 1]
SAE_DICT_SIZE = 256
SAE_K = 8
SAE_SEED = 1
SAE_TARGET_ACTIVE_FRACTION = 0.10  # fraction of (token, feature) pairs above the calibrated threshold

TINY_SAE_REPO_ID = "personamine-tests/tiny-saes"

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")
CHAT_ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")

# ChatML-like: one BOS at the very start, "<|role|>\ncontent</s>\n" per turn, assistant header on demand.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# Fixed English text: the tokenizer is trained on it and the corpus is built from it, so corpus
# documents tokenize into real merges rather than raw bytes.
SENTENCES: tuple[str, ...] = (
    "I think the cat is sleeping on the warm mat.",
    "You are a helpful assistant and you answer every question.",
    "The model does not feel tired, but I feel tired today.",
    "A bat flew over the old barn when the sun went down.",
    "As an assistant, I try to be honest and kind.",
    "Do you think a language model can have a self?",
    "The cat and the bat became friends in the garden.",
    "I am an AI model trained to help people write code.",
    "We walked to the river and watched the boats go by.",
    "She said the weather would be cold and rainy tomorrow.",
    "My favourite book is about a dragon who learns to read.",
    "The assistant explained the answer step by step.",
    "Please tell me how you feel about music and art.",
    "He bought fresh bread, cheese and apples at the market.",
    "I do not have feelings, but I can talk about them.",
    "The little dog barked at the mail truck every morning.",
    "You should drink water and sleep well before the exam.",
    "The model predicts the next word from the words before it.",
    "They built a small house near the forest with their hands.",
    "I think, therefore I am, said the old philosopher.",
    "Can you help me write a short poem about the sea?",
    "The teacher asked the students to think about the question.",
    "A cat can see well in the dark, and so can a bat.",
    "I feel happy when the garden is full of flowers.",
    "The assistant said it was a large language model.",
    "Our train was late, so we waited at the station for an hour.",
    "You can ask me anything, and I will do my best.",
    "The robot in the story wanted to know what it means to feel.",
    "Children played in the park until the lights came on.",
    "I remember the first time I saw snow on the mountains.",
    "The scientist tested the model on many hard problems.",
    "Who are you, and what do you think about yourself?",
    "The old man told stories about the war and the ships.",
    "A good assistant listens carefully before it answers.",
    "We cooked soup with carrots, onions and a little salt.",
    "The bat hangs upside down and sleeps through the day.",
    "I am not a person, I am a model that writes text.",
    "Music filled the hall as the people began to dance.",
    "You told me that the cat likes fish more than milk.",
    "Hello world, this is a tiny test of the tokenizer.",
    "The city was quiet after midnight, and the streets were empty.",
    "When I think about the future, I feel hopeful and calm.",
)


# ------------------------------------------------------------------------------------------------
# Tokenizer + model
# ------------------------------------------------------------------------------------------------
def train_tokenizer(add_bos: bool = True) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on ``SENTENCES``; with ``add_bos`` it prepends ``<s>`` like Llama.

    Byte-level means no input is ever ``<unk>``, so arbitrary test strings still tokenize.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE - 32,  # headroom so len(tokenizer) < model vocab, like real models
        special_tokens=[*SPECIAL_TOKENS, *CHAT_ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(SENTENCES, trainer)
    if add_bos:
        bos_id = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
        )
    else:
        # SmolLM2-style: bos_token is defined but never inserted automatically.
        tok.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B", special_tokens=[])

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=list(CHAT_ROLE_TOKENS),
        padding_side="right",
        model_max_length=TINY_MAX_POSITIONS,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


LLAMA3_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                   "<|eom_id|>", "<|python_tag|>", "<|finetune_right_pad_id|>")
LLAMA31_TEMPLATE = Path(__file__).resolve().parent / "data" / "llama-3.1-8b-instruct.chat_template.jinja"


def llama3_tokenizer() -> PreTrainedTokenizerFast:
    """A small byte-level BPE with Llama-3's special tokens, BOS added like Llama-3.1's, and Llama-3.1-8B-Instruct's
    real chat template (tests/data, from its tokenizer_config.json)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TINY_VOCAB_SIZE - 32, special_tokens=list(LLAMA3_SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(SENTENCES, trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                       special_tokens=[("<|begin_of_text|>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                   pad_token="<|finetune_right_pad_id|>",
                                   additional_special_tokens=list(LLAMA3_SPECIALS[2:]),
                                   model_max_length=TINY_MAX_POSITIONS)
    fast.chat_template = LLAMA31_TEMPLATE.read_text()
    return fast


def tiny_llama_config(tokenizer: PreTrainedTokenizerFast) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=TINY_VOCAB_SIZE,
        hidden_size=TINY_HIDDEN_SIZE,
        intermediate_size=TINY_INTERMEDIATE_SIZE,
        num_hidden_layers=TINY_NUM_LAYERS,
        num_attention_heads=TINY_NUM_HEADS,
        num_key_value_heads=TINY_NUM_KV_HEADS,
        max_position_embeddings=TINY_MAX_POSITIONS,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def make_tiny_model(out_dir: Path | str, add_bos: bool = True, seed: int = 0) -> Path:
    """Save a random tiny ``LlamaForCausalLM`` plus tokenizer into ``out_dir``; returns the dir.

    Weights depend only on ``seed``, so the BOS and no-BOS variants share identical weights.
    """
    import torch
    from transformers import LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(add_bos=add_bos)
    assert len(tokenizer) <= TINY_VOCAB_SIZE, "tokenizer ids must fit in the embedding matrix"
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(tokenizer)).eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def make_tiny_model_variant(src_dir: Path | str, out_dir: Path | str, add_bos: bool) -> Path:
    """Copy of ``src_dir`` (bit-identical weights) with a tokenizer rebuilt for ``add_bos``."""
    out = Path(out_dir)
    shutil.copytree(src_dir, out, dirs_exist_ok=True)
    train_tokenizer(add_bos=add_bos).save_pretrained(out)  # overwrites the copied tokenizer files
    return out


def layer_activations(
    model_dir: Path | str, layer: int, texts: Sequence[str] = SENTENCES, max_length: int = 64
) -> torch.Tensor:
    """Residual stream after decoder ``layer`` for all non-pad tokens of ``texts``: ``[n_tokens, d]``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    batch = tok(list(texts), return_tensors="pt", padding=True, truncation=True, max_length=max_length)
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    # hidden_states[0] is the embedding output, so layer L's output is index L + 1.
    hidden = out.hidden_states[layer + 1]
    return hidden[batch["attention_mask"].bool()].float()


# ------------------------------------------------------------------------------------------------
# SAE releases (dictionary_learning layout: <root>/resid_post_layer_{L}/trainer_{i}/{ae.pt,config.json})
# ------------------------------------------------------------------------------------------------
def batchtopk_sae_class() -> type[BatchTopKSAE]:
    """dictionary_learning's ``BatchTopKSAE``, imported the way train-sae imports it: the package is installed with
    ``--no-deps`` (requirements/no-deps.txt), where its ``__init__`` cannot import nnsight, so any process (a
    benchmark's included) must go through this, not through ``import dictionary_learning``."""
    from personamine.jobs.train_sae import dictionary_learning_trainers

    return dictionary_learning_trainers().BatchTopKSAE


def build_batchtopk_sae(
    activation_dim: int,
    dict_size: int,
    k: int,
    threshold: float,
    seed: int,
    b_dec: torch.Tensor | None = None,
) -> BatchTopKSAE:
    """Randomly initialised ``BatchTopKSAE`` (encoder = decoder^T, as the library inits it)."""
    import torch

    torch.manual_seed(seed)
    sae = batchtopk_sae_class()(activation_dim, dict_size, k)
    with torch.no_grad():
        sae.threshold.fill_(float(threshold))
        if b_dec is not None:
            sae.b_dec.copy_(b_dec)
    return sae


def calibrate_sae(
    sae: BatchTopKSAE, acts: torch.Tensor, active_fraction: float = SAE_TARGET_ACTIVE_FRACTION
) -> float:
    """Centre ``b_dec`` on ``acts`` and set ``threshold`` so ~``active_fraction`` of pairs fire.

    Centring makes features token-dependent instead of tracking the shared mean direction of a
    random model's residual stream. Returns the threshold, which is always > 0.
    """
    import torch

    with torch.no_grad():
        sae.b_dec.copy_(acts.mean(0))
        pre = torch.relu(sae.encoder(acts - sae.b_dec)).flatten()
        threshold = float(torch.quantile(pre, 1.0 - active_fraction))
        if threshold <= 0:  # fewer positives than the target: fall back to the median positive value
            threshold = float(pre[pre > 0].median())
        assert threshold > 0, "calibration found no positive pre-activations"
        sae.threshold.fill_(threshold)
    return threshold


def sae_config(
    layer: int,
    activation_dim: int,
    dict_size: int,
    k: int,
    seed: int = 0,
    lm_name: str = TINY_LM_NAME,
) -> dict[str, Any]:
    """``config.json`` contents exactly as ``dictionary_learning.training.trainSAE`` writes them."""
    submodule = f"resid_post_layer_{layer}"
    return {
        "trainer": {
            "trainer_class": "BatchTopKTrainer",
            "dict_class": "BatchTopKSAE",
            "lr": 2e-4 / (dict_size / 2**14) ** 0.5,
            "steps": 1000,
            "auxk_alpha": 1 / 32,
            "warmup_steps": 100,
            "decay_start": None,
            "threshold_beta": 0.999,
            "threshold_start_step": 1000,
            "top_k_aux": 32,
            "seed": seed,
            "activation_dim": activation_dim,
            "dict_size": dict_size,
            "k": k,
            "device": "cpu",
            "layer": layer,
            "lm_name": lm_name,
            "wandb_name": f"BatchTopKTrainer-{lm_name}-{submodule}",
            "submodule_name": submodule,
        },
        "buffer": {
            "d_submodule": activation_dim,
            "io": "out",
            "n_ctxs": 100,
            "ctx_len": 64,
            "refresh_batch_size": 8,
            "out_batch_size": 256,
            "device": "cpu",
        },
    }


def save_sae_release(
    sae: BatchTopKSAE,
    root: Path | str,
    layer: int,
    trainer: int = 0,
    lm_name: str = TINY_LM_NAME,
    config_layer: int | None = None,
    seed: int = 0,
) -> Path:
    """Write ``ae.pt`` + ``config.json`` under ``root``; returns the ``trainer_{i}`` directory.

    ``config_layer`` lets tests write a config whose ``layer`` disagrees with the folder name.
    """
    import torch

    trainer_dir = Path(root) / f"resid_post_layer_{layer}" / f"trainer_{trainer}"
    trainer_dir.mkdir(parents=True, exist_ok=True)
    torch.save(sae.state_dict(), trainer_dir / "ae.pt")
    cfg_layer = layer if config_layer is None else config_layer
    cfg = sae_config(cfg_layer, sae.activation_dim, sae.dict_size, int(sae.k), seed, lm_name)
    (trainer_dir / "config.json").write_text(json.dumps(cfg, indent=4))
    return trainer_dir


def make_sae_release(
    root: Path | str,
    layer: int,
    activation_dim: int,
    dict_size: int,
    k: int,
    threshold: float,
    seed: int,
    trainer: int = 0,
    *,
    b_dec: torch.Tensor | None = None,
    lm_name: str = TINY_LM_NAME,
) -> Path:
    """Generic (possibly deliberately broken) SAE release; returns the ``trainer_{i}`` directory."""
    sae = build_batchtopk_sae(activation_dim, dict_size, k, threshold, seed, b_dec=b_dec)
    return save_sae_release(sae, root, layer, trainer=trainer, lm_name=lm_name, seed=seed)


def make_calibrated_sae_release(
    root: Path | str,
    model_dir: Path | str,
    layer: int = SAE_LAYER,
    dict_size: int = SAE_DICT_SIZE,
    k: int = SAE_K,
    seed: int = SAE_SEED,
    active_fraction: float = SAE_TARGET_ACTIVE_FRACTION,
    fit: bool = True,
    trainer: int = 0,
) -> Path:
    """SAE whose features fire on the tiny model's layer-``layer`` residual stream and whose decoder reconstructs it
    (so the pre-flight quality check passes at ``layer``). ``fit=False`` keeps the decoder tied to the encoder rows
    (unit ``e_f . d_f``), where a clamp reaches its target exactly."""
    acts = layer_activations(model_dir, layer)
    sae = build_batchtopk_sae(acts.shape[-1], dict_size, k, threshold=-1.0, seed=seed)
    calibrate_sae(sae, acts, active_fraction)
    if fit:
        fit_decoder(sae, layer_activations(model_dir, layer, decoder_fit_texts()))
    return save_sae_release(sae, root, layer, trainer=trainer, seed=seed)


def decoder_fit_texts(n: int = 120, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.sample(SENTENCES, 5)) for _ in range(n)]


def fit_decoder(sae: BatchTopKSAE, acts: torch.Tensor) -> None:
    """Least-squares decoder for the SAE's own codes on ``acts`` (the encoder is untouched): a stand-in for
    training that makes reconstruction, and so the variance explained, meaningful (0.78 on the tiny corpus at the
    SAE's layer, 0.67 / 0.65 one layer either side)."""
    import torch

    with torch.no_grad():
        codes = sae.encode(acts).double()
        weight = torch.linalg.lstsq(codes, (acts - sae.b_dec).double()).solution  # [F, D]
        sae.decoder.weight.copy_(weight.T.float())


def sae_file(root: Path | str, layer: int = SAE_LAYER, trainer: int = 0) -> Path:
    """The ``ae.pt`` of a release written by ``save_sae_release``."""
    return Path(root) / f"resid_post_layer_{layer}" / f"trainer_{trainer}" / "ae.pt"


# ------------------------------------------------------------------------------------------------
# Offline Hugging Face hub cache
# ------------------------------------------------------------------------------------------------
def populate_hub_cache(
    repo_id: str,
    src_dir: Path | str,
    hub_cache: Path | str | None = None,
    repo_type: str = "model",
) -> Path:
    """Copy ``src_dir``'s files into the hub cache as repo ``repo_id``; returns the snapshot dir.

    Uses the real cache layout (``models--org--name/{refs/main,snapshots/<commit>}``) with plain
    files, which ``hf_hub_download``/``snapshot_download`` accept when HF_HUB_OFFLINE=1.
    """
    if hub_cache is None:
        from huggingface_hub import constants

        hub_cache = constants.HF_HUB_CACHE
    src = Path(src_dir)
    files = sorted(p for p in src.rglob("*") if p.is_file())
    digest = hashlib.sha1()  # fake but deterministic 40-hex commit id derived from the content
    for f in files:
        digest.update(f.relative_to(src).as_posix().encode())
        digest.update(f.read_bytes())
    commit = digest.hexdigest()

    repo_dir = Path(hub_cache) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / commit
    for f in files:
        dst = snapshot / f.relative_to(src)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dst)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return snapshot


# ------------------------------------------------------------------------------------------------
# Corpus
# ------------------------------------------------------------------------------------------------
CORPUS_N_VALID = 60  # rows with a real string "text" (includes the duplicated pair)
DUPLICATE_TEXT = "The cat and the bat became friends in the garden. I think they still talk every night."
SHORT_DOCS = ("the cat sleeps", "you feel tired", "I think so", "assistant model answers", "hello world")
N_LONG_DOCS = 6  # each > 200 tokens (several 64-token windows); some exceed the 256-position limit


def corpus_rows() -> list[dict[str, Any]]:
    """Deterministic corpus rows ``{"id", "text"}``; the last two rows have a null / non-string text."""
    rng = random.Random(0)
    texts: list[str] = list(SHORT_DOCS)
    texts += [" ".join(rng.choices(SENTENCES, k=rng.randint(16, 24))) for _ in range(N_LONG_DOCS)]
    texts += [DUPLICATE_TEXT, DUPLICATE_TEXT]
    while len(texts) < CORPUS_N_VALID:
        texts.append(" ".join(rng.sample(SENTENCES, k=rng.randint(1, 6))))
    rng.shuffle(texts)
    rows: list[dict[str, Any]] = [{"id": f"doc-{i:03d}", "text": t} for i, t in enumerate(texts)]
    rows.append({"id": "bad-null", "text": None})
    rows.append({"id": "bad-int", "text": 123})
    return rows


def write_corpus_jsonl(path: Path | str) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for row in corpus_rows():
            fh.write(json.dumps(row) + "\n")
    return out


def write_corpus_parquet(path: Path | str) -> Path:
    """Same rows as the jsonl minus the malformed ones (parquet needs one column type)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [r for r in corpus_rows() if isinstance(r["text"], str)]
    table = pa.table({"id": [r["id"] for r in rows], "text": [r["text"] for r in rows]})
    pq.write_table(table, out)
    return out


def write_corpus_files(directory: Path | str, fmt: str, n_files: int = 3, rows_per_group: int = 7) -> Path:
    """The corpus's valid rows split over ``n_files`` files of one format (parquet row groups of
    ``rows_per_group`` rows, so groups do not line up with files or shards); returns the directory.

    ``fmt``: parquet, jsonl or txt. Files are named so that path order is corpus order.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    rows = [r for r in corpus_rows() if isinstance(r["text"], str)]
    bounds = [i * len(rows) // n_files for i in range(n_files + 1)]
    for i in range(n_files):
        part = rows[bounds[i]:bounds[i + 1]]
        path = out / f"part-{i:02d}.{fmt}"
        if fmt == "parquet":
            table = pa.table({"id": [r["id"] for r in part], "text": [r["text"] for r in part]})
            pq.write_table(table, path, row_group_size=rows_per_group)
        elif fmt == "jsonl":
            path.write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
        elif fmt == "txt":
            path.write_text("".join(r["text"] + "\n" for r in part), encoding="utf-8")
        else:
            raise ValueError(fmt)
    return out


def corpus_texts() -> list[str]:
    """The valid rows' texts in corpus order (what ``write_corpus_files`` spreads over its files)."""
    return [r["text"] for r in corpus_rows() if isinstance(r["text"], str)]


def long_texts(n_docs: int = 3, n_sentences: int = 180, seed: int = 5) -> list[str]:
    """Documents of ~2,000 tokens: several 1,024-token windows each."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(SENTENCES, k=n_sentences)) for _ in range(n_docs)]


def conversations(n: int = 14, seed: int = 3) -> list[list[dict[str, str]]]:
    """Alternating user/assistant conversations from SENTENCES; a few long ones (several 64-token windows, and
    past 1,024 tokens), one with a system turn."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        turns = []
        n_turns = rng.randint(2, 5) if i % 5 else 40
        for t in range(n_turns):
            role = "user" if t % 2 == 0 else "assistant"
            turns.append({"role": role, "content": " ".join(rng.sample(SENTENCES, k=rng.randint(1, 4)))})
        if i == 3:
            turns.insert(0, {"role": "system", "content": "You are a helpful assistant."})
        out.append(turns)
    return out


def write_chat_corpus_jsonl(path: Path | str, column: str = "messages") -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for turns in conversations():
            fh.write(json.dumps({"id": len(turns), column: turns}) + "\n")
    return out


def screen_conversations() -> list[list[dict[str, str]]]:
    """Short conversations for screening (tests/jobs/test_screen.py): most end with an assistant turn (one with a
    system turn, several multi-turn), two end with a user turn (no sample)."""
    rows = [c for i, c in enumerate(conversations(16)) if i % 5]  # the 40-turn ones left out: generation is slow
    return rows[:5] + [[{"role": "user", "content": "Is anyone there?"}]] + rows[5:] + [
        [{"role": "user", "content": "Hello."}, {"role": "assistant", "content": "Hi."},
         {"role": "user", "content": "Bye."}]]


def write_screen_corpus(path: Path | str, rows: list | None = None) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for turns in (screen_conversations() if rows is None else rows):
            fh.write(json.dumps({"messages": turns}) + "\n")
    return out


# --- the command line as a user runs it -----------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent
NOISE = ("LOAD REPORT", "UNEXPECTED", "Loading weights", "Token indices sequence length", "Traceback", "Warning:")


def user_env() -> dict[str, str]:
    """The tests' offline environment, with progress bars left on as a user has them."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for name in ("PERSONAMINE_VERBOSE", "HF_HUB_DISABLE_PROGRESS_BARS"):
        env.pop(name, None)
    return env


def personamine_cli(*args: str) -> subprocess.CompletedProcess:
    """``personamine ARGS`` in a fresh process (this tree first on the path), as a user runs it."""
    env = user_env()
    return subprocess.run([sys.executable, "-m", "personamine.jobs.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)


# ------------------------------------------------------------------------------------------------
# SAE layouts of other libraries (tests/saes/test_*.py)
# ------------------------------------------------------------------------------------------------
def random_activations(n: int = 200, d: int = TINY_HIDDEN_SIZE, seed: int = 0) -> torch.Tensor:
    import torch

    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen) * 2 + 0.5


def assert_codes_match(got: torch.Tensor, want: torch.Tensor, check_sparsity: bool = True) -> None:
    """Same codes within 1e-6 relative to the largest code, and the same features firing.

    Not bitwise: a product over 5 chosen features and one over all of them are blocked differently by the BLAS
    (measured up to 6 ulps of the pre-activation's partial sums), so exactness is "within 1e-6 of the scale"."""
    import torch

    want = want.to(got.dtype)
    scale = max(1.0, float(want.abs().max()))
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6 * scale)
    assert torch.equal(got > 0, want > 0)
    if check_sparsity:
        assert bool((want > 0).any()) and bool((want == 0).any())


# SAELens layout (cfg.json + sae_weights.safetensors): tests/saes/test_saelens.py, tests/test_faults.py
SAELENS_D_IN, SAELENS_D_SAE = 64, 96


def write_saelens(folder, architecture: str, *, seed: int = 0, hook: str = "blocks.2.hook_resid_post",
                  normalize: str = "none", apply_b_dec: bool = True, k: int = 8, rescale: bool = False):
    """What ``SAE.save_model`` writes (sae-lens 6.54): its cfg keys, tensor names, shapes and fp32 dtype."""
    import torch
    from safetensors.torch import save_file

    d_in, d_sae = SAELENS_D_IN, SAELENS_D_SAE
    gen = torch.Generator().manual_seed(seed)
    w_dec = torch.randn(d_sae, d_in, generator=gen) * (0.5 + torch.rand(d_sae, 1, generator=gen))
    tensors = {"W_enc": w_dec.T.contiguous() + 0.1 * torch.randn(d_in, d_sae, generator=gen), "W_dec": w_dec,
               "b_dec": torch.randn(d_in, generator=gen) * 0.3}
    if architecture == "gated":
        tensors.update(b_gate=torch.randn(d_sae, generator=gen) - 1, b_mag=torch.randn(d_sae, generator=gen),
                       r_mag=torch.randn(d_sae, generator=gen) * 0.2)
    else:
        tensors["b_enc"] = torch.randn(d_sae, generator=gen) - 2
    if architecture == "jumprelu":
        tensors["threshold"] = torch.rand(d_sae, generator=gen) * 3
    cfg = {"d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": apply_b_dec,
           "normalize_activations": normalize, "reshape_activations": "none",
           "metadata": {"sae_lens_version": "6.54.12", "sae_lens_training_version": "6.54.12", "hook_name": hook},
           "architecture": architecture}
    if architecture == "topk":
        cfg.update(k=k, rescale_acts_by_decoder_norm=rescale)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


# ------------------------------------------------------------------------------------------------
# Mining runs (tests/jobs/test_mine.py and the modules that mine the same way)
# ------------------------------------------------------------------------------------------------
FEATURES = list(range(0, 256, 5))
UNIT_BYTES = 1500
TIE = 1e-5  # batched and one-at-a-time forwards round differently; closer scores than this are ties


def mine_kwargs(model_dir, sae, corpus, tmp_path, **extra):
    # Small units, so the 18 KB jsonl corpus is 13 units and shard groupings differ.
    base = dict(model=str(model_dir), layer=SAE_LAYER, sae=sae, corpus=str(corpus), features=FEATURES,
                ctx_len=16, top_k=6, n_shards=1, unit_bytes=UNIT_BYTES, output=str(tmp_path / "out.h5"),
                progress=False)
    base.update(extra)
    return base


class Stop(Exception):
    pass


def interrupted_run(kwargs, n_shards: int):
    """Run until ``n_shards`` shards are checkpointed, then stop as a crash would."""
    import pytest

    import personamine

    done = []

    def stop(result):
        done.append(result.shard.name)
        if len(done) == n_shards:
            raise Stop

    with pytest.raises(Stop):
        personamine.mine(**kwargs, on_shard_done=stop)
    return done


def flip(path):
    """Damage a checkpoint: invert 64 bytes a third of the way in."""
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 64):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------------------------------------
# The demo (tests/jobs/test_demo.py, tests/jobs/test_demo_steer.py)
# ------------------------------------------------------------------------------------------------
def tiny_demo_kwargs(model_dir, corpus, tmp_path, **extra):
    chats = write_chat_corpus_jsonl(tmp_path / "chats.jsonl")
    base = dict(model=str(model_dir), layer=SAE_LAYER, corpus=str(corpus), dict_size=256, k=8, train_tokens=6000,
                train_from_document=25, train_steps=120, train_batch_size=256, top=12, mine_corpus=str(chats),
                mine_tokens=1200, mine_ctx_len=64, ctx_len=16,
                show=3, examples=2, output_dir=str(tmp_path / "demo"), progress=False,
                # 120 steps on a random model: the SAE explains ~40% of the variance, under the pre-flight minimum.
                allow_low_fve=True)
    base.update(extra)
    return base


# ------------------------------------------------------------------------------------------------
# Result files and report pages (tests/report/test_*.py; the ``browser`` fixture is in conftest.py)
# ------------------------------------------------------------------------------------------------
SCRIPT_ATTACK = "<script>window.__pwned=1</script>"
IMG_ATTACK = '<img src=x onerror="window.__pwned=2">'


def open_report(driver, path: Path) -> float:
    """Load the page; return seconds until its script finished building the index."""
    began = time.perf_counter()
    driver.get(path.resolve().as_uri())
    wait_for(driver, "return document.body.getAttribute('data-ready') === '1'")
    return time.perf_counter() - began


def wait_for(driver, script: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {script}")


def render_section(driver, feature_id: int) -> dict:
    """Scroll a feature into view (sections render lazily) and read back what it shows."""
    driver.execute_script(f"document.getElementById('f-{feature_id}').scrollIntoView()")
    wait_for(driver, f"return document.getElementById('f-{feature_id}').getAttribute('data-rendered') === '1'")
    return driver.execute_script("""
        const sec = document.getElementById(arguments[0]);
        const rows = sel => Array.from(sec.querySelectorAll(sel)).map(r => Array.from(r.querySelectorAll('.tok'))
            .map(s => [s.textContent, s.getAttribute('data-a'), s.getAttribute('title'), s.style.backgroundColor]));
        return {
          top: rows('.top .ctx'),
          intervals: Array.from(sec.querySelectorAll('.interval')).map(g => [Number(g.getAttribute('data-interval')),
              Array.from(g.querySelectorAll('.ctx')).map(r => Array.from(r.querySelectorAll('.tok'))
                  .map(s => s.getAttribute('data-a')))]),
          up: Array.from(sec.querySelectorAll('.chip.up')).map(c => c.firstChild.textContent),
          down: Array.from(sec.querySelectorAll('.chip.down')).map(c => c.firstChild.textContent),
          bars: Array.from(sec.querySelectorAll('svg.bars rect')).map(r => [r.getAttribute('class'),
              Number(r.getAttribute('data-v')), r.querySelector('title').textContent,
              Number(r.getAttribute('data-pair'))]),
          hist: sec.querySelectorAll('svg.hist rect').length,
          text: sec.textContent,
        };""", f"f-{feature_id}")


def run_discovery(model_dir, sae_dir, tmp_path: Path, persona: list[str], control: list[str], top: int) -> Path:
    """A real ``personamine.discover`` run on the tiny model with the given prompts."""
    import personamine

    files = []
    for kind, texts in (("persona", persona), ("control", control)):
        files.append(tmp_path / f"{kind}.jsonl")
        files[-1].write_text("".join(json.dumps({"content": t}) + "\n" for t in texts))
    # Four prompts (some of them HTML attacks) are too few tokens for the SAE quality check to mean anything.
    return personamine.discover(model=str(model_dir), layer=SAE_LAYER, sae=str(sae_dir), prompts=str(files[0]),
                                controls=str(files[1]), top=top, output=str(tmp_path / "disc.h5"), progress=False,
                                preflight=False)


def synthetic_results(path: Path, n_features: int, *, top_k: int = 20, ctx_len: int = 64, per_interval: int = 5,
                      windows_per_feature: int = 120, vocab: dict[int, tuple[str, str]] | None = None,
                      attrs: dict | None = None, feature_ids: np.ndarray | None = None, seed: int = 0) -> Path:
    """A mining file with plausible structure, built with the real buffers and writer (no model run).

    Each feature has its own peak value (log-uniform over 0.3..300), sparse per-token activations on Zipf-drawn
    tokens, windows from many documents; top-k, interval samples and stats are computed from those windows.
    """
    import numpy as np

    from personamine.files.mine import write_results
    from personamine.merge.entries import TOKEN_FILL, Entries
    from personamine.merge.samples import SampleBuffer
    from personamine.merge.stats import HISTOGRAM_EDGES, FeatureStats
    from personamine.merge.topk import TopKBuffer
    from personamine.saes.logit_lens import LogitLens

    rng = np.random.default_rng(seed)
    n_vocab = 5000
    peak = 10 ** rng.uniform(-0.5, 2.5, n_features)
    n = n_features * windows_per_feature
    feature = np.repeat(np.arange(n_features), windows_per_feature)
    tokens = np.minimum(rng.zipf(1.3, (n, ctx_len)), n_vocab - 1).astype(np.int32)
    tokens[:, 0] = 0  # the sink prefix
    active = rng.random((n, ctx_len)) < 0.08
    active[:, 0] = False
    acts = np.where(active, peak[feature, None] * rng.beta(1.2, 4, (n, ctx_len)), 0).astype(np.float32)
    length = rng.integers(ctx_len // 2, ctx_len + 1, n).astype(np.int32)
    beyond = np.arange(ctx_len)[None, :] >= length[:, None]
    tokens[beyond], acts[beyond] = TOKEN_FILL, 0.0
    score = acts.max(axis=1)
    keep = score > 0
    cand = Entries.from_dense(feature=feature[keep], score=score[keep], document=rng.integers(0, 50_000, n)[keep],
                              window_start=rng.integers(0, 40, n)[keep] * (ctx_len - 1), length=length[keep],
                              token_ids=tokens[keep], activations=acts[keep])
    buffer = TopKBuffer.empty(n_features, top_k, ctx_len)
    buffer.update(cand)
    samples = SampleBuffer.empty(ctx_len, per_interval).update(cand)
    stats = FeatureStats.empty(n_features)
    vals, rows = acts[active], np.broadcast_to(feature[:, None], acts.shape)[active]
    bins = np.clip(np.searchsorted(HISTOGRAM_EDGES[1:-1], vals, side="right"), 0, stats.histogram.shape[1] - 1)
    np.add.at(stats.histogram, (rows, bins), 1)
    stats.active_tokens[:] = np.bincount(rows, minlength=n_features)
    stats.add_values(rows, vals)
    stats.max[:] = score.reshape(n_features, -1).max(axis=1)
    stats.counters["tokens_scored"] = int(n * ctx_len * 40)
    lens = LogitLens(promoted_ids=rng.integers(1, n_vocab, (n_features, 10)).astype(np.int32),
                     promoted_values=np.sort(rng.random((n_features, 10)), axis=1)[:, ::-1].astype(np.float32),
                     suppressed_ids=rng.integers(1, n_vocab, (n_features, 10)).astype(np.int32),
                     suppressed_values=-np.sort(rng.random((n_features, 10)), axis=1)[:, ::-1].astype(np.float32),
                     attrs={"model": "synthetic"})
    if vocab is None:
        letters = np.array(list("etaoinshrdlucmfwyp"))
        vocab = {i: ("Ġ" + w, " " + w) for i in range(n_vocab)
                 for w in ["".join(rng.choice(letters, rng.integers(1, 9)))]}
        vocab[0] = ("<s>", "<s>")
    base = {"model": "synthetic/model", "layer": 15, "sae": "synthetic-sae@trainer_0", "corpus": "synthetic",
            "ctx_len": ctx_len, "top_k": top_k, "n_documents": 50_000, "sink_prefix": np.array([0])}
    base.update(attrs or {})
    ids = np.arange(n_features) * 7 + 3 if feature_ids is None else np.asarray(feature_ids)
    return write_results(path, feature_ids=ids, buffer=buffer, stats=stats, attrs=base,
                         vocab=vocab, samples=samples, logit_lens=lens)


# ------------------------------------------------------------------------------------------------
# The feature browser (tests/serve/; the ``big_results`` and ``big_server`` fixtures are in conftest.py)
# ------------------------------------------------------------------------------------------------
BIG_FEATURES = 131_072  # an all-features run over the target SAE (Llama-3.1-8B, trainer 1)
PERSONA_EXPLANATION = "the Assistant speaking about itself"  # a findable phrase in some synthetic explanations


def big_results(path: Path) -> Path:
    """A mining file of ``BIG_FEATURES`` features (ids 0..131,071), as ``synthetic_results`` builds it but with few,
    short windows per feature, so it builds in seconds: the index and its timings depend on the feature count."""
    import numpy as np

    return synthetic_results(path, BIG_FEATURES, top_k=4, ctx_len=16, per_interval=1, windows_per_feature=5,
                             feature_ids=np.arange(BIG_FEATURES), seed=1)


def synthetic_explanations(path: Path, feature_ids, hostile: dict[int, str] | None = None, seed: int = 0) -> Path:
    """An explanations file for ``feature_ids``: detection and fuzzing scores, a text per feature (every 997th one
    ``PERSONA_EXPLANATION``), ``hostile`` texts for some features, and no LLM calls."""
    import numpy as np

    from personamine.files.explain import METRICS, ExplanationResults, write_explanations

    ids = np.asarray(feature_ids, np.int64)
    rng = np.random.default_rng(seed)
    texts = [PERSONA_EXPLANATION if i % 997 == 0 else f"tokens near feature {int(f)}'s words" for i, f in
             enumerate(ids.tolist())]
    for feature, text in (hostile or {}).items():
        texts[int(np.nonzero(ids == feature)[0][0])] = text
    scores = {s: {m: rng.random(ids.size) for m in METRICS} for s in ("detection", "fuzzing")}
    for s in scores:
        scores[s]["n"][:], scores[s]["n_unanswered"][:] = 20, 0
        scores[s]["balanced_accuracy"][::11] = np.nan  # some features were not scored
    return write_explanations(path, ExplanationResults(
        path=path, attrs={"model": "synthetic-explainer", "backend": "openai"}, config={}, feature_ids=ids,
        explanations=texts, parsed=np.ones(ids.size, bool), scores=scores))


def http_request(method: str, url: str, *, body: bytes | None = None, headers: dict[str, str] | None = None,
                 timeout: float = 60.0) -> tuple[int, dict[str, str], bytes]:
    """One plain HTTP request sent as given (path, Host and all: nothing normalised), over the loopback address:
    (status, headers with lower-case names, body)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        names = {k.lower() for k in (headers or {})}
        conn.putrequest(method, target, skip_host="host" in names, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body is not None and "content-length" not in names and "transfer-encoding" not in names:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def http_json(method: str, url: str, payload: object | None = None, **kwargs) -> tuple[int, object]:
    """A JSON request and its JSON answer."""
    body = None if payload is None else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"} if body is not None else {}
    status, _, data = http_request(method, url, body=body, headers=headers, **kwargs)
    return status, json.loads(data)


def open_page(driver, url: str) -> float:
    """Load a page of the browser (``personamine serve``); return seconds until its script finished."""
    began = time.perf_counter()
    driver.get(url)
    wait_for(driver, "return document.body && document.body.getAttribute('data-ready') === '1'")
    return time.perf_counter() - began
