"""`personamine.mine(...)`: plan shards, run them on a backend, checkpoint each, merge, write one HDF5 file."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from personamine.config import MineConfig
from personamine.errors import PersonamineError
from personamine.jobs.features import resolve_features
from personamine.jobs.workdir import WorkDir
from personamine.merge.entries import TOKEN_FILL
from personamine.merge.hdf5 import write_results
from personamine.merge.negatives import NegativeBuffer
from personamine.merge.samples import SampleBuffer
from personamine.merge.stats import FeatureStats
from personamine.merge.topk import TopKBuffer
from personamine.model.loading import check_layer, load_config, load_tokenizer
from personamine.model.logit_lens import LogitLens, logit_lens
from personamine.model.sae import SaeInfo, read_sae_info, resolve_sae_files, validate_sae
from personamine.shards.corpus import Corpus
from personamine.shards.plan import count_documents, plan_shards
from personamine.shards.run import ShardResult, corpus_spec
from personamine.shards.windows import sink_prefix_ids


class Plan:
    """Everything checked before any heavy work starts, so bad input fails fast and writes nothing."""

    def __init__(self, config: MineConfig) -> None:
        self.config = config
        model_config = load_config(config.model, config.gguf_file, config.revision)
        check_layer(config.layer, model_config.num_hidden_layers, config.model)
        if not config.sae:
            raise PersonamineError("no SAE given: pass a hub repo id, a release dir or an ae.pt file")
        ae_path, config_path = resolve_sae_files(config.sae, config.layer, config.sae_trainer)
        self.sae: SaeInfo = read_sae_info(ae_path, config_path)
        validate_sae(self.sae, hidden_size=int(model_config.hidden_size), layer=config.layer,
                     allow_uncalibrated=config.allow_uncalibrated)
        self.features = resolve_features(config, self.sae.dict_size)
        self.tokenizer = load_tokenizer(config.model, config.gguf_file, config.revision)
        self.prefix = sink_prefix_ids(self.tokenizer, config.sink_prefix)
        corpus = Corpus(corpus_spec(config))
        self.n_documents = count_documents(corpus, self.tokenizer, config.max_documents, config.max_tokens)
        self.shards = plan_shards(self.n_documents, config.n_shards)


def _vocab(tokenizer, token_ids: np.ndarray) -> dict[int, tuple[str, str]]:
    ids = np.unique(token_ids)
    ids = ids[ids != TOKEN_FILL].tolist()
    pieces = tokenizer.convert_ids_to_tokens(ids)
    return {i: (str(p), tokenizer.decode([i])) for i, p in zip(ids, pieces, strict=True)}


def reduce_results(results: Iterable[ShardResult]) -> tuple[TopKBuffer, FeatureStats, SampleBuffer | None,
                                                             NegativeBuffer | None]:
    """Merge shard results in the order given: pass them in shard order (selections do not depend on the order;
    float sums would). Results are consumed one at a time, so a generator keeps one shard in memory.

    Interval samples, and non-activating examples, are None when any shard has none (a checkpoint written before
    they existed).
    """
    stream = iter(results)
    first = next(stream)
    buffer, stats, samples, negatives = first.buffer, first.stats, first.samples, first.negatives
    for result in stream:
        buffer = buffer.merge(result.buffer)
        stats = stats.merge(result.stats)
        samples = samples.merge(result.samples) if samples is not None and result.samples is not None else None
        negatives = negatives.merge(result.negatives) if negatives is not None and result.negatives is not None \
            else None
    return buffer, stats, samples, negatives


def _logit_lens(cfg: MineConfig, plan: Plan) -> LogitLens | None:
    """The features' logit lens, or None with a warning: a finished mining run must not fail on it."""
    from personamine.model.loading import pick_device

    if cfg.gguf_file:
        warnings.warn("logit lens skipped: it reads safetensors weights and the model is a GGUF file", stacklevel=3)
        return None
    try:
        return logit_lens(cfg.model, plan.sae.ae_path, plan.features, n_vocab=len(plan.tokenizer),
                          revision=cfg.revision, device=pick_device(cfg.device))
    except PersonamineError as exc:
        warnings.warn(f"logit lens skipped: {exc}", stacklevel=3)
        return None


