"""The top-k merge is associative, order-independent and deterministic, with dedupe, on random buffers."""

from __future__ import annotations

import numpy as np
import pytest

from personamine.merge.entries import TOKEN_FILL, Entries, SparseRows, WindowTable
from personamine.merge.stats import FeatureStats
from personamine.merge.topk import TopKBuffer

F, K, T = 4, 5, 6


def random_candidates(rng, n, doc_base):
    # Few distinct token rows and coarse scores, so duplicates and exact ties are common.
    pool = rng.integers(0, 4, size=(6, T)).astype(np.int32)
    rows = pool[rng.integers(0, len(pool), n)]
    acts = rng.random((n, T)).astype(np.float32)
    acts[rng.random((n, T)) < 0.5] = 0.0  # stored sparse: zeros must come back as zeros
    return Entries.from_dense(
        feature=rng.integers(0, F, n).astype(np.int64), score=rng.integers(1, 6, n).astype(np.float32),
        document=doc_base + rng.integers(0, 5, n).astype(np.int64), window_start=rng.integers(0, 3, n) * 10,
        length=np.full(n, T, np.int32), token_ids=rows, activations=acts,
    )


def brute_force(cands, dedupe):
    out = {}
    for f in range(F):
        items = sorted((-float(cands.score[i]), int(cands.document[i]), int(cands.window_start[i]), i)
                       for i in range(len(cands)) if cands.feature[i] == f)
        kept, seen = [], set()
        for _, doc, ws, i in items:
            key = tuple(cands.token_ids[i].tolist())
            if dedupe and key in seen:
                continue
            seen.add(key)
            kept.append((doc, ws))
        out[f] = kept[:K]
    return out


def as_lists(buf):
    d = buf.dense()
    return {f: [(int(d.document[f, k]), int(d.window_start[f, k])) for k in range(K)
                if not np.isnan(d.score[f, k])] for f in range(F)}


@pytest.mark.parametrize("dedupe", [True, False])
@pytest.mark.parametrize("seed", range(20))
def test_merge_any_grouping_equals_brute_force(seed, dedupe):
    rng = np.random.default_rng(seed)
    # Parts hold disjoint documents (as shards do); a (document, start) pair is one window.
    parts = [random_candidates(rng, rng.integers(0, 25), 100 * p) for p in range(4)]
    for p in parts:  # one window, one content: make (document, start) determine the tokens
        key = p.windows.document * 1000 + p.windows.window_start
        tokens = np.array([[hash((int(k), j)) % 4 for j in range(T)] for k in key], np.int32).reshape(-1, T)
        p.windows = WindowTable.build(p.windows.document, p.windows.window_start, p.windows.length, tokens)
    buffers = [TopKBuffer.empty(F, K, T, dedupe).update(p) for p in parts]
    want = brute_force(Entries.concat(parts), dedupe)
    left = buffers[0].merge(buffers[1]).merge(buffers[2]).merge(buffers[3])
    right = buffers[3].merge(buffers[2].merge(buffers[1].merge(buffers[0])))
    assert as_lists(left) == want == as_lists(right)
    for name in ("score", "token_ids", "activations", "length"):
        np.testing.assert_array_equal(getattr(left.dense(), name), getattr(right.dense(), name))
    # Each kept entry carries its own window's tokens and activations, whatever grouping brought it there.
    whole = Entries.concat(parts)
    d = left.dense()
    for f, k in zip(*np.nonzero(~np.isnan(d.score)), strict=True):
        same = np.nonzero((whole.feature == f) & (whole.document == d.document[f, k])
                          & (whole.window_start == d.window_start[f, k]) & (whole.score == d.score[f, k]))[0]
        assert any(np.array_equal(d.activations[f, k], whole.activations[i])
                   and np.array_equal(d.token_ids[f, k], whole.token_ids[i]) for i in same)


def test_incremental_updates_equal_one_update():
    rng = np.random.default_rng(7)
    cands = random_candidates(rng, 60, 0)
    one = TopKBuffer.empty(F, K, T)
    one.update(cands)
    many = TopKBuffer.empty(F, K, T)
    for lo in range(0, 60, 7):
        many.update(cands.take(np.arange(lo, min(lo + 7, 60))))
    for name, value in one.arrays().items():
        np.testing.assert_array_equal(value, many.arrays()[name], err_msg=name)


@pytest.mark.parametrize("dedupe", [True, False])
def test_selection_a_block_of_features_at_a_time_equals_one_selection(dedupe):
    """Large pools are selected in groups of features (``feature_blocks``); any group size gives the same rows."""
    from personamine.merge.entries import feature_blocks
    from personamine.merge.topk import _select

    cands = random_candidates(np.random.default_rng(3), 400, 0)
    whole = _select(cands, K, dedupe, block=len(cands))
    assert len(feature_blocks(cands.feature, 7)) > 1
    for block in (1, 7, 50):
        np.testing.assert_array_equal(_select(cands, K, dedupe, block=block), whole)


def test_empty_buffer_conventions():
    d = TopKBuffer.empty(2, 3, 4).dense()
    assert np.isnan(d.score).all() and (d.document == -1).all() and (d.token_ids == TOKEN_FILL).all()
    assert (TopKBuffer.empty(2, 3, 4).floor() == 0).all()


