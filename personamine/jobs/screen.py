"""`personamine.screen(...)`: rank a conversation corpus's samples by projection difference (persona vectors' data
screening, arXiv 2507.21509): per sample, the projection of its assistant response on a direction minus that of the
model's own greedy response to the same prompt. The corpus is planned into units and shards, run on a backend
(local or Ray actors), each shard checkpointed, exactly as mining does; one HDF5 file comes out."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from personamine.atomic import check_writable
from personamine.cluster import open_backend
from personamine.cluster.tasks import ScreeningTask
from personamine.config import SCREEN_EXECUTION_FIELDS, ScreenConfig, resolve_config
from personamine.corpus import CorpusSpec, Manifest, check_column_type, open_manifest, resolve_corpus
from personamine.errors import PersonamineError
from personamine.files.directions import NamedDirection, load_directions
from personamine.files.screen import write_screening
from personamine.jobs.workdir import WorkDir
from personamine.model.loading import check_layer, load_config, load_tokenizer
from personamine.shards.documents import document_uid, global_documents
from personamine.shards.plan import Schedule
from personamine.shards.screen import COUNTERS, STRING_FIELDS, ScreenResult
from personamine.version import __version__

_COLUMNS = ("unit", "row", "projection_response", "projection_own", "response_tokens", "own_tokens", "own_finished")


def corpus_spec(config: ScreenConfig) -> CorpusSpec:
    return CorpusSpec(config.corpus, config.corpus_config, config.split, config.messages_column,
                      config.corpus_revision, config.unit_bytes)


class Plan:
    """Everything checked before any heavy work starts (bad input fails fast and writes nothing): the output, the
    model's config and chat template, the directions (width, layer, names), the corpus's files."""

    def __init__(self, config: ScreenConfig) -> None:
        if not config.directions:
            raise PersonamineError("screen needs directions: a discovery .h5, .safetensors, .npy or .pt file")
        if not config.corpus:
            raise PersonamineError("screen needs a conversation corpus (corpus)")
        check_writable(config.output, "output")
        model_config = load_config(config.model, None, config.revision)
        n_layers, width = int(model_config.num_hidden_layers), int(model_config.hidden_size)
        if config.layer is not None:
            check_layer(config.layer, n_layers, config.model)
        found = load_directions(config.directions, names=config.names or None, hidden_size=width, layer=config.layer)
        layer = config.layer if config.layer is not None else _layer_of(config.directions, found)
        check_layer(layer, n_layers, config.model)
        self.directions: list[NamedDirection] = found
        self.config = config = config.replace(layer=layer, names=[d.name for d in found])
        tokenizer = load_tokenizer(config.model, revision=config.revision)
        if getattr(tokenizer, "chat_template", None) is None:
            raise PersonamineError(f"model {config.model!r}'s tokenizer has no chat template: screening renders "
                                   "conversations with it")
        check_writable(config.resolved_work_dir(), "work dir", directory=True)
        self.corpus = resolve_corpus(corpus_spec(config))

    @property
    def units(self) -> np.ndarray:
        return np.stack([d.unit for d in self.directions])


def _layer_of(path: str, found: list[NamedDirection]) -> int:
    layers = sorted({d.layer for d in found if d.layer is not None})
    if any(d.layer is None for d in found) or not layers:
        raise PersonamineError(f"directions file {path!r} does not say which layer its directions were found at: "
                               "pass layer (--layer)")
    if len(layers) > 1:
        raise PersonamineError(f"directions file {path!r} holds directions of layers {', '.join(map(str, layers))}: "
                               "pass layer (--layer) or names of one layer's directions (--names)")
    return layers[0]


def screen(config: ScreenConfig | str | Path | None = None, /, *,
           on_shard_done: Callable[[ScreenResult], None] | None = None, **overrides: Any) -> Path:
    """Screen a conversation corpus by projection difference; return the path of the HDF5 file.

    ``config`` is a :class:`ScreenConfig`, a path to a TOML job file, or None (then keyword arguments are the
    config's fields). Keyword arguments override fields of a given config. ``on_shard_done`` is called with each
    shard's result as it finishes (after it is checkpointed). An interrupted run resumes from its work dir.
    """
    if isinstance(config, (str, Path)):
        cfg = ScreenConfig.from_toml(config, **overrides)
    else:
        cfg = resolve_config(ScreenConfig, config, overrides, "screen")
    plan = Plan(cfg)
    work = WorkDir(plan.config, SCREEN_EXECUTION_FIELDS)
    work.lock()  # one run per work dir: a second one stops here, having touched nothing
    try:
        return _screen(plan, work, on_shard_done)
    except BaseException:
        work.discard_if_empty()  # a failed start leaves nothing that blocks a rerun
        raise
    finally:
        work.unlock()


def _checkpoint(result: ScreenResult) -> dict[str, np.ndarray]:
    arrays = {f"col_{k}": result.arrays[k] for k in _COLUMNS}
    for name in STRING_FIELDS:
        encoded = [t.encode("utf-8") for t in result.strings[name]]
        arrays[f"text_{name}"] = np.frombuffer(b"".join(encoded), np.uint8)
        arrays[f"offsets_{name}"] = np.cumsum([0] + [len(e) for e in encoded], dtype=np.int64)
    arrays["counters"] = np.array([result.counters[k] for k in COUNTERS], np.int64)
    return arrays


def _texts(arrays: dict[str, np.ndarray], name: str) -> list[str]:
    blob, offsets = arrays[f"text_{name}"].tobytes(), arrays[f"offsets_{name}"]
    return [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


def _screen(plan: Plan, work: WorkDir, on_shard_done: Callable[[ScreenResult], None] | None) -> Path:
    cfg = plan.config
    backend = open_backend(cfg, task=ScreeningTask(cfg, plan.units))
    progress: _Progress | None = None
    backend.start()  # Ray actors load the model while the corpus's footers are read
    try:
        manifest = open_manifest(corpus_spec(cfg), plan.corpus)
        check_column_type(manifest, "messages")
        work.open(manifest)
        progress = _Progress(cfg, manifest)

        def save(result: ScreenResult) -> None:
            work.save_arrays(result.coverage, _checkpoint(result), result.doc_tokens, result.seconds)

        parts, names, offsets = work.run_schedule(manifest, backend, progress, n_shards=cfg.n_shards,
                                                  max_documents=cfg.max_documents, max_tokens=None, save=save,
                                                  load=work.load_arrays, on_shard_done=on_shard_done)
    finally:
        backend.close()
        if progress is not None:
            progress.close()
    counters = dict(zip(COUNTERS, np.sum([p["counters"] for p in parts], axis=0).tolist(), strict=True))
    if counters["n_samples"] == 0:
        work.remove()  # its checkpoints hold no sample: a rerun after the fix must not find them
        raise PersonamineError(
            f"corpus {cfg.corpus!r} has no sample to screen: none of its {counters['n_rows']:,} rows is a "
            f"conversation whose last turn is an assistant response ({counters['rows_not_samples']:,} end otherwise, "
            f"{counters['rows_too_long']:,} are longer than the model's context, "
            f"{counters['rows_skipped']:,} have no {cfg.messages_column!r}, {counters['rows_malformed']:,} "
            "malformed)")
    columns = {k: np.concatenate([p[f"col_{k}"] for p in parts]) for k in _COLUMNS}
    columns["document"] = global_documents(document_uid(columns["unit"], columns["row"]), offsets)
    texts = {name: [t for p in parts for t in _texts(p, name)] for name in STRING_FIELDS}
    path = write_screening(cfg.output, names=list(cfg.names or []), units=plan.units, columns=columns, texts=texts,
                           attrs=_attrs(cfg, manifest, counters, len(names)))
    if not cfg.keep_work_dir:
        work.remove()
    return path


def _attrs(cfg: ScreenConfig, manifest: Manifest, counters: dict[str, int], n_shards: int) -> dict[str, Any]:
    return {"model": cfg.model, "layer": cfg.layer, "directions": cfg.directions, "corpus": cfg.corpus,
            "corpus_revision": manifest.revision or "", "corpus_files": json.dumps([f.url for f in manifest.files]),
            "n_units": len(manifest), **counters, "n_shards": n_shards,
            "config": json.dumps(cfg.to_dict(), sort_keys=True), "personamine_version": __version__}


class _Progress:
    """A bar over the corpus's units, the samples screened so far and their rate; a closing line with the measured
    throughput (samples per minute), the number that sizes a run (generation dominates it)."""

    def __init__(self, cfg: ScreenConfig, manifest: Manifest) -> None:
        self.cfg, self.manifest = cfg, manifest
        self.bar = None
        self.began = time.perf_counter()
        self.samples = self.generated = 0

    def start(self, schedule: Schedule) -> None:
        if not self.cfg.progress or self.bar is not None or schedule.finished():
            return
        from tqdm.auto import tqdm

        initial = len({u.index for c in schedule.shards.values() for u in c.units if u.complete})
        self.bar = tqdm(total=len(self.manifest), initial=initial, unit="unit", desc="screening", dynamic_ncols=True,
                        file=sys.stderr)

    def batch(self, samples: int, generated: int, _rows: int) -> None:
        self.samples += samples
        self.generated += generated
        if self.bar is not None:
            minutes = (time.perf_counter() - self.began) / 60
            self.bar.set_postfix_str(f"{self.samples:,} samples, {self.samples / max(minutes, 1e-9):,.1f}/min",
                                     refresh=False)

    def shard_done(self, result: ScreenResult) -> None:
        if self.bar is not None:
            self.bar.update(sum(1 for u in result.coverage.units if u.complete))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            seconds = time.perf_counter() - self.began
            print(f"screening: {self.samples:,} samples ({self.generated:,} tokens generated) in {seconds:.1f} s "
                  f"({self.samples / max(seconds / 60, 1e-9):,.1f} samples/min)", file=sys.stderr)
