"""The windows an explainer and its scorers see, split deterministically per feature.

Explanation set: the feature's best ``n_explain`` top windows (delphi explains from the top). Test set: held-out
activating windows at every level the feature fires at: the interval samples, taken round-robin from the highest
interval down (within one, by sampling key, the file's order), then the remaining top windows, skipping any window
whose tokens the explanation set already shows, up to ``n_test``. Negatives: the first ``n_negatives``
non-activating windows (by sampling key). The same file and sizes always give the same sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from personamine.merge.hdf5 import MineResults


@dataclass
class Example:
    tokens: list[str]  # each token's text as the corpus had it (the sink prefix dropped)
    acts: np.ndarray  # float32, the feature's activation on each token (0 on unscored ones)
    score: float  # the window's max activation
    document: int
    window_start: int
    source: str  # "top", "interval" or "negative"


@dataclass
class FeatureExamples:
    feature_id: int
    explain: list[Example]
    test: list[Example]
    negatives: list[Example]


def _example(results: MineResults, window: dict, prefix: int, source: str) -> Example:
    ids = np.asarray(window["token_ids"])[prefix:]
    return Example([results.token_text(int(t)) for t in ids], np.asarray(window["activations"], np.float32)[prefix:],
                   float(window["score"]), int(window["document"]), int(window["window_start"]), source)


def split_examples(results: MineResults, feature_id: int, n_explain: int, n_test: int,
                   n_negatives: int) -> FeatureExamples:
    prefix = len(np.atleast_1d(results.attrs.get("sink_prefix", [])))
    top = [_example(results, w, prefix, "top") for w in results.examples(feature_id)]
    explain = top[:n_explain]
    shown = {tuple(e.tokens) for e in explain}
    levels = [[_example(results, w, prefix, "interval") for w in windows]
              for _, windows in sorted(results.interval_samples(feature_id).items(), reverse=True)]
    pool = [level[i] for i in range(max(map(len, levels), default=0)) for level in levels if i < len(level)]
    test: list[Example] = []
    for e in pool + top[n_explain:]:
        if len(test) == n_test:
            break
        if tuple(e.tokens) not in shown:
            shown.add(tuple(e.tokens))
            test.append(e)
    negatives = [_example(results, w, prefix, "negative") for w in results.non_activating(feature_id)[:n_negatives]]
    return FeatureExamples(feature_id, explain, test, negatives)
