"""Open any `datasets` source as a document sequence addressed by index.

A corpus is a built-in name (``builtin:...``), a local file/dir/glob (jsonl, json, parquet, csv, arrow, txt —
one line per document for text files), or a hub dataset (name + config + split, streamed). Every worker opens it
the same way from the config, so a shard only needs its document range.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from personamine.errors import PersonamineError

LOADERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow",
           ".txt": "text", ".raw": "text", ".text": "text"}
_READ_CHUNK = 1024


@dataclass
class CorpusSpec:
    corpus: str
    corpus_config: str | None = None
    split: str = "train"
    text_column: str = "text"
    streaming: bool | None = None


def _local_files(corpus: str) -> list[str] | None:
    path = Path(corpus).expanduser()
    if path.is_file():
        return [str(path)]
    if path.is_dir():
        files = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix in LOADERS)
        if not files:
            raise PersonamineError(f"corpus dir {corpus!r} holds no {'/'.join(sorted(LOADERS))} files")
        return files
    if any(ch in corpus for ch in "*?["):
        files = sorted(glob.glob(str(path)))
        if not files:
            raise PersonamineError(f"corpus pattern {corpus!r} matches no files")
        return files
    if corpus.startswith(("/", ".", "~")) or corpus.count("/") > 1:
        raise PersonamineError(f"corpus path {corpus!r} does not exist")
    return None


class Corpus:
    """Random access by document range over a map-style dataset, or skip/take over a streamed one."""

    def __init__(self, spec: CorpusSpec) -> None:
        self.spec = spec
        self.dataset = _open_dataset(spec)
        self.streaming = not hasattr(self.dataset, "__len__")
        columns = self.dataset.column_names
        if columns is None and self.streaming:
            first = next(iter(self.dataset.take(1)), None)
            columns = list(first) if first is not None else [spec.text_column]
        if spec.text_column not in columns:
            raise PersonamineError(
                f"corpus {spec.corpus!r} has no text column {spec.text_column!r} "
                f"(columns: {', '.join(map(str, columns))}); set text_column"
            )
        self.dataset = self.dataset.select_columns([spec.text_column])

    def __len__(self) -> int:
        if self.streaming:
            raise TypeError("a streamed corpus has no length; use count_documents")
        return len(self.dataset)

    def count_documents(self, limit: int | None = None) -> int:
        if not self.streaming:
            return len(self) if limit is None else min(len(self), limit)
        source = self.dataset if limit is None else self.dataset.take(limit)
        return sum(1 for _ in source)

    def texts(self, start: int, end: int) -> Iterator[object]:
        """Raw values of the text column for documents [start, end), in order (may be None or non-strings)."""
        column = self.spec.text_column
        if self.streaming:
            for row in self.dataset.skip(start).take(end - start):
                yield row[column]
            return
        end = min(end, len(self.dataset))
        for lo in range(start, end, _READ_CHUNK):
            yield from self.dataset[lo:min(lo + _READ_CHUNK, end)][column]


def _open_dataset(spec: CorpusSpec):
    import datasets

    datasets.disable_progress_bars()
    corpus = spec.corpus
    if not corpus:
        raise PersonamineError("no corpus given: pass a file, a dir, a built-in name or a hub dataset")
    if corpus.startswith("builtin:"):
        from personamine.corpora import builtin_corpus_path

        corpus = str(builtin_corpus_path(corpus))
    files = _local_files(corpus)
    try:
        if files is not None:
            suffixes = {Path(f).suffix for f in files}
            loaders = {LOADERS.get(s) for s in suffixes}
            if None in loaders or len(loaders) != 1:
                raise PersonamineError(
                    f"corpus {spec.corpus!r}: cannot read files of type {', '.join(sorted(suffixes))} together "
                    f"(supported: {', '.join(sorted(LOADERS))})"
                )
            streaming = bool(spec.streaming)
            return datasets.load_dataset(loaders.pop(), data_files=files, split="train", streaming=streaming)
        streaming = True if spec.streaming is None else spec.streaming
        return datasets.load_dataset(corpus, spec.corpus_config, split=spec.split, streaming=streaming)
    except PersonamineError:
        raise
    except Exception as exc:  # datasets raises many types for unreadable sources; all are the user's to fix
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PersonamineError(f"cannot read corpus {spec.corpus!r}: {message}") from exc
