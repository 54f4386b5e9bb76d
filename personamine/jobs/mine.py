"""`personamine.mine(...)`: plan the corpus's units, run shards of work on a backend, checkpoint each, merge,
write one HDF5 file."""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from personamine.atomic import check_writable
from personamine.cluster import open_backend
from personamine.config import MineConfig, resolve_config
from personamine.corpus import CorpusSpec, Manifest, check_column_type, open_manifest, resolve_corpus
from personamine.discovery.select import resolve_features
from personamine.errors import PersonamineError
from personamine.files.directions import NamedDirection, load_directions
from personamine.files.mine import write_index, write_results
from personamine.jobs.workdir import WorkDir
from personamine.merge.documents import DocumentScores
from personamine.merge.entries import TOKEN_FILL
from personamine.merge.stats import FeatureStats
from personamine.model.loading import load_config, load_tokenizer, pick_device
from personamine.model.prompts import sink_prefix_ids
from personamine.roles import CONTENT_ROLES, ROLE
from personamine.saes import SaeMeta, load_sae, prepare_sae, sae_spec
from personamine.saes.logit_lens import LogitLens, logit_lens
from personamine.shards.documents import global_documents
from personamine.shards.plan import Schedule, Shard
from personamine.shards.preflight import PREFLIGHT_MIN_TOKENS
from personamine.shards.readouts import ReadoutSpec
from personamine.shards.run import ReadoutResult, ShardResult
from personamine.version import __version__


def corpus_spec(config: MineConfig) -> CorpusSpec:
    column = config.messages_column or config.tokens_column or config.text_column
    return CorpusSpec(config.corpus, config.corpus_config, config.split, column, config.corpus_revision,
                      config.unit_bytes)


class Plan:
    """Everything checked before any heavy work starts, so bad input fails fast and writes nothing. It reads
    metadata only: model and SAE configs, the tokenizer, the corpus's file footers, the directions; never the
    corpus's rows."""

    def __init__(self, config: MineConfig) -> None:
        check_writable(config.output, "output")
        if not config.sae and not config.directions:
            raise PersonamineError("nothing to mine: give an SAE (sae) or directions (directions), or both")
        if config.layers and not config.sae:
            raise PersonamineError("layers picks the SAE release's layers: give the release (sae)")
        model_config = load_config(config.model, config.gguf_file, config.revision)
        hidden_size, num_layers = int(model_config.hidden_size), int(model_config.num_hidden_layers)
        self.readouts: list[ReadoutSpec] = []
        self.saes: dict[str, SaeMeta] = {}
        if config.sae:
            for layer in config.layers or [config.layer]:
                single = config.replace(layer=layer, layers=[], directions=None, direction_names=None,
                                        direction_layer=None, center_directions=False)
                # Metadata only: the driver never reads the SAE's weights (the engines load and check them).
                meta, declared = prepare_sae(sae_spec(single), hidden_size=hidden_size, num_layers=num_layers,
                                             model=config.model, allow_uncalibrated=config.allow_uncalibrated,
                                             announce=config.progress)
                # The layer the SAE declares becomes the config's, so the engines and the resume fingerprint see it.
                single = single.replace(layer=declared) if single.layer != declared else single
                spec = ReadoutSpec(f"L{declared}", declared, single, resolve_features(single, meta.d_sae),
                                   document_scores=config.document_scores)
                self.readouts.append(spec)
                self.saes[spec.name] = meta
            if not config.layers and config.layer != self.readouts[0].layer:
                config = config.replace(layer=self.readouts[0].layer)
        if config.directions:
            self.readouts += direction_readouts(config, hidden_size, num_layers)
        names = [r.name for r in self.readouts]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise PersonamineError(f"two readouts are named {twice[0]!r} (one layer read twice): drop one")
        self.config = config
        self.tokenizer = load_tokenizer(config.model, config.gguf_file, config.revision)
        self.prefix = sink_prefix_ids(self.tokenizer, config.sink_prefix)
        check_writable(config.resolved_work_dir(), "work dir", directory=True)
        self.corpus = resolve_corpus(corpus_spec(config))  # the files; their units are planned once workers start

    @property
    def features(self) -> np.ndarray:
        """The primary readout's features (the classic run's one SAE's)."""
        return self.readouts[0].features

    def output_path(self, readout: ReadoutSpec) -> Path:
        """Where a readout's file goes: ``output`` itself in a run with one readout; else ``output``'s stem plus
        ``.<readout>.h5`` beside it (``output`` then holds the index)."""
        out = Path(self.config.output)
        if len(self.readouts) == 1:
            return out
        return out.with_name(f"{out.stem}.{readout.name}.h5")


