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


def line_uids(corpus_jsonl: Path, unit_bytes: int) -> list[int]:
    """The in-run identity of each line of a one-file jsonl corpus, restated from the README: a line belongs to unit
    ``first byte // unit_bytes``, and its uid is ``unit << 32 | (its rank among that unit's lines)``."""
    uids, offset, rank, unit = [], 0, 0, -1
    for line in corpus_jsonl.read_bytes().splitlines(keepends=True):
        here = offset // unit_bytes
        rank = rank + 1 if here == unit else 0
        unit = here
        uids.append(unit << 32 | rank)
        offset += len(line)
    return uids


@torch.no_grad()
def reference_topk(model_dir: Path, ae_path: Path, texts: list[object], *, layer: int, features: list[int],
                   ctx_len: int, top_k: int | None, prefix: list[int], norm_filter: float = 10.0,
                   dedupe: bool = True) -> dict[int, list[RefEntry]]:
    from dictionary_learning.trainers import BatchTopKSAE
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    sae = BatchTopKSAE.from_pretrained(str(ae_path), device="cpu")
    special = set(tok.all_special_ids) | set(prefix) | {tok.pad_token_id}
    entries: dict[int, list[RefEntry]] = {f: [] for f in features}
    step = ctx_len - len(prefix)
    for doc, text in enumerate(texts):
        if not isinstance(text, str):
            continue
        ids = tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        for start in range(0, len(ids), step):
            window = prefix + ids[start:start + step]
            out = model(torch.tensor([window]), output_hidden_states=True)
            h = out.hidden_states[layer + 1][0]
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
            acts = (codes[:, features] * mask).numpy()
            for j, f in enumerate(features):
                score = float(acts[:, j].max())
                if score > 0:
                    entries[f].append(RefEntry(score, doc, start, tuple(window), acts[:, j].copy()))
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
