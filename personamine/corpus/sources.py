"""Which files a corpus name means: a built-in name, a local file, directory or glob, or a hub dataset.

A name is a hub dataset only if it cannot be a local path: a string that starts with ``/``, ``.`` or ``~``, has more
than one ``/``, or ends in a corpus file suffix is a path, so a mistyped file name fails at once instead of being
sent to the hub.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from personamine.corpora import builtin_corpus_path
from personamine.corpus.hub import hub_files
from personamine.corpus.manifest import CorpusFile
from personamine.corpus.readers import SUFFIXES
from personamine.errors import PersonamineError


def _suffix(path: str) -> str:
    return Path(path).suffix.lower()


def looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or _suffix(name) in SUFFIXES


def _local_file(path: Path) -> CorpusFile:
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise PersonamineError(f"corpus file {str(path)!r} has no corpus suffix (supported: "
                               f"{', '.join(sorted(SUFFIXES))})")
    stat = path.stat()
    return CorpusFile(str(path.resolve()), fmt, stat.st_size, str(stat.st_mtime_ns))


def _visible(path: Path, root: Path) -> bool:
    # Hidden files and dirs (.git, .DS_Store, a writer's temp files) are not corpus data.
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def local_files(name: str) -> list[CorpusFile] | None:
    """The corpus's files if ``name`` is local (in path order), None if it should be a hub dataset."""
    path = Path(name).expanduser()
    if path.is_file():
        return [_local_file(path)]
    if path.is_dir():
        found = sorted((p for p in path.rglob("*") if p.is_file() and _visible(p, path)
                        and p.suffix.lower() in SUFFIXES), key=lambda p: p.relative_to(path).as_posix())
        if not found:
            raise PersonamineError(f"corpus directory {name!r} holds no corpus files "
                                   f"({', '.join(sorted(SUFFIXES))})")
        return [_local_file(p) for p in found]
    if glob.has_magic(name):
        found = sorted(Path(p) for p in glob.glob(os.path.expanduser(name), recursive=True) if Path(p).is_file())
        if not found:
            raise PersonamineError(f"corpus pattern {name!r} matches no files")
        return [_local_file(p) for p in found]
    if looks_like_path(name):
        raise PersonamineError(f"corpus path {name!r} does not exist")
    return None


def one_format(name: str, files: list[CorpusFile]) -> str:
    formats = sorted({f.format for f in files})
    if len(formats) != 1:
        example = {f.format: f.url for f in files}
        raise PersonamineError(f"corpus {name!r} mixes file formats ({', '.join(formats)}, e.g. "
                               f"{', '.join(repr(example[f]) for f in formats)}): give one format per corpus")
    return formats[0]


def resolve_files(name: str, config: str | None, split: str,
                  revision: str | None) -> tuple[list[CorpusFile], str | None]:
    """(files, pinned hub commit or None) of the corpus ``name``."""
    if not name:
        raise PersonamineError("no corpus given: pass a file, a directory, a glob, a built-in name or a hub dataset")
    if name.startswith("builtin:"):
        try:
            name = str(builtin_corpus_path(name))
        except (KeyError, ModuleNotFoundError) as exc:
            raise PersonamineError(str(exc).strip("'\"")) from exc
    files = local_files(name)
    if files is not None:
        return files, None

    return hub_files(name, config, split, revision)
