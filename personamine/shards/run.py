"""The one function that runs one shard of work (``run_shard``). The local and Ray backends both call it, each
with an engine it holds."""

from __future__ import annotations

import queue
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass

import numpy as np
import torch

from personamine.config import MineConfig
from personamine.corpus.conversations import ChatRenderer
from personamine.errors import PersonamineError
from personamine.merge.entries import Entries, SparseRows, WindowTable
from personamine.merge.negatives import NegativeBuffer
from personamine.merge.samples import INTERVAL_EDGES, KEY_NONE, N_INTERVALS, SampleBuffer, window_key
from personamine.merge.stats import FRAC_BITS, FRAC_ONE, HISTOGRAM_EDGES, N_BINS, FeatureStats
from personamine.merge.topk import TopKBuffer
from personamine.model.loading import LoadedModel, find_decoder_layers, load_model, neighbour_model
from personamine.model.prompts import sink_prefix_ids, special_token_ids
from personamine.roles import CONTENT_ROLES, ROLE, ROLES
from personamine.saes import Sae, load_checked, sae_spec
from personamine.saes.base import all_finite, overflow_hint
from personamine.shards.documents import ROW_BITS, UnitDocuments, UnitTally
from personamine.shards.negatives import NegativeGatherer
from personamine.shards.plan import Coverage, Shard
from personamine.shards.readouts import DirectionEncoder, DocumentScorer, DocumentScores, ReadoutSpec
from personamine.shards.windows import (
    Document,
    Window,
    WindowBatch,
    build_batch,
    capture_windows_at,
    cut_windows,
    pack_batches,
    scored_tokens,
)


@dataclass
class ReadoutResult:
    """One readout's part of a shard's result: its buffers and statistics."""

    buffer: TopKBuffer
    stats: FeatureStats
    samples: SampleBuffer | None = None  # None: a checkpoint from before interval samples existed
    negatives: NegativeBuffer | None = None  # None: a checkpoint from before non-activating examples existed
    documents: DocumentScores | None = None  # per-document scores, where the readout keeps them


@dataclass
class ShardResult:
    shard: Shard
    coverage: Coverage
    readouts: dict[str, ReadoutResult]  # in the run's readout order; the first is the primary
    doc_tokens: list[np.ndarray]  # per unit read, each row's token count (finds a max_tokens cut)
    seconds: float = 0.0

    @property
    def primary(self) -> ReadoutResult:
        return next(iter(self.readouts.values()))

    @property
    def buffer(self) -> TopKBuffer:
        return self.primary.buffer

    @property
    def stats(self) -> FeatureStats:
        return self.primary.stats

    @property
    def samples(self) -> SampleBuffer | None:
        return self.primary.samples

    @property
    def negatives(self) -> NegativeBuffer | None:
        return self.primary.negatives


def load_sae_for(config: MineConfig, loaded: LoadedModel, layer: int | None = None) -> Sae:
    """The SAE, memory-mapped, with the checks the driver made from metadata alone repeated on its weights."""
    return load_checked(sae_spec(config), hidden_size=loaded.hidden_size,
                        layer=loaded.layer if layer is None else layer, allow_uncalibrated=config.allow_uncalibrated)


def sae_readout(config: MineConfig, features: np.ndarray) -> ReadoutSpec:
    """The one readout of a classic run: ``config``'s SAE at its layer, mining ``features``."""
    return ReadoutSpec(f"L{config.layer}", int(config.layer), config, np.asarray(features, np.int64),
                       document_scores=config.document_scores)


