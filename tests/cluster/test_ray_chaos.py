"""A seeded chaos run on a real local multi-node Ray cluster (ray.cluster_utils): actors SIGKILLed mid-shard at
seeded places, a worker node removed, and the driver itself SIGKILLed and started again; every dataset of the output
is byte-identical to an undisturbed local run's."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import ray_helpers  # noqa: I001  (first: it configures Ray's token auth before anything imports ray)
from fixtures import mine_kwargs
from ray_helpers import actor_threads, assert_identical_datasets

import personamine
from personamine.cluster.ray_backend import BATCH_DELAY_ENV, KILL_PLAN_ENV

SEED = 29
N_UNITS = 13  # the fixture corpus at mine_kwargs' unit size: one shard per unit below


@pytest.fixture
def cluster():
    """A CPU-less head (only the driver connects there) and three worker nodes with one CPU each."""
    with ray_helpers.simulated_cluster(3, connect=False) as (c, workers, temp):
        yield c, workers, temp


def _checkpoints(work) -> int:
    return len(list(work.glob("units-*.json"))) if work.is_dir() else 0


def _wait_for(proc: subprocess.Popen, work, count: int, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while _checkpoints(work) < count:
        if proc.poll() is not None:
            raise AssertionError(f"the driver exited with {proc.returncode} before {count} checkpoints: "
                                 f"{proc.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {count} checkpoints after {timeout} s")
        time.sleep(0.05)


def test_a_seeded_chaos_run_gives_the_undisturbed_output(cluster, tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl,
                                                         tmp_path):
    c, workers, temp = cluster
    rng = random.Random(SEED)
    # Several actor kills, each mid-shard (after a batch, before the shard's result), at seeded shards and batches.
    kills = sorted((unit, rng.choice((1, 1, 2))) for unit in rng.sample(range(N_UNITS), 4))
    driver_kill_at = rng.randint(3, 5)  # checkpoints written when the driver is SIGKILLed
    node_loss_at = driver_kill_at + rng.randint(2, 3)  # checkpoints written when a worker node is removed
    lost_node = rng.randrange(len(workers))
    markers = tmp_path / "kills"
    markers.mkdir()
    kwargs = mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp_path, n_shards=N_UNITS,
                         batch_tokens=96)
    began = time.perf_counter()
    with actor_threads(1):
        local = personamine.mine(**dict(kwargs, output=str(tmp_path / "local.h5")))
    local_seconds = time.perf_counter() - began

    out, work = tmp_path / "chaos.h5", tmp_path / "chaos.work"
    argv = [sys.executable, "-m", "personamine.jobs.cli", "mine", "--no-progress", "--model", str(tiny_model_dir),
            "--layer", str(kwargs["layer"]), "--sae", str(tiny_sae_dir), "--corpus", str(tiny_corpus_jsonl),
            "--features", ",".join(map(str, kwargs["features"])), "--ctx-len", str(kwargs["ctx_len"]),
            "--top-k", str(kwargs["top_k"]), "--unit-bytes", str(kwargs["unit_bytes"]), "--n-shards", str(N_UNITS),
            "--batch-tokens", "96", "--output", str(out), "--work-dir", str(work), "--ray", c.address,
            "--num-actors", "2", "--actor-num-cpus", "1", "--actor-num-gpus", "0"]
    calm = dict(os.environ, **{BATCH_DELAY_ENV: "0.2", "TMPDIR": str(temp)})
    env = dict(calm, **{KILL_PLAN_ENV: f"{markers};" + ",".join(f"{u}@{b}" for u, b in kills)})
    # The same run undisturbed on the same cluster: what the chaos costs.
    calm_argv = [{str(out): str(tmp_path / "calm.h5"), str(work): str(tmp_path / "calm.work")}.get(a, a) for a in argv]
    began = time.perf_counter()
    assert subprocess.run(calm_argv, env=calm, capture_output=True).returncode == 0
    calm_seconds = time.perf_counter() - began
    assert_identical_datasets(local, tmp_path / "calm.h5")
    began = time.perf_counter()
    first = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(first, work, driver_kill_at)
    finally:
        first.send_signal(signal.SIGKILL)  # the driver dies as a lost head-node process would: no cleanup
        first.wait()
    resumed_from = _checkpoints(work)
    second = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(second, work, min(node_loss_at, N_UNITS - 1))
        c.remove_node(workers[lost_node])
        stdout, stderr = second.communicate(timeout=600)
    finally:
        if second.poll() is None:
            second.send_signal(signal.SIGKILL)
            second.wait()
    chaos_seconds = time.perf_counter() - began
    assert second.returncode == 0, stderr
    # (stdout may also hold Ray's own "(raylet) A worker died ..." notices of the killed actors before this line)
    assert stdout.strip().splitlines()[-1] == f"wrote {out}", stdout
    happened = sorted(p.name for p in markers.iterdir())
    assert len(happened) >= 2, (kills, happened)  # several actors were killed mid-shard
    assert resumed_from >= driver_kill_at
    assert_identical_datasets(local, out)
    assert not work.exists()
    print(f"\nchaos run (seed {SEED}): kills {happened}, driver killed after {resumed_from} checkpoints, node "
          f"{lost_node} removed after {node_loss_at}: {chaos_seconds:.1f} s; the same run undisturbed on the cluster "
          f"{calm_seconds:.1f} s ({chaos_seconds / calm_seconds:.2f}x); undisturbed local run {local_seconds:.1f} s")
