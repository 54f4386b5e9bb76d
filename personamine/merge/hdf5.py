"""The one output file (schema ``personamine.mine`` version 2), written atomically, and its reader.

Version 2 added the ``samples/`` group (interval samples, see ``personamine.merge.samples``) and the
``logit_lens/`` group; everything else is as in version 1, and version 1 files still read (no samples, no lens).
The optional ``negatives/`` group (non-activating examples, ``personamine.merge.negatives``) came later within
version 2: readers that predate it ignore it, and files without it read with no negatives.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from personamine.errors import PersonamineError
from personamine.merge.negatives import NegativeBuffer, read_negatives, write_negatives
from personamine.merge.samples import INTERVAL_EDGES, SampleBuffer
from personamine.merge.stats import HISTOGRAM_EDGES, FeatureStats
from personamine.merge.topk import TopKBuffer
from personamine.model.logit_lens import LogitLens

FORMAT = "personamine.mine"
FORMAT_VERSION = 2
_STR = h5py.string_dtype("utf-8")
NUL_SHOWN = "\u2400"


def atomic_h5(path: Path):
    """Open a temp file beside ``path``; the caller renames it into place only after a clean close."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    return tmp, h5py.File(tmp, "w", track_order=True)


_BLOCK_BYTES = 64 << 20  # dense rows built at a time while writing: the compact buffers never expand whole


def _packed(group: h5py.Group, name: str, shape: tuple[int, ...], dtype: type) -> h5py.Dataset:
    return group.create_dataset(name, shape=shape, dtype=dtype, compression="gzip", compression_opts=4, shuffle=True)


