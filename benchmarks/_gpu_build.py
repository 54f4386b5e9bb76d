"""What ``gpu.py`` builds on the device, with no download: the shapes it measures, a random-weight Llama-3.1-8B-
Instruct checkpoint truncated after the target layer, a calibrated random SAE, and pre-tokenized corpora."""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _common import PeakMemory, calibrated_sae

# Llama-3.1-8B-Instruct's config.json, field by field (meta-llama/Llama-3.1-8B-Instruct, transformers' names).
LLAMA_31_8B_INSTRUCT = dict(
    architectures=["LlamaForCausalLM"], attention_bias=False, attention_dropout=0.0, bos_token_id=128000,
    eos_token_id=[128001, 128008, 128009], head_dim=128, hidden_act="silu", hidden_size=4096,
    initializer_range=0.02, intermediate_size=14336, max_position_embeddings=131072, mlp_bias=False,
    model_type="llama", num_attention_heads=32, num_hidden_layers=32, num_key_value_heads=8, pretraining_tp=1,
    rms_norm_eps=1e-5, rope_scaling={"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    rope_theta=500000.0, tie_word_embeddings=False, vocab_size=128256,
)
# The --tiny stand-in: the same architecture (GQA, llama3 rope scaling) at test-fixture size.
TINY_LLAMA = {**LLAMA_31_8B_INSTRUCT, "head_dim": 16, "hidden_size": 64, "intermediate_size": 128,
              "num_attention_heads": 4, "num_hidden_layers": 4, "num_key_value_heads": 2, "vocab_size": 512,
              "max_position_embeddings": 2048, "bos_token_id": 1, "eos_token_id": 2,
              "rope_scaling": {**LLAMA_31_8B_INSTRUCT["rope_scaling"], "original_max_position_embeddings": 256}}
CORPUS_COLUMN = "tokens"


@dataclass(frozen=True)
class Mode:
    """One window layout: ``stride`` None is the plain mode (no overlap)."""

    name: str
    ctx_len: int
    stride: int | None
    example_len: int
    doc_tokens: int  # corpus tokens per measurement
    doc_median: int  # document lengths: log-normal around this median, clipped to [doc_min, doc_max]
    doc_min: int
    doc_max: int


@dataclass(frozen=True)
class Shapes:
    name: str
    model: dict
    layer: int
    dict_size: int
    modes: tuple[Mode, ...]
    batch_tokens: tuple[int, ...]
    features: int  # targeted features in phase (c)
    sample: int  # (c) top-k windows recomputed per mode by the exactness check
    first_id: int  # corpus token ids are drawn from [first_id, vocab): clear of the tokenizer's special ids


REAL = Shapes(
    name="llama-3.1-8b-instruct, layer 15, 131072-feature SAE", model=LLAMA_31_8B_INSTRUCT, layer=15,
    dict_size=131072,
    modes=(Mode("ctx128", 128, None, 64, 262144, 400, 16, 4096),
           Mode("ctx1024", 1024, 512, 64, 131072, 3000, 256, 16384)),
    batch_tokens=(8192, 16384, 32768, 65536), features=20, sample=24, first_id=256,
)
TINY = Shapes(
    name="tiny llama (64 wide, 4 layers), layer 2, 512-feature SAE", model=TINY_LLAMA, layer=2, dict_size=512,
    modes=(Mode("ctx32", 32, None, 16, 2048, 40, 4, 200), Mode("ctx128", 128, 48, 32, 1024, 300, 40, 800)),
    batch_tokens=(256, 1024), features=20, sample=12, first_id=64,
)


def param_bytes(model) -> int:
    return int(sum(p.numel() * p.element_size() for p in model.parameters()))


def free_device_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def build_checkpoint(shapes: Shapes, out: Path, device, dtype, measure_full: bool) -> dict:
    """A random-weight model with ``shapes.model``'s exact config, saved with a tokenizer as a local directory.

    The checkpoint's config keeps the full depth, but it holds only layers ``0..layer`` (plus embeddings and the
    final norm): exactly the weights a truncated load reads from the real checkpoint, at half the disk and time.
    With ``measure_full`` the full-depth model with its LM head is first materialised on the device, which is what a
    whole-model load (the seed notebook's) holds."""
    import torch
    from fixtures import llama3_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel

    config = LlamaConfig(**shapes.model)
    info: dict = {"config": json.loads(config.to_json_string())}
    torch.manual_seed(0)
    if measure_full:
        base = torch.cuda.memory_allocated() if device.type == "cuda" else 0
        with PeakMemory() as mem, torch.device(device):
            full = LlamaForCausalLM._from_config(config, dtype=dtype)
        info["full_model"] = {"layers": config.num_hidden_layers, "weights_bytes": param_bytes(full),
                              "gpu_peak_bytes": None if mem.cuda_peak is None else mem.cuda_peak - base,
                              "how": "LlamaForCausalLM with every layer and the LM head, materialised on the device "
                                     "(what a whole-model load holds; not read from disk)"}
        model = full.model
        del full
    else:
        with torch.device(device):
            model = LlamaModel._from_config(config, dtype=dtype)
    model.layers = model.layers[: shapes.layer + 1]
    model.save_pretrained(out)
    del model
    free_device_memory()
    llama3_tokenizer().save_pretrained(out)
    info["checkpoint_bytes"] = int(sum(f.stat().st_size for f in out.iterdir() if f.is_file()))
    return info


def load_truncated(model_dir: Path, layer: int, device, dtype_name: str, device_name: str):
    """personamine's own load (``load_model``: layers 0..layer), with the device memory it takes."""
    import torch

    from personamine.model.loading import load_model

    base = torch.cuda.memory_allocated() if device.type == "cuda" else 0
    with PeakMemory() as mem:
        loaded = load_model(str(model_dir), layer, dtype=dtype_name, device=device_name)
    resident = torch.cuda.memory_allocated() - base if device.type == "cuda" else None
    return loaded, {"layers": layer + 1, "weights_bytes": param_bytes(loaded.model), "gpu_resident_bytes": resident,
                    "gpu_peak_bytes": None if mem.cuda_peak is None else mem.cuda_peak - base,
                    "rss_peak_bytes": mem.peak, "how": "personamine.model.loading.load_model from the checkpoint"}


def write_corpus(path: Path, mode: Mode, vocab: int, first_id: int, seed: int) -> list[list[int]]:
    """A pre-tokenized jsonl corpus (``{"tokens": [ids]}`` per line) of random documents; returns them."""
    rng = np.random.default_rng(seed)
    docs: list[list[int]] = []
    total = 0
    while total < mode.doc_tokens:
        n = int(np.clip(rng.lognormal(np.log(mode.doc_median), 1.0), mode.doc_min, mode.doc_max))
        docs.append(rng.integers(first_id, vocab, n).tolist())
        total += n
    path.write_text("".join(json.dumps({CORPUS_COLUMN: d}) + "\n" for d in docs))
    return docs


def build_sae(workdir: Path, loaded, batches, shapes: Shapes, norm_filter: float) -> Path:
    """A random BatchTopK SAE of ``shapes.dict_size`` features, built on the model's device and calibrated on its
    own layer activations (about 32 features fire per token); the dictionary_learning release layout."""
    from personamine.jobs.train_sae import dictionary_learning_trainers

    dictionary_learning_trainers()  # its package __init__ imports nnsight, which no GPU image needs
    root = calibrated_sae(workdir, loaded, batches, layer=shapes.layer, dict_size=shapes.dict_size,
                          norm_filter=norm_filter, device=loaded.device)
    free_device_memory()
    return root
