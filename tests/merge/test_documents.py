"""Per-document scores: built batch by batch and chunk by chunk they equal numpy's per-document mean, max, min and
per-turn mean over the same tokens; merging shards' disjoint documents is exact and order-free; arrays round-trip."""

from __future__ import annotations

import numpy as np
import torch

from personamine.merge.documents import DocumentScores
from personamine.shards.readouts import DocumentScorer


def _tokens(seed: int, n: int = 400, docs: int = 7, channels: int = 5):
    rng = np.random.default_rng(seed)
    document = np.sort(rng.integers(0, docs, n)) + (3 << 32)  # uids of unit 3
    turn = np.where(rng.random(n) < 0.6, rng.integers(0, 3, n), -1)
    values = rng.standard_normal((n, channels)).astype(np.float32)
    return document, turn, values


def _scored(document, turn, values, batches: int, chunk: int) -> DocumentScores:
    scorer = DocumentScorer(values.shape[1])
    for rows in np.array_split(np.arange(document.size), batches):
        for start in range(0, values.shape[1], chunk):
            scorer.add(torch.from_numpy(document[rows]), torch.from_numpy(turn[rows]),
                       torch.from_numpy(values[rows, start:start + chunk]), start=start)
    return scorer.result()


def test_batches_and_chunks_equal_numpy_per_document_and_turn():
    document, turn, values = _tokens(0)
    got = _scored(document, turn, values, batches=6, chunk=2)
    assert got.document.tolist() == sorted(set(document.tolist()))
    for row, d in enumerate(got.document.tolist()):
        mine = values[document == d].astype(np.float64)
        assert got.n_tokens[row] == mine.shape[0]
        np.testing.assert_allclose(got.mean[row], mine.mean(0), rtol=1e-12)
        np.testing.assert_array_equal(got.max[row], values[document == d].max(0))
        np.testing.assert_array_equal(got.min[row], values[document == d].min(0))
    cells = sorted({(d, t) for d, t in zip(document.tolist(), turn.tolist(), strict=True) if t >= 0})
    assert list(zip(got.turn_document.tolist(), got.turn.tolist(), strict=True)) == cells
    for row, (d, t) in enumerate(cells):
        mine = values[(document == d) & (turn == t)].astype(np.float64)
        assert got.turn_n_tokens[row] == mine.shape[0]
        np.testing.assert_allclose(got.turn_mean[row], mine.mean(0), rtol=1e-12)
    # one batch, one chunk: the same numbers (float64 sums of a handful of float32 values)
    whole = _scored(document, turn, values, batches=1, chunk=values.shape[1])
    np.testing.assert_allclose(whole.total, got.total, rtol=1e-12)


def test_merging_disjoint_shards_is_exact_in_any_order():
    a = _scored(*_tokens(1, docs=4), batches=2, chunk=5)
    b_doc, b_turn, b_values = _tokens(2, docs=4)
    b = _scored(b_doc + (1 << 32), b_turn, b_values, batches=3, chunk=5)  # another unit's documents
    ab, ba = a.merge(b), b.merge(a)
    for name, value in ab.arrays().items():
        np.testing.assert_array_equal(value, ba.arrays()[name], err_msg=name)
    assert np.all(np.diff(ab.document) > 0)
    round_trip = DocumentScores.from_arrays(ab.arrays())
    for name, value in ab.arrays().items():
        np.testing.assert_array_equal(value, round_trip.arrays()[name], err_msg=name)
    empty = DocumentScores.empty(5)
    np.testing.assert_array_equal(empty.merge(a).total, a.total)


def test_ranked_and_turn_rows():
    document, turn, values = _tokens(4)
    scores = _scored(document, turn, values, batches=2, chunk=5)
    for channel in range(values.shape[1]):
        top, bottom = scores.ranked(channel, 3)
        means = scores.mean[:, channel]
        assert means[top].tolist() == sorted(means, reverse=True)[:3]
        assert means[bottom].tolist() == sorted(means)[:3]
    for doc in scores.document.tolist():
        rows = scores.turn_rows(doc)
        assert (scores.turn_document[rows] == doc).all() and rows.size == (scores.turn_document == doc).sum()
        assert scores.turn[rows].tolist() == sorted(set(turn[(document == doc) & (turn >= 0)].tolist()))


def test_ranking_leaves_out_documents_too_short_to_have_a_mean():
    document = np.array([0, 1, 1, 1, 2, 2, 2], np.int64)
    values = np.array([[9.0], [1.0], [2.0], [3.0], [-1.0], [-2.0], [-3.0]], np.float32)
    scores = _scored(document, np.full(7, -1), values, batches=1, chunk=1)
    top, bottom = scores.ranked(0, 5, min_tokens=3)
    assert scores.document[top].tolist() == [1, 2] and scores.document[bottom].tolist() == [2, 1]
    top, _ = scores.ranked(0, 5, min_tokens=10)  # none has 10 tokens: all of them
    assert scores.document[top].tolist() == [0, 1, 2]
