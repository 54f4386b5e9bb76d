"""dictionary_learning BatchTopK SAE files: locate, validate, and encode exactly (NOTES §1, §2).

Encoding uses the SAE's inference rule ``r = relu(W_enc (x - b_dec) + b_enc); r * (r > threshold)``, computed in
fp32 with the bias inside ``linear`` and the threshold kept in fp32, which equals ``BatchTopKSAE.encode(x)`` on any
subset of features. The state dict is opened with ``mmap=True`` so a targeted run reads only its encoder rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from personamine.errors import PersonamineError
from personamine.model.loading import looks_like_path

REQUIRED_KEYS = ("encoder.weight", "encoder.bias", "decoder.weight", "b_dec", "threshold")


def release_subpath(layer: int, trainer: int) -> str:
    return f"resid_post_layer_{layer}/trainer_{trainer}"


def resolve_sae_files(sae: str, layer: int, trainer: int = 0, revision: str | None = None) -> tuple[Path, Path | None]:
    """Return (ae.pt, config.json or None) for a local file, a local dir, a local release root, or a hub repo."""
    path = Path(sae).expanduser()
    if path.is_file():
        config = path.with_name("config.json")
        return path, config if config.is_file() else None
    if path.is_dir():
        for candidate in (path / "ae.pt", path / release_subpath(layer, trainer) / "ae.pt"):
            if candidate.is_file():
                config = candidate.with_name("config.json")
                return candidate, config if config.is_file() else None
        raise PersonamineError(
            f"no SAE in {sae!r}: expected ae.pt or {release_subpath(layer, trainer)}/ae.pt inside it"
        )
    if looks_like_path(sae):
        raise PersonamineError(f"SAE path {sae!r} does not exist")
    from huggingface_hub import hf_hub_download

    sub = release_subpath(layer, trainer)
    try:
        ae = Path(hf_hub_download(sae, f"{sub}/ae.pt", revision=revision))
    except Exception as exc:  # the hub raises many unrelated types; all mean "not available"
        raise PersonamineError(f"cannot fetch {sub}/ae.pt from SAE repo {sae!r}: {str(exc).splitlines()[0]}") from exc
    try:
        config_path: Path | None = Path(hf_hub_download(sae, f"{sub}/config.json", revision=revision))
    except Exception:
        config_path = None
    return ae, config_path


@dataclass
class SaeInfo:
    ae_path: Path
    config: dict
    activation_dim: int
    dict_size: int
    k: int | None
    threshold: float
    layer: int | None


def open_state_dict(ae_path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(ae_path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:
        raise PersonamineError(f"cannot read SAE file {str(ae_path)!r}: {str(exc).splitlines()[0]}") from exc
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise PersonamineError(f"{str(ae_path)!r} is not a BatchTopK SAE: missing {', '.join(missing)}")
    return state


def read_sae_info(ae_path: Path, config_path: Path | None) -> SaeInfo:
    state = open_state_dict(ae_path)
    config = json.loads(config_path.read_text()) if config_path else {}
    trainer = config.get("trainer", {})
    dict_size, activation_dim = state["encoder.weight"].shape
    layer = trainer.get("layer")
    k = state.get("k")
    return SaeInfo(
        ae_path=ae_path, config=config, activation_dim=int(activation_dim), dict_size=int(dict_size),
        k=int(k) if k is not None else None, threshold=float(state["threshold"]),
        layer=int(layer) if layer is not None else None,
    )


def validate_sae(info: SaeInfo, *, hidden_size: int, layer: int, allow_uncalibrated: bool = False) -> None:
    if info.activation_dim != hidden_size:
        raise PersonamineError(
            f"SAE width {info.activation_dim} does not match the model's hidden size {hidden_size}"
        )
    if info.layer is not None and info.layer != layer:
        raise PersonamineError(f"SAE was trained on layer {info.layer}, but the run captures layer {layer}")
    if info.threshold <= 0 and not allow_uncalibrated:
        raise PersonamineError(
            f"SAE threshold is {info.threshold}: it was never calibrated, so encoding would be a dense ReLU "
            "(pass --allow-uncalibrated to use it anyway)"
        )


def check_features(features: np.ndarray, dict_size: int) -> None:
    if features.size == 0:
        raise PersonamineError("no features selected")
    bad = features[(features < 0) | (features >= dict_size)]
    if bad.size:
        raise PersonamineError(f"feature id {int(bad[0])} is out of range: the SAE has {dict_size} features")
    if np.unique(features).size != features.size:
        raise PersonamineError("feature ids must be unique")


class SaeEncoder:
    """Exact encoder for a fixed list of features, chunked over features so memory stays bounded."""

    def __init__(self, ae_path: Path, features: np.ndarray, *, device: torch.device,
                 chunk_size: int = 8192) -> None:
        state = open_state_dict(ae_path)
        self.features = np.asarray(features, dtype=np.int64)
        index = torch.from_numpy(self.features)
        # Indexing the mmap'd tensor copies only the selected rows into memory.
        self.weight = state["encoder.weight"].index_select(0, index).to(device=device, dtype=torch.float32)
        self.bias = state["encoder.bias"].index_select(0, index).to(device=device, dtype=torch.float32)
        self.b_dec = state["b_dec"].to(device=device, dtype=torch.float32)
        # relu(z) * (relu(z) > t) is z where z > max(t, 0), else 0: one in-place pass with no mask tensor. The
        # float32 threshold converts to a Python float and back exactly.
        self.floor = max(float(state["threshold"].float()), 0.0)
        self.chunk_size = chunk_size

    @property
    def n_features(self) -> int:
        return int(self.features.size)

    def chunks(self) -> list[tuple[int, int]]:
        n = self.n_features
        return [(start, min(start + self.chunk_size, n)) for start in range(0, n, self.chunk_size)]

    def iter_encode(self, x: torch.Tensor) -> Iterator[tuple[int, int, torch.Tensor]]:
        """Yield (start, end, activations[..., start:end]) feature chunk by feature chunk."""
        centered = x.float() - self.b_dec
        for start, end in self.chunks():
            # No local keeps a chunk alive while the next is computed: one chunk in memory at a time.
            yield start, end, torch.nn.functional.threshold_(
                torch.nn.functional.linear(centered, self.weight[start:end], self.bias[start:end]), self.floor, 0.0)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([acts for _, _, acts in self.iter_encode(x)], dim=-1)
