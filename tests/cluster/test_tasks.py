"""Both tasks run through the same backend: the local backend's screening of a schedule equals run_screen_shard
called directly, and a task survives pickling (Ray sends it to each actor)."""

from __future__ import annotations

import pickle

import numpy as np
from fixtures import SAE_LAYER, TINY_HIDDEN_SIZE, write_screen_corpus

from personamine.cluster import open_backend
from personamine.cluster.tasks import ScreeningTask
from personamine.config import ScreenConfig
from personamine.corpus import CorpusSpec, open_manifest
from personamine.shards.plan import Schedule


def test_local_backend_runs_the_screening_task(tiny_model_dir, tmp_path):
    corpus = write_screen_corpus(tmp_path / "chat.jsonl")
    cfg = ScreenConfig(model=str(tiny_model_dir), directions="unused", corpus=str(corpus), layer=SAE_LAYER,
                       max_new_tokens=3, unit_bytes=3000, progress=False)
    units = np.eye(2, TINY_HIDDEN_SIZE, dtype=np.float32)
    task = pickle.loads(pickle.dumps(ScreeningTask(cfg, units)))
    manifest = open_manifest(CorpusSpec(str(corpus), column="messages", unit_bytes=3000))
    schedule = Schedule(manifest, None, None, None, {}, lambda name, unit: np.zeros(0))
    results, batches = [], []
    backend = open_backend(cfg, task=task)
    backend.start()
    try:
        backend.run(schedule, lambda r: (results.append(r), schedule.record(r.shard, r.coverage)),
                    lambda *counts: batches.append(counts))
        direct = task.run(backend.engine, results[0].shard, None)
    finally:
        backend.close()
    assert len(results) == len(manifest) > 1
    assert sum(r.counters["n_rows"] for r in results) == 14
    assert sum(b[0] for b in batches) == sum(r.counters["n_samples"] for r in results) == 9
    assert task.counts(results[0]) == (results[0].counters["n_samples"], results[0].counters["tokens_generated"],
                                       results[0].coverage.units[0].rows)
    for key, value in direct.arrays.items():
        np.testing.assert_array_equal(value, results[0].arrays[key])
    assert direct.strings == results[0].strings