class Readout:
    """A readout as a worker holds it: its layer's module and its encoder (an SAE's targeted encoder, or
    ``DirectionEncoder``)."""

    def __init__(self, spec: ReadoutSpec, loaded: LoadedModel) -> None:
        cfg = spec.config
        self.spec = spec
        self.name, self.layer = spec.name, spec.layer
        self.module = find_decoder_layers(loaded.model)[spec.layer]
        self.sae: Sae | None = None
        self.encoder: object
        if spec.directions:
            self.encoder = DirectionEncoder(spec.directions, center=cfg.center_directions, device=loaded.device)
        else:
            self.sae = load_sae_for(cfg, loaded, spec.layer)
            self.encoder = self.sae.encoder(spec.features, device=loaded.device, chunk_size=cfg.feature_chunk,
                                            exact_topk=cfg.sae_exact_topk)

    @property
    def is_directions(self) -> bool:
        return isinstance(self.encoder, DirectionEncoder)

    @property
    def n_scores(self) -> int:
        """Channels the per-document scores keep (0: none): each direction's signed projection, or every feature."""
        if self.is_directions:
            return self.encoder.n_directions
        return self.encoder.n_features if self.spec.document_scores else 0

    def describe(self, channel: int) -> str:
        """A channel as the user knows it: ``feature 1234`` or ``direction 'L10/last' (negative part)``."""
        if self.is_directions:
            names = self.spec.channel_names
            return f"direction {names[channel]!r}"
        return f"feature {int(self.encoder.features[channel])}"


class MiningEngine:
    """Everything a worker loads once: the model truncated after its deepest readout, each readout's encoder, the
    tokenizer's windowing."""

    def __init__(self, config: MineConfig, readouts: list[ReadoutSpec] | np.ndarray,
                 loaded: LoadedModel | None = None) -> None:
        if isinstance(readouts, np.ndarray):  # the classic run: one SAE, these features
            readouts = [sae_readout(config, readouts)]
        deepest = max(r.layer for r in readouts)
        if loaded is None and config.preflight_tokens > 0 and any(not r.directions for r in readouts):
            # One layer more than mining runs, for the pre-flight's look at layer + 1; the capture stops at the
            # deepest readout, so the extra layer only costs its weights (Llama-3.1-8B: ~0.4 GB in bf16).
            loaded = neighbour_model(config.replace(layer=deepest))
        self.config = config
        self.loaded = loaded or load_model(config.model, deepest, dtype=config.dtype, device=config.device,
                                           gguf_file=config.gguf_file, revision=config.revision)
        self.readouts = [Readout(spec, self.loaded) for spec in readouts]
        primary = self.readouts[0]
        self.sae, self.encoder = primary.sae, primary.encoder  # the classic run's one SAE (serve's inspection)
        tokenizer = self.loaded.tokenizer
        self.prefix = sink_prefix_ids(tokenizer, config.sink_prefix)
        self.special_ids = special_token_ids(tokenizer, self.prefix)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad if pad is not None else self.prefix[0])
        self.batch_tokens = config.batch_tokens or (32768 if self.loaded.device.type == "cuda" else 2048)
        self.documents = unit_documents(config, tokenizer, self.prefix)
        self.score_roles = score_role_codes(config)
        self.span = min(config.example_len, config.ctx_len)
        self.edges = torch.tensor(HISTOGRAM_EDGES[1:-1], dtype=torch.float32, device=self.loaded.device)

    @property
    def device(self) -> torch.device:
        return self.loaded.device

    def batches(self, shard: Shard, tallies: list[UnitTally], counters: dict[str, int]) -> Iterator[WindowBatch]:
        """The shard's batches, unit by unit: a batch never mixes units, so a unit's batches (and so its float
        rounding) are the same in any shard."""
        for unit in shard.units:
            tally = UnitTally(unit.index)
            tallies.append(tally)
            last = unit is shard.units[-1]
            windows = self.documents.windows(unit, tally, counters, row_limit=shard.row_limit if last else None,
                                             budget=shard.budget if last else None)
            yield from self.pack(windows)

    def document_batches(self, documents: Iterable[Document]) -> Iterator[WindowBatch]:
        """The batches of ``documents`` (already tokenized or rendered), windowed and packed as a unit's documents
        are: ``personamine serve``'s live inspection runs a typed text through mining's own path with this."""
        cfg = self.config
        yield from self.pack(w for doc in documents for w in cut_windows(doc, self.prefix, cfg.ctx_len, cfg.stride))

    def pack(self, windows: Iterable[Window]) -> Iterator[WindowBatch]:
        """Windows packed into batches of at most ``batch_tokens`` fed positions, laid out for the model."""
        cfg = self.config
        for group in pack_batches(windows, self.batch_tokens):
            yield build_batch(group, ctx_len=cfg.ctx_len, pad_id=self.pad_id, special_ids=self.special_ids,
                              device=self.device, score_roles=self.score_roles)

    def capture(self, batch: WindowBatch) -> tuple[torch.Tensor, ScoredTokens, torch.Tensor]:
        """A batch through the early-stopped model at the primary readout's layer: the residual stream [W, T, D],
        the tokens it scores (the sink prefix, special tokens, unscored roles and norm outliers left out) and the
        outlier mask [W, T]."""
        primary = self.readouts[0]
        hidden = capture_windows_at(self.loaded.model, {primary.layer: primary.module}, batch)[primary.layer]
        scored, outlier = scored_tokens(hidden, batch, self.config.norm_filter)
        return hidden, ScoredTokens(scored, batch.roles), outlier

    def capture_all(self, batch: WindowBatch) -> dict[int, torch.Tensor]:
        """Every readout's layer from one forward that stops after the deepest: layer -> [W, T, D]."""
        return capture_windows_at(self.loaded.model, {r.layer: r.module for r in self.readouts}, batch)


