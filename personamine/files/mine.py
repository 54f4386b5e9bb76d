"""The one output file (schema ``personamine.mine`` version 3), written atomically, and its reader.

Version 2 added the ``samples/`` group (interval samples, see ``personamine.merge.samples``) and the
``logit_lens/`` group. Version 3 checksums every array dataset (HDF5's Fletcher-32 filter, which any HDF5 reader
verifies on read) and stores the vocabulary's strings as UTF-8 bytes with offsets, so they are checksummed too
(variable-length strings live in a heap no filter covers); it also stores token roles and display spans, and
the optional ``negatives/`` group (non-activating examples, ``personamine.merge.negatives``). Versions 1 and 2
still read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from personamine.errors import FeatureNotInFile, PersonamineError
from personamine.files.directions import NamedDirection
from personamine.files.h5 import (
    CheckedReader,
    atomic_h5,
    dataset,
    file_format,
    open_h5,
    packed_dataset,
    plain_attrs,
    read_attrs,
    read_strings,
    write_strings,
)
from personamine.merge.documents import DocumentScores
from personamine.merge.entries import TOKEN_FILL, Entries, WindowTable
from personamine.merge.negatives import NegativeBuffer, no_activations
from personamine.merge.samples import INTERVAL_EDGES, SampleBuffer
from personamine.merge.stats import HISTOGRAM_EDGES, PERCENTILES, FeatureStats, histogram_percentiles
from personamine.merge.topk import TopKBuffer
from personamine.roles import ROLE, ROLES
from personamine.saes.logit_lens import LogitLens

FORMAT = "personamine.mine"
FORMAT_VERSION = 3

_BLOCK_BYTES = 64 << 20  # dense rows built at a time while writing: the compact buffers never expand whole


def _blocks(n: int, row_bytes: int) -> list[tuple[int, int]]:
    step = max(1, _BLOCK_BYTES // max(row_bytes, 1))
    return [(lo, min(lo + step, n)) for lo in range(0, n, step)]


def write_results(path: str | Path, *, feature_ids: np.ndarray, buffer: TopKBuffer, stats: FeatureStats,
                  attrs: dict, vocab: dict[int, tuple[str, str]] | None = None, samples: SampleBuffer | None = None,
                  logit_lens: LogitLens | None = None, negatives: NegativeBuffer | None = None,
                  documents: DocumentScores | None = None, directions: list[NamedDirection] | None = None,
                  center_directions: bool = False) -> Path:
    path = Path(path)
    with atomic_h5(path, FORMAT, FORMAT_VERSION, attrs) as f:
        if directions:
            _write_directions(f.create_group("directions"), directions, center_directions)
        if documents is not None:
            _write_documents(f.create_group("documents"), documents, stats, directions)
        dataset(f, "feature_ids", np.asarray(feature_ids, np.int64))
        _write_top(f.create_group("top"), buffer)
        st = f.create_group("stats")
        # The one scalar (no filter can cover it) is also the file's n_tokens_scored attribute: read_results
        # cross-checks them.
        st.create_dataset("tokens_scored", data=np.int64(stats.counters["tokens_scored"]))
        dataset(st, "active_tokens", stats.active_tokens.astype(np.int64))
        dataset(st, "activation_sum", stats.activation_sum.astype(np.float64))
        dataset(st, "max", stats.max.astype(np.float32))
        dataset(st, "histogram", stats.histogram.astype(np.int64), packed=True)
        dataset(st, "histogram_edges", HISTOGRAM_EDGES)
        if stats.role_active is not None:
            st.attrs["role_names"] = json.dumps(ROLES)
            dataset(st, "active_tokens_by_role", stats.role_active.astype(np.int64))
            dataset(st, "tokens_scored_by_role", stats.role_scored.astype(np.int64))
            dataset(st, "tokens_seen_by_role", stats.role_seen.astype(np.int64))
        for key, value in stats.counters.items():
            st.attrs[key] = int(value)
        if samples is not None:
            _write_samples(f.create_group("samples"), samples)
        if negatives is not None:
            _write_negatives(f.create_group("negatives"), negatives)
        if logit_lens is not None:
            lens = f.create_group("logit_lens")
            for key, value in logit_lens.attrs.items():
                lens.attrs[key] = value
            for name, value in logit_lens.arrays().items():
                dataset(lens, name, value)
        if vocab:
            ids = np.array(sorted(vocab), dtype=np.int32)
            tok = f.create_group("tokens")
            dataset(tok, "ids", ids)
            write_strings(tok, "pieces", [vocab[i][0] for i in ids])
            write_strings(tok, "text", [vocab[i][1] for i in ids])
    return path


def _write_directions(group: h5py.Group, directions: list[NamedDirection], center: bool) -> None:
    group.attrs["center"] = bool(center)
    write_strings(group, "names", [d.name for d in directions])
    dataset(group, "vectors", np.stack([d.vector for d in directions]).astype(np.float32))
    dataset(group, "means", np.array([d.mean if d.mean is not None else np.nan for d in directions], np.float64))


def _write_documents(group: h5py.Group, documents: DocumentScores, stats: FeatureStats,
                     directions: list[NamedDirection] | None) -> None:
    """Per document and per assistant turn, each channel's mean and max (and min), with each channel's percentiles
    over all scored tokens from the exact histograms: directions' channels are their signed projections."""
    n = len(directions) if directions else stats.histogram.shape[0]
    negative = stats.histogram[n:2 * n] if directions else None
    dataset(group, "percentiles", histogram_percentiles(stats.histogram[:n], negative,
                                                        int(stats.counters["tokens_scored"])))
    dataset(group, "percentile_q", PERCENTILES)
    dataset(group, "document", documents.document.astype(np.int64))
    dataset(group, "n_tokens", documents.n_tokens.astype(np.int64))
    dataset(group, "total", documents.total.astype(np.float64))  # the exact float64 sums the means divide
    dataset(group, "mean", documents.mean.astype(np.float64))
    dataset(group, "max", documents.max.astype(np.float32))
    dataset(group, "min", documents.min.astype(np.float32))
    dataset(group, "turn_document", documents.turn_document.astype(np.int64))
    dataset(group, "turn", documents.turn.astype(np.int64))
    dataset(group, "turn_n_tokens", documents.turn_n_tokens.astype(np.int64))
    dataset(group, "turn_total", documents.turn_total.astype(np.float64))
    dataset(group, "turn_mean", documents.turn_mean.astype(np.float64))


