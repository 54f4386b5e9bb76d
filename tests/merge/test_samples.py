"""Interval samples: the hash, the mergeable selection, and mining runs checked against brute force."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from fixtures import FEATURES, SAE_LAYER, TIE, UNIT_BYTES, mine_kwargs, sae_file
from reference import key_int, line_uids, load_texts, reference_topk

import personamine
from personamine.merge.entries import Entries
from personamine.merge.samples import (
    INTERVAL_EDGES,
    KEY_NONE,
    N_INTERVALS,
    SampleBuffer,
    interval_of,
    splitmix64,
    window_key,
)
from personamine.merge.stats import HISTOGRAM_EDGES

_M64 = 2**64 - 1


def _interval_ref(score: float) -> int:
    """Edges compared in float32, as the histogram does; first and last interval open-ended."""
    s = np.float32(score)
    inside = [k for k in range(N_INTERVALS) if np.float32(INTERVAL_EDGES[k]) <= s]
    return min(max(inside, default=0), N_INTERVALS - 1)


def test_splitmix64_matches_published_sequence():
    # The published splitmix64 outputs for seed 1234567 (state advanced by the golden gamma before each output).
    expected = [6457827717110365317, 3203168211198807973, 9817491932198370423, 4593380528125082431,
                16408922859458223821]
    states = np.array([(1234567 + k * 0x9E3779B97F4A7C15) & _M64 for k in range(5)], dtype=np.uint64)
    assert splitmix64(states).tolist() == expected
    docs, starts = np.array([0, 1, 7, 123456789, 2**40]), np.array([0, 63, 0, 4096, 5])
    assert window_key(docs, starts).tolist() == [key_int(int(d), int(s)) for d, s in zip(docs, starts, strict=True)]
    assert (window_key(docs, starts) >= 0).all()


def test_intervals_are_histogram_edges_two_per_decade():
    assert set(INTERVAL_EDGES.tolist()) <= set(HISTOGRAM_EDGES.tolist())
    np.testing.assert_allclose(INTERVAL_EDGES[1:] / INTERVAL_EDGES[:-1], np.sqrt(10))
    scores = np.float32([1e-9, 1e-3, 0.0316, 0.0317, 0.1, 0.3, 3.2, 1e5, 1e9])
    assert interval_of(scores).tolist() == [_interval_ref(s) for s in scores]


def _random_candidates(rng, n: int, n_features: int, ctx_len: int = 6) -> Entries:
    """Distinct windows (a window is one document and start) with random scores; a third share token content."""
    token_ids = rng.integers(0, 5, (n, ctx_len)).astype(np.int32)
    token_ids[rng.random(n) < 0.3] = token_ids[0]
    window = rng.permutation(n)
    return Entries.from_dense(
        feature=rng.integers(0, n_features, n).astype(np.int64),
        score=np.float32(10.0 ** rng.uniform(-2.5, 1.5, n)),
        document=window.astype(np.int64) // 8, window_start=window.astype(np.int64) % 8 * 16,
        length=np.full(n, ctx_len, np.int32), token_ids=token_ids,
        activations=rng.random((n, ctx_len)).astype(np.float32),
    )


def _naive(c: Entries, m: int, dedupe: bool, key_document: list[int] | None = None) -> set[tuple]:
    """Keep per cell the m smallest keys; a key hashes ``key_document`` (default: the entry's document)."""
    cells: dict[tuple[int, int], list[tuple]] = {}
    for j in range(len(c)):
        cell = (int(c.feature[j]), _interval_ref(float(c.score[j])))
        doc_key = int(c.document[j]) if key_document is None else key_document[j]
        cells.setdefault(cell, []).append((key_int(doc_key, int(c.window_start[j])),
                                           int(c.document[j]), int(c.window_start[j]), tuple(c.token_ids[j].tolist())))
    kept = set()
    for cell, items in cells.items():
        items.sort()
        seen, n = set(), 0
        for _key, doc, start, toks in items:
            if dedupe and toks in seen:
                continue
            seen.add(toks)
            if n < m:
                kept.add((*cell, doc, start))
                n += 1
    return kept


def _as_set(buf: SampleBuffer) -> set[tuple]:
    return set(zip(buf.feature.tolist(), buf.interval.tolist(), buf.entries.document.tolist(),
                   buf.entries.window_start.tolist(), strict=True))


@pytest.mark.parametrize("dedupe", [True, False])
def test_selection_is_exact_and_associative(dedupe):
    rng = np.random.default_rng(0)
    c = _random_candidates(rng, 3000, n_features=7)
    m = 4
    one = SampleBuffer.empty(6, m, dedupe).update(c)
    assert _as_set(one) == _naive(c, m, dedupe)
    # Any split, merged in any grouping, gives the same table in the same order.
    cuts = np.sort(rng.choice(np.arange(1, len(c)), 6, replace=False))
    parts = [SampleBuffer.empty(6, m, dedupe).update(c.take(idx)) for idx in np.split(rng.permutation(len(c)), cuts)]
    left = parts[0]
    for p in parts[1:]:
        left = left.merge(p)
    right = parts[-1]
    for p in parts[-2::-1]:
        right = p.merge(right)
    for other in (left, right):
        for name in ("feature", "interval", "key", "score"):
            np.testing.assert_array_equal(getattr(other, name), getattr(one, name))
        for name in ("document", "window_start", "token_ids", "activations"):
            np.testing.assert_array_equal(getattr(other.entries, name), getattr(one.entries, name))
    # Thresholds: the largest kept key of each full cell, "none" elsewhere.
    limit = one.thresholds(7)
    for f in range(7):
        for k in range(N_INTERVALS):
            keys = one.key[(one.feature == f) & (one.interval == k)]
            assert limit[f, k] == (keys.max() if keys.size == m else KEY_NONE)


@pytest.mark.parametrize("dedupe", [True, False])
def test_selection_a_block_of_features_at_a_time_equals_one_selection(dedupe):
    """As for the top-k (tests/merge/test_topk.py): any group size of ``feature_blocks`` gives the same rows."""
    from personamine.merge.samples import _select, interval_of, window_key

    c = _random_candidates(np.random.default_rng(5), 3000, n_features=40)
    interval, key = interval_of(c.score), window_key(c.document, c.window_start)
    whole = _select(c, interval, key, 4, dedupe, block=len(c))
    for block in (1, 37, 500):
        np.testing.assert_array_equal(_select(c, interval, key, 4, dedupe, block=block), whole)


@pytest.fixture(scope="module")
def shard_runs(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("samples")
    one = personamine.mine(**mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp / "a",
                                         n_shards=1))
    seven = personamine.mine(**mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp / "b",
                                           n_shards=7, batch_tokens=96, work_dir=str(tmp / "work7"),
                                           keep_work_dir=True))
    # Same run again from the seven checkpoints alone: samples survive the work dir round trip.
    resumed = personamine.mine(**mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp / "c",
                                             n_shards=7, batch_tokens=96, work_dir=str(tmp / "work7")))
    return [personamine.read_results(p) for p in (one, seven, resumed)]


