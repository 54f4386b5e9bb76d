"""Non-activating examples: the mergeable selection, shard invariance, and mining runs checked against brute force."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from fixtures import FEATURES, SAE_LAYER, UNIT_BYTES, mine_kwargs, sae_file
from reference import RefDoc, key_int, line_uids, load_texts, reference_mine, reference_negatives

import personamine
from personamine.merge.entries import WindowTable
from personamine.merge.negatives import KEY_NONE, NegativeBuffer, batch_candidates, negative_entries


def _random_windows(rng, n: int, ctx_len: int = 6) -> WindowTable:
    token_ids = rng.integers(0, 4, (n, ctx_len)).astype(np.int32)
    token_ids[rng.random(n) < 0.3] = token_ids[0]  # a third share one content
    w = rng.permutation(n)
    return WindowTable.build(w // 8, w % 8 * 16, np.full(n, ctx_len, np.int32), token_ids)


def _naive(windows: WindowTable, feature: np.ndarray, window: np.ndarray, m: int, dedupe: bool) -> set[tuple]:
    kept = set()
    for f in np.unique(feature):
        rows = sorted(window[feature == f], key=lambda r: (key_int(int(windows.document[r]),
                                                                   int(windows.window_start[r])),
                                                           int(windows.document[r]), int(windows.window_start[r])))
        seen, n = set(), 0
        for r in rows:
            toks = tuple(windows.token_ids[r].tolist())
            if dedupe and toks in seen:
                continue
            seen.add(toks)
            if n < m:
                kept.add((int(f), int(windows.document[r]), int(windows.window_start[r])))
                n += 1
    return kept


def _as_set(buf: NegativeBuffer) -> set[tuple]:
    e = buf.entries
    return set(zip(e.feature.tolist(), e.document.tolist(), e.window_start.tolist(), strict=True))


@pytest.mark.parametrize("dedupe", [True, False])
def test_selection_is_exact_associative_and_limited(dedupe):
    rng = np.random.default_rng(1)
    windows = _random_windows(rng, 400)
    n = 3000
    feature, window = rng.integers(0, 5, n), rng.integers(0, 400, n)
    pair = np.unique(np.stack([feature, window], 1), axis=0)  # one entry per (feature, window)
    feature, window = pair[:, 0], pair[:, 1]
    m = 4
    one = NegativeBuffer.empty(6, m, dedupe).update(negative_entries(windows, window, feature))
    assert _as_set(one) == _naive(windows, feature, window, m, dedupe)
    assert (one.score == 0).all() and one.entries.acts.indptr[-1] == 0
    parts = []
    for idx in np.array_split(rng.permutation(feature.size), 5):
        parts.append(NegativeBuffer.empty(6, m, dedupe).update(negative_entries(windows, window[idx], feature[idx])))
    merged = parts[0]
    for p in parts[1:]:
        merged = merged.merge(p)
    assert isinstance(merged, NegativeBuffer)
    for name in ("feature", "key"):
        np.testing.assert_array_equal(getattr(merged, name), getattr(one, name))
    np.testing.assert_array_equal(merged.entries.token_ids, one.entries.token_ids)
    limit = one.limits(6)
    for f in range(6):
        keys = one.key[one.feature == f]
        assert limit[f] == (keys.max() if keys.size == m else KEY_NONE)
    assert limit[5] == KEY_NONE  # a feature with no candidate


def test_batch_candidates_one_per_content_in_key_order():
    rng = np.random.default_rng(2)
    windows = _random_windows(rng, 50)
    rows, keys = batch_candidates(windows, dedupe=True)
    ref = sorted(range(50), key=lambda r: (key_int(int(windows.document[r]), int(windows.window_start[r])),
                                           int(windows.document[r]), int(windows.window_start[r])))
    firsts, seen = [], set()
    for r in ref:
        if (t := tuple(windows.token_ids[r].tolist())) not in seen:
            seen.add(t)
            firsts.append(r)
    assert rows.tolist() == firsts
    assert keys.tolist() == [key_int(int(windows.document[r]), int(windows.window_start[r])) for r in firsts]
    assert batch_candidates(windows, dedupe=False)[0].tolist() == ref


EXAMPLE_LEN = 10


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path_factory):
    """1 shard, 7 shards with small batches, and the 7 again from their checkpoints alone; negatives kept as display
    spans shorter than the windows."""
    tmp = tmp_path_factory.mktemp("negatives")
    kw = dict(max_documents=24, negatives_per_feature=4, example_len=EXAMPLE_LEN, keep_work_dir=True)
    one = personamine.mine(**mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp / "a",
                                         n_shards=1, **kw))
    seven = personamine.mine(**mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp / "b",
                                           n_shards=7, batch_tokens=96, work_dir=str(tmp / "work7"), **kw))
    resumed = personamine.mine(**mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp / "c",
                                             n_shards=7, batch_tokens=96, work_dir=str(tmp / "work7"), **kw))
    return [personamine.read_results(p) for p in (one, seven, resumed)]


def test_negatives_equal_for_1_and_7_shards_and_after_resume(runs):
    one = runs[0]
    assert len(one.negatives) == 4 * len(FEATURES)
    for other in runs[1:]:
        for name in ("feature", "key"):
            np.testing.assert_array_equal(getattr(other.negatives, name), getattr(one.negatives, name))
        for name in ("document", "window_start", "length", "token_ids", "span_start", "roles"):
            np.testing.assert_array_equal(getattr(other.negatives.entries, name), getattr(one.negatives.entries, name))


def test_negatives_equal_brute_force_and_never_fire(runs, tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl):
    """Every window run alone through the full model and SAE; the sample picked in plain Python."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = load_texts(tiny_corpus_jsonl)[:24]
    docs = [RefDoc(i, tok(t, add_special_tokens=False, split_special_tokens=True)["input_ids"])
            for i, t in enumerate(texts) if isinstance(t, str)]
    _, stats = reference_mine(tiny_model_dir, sae_file(tiny_sae_dir), docs, layer=SAE_LAYER, features=FEATURES,
                              ctx_len=16, prefix=[tok.bos_token_id], example_len=EXAMPLE_LEN)
    uid_of = line_uids(tiny_corpus_jsonl, UNIT_BYTES)  # keys hash a window's in-run identity (unit, row)
    expected = reference_negatives(stats.windows, FEATURES, m=4, document_key=lambda d: uid_of[d])
    res = runs[0]
    assert any(w.span_start > 0 for f in FEATURES for w in expected[f])  # spans cut from inside the windows
    for f in FEATURES:
        got = res.non_activating(f)
        assert [(g["document"], g["window_start"]) for g in got] == [(w.document, w.window_start)
                                                                     for w in expected[f]], f"feature {f}"
        for g, w in zip(got, expected[f], strict=True):
            assert w.maxima[FEATURES.index(f)] == 0 and w.n_scored > 0
            assert tuple(g["token_ids"].tolist()) == w.span and g["span_start"] == w.span_start
            assert not g["activations"].any()
    # Not just the corpus's smallest keys for all: features that fire there skip them (the rule is per feature).
    assert len({tuple((w.document, w.window_start) for w in expected[f]) for f in FEATURES}) > 1