def score_role_codes(config: MineConfig) -> np.ndarray:
    return np.array([ROLE[r] for r in (config.score_roles or CONTENT_ROLES)], np.int64)


def unit_documents(config: MineConfig, tokenizer, prefix: list[int]) -> UnitDocuments:
    """How the run turns a unit's rows into windows: texts, or conversations rendered with the chat template."""
    renderer = None
    if config.messages_column:
        renderer = ChatRenderer(tokenizer, system_prompt=config.system_prompt, date_string=config.date_string,
                                generation_prompt=config.generation_prompt)
    return UnitDocuments(tokenizer=tokenizer, prefix=prefix, ctx_len=config.ctx_len,
                         column=config.messages_column or config.tokens_column or config.text_column,
                         skip_malformed=config.skip_malformed_rows, stride=config.stride, renderer=renderer,
                         pretokenized=config.tokens_column is not None)


def _prefetch(items: Iterator, depth: int = 2) -> Iterator:
    """Produce items on a thread so tokenization overlaps the forward pass (both release the GIL).

    If the consumer stops early (an error in the shard), the producer notices and exits instead of blocking.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as exc:  # re-raised in the consumer with its traceback
            put(exc)
            return
        put(done)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


class _Pending:
    """Entries waiting to be selected into a buffer. Selecting costs O(buffer + pending), so selecting only once
    pending is as large as the buffer keeps it amortised; the device-side thresholds lag until then, which lets more
    entries through but never changes what is selected. Selection waits for the end of a batch, so all of a batch's
    feature chunks arrive together and its windows enter the buffer's table once."""

    def __init__(self) -> None:
        self.parts: list[Entries] = []
        self.n = 0

    def add(self, entries: Entries) -> None:
        self.parts.append(entries)
        self.n += len(entries)

    def due(self, buffer_size: int) -> bool:
        return self.n >= max(buffer_size, 4096)

    def take(self) -> Entries | None:
        parts, self.parts, self.n = self.parts, [], 0
        return Entries.concat(parts) if parts else None