def _blocks(n: int, row_bytes: int) -> list[tuple[int, int]]:
    step = max(1, _BLOCK_BYTES // max(row_bytes, 1))
    return [(lo, min(lo + step, n)) for lo in range(0, n, step)]


def write_results(path: str | Path, *, feature_ids: np.ndarray, buffer: TopKBuffer, stats: FeatureStats,
                  attrs: dict, vocab: dict[int, tuple[str, str]] | None = None, samples: SampleBuffer | None = None,
                  logit_lens: LogitLens | None = None, negatives: NegativeBuffer | None = None) -> Path:
    path = Path(path)
    tmp, f = atomic_h5(path)
    try:
        with f:
            for key, value in attrs.items():
                f.attrs[key] = value
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.create_dataset("feature_ids", data=np.asarray(feature_ids, np.int64))
            _write_top(f.create_group("top"), buffer)
            st = f.create_group("stats")
            st.create_dataset("tokens_scored", data=np.int64(stats.counters["tokens_scored"]))
            st.create_dataset("active_tokens", data=stats.active_tokens.astype(np.int64))
            st.create_dataset("activation_sum", data=stats.activation_sum.astype(np.float64))
            st.create_dataset("max", data=stats.max.astype(np.float32))
            st.create_dataset("histogram", data=stats.histogram.astype(np.int64), compression="gzip")
            st.create_dataset("histogram_edges", data=HISTOGRAM_EDGES)
            for key, value in stats.counters.items():
                st.attrs[key] = int(value)
            if samples is not None:
                _write_samples(f.create_group("samples"), samples)
            if negatives is not None:
                write_negatives(f.create_group("negatives"), negatives)
            if logit_lens is not None:
                lens = f.create_group("logit_lens")
                for key, value in logit_lens.attrs.items():
                    lens.attrs[key] = value
                for name, value in logit_lens.arrays().items():
                    lens.create_dataset(name, data=value)
            if vocab:
                ids = np.array(sorted(vocab), dtype=np.int32)
                tok = f.create_group("tokens")
                tok.create_dataset("ids", data=ids)
                # HDF5 strings end at NUL, so a NUL decodes to U+2400 (pieces never hold one: byte-level BPE maps
                # byte 0 to a printable piece, byte fallback to "<0x00>").
                tok.create_dataset("pieces", data=[vocab[i][0].replace("\0", NUL_SHOWN) for i in ids], dtype=_STR)
                tok.create_dataset("text", data=[vocab[i][1].replace("\0", NUL_SHOWN) for i in ids], dtype=_STR)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _write_top(group: h5py.Group, buffer: TopKBuffer) -> None:
    n, k, t = buffer.shape
    flat = {name: group.create_dataset(name, shape=(n, k), dtype=dtype) for name, dtype in (
        ("score", np.float32), ("document", np.int64), ("window_start", np.int64), ("length", np.int32))}
    packed = {name: _packed(group, name, (n, k, t), dtype)
              for name, dtype in (("token_ids", np.int32), ("activations", np.float32))}
    for lo, hi in _blocks(n, k * t * 8):
        block = buffer.dense(lo, hi)
        for name, ds in (flat | packed).items():
            ds[lo:hi] = getattr(block, name)


def _write_samples(group: h5py.Group, samples: SampleBuffer) -> None:
    group.attrs["per_interval"] = samples.per_interval
    group.create_dataset("interval_edges", data=INTERVAL_EDGES)
    group.create_dataset("feature_row", data=samples.feature.astype(np.int64))
    group.create_dataset("interval", data=samples.interval.astype(np.int8))
    group.create_dataset("key", data=samples.key.astype(np.int64))
    group.create_dataset("score", data=samples.score.astype(np.float32))
    entries = samples.entries
    group.create_dataset("document", data=entries.document)
    group.create_dataset("window_start", data=entries.window_start)
    group.create_dataset("length", data=entries.length)
    n, t = len(entries), entries.ctx_len
    token_ids = _packed(group, "token_ids", (n, t), np.int32)
    activations = _packed(group, "activations", (n, t), np.float32)
    for lo, hi in _blocks(n, t * 8):
        rows = entries.take(np.arange(lo, hi))
        token_ids[lo:hi], activations[lo:hi] = rows.token_ids, rows.activations


def _read_samples(group: h5py.Group, dedupe: bool, rows: np.ndarray | None) -> tuple[SampleBuffer, np.ndarray]:
    names = ("feature_row", "interval", "key", "score", "document", "window_start", "length", "token_ids",
             "activations")
    if rows is None:
        arrays = {name: group[name][()] for name in names}
    else:  # samples are sorted by feature row: one contiguous slice per wanted feature
        bounds = np.searchsorted(group["feature_row"][()], np.stack([rows, rows + 1]))
        arrays = {name: np.concatenate([group[name][lo:hi] for lo, hi in bounds.T]) for name in names}
        arrays["feature_row"] = np.searchsorted(rows, arrays["feature_row"])
    arrays["feature"] = arrays.pop("feature_row")
    arrays["per_interval"] = group.attrs["per_interval"]
    return SampleBuffer.from_arrays(arrays, dedupe=dedupe), group["interval_edges"][()]


def _feature_rows(path: Path, file_ids: np.ndarray, features: Iterable[int] | None) -> np.ndarray | None:
    if features is None:
        return None
    wanted = np.unique(np.asarray(list(features), dtype=np.int64))
    if wanted.size == 0:
        raise PersonamineError("no features asked for")
    missing = np.setdiff1d(wanted, file_ids)
    if missing.size:
        raise PersonamineError(f"feature {int(missing[0])} is not in {str(path)!r} "
                               f"({missing.size} of the {wanted.size} asked for are missing)")
    return np.sort(np.nonzero(np.isin(file_ids, wanted))[0])


@dataclass
class MineResults:
    """A mining output file as plain numpy (see the README for the schema)."""

    path: Path
    attrs: dict
    config: dict
    feature_ids: np.ndarray
    score: np.ndarray
    token_ids: np.ndarray
    activations: np.ndarray
    document: np.ndarray
    window_start: np.ndarray
    length: np.ndarray
    tokens_scored: int
    active_tokens: np.ndarray
    activation_sum: np.ndarray
    max: np.ndarray
    histogram: np.ndarray
    histogram_edges: np.ndarray
    counters: dict
    vocab_text: dict[int, str] = field(default_factory=dict)
    vocab_pieces: dict[int, str] = field(default_factory=dict)
    samples: SampleBuffer | None = None  # None in version 1 files
    interval_edges: np.ndarray | None = None
    logit_lens: LogitLens | None = None
    negatives: NegativeBuffer | None = None  # None in files written before non-activating examples existed

    @property
    def density(self) -> np.ndarray:
        return self.active_tokens / max(self.tokens_scored, 1)

    def feature_index(self, feature_id: int) -> int:
        hits = np.nonzero(self.feature_ids == feature_id)[0]
        if hits.size == 0:
            raise KeyError(f"feature {feature_id} is not in {self.path}")
        return int(hits[0])

    def examples(self, feature_id: int) -> list[dict]:
        """The feature's top windows, best first: score, document, window_start, token ids, activations."""
        i = self.feature_index(feature_id)
        out = []
        for k in range(self.score.shape[1]):
            if np.isnan(self.score[i, k]):
                break
            n = int(self.length[i, k])
            out.append({"score": float(self.score[i, k]), "document": int(self.document[i, k]),
                        "window_start": int(self.window_start[i, k]), "token_ids": self.token_ids[i, k, :n],
                        "activations": self.activations[i, k, :n]})
        return out

    def interval_samples(self, feature_id: int) -> dict[int, list[dict]]:
        """The feature's interval samples: interval index -> windows (same keys as ``examples``), by key."""
        if self.samples is None:
            return {}
        out: dict[int, list[dict]] = {}
        rows = self.samples.rows_of(self.feature_index(feature_id))
        s, interval = self.samples.entries.take(rows), self.samples.interval[rows]
        for r, (n, doc, start, tokens, acts) in enumerate(zip(s.length, s.document, s.window_start, s.token_ids,
                                                              s.activations, strict=True)):
            out.setdefault(int(interval[r]), []).append({
                "score": float(s.score[r]), "document": int(doc), "window_start": int(start),
                "token_ids": tokens[:n], "activations": acts[:n]})
        return out

    def non_activating(self, feature_id: int) -> list[dict]:
        """The feature's non-activating windows (score 0 on every scored token), by sampling key; same keys as
        ``examples``, activations all zero. Empty for a file written without them."""
        if self.negatives is None:
            return []
        n = self.negatives.entries.take(self.negatives.rows_of(self.feature_index(feature_id)))
        return [{"score": 0.0, "document": int(doc), "window_start": int(start), "token_ids": tokens[:length],
                 "activations": np.zeros(int(length), np.float32)}
                for doc, start, length, tokens in zip(n.document, n.window_start, n.length, n.token_ids, strict=True)]

    def interval_bounds(self, interval: int) -> tuple[float, float]:
        """[low, high) of an interval; the first and last intervals also hold values beyond their edges."""
        edges = self.interval_edges if self.interval_edges is not None else INTERVAL_EDGES
        return float(edges[interval]), float(edges[interval + 1])

    def token_text(self, token_id: int) -> str:
        return self.vocab_text.get(int(token_id), f"<{int(token_id)}>")


def read_results(path: str | Path, features: Iterable[int] | None = None) -> MineResults:
    """Read a mining file. ``features`` (SAE feature ids) reads only those features' rows, in the file's order:
    an all-features file holds about 1.3 GB of dense top-k arrays for 131,072 features."""
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise PersonamineError(f"cannot open results file {str(path)!r}: {exc}") from exc
    with f:
        if f.attrs.get("format") != FORMAT:
            raise PersonamineError(f"{str(path)!r} is not a personamine mining file")
        version = int(f.attrs["format_version"])
        if version > FORMAT_VERSION:
            raise PersonamineError(f"{str(path)!r} has format version {version}; upgrade personamine to read it")
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
        vocab_text, vocab_pieces = {}, {}
        if "tokens" in f:
            ids = f["tokens/ids"][()]
            vocab_text = dict(zip(ids.tolist(), f["tokens/text"].asstr()[()], strict=True))
            vocab_pieces = dict(zip(ids.tolist(), f["tokens/pieces"].asstr()[()], strict=True))
        feature_ids = f["feature_ids"][()]
        rows = _feature_rows(path, feature_ids, features)

        def per_feature(ds: h5py.Dataset) -> np.ndarray:
            return ds[()] if rows is None else ds[rows]

        top, st = f["top"], f["stats"]
        samples, interval_edges, lens, negatives = None, None, None, None
        dedupe = bool(json.loads(attrs.get("config", "{}")).get("dedupe", True))
        if "samples" in f:
            samples, interval_edges = _read_samples(f["samples"], dedupe=dedupe, rows=rows)
        if "negatives" in f:
            negatives = read_negatives(f["negatives"], dedupe=dedupe, rows=rows)
        if "logit_lens" in f:
            g = f["logit_lens"]
            lens = LogitLens(**{name: per_feature(g[name]) for name in (
                "promoted_ids", "promoted_values", "suppressed_ids", "suppressed_values")},
                             attrs={k: (v.item() if isinstance(v, np.generic) else v) for k, v in g.attrs.items()})
        return MineResults(
            path=path, attrs=attrs, config=json.loads(attrs.get("config", "{}")),
            feature_ids=feature_ids if rows is None else feature_ids[rows],
            score=per_feature(top["score"]), token_ids=per_feature(top["token_ids"]),
            activations=per_feature(top["activations"]), document=per_feature(top["document"]),
            window_start=per_feature(top["window_start"]), length=per_feature(top["length"]),
            tokens_scored=int(st["tokens_scored"][()]), active_tokens=per_feature(st["active_tokens"]),
            activation_sum=per_feature(st["activation_sum"]), max=per_feature(st["max"]),
            histogram=per_feature(st["histogram"]), histogram_edges=st["histogram_edges"][()],
            counters={k: int(v) for k, v in st.attrs.items()}, vocab_text=vocab_text, vocab_pieces=vocab_pieces,
            samples=samples, interval_edges=interval_edges, logit_lens=lens, negatives=negatives,
        )
