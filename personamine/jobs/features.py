"""Which features a run mines: explicit ids, all of them, or the top N of a discovery file."""

from __future__ import annotations

import h5py
import numpy as np

from personamine.config import MineConfig
from personamine.errors import PersonamineError
from personamine.saes import check_features

DISCOVERY_FORMAT = "personamine.discover"


def read_discovery_ranking(path: str) -> np.ndarray:
    """Feature ids of a discovery file, best first."""
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != DISCOVERY_FORMAT:
                raise PersonamineError(f"{path!r} is not a personamine discovery file")
            return f["ranking/feature_ids"][()].astype(np.int64)
    except OSError as exc:
        raise PersonamineError(f"cannot open discovery file {path!r}: {exc}") from exc


def resolve_features(config: MineConfig, dict_size: int) -> np.ndarray:
    if config.features_from:
        if config.features:
            raise PersonamineError("give either features or features_from, not both")
        features = read_discovery_ranking(config.features_from)[: config.top]
    elif config.features == "all":
        features = np.arange(dict_size, dtype=np.int64)
    else:
        features = np.asarray(config.features, dtype=np.int64)
        if features.size == 0:
            raise PersonamineError("no features selected: pass features (ids or 'all') or features_from")
    check_features(features, dict_size)
    return features