def mine(config: MineConfig | str | Path | None = None, /, *,
         on_shard_done: Callable[[ShardResult], None] | None = None, **overrides: Any) -> Path:
    """Mine a corpus for the top-k contexts of SAE features; return the path of the HDF5 file.

    ``config`` is a :class:`MineConfig`, a path to a TOML job file, or None (then keyword arguments are the
    config's fields). Keyword arguments override fields of a given config.
    """
    if isinstance(config, (str, Path)):
        cfg = MineConfig.from_toml(config, **overrides)
    elif config is None:
        cfg = MineConfig(**overrides)
    else:
        cfg = config.replace(**overrides) if overrides else config
    plan = Plan(cfg)
    work = WorkDir(cfg)
    work.open(plan.n_documents, plan.shards)
    todo = [s for s in plan.shards if not work.done(s)]
    progress = _Progress(cfg, len(plan.shards), len(plan.shards) - len(todo))

    def on_result(result: ShardResult) -> None:
        work.save(result)
        progress.shard_done()
        if on_shard_done is not None:
            on_shard_done(result)

    try:
        if cfg.backend == "ray":
            from personamine.cluster.ray_backend import run_ray

            run_ray(cfg, plan.features, todo, on_result, progress.tokens)
        else:
            from personamine.cluster.local import run_local

            run_local(cfg, plan.features, todo, on_result, progress.tokens)
    finally:
        progress.close()
    buffer, stats, samples, negatives = reduce_results(work.load(s) for s in plan.shards)
    lens = _logit_lens(cfg, plan)
    shown = [buffer.entries.windows.token_ids.ravel()] + (
        [samples.entries.windows.token_ids.ravel()] if samples is not None else []) + (
        [negatives.entries.windows.token_ids.ravel()] if negatives is not None else []) + (
        [lens.promoted_ids.ravel(), lens.suppressed_ids.ravel()] if lens is not None else [])
    return write_results(cfg.output, feature_ids=plan.features, buffer=buffer, stats=stats,
                         attrs=output_attrs(cfg, plan, stats), vocab=_vocab(plan.tokenizer, np.concatenate(shown)),
                         samples=samples, logit_lens=lens, negatives=negatives)


def output_attrs(cfg: MineConfig, plan: Plan, stats: FeatureStats) -> dict[str, Any]:
    from personamine import __version__

    return {
        "model": cfg.model, "layer": cfg.layer, "sae": f"{cfg.sae}@trainer_{cfg.sae_trainer}",
        "dict_size": plan.sae.dict_size, "sae_threshold": plan.sae.threshold, "ctx_len": cfg.ctx_len,
        "top_k": cfg.top_k, "corpus": cfg.corpus, "tokenizer": cfg.model, "n_documents": plan.n_documents,
        "n_tokens_scored": stats.counters["tokens_scored"], "rows_skipped": stats.counters["rows_skipped"],
        "tokens_norm_filtered": stats.counters["tokens_norm_filtered"],
        "tokens_special": stats.counters["tokens_special"], "n_windows": stats.counters["n_windows"],
        "sink_prefix": np.asarray(plan.prefix, np.int64), "n_shards": len(plan.shards),
        "config": json.dumps(cfg.to_dict(), sort_keys=True), "personamine_version": __version__,
    }


class _Progress:
    def __init__(self, cfg: MineConfig, n_shards: int, already: int) -> None:
        self.started = time.perf_counter()
        self.n_tokens = 0
        self.bar = None
        if cfg.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(unit="tok", unit_scale=True, desc="mining", dynamic_ncols=True)
        self.n_shards, self.done = n_shards, already
        self._postfix()

    def _postfix(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"shards {self.done}/{self.n_shards}")

    def tokens(self, n: int) -> None:
        self.n_tokens += n
        if self.bar is not None:
            self.bar.update(n)

    def shard_done(self) -> None:
        self.done += 1
        self._postfix()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