def _write_top(group: h5py.Group, buffer: TopKBuffer) -> None:
    n, k, t = buffer.shape
    flat = {name: dataset(group, name, shape=(n, k), dtype=dtype) for name, dtype in (
        ("score", np.float32), ("document", np.int64), ("window_start", np.int64), ("length", np.int32),
        ("span_start", np.int32))}
    packed = {name: packed_dataset(group, name, (n, k, t), dtype)
              for name, dtype in (("token_ids", np.int32), ("activations", np.float32), ("roles", np.int8))}
    for lo, hi in _blocks(n, k * t * 8):
        block = buffer.dense(lo, hi)
        for name, ds in (flat | packed).items():
            ds[lo:hi] = getattr(block, name)


def _write_samples(group: h5py.Group, samples: SampleBuffer) -> None:
    group.attrs["per_interval"] = samples.per_interval
    dataset(group, "interval_edges", INTERVAL_EDGES)
    dataset(group, "feature_row", samples.feature.astype(np.int64))
    dataset(group, "interval", samples.interval.astype(np.int8))
    dataset(group, "key", samples.key.astype(np.int64))
    dataset(group, "score", samples.score.astype(np.float32))
    entries = samples.entries
    dataset(group, "document", entries.document)
    dataset(group, "window_start", entries.window_start)
    dataset(group, "length", entries.length)
    dataset(group, "span_start", entries.span_start.astype(np.int32))
    n, t = len(entries), entries.ctx_len
    token_ids = packed_dataset(group, "token_ids", (n, t), np.int32)
    activations = packed_dataset(group, "activations", (n, t), np.float32)
    roles = packed_dataset(group, "roles", (n, t), np.int8)
    for lo, hi in _blocks(n, t * 9):
        rows = entries.take(np.arange(lo, hi))
        token_ids[lo:hi], activations[lo:hi], roles[lo:hi] = rows.token_ids, rows.activations, rows.roles