def direction_readouts(config: MineConfig, hidden_size: int, num_layers: int) -> list[ReadoutSpec]:
    """One readout per layer the directions are read at: the layer a direction's file records, else
    ``direction_layer``, else the run's ``layer``."""
    found = load_directions(config.directions, names=config.direction_names, hidden_size=hidden_size)
    by_layer: dict[int, list[NamedDirection]] = {}
    for d in found:
        layer = d.layer if d.layer is not None else (
            config.direction_layer if config.direction_layer is not None else config.layer)
        if layer is None:
            raise PersonamineError(f"directions file {config.directions!r} does not say at which layer {d.name!r} "
                                   "is read: pass direction_layer (--direction-layer)")
        if not 0 <= layer < num_layers:
            raise PersonamineError(f"direction {d.name!r} is read at layer {layer}, but {config.model!r} has "
                                   f"{num_layers} layers (0-{num_layers - 1})")
        by_layer.setdefault(layer, []).append(d)
    return [ReadoutSpec(f"directions-L{layer}", layer, config.replace(layer=layer),
                        np.arange(2 * len(group), dtype=np.int64), tuple(group), document_scores=True)
            for layer, group in sorted(by_layer.items())]


def _vocab(tokenizer, token_ids: np.ndarray) -> dict[int, tuple[str, str]]:
    ids = np.unique(token_ids)
    ids = ids[ids != TOKEN_FILL].tolist()
    pieces = tokenizer.convert_ids_to_tokens(ids)
    return {i: (str(p), tokenizer.decode([i])) for i, p in zip(ids, pieces, strict=True)}


def reduce_results(parts: Iterable[list[ReadoutResult]]) -> list[ReadoutResult]:
    """Merge shards' results, readout by readout. Every merge is exact, so the order does not matter; a generator
    keeps one shard's buffers in memory at a time. Per-document scores (a row per document, disjoint between shards)
    are gathered and joined once at the end, not re-sorted at every merge. Interval samples, non-activating examples
    and per-document scores are None when any shard has none (a checkpoint from before they existed)."""

    def both(a, b):
        return a.merge(b) if a is not None and b is not None else None

    stream = iter(parts)
    merged = next(stream)
    documents = [[part.documents] for part in merged]
    for shard in stream:
        merged = [ReadoutResult(a.buffer.merge(b.buffer), a.stats.merge(b.stats), both(a.samples, b.samples),
                                both(a.negatives, b.negatives)) for a, b in zip(merged, shard, strict=True)]
        for gathered, part in zip(documents, shard, strict=True):
            gathered.append(part.documents)
    for part, gathered in zip(merged, documents, strict=True):
        part.documents = None if any(d is None for d in gathered) else DocumentScores.concat(gathered)
    return merged


def _logit_lens(cfg: MineConfig, plan: Plan, readout: ReadoutSpec) -> LogitLens | None:
    """An SAE readout's features' logit lens, or None with a warning: a finished mining run must not fail on it."""
    if readout.directions:
        return None
    if cfg.gguf_file:
        warnings.warn("logit lens skipped: it reads safetensors weights and the model is a GGUF file", stacklevel=4)
        return None
    try:
        return logit_lens(cfg.model, load_sae(sae_spec(readout.config)), readout.features,
                          n_vocab=len(plan.tokenizer), revision=cfg.revision, device=pick_device(cfg.device))
    except PersonamineError as exc:
        warnings.warn(f"logit lens skipped: {exc}", stacklevel=4)
        return None


