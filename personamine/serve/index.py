"""The browser's index: every feature of the served files as a few numpy columns, sorted, filtered and paged on the
server, so a page of 50 rows out of 131,072 costs a slice, never a page that holds them all.

The columns are read once at start, straight from the datasets that hold them (``feature_ids``, ``stats/...``, and
the best window of ``top/...`` for the top token), in blocks, never the whole top-k arrays; a feature's own rows are
read only when its page is asked for (``personamine.serve.pages``). The values are the ones ``read_results`` gives
and the report shows: density = active tokens / scored tokens, mean = activation sum / active tokens, and the top
token is the one with the highest activation among the shown tokens of the feature's best window.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from personamine.errors import PersonamineError
from personamine.files.discover import DiscoveryResults
from personamine.files.explain import ExplanationResults
from personamine.files.h5 import open_h5
from personamine.files.mine import FORMAT, FORMAT_VERSION, MineResults
from personamine.merge.entries import TOKEN_FILL
from personamine.report.data import display_token
from personamine.report.explanations import SHOWN_METRICS
from personamine.roles import ROLE, ROLES

NUMBER, SHARE, TEXT = "number", "share", "text"  # how a column's values are shown (the report's fmt, pct, text)
MAX_QUERY_CHARS = 200
MAX_PAGE_ROWS = 500
_BLOCK_FEATURES = 4096  # features whose best window is read at a time while the index is built
_SEPARATOR = "\x00"  # between rows of a search text: no query holds it (it is stripped), so no match spans two rows
_CACHED_FILTERS = 16


@dataclass
class Column:
    key: str  # its name in a URL (?sort=KEY)
    heading: str
    kind: str  # NUMBER, SHARE or TEXT
    legend: str  # what it means (the index's legend and the heading's hover)
    values: np.ndarray | TextColumn  # float64 [rows] (NaN: none) or text


@dataclass
class TextColumn:
    """Strings of every row kept as one string and offsets (131,072 Python strings would cost ~60 bytes each more),
    with a case-folded copy to search in."""

    text: str
    offsets: np.ndarray  # int64 [rows + 1]
    folded: str
    folded_offsets: np.ndarray

    @classmethod
    def build(cls, values: list[str]) -> TextColumn:
        clean = [v.replace(_SEPARATOR, " ") for v in values]
        folded = [v.casefold() for v in clean]
        return cls(_SEPARATOR.join(clean), _offsets(clean), _SEPARATOR.join(folded), _offsets(folded))

    def __len__(self) -> int:
        return self.offsets.size - 1

    def __getitem__(self, row: int) -> str:
        return self.text[self.offsets[row]:self.offsets[row + 1] - 1]

    def matching(self, query: str) -> np.ndarray:
        """bool [rows]: rows whose case-folded text contains ``query`` (already case-folded): one ``str.find`` per
        matching row, at C speed, each search resuming at the next row."""
        hits = np.zeros(len(self), bool)
        starts, text, at = self.folded_offsets, self.folded, 0
        while (at := text.find(query, at)) >= 0:
            row = int(np.searchsorted(starts, at, side="right")) - 1
            hits[row] = True
            at = int(starts[row + 1])
        return hits

    def sort_keys(self) -> np.ndarray:
        bounds = self.folded_offsets.tolist()
        return np.array([self.folded[a:b - 1] for a, b in zip(bounds[:-1], bounds[1:], strict=True)])


def _offsets(values: list[str]) -> np.ndarray:
    # Row r is text[offsets[r]:offsets[r + 1] - 1]: the separator after it dropped (the last row has none, and its
    # end is the text's).
    return np.cumsum([0] + [len(v) + 1 for v in values], dtype=np.int64)


@dataclass
class ResultsColumns:
    """What the index keeps of one mining file."""

    feature_ids: np.ndarray
    density: np.ndarray
    max: np.ndarray
    mean: np.ndarray
    active: np.ndarray
    by_role: dict[str, np.ndarray]  # per scored role, the share of its scored tokens where the feature is active
    scored_by_role: dict[str, int]
    top_token: list[str]


def read_columns(path: Path, head: MineResults) -> ResultsColumns:
    """A mining file's index columns; ``head``: ``read_results`` of one of its features (the file's attributes,
    counts and vocabulary)."""
    with open_h5(path, FORMAT, FORMAT_VERSION, "mining", opened_as="results") as f:
        try:
            feature_ids = f["feature_ids"][()]
            st, top = f["stats"], f["top"]
            active = st["active_tokens"][()]
            activation_sum = st["activation_sum"][()]
            maxima = st["max"][()].astype(np.float64)
            by_role_active = st["active_tokens_by_role"][()] if "active_tokens_by_role" in st else None
            peak_ids = np.full(feature_ids.size, -1, np.int64)
            for lo in range(0, feature_ids.size, _BLOCK_FEATURES):
                hi = min(lo + _BLOCK_FEATURES, feature_ids.size)
                peak_ids[lo:hi] = _peak_tokens(top, lo, hi, head)
        except OSError as exc:  # a chunk that fails its checksum: one line naming the file
            raise PersonamineError(f"{str(path)!r} is damaged: {str(exc).splitlines()[0]}") from exc
    scored = max(head.tokens_scored, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(active > 0, activation_sum / np.maximum(active, 1), 0.0)
    by_role, scored_by_role = {}, {}
    if by_role_active is not None and head.tokens_scored_by_role is not None and head.has_turns():
        for r, n in enumerate(head.tokens_scored_by_role.tolist()):
            if n:
                by_role[ROLES[r]] = by_role_active[:, r] / n
                scored_by_role[ROLES[r]] = int(n)
    shown = {}
    top_token = []
    for tid in peak_ids.tolist():
        if tid < 0:
            top_token.append("")
            continue
        if tid not in shown:
            text = head.vocab_text.get(tid)
            shown[tid] = (display_token(text, head.vocab_pieces.get(tid, ""))[0] if text is not None
                          else f"<{tid}>")
        top_token.append(shown[tid])
    return ResultsColumns(feature_ids=feature_ids.astype(np.int64), density=active / scored, max=maxima, mean=mean,
                          active=active.astype(np.int64), by_role=by_role, scored_by_role=scored_by_role,
                          top_token=top_token)


def _peak_tokens(top, lo: int, hi: int, head: MineResults) -> np.ndarray:
    """Token id at the highest activation among the shown tokens of each feature's best window (-1: no window), as
    ``MineResults.shown`` decides what is shown."""
    tokens = top["token_ids"][lo:hi, 0, :]
    acts = top["activations"][lo:hi, 0, :].astype(np.float64)
    length = top["length"][lo:hi, 0]
    has_window = ~np.isnan(top["score"][lo:hi, 0])
    inside = np.arange(tokens.shape[1])[None, :] < length[:, None]
    keep = inside & (tokens != TOKEN_FILL)
    if "roles" in top:
        keep &= top["roles"][lo:hi, 0, :] != ROLE["prefix"]
    else:  # before version 3: the sink prefix is the first tokens of a window that starts at its fed start
        span_start = top["span_start"][lo:hi, 0] if "span_start" in top else np.zeros(hi - lo, np.int32)
        n_prefix = len(np.atleast_1d(head.attrs.get("sink_prefix", [])))
        keep[(span_start == 0)[:, None] & (np.arange(tokens.shape[1])[None, :] < n_prefix)] = False
    acts[~keep] = -np.inf
    best = np.argmax(acts, axis=1)  # the first of equal maxima, as the report's script picks
    found = has_window & keep.any(axis=1)
    return np.where(found, tokens[np.arange(hi - lo), best], -1)


@dataclass
class IndexPage:
    total: int  # rows in the index
    matched: int  # rows the filter kept
    page: int
    size: int
    sort: str
    descending: bool
    query: str
    positions: np.ndarray  # the page's rows, in order
    rows: list[list]  # per row: the columns' values (None for missing), as JSON-able values


@dataclass
class FeatureIndex:
    """Every (file, feature) of the served files: row r is feature ``feature_ids[r]`` of file ``file_of[r]``."""

    file_of: np.ndarray
    feature_ids: np.ndarray
    columns: list[Column]
    default_order: np.ndarray  # discovery rank order when a discovery file is given, else file by file
    _orders: dict[tuple[str, bool], np.ndarray] = field(default_factory=dict)
    _filters: OrderedDict[str, np.ndarray] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)  # pages are built on several threads

    @property
    def size(self) -> int:
        return int(self.feature_ids.size)

    def column(self, key: str) -> Column:
        for col in self.columns:
            if col.key == key:
                return col
        raise PersonamineError(f"no index column {key!r} (columns: {', '.join(c.key for c in self.columns)})")

    def row_of(self, file: int, feature: int) -> int | None:
        hits = np.nonzero((self.feature_ids == feature) & (self.file_of == file))[0]
        return int(hits[0]) if hits.size else None

    def order(self, key: str, descending: bool) -> np.ndarray:
        """Row positions sorted by a column (ties in the default order; rows without a value last either way);
        each order is computed once."""
        if key == "#":
            return self.default_order[::-1] if descending else self.default_order
        cached = self._orders.get((key, descending))
        if cached is not None:
            return cached
        col = self.column(key)
        base = self.default_order
        if isinstance(col.values, TextColumn):
            keys = col.values.sort_keys()[base]
            missing = keys == ""
        else:
            keys = col.values[base]
            missing = np.isnan(keys)
        present = np.nonzero(~missing)[0]
        if descending:  # a stable sort of the reversed keys keeps ties in the default order
            ranked = present[np.argsort(_reverse(keys[present]), kind="stable")]
        else:
            ranked = present[np.argsort(keys[present], kind="stable")]
        out = base[np.concatenate([ranked, np.nonzero(missing)[0]])]
        self._orders[(key, descending)] = out
        return out

    def matching(self, query: str) -> np.ndarray | None:
        """bool [rows] of the rows a filter keeps (None: no filter): a whole number matches that feature id; any
        text matches the top tokens and explanations that contain it (case-folded)."""
        q = query.replace(_SEPARATOR, "").strip().casefold()
        if not q:
            return None
        with self._lock:
            cached = self._filters.get(q)
            if cached is not None:
                self._filters.move_to_end(q)
                return cached
        hits = np.zeros(self.size, bool)
        if q.isdigit():
            hits |= self.feature_ids == int(q)
        for col in self.columns:
            if isinstance(col.values, TextColumn):
                hits |= col.values.matching(q)
        with self._lock:
            self._filters[q] = hits
            if len(self._filters) > _CACHED_FILTERS:
                self._filters.popitem(last=False)
        return hits

    def page(self, *, sort: str = "#", descending: bool = False, query: str = "", page: int = 0,
             size: int = 50) -> IndexPage:
        if len(query) > MAX_QUERY_CHARS:
            raise PersonamineError(f"a filter is at most {MAX_QUERY_CHARS} characters")
        if not 1 <= size <= MAX_PAGE_ROWS:
            raise PersonamineError(f"a page holds 1 to {MAX_PAGE_ROWS} rows")
        if page < 0:
            raise PersonamineError("pages count from 0")
        order = self.order(sort, descending)
        hits = self.matching(query)
        if hits is not None:
            order = order[hits[order]]
        positions = order[page * size:(page + 1) * size]
        return IndexPage(total=self.size, matched=int(order.size), page=page, size=size, sort=sort,
                         descending=descending, query=query, positions=positions,
                         rows=[self.values(int(r)) for r in positions])

    def values(self, row: int) -> list:
        out: list = []
        for col in self.columns:
            if isinstance(col.values, TextColumn):
                out.append(col.values[row])
            else:
                v = float(col.values[row])
                out.append(None if math.isnan(v) else v)
        return out

    def describe(self) -> list[dict]:
        return [{"key": c.key, "heading": c.heading, "kind": c.kind, "legend": c.legend} for c in self.columns]


def _reverse(keys: np.ndarray) -> np.ndarray:
    if keys.dtype.kind in "fiu":
        return -keys.astype(np.float64)
    # Text: ranks of the distinct strings, reversed.
    _, inverse = np.unique(keys, return_inverse=True)
    return -inverse


def build_index(files: list[tuple[MineResults, ResultsColumns]], discovery: DiscoveryResults | None,
                explanations: ExplanationResults | None) -> FeatureIndex:
    """The index of every feature of ``files`` (each ``read_results`` of one feature, and its columns)."""
    file_of = np.concatenate([np.full(c.feature_ids.size, i, np.int32) for i, (_, c) in enumerate(files)])
    feature_ids = np.concatenate([c.feature_ids for _, c in files])
    rows = feature_ids.size

    def stacked(name: str) -> np.ndarray:
        return np.concatenate([getattr(c, name).astype(np.float64) for _, c in files])

    columns = [Column("feature", "feature", NUMBER, "SAE feature id; click it to open the feature's page",
                      feature_ids.astype(np.float64))]
    if len(files) > 1:
        columns.append(Column("file", "file", NUMBER, "which of the served files (0 = the first given)",
                              file_of.astype(np.float64)))
    default_order = np.arange(rows)
    if discovery is not None:
        rank = {int(f): r for r, f in enumerate(discovery.feature_ids.tolist())}
        ranked = np.array([rank.get(int(f), -1) for f in feature_ids.tolist()], np.int64)
        nan = np.full(rows, np.nan)
        where = ranked >= 0

        def by_rank(values: np.ndarray) -> np.ndarray:
            out = nan.copy()
            out[where] = np.asarray(values, np.float64)[ranked[where]]
            return out

        columns += [
            Column("rank", "rank", NUMBER, "rank in the discovery file (1 = highest score); empty: the discovery "
                   "did not rank it", by_rank(np.arange(1, discovery.feature_ids.size + 1))),
            Column("disc_score", "disc. score", NUMBER, "discovery score: mean activation on the persona prompts "
                   "minus the mean on their matched controls (the raw persona mean when run without controls)",
                   by_rank(discovery.score)),
            Column("persona", "fires (persona)", SHARE, "share of the persona prompts on which the feature is "
                   "active (> 0)", by_rank(discovery.persona_firing))]
        if discovery.has_controls:
            columns.append(Column("control", "fires (control)", SHARE, "share of the control prompts on which it "
                                  "is active", by_rank(discovery.control_firing)))
        # Ranked features first, in rank order; the rest after them in file order.
        default_order = np.lexsort((np.arange(rows), np.where(where, ranked, np.iinfo(np.int64).max)))
    columns.append(Column("density", "density", SHARE, "share of the scored corpus tokens on which the feature is "
                          "active", stacked("density")))
    roles = list(dict.fromkeys(role for _, c in files for role in c.by_role))
    for role in roles:
        scored = sum(c.scored_by_role.get(role, 0) for _, c in files)
        values = np.concatenate([c.by_role[role] if role in c.by_role else np.full(c.feature_ids.size, np.nan)
                                 for _, c in files])
        columns.append(Column(f"density_{role}", f"density {role}", SHARE, f"share of the {scored:,} scored {role} "
                              "tokens on which the feature is active", values))
    columns += [Column("max", "max", NUMBER, "its largest activation on a scored corpus token", stacked("max")),
                Column("mean", "mean", NUMBER, "its mean activation over the tokens where it is active",
                       stacked("mean")),
                Column("top_token", "top token", TEXT, "the token with the highest activation in its best context",
                       TextColumn.build([t for _, c in files for t in c.top_token]))]
    if explanations is not None:
        row_of = {int(f): r for r, f in enumerate(explanations.feature_ids.tolist())}
        explained = np.array([row_of.get(int(f), -1) for f in feature_ids.tolist()], np.int64)
        has = explained >= 0
        for scorer in explanations.scorers:
            for metric in SHOWN_METRICS:
                values = np.full(rows, np.nan)
                values[has] = explanations.scores[scorer][metric][explained[has]]
                label, meaning = ("AUC", "area under the ROC curve") if metric == "auc" else (
                    "bal. acc.", "balanced accuracy")
                columns.append(Column(f"{scorer}_{metric}", f"{scorer} {label}", NUMBER, f"the explanation's "
                                      f"{scorer} score, its {meaning} on held-out activating and non-activating "
                                      "windows", values))
        texts = [explanations.explanations[r] if r >= 0 else "" for r in explained.tolist()]
        columns.append(Column("explanation", "explanation", TEXT, "the LLM's explanation of the feature",
                              TextColumn.build(texts)))
    return FeatureIndex(file_of=file_of, feature_ids=feature_ids, columns=columns,
                        default_order=np.asarray(default_order, np.int64))