def _write_negatives(group: h5py.Group, buffer: NegativeBuffer) -> None:
    """Each window once (a few dozen serve every feature in an all-features run), and entries that point at it."""
    group.attrs["per_feature"] = buffer.per_feature
    e = buffer.entries
    dataset(group, "feature_row", e.feature.astype(np.int64))
    dataset(group, "key", buffer.key.astype(np.int64))
    dataset(group, "window", e.window.astype(np.int64))
    w = e.windows
    for name in ("document", "window_start", "length", "span_start"):
        dataset(group, name, getattr(w, name))
    dataset(group, "token_ids", w.token_ids.astype(np.int32), packed=True)
    dataset(group, "roles", w.roles.astype(np.int8), packed=True)


def _read_negatives(group: h5py.Group, dedupe: bool, rows: np.ndarray | None, read: CheckedReader) -> NegativeBuffer:
    """The group as a buffer; with ``rows`` (sorted feature rows of the file) only those, renumbered 0..n-1."""
    feature, key, window = (read(group[name]) for name in ("feature_row", "key", "window"))
    if rows is not None:  # entries are sorted by feature row
        bounds = np.searchsorted(feature, np.stack([rows, rows + 1]))
        pick = np.concatenate([np.arange(lo, hi) for lo, hi in bounds.T] + [np.zeros(0, np.int64)])
        feature, key, window = np.searchsorted(rows, feature[pick]), key[pick], window[pick]
    table = WindowTable.build(*(read(group[name]) for name in ("document", "window_start", "length", "token_ids")),
                              roles=read(group["roles"]) if "roles" in group else None)
    if "span_start" in group:
        table.span_start = read(group["span_start"]).astype(np.int32)
    entries = Entries(feature.astype(np.int64), np.zeros(feature.size, np.float32), window.astype(np.int64),
                      no_activations(feature.size), table)
    if rows is not None:
        entries = entries.take(np.arange(len(entries)))  # drop the windows no wanted feature uses
    return NegativeBuffer(entries, np.zeros(feature.size, np.int64), key.astype(np.int64),
                          int(group.attrs["per_feature"]), dedupe)


def _read_samples(group: h5py.Group, dedupe: bool, rows: np.ndarray | None,
                  read: CheckedReader) -> tuple[SampleBuffer, np.ndarray]:
    names = tuple(n for n in ("feature_row", "interval", "key", "score", "document", "window_start", "length",
                              "token_ids", "activations", "roles", "span_start") if n in group)
    if rows is None:
        arrays = {name: read(group[name]) for name in names}
    else:  # samples are sorted by feature row: one contiguous slice per wanted feature, touching slices read as one
        lo, hi = np.searchsorted(read(group["feature_row"]), np.stack([rows, rows + 1]))
        spans = _joined(lo, hi)
        arrays = {name: np.concatenate([read(group[name], slice(a, b)) for a, b in spans]) for name in names}
        arrays["feature_row"] = np.searchsorted(rows, arrays["feature_row"])
    arrays["feature"] = arrays.pop("feature_row")
    arrays["per_interval"] = group.attrs["per_interval"]
    return SampleBuffer.from_arrays(arrays, dedupe=dedupe), read(group["interval_edges"])


def _joined(lo: np.ndarray, hi: np.ndarray) -> list[tuple[int, int]]:
    """Sorted, disjoint ranges [lo, hi) with each run of touching ones joined: the samples of consecutive features
    are one read, not one per feature (each read decompresses and checksums its chunks again: for 1,024 features of
    a 131,072-feature file, seconds instead of milliseconds)."""
    starts = np.flatnonzero(np.r_[True, lo[1:] != hi[:-1]])
    ends = np.r_[starts[1:], lo.size] - 1
    return list(zip(lo[starts].tolist(), hi[ends].tolist(), strict=True))


