"""A simulated multi-node cluster (ray.cluster_utils.Cluster): a worker node lost mid-job changes nothing."""

from __future__ import annotations

import pytest
import ray_helpers  # noqa: I001  (first: it configures Ray's token auth before anything imports ray)
from fixtures import mine_kwargs
from ray_helpers import actor_threads, assert_identical_datasets

import personamine

N_SHARDS = 8


@pytest.fixture
def cluster():
    """A CPU-less head (only the driver) and two worker nodes with one CPU each: one actor per worker node."""
    with ray_helpers.simulated_cluster(2, connect=True) as (c, workers, temp):
        yield c, workers


def test_losing_a_worker_node_mid_job_gives_the_same_output(cluster, tiny_model_dir, tiny_sae_dir,
                                                            tiny_corpus_jsonl, tmp_path, caplog, monkeypatch):
    c, workers = cluster
    # Slow batches so a shard outlasts an actor's start-up: when the first shard finishes, the other actor is
    # surely up and mid-shard, and losing its node must requeue that shard.
    monkeypatch.setenv("PERSONAMINE_TEST_BATCH_DELAY", "0.4")
    kwargs = mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp_path, n_shards=N_SHARDS,
                         batch_tokens=96)
    with actor_threads(1):
        local = personamine.mine(**dict(kwargs, output=str(tmp_path / "local.h5")))
    removed = []

    def lose_a_node(result):
        if not removed:  # the other actor is mid-shard (or about to get its next one): both paths requeue
            c.remove_node(workers[1])
            removed.append(result.shard.name)

    out = personamine.mine(**kwargs, backend="ray", num_actors=2, actor_num_cpus=1, on_shard_done=lose_a_node)
    assert removed
    requeued = [r.getMessage() for r in caplog.records if "requeued" in r.getMessage()]
    assert requeued, "losing a node with an actor on it should have requeued a shard"
    assert_identical_datasets(local, out)
