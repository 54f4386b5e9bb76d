"""Logit lens: the output tokens each feature's decoder direction promotes and suppresses.

``logits_f = W_U @ (norm_weight * W_dec[:, f])``: the direction passed through the final RMSNorm's gain (its
per-token scale is a positive scalar and does not change the ranking) and the unembedding. Only two tensors are
read from the checkpoint, the final norm weight and the unembedding (``lm_head.weight``, or the input embedding of
a tied model), with ``safetensors.safe_open`` from the one file that holds each (the index json says which), so a
16 GB model costs one 1 GB read, not a model load. Decoder directions come from the memory-mapped SAE
(``Sae.decoder_directions``, any format).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from personamine.errors import PersonamineError
from personamine.model.loading import load_config, resolve_model_source

if TYPE_CHECKING:  # torch is imported lazily: reading a results file must not pay for it
    import torch

TOP_N = 10
NORM_NAMES = ("model.norm.weight", "model.language_model.norm.weight")
UNEMBED_NAMES = ("lm_head.weight",)
EMBED_NAMES = ("model.embed_tokens.weight", "model.language_model.embed_tokens.weight")
_INDEX = "model.safetensors.index.json"
_SINGLE = "model.safetensors"


@dataclass
class LogitLens:
    promoted_ids: np.ndarray  # int32 [F, n], highest logit first
    promoted_values: np.ndarray  # float32 [F, n]
    suppressed_ids: np.ndarray  # int32 [F, n], lowest logit first
    suppressed_values: np.ndarray  # float32 [F, n]
    attrs: dict

    def arrays(self) -> dict[str, np.ndarray]:
        return {"promoted_ids": self.promoted_ids, "promoted_values": self.promoted_values,
                "suppressed_ids": self.suppressed_ids, "suppressed_values": self.suppressed_values}


class _Checkpoint:
    """Tensor name -> file, for a local directory or a hub repo (files fetched only when a tensor is read)."""

    def __init__(self, source: str, revision: str | None) -> None:
        self.source, self.revision = source, revision
        self.local = Path(source).expanduser() if Path(source).expanduser().is_dir() else None
        index = self._file(_INDEX, required=False)
        if index is not None:
            self.weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        else:
            single = self._file(_SINGLE, required=True)
            from safetensors import safe_open

            with safe_open(str(single), framework="pt") as f:
                self.weight_map = dict.fromkeys(f.keys(), _SINGLE)

    def _file(self, name: str, required: bool) -> Path | None:
        if self.local is not None:
            path = self.local / name
            if path.is_file():
                return path
        else:
            from huggingface_hub import hf_hub_download

            try:
                return Path(hf_hub_download(self.source, name, revision=self.revision))
            except Exception:  # the hub raises many unrelated types; all mean "not available"
                pass
        if required:
            raise PersonamineError(
                f"logit lens needs a safetensors checkpoint, but {self.source!r} has neither {_INDEX} nor {_SINGLE}")
        return None

    def first(self, names: tuple[str, ...]) -> str | None:
        return next((n for n in names if n in self.weight_map), None)

    def read(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        path = self._file(self.weight_map[name], required=True)
        with safe_open(str(path), framework="pt") as f:
            return f.get_tensor(name)


def unembedding(model: str, revision: str | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(final norm gain [D] fp32, unembedding [V, D] in its stored dtype, provenance attrs) of a model."""
    config = load_config(model, revision=revision)
    ckpt = _Checkpoint(resolve_model_source(model), revision)
    norm_name = ckpt.first(NORM_NAMES)
    if norm_name is None:
        raise PersonamineError(f"logit lens: no final RMSNorm weight ({' or '.join(NORM_NAMES)}) in {model!r}")
    unembed_name = ckpt.first(UNEMBED_NAMES)
    if unembed_name is None and getattr(config, "tie_word_embeddings", False):
        unembed_name = ckpt.first(EMBED_NAMES)
    if unembed_name is None:
        raise PersonamineError(f"logit lens: no unembedding (lm_head.weight, or a tied embedding) in {model!r}")
    gain = ckpt.read(norm_name).float()
    if str(getattr(config, "model_type", "")).startswith("gemma"):
        gain = gain + 1.0  # Gemma's RMSNorm scales by (1 + weight)
    return gain, ckpt.read(unembed_name), {"norm": norm_name, "unembedding": unembed_name}


