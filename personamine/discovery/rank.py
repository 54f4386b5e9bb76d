"""Ranking features by how much more they fire on the persona prompts than on their controls."""

from __future__ import annotations

import numpy as np

from personamine.discovery.stats import FeatureStatistics, rank_order
from personamine.files.discover import Ranking

MAX_RANKED = 1000  # a discovery file lists at most this many features (the rest score ~0 or below)


def rank_features(persona: np.ndarray, control: np.ndarray | None, limit: int = MAX_RANKED) -> Ranking:
    """Score = mean(persona) - mean(control), or the raw persona mean without controls.

    Features with a zero score are dropped; ties are broken by feature id so the order is reproducible.
    """
    p_mean = persona.astype(np.float64).mean(0)
    p_fire = (persona > 0).mean(0)
    if control is not None:
        c_mean = control.astype(np.float64).mean(0)
        c_fire = (control > 0).mean(0)
        score = p_mean - c_mean
    else:
        c_mean = np.full_like(p_mean, np.nan)
        c_fire = np.full_like(p_fire, np.nan)
        score = p_mean
    ids = np.arange(score.size)
    order = np.lexsort((ids, -score))
    order = order[score[order] != 0][:limit]
    return Ranking(feature_ids=order.astype(np.int64), score=score[order], persona_mean=p_mean[order],
                   control_mean=c_mean[order], persona_firing=p_fire[order], control_firing=c_fire[order])


def ranking_from_statistics(stats: FeatureStatistics, n_a: int, n_b: int, limit: int = MAX_RANKED) -> Ranking:
    """The tested features ranked by the lower bound of their CI (``stats.rank_order``: one prompt cannot win it),
    with every statistic; the score is the mean difference."""
    order = rank_order(stats)[:limit]
    return Ranking(feature_ids=order.astype(np.int64), score=stats.mean_difference[order],
                   persona_mean=stats.mean_a[order], control_mean=stats.mean_b[order],
                   persona_firing=stats.fires_a[order] / max(n_a, 1), control_firing=stats.fires_b[order] / max(n_b, 1),
                   ci_low=stats.ci_low[order], ci_high=stats.ci_high[order], p_value=stats.p_value[order],
                   q_value=stats.q_value[order], effect_size=stats.effect_size[order], support=stats.support[order])