class _Accumulator:
    """Per-shard buffers, interval samples and stats, updated batch by batch on the device."""

    def __init__(self, engine: MiningEngine, readout: Readout) -> None:
        cfg = engine.config
        n = readout.encoder.n_features
        dev = engine.device
        self.span, self.before_peak = engine.span, engine.span - 1 - engine.span // 4
        self.buffer = TopKBuffer.empty(n, cfg.top_k, self.span, cfg.dedupe)
        self.floor = torch.zeros(n, dtype=torch.float32, device=dev)
        self.active = torch.zeros(n, dtype=torch.int64, device=dev)
        self.sum_whole = torch.zeros(n, dtype=torch.int64, device=dev)  # exact sums: see merge/stats.py
        self.sum_frac = torch.zeros(n, dtype=torch.int64, device=dev)
        self.max = torch.zeros(n, dtype=torch.float32, device=dev)
        self.hist = torch.zeros(n * N_BINS, dtype=torch.int64, device=dev)
        self.role_active = torch.zeros(n * len(ROLES), dtype=torch.int64, device=dev)
        self.edges = engine.edges
        self.samples = SampleBuffer.empty(self.span, cfg.samples_per_interval, cfg.dedupe)
        # Per (feature, interval) cell, the largest key a window may have to still enter it: windows that cannot
        # are rejected on the device, so after the first few batches almost nothing is gathered for sampling.
        self.sample_limit = torch.full((n * N_INTERVALS,), KEY_NONE, dtype=torch.int64, device=dev)
        self.interval_edges = torch.tensor(INTERVAL_EDGES[1:-1], dtype=torch.float32, device=dev)
        self.top_pending, self.sample_pending = _Pending(), _Pending()
        self.negatives = NegativeBuffer.empty(self.span, cfg.negatives_per_feature, cfg.dedupe)
        self.negative_gatherer = NegativeGatherer(n, cfg.negatives_per_feature, cfg.dedupe, dev, self.span,
                                                  self.before_peak)
        self.negative_pending = _Pending()

    def add(self, windows: WindowTable, tokens: ScoredTokens, start: int, end: int, acts: torch.Tensor) -> None:
        """acts: [P, F_chunk], one row per scored token (nonnegative: thresholded ReLU)."""
        scores = tokens.window_max(acts)  # [W, F_chunk]
        self.max[start:end] = torch.maximum(self.max[start:end], scores.amax(dim=0))
        # Everything below works from the nonzero entries: an SAE fires on a few dozen of its features per token.
        p, f = (acts > 0).nonzero(as_tuple=True)
        nz = _Nonzeros(tokens.window[p], tokens.position[p], f, acts[p, f])
        if f.numel():
            f = f + start
            self.active.index_add_(0, f, torch.ones_like(f))
            whole = torch.floor(nz.value)
            self.sum_whole.index_add_(0, f, whole.long())
            self.sum_frac.index_add_(0, f, ((nz.value - whole).double() * FRAC_ONE).round_().long())
            bins = torch.bucketize(nz.value, self.edges, right=True)
            self.hist.index_add_(0, f * N_BINS + bins, torch.ones_like(bins))
            self.role_active.index_add_(0, f * len(ROLES) + tokens.role[p], torch.ones_like(f))
        found = self._gather(windows, nz, start, scores, (scores > 0) & (scores >= self.floor[start:end]))
        if found is not None:
            self.top_pending.add(found)
        if self.samples.per_interval > 0:
            self._add_samples(windows, nz, start, end, scores)
        if self.negatives.per_feature > 0 and (
                found := self.negative_gatherer.gather(windows, tokens.window, tokens.position, start, end,
                                                       scores)) is not None:
            self.negative_pending.add(found)

    def _add_samples(self, windows: WindowTable, nz: _Nonzeros, start: int, end: int, scores: torch.Tensor) -> None:
        dev = scores.device
        key = torch.from_numpy(window_key(windows.document, windows.window_start)).to(dev)  # [B]
        interval = torch.bucketize(scores, self.interval_edges, right=True)  # by the window's max, [B, F_chunk]
        cell = torch.arange(start, end, device=dev)[None, :] * N_INTERVALS + interval
        found = self._gather(windows, nz, start, scores, (scores > 0) & (key[:, None] <= self.sample_limit[cell]))
        if found is not None:
            self.sample_pending.add(found)

    def end_batch(self) -> None:
        # A batch adds at most one fraction (< 2**37) per scored token and feature: under 2**26 tokens per batch,
        # the int64 limb cannot overflow before this carry.
        self.sum_whole += self.sum_frac >> FRAC_BITS
        self.sum_frac &= FRAC_ONE - 1
        if self.top_pending.due(len(self.buffer)):
            self._flush_top()
        if self.sample_pending.due(len(self.samples)):
            self._flush_samples()
        if self.negative_pending.due(len(self.negatives)):
            self._flush_negatives()

    def _flush_top(self) -> None:
        if (new := self.top_pending.take()) is not None:
            self.floor = torch.from_numpy(self.buffer.update(new).floor()).to(self.floor.device)

    def _flush_samples(self) -> None:
        if (new := self.sample_pending.take()) is not None:
            limit = self.samples.update(new).thresholds(self.active.numel()).reshape(-1)
            self.sample_limit = torch.from_numpy(limit).to(self.sample_limit.device)

    def _flush_negatives(self) -> None:
        if (new := self.negative_pending.take()) is not None:
            self.negative_gatherer.update_limits(self.negatives.update(new))

    def non_activating(self) -> NegativeBuffer:
        self._flush_negatives()
        return self.negatives

    def top(self) -> TopKBuffer:
        self._flush_top()
        return self.buffer

    def interval_samples(self) -> SampleBuffer:
        self._flush_samples()
        return self.samples

    def stats(self, counters: dict[str, int], role_seen: np.ndarray, role_scored: np.ndarray) -> FeatureStats:
        n = self.active.numel()
        return FeatureStats(
            active_tokens=self.active.cpu().numpy(), sum_whole=self.sum_whole.cpu().numpy(),
            sum_frac=self.sum_frac.cpu().numpy(),
            max=self.max.cpu().numpy(), histogram=self.hist.view(n, N_BINS).cpu().numpy(), counters=counters,
            role_active=self.role_active.view(n, len(ROLES)).cpu().numpy(), role_seen=role_seen,
            role_scored=role_scored,
        )

    def _gather(self, windows: WindowTable, nz: _Nonzeros, start: int, scores: torch.Tensor,
                hit: torch.Tensor) -> Entries | None:
        """Copy the selected (window, feature) pairs to the host: their scores and per-token activations, picked from
        the chunk's nonzeros (a few per token), never from a dense [pairs, T] block; each cut to its display span
        when windows are longer than ``example_len``."""
        b_idx, f_idx = hit.nonzero(as_tuple=True)
        if b_idx.numel() == 0:
            return None
        entry_of = torch.full(hit.shape, -1, dtype=torch.int64, device=hit.device)
        entry_of[b_idx, f_idx] = torch.arange(b_idx.numel(), device=hit.device)
        entry = entry_of[nz.window, nz.feature]
        mine = (entry >= 0).nonzero(as_tuple=True)[0]
        entry, position, values = entry[mine], nz.position[mine], nz.value[mine]
        order = torch.argsort(entry * windows.token_ids.shape[1] + position)  # by entry, then position
        entry, position, values = entry[order].cpu().numpy(), position[order].cpu().numpy(), values[order].float()
        values = values.cpu().numpy()
        window = b_idx.cpu().numpy().astype(np.int64)
        n = window.size
        table = windows
        if self.span < windows.token_ids.shape[1]:
            window, table, entry, position, values = _spans(windows, window, entry, position, values, self.span,
                                                            self.before_peak)
        return Entries(feature=f_idx.cpu().numpy().astype(np.int64) + start,
                       score=scores[b_idx, f_idx].cpu().numpy().astype(np.float32), window=window,
                       acts=SparseRows.from_coo(n, entry, position, values), windows=table)


