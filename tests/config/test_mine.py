"""The mining run's config: defaults, feature lists, validation in one line, the fingerprint that a resume compares
(execution fields left out), the work dir, TOML job files."""

from __future__ import annotations

import json

import pytest

from personamine.config.mine import EXECUTION_FIELDS, MineConfig
from personamine.errors import PersonamineError


def test_defaults():
    cfg = MineConfig()
    assert cfg.model == "builtin:smollm2-135m-instruct" and cfg.layer is None and cfg.sae == ""
    assert (cfg.ctx_len, cfg.top_k, cfg.example_len, cfg.top, cfg.unit_bytes) == (64, 20, 64, 20, 8 << 20)
    assert (cfg.samples_per_interval, cfg.negatives_per_feature, cfg.feature_chunk) == (5, 20, 8192)
    assert cfg.features == [] and cfg.score_roles is None and cfg.backend == "local" and cfg.dedupe
    assert (cfg.preflight_tokens, cfg.min_fve, cfg.allow_low_fve) == (4096, 0.5, False)
    assert cfg.output == "personamine-out/mine.h5" and cfg.norm_filter == 10.0 and cfg.max_shard_retries == 3


def test_features_from_text():
    assert MineConfig(features="1,4-6").features == [1, 4, 5, 6]
    assert MineConfig(features="all").features == "all"
    assert MineConfig(features=[9, 2]).features == [9, 2]  # a list is kept as given
    with pytest.raises(PersonamineError, match="^cannot parse feature list 'some'"):
        MineConfig(features="some")


@pytest.mark.parametrize("changes, message", [
    ({"score_roles": ["assistant", "bot"]}, "score_roles may name text, system, user, assistant; got 'assistant', "
                                            "'bot'"),
    ({"score_roles": []}, "score_roles may name text, system, user, assistant; got none"),
    ({"backend": "slurm"}, "backend must be 'local' or 'ray', got 'slurm'"),
    ({"stride": 0}, "stride must be at least 1, got 0"),
    ({"example_len": 0}, "example_len must be at least 1, got 0"),
    ({"unit_bytes": 0}, "unit_bytes must be at least 1, got 0"),
    ({"samples_per_interval": -1}, "samples_per_interval must be at least 0, got -1"),
    ({"max_shard_retries": -1}, "max_shard_retries must be at least 0, got -1"),
    ({"sae_trainer": -2}, "sae_trainer must be at least 0, got -2"),
    ({"preflight_tokens": -1}, "preflight_tokens must be at least 0, got -1"),
])
def test_bad_values_are_one_line(changes, message):
    with pytest.raises(PersonamineError) as info:
        MineConfig(**changes)
    assert str(info.value) == message


def test_zero_is_allowed_where_it_switches_something_off():
    cfg = MineConfig(samples_per_interval=0, negatives_per_feature=0, norm_filter=0, preflight_tokens=0,
                     max_shard_retries=0, score_roles=["assistant", "user"])
    assert cfg.norm_filter == 0 and cfg.score_roles == ["assistant", "user"]


def test_the_fingerprint_ignores_how_a_run_executes_only():
    base = MineConfig(sae="s", corpus="c", features=[1, 2])
    assert base.fingerprint() == MineConfig(sae="s", corpus="c", features=[1, 2]).fingerprint()
    assert len(base.fingerprint()) == 16 and int(base.fingerprint(), 16) >= 0
    executing = {"output": "elsewhere.h5", "work_dir": "w", "backend": "ray", "num_actors": 4, "batch_tokens": 77,
                 "feature_chunk": 3, "n_shards": 9, "progress": False, "keep_work_dir": True, "min_fve": 0.9,
                 "allow_low_fve": True, "preflight_tokens": 0, "sae_exact_topk": True, "max_shard_retries": 0,
                 "actor_num_cpus": 2.0, "actor_num_gpus": 0.5, "ray_address": "auto"}
    assert set(executing) == EXECUTION_FIELDS
    assert base.replace(**executing).fingerprint() == base.fingerprint()
    for field, value in {"top_k": 3, "ctx_len": 32, "features": [1, 3], "corpus": "d", "norm_filter": 0.0,
                         "dedupe": False, "max_tokens": 100, "layer": 2}.items():
        assert base.replace(**{field: value}).fingerprint() != base.fingerprint(), field


def test_work_dir_and_serialisation():
    assert str(MineConfig(output="runs/a.h5").resolved_work_dir()) == "runs/a.h5.work"
    assert str(MineConfig(output="runs/a.h5", work_dir="/tmp/w").resolved_work_dir()) == "/tmp/w"
    cfg = MineConfig(features=[3], top_k=4)
    assert json.loads(cfg.to_json()) == cfg.to_dict() and MineConfig.from_dict(cfg.to_dict()) == cfg


def test_a_toml_job_with_overrides(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text('sae = "my-sae"\nfeatures = "2-4"\ntop_k = 7\nscore_roles = ["assistant"]\n')
    cfg = MineConfig.from_toml(job, top_k=3, ctx_len=None)  # None: a flag that was not given
    assert (cfg.sae, cfg.features, cfg.top_k, cfg.ctx_len, cfg.score_roles) == ("my-sae", [2, 3, 4], 3, 64,
                                                                                ["assistant"])


def test_a_job_file_that_cannot_be_used_is_one_line(tmp_path):
    with pytest.raises(PersonamineError) as info:
        MineConfig.from_toml(tmp_path / "absent.toml")
    assert str(info.value) == f"cannot read config {str(tmp_path / 'absent.toml')!r}: No such file or directory"
    bad = tmp_path / "bad.toml"
    bad.write_text("top_k = = 3\n")
    with pytest.raises(PersonamineError, match=r"^config '.*bad\.toml' is not valid TOML: .*line 1") as info:
        MineConfig.from_toml(bad)
    assert "\n" not in str(info.value)
    ranged = tmp_path / "range.toml"
    ranged.write_text("top_k = 0\n")
    with pytest.raises(PersonamineError, match="^top_k must be at least 1, got 0$"):
        MineConfig.from_toml(ranged)