def test_stats_merge_is_associative():
    rng = np.random.default_rng(0)

    def stats():
        s = FeatureStats.empty(3)
        s.active_tokens[:] = rng.integers(0, 9, 3)
        s.add_values(rng.integers(0, 3, 20), rng.random(20).astype(np.float32) * 50)
        s.max[:] = rng.random(3)
        s.histogram[:] = rng.integers(0, 5, s.histogram.shape)
        s.counters["tokens_scored"] = int(rng.integers(0, 100))
        return s

    a, b, c = stats(), stats(), stats()
    left, right = a.merge(b).merge(c), a.merge(b.merge(c))
    for name, value in left.arrays().items():
        np.testing.assert_array_equal(value, right.arrays()[name])
    # A checkpoint keeps only the histogram's nonzero cells, and reads back to the same dense histogram.
    a.histogram[1] = 0
    stored = a.arrays()
    assert stored["histogram_counts"].size == int((a.histogram != 0).sum())
    back = FeatureStats.from_arrays(stored)
    np.testing.assert_array_equal(back.histogram, a.histogram)
    np.testing.assert_array_equal(FeatureStats.from_arrays({**stored, "histogram": a.histogram}).histogram,
                                  a.histogram)


def test_arrays_round_trip_and_windows_are_stored_once():
    rng = np.random.default_rng(3)
    # 40 entries over 4 features, all from 3 windows: the buffer must hold the 3 windows, not one per entry.
    tokens = rng.integers(0, 9, (3, T)).astype(np.int32)
    window = rng.integers(0, 3, 40)
    acts = rng.random((40, T)).astype(np.float32) * (rng.random((40, T)) < 0.2)
    cands = Entries(feature=np.repeat(np.arange(F), 10), score=acts.max(axis=1) + 1, window=window,
                    acts=SparseRows.from_dense(acts),
                    windows=WindowTable.build(np.arange(3), np.zeros(3), np.full(3, T), tokens))
    buf = TopKBuffer.empty(F, K, T, dedupe=False).update(cands)
    assert len(buf) == F * K and len(buf.entries.windows) == 3
    assert buf.entries.acts.value.size == int((buf.entries.activations != 0).sum())
    back = TopKBuffer.from_arrays(buf.arrays())
    for name in ("score", "document", "window_start", "length", "token_ids", "activations"):
        np.testing.assert_array_equal(getattr(buf.dense(), name), getattr(back.dense(), name))
    # A range of features as a dense block equals the same rows of the whole block.
    whole, part = buf.dense(), buf.dense(1, 3)
    np.testing.assert_array_equal(part.token_ids, whole.token_ids[1:3])
    np.testing.assert_array_equal(part.activations, whole.activations[1:3])


def test_checkpoint_of_the_earlier_dense_layout_still_loads():
    rng = np.random.default_rng(4)
    buf = TopKBuffer.empty(F, K, T).update(random_candidates(rng, 30, 0))
    d = buf.dense()
    f_idx, k_idx = np.nonzero(~np.isnan(d.score))
    legacy = {name: getattr(d, name)[f_idx, k_idx] for name in
              ("score", "document", "window_start", "length", "token_ids", "activations")}
    legacy.update(shape=np.array([F, K, T]), slot_feature=f_idx, slot_rank=k_idx)
    back = TopKBuffer.from_arrays(legacy)
    for name in ("score", "document", "window_start", "token_ids", "activations"):
        np.testing.assert_array_equal(getattr(back.dense(), name), getattr(d, name))


def test_sparse_rows_round_trip():
    rng = np.random.default_rng(5)
    dense = rng.random((9, T)).astype(np.float32) * (rng.random((9, T)) < 0.3)
    rows = SparseRows.from_dense(dense)
    assert rows.value.size == int((dense != 0).sum())
    np.testing.assert_array_equal(rows.dense(T), dense)
    pick = np.array([4, 0, 4, 8])
    np.testing.assert_array_equal(rows.take(pick).dense(T), dense[pick])
    np.testing.assert_array_equal(SparseRows.concat([rows.take(pick), rows]).dense(T),
                                  np.concatenate([dense[pick], dense]))


@pytest.mark.parametrize("seed", range(5))
def test_dedupe_is_exact_even_when_fingerprints_collide(seed, monkeypatch):
    """Windows are deduplicated by two 64-bit fingerprints, checked token by token: a collision (forced here by
    fingerprints that map everything to one value) must fall back to comparing tokens, not drop a distinct window."""
    import personamine.merge.entries as entries

    rng = np.random.default_rng(seed)
    cands = random_candidates(rng, 80, 0)
    want = brute_force(cands, dedupe=True)
    distinct = {tuple(r) for r in cands.token_ids.tolist()}
    assert len(set(cands.windows.fingerprint.tolist())) == len(distinct) > 1
    real = TopKBuffer.empty(F, K, T).update(cands)
    monkeypatch.setattr(entries, "fingerprints", lambda token_ids, length, which=0: np.zeros(len(token_ids),
                                                                                             np.uint64))
    collided = TopKBuffer.empty(F, K, T).update(random_candidates(np.random.default_rng(seed), 80, 0))
    assert (collided.entries.windows.fingerprint == 0).all() and (collided.entries.windows.fingerprint2 == 0).all()
    assert as_lists(real) == want == as_lists(collided)
