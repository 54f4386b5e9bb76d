"""Atomic file writes: the bytes go to a temp file beside the target, which is renamed into place only once
complete, so a reader (or a resumed run) never sees a half-written file. Torch-free, so light commands can use it."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_writable(path: str | Path, what: str, *, directory: bool = False) -> Path:
    """Fail before any work if ``path`` cannot be written: a file path that is a directory (or the reverse), or a
    place where nothing can be created. Probes with a temp file in the nearest existing parent; creates nothing."""
    import tempfile

    from personamine.errors import PersonamineError

    path = Path(path)
    if path.exists() and path.is_dir() != directory:
        kind = "a directory" if path.is_dir() else "a file"
        raise PersonamineError(f"{what} {str(path)!r} is {kind}: give {'a directory' if directory else 'a file'} "
                               "path")
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise PersonamineError(f"cannot write {what} {str(path)!r}: {str(parent)!r} is a file, not a directory")
    try:
        handle, probe = tempfile.mkstemp(prefix=".personamine-probe-", dir=parent)
    except OSError as exc:
        raise PersonamineError(f"cannot write {what} {str(path)!r}: {parent} is not writable "
                               f"({exc.strerror or exc})") from exc
    os.close(handle)
    os.unlink(probe)
    return path
