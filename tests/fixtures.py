"""Builders for the tiny, offline test artefacts (model, tokenizer, SAE release, hub cache, corpus).

Plain functions so that ``conftest.py`` fixtures and ``benchmarks/`` can share them. Everything is
deterministic (fixed seeds, fixed text) and builds in well under a second once torch/transformers
are imported. Heavy imports stay inside the functions so importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
) -> Path:
    """SAE whose features fire on the tiny model's layer-``layer`` residual stream and whose decoder reconstructs it
    (so the pre-flight quality check passes at ``layer``). ``fit=False`` keeps the decoder tied to the encoder rows
    (unit ``e_f . d_f``), where a clamp reaches its target exactly."""
    acts = layer_activations(model_dir, layer)
    sae = build_batchtopk_sae(acts.shape[-1], dict_size, k, threshold=-1.0, seed=seed)
    calibrate_sae(sae, acts, active_fraction)
    if fit:
        fit_decoder(sae, layer_activations(model_dir, layer, decoder_fit_texts()))
    return save_sae_release(sae, root, layer, seed=seed)


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
# SAE layouts of other libraries (tests/test_saes_*.py)
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