def mine(config: MineConfig | str | Path | None = None, /, *,
         on_shard_done: Callable[[ShardResult], None] | None = None,
         on_piece_done: Callable[[ShardResult], None] | None = None, **overrides: Any) -> Path:
    """Mine a corpus for the top-k contexts of SAE features; return the path of the HDF5 file.

    ``config`` is a :class:`MineConfig`, a path to a TOML job file, or None (then keyword arguments are the
    config's fields). Keyword arguments override fields of a given config. ``on_shard_done`` is called with each
    shard's result as it finishes (after it is checkpointed); ``on_piece_done`` is its old name, deprecated.
    """
    if on_piece_done is not None:
        warnings.warn("on_piece_done is deprecated: use on_shard_done (a shard is what one actor call mines)",
                      DeprecationWarning, stacklevel=2)
        on_shard_done = on_shard_done or on_piece_done
    if isinstance(config, (str, Path)):
        cfg = MineConfig.from_toml(config, **overrides)
    else:
        cfg = resolve_config(MineConfig, config, overrides, "mine")
    plan = Plan(cfg)
    cfg = plan.config
    work = WorkDir(cfg)
    work.lock()  # one run per work dir: a second one stops here, having touched nothing
    try:
        return _mine(cfg, plan, work, on_shard_done)
    except BaseException:
        work.discard_if_empty()  # a failed start leaves nothing that blocks a rerun
        raise
    finally:
        work.unlock()


def _mine(cfg: MineConfig, plan: Plan, work: WorkDir,
          on_shard_done: Callable[[ShardResult], None] | None) -> Path:
    backend = open_backend(cfg, plan.readouts)
    progress: _Progress | None = None
    backend.start()  # Ray actors load the model while the corpus's footers are read
    try:
        manifest = open_manifest(corpus_spec(cfg), plan.corpus)
        check_column_type(manifest, "messages" if cfg.messages_column else "tokens" if cfg.tokens_column else "text")
        checked = _preflight(cfg, backend, manifest)
        work.open(manifest)
        progress = _Progress(cfg, manifest)
        merged, names, offsets = work.run_schedule(
            manifest, backend, progress, n_shards=cfg.n_shards, max_documents=cfg.max_documents,
            max_tokens=cfg.max_tokens, save=work.save, load=work.load, combine=reduce_results,
            on_shard_done=on_shard_done)
    finally:
        backend.close()
        if progress is not None:
            progress.close()
    stats = merged[0].stats
    try:
        _check_rows(cfg, stats)
    except PersonamineError:
        work.remove()  # its checkpoints hold nothing mined: a rerun after the fix must not find them
        raise
    _check_roles(cfg, stats)
    nonfinite = sum(part.stats.counters["activations_nonfinite"] for part in merged)
    if nonfinite:
        warnings.warn(f"{nonfinite:,} activations were NaN or infinite and were read as 0 (allow_nonfinite); "
                      "counted in the output's activations_nonfinite", stacklevel=3)
    if plan.saes and not checked and cfg.preflight_tokens:
        warnings.warn(f"pre-flight skipped: the corpus's first units had fewer than {PREFLIGHT_MIN_TOKENS} scored "
                      "tokens to check the SAE on",
                      stacklevel=3)
    paths = {}
    for readout, part in zip(plan.readouts, merged, strict=True):
        paths[readout.name] = _write_readout(cfg, plan, readout, part, manifest, offsets, len(names),
                                             checked.get(readout.name))
    path = Path(cfg.output) if len(plan.readouts) == 1 else write_index(
        cfg.output, {name: p.name for name, p in paths.items()},
        {"model": cfg.model, "corpus": cfg.corpus, "config": json.dumps(cfg.to_dict(), sort_keys=True),
         "personamine_version": __version__})
    if not cfg.keep_work_dir:
        work.remove()
    return path


