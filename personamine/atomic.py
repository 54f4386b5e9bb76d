"""Atomic file writes: the bytes go to a temp file beside the target, which is renamed into place only once
complete, so a reader (or a resumed run) never sees a half-written file; and checks that a directory can be written,
made before any heavy work. Torch-free, so light commands can use it."""

from __future__ import annotations

import os
import time
from pathlib import Path

from personamine.errors import PersonamineError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """``data`` written to ``path`` whole or not at all; a failed write (disk full, quota) is one line naming the
    file and the cause, and leaves nothing."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise _os_error("write", path, exc) from None
    finally:
        tmp.unlink(missing_ok=True)


def _os_error(what: str, path: Path, exc: OSError) -> PersonamineError:
    return PersonamineError(f"cannot {what} {str(path)!r}: {exc.strerror or exc}")


def ensure_dir(path: Path, what: str) -> None:
    """Create ``path`` (and parents) or fail with one line naming it and the cause."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
        raise PersonamineError(f"cannot create the {what} {str(path)!r}: {str(blocker)!r} is a file, not a "
                               "directory") from exc
    except OSError as exc:
        raise _os_error(f"create the {what}", path, exc) from exc


def check_writable(path: str | Path, what: str, *, directory: bool = False) -> Path:
    """Fail before any work if ``path`` (a file, or with ``directory`` a directory) could not be written: a file path
    that is a directory (or the reverse), a path under a regular file, or a place where nothing can be created.
    Probes the nearest existing directory with a temp file, so nothing is left behind whatever the run does next."""
    path = Path(path).expanduser()
    if path.exists() and path.is_dir() != directory:
        kind = "a directory" if path.is_dir() else "a file"
        raise PersonamineError(f"{what} {str(path)!r} is {kind}: give {'a directory' if directory else 'a file'} "
                               "path")
    where = path.absolute() if directory else path.absolute().parent
    label = what if directory else f"{what} directory"
    existing = next(p for p in (where, *where.parents) if p.exists())
    if not existing.is_dir():
        raise PersonamineError(f"cannot create the {label} {str(where)!r}: {str(existing)!r} is a file, not a "
                               "directory")
    probe = existing / f".personamine-write-test-{os.getpid()}-{time.monotonic_ns()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise _os_error(f"write to the {label}", where, exc) from exc
    return path
