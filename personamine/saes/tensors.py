"""Memory-mapped tensor files: safetensors, numpy ``.npz`` and torch pickles, read without loading them whole.

Every tensor returned here is a view of a copy-on-write mapping (``MAP_PRIVATE``): indexing some rows reads only
their pages, nothing is ever written back, and the tensors are writable, so torch never warns about read-only
buffers. ``safetensors_header`` reads only the JSON header (a few KB), which is what a cheap metadata read needs.
"""

from __future__ import annotations

import json
import mmap
import struct
import zipfile
from pathlib import Path

import numpy as np
import torch

from personamine.errors import PersonamineError

_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _unreadable(path: Path, why: str) -> PersonamineError:
    return PersonamineError(f"cannot read SAE file {str(path)!r}: {why}")


def safetensors_header(path: Path) -> dict[str, dict]:
    """``{name: {"dtype", "shape", "data_offsets"}}`` from the file's header only (format: an 8-byte little-endian
    header length, then that many bytes of JSON; offsets are relative to the end of the header)."""
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100_000_000:
                raise ValueError(f"header length {length} is implausible")
            header = json.loads(handle.read(length))
    except (OSError, ValueError, struct.error) as exc:
        raise _unreadable(path, f"not a safetensors file ({exc})") from exc
    header.pop("__metadata__", None)
    return header


def _map(path: Path) -> mmap.mmap:
    with open(path, "rb") as handle:
        return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)


def open_safetensors(path: Path) -> dict[str, torch.Tensor]:
    header = safetensors_header(path)
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
    start = 8 + length
    mapped = _map(path)
    out = {}
    for name, info in header.items():
        dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:
            raise _unreadable(path, f"tensor {name!r} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if end == begin:
            out[name] = torch.empty(shape, dtype=dtype)
            continue
        # frombuffer keeps a reference to the mapping, so it lives as long as any tensor viewing it.
        count = (end - begin) // torch.empty((), dtype=dtype).element_size()
        out[name] = torch.frombuffer(mapped, dtype=dtype, count=count, offset=start + begin).view(shape)
    return out


def _npy_header(handle) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) from a ``.npy`` header, leaving ``handle`` at the array data."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(handle)
    return np.lib.format.read_array_header_2_0(handle)


def open_npz(path: Path) -> dict[str, torch.Tensor]:
    """Arrays of an ``.npz``: stored (uncompressed) members are memory-mapped, compressed ones read whole."""
    out = {}
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if m.filename.endswith(".npy")]
            with open(path, "rb") as raw:
                for member in members:
                    name = member.filename[:-4]
                    if member.compress_type != zipfile.ZIP_STORED:
                        with archive.open(member) as handle:
                            out[name] = torch.from_numpy(np.lib.format.read_array(handle).copy())
                        continue
                    # The member's data starts after its local header (30 bytes + name + extra field).
                    raw.seek(member.header_offset)
                    local = raw.read(30)
                    name_len, extra_len = struct.unpack("<HH", local[26:30])
                    raw.seek(member.header_offset + 30 + name_len + extra_len)
                    shape, fortran, dtype = _npy_header(raw)
                    array = np.memmap(path, dtype=dtype, mode="c", offset=raw.tell(), shape=shape,
                                      order="F" if fortran else "C")
                    out[name] = torch.from_numpy(array)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise _unreadable(path, f"not a numpy .npz archive ({exc})") from exc
    return out


def npz_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Array shapes of an ``.npz`` from each member's ``.npy`` header (no array data read)."""
    shapes = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                if member.filename.endswith(".npy"):
                    with archive.open(member) as handle:
                        shape, _, _ = _npy_header(handle)
                    shapes[member.filename[:-4]] = tuple(shape)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise _unreadable(path, f"not a numpy .npz archive ({exc})") from exc
    return shapes


def open_torch(path: Path) -> dict[str, torch.Tensor]:
    """A torch state dict, memory-mapped (``torch.load(mmap=True)``) and loaded without running pickled code."""
    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a state dict
        raise _unreadable(path, str(exc).splitlines()[0]) from exc
    if not isinstance(state, dict):
        raise _unreadable(path, f"expected a state dict, found {type(state).__name__}")
    return state


def open_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Dispatch on the file's suffix."""
    if path.suffix == ".safetensors":
        return open_safetensors(path)
    if path.suffix == ".npz":
        return open_npz(path)
    return open_torch(path)


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes without reading tensor data (a torch pickle is memory-mapped, which reads no data)."""
    if path.suffix == ".safetensors":
        return {name: tuple(info["shape"]) for name, info in safetensors_header(path).items()}
    if path.suffix == ".npz":
        return npz_shapes(path)
    return {name: tuple(t.shape) for name, t in open_torch(path).items() if isinstance(t, torch.Tensor)}