def _write_readout(cfg: MineConfig, plan: Plan, readout: ReadoutSpec, part: ReadoutResult, manifest: Manifest,
                   offsets: np.ndarray, n_shards: int, checked) -> Path:
    """One readout's file, as a run of that readout alone writes it."""
    for buffer in (part.buffer, part.samples, part.negatives):
        if buffer is not None:
            buffer.entries.windows.document = global_documents(buffer.entries.windows.document, offsets)
    documents = part.documents
    if documents is not None:
        documents = DocumentScores(**{**documents.arrays(), "document": global_documents(documents.document, offsets),
                                      "turn_document": global_documents(documents.turn_document, offsets)})
    lens = _logit_lens(cfg, plan, readout)
    shown = [part.buffer.entries.windows.token_ids.ravel()] + (
        [part.samples.entries.windows.token_ids.ravel()] if part.samples is not None else []) + (
        [part.negatives.entries.windows.token_ids.ravel()] if part.negatives is not None else []) + (
        [lens.promoted_ids.ravel(), lens.suppressed_ids.ravel()] if lens is not None else [])
    attrs = {**output_attrs(readout, plan, manifest, part.stats, n_shards), **(checked.attrs() if checked else {})}
    return write_results(plan.output_path(readout), feature_ids=readout.features, buffer=part.buffer,
                         stats=part.stats, attrs=attrs, vocab=_vocab(plan.tokenizer, np.concatenate(shown)),
                         samples=part.samples, logit_lens=lens, negatives=part.negatives, documents=documents,
                         directions=list(readout.directions) or None,
                         center_directions=readout.config.center_directions)


def _check_roles(cfg: MineConfig, stats: FeatureStats) -> None:
    """score_roles naming a role no token of the corpus had is almost always a mistake (a text corpus mined with
    score_roles assistant, or a conversation corpus read as text): say which roles the corpus does have."""
    if not cfg.score_roles or stats.role_seen is None:
        return
    missing = [r for r in cfg.score_roles if stats.role_seen[ROLE[r]] == 0]
    if missing:
        found = [f"{r} ({int(stats.role_seen[ROLE[r]]):,} tokens)" for r in CONTENT_ROLES if stats.role_seen[ROLE[r]]]
        none = " (nothing was scored)" if len(missing) == len(cfg.score_roles) else ""
        warnings.warn(f"score_roles names {', '.join(missing)}, which no token of the corpus has{none}; the corpus "
                      f"has {', '.join(found) or 'no scorable tokens'}", stacklevel=4)


def _check_rows(cfg: MineConfig, stats: FeatureStats) -> None:
    counters = stats.counters
    bad = counters["rows_skipped"] + counters["rows_malformed"]
    if counters["n_documents"] == 0:
        raise PersonamineError(f"corpus {cfg.corpus!r} has no documents")
    column = cfg.messages_column or cfg.tokens_column or cfg.text_column
    wrong = counters["rows_wrong_type"]
    empty = counters["rows_skipped"] - wrong
    typed = f", not a string in {wrong:,}" if wrong else ""
    if bad == counters["n_documents"]:
        raise PersonamineError(
            f"every one of the {counters['n_documents']:,} rows of corpus {cfg.corpus!r} was skipped (column "
            f"{column!r} null or empty in {empty:,}{typed}, malformed in {counters['rows_malformed']:,}): nothing to "
            "mine")
    if bad:
        typed = f", {wrong:,} not a string" if wrong else ""
        warnings.warn(f"{bad:,} of {counters['n_documents']:,} rows skipped ({empty:,} with nothing in {column!r}"
                      f"{typed}, {counters['rows_malformed']:,} malformed); counted in the output's rows_skipped / "
                      "rows_malformed", stacklevel=4)