def _spans(windows: WindowTable, window: np.ndarray, entry: np.ndarray, position: np.ndarray, values: np.ndarray,
           span: int, before: int) -> tuple[np.ndarray, WindowTable, np.ndarray, np.ndarray, np.ndarray]:
    """Cut each entry's window to the ``span`` tokens around its peak (the first position of its largest value),
    with ``before`` tokens before the peak where the window allows, and keep the activations inside the span."""
    first = np.lexsort((position, -values, entry))  # each entry's peak comes first in its group
    heads = np.ones(first.size, bool)
    heads[1:] = entry[first][1:] != entry[first][:-1]
    peak = np.zeros(window.size, np.int64)
    peak[entry[first][heads]] = position[first][heads]
    rows, table, start = windows.around(window, peak, span, before)
    offset = position - start[entry]
    keep = (offset >= 0) & (offset < span)
    return rows, table, entry[keep], offset[keep], values[keep]


class ScoredTokens:
    """Where a batch's scored tokens are: the encoder sees only them, [P, D], not the padded [W, T] view."""

    def __init__(self, scored: torch.Tensor, roles: torch.Tensor) -> None:
        self.n_windows = scored.shape[0]
        self.window, self.position = scored.nonzero(as_tuple=True)  # row-major, as hidden[scored] would be
        self.role = roles[self.window, self.position]

    def window_max(self, acts: torch.Tensor) -> torch.Tensor:
        """[W, F_chunk]: each window's max over its scored tokens, 0 if none (acts are nonnegative)."""
        out = torch.zeros(self.n_windows, acts.shape[1], dtype=acts.dtype, device=acts.device)
        with warnings.catch_warnings():  # index_reduce_ warns that it is "beta"; it is torch's one fused segment max
            warnings.simplefilter("ignore", UserWarning)
            return out.index_reduce_(0, self.window, acts, "amax")


