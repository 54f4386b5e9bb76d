"""The in-process backend: nothing loads until a shard (or the pre-flight) needs the engine, which is then loaded
once and kept; shards run in schedule order, each result handed over as it finishes; a schedule that stops handing
out shards before it is finished is an error, not a hang."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures import SAE_LAYER, corpus_texts

from personamine.cluster.local import LocalBackend
from personamine.config import MineConfig
from personamine.corpus import CorpusSpec, open_manifest
from personamine.shards.plan import Schedule, Shard
from personamine.shards.run import sae_readout

UNIT_BYTES = 300


def _backend(cfg: MineConfig) -> LocalBackend:
    """The backend of a classic run of ``cfg``'s SAE, mining features 1, 5 and 9."""
    return LocalBackend(cfg, [sae_readout(cfg, np.array([1, 5, 9]))])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("local-backend") / "c.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus_texts()[:10]))
    return path


def config(model_dir, sae_dir, corpus, **extra):
    base = dict(model=str(model_dir), layer=SAE_LAYER, sae=str(sae_dir), corpus=str(corpus), features=[1, 5, 9],
                ctx_len=16, unit_bytes=UNIT_BYTES, preflight_tokens=0, progress=False)
    return MineConfig(**{**base, **extra})


def schedule(corpus, n_shards):
    manifest = open_manifest(CorpusSpec(str(corpus), unit_bytes=UNIT_BYTES))
    return manifest, Schedule(manifest, n_shards, None, None, {}, lambda name, unit: np.zeros(0, np.int64))


def test_shards_run_in_order_on_one_engine(tiny_model_dir, tiny_sae_dir, corpus):
    backend = _backend(config(tiny_model_dir, tiny_sae_dir, corpus))
    backend.start()
    assert backend.engine is None  # start loads nothing: a finished, resumed run needs no model
    manifest, plan = schedule(corpus, n_shards=3)
    assert len(manifest) > 3
    results, engines, batches = [], [], []

    def on_result(result):
        plan.record(result.shard, result.coverage)  # what mining does with each result
        results.append(result)
        engines.append(backend.engine)

    backend.run(plan, on_result, lambda fed, content, scored: batches.append((fed, content, scored)))
    assert plan.finished()
    units = [[u.index for u in r.shard.units] for r in results]
    assert len(results) == 3 and [i for shard in units for i in shard] == list(range(len(manifest)))
    assert [r.coverage.name for r in results] == [r.shard.name for r in results]
    assert engines[0] is not None and all(e is engines[0] for e in engines)  # loaded once
    # Every batch was reported, and the shards' counts are what the batches said.
    assert sum(b[2] for b in batches) == sum(r.stats.counters["tokens_scored"] for r in results) > 0
    assert sum(b[0] for b in batches) == sum(r.stats.counters["tokens_fed"] for r in results)
    backend.close()
    assert backend.engine is None


def test_the_preflight_loads_the_engine_that_mining_then_uses(tiny_model_dir, tiny_sae_dir, corpus):
    backend = _backend(config(tiny_model_dir, tiny_sae_dir, corpus, preflight_tokens=64))
    manifest, plan = schedule(corpus, n_shards=1)
    result = backend.preflight([Shard((manifest.ref(i),)) for i in range(len(manifest))], 300, 0.5)[f"L{SAE_LAYER}"]
    assert result is not None and result.n_tokens == 300 and result.layer == SAE_LAYER
    engine = backend.engine
    assert engine is not None
    seen = []
    backend.run(plan, lambda r: (plan.record(r.shard, r.coverage), seen.append(backend.engine)), lambda *a: None)
    assert seen == [engine]


def test_a_schedule_with_nothing_to_hand_out_is_an_error_not_a_hang(tiny_model_dir, tiny_sae_dir, corpus):
    backend = _backend(config(tiny_model_dir, tiny_sae_dir, corpus))
    _, plan = schedule(corpus, n_shards=2)
    ran = []
    # A result that is never recorded leaves its shard in flight: the schedule is not finished, and has no shard.
    with pytest.raises(RuntimeError, match="^the schedule is not finished but has no shard to run$"):
        backend.run(plan, ran.append, lambda *a: None)
    assert len(ran) == 2 and not plan.finished()
