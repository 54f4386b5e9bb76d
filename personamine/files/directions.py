"""Directions in the residual stream read from any file that holds them: the one loader mining and steering share.

A direction file is one of

- a discovery file (``.h5``, ``personamine.discover`` version 2): its persona directions, named ``L<layer>/<pooling>``,
  each with its layer and a reference point, the midpoint of the two sides' mean projections (so a centred reading
  above 0 leans to the persona side);
- ``.safetensors``: one tensor per direction (``[hidden]``, or ``[n, hidden]`` read as ``name/0`` ... ``name/n-1``),
  with an optional ``directions`` metadata entry (JSON: ``{name: {"layer": L, "mean": m}}``) as ``discover
  --directions-out`` writes it;
- ``.npy``: an ``[n, hidden]`` (or ``[hidden]``) array, named by a ``.json`` beside it (``{"names": [...],
  "directions": {name: {"layer": L, "mean": m}}}``, as ``discover --directions-out`` writes it) or ``d0`` ...
  ``d<n-1>``;
- ``.pt``: a tensor as ``.npy``, or a dict of names to tensors as ``.safetensors``.

A direction's value at a token is the projection ``h . v_hat`` of the residual ``h`` on its unit vector, minus its
reference ``mean`` when the run asks for centred readings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from personamine.errors import PersonamineError

SUFFIXES = (".h5", ".safetensors", ".npy", ".pt")


@dataclass(frozen=True)
class NamedDirection:
    name: str
    vector: np.ndarray  # [hidden] float32, as stored (not normalised)
    layer: int | None = None  # the layer it was found at, where the file says
    mean: float | None = None  # its reference projection, where the file has one

    @property
    def unit(self) -> np.ndarray:
        norm = float(np.linalg.norm(self.vector.astype(np.float64)))
        return (self.vector.astype(np.float64) / norm).astype(np.float32)


def load_directions(path: str | Path, *, names: list[str] | None = None, hidden_size: int | None = None,
                    layer: int | None = None) -> list[NamedDirection]:
    """The directions in ``path``, checked: finite, non-zero, ``hidden_size`` wide where given.

    ``names`` keeps only those (in that order); ``layer`` keeps only the directions found at that layer where the file
    says (directions whose layer is unknown are kept)."""
    path = Path(path)
    if not path.is_file():
        raise PersonamineError(f"directions file {str(path)!r} not found")
    if path.suffix not in SUFFIXES:
        raise PersonamineError(f"directions file {str(path)!r}: use a discovery .h5, .safetensors, .npy or .pt file")
    found = _READERS[path.suffix](path)
    if not found:
        raise PersonamineError(f"directions file {str(path)!r} holds no directions")
    by_name = {d.name: d for d in found}
    if len(by_name) != len(found):
        raise PersonamineError(f"directions file {str(path)!r} names two directions alike")
    if names:
        missing = [n for n in names if n not in by_name]
        if missing:
            raise PersonamineError(f"directions file {str(path)!r} has no direction {missing[0]!r}; it has "
                                   f"{', '.join(sorted(by_name))}")
        found = [by_name[n] for n in names]
    if layer is not None:
        found = [d for d in found if d.layer is None or d.layer == layer]
        if not found:
            raise PersonamineError(f"directions file {str(path)!r} holds no direction found at layer {layer}; it has "
                                   f"{', '.join(sorted(by_name))}")
    for d in found:
        if d.vector.ndim != 1:
            raise PersonamineError(f"direction {d.name!r} in {str(path)!r} has shape {d.vector.shape}, not [hidden]")
        if hidden_size is not None and d.vector.shape[0] != hidden_size:
            raise PersonamineError(f"direction {d.name!r} in {str(path)!r} is {d.vector.shape[0]} wide, but the "
                                   f"model's residual stream is {hidden_size}")
        if not np.isfinite(d.vector).all():
            raise PersonamineError(f"direction {d.name!r} in {str(path)!r} holds NaN or infinite values")
        if not np.any(d.vector):
            raise PersonamineError(f"direction {d.name!r} in {str(path)!r} is all zeros: it has no unit vector")
    return found


def _from_discovery(path: Path) -> list[NamedDirection]:
    from personamine.files.discover import read_discovery

    found = read_discovery(path)
    return [NamedDirection(f"L{d.layer}/{d.pooling}", d.vector.astype(np.float32), d.layer,
                           float((d.projection_a.mean() + d.projection_b.mean()) / 2))
            for (_, _), d in sorted(found.directions.items())]


def _rows(name: str, array: np.ndarray, info: dict) -> list[NamedDirection]:
    array = np.asarray(array, np.float32)
    if array.ndim == 2:
        return [NamedDirection(f"{name}/{i}", row, *_info(info, f"{name}/{i}")) for i, row in enumerate(array)]
    return [NamedDirection(name, array, *_info(info, name))]


def _info(info: dict, name: str) -> tuple[int | None, float | None]:
    entry = info.get(name) or {}
    layer, mean = entry.get("layer"), entry.get("mean")
    return (int(layer) if layer is not None else None), (float(mean) if mean is not None else None)


def _from_safetensors(path: Path) -> list[NamedDirection]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "np") as f:
            info = json.loads((f.metadata() or {}).get("directions", "{}"))
            return [d for key in f.keys() for d in _rows(key, f.get_tensor(key), info)]  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as exc:
        raise PersonamineError(f"directions file {str(path)!r} is not readable safetensors: {exc}") from None


def _from_npy(path: Path) -> list[NamedDirection]:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise PersonamineError(f"directions file {str(path)!r} is not a readable .npy array: {exc}") from None
    return _named_array(path, np.atleast_2d(array))


def _named_array(path: Path, array: np.ndarray) -> list[NamedDirection]:
    if array.ndim != 2:
        raise PersonamineError(f"directions file {str(path)!r} holds an array of shape {array.shape}, not [n, hidden]")
    sidecar = path.with_suffix(".json")
    names, info = [f"d{i}" for i in range(array.shape[0])], {}
    if sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text())
            names, info = list(meta.get("names", names)), dict(meta.get("directions", {}))
        except (OSError, ValueError, TypeError) as exc:
            raise PersonamineError(f"directions names {str(sidecar)!r} are not readable JSON: {exc}") from None
        if len(names) != array.shape[0]:
            raise PersonamineError(f"{str(sidecar)!r} names {len(names)} directions but {str(path)!r} holds "
                                   f"{array.shape[0]}")
    return [NamedDirection(str(n), np.asarray(row, np.float32), *_info(info, str(n)))
            for n, row in zip(names, array, strict=True)]


def _from_pt(path: Path) -> list[NamedDirection]:
    import torch

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file  # noqa: BLE001
        raise PersonamineError(f"directions file {str(path)!r} is not a readable torch file: {exc}") from None
    if isinstance(loaded, dict):
        return [d for key, value in loaded.items() for d in _rows(str(key), value.float().numpy(), {})]
    if isinstance(loaded, torch.Tensor):
        return _named_array(path, np.atleast_2d(loaded.float().numpy()))
    raise PersonamineError(f"directions file {str(path)!r} holds a {type(loaded).__name__}, not a tensor or a dict "
                           "of tensors")


_READERS = {".h5": _from_discovery, ".safetensors": _from_safetensors, ".npy": _from_npy, ".pt": _from_pt}