@dataclass
class _Nonzeros:
    """A chunk's nonzero activations: window, position in it, feature (within the chunk), value."""

    window: torch.Tensor
    position: torch.Tensor
    feature: torch.Tensor
    value: torch.Tensor


def _nonfinite(engine: MiningEngine, readout: Readout, shard: Shard, batch: WindowBatch, tokens: ScoredTokens,
               start: int, acts: torch.Tensor) -> int:
    """A block of activations holds NaN or infinity: the error naming the first one's feature (or direction),
    document and token, or, with ``allow_nonfinite``, the number of such values, read as 0 from here on."""
    bad = ~torch.isfinite(acts)
    if engine.config.allow_nonfinite:
        n = int(bad.sum())
        acts.masked_fill_(bad, 0.0)
        return n
    p, f = (int(i) for i in bad.nonzero()[0])
    value = float(acts[p, f])
    w, position = int(tokens.window[p]), int(tokens.position[p])
    table = batch.windows
    uid = int(table.document[w])
    unit, row = uid >> ROW_BITS, uid & ((1 << ROW_BITS) - 1)
    url = next((u.url for u in shard.units if u.index == unit), "?")
    n_prefix = int((table.roles[w, :position] == ROLE["prefix"]).sum())
    token = int(table.window_start[w]) + position - n_prefix
    token_id = int(table.token_ids[w, position])
    text = engine.loaded.tokenizer.decode([token_id])
    hint = overflow_hint(engine.loaded.model.dtype)
    what = "the model's activations or the SAE's encoding" if readout.sae is not None else "the model's activations"
    raise PersonamineError(
        f"{readout.describe(start + f)} is {value} at layer {readout.layer} on corpus file {url!r}, unit {unit} row "
        f"{row}, token {token} ({text!r}, id {token_id}); {int(bad.sum()):,} of this batch's {bad.numel():,} "
        f"activations are not finite: {what} overflowed{hint}. Pass allow_nonfinite (--allow-nonfinite) to read "
        "them as 0 and count them")


@dataclass
class _LayerTokens:
    """A batch's scored tokens at one layer, found once however many readouts read that layer."""

    tokens: ScoredTokens
    x: torch.Tensor  # [P, D] their residuals
    n_outliers: int
    role_counts: torch.Tensor  # [R] scored tokens per role

    @classmethod
    def of(cls, hidden: torch.Tensor, batch: WindowBatch, norm_filter: float) -> _LayerTokens:
        scored, outlier = scored_tokens(hidden, batch, norm_filter)
        tokens = ScoredTokens(scored, batch.roles)
        return cls(tokens, hidden[tokens.window, tokens.position], int(outlier.sum()),
                   torch.bincount(tokens.role, minlength=len(ROLES)))


