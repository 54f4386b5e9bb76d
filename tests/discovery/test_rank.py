"""Ranking: the seed's raw ranking (contrast none) and the ranking by the CI's lower bound with every statistic."""

from __future__ import annotations

import numpy as np

from personamine.discovery.rank import rank_features, ranking_from_statistics
from personamine.discovery.stats import compare


def test_raw_ranking_orders_by_score_then_id_and_drops_zeros():
    persona = np.array([[0, 2, 1, 0], [0, 2, 3, 0]], np.float32)
    control = np.array([[0, 1, 0, 0], [0, 1, 0, 1]], np.float32)
    r = rank_features(persona, control)
    assert r.feature_ids.tolist() == [2, 1, 3]  # scores 2, 1, -0.5; feature 0 scores 0
    np.testing.assert_allclose(r.score, [2, 1, -0.5])
    raw = rank_features(persona, None)
    assert raw.feature_ids.tolist() == [1, 2] and np.isnan(raw.control_mean).all()


def test_ranking_from_statistics_keeps_every_statistic_in_rank_order():
    rng = np.random.default_rng(0)
    a = np.maximum(rng.normal(size=(12, 40)), 0).astype(np.float32)
    b = np.maximum(rng.normal(size=(12, 40)) - 0.5, 0).astype(np.float32)
    a[:, 7] += 3  # a real effect, on every pair
    stats = compare(a, b, paired=True, n_boot=200, seed=0)
    r = ranking_from_statistics(stats, len(a), len(b))
    assert r.feature_ids[0] == 7 and (np.diff(r.ci_low) <= 0).all()
    ids = r.feature_ids
    for name in ("ci_low", "ci_high", "p_value", "q_value", "effect_size", "support"):
        np.testing.assert_array_equal(getattr(r, name), getattr(stats, name)[ids])
    np.testing.assert_allclose(r.score, a.mean(0)[ids].astype(np.float64) - b.mean(0)[ids], atol=1e-6)
    np.testing.assert_allclose(r.persona_firing, (a > 0).mean(0)[ids])
    assert set(ids.tolist()) == set(np.nonzero(stats.tested)[0].tolist())
    assert ranking_from_statistics(stats, len(a), len(b), limit=5).feature_ids.size == 5
