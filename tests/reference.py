"""A brute-force reference miner, written independently of personamine's engine.

Each window is run alone through the FULL model with ``output_hidden_states`` and encoded with the full
``BatchTopKSAE.encode``; selection is plain Python sorting. The windowing and masking rules are the ones the
README documents, restated here from the spec rather than imported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class RefEntry:
    score: float
    document: int
    window_start: int
    tokens: tuple[int, ...]
    activations: np.ndarray


def load_texts(corpus_jsonl: Path) -> list[object]:
    return [json.loads(line)["text"] for line in corpus_jsonl.read_text().splitlines()]


@dataclass
class RefWindow:
    document: int
    window_start: int
    tokens: tuple[int, ...]
    acts: np.ndarray  # [T, len(features)], zero on unscored tokens
    n_scored: int


@torch.no_grad()
def reference_windows(model_dir: Path, ae_path: Path, texts: list[object], *, layer: int, features: list[int],
                      ctx_len: int, prefix: list[int], norm_filter: float = 10.0) -> list[RefWindow]:
    """Every window of the corpus, run alone, with the features' activations on its scored tokens."""
    from dictionary_learning.trainers import BatchTopKSAE
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    sae = BatchTopKSAE.from_pretrained(str(ae_path), device="cpu")
    special = set(tok.all_special_ids) | set(prefix) | {tok.pad_token_id}
    out = []
    step = ctx_len - len(prefix)
    for doc, text in enumerate(texts):
        if not isinstance(text, str):
            continue
        ids = tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        for start in range(0, len(ids), step):
            window = prefix + ids[start:start + step]
            h = model(torch.tensor([window]), output_hidden_states=True).hidden_states[layer + 1][0]
            eligible = [i >= len(prefix) and window[i] not in special for i in range(len(window))]
            norms = h.norm(dim=-1)
            scored = list(eligible)
            if norm_filter > 0:
                vals = sorted(norms[i].item() for i in range(len(window)) if eligible[i])
                if vals:
                    median = vals[(len(vals) - 1) // 2]  # lower median
                    scored = [e and norms[i].item() <= norm_filter * median for i, e in enumerate(eligible)]
            codes = sae.encode(h)
            mask = torch.tensor(scored, dtype=torch.float32)[:, None]
            out.append(RefWindow(doc, start, tuple(window), (codes[:, features] * mask).numpy(), sum(scored)))
    return out


def reference_topk(model_dir: Path, ae_path: Path, texts: list[object], *, layer: int, features: list[int],
                   ctx_len: int, top_k: int | None, prefix: list[int], norm_filter: float = 10.0,
                   dedupe: bool = True) -> dict[int, list[RefEntry]]:
    windows = reference_windows(model_dir, ae_path, texts, layer=layer, features=features, ctx_len=ctx_len,
                                prefix=prefix, norm_filter=norm_filter)
    entries: dict[int, list[RefEntry]] = {f: [] for f in features}
    for w in windows:
        for j, f in enumerate(features):
            score = float(w.acts[:, j].max())
            if score > 0:
                entries[f].append(RefEntry(score, w.document, w.window_start, w.tokens, w.acts[:, j].copy()))
    result = {}
    for f, items in entries.items():
        items.sort(key=lambda e: (-e.score, e.document, e.window_start))
        kept, seen = [], set()
        for e in items:
            if dedupe and e.tokens in seen:
                continue
            seen.add(e.tokens)
            kept.append(e)
        result[f] = kept if top_k is None else kept[:top_k]
    return result


_M64 = 2**64 - 1


def splitmix64_int(x: int) -> int:
    """Reference splitmix64 on Python ints (Steele, Lea & Flood 2014), independent of the numpy version."""
    z = (x + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def key_int(document: int, start: int) -> int:
    return splitmix64_int(splitmix64_int(document) ^ start) >> 1


def reference_negatives(windows: list[RefWindow], features: list[int], m: int,
                        dedupe: bool = True) -> dict[int, list[tuple[int, int]]]:
    """Per feature, the (document, start) of the m smallest-key windows with a scored token where it never fires,
    one per distinct token content (the smallest-key copy)."""
    result = {}
    ordered = sorted(windows, key=lambda w: (key_int(w.document, w.window_start), w.document, w.window_start))
    for j, f in enumerate(features):
        kept, seen = [], set()
        for w in ordered:
            if w.n_scored == 0 or dedupe and w.tokens in seen:
                continue
            seen.add(w.tokens)  # a content that fires somewhere is not a negative in any copy either
            if float(w.acts[:, j].max()) == 0 and len(kept) < m:
                kept.append((w.document, w.window_start))
        result[f] = kept
    return result