def _assert_same_samples(a: SampleBuffer, b: SampleBuffer) -> None:
    for name in ("feature", "interval", "key"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for name in ("document", "window_start", "length", "token_ids"):
        np.testing.assert_array_equal(getattr(a.entries, name), getattr(b.entries, name), err_msg=name)
    np.testing.assert_allclose(a.score, b.score, rtol=0, atol=TIE)
    np.testing.assert_allclose(a.entries.activations, b.entries.activations, rtol=0, atol=TIE)


def test_samples_equal_for_1_and_7_shards_and_after_resume(shard_runs):
    one, seven, resumed = shard_runs
    assert one.attrs["format_version"] == 3
    assert len(one.samples) > 100 and one.samples.per_interval == 5
    _assert_same_samples(one.samples, seven.samples)
    _assert_same_samples(seven.samples, resumed.samples)


def test_every_sample_lies_in_its_interval(shard_runs):
    res = shard_runs[0]
    s = res.samples
    low, high = INTERVAL_EDGES[s.interval].astype(np.float32), INTERVAL_EDGES[s.interval + 1].astype(np.float32)
    first, last = s.interval == 0, s.interval == N_INTERVALS - 1
    assert ((s.score >= low) | first).all() and ((s.score < high) | last).all()
    # The interval is the window's max, not some token's: the score is the max of the stored per-token values.
    np.testing.assert_array_equal(s.score, s.entries.activations.max(axis=1))
    assert (s.score > 0).all()
    assert (s.score <= res.max[s.feature]).all()
    # At most m per (feature, interval); more than one interval is actually in use.
    cells = s.feature * N_INTERVALS + s.interval
    assert np.bincount(cells).max() == 5
    assert np.unique(s.interval).size >= 2
    # The public accessor groups one feature's rows by interval.
    grouped = res.interval_samples(FEATURES[0])
    rows = s.rows_of(0)
    assert sum(len(v) for v in grouped.values()) == rows.size
    for k, windows in grouped.items():
        lo, hi = res.interval_bounds(k)
        assert all(lo <= w["score"] < hi for w in windows)


def test_samples_equal_brute_force(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path):
    """All windows scored one at a time by the full model and full SAE, binned, hashed and picked in Python."""
    n_docs, m = 30, 3
    ae = sae_file(tiny_sae_dir)
    from transformers import AutoTokenizer

    bos = AutoTokenizer.from_pretrained(tiny_model_dir).bos_token_id
    ref = reference_topk(tiny_model_dir, ae, load_texts(tiny_corpus_jsonl)[:n_docs], layer=SAE_LAYER,
                         features=FEATURES, ctx_len=16, top_k=None, prefix=[bos], dedupe=False)
    res = personamine.read_results(personamine.mine(
        **mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp_path, max_documents=n_docs,
                      samples_per_interval=m, n_shards=2)))
    s = res.samples
    uid_of = line_uids(tiny_corpus_jsonl, UNIT_BYTES)
    doc, start, length, tokens, acts = (getattr(s.entries, name) for name in (
        "document", "window_start", "length", "token_ids", "activations"))
    inner = INTERVAL_EDGES[1:-1]
    checked = 0
    for row, f in enumerate(FEATURES):
        entries = ref[f]
        # A window whose score is within float rounding of an edge may bin either way: skip cells that hold one.
        near_edge = {_interval_ref(e.score) for e in entries if np.min(np.abs(inner - e.score)) <= TIE}
        cand = Entries.from_dense(
            feature=np.zeros(len(entries), np.int64), score=np.float32([e.score for e in entries]),
            document=np.array([e.document for e in entries]), window_start=np.array([e.window_start for e in entries]),
            length=np.full(len(entries), 16, np.int32),
            token_ids=np.array([list(e.tokens) + [-1] * (16 - len(e.tokens)) for e in entries], np.int32),
            activations=np.zeros((len(entries), 16), np.float32))
        # Keys hash each window's in-run document identity (unit, row), not its global index.
        uids = [uid_of[e.document] for e in entries]
        expected = {(k, d, w) for _, k, d, w in _naive(cand, m, dedupe=True, key_document=uids) if k not in near_edge}
        mine = s.rows_of(row)
        got = {(int(s.interval[r]), int(doc[r]), int(start[r])) for r in mine
               if int(s.interval[r]) not in near_edge}
        assert got == expected, f"feature {f}"
        by_window = {(e.document, e.window_start): e for e in entries}
        for r in mine:
            e = by_window[(int(doc[r]), int(start[r]))]
            assert abs(float(s.score[r]) - e.score) <= TIE
            n = int(length[r])
            assert tuple(tokens[r, :n].tolist()) == e.tokens
            np.testing.assert_allclose(acts[r, :n], e.activations, rtol=0, atol=TIE)
        checked += len(got)
    assert checked > 100


def test_zero_samples_per_interval_writes_an_empty_group(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path):
    out = personamine.mine(**mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp_path,
                                         samples_per_interval=0, max_documents=8))
    res = personamine.read_results(out)
    assert res.samples is not None and len(res.samples) == 0
    assert res.interval_samples(FEATURES[0]) == {}
    with h5py.File(out) as f:
        assert f["samples/token_ids"].shape == (0, 16)
    with pytest.raises(personamine.PersonamineError, match="samples_per_interval"):
        personamine.MineConfig(samples_per_interval=-1)
