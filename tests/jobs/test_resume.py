"""Interrupted runs resume to the same output; a changed config is refused; nothing half-written is left."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures import FEATURES, SAE_LAYER, mine_kwargs

import personamine
from personamine.errors import PersonamineError


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_the_same_output(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path):
    kw = mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp_path / "a", n_shards=5)
    done = []

    def fail_after_two(result):
        done.append(result.shard.name)
        if len(done) == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        personamine.mine(on_shard_done=fail_after_two, **kw)
    out = tmp_path / "a" / "out.h5"
    assert not out.exists()
    work = tmp_path / "a" / "out.h5.work"
    assert sorted(p.stem for p in work.glob("units-*.npz")) == done == ["units-000000-000001", "units-000002-000004"]

    resumed = []
    personamine.mine(on_shard_done=lambda r: resumed.append(r.shard.name), **kw)
    assert resumed == ["units-000005-000006", "units-000007-000009", "units-000010-000012"]  # none recomputed
    assert not work.exists()  # a finished run removes its checkpoints

    fresh = personamine.mine(**mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp_path / "b",
                                           n_shards=5))
    a, b = personamine.read_results(out), personamine.read_results(fresh)
    for name in ("score", "document", "window_start", "token_ids", "activations", "active_tokens", "histogram"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_changed_config_is_refused(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path):
    kw = mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp_path, n_shards=2,
                     max_documents=10, keep_work_dir=True)
    personamine.mine(**kw)
    with pytest.raises(PersonamineError, match=r"holds a different run \(changed: top_k\)"):
        personamine.mine(**{**kw, "top_k": 3})
    # Execution-only fields may change on resume.
    personamine.mine(**{**kw, "batch_tokens": 64, "progress": False})


def test_config_is_saved_in_the_output(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path):
    kw = mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp_path, max_documents=5)
    res = personamine.read_results(personamine.mine(**kw))
    assert res.config["features"] == FEATURES and res.config["layer"] == SAE_LAYER
    assert personamine.MineConfig.from_dict(res.config).fingerprint() == personamine.MineConfig(**kw).fingerprint()
    for key in ("model", "layer", "sae", "dict_size", "ctx_len", "top_k", "corpus", "tokenizer", "n_documents",
                "n_tokens_scored", "config", "personamine_version"):
        assert key in res.attrs
    assert res.attrs["format"] == "personamine.mine" and res.attrs["format_version"] >= 1
