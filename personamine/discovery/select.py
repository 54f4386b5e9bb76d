"""Which features a run mines: explicit ids, all of them, or the top N of a discovery file."""

from __future__ import annotations

import warnings

import numpy as np

from personamine.config import MineConfig
from personamine.errors import PersonamineError
from personamine.files.discover import read_discovery_ranking, read_discovery_statistics
from personamine.saes import check_features


def top_discovered(ids: np.ndarray, scores: np.ndarray, top: int, positive_only: bool = True,
                   source: str = "the discovery file") -> np.ndarray:
    """The first ``top`` ranked features; with ``positive_only`` only those that score above zero: a feature
    that fires less on the persona prompts than on their controls is no persona feature."""
    chosen = ids[:top]
    if positive_only:
        chosen = chosen[scores[:top] > 0]
        if chosen.size == 0:
            raise PersonamineError(f"no feature of {source} scores above zero: nothing to take "
                                   "(positive_only=False, --no-positive-only, takes them anyway)")
    return chosen


def positive_only_note(n_taken: int, top: int, n_ranked: int) -> str | None:
    """What to tell the user when positive_only left fewer features than asked for."""
    if n_taken >= min(top, n_ranked):
        return None
    return (f"only {n_taken} of the top {top} discovered features score above zero: taking those {n_taken} "
            f"(--no-positive-only, positive_only=False, takes the top {top} whatever their score)")


def resolve_features(config: MineConfig, dict_size: int) -> np.ndarray:
    if config.features_from:
        if config.features:
            raise PersonamineError("give either features or features_from, not both")
        if config.max_q is not None or config.min_ci_low is not None:
            ids, scores = _significant(config)
        else:
            ids, scores = read_discovery_ranking(config.features_from, _table(config))
        features = top_discovered(ids, scores, config.top, config.positive_only, repr(config.features_from))
        note = positive_only_note(features.size, config.top, ids.size)
        if note is not None:
            warnings.warn(note, stacklevel=4)
    elif config.features == "all":
        features = np.arange(dict_size, dtype=np.int64)
    else:
        features = np.asarray(config.features, dtype=np.int64)
        if features.size == 0:
            raise PersonamineError("no features selected: pass features (ids or 'all') or features_from")
    check_features(features, dict_size)
    return features


def _table(config: MineConfig) -> tuple[str, ...] | None:
    """The discovery tables a mining run's SAE takes its features from, in order of preference: its layer and
    trainer's (``L15-t1``, when discovery read several trainers), its layer's (``L15``); else the primary table."""
    if config.layer is None:
        return None
    return f"L{config.layer}-t{config.sae_trainer}", f"L{config.layer}"


def _significant(config: MineConfig) -> tuple[np.ndarray, np.ndarray]:
    """(ids, scores) of the ranked features that pass ``max_q`` and ``min_ci_low``, in rank order."""
    stats = read_discovery_statistics(config.features_from, _table(config))
    if not stats.has_statistics:
        raise PersonamineError(f"{config.features_from!r} has no statistics (a version-1 file, or contrast none): "
                               "max_q and min_ci_low need them; run discover again")
    keep = np.ones(stats.feature_ids.size, bool)
    if config.max_q is not None:
        keep &= stats.q_value <= config.max_q
    if config.min_ci_low is not None:
        keep &= stats.ci_low > config.min_ci_low
    if not keep.any():
        raise PersonamineError(f"no feature of {config.features_from!r} passes max_q={config.max_q} and "
                               f"min_ci_low={config.min_ci_low}")
    return stats.feature_ids[keep].astype(np.int64), stats.score[keep]
