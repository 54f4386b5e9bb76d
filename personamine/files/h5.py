"""The pieces every personamine HDF5 file shares: the atomic write (``atomic_h5``), the checked open (``open_h5``:
format and version), checksummed datasets (``dataset``: Fletcher-32 per chunk, verified by any HDF5 reader), UTF-8
strings stored as checksummed bytes, and reads that turn a failed checksum into one line (``CheckedReader``).
One module per schema sits beside this one: ``mine``, ``discover``, ``steer``, ``explain``."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np

from personamine.atomic import ensure_dir
from personamine.errors import PersonamineError


class _GuardedFile:
    """The temp file an HDF5 file is written to, through h5py's ``fileobj`` driver: the first failed write (disk full,
    quota, a file size limit) is recorded and every later write is dropped, so HDF5 itself never sees an error. (HDF5
    writes lazily: a failure surfaces in whatever call flushes, including object finalisers, as a stream of
    "Exception ignored" tracebacks, and a file whose close failed can crash the interpreter at exit.) ``atomic_h5``
    then removes the temp file and reports the recorded error in one line."""

    def __init__(self, path: Path) -> None:
        self.raw = open(path, "w+b", buffering=0)  # unbuffered: a write that fails, fails now
        self.error: OSError | None = None
        self.written = 0

    def _fail(self, exc: OSError) -> None:
        if self.error is None:
            self.error = exc

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        if self.error is None:
            try:
                done = 0
                while done < len(view):
                    n = self.raw.write(view[done:])
                    if not n:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    done += n
                self.written += done
                return done
            except OSError as exc:
                self._fail(exc)
        self.raw.seek(len(view), os.SEEK_CUR)  # dropped: HDF5 never reads back what it has just written out
        return len(view)

    def read(self, size: int = -1) -> bytes:
        return self.raw.read(size)

    def readinto(self, buffer) -> int:
        return self.raw.readinto(buffer)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def truncate(self, size: int | None = None) -> int:
        try:
            return self.raw.truncate(size)
        except OSError as exc:
            self._fail(exc)
            return self.raw.tell() if size is None else size

    def flush(self) -> None:
        pass  # unbuffered

    def close(self) -> None:
        """Make the bytes durable (a delayed allocation failure surfaces here), then close."""
        try:
            if self.error is None:
                os.fsync(self.raw.fileno())
        except OSError as exc:
            self._fail(exc)
        finally:
            self.raw.close()


@contextmanager
def atomic_h5(path: Path, fmt: str, version: int, attrs: dict) -> Iterator[h5py.File]:
    """An HDF5 file written to a temp file beside ``path`` and renamed into place only after a clean close: on any
    error nothing is left. An OSError (disk full, quota, a path that vanished) is the user's to fix: one line, with
    no HDF5 noise (``_GuardedFile``). The file's attributes are ``attrs``, then its ``format`` and
    ``format_version``, which ``open_h5`` checks."""
    ensure_dir(path.parent, "output directory")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        sink = _GuardedFile(tmp)
    except OSError as exc:
        raise PersonamineError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from exc
    try:
        try:
            f = h5py.File(sink, "w", track_order=True)
            with f:
                f.attrs.update(attrs)
                f.attrs["format"], f.attrs["format_version"] = fmt, version
                yield f
        finally:
            sink.close()
        if sink.error is not None:
            raise sink.error
        os.replace(tmp, path)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        # A failed write is the cause even when HDF5 then tripped over the writes it lost.
        cause = sink.error or exc
        if not isinstance(cause, OSError):
            raise
        raise PersonamineError(f"cannot write {str(path)!r}: {cause.strerror or cause} after {sink.written:,} bytes; "
                               "the partial file was removed") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def open_h5(path: Path, fmt: str, version: int, kind: str, opened_as: str | None = None) -> Iterator[h5py.File]:
    """A personamine file of format ``fmt`` opened for reading, refused in one line when it cannot be opened, is
    another kind of file (``kind``: "is not a personamine {kind} file") or is newer than ``version``."""
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise PersonamineError(f"cannot open {opened_as or kind} file {str(path)!r}: {exc}") from exc
    with f:
        if f.attrs.get("format") != fmt:
            raise PersonamineError(f"{str(path)!r} is not a personamine {kind} file")
        found = int(f.attrs["format_version"])
        if found > version:
            raise PersonamineError(f"{str(path)!r} has format version {found}; upgrade personamine to read it")
        yield f


def file_format(path: Path, opened_as: str) -> str | None:
    """The ``format`` attribute of a personamine file (None for another HDF5 file), for a reader that accepts
    several kinds; one line when the file cannot be opened (``opened_as`` names its role, e.g. "features_from")."""
    try:
        with h5py.File(path, "r") as f:
            fmt = f.attrs.get("format")
    except OSError as exc:
        raise PersonamineError(f"cannot open {opened_as} file {str(path)!r}: {exc}") from exc
    return fmt if isinstance(fmt, str) else None


def read_attrs(path: Path, fmt: str, version: int, kind: str) -> dict:
    """A personamine file's attributes alone, through ``open_h5``'s checks."""
    with open_h5(path, fmt, version, kind) as f:
        return plain_attrs(f)


def plain_attrs(obj: h5py.HLObject) -> dict:
    """An HDF5 object's attributes as Python values (numpy scalars unwrapped)."""
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in obj.attrs.items()}



def dataset(group: h5py.Group, name: str, data: np.ndarray | None = None, *, shape: tuple[int, ...] | None = None,
            dtype: object = None, packed: bool = False) -> h5py.Dataset:
    """An array dataset with a Fletcher-32 checksum per chunk (and gzip when ``packed``); scalars cannot carry a
    filter, so every array of the file goes through here."""
    if data is not None:
        data = np.asarray(data)
        shape, dtype = data.shape, data.dtype
    options = {"compression": "gzip", "compression_opts": 4, "shuffle": True} if packed else {}
    return group.create_dataset(name, shape=shape, dtype=dtype, data=data, chunks=True, fletcher32=True, **options)


def packed_dataset(group: h5py.Group, name: str, shape: tuple[int, ...], dtype: type) -> h5py.Dataset:
    return dataset(group, name, shape=shape, dtype=dtype, packed=True)


def write_strings(group: h5py.Group, name: str, values: list[str]) -> None:
    encoded = [v.encode("utf-8") for v in values]
    dataset(group, f"{name}_utf8", np.frombuffer(b"".join(encoded), np.uint8), packed=True)
    dataset(group, f"{name}_offsets", np.cumsum([0] + [len(e) for e in encoded], dtype=np.int64))


def read_strings(group: h5py.Group, name: str, read) -> list[str]:
    if f"{name}_utf8" not in group:  # versions 1 and 2: variable-length strings
        return [str(s) for s in read(group[name].asstr())]
    blob, offsets = read(group[f"{name}_utf8"]).tobytes(), read(group[f"{name}_offsets"])
    return [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


class CheckedReader:
    """Reads datasets of one open file, turning a failed read (a Fletcher-32 mismatch, a damaged chunk) into one line
    that names the file and the dataset."""

    def __init__(self, path: Path, f: h5py.File) -> None:
        self.path, self.f = path, f

    def __call__(self, ds, sel=()) -> np.ndarray:
        try:
            return ds[sel]
        except OSError as exc:
            name = getattr(ds, "name", None) or getattr(getattr(ds, "_dset", None), "name", "?")
            raise PersonamineError(f"{str(self.path)!r} is damaged: dataset {name.lstrip('/')!r} failed its "
                                   f"checksum or could not be read ({str(exc).splitlines()[0]})") from exc