def _feature_rows(path: Path, file_ids: np.ndarray, features: Iterable[int] | None) -> np.ndarray | None:
    if features is None:
        return None
    wanted = np.unique(np.asarray(list(features), dtype=np.int64))
    if wanted.size == 0:
        raise PersonamineError("no features asked for")
    missing = np.setdiff1d(wanted, file_ids)
    if missing.size:
        raise FeatureNotInFile(f"feature {int(missing[0])} is not in {str(path)!r} "
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
    roles: np.ndarray | None = None  # int8 [F, K, T] (version 3; None before)
    span_start: np.ndarray | None = None  # int32 [F, K]: each example's first position in its fed window
    active_tokens_by_role: np.ndarray | None = None  # int64 [F, R]
    tokens_scored_by_role: np.ndarray | None = None  # int64 [R]
    tokens_seen_by_role: np.ndarray | None = None  # int64 [R]
    negatives: NegativeBuffer | None = None  # None in files written before non-activating examples existed
    # A directions readout: feature ids are channels, 0..n-1 the directions' positive parts, n..2n-1 the negative
    direction_names: list[str] | None = None
    direction_vectors: np.ndarray | None = None  # [n, hidden] float32, as given (not normalised)
    direction_means: np.ndarray | None = None  # [n] the reference subtracted when ``attrs`` says centred
    documents: DocumentScores | None = None  # per document (global index) and assistant turn: mean, max, min
    percentiles: np.ndarray | None = None  # [C, 101] each scored channel's token percentiles 0..100

    @property
    def readout(self) -> str:
        return str(self.attrs.get("readout", f"L{self.attrs.get('layer', '')}"))

    @property
    def is_directions(self) -> bool:
        return self.direction_names is not None

    def channel_name(self, feature_id: int) -> str:
        """How a feature id reads: ``1234``, or a direction's ``L10/last`` / ``L10/last (-)`` (its negative tail)."""
        if self.direction_names is None:
            return str(feature_id)
        n = len(self.direction_names)
        return self.direction_names[feature_id % n] + (" (-)" if feature_id >= n else "")

    def direction_percentiles(self) -> dict[str, np.ndarray]:
        """Directions: each one's percentiles 0..100 over every scored token, in raw projection units ``h . v_hat``
        (the reference mean added back when the run centred its readings), as a steering cap's threshold reads them."""
        if self.direction_names is None or self.percentiles is None:
            raise PersonamineError(f"{str(self.path)!r} is not a directions readout with percentiles")
        centred = bool(self.config.get("center_directions")) and self.direction_means is not None
        means = np.nan_to_num(self.direction_means) if centred else np.zeros(len(self.direction_names))
        return {name: self.percentiles[i] + means[i] for i, name in enumerate(self.direction_names)}

    def signed_stats(self) -> dict[str, np.ndarray]:
        """Directions: each one's signed statistics, exactly: the mean over the scored tokens (from its two channels'
        exact sums), the max and min (the per-document maxima and minima's: a channel's max alone cannot say how far
        below 0 the highest value of a direction that never reads above 0 is), and the share of tokens above and
        below 0."""
        n = len(self.direction_names or [])
        if not n or self.feature_ids.size != 2 * n:
            raise PersonamineError(f"{str(self.path)!r} is not a directions readout read whole")
        tokens = max(self.tokens_scored, 1)
        docs = self.documents
        if docs is not None and docs.document.size:
            high, low = docs.max.max(0), docs.min.min(0)
        else:  # no per-document scores: exact where the direction reaches that side of 0, else unknown
            high = np.where(self.active_tokens[:n] > 0, self.max[:n], np.nan).astype(np.float32)
            low = np.where(self.active_tokens[n:] > 0, -self.max[n:], np.nan).astype(np.float32)
        return {"mean": (self.activation_sum[:n] - self.activation_sum[n:]) / tokens, "max": high, "min": low,
                "above": self.active_tokens[:n] / tokens, "below": self.active_tokens[n:] / tokens}

    @property
    def density(self) -> np.ndarray:
        return self.active_tokens / max(self.tokens_scored, 1)

    def density_by_role(self) -> dict[str, np.ndarray]:
        """Per role that was scored: the share of its scored tokens where each feature is active, [F]."""
        if self.active_tokens_by_role is None or self.tokens_scored_by_role is None:
            return {}
        return {ROLES[r]: self.active_tokens_by_role[:, r] / n
                for r, n in enumerate(self.tokens_scored_by_role.tolist()) if n}

    def feature_index(self, feature_id: int) -> int:
        hits = np.nonzero(self.feature_ids == feature_id)[0]
        if hits.size == 0:
            held = ", ".join(map(str, self.feature_ids[:5].tolist())) + (", ..." if self.feature_ids.size > 5 else "")
            raise FeatureNotInFile(f"feature {feature_id} is not in {self.path} (it holds {self.feature_ids.size} "
                                   f"feature(s): {held})")
        return int(hits[0])

    def examples(self, feature_id: int) -> list[dict]:
        """The feature's top windows, best first: score, document, window_start, token ids, activations."""
        i = self.feature_index(feature_id)
        out = []
        for k in range(self.score.shape[1]):
            if np.isnan(self.score[i, k]):
                break
            n = int(self.length[i, k])
            example = {"score": float(self.score[i, k]), "document": int(self.document[i, k]),
                       "window_start": int(self.window_start[i, k]), "token_ids": self.token_ids[i, k, :n],
                       "activations": self.activations[i, k, :n],
                       "span_start": 0 if self.span_start is None else int(self.span_start[i, k])}
            if self.roles is not None:
                example["roles"] = self.roles[i, k, :n]
            out.append(example)
        return out

    def shown(self, example: dict) -> np.ndarray:
        """bool [n]: the example's tokens a reader sees, i.e. all but the sink prefix fed before its window (by role
        where the file stores roles; before version 3, the prefix is the first tokens of a window's first span)."""
        n = len(example["token_ids"])
        if "roles" in example:
            return (example["roles"] != ROLE["prefix"]) & (example["token_ids"] != TOKEN_FILL)
        keep = np.asarray(example["token_ids"]) != TOKEN_FILL
        if example.get("span_start", 0) == 0:
            keep[: min(n, len(np.atleast_1d(self.attrs.get("sink_prefix", []))))] = False
        return keep

    def reading(self, example: dict) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
        """What a reader is shown of an example: its token ids and activations without the sink prefix and, in a
        conversation, without the template's own tokens (headers, delimiters: never scored), and per token the role
        whose turn it opens (None inside a turn, and everywhere in a plain text)."""
        keep = self.shown(example)
        turns = self.has_turns() and "roles" in example
        roles = example["roles"][keep] if turns else None
        if roles is not None:
            content = roles != ROLE["template"]
            starts = content & np.concatenate([[True], (roles[1:] != roles[:-1]) | ~content[:-1]])
            labels = [ROLES[int(r)] if st else None for r, st in zip(roles[content], starts[content], strict=True)]
            keep = np.flatnonzero(keep)[content]
        else:
            labels = [None] * int(keep.sum())
        return example["token_ids"][keep], example["activations"][keep], labels

    def has_turns(self) -> bool:
        """Whether the mined corpus was conversations (tokens of roles other than plain text were seen)."""
        seen = self.tokens_seen_by_role
        return seen is not None and bool(seen[ROLE["system"]: ROLE["template"] + 1].any())

    def peak_role(self, example: dict) -> str | None:
        """The role of the example's highest-activation token, None where the file has no roles."""
        if "roles" not in example or not len(example["activations"]):
            return None
        return ROLES[int(example["roles"][int(np.argmax(example["activations"]))])]

    def interval_samples(self, feature_id: int) -> dict[int, list[dict]]:
        """The feature's interval samples: interval index -> windows (same keys as ``examples``), by key."""
        if self.samples is None:
            return {}
        out: dict[int, list[dict]] = {}
        rows = self.samples.rows_of(self.feature_index(feature_id))
        s, interval = self.samples.entries.take(rows), self.samples.interval[rows]
        roles, span_start = s.roles, s.span_start
        for r, (n, doc, start, tokens, acts) in enumerate(zip(s.length, s.document, s.window_start, s.token_ids,
                                                              s.activations, strict=True)):
            example = {"score": float(s.score[r]), "document": int(doc), "window_start": int(start),
                       "token_ids": tokens[:n], "activations": acts[:n], "span_start": int(span_start[r])}
            if self.roles is not None:
                example["roles"] = roles[r, :n]
            out.setdefault(int(interval[r]), []).append(example)
        return out

    def non_activating(self, feature_id: int) -> list[dict]:
        """The feature's non-activating windows (score 0 on every scored token), by sampling key; same keys as
        ``examples``, activations all zero. Empty for a file written without them."""
        if self.negatives is None:
            return []
        n = self.negatives.entries.take(self.negatives.rows_of(self.feature_index(feature_id)))
        out = []
        for r, (doc, start, length, tokens) in enumerate(zip(n.document, n.window_start, n.length, n.token_ids,
                                                             strict=True)):
            example = {"score": 0.0, "document": int(doc), "window_start": int(start), "token_ids": tokens[:length],
                       "activations": np.zeros(int(length), np.float32), "span_start": int(n.span_start[r])}
            if self.roles is not None:
                example["roles"] = n.roles[r, :length]
            out.append(example)
        return out

    def interval_bounds(self, interval: int) -> tuple[float, float]:
        """[low, high) of an interval; the first and last intervals also hold values beyond their edges."""
        edges = self.interval_edges if self.interval_edges is not None else INTERVAL_EDGES
        return float(edges[interval]), float(edges[interval + 1])

    def token_text(self, token_id: int) -> str:
        return self.vocab_text.get(int(token_id), f"<{int(token_id)}>")


def read_feature_ids(path: str | Path) -> tuple[np.ndarray, dict]:
    """(the feature ids a mining file holds, its attributes), without reading any feature's rows."""
    path = Path(path)
    with open_h5(path, FORMAT, FORMAT_VERSION, "mining", opened_as="results") as f:
        return CheckedReader(path, f)(f["feature_ids"]).astype(np.int64), plain_attrs(f)


INDEX_FORMAT = "personamine.mine-index"
INDEX_VERSION = 1


def write_index(path: str | Path, files: dict[str, str], attrs: dict) -> Path:
    """A run with several readouts: ``path`` holds no results, only which file beside it holds each readout's."""
    path = Path(path)
    with atomic_h5(path, INDEX_FORMAT, INDEX_VERSION, {**attrs, "readouts": json.dumps(files)}):
        pass
    return path


def readouts_of(path: str | Path) -> dict[str, Path]:
    """Each readout's file in a mining output, by name, in the run's order: an index's readouts, or the one readout
    of a single file."""
    path = Path(path)
    if file_format(path, "results") == INDEX_FORMAT:
        with open_h5(path, INDEX_FORMAT, INDEX_VERSION, "mining index", opened_as="results") as f:
            files = json.loads(f.attrs["readouts"])
        return {name: path.with_name(file) for name, file in files.items()}
    attrs = read_attrs(path, FORMAT, FORMAT_VERSION, "mining")
    return {str(attrs.get("readout", f"L{attrs.get('layer', '')}")): path}


def holds_directions(path: str | Path) -> bool:
    """Whether a mining file holds a directions readout (its attributes alone are read)."""
    return str(read_attrs(Path(path), FORMAT, FORMAT_VERSION, "mining").get("readout_kind", "")) == "directions"


def readout_path(path: str | Path, readout: str | None) -> Path:
    """The file holding ``readout`` of a mining output (an index or a single file); None: its first readout (the
    run's first SAE, or its first directions without one)."""
    found = readouts_of(path)
    if readout is None:
        return next(iter(found.values()))
    if readout not in found:
        raise PersonamineError(f"{str(path)!r} has no readout {readout!r}; it has {', '.join(found)}")
    return found[readout]


def mined_percentiles(path: str | Path):
    """A source of a direction's percentiles at a layer, ``(name, layer) -> [101]`` in raw projection units, read from
    a mining run's directions readout at that layer (``directions-L<layer>`` of an index, or a single directions
    file): the distribution over every token the run scored, as a steering cap's or floor's threshold reads it."""
    cache: dict[int, dict[str, np.ndarray]] = {}

    def percentiles_of(name: str, layer: int) -> np.ndarray:
        if layer not in cache:
            found = readouts_of(path)
            readout = f"directions-L{layer}"
            if readout not in found:
                raise PersonamineError(f"{str(path)!r} holds no directions mined at layer {layer} (it has "
                                       f"{', '.join(found)}): mine them there, or measure percentiles on prompts")
            cache[layer] = read_results(found[readout]).direction_percentiles()
        if name not in cache[layer]:
            raise PersonamineError(f"{str(path)!r} mined no direction {name!r} at layer {layer}; it has "
                                   f"{', '.join(cache[layer])}")
        return cache[layer][name]

    return percentiles_of


def read_results(path: str | Path, features: Iterable[int] | None = None, readout: str | None = None) -> MineResults:
    """Read a mining file. ``features`` (SAE feature ids, or a directions readout's channels) reads only those
    features' rows, in the file's order: an all-features file holds about 1.3 GB of dense top-k arrays for 131,072
    features. ``readout`` names one readout of a run with several (``L15``, ``directions-L15``; see
    ``readouts_of``; default: its first). A dataset that fails its checksum is a ``PersonamineError`` naming it."""
    path = Path(path)
    if readout is not None or file_format(path, "results") == INDEX_FORMAT:
        path = readout_path(path, readout)
    try:
        with open_h5(path, FORMAT, FORMAT_VERSION, "mining", opened_as="results") as f:
            return _read(path, f, features)
    except PersonamineError:  # already says what is wrong (FeatureNotInFile is a KeyError too)
        raise
    except (KeyError, OSError) as exc:  # a damaged object header or link table
        raise PersonamineError(f"{str(path)!r} is damaged or incomplete: {exc}") from exc


def _read(path: Path, f: h5py.File, features: Iterable[int] | None) -> MineResults:
    read = CheckedReader(path, f)
    attrs = plain_attrs(f)
    if "n_pieces" in attrs:  # files written before the attribute was named for shards
        attrs["n_shards"] = attrs.pop("n_pieces")
    vocab_text, vocab_pieces = {}, {}
    if "tokens" in f:
        ids = read(f["tokens/ids"]).tolist()
        vocab_text = dict(zip(ids, read_strings(f["tokens"], "text", read), strict=True))
        vocab_pieces = dict(zip(ids, read_strings(f["tokens"], "pieces", read), strict=True))
    feature_ids = read(f["feature_ids"])
    rows = _feature_rows(path, feature_ids, features)

    def per_feature(ds: h5py.Dataset) -> np.ndarray:
        return read(ds) if rows is None else read(ds, rows)

    top, st = f["top"], f["stats"]
    tokens_scored = int(read(st["tokens_scored"]))
    if "n_tokens_scored" in attrs and int(attrs["n_tokens_scored"]) != tokens_scored:
        raise PersonamineError(f"{str(path)!r} is damaged: stats/tokens_scored ({tokens_scored}) disagrees with the "
                               f"file's n_tokens_scored ({attrs['n_tokens_scored']})")
    samples, interval_edges, lens, negatives = None, None, None, None
    dedupe = bool(json.loads(attrs.get("config", "{}")).get("dedupe", True))
    if "samples" in f:
        samples, interval_edges = _read_samples(f["samples"], dedupe=dedupe, rows=rows, read=read)
    if "negatives" in f:
        negatives = _read_negatives(f["negatives"], dedupe=dedupe, rows=rows, read=read)
    if "logit_lens" in f:
        g = f["logit_lens"]
        lens = LogitLens(**{name: per_feature(g[name]) for name in (
            "promoted_ids", "promoted_values", "suppressed_ids", "suppressed_values")},
                         attrs=plain_attrs(g))
    return MineResults(
        path=path, attrs=attrs, config=json.loads(attrs.get("config", "{}")),
        feature_ids=feature_ids if rows is None else feature_ids[rows],
        score=per_feature(top["score"]), token_ids=per_feature(top["token_ids"]),
        activations=per_feature(top["activations"]), document=per_feature(top["document"]),
        window_start=per_feature(top["window_start"]), length=per_feature(top["length"]),
        tokens_scored=tokens_scored, active_tokens=per_feature(st["active_tokens"]),
        activation_sum=per_feature(st["activation_sum"]), max=per_feature(st["max"]),
        histogram=per_feature(st["histogram"]), histogram_edges=read(st["histogram_edges"]),
        counters={k: int(v) for k, v in st.attrs.items() if k != "role_names"}, vocab_text=vocab_text,
        vocab_pieces=vocab_pieces, samples=samples, interval_edges=interval_edges, logit_lens=lens,
        negatives=negatives,
        roles=per_feature(top["roles"]) if "roles" in top else None,
        span_start=per_feature(top["span_start"]) if "span_start" in top else None,
        active_tokens_by_role=per_feature(st["active_tokens_by_role"]) if "active_tokens_by_role" in st else None,
        tokens_scored_by_role=read(st["tokens_scored_by_role"]) if "tokens_scored_by_role" in st else None,
        tokens_seen_by_role=read(st["tokens_seen_by_role"]) if "tokens_seen_by_role" in st else None,
        **_read_readout_parts(f, read),
    )


def _read_readout_parts(f: h5py.File, read: CheckedReader) -> dict:
    out: dict = {}
    if "directions" in f:
        g = f["directions"]
        out.update(direction_names=read_strings(g, "names", read), direction_vectors=read(g["vectors"]),
                   direction_means=read(g["means"]))
    if "documents" in f:
        g = f["documents"]
        out["documents"] = DocumentScores(**{name: read(g[name]) for name in (
            "document", "n_tokens", "total", "max", "min", "turn_document", "turn", "turn_n_tokens", "turn_total")})
        out["percentiles"] = read(g["percentiles"])
    return out
