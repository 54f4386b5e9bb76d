"""One shard's screening: which rows are samples (the last turn the assistant's, after another turn), what a row
limit and a document budget stop at, and a malformed row named by file, unit and row."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures import SAE_LAYER, TINY_HIDDEN_SIZE, write_screen_corpus

from personamine.config import ScreenConfig
from personamine.corpus import CorpusSpec, open_manifest
from personamine.corpus.conversations import BadConversation
from personamine.shards.plan import Budget, Shard
from personamine.shards.screen import ScreenEngine, run_screen_shard

ROWS = [[{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello there."}],
        [{"role": "assistant", "content": "Alone."}],  # no prompt: no sample
        [{"role": "user", "content": "A."}, {"role": "assistant", "content": "B."}, {"role": "user", "content": "C."}],
        [{"role": "user", "content": "A."}, {"role": "assistant", "content": "B."},
         {"role": "user", "content": "C."}, {"role": "assistant", "content": "D, the last turn."}],
        [{"role": "user", "content": "Q."}, {"role": "assistant", "content": ""}]]  # an empty response: no sample


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    cfg = ScreenConfig(model=str(tiny_model_dir), directions="unused", corpus="unused", layer=SAE_LAYER,
                       max_new_tokens=3, batch_size=2)
    return ScreenEngine(cfg, np.eye(1, TINY_HIDDEN_SIZE, dtype=np.float32))


def _unit(path):
    return open_manifest(CorpusSpec(str(path), column="messages")).ref(0)


def test_samples_limits_and_budget(engine, tmp_path):
    unit = _unit(write_screen_corpus(tmp_path / "c.jsonl", ROWS))
    whole = run_screen_shard(engine, Shard((unit,)))
    assert whole.arrays["row"].tolist() == [0, 3] and whole.strings["response"] == ["Hello there.", "D, the last turn."]
    assert "C." in whole.strings["prompt"][1]  # the earlier turns are the prompt
    assert whole.counters["rows_not_samples"] == 3 and whole.coverage.units[0].complete
    assert (whole.doc_tokens[0][[1, 2, 4]] == 0).all() and (whole.doc_tokens[0][[0, 3]] > 0).all()
    limited = run_screen_shard(engine, Shard((unit,), row_limit=2))
    assert limited.arrays["row"].tolist() == [0] and limited.coverage.units[0].rows == 2
    assert not limited.coverage.units[0].complete and not limited.coverage.reached_budget
    budget = run_screen_shard(engine, Shard((unit,), budget=Budget(documents=4)))
    assert budget.arrays["row"].tolist() == [0, 3] and budget.coverage.reached_budget
    np.testing.assert_array_equal(budget.arrays["projection_response"], whole.arrays["projection_response"])


def test_a_malformed_row_is_named(engine, tmp_path):
    unit = _unit(write_screen_corpus(tmp_path / "bad.jsonl", [ROWS[0], [{"role": "narrator", "content": "x"}]]))
    with pytest.raises(BadConversation, match=r"unit 0 row 1: the conversation turn 0 has an unknown role"):
        run_screen_shard(engine, Shard((unit,)))
