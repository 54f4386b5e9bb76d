"""Every read of the SAE that steering makes, in one module, through ``personamine.saes`` (any supported layout).

Steering needs, for a handful of features: the exact activation ``a_f(h)`` (the encoder), the decoder direction
``W_dec[:, f]``, and the encoder row (for the diagnostic ``e_f . d_f``). Only those rows are copied out of the
memory-mapped file: a 131,072-feature SAE is never read whole.
"""

from __future__ import annotations

import ctypes
import mmap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from personamine.errors import PersonamineError
from personamine.saes import SaeSpec, check_features, load_sae, read_sae_meta
from personamine.saes.base import all_finite
from personamine.saes.locate import release_layers


@dataclass
class SaeHandle:
    """Where the SAE is and what it declares, before any of its weights are read."""

    spec: SaeSpec
    dict_size: int
    width: int
    layer: int | None  # the layer whose output the SAE reads (its config), None when it does not say
    threshold: float | None  # the one scalar threshold of a BatchTopK-like SAE, None for other rules
    label: str


def open_sae(sae: str, layer: int | None, trainer: int = 0, sae_id: str | None = None,
             sae_format: str = "auto") -> SaeHandle:
    """Locate the SAE (any layout ``personamine.saes`` reads) and read its metadata.

    A dictionary_learning release root needs ``layer`` to find ``resid_post_layer_L/`` unless it holds one layer.
    """
    if not sae:
        raise PersonamineError("no SAE given: pass a hub repo id, a release dir or an ae.pt file")
    path = Path(sae).expanduser()
    if layer is None and not (path.is_file() or (path / "ae.pt").is_file()):
        layers = release_layers(path) if path.is_dir() else []
        if len(layers) != 1:
            raise PersonamineError(f"SAE {sae!r} is a release with one folder per layer: give the layer to steer")
        layer = layers[0]
    spec = SaeSpec(sae=sae, sae_id=sae_id, trainer=trainer, layer=layer, format=sae_format)
    meta = read_sae_meta(spec)
    threshold = meta.threshold if meta.threshold_kind == "scalar" else None
    return SaeHandle(spec=spec, dict_size=int(meta.d_sae), width=int(meta.d_in), layer=meta.layer,
                     threshold=threshold, label=spec.label)


def check_hook(handle: SaeHandle, layer: int, hidden_size: int, allow_uncalibrated: bool) -> None:
    """Steering writes where the SAE reads: the same layer's output, the same width, a calibrated threshold."""
    if handle.layer is not None and handle.layer != layer:
        raise PersonamineError(f"the SAE reads the output of layer {handle.layer}, not layer {layer}: an "
                               f"intervention must be made at the layer the SAE hooks")
    if handle.width != hidden_size:
        raise PersonamineError(f"SAE width {handle.width} does not match the model's hidden size {hidden_size}")
    if handle.threshold is not None and handle.threshold <= 0 and not allow_uncalibrated:
        raise PersonamineError(f"SAE threshold is {handle.threshold}: it was never calibrated, so its codes are a "
                               "dense ReLU (pass allow_uncalibrated to use it anyway)")


def _read_randomly(tensor: torch.Tensor) -> None:
    """Tell the kernel that a memory-mapped tensor is read at scattered places (``MADV_RANDOM``), so that reading a
    few columns faults in one page per row instead of reading ahead through the whole matrix. Measured on a
    131,072 x 576 fp32 decoder with a cold page cache: 3 columns read 5 MiB from disk instead of 296 MiB (the
    Llama-3.1-8B release's decoder is 2.1 GB). Nothing happens where ``madvise`` is not available."""
    advice = getattr(mmap, "MADV_RANDOM", None)
    if advice is None:
        return
    try:
        storage = tensor.untyped_storage()
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        start = storage.data_ptr() // mmap.PAGESIZE * mmap.PAGESIZE
        libc.madvise(start, storage.data_ptr() + storage.nbytes() - start, advice)
    except (OSError, AttributeError):  # no libc to load, or no madvise in it: reading still works, only slower
        pass


def check_feature_ids(handle: SaeHandle, features: list[int]) -> None:
    """Every id names a feature of this SAE (a one-line error naming the first that does not)."""
    check_features(np.asarray(features, dtype=np.int64), handle.dict_size)


class SteerSae:
    """The chosen features' encoder (exact ``a_f``), decoder directions and encoder rows, on one device."""

    def __init__(self, handle: SaeHandle, features: np.ndarray, device: torch.device) -> None:
        features = np.asarray(features, dtype=np.int64)
        check_features(features, handle.dict_size)
        self.handle = handle
        self.features = features
        self._index = {int(f): i for i, f in enumerate(features.tolist())}
        sae = load_sae(handle.spec)
        self.encoder = sae.encoder(features, device=device, exact_topk=True)
        _read_randomly(sae.dec.tensor)  # memory-mapped: a column of a [D, F] decoder is one element in each row
        self.decoder = sae.decoder_directions(features).to(device=device, dtype=torch.float32)
        self.encoder_rows = sae.enc.rows(torch.from_numpy(features)).to(device=device, dtype=torch.float32)

    @property
    def threshold(self) -> float | None:
        return self.handle.threshold

    def index(self, feature: int) -> int:
        return self._index[int(feature)]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[N, n] exact activations of the chosen features on residuals ``x`` [N, D]; a NaN or infinite one is an
        error (one reduction per call; the details only on failure)."""
        codes = self.encoder.encode(x)
        if not all_finite(codes):
            bad = ~torch.isfinite(codes)
            row, col = (int(i) for i in bad.nonzero()[0])
            source = "residual" if bool(torch.isfinite(x[row]).all()) else "residual, itself not finite,"
            raise PersonamineError(
                f"feature {int(self.features[col])} is {float(codes[row, col])} on a {source} at the SAE's layer "
                f"({int(bad.sum()):,} of {bad.numel():,} activations not finite): the model's activations or a "
                "steering change overflowed (an fp16/bf16 model: try --dtype float32; or a smaller alpha or clamp)")
        return codes

    def encoder_decoder_dot(self) -> np.ndarray:
        """``e_f . d_f`` per feature: ablation leaves ``a_f * |1 - e_f . d_f|`` of the activation behind."""
        return (self.encoder_rows * self.decoder).sum(-1).cpu().numpy().astype(np.float64)

    def decoder_norm(self) -> np.ndarray:
        return self.decoder.norm(dim=-1).cpu().numpy().astype(np.float64)
