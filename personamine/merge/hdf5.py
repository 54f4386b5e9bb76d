"""The one output file (schema ``personamine.mine`` version 1), written atomically, and its reader."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from personamine.errors import PersonamineError
from personamine.merge.stats import HISTOGRAM_EDGES, FeatureStats
from personamine.merge.topk import TopKBuffer

FORMAT = "personamine.mine"
FORMAT_VERSION = 1
_STR = h5py.string_dtype("utf-8")


def atomic_h5(path: Path):
    """Open a temp file beside ``path``; the caller renames it into place only after a clean close."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    return tmp, h5py.File(tmp, "w", track_order=True)


def write_results(path: str | Path, *, feature_ids: np.ndarray, buffer: TopKBuffer, stats: FeatureStats,
                  attrs: dict, vocab: dict[int, tuple[str, str]] | None = None) -> Path:
    path = Path(path)
    tmp, f = atomic_h5(path)
    try:
        with f:
            for key, value in attrs.items():
                f.attrs[key] = value
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.create_dataset("feature_ids", data=np.asarray(feature_ids, np.int64))
            top = f.create_group("top")
            top.create_dataset("score", data=buffer.score.astype(np.float32))
            for name, dtype in (("token_ids", np.int32), ("activations", np.float32)):
                top.create_dataset(name, data=getattr(buffer, name).astype(dtype), compression="gzip",
                                   compression_opts=4, shuffle=True)
            top.create_dataset("document", data=buffer.document.astype(np.int64))
            top.create_dataset("window_start", data=buffer.window_start.astype(np.int64))
            top.create_dataset("length", data=buffer.length.astype(np.int32))
            st = f.create_group("stats")
            st.create_dataset("tokens_scored", data=np.int64(stats.counters["tokens_scored"]))
            st.create_dataset("active_tokens", data=stats.active_tokens.astype(np.int64))
            st.create_dataset("activation_sum", data=stats.activation_sum.astype(np.float64))
            st.create_dataset("max", data=stats.max.astype(np.float32))
            st.create_dataset("histogram", data=stats.histogram.astype(np.int64), compression="gzip")
            st.create_dataset("histogram_edges", data=HISTOGRAM_EDGES)
            for key, value in stats.counters.items():
                st.attrs[key] = int(value)
            if vocab:
                ids = np.array(sorted(vocab), dtype=np.int32)
                tok = f.create_group("tokens")
                tok.create_dataset("ids", data=ids)
                tok.create_dataset("pieces", data=[vocab[i][0] for i in ids], dtype=_STR)
                tok.create_dataset("text", data=[vocab[i][1] for i in ids], dtype=_STR)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


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

    def token_text(self, token_id: int) -> str:
        return self.vocab_text.get(int(token_id), f"<{int(token_id)}>")


def read_results(path: str | Path) -> MineResults:
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
        top, st = f["top"], f["stats"]
        return MineResults(
            path=path, attrs=attrs, config=json.loads(attrs.get("config", "{}")), feature_ids=f["feature_ids"][()],
            score=top["score"][()], token_ids=top["token_ids"][()], activations=top["activations"][()],
            document=top["document"][()], window_start=top["window_start"][()], length=top["length"][()],
            tokens_scored=int(st["tokens_scored"][()]), active_tokens=st["active_tokens"][()],
            activation_sum=st["activation_sum"][()], max=st["max"][()], histogram=st["histogram"][()],
            histogram_edges=st["histogram_edges"][()], counters={k: int(v) for k, v in st.attrs.items()},
            vocab_text=vocab_text, vocab_pieces=vocab_pieces,
        )
