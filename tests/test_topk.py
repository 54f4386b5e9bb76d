"""The top-k merge is associative, order-independent and deterministic, with dedupe, on random buffers."""

from __future__ import annotations

import numpy as np
import pytest

from personamine.merge.stats import FeatureStats
from personamine.merge.topk import TOKEN_FILL, Candidates, TopKBuffer

F, K, T = 4, 5, 6


def random_candidates(rng, n, doc_base):
    # Few distinct token rows and coarse scores, so duplicates and exact ties are common.
    pool = rng.integers(0, 4, size=(6, T)).astype(np.int32)
    rows = pool[rng.integers(0, len(pool), n)]
    return Candidates(
        feature=rng.integers(0, F, n).astype(np.int64), score=rng.integers(1, 6, n).astype(np.float32),
        document=doc_base + rng.integers(0, 5, n).astype(np.int64), window_start=rng.integers(0, 3, n) * 10,
        length=np.full(n, T, np.int32), token_ids=rows, activations=rng.random((n, T)).astype(np.float32),
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
    return {f: [(int(buf.document[f, k]), int(buf.window_start[f, k])) for k in range(K)
                if not np.isnan(buf.score[f, k])] for f in range(F)}


@pytest.mark.parametrize("dedupe", [True, False])
@pytest.mark.parametrize("seed", range(20))
def test_merge_any_grouping_equals_brute_force(seed, dedupe):
    rng = np.random.default_rng(seed)
    # Parts hold disjoint documents (as shards do); a (document, start) pair is one window.
    parts = [random_candidates(rng, rng.integers(0, 25), 100 * p) for p in range(4)]
    for p in parts:  # one window, one content: make (document, start) determine the tokens
        key = p.document * 1000 + p.window_start
        p.token_ids[:] = np.array([[hash((int(k), j)) % 4 for j in range(T)] for k in key], np.int32).reshape(-1, T)
    buffers = []
    for p in parts:
        b = TopKBuffer.empty(F, K, T, dedupe)
        b.update(p)
        buffers.append(b)
    want = brute_force(Candidates.concat(parts), dedupe)
    left = buffers[0].merge(buffers[1]).merge(buffers[2]).merge(buffers[3])
    right = buffers[3].merge(buffers[2].merge(buffers[1].merge(buffers[0])))
    assert as_lists(left) == want == as_lists(right)
    for name in ("score", "token_ids", "activations", "length"):
        np.testing.assert_array_equal(getattr(left, name), getattr(right, name))


def test_incremental_updates_equal_one_update():
    rng = np.random.default_rng(7)
    cands = random_candidates(rng, 60, 0)
    one = TopKBuffer.empty(F, K, T)
    one.update(cands)
    many = TopKBuffer.empty(F, K, T)
    for lo in range(0, 60, 7):
        idx = np.arange(lo, min(lo + 7, 60))
        many.update(Candidates(*(getattr(cands, n)[idx] for n in
                                 ("feature", "score", "document", "window_start", "length", "token_ids",
                                  "activations"))))
    for name, value in one.arrays().items():
        np.testing.assert_array_equal(value, getattr(many, name))


def test_empty_buffer_conventions():
    b = TopKBuffer.empty(2, 3, 4)
    assert np.isnan(b.score).all() and (b.document == -1).all() and (b.token_ids == TOKEN_FILL).all()
    assert (b.floor() == 0).all()


def test_stats_merge_is_associative():
    rng = np.random.default_rng(0)

    def stats():
        s = FeatureStats.empty(3)
        s.active_tokens[:] = rng.integers(0, 9, 3)
        s.activation_sum[:] = rng.integers(0, 99, 3)  # integers: float sums are exact in any order
        s.max[:] = rng.random(3)
        s.histogram[:] = rng.integers(0, 5, s.histogram.shape)
        s.counters["tokens_scored"] = int(rng.integers(0, 100))
        return s

    a, b, c = stats(), stats(), stats()
    left, right = a.merge(b).merge(c), a.merge(b.merge(c))
    for name, value in left.arrays().items():
        np.testing.assert_array_equal(value, right.arrays()[name])


def test_compact_round_trip_keeps_only_filled_slots():
    rng = np.random.default_rng(3)
    buf = TopKBuffer.empty(F, K, T)
    buf.update(random_candidates(rng, 7, 0))
    compact = buf.compact_arrays()
    assert compact["score"].size == int((~np.isnan(buf.score)).sum()) < F * K
    back = TopKBuffer.from_compact_arrays(compact)
    for name, value in buf.arrays().items():
        np.testing.assert_array_equal(value, getattr(back, name))


@pytest.mark.parametrize("seed", range(5))
def test_dedupe_is_exact_even_when_fingerprints_collide(seed, monkeypatch):
    """Windows are deduplicated by a 64-bit fingerprint, checked token by token: a collision (forced here by a
    fingerprint that maps everything to one value) must fall back to comparing tokens, not drop a distinct window."""
    import personamine.merge.topk as topk

    rng = np.random.default_rng(seed)
    cands = random_candidates(rng, 80, 0)
    want = brute_force(cands, dedupe=True)
    distinct = {tuple(r) for r in cands.token_ids.tolist()}
    assert len(set(topk._fingerprints(cands.token_ids, cands.length).tolist())) == len(distinct) > 1
    real = TopKBuffer.empty(F, K, T)
    real.update(cands)
    monkeypatch.setattr(topk, "_fingerprints", lambda token_ids, length: np.zeros(len(token_ids), np.uint64))
    collided = TopKBuffer.empty(F, K, T)
    collided.update(cands)
    assert as_lists(real) == want == as_lists(collided)