def test_features_subset_and_zero_and_old_files(runs, tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path):
    full = runs[0]
    part = personamine.read_results(full.path, features=[FEATURES[3], FEATURES[7]])
    for f in (FEATURES[3], FEATURES[7]):
        a, b = part.non_activating(f), full.non_activating(f)
        assert [(x["document"], x["window_start"]) for x in a] == [(x["document"], x["window_start"]) for x in b]
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x["token_ids"], y["token_ids"])
    assert len(part.negatives.entries.windows) <= len(full.negatives.entries.windows)
    # A file without the group (written before it existed) reads with no negatives.
    old = tmp_path / "old.h5"
    old.write_bytes(full.path.read_bytes())
    with h5py.File(old, "a") as f:
        del f["negatives"]
    res = personamine.read_results(old)
    assert res.negatives is None and res.non_activating(FEATURES[0]) == []
    off = personamine.read_results(personamine.mine(**mine_kwargs(
        tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp_path / "off", max_documents=6,
        negatives_per_feature=0)))
    assert len(off.negatives) == 0 and off.non_activating(FEATURES[0]) == []
    with pytest.raises(personamine.PersonamineError, match="negatives_per_feature"):
        personamine.MineConfig(negatives_per_feature=-1)


def test_gatherer_takes_the_first_m_candidates_under_the_limit():
    import torch

    from personamine.shards.negatives import NegativeGatherer

    rng = np.random.default_rng(3)
    windows = _random_windows(rng, 40)
    rows, keys = batch_candidates(windows, dedupe=False)
    scores = torch.from_numpy(np.float32(rng.random((40, 3)) < 0.4) * 2.5)  # [W, F]: 40% of windows fire
    unscored = int(rows[0])  # the smallest key, would be every feature's first negative, but has no scored token
    scores[unscored] = 0
    scored_window = torch.from_numpy(np.repeat(np.setdiff1d(np.arange(40), [unscored]), 3))
    g = NegativeGatherer(5, per_feature=3, dedupe=False, device=torch.device("cpu"), span=6, before=4)
    g.limit[3] = int(keys[10])  # feature 3 (chunk column 1) only takes keys up to the 11th smallest
    got = g.gather(windows, scored_window, torch.zeros_like(scored_window), 2, 5, scores)
    for col, f in enumerate(range(2, 5)):
        allowed = [int(r) for r, k in zip(rows, keys, strict=True) if r != unscored and scores[r, col] == 0
                   and (f != 3 or k <= keys[10])]
        assert got.window[got.feature == f].tolist() == allowed[:3], f
    assert (got.score == 0).all()