def logit_lens(model: str, sae, features: np.ndarray, *, top_n: int = TOP_N,
               n_vocab: int | None = None, revision: str | None = None, device: str | torch.device = "cpu",
               feature_chunk: int = 1024, vocab_chunk: int = 32768) -> LogitLens:
    """Top ``top_n`` promoted and suppressed token ids of each feature, with their logit values.

    ``sae`` is a loaded :class:`personamine.saes.Sae` or anything ``load_sae`` accepts (a path, a hub repo).
    ``n_vocab`` limits the ranking to the tokenizer's ids (embedding rows past it are padding, never emitted).
    Computed in fp32, chunked over features and vocabulary so memory stays bounded for any model.
    """
    import torch

    from personamine.saes import Sae, load_sae  # the package imports this module: a top-level import would cycle

    if not isinstance(sae, Sae):
        sae = load_sae(str(sae))
    gain, w_u, attrs = unembedding(model, revision)
    if sae.d_in != gain.shape[0]:
        raise PersonamineError(f"logit lens: SAE width {sae.d_in} != model hidden size {gain.shape[0]}")
    vocab = min(int(w_u.shape[0]), n_vocab or int(w_u.shape[0]))
    n = min(top_n, vocab)
    dev = torch.device(device)
    gain = gain.to(dev)
    features = np.asarray(features, dtype=np.int64)
    parts = []
    with torch.inference_mode():
        for lo in range(0, features.size, feature_chunk):
            cols = sae.decoder_directions(features[lo:lo + feature_chunk])  # [Fc, D] fp32
            directions = gain[:, None] * cols.T.to(dev)  # [D, Fc]
            parts.append(_top_tokens(w_u[:vocab], directions, n, vocab_chunk))
    arrays = [np.concatenate([p[i] for p in parts]) if parts else np.zeros((0, n)) for i in range(4)]
    attrs.update(model=model, top_n=n)
    return LogitLens(promoted_ids=arrays[0].astype(np.int32), promoted_values=arrays[1].astype(np.float32),
                     suppressed_ids=arrays[2].astype(np.int32), suppressed_values=arrays[3].astype(np.float32),
                     attrs=attrs)


def _top_tokens(w_u: torch.Tensor, directions: torch.Tensor, n: int, vocab_chunk: int) -> list[np.ndarray]:
    """[promoted ids, values, suppressed ids, values], each [Fc, n], scanning the vocabulary in chunks."""
    import torch

    top = bottom = (None, None)
    for v0 in range(0, w_u.shape[0], vocab_chunk):
        logits = w_u[v0:v0 + vocab_chunk].to(directions.device, torch.float32) @ directions  # [Vc, Fc]
        ids = torch.arange(v0, v0 + logits.shape[0], device=logits.device)[:, None].expand_as(logits)
        top = _running_top(*top, logits, ids, n, largest=True)
        bottom = _running_top(*bottom, logits, ids, n, largest=False)
    return [top[1].T.cpu().numpy(), top[0].T.cpu().numpy(), bottom[1].T.cpu().numpy(), bottom[0].T.cpu().numpy()]


def _running_top(values: torch.Tensor | None, ids: torch.Tensor | None, logits: torch.Tensor, chunk_ids: torch.Tensor,
                 n: int, largest: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Best ``n`` rows per column of (previous best + this vocabulary chunk), sorted."""
    import torch

    if values is not None:
        logits = torch.cat([values, logits])
        chunk_ids = torch.cat([ids, chunk_ids])
    k = min(n, logits.shape[0])
    best, where = logits.topk(k, dim=0, largest=largest, sorted=True)
    return best, chunk_ids.gather(0, where)