class _ReadoutState:
    """What one readout accumulates over a shard: its buffers, its own counters and, where kept, the per-document
    scores."""

    def __init__(self, engine: MiningEngine, readout: Readout) -> None:
        self.readout = readout
        self.acc = _Accumulator(engine, readout)
        self.counters = {"tokens_scored": 0, "tokens_norm_filtered": 0, "activations_nonfinite": 0}
        self.role_scored = torch.zeros(len(ROLES), dtype=torch.int64, device=engine.device)
        self.scorer = DocumentScorer(readout.n_scores) if readout.n_scores else None

    def add(self, engine: MiningEngine, shard: Shard, batch: WindowBatch, at: _LayerTokens) -> int:
        """The batch at this readout's layer; returns the tokens it scored."""
        readout = self.readout
        tokens, x = at.tokens, at.x
        self.counters["tokens_norm_filtered"] += at.n_outliers
        n_scored = tokens.window.numel()
        self.counters["tokens_scored"] += n_scored
        self.role_scored += at.role_counts
        document = turn = None
        if self.scorer is not None:
            document = torch.from_numpy(batch.windows.document)[tokens.window.cpu()]
            turn = None if batch.turns is None else batch.turns[tokens.window, tokens.position]
        if readout.is_directions:
            projection = readout.encoder.project(x)
            if not all_finite(projection):
                self.counters["activations_nonfinite"] += _nonfinite(engine, readout, shard, batch, tokens, 0,
                                                                     projection)
            if self.scorer is not None:
                self.scorer.add(document, turn, projection)
            blocks = [(0, readout.encoder.n_features, readout.encoder.split(projection))]
        else:
            blocks = readout.encoder.iter_encode(x)
        for start, end, acts in blocks:
            if not all_finite(acts):
                self.counters["activations_nonfinite"] += _nonfinite(engine, readout, shard, batch, tokens, start,
                                                                     acts)
            if self.scorer is not None and not readout.is_directions:
                self.scorer.add(document, turn, acts, start=start)
            self.acc.add(batch.windows, tokens, start, end, acts)
            del acts  # before the next chunk is computed
        self.acc.end_batch()
        return n_scored

    def result(self, shared: dict[str, int], role_seen: np.ndarray) -> ReadoutResult:
        counters = {**shared, **self.counters}
        stats = self.acc.stats(counters, role_seen, self.role_scored.cpu().numpy())
        return ReadoutResult(self.acc.top(), stats, self.acc.interval_samples(), self.acc.non_activating(),
                             None if self.scorer is None else self.scorer.result())


@torch.inference_mode()
def run_shard(engine: MiningEngine, shard: Shard,
              on_batch: Callable[[int, int, int], None] | None = None) -> ShardResult:
    """Stream one shard's units through one early-stopped forward per batch and every readout's encoder; return
    each readout's top-k buffers, samples, stats and per-document scores.

    ``on_batch(fed, content, scored)`` gets each batch's fed positions, document tokens and scored tokens (the
    primary readout's)."""
    import time

    began = time.perf_counter()
    counters = FeatureStats.empty(0).counters
    states = [_ReadoutState(engine, r) for r in engine.readouts]
    tallies: list[UnitTally] = []
    n_roles = len(ROLES)
    role_seen = torch.zeros(n_roles, dtype=torch.int64, device=engine.device)  # per role: tokens the run could score
    with closing(_prefetch(engine.batches(shard, tallies, counters))) as batches:
        for batch in batches:
            hiddens = engine.capture_all(batch)
            counters["n_windows"] += len(batch.windows)
            fed = int(batch.real.sum())
            counters["tokens_fed"] += fed
            counters["tokens_special"] += int(batch.special.sum())
            role_seen += torch.bincount(batch.roles[batch.region & ~batch.special], minlength=n_roles)
            at = {layer: _LayerTokens.of(hidden, batch, engine.config.norm_filter) for layer, hidden in hiddens.items()}
            del hiddens
            scored = [state.add(engine, shard, batch, at[state.readout.layer]) for state in states]
            del at
            if on_batch is not None:
                on_batch(fed, int(batch.region.sum()), scored[0])
    coverage = Coverage([t.done() for t in tallies], reached_budget=any(t.reached_budget for t in tallies))
    seen = role_seen.cpu().numpy()
    return ShardResult(shard, coverage, {s.readout.name: s.result(counters, seen) for s in states},
                       [np.asarray(t.doc_tokens, np.int32) for t in tallies], time.perf_counter() - began)
