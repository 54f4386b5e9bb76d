"""Checkpoints are verified before they are trusted: a truncated, bit-flipped or missing one is reported by path, set
aside and its shard mined again, and the output is byte-identical to an undisturbed run's."""

from __future__ import annotations

import json
import warnings

import pytest
from fixtures import flip, interrupted_run, mine_kwargs
from ray_helpers import assert_identical_datasets

import personamine


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def remove(path):
    path.unlink()


@pytest.fixture(scope="module")
def undisturbed(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("undisturbed")
    return personamine.mine(**mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp, n_shards=4))


@pytest.mark.parametrize("damage", [truncate, flip, remove])
def test_a_damaged_checkpoint_is_set_aside_and_mined_again(undisturbed, tiny_model_dir, tiny_sae_dir,
                                                           tiny_corpus_jsonl, tmp_path, damage):
    kwargs = mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp_path, n_shards=4)
    first = interrupted_run(kwargs, 3)
    work = tmp_path / "out.h5.work"
    victim = work / f"{first[1]}.npz"
    damage(victim)
    again = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = personamine.mine(**kwargs, on_shard_done=lambda r: again.append(r.shard.name))
    messages = [str(w.message) for w in caught if "damaged" in str(w.message)]
    assert len(messages) == 1 and str(victim) in messages[0] and "mined again" in messages[0], messages
    assert again[0] == first[1] and first[0] not in again and first[2] not in again
    assert_identical_datasets(undisturbed, out)


def test_damage_found_while_merging_is_mined_again_too(undisturbed, tiny_model_dir, tiny_sae_dir,
                                                       tiny_corpus_jsonl, tmp_path):
    """A checkpoint that passes the start-up check and is damaged before the merge reads it."""
    kwargs = mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp_path, n_shards=4)
    work = tmp_path / "out.h5.work"
    shards = []

    def damage_the_first_when_the_last_is_done(result):
        shards.append(result.shard.name)
        if len(shards) == 4:
            flip(work / f"{shards[0]}.npz")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = personamine.mine(**kwargs, on_shard_done=damage_the_first_when_the_last_is_done)
    assert shards[4:] == shards[:1]  # mined a second time, after the merge found it damaged
    assert any(shards[0] in str(w.message) and "checksum" in str(w.message) for w in caught)
    assert_identical_datasets(undisturbed, out)
    damaged = list((tmp_path / "out.h5.work").glob("damaged/*")) if (tmp_path / "out.h5.work").exists() else []
    assert damaged == []  # the finished run removed its work dir, the set-aside copies with it


def test_an_unreadable_record_is_set_aside(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path):
    kwargs = mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp_path, n_shards=4,
                         keep_work_dir=True)
    first = interrupted_run(kwargs, 2)
    record = tmp_path / "out.h5.work" / f"{first[0]}.json"
    record.write_text(record.read_text()[:10])
    with pytest.warns(UserWarning, match="unreadable"):
        personamine.mine(**kwargs)
    assert sorted(p.name for p in (tmp_path / "out.h5.work" / "damaged").iterdir())[0].startswith(first[0])
    assert json.loads((tmp_path / "out.h5.work" / f"{first[0]}.json").read_text())["sha256"]