def output_attrs(readout: ReadoutSpec, plan: Plan, manifest: Manifest, stats: FeatureStats,
                 n_shards: int) -> dict[str, Any]:
    cfg = readout.config
    sae = {**plan.saes[readout.name].attrs(), "sae": sae_spec(cfg).label} if readout.name in plan.saes else {
        "sae": "", "readout_kind": "directions", "directions_file": str(cfg.directions)}
    return {
        **sae, "readout": readout.name, "model": cfg.model, "layer": readout.layer,
        "ctx_len": cfg.ctx_len, "top_k": cfg.top_k, "corpus": cfg.corpus,
        "corpus_revision": manifest.revision or "",
        "corpus_files": json.dumps([f.url for f in manifest.files]), "n_units": len(manifest),
        "tokenizer": cfg.model, "n_documents": stats.counters["n_documents"],
        "n_tokens_scored": stats.counters["tokens_scored"], "rows_skipped": stats.counters["rows_skipped"],
        "rows_malformed": stats.counters["rows_malformed"], "rows_wrong_type": stats.counters["rows_wrong_type"],
        "tokens_norm_filtered": stats.counters["tokens_norm_filtered"],
        "tokens_special": stats.counters["tokens_special"], "n_windows": stats.counters["n_windows"],
        "activations_nonfinite": stats.counters["activations_nonfinite"],
        "documents_chunked": stats.counters["documents_chunked"],
        "sink_prefix": np.asarray(plan.prefix, np.int64), "n_shards": n_shards,
        "config": json.dumps(cfg.to_dict(), sort_keys=True), "personamine_version": __version__,
    }


def _preflight(cfg: MineConfig, backend, manifest: Manifest) -> dict:
    """Each SAE readout's pre-flight quality check on the corpus's first scored tokens (by the backend's engine: in a
    Ray run, the first actor that is up), by readout name (empty when switched off, or when nothing was scored:
    mining then says why); refuses before anything is mined."""
    if cfg.preflight_tokens == 0:
        return {}

    first = [Shard((manifest.ref(i),)) for i in range(min(len(manifest), 64))]
    results = backend.preflight(first, cfg.preflight_tokens, cfg.min_fve)
    for name, result in results.items():
        if cfg.progress:
            prefix = f"{name}: " if len(results) > 1 else ""
            print(f"personamine: {prefix}{result.summary()}", file=sys.stderr)
        result.check(cfg.allow_low_fve)
    return results


class _Progress:
    """One bar for the mining phase, with a total (so a percentage and an ETA): the token budget with
    ``max_tokens``, else the corpus's units; the tokens scored so far, and a closing line with the counts the
    summary uses."""

    def __init__(self, cfg: MineConfig, manifest: Manifest) -> None:
        self.cfg, self.manifest = cfg, manifest
        self.bar = None
        self.began = time.perf_counter()
        self.fed = self.scored = self.documents = 0
        self.mode = "units"

    def start(self, schedule: Schedule) -> None:
        if not self.cfg.progress or self.bar is not None or schedule.finished():
            return
        from tqdm.auto import tqdm

        done_tokens = sum(u.tokens for c in schedule.shards.values() for u in c.units)
        if self.cfg.max_tokens is not None:
            total, unit, self.mode, initial = self.cfg.max_tokens, "tok", "tokens", min(done_tokens,
                                                                                       self.cfg.max_tokens)
        else:
            total, unit, self.mode = len(self.manifest), "unit", "units"
            initial = len({u.index for c in schedule.shards.values() for u in c.units if u.complete})
        self.bar = tqdm(total=total, initial=initial, unit=unit, unit_scale=self.mode == "tokens", desc="mining",
                        dynamic_ncols=True, file=sys.stderr)

    def batch(self, fed: int, content: int, scored: int) -> None:
        self.fed += fed
        self.scored += scored
        if self.bar is not None:
            if self.mode == "tokens":
                self.bar.update(min(content, self.bar.total - self.bar.n))
            self.bar.set_postfix_str(f"{self.scored:,} tokens scored", refresh=False)

    def shard_done(self, result: ShardResult) -> None:
        self.documents += result.stats.counters["n_documents"]
        if self.bar is not None and self.mode == "units":
            self.bar.update(sum(1 for u in result.coverage.units if u.complete))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            seconds = time.perf_counter() - self.began
            print(f"mining: {self.scored:,} tokens scored ({self.fed:,} fed) over {self.documents:,} documents in "
                  f"{seconds:.1f} s ({self.fed / max(seconds, 1e-9):,.0f} tokens fed/s)", file=sys.stderr)
