"""The Ray backend on a real local Ray with fake GPUs: same output as the local backend, faults handled."""

from __future__ import annotations

import logging
import shutil

import pytest
import ray_helpers  # noqa: I001  (first: it configures Ray's token auth before anything imports ray)
from fixtures import flip, interrupted_run, mine_kwargs
from ray_helpers import actor_threads, assert_identical_datasets

import personamine
from personamine.cluster.ray_backend import FAIL_UNIT_ENV, KILL_ONCE_ENV, actor_spec
from personamine.config import MineConfig
from personamine.errors import PersonamineError

N_SHARDS = 6
# Several batches per shard, so an injected fault lands mid-shard.
RUN = dict(n_shards=N_SHARDS, batch_tokens=96)


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the module (its start-up is the slow part): 2 CPUs, 2 fake GPUs."""
    with ray_helpers.local_ray(num_cpus=2, num_gpus=2) as temp:
        yield temp


@pytest.fixture(scope="module")
def local_output(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("local")
    with actor_threads(1):
        return personamine.mine(**mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp, **RUN))


def _ray_kwargs(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path, **extra):
    return mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp_path, backend="ray", **RUN,
                       **extra)


def _requeued(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "requeued" in r.getMessage()]


def test_actor_spec_defaults():
    cfg = MineConfig()
    assert actor_spec(cfg, {"CPU": 16, "GPU": 8}, 100).count == 8
    assert actor_spec(cfg, {"CPU": 16, "GPU": 8}, 3).count == 3  # never more actors than shards
    no_gpu = actor_spec(cfg, {"CPU": 16}, 100)
    assert (no_gpu.count, no_gpu.num_gpus) == (1, 0.0)
    half = actor_spec(cfg.replace(actor_num_gpus=0.5), {"GPU": 4}, 100)
    assert (half.count, half.num_gpus) == (8, 0.5)
    assert actor_spec(cfg.replace(num_actors=3, actor_num_cpus=2), {"GPU": 8}, 100).count == 3
    with pytest.raises(PersonamineError, match="num_actors"):
        actor_spec(cfg.replace(num_actors=0), {}, 10)


def test_two_actors_on_fake_gpus_equal_local(ray_session, local_output, tiny_model_dir, tiny_sae_dir,
                                             tiny_corpus_jsonl, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="personamine.cluster.ray_backend")
    done = []
    out = personamine.mine(**_ray_kwargs(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path),
                           on_shard_done=lambda r: done.append(r.shard.name))
    assert len(done) == N_SHARDS
    assert any("ray: 2 actor(s), num_gpus=1 num_cpus=1" in r.getMessage() for r in caplog.records)
    assert _requeued(caplog) == []
    assert_identical_datasets(local_output, out)


def test_actor_killed_mid_shard_is_replaced_and_output_unchanged(ray_session, local_output, tiny_model_dir,
                                                                 tiny_sae_dir, tiny_corpus_jsonl, tmp_path,
                                                                 monkeypatch, caplog):
    marker = tmp_path / "killed-once"
    monkeypatch.setenv(KILL_ONCE_ENV, f"{marker}:2")
    out = personamine.mine(**_ray_kwargs(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path / "run"))
    assert marker.exists(), "the injected kill never happened"
    requeued = _requeued(caplog)
    assert len(requeued) == 1 and "units 2-3 (" in requeued[0], requeued
    assert_identical_datasets(local_output, out)


def test_always_failing_shard_ends_the_run_naming_it(ray_session, tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl,
                                                     tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(FAIL_UNIT_ENV, "4")
    kwargs = _ray_kwargs(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path, max_shard_retries=2,
                         num_actors=1)
    with pytest.raises(PersonamineError) as info:
        personamine.mine(**kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("units 4-5 (")
    assert "failed 3 time(s)" in message and "RuntimeError: injected failure in units-000004-000005" in message
    assert len(_requeued(caplog)) == 2
    assert not (tmp_path / "out.h5").exists()


def test_interrupted_driver_resumes_from_checkpoints(ray_session, local_output, tiny_model_dir, tiny_sae_dir,
                                                     tiny_corpus_jsonl, tmp_path):
    kwargs = _ray_kwargs(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path, num_actors=1)
    first: list[str] = []

    def stop_after_two(result):
        first.append(result.shard.name)
        if len(first) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        personamine.mine(**kwargs, on_shard_done=stop_after_two)
    second: list[str] = []
    out = personamine.mine(**kwargs, on_shard_done=lambda r: second.append(r.shard.name))
    assert len(set(first + second)) == len(first + second) == N_SHARDS  # nothing finished was recomputed
    assert_identical_datasets(local_output, out)


def test_actor_that_cannot_load_the_model_stops_the_run(ray_session, tiny_model_dir, tiny_sae_dir,
                                                         tiny_corpus_jsonl, tmp_path):
    # Config and tokenizer intact (the driver's plan passes), weights unreadable: only the actors find out.
    broken = tmp_path / "model"
    shutil.copytree(tiny_model_dir, broken)
    weights = next(broken.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    kwargs = _ray_kwargs(broken, tiny_sae_dir, tiny_corpus_jsonl, tmp_path, num_actors=1)
    with pytest.raises(PersonamineError, match="^a Ray mining actor failed to start: ") as info:
        personamine.mine(**kwargs)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out.h5").exists()


@pytest.mark.parametrize("fmt, budget", [("parquet", {}), ("jsonl", {"max_tokens": 1500}), ("txt", {})])
def test_two_actors_equal_local_on_every_format(ray_session, tiny_model_dir, tiny_sae_dir, tmp_path, fmt, budget):
    """Multi-file corpora whose row groups do not line up with files or shards; a budgeted run finds its end from
    results that come back in any order."""
    import fixtures as fx

    corpus = fx.write_corpus_files(tmp_path / "corpus", fmt, n_files=3, rows_per_group=7)
    kwargs = mine_kwargs(tiny_model_dir, str(tiny_sae_dir), corpus, tmp_path, unit_bytes=700, batch_tokens=96,
                         **budget)
    with actor_threads(1):
        local = personamine.mine(**dict(kwargs, output=str(tmp_path / "local.h5"), n_shards=1))
    out = personamine.mine(**dict(kwargs, backend="ray", n_shards=None))
    assert_identical_datasets(local, out)


def test_a_damaged_checkpoint_is_mined_again_on_ray(ray_session, local_output, tiny_model_dir, tiny_sae_dir,
                                                    tiny_corpus_jsonl, tmp_path):
    kwargs = _ray_kwargs(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path, num_actors=1)
    first = interrupted_run(kwargs, 3)
    flip(tmp_path / "out.h5.work" / f"{first[0]}.npz")
    again: list[str] = []
    with pytest.warns(UserWarning, match="damaged \\(checksum mismatch\\)"):
        out = personamine.mine(**kwargs, on_shard_done=lambda r: again.append(r.shard.name))
    assert again[0] == first[0] and not set(first[1:]) & set(again)
    assert_identical_datasets(local_output, out)


def test_several_readouts_on_ray_equal_local(ray_session, tiny_model_dir, multi_layer_sae_dir, tiny_corpus_jsonl,
                                             tmp_path):
    """SAEs at two layers and a set of directions from one forward per batch: every readout's file from two Ray
    actors equals the local run's."""
    import numpy as np
    from fixtures import TINY_HIDDEN_SIZE

    from personamine.files.mine import readouts_of

    np.save(tmp_path / "d.npy", np.random.default_rng(5).standard_normal((2, TINY_HIDDEN_SIZE)).astype(np.float32))
    kwargs = mine_kwargs(tiny_model_dir, str(multi_layer_sae_dir), tiny_corpus_jsonl, tmp_path, layers=[1, 3],
                         directions=str(tmp_path / "d.npy"), direction_layer=2, allow_low_fve=True, **RUN)
    with actor_threads(1):
        local = personamine.mine(**{**kwargs, "output": str(tmp_path / "local.h5")})
    ray = personamine.mine(**{**kwargs, "output": str(tmp_path / "ray.h5"), "backend": "ray"})
    local_files, ray_files = readouts_of(local), readouts_of(ray)
    assert list(local_files) == list(ray_files) == ["L1", "L3", "directions-L2"]
    for name, path in local_files.items():
        assert_identical_datasets(path, ray_files[name])
