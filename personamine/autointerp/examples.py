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

from personamine.files.mine import MineResults


@dataclass
class Example:
    tokens: list[str]  # each token's text as the corpus had it (the sink prefix dropped, turns labelled)
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


def _example(results: MineResults, window: dict, source: str) -> Example:
    """The window as a reader sees it (``MineResults.reading``); in a conversation each turn opens with its role
    (``assistant: ``), a piece of text with activation 0, so the explainer sees whose words a feature fires on."""
    ids, acts, labels = results.reading(window)
    tokens: list[str] = []
    values: list[float] = []
    for tid, value, label in zip(ids.tolist(), np.asarray(acts, np.float32).tolist(), labels, strict=True):
        if label is not None:
            tokens.append(f"{chr(10) if tokens else ''}{label}: ")
            values.append(0.0)
        tokens.append(results.token_text(int(tid)))
        values.append(value)
    return Example(tokens, np.asarray(values, np.float32), float(window["score"]), int(window["document"]),
                   int(window["window_start"]), source)


def split_examples(results: MineResults, feature_id: int, n_explain: int, n_test: int,
                   n_negatives: int) -> FeatureExamples:
    top = [_example(results, w, "top") for w in results.examples(feature_id)]
    explain = top[:n_explain]
    shown = {tuple(e.tokens) for e in explain}
    levels = [[_example(results, w, "interval") for w in windows]
              for _, windows in sorted(results.interval_samples(feature_id).items(), reverse=True)]
    pool = [level[i] for i in range(max(map(len, levels), default=0)) for level in levels if i < len(level)]
    test: list[Example] = []
    for e in pool + top[n_explain:]:
        if len(test) == n_test:
            break
        if tuple(e.tokens) not in shown:
            shown.add(tuple(e.tokens))
            test.append(e)
    negatives = [_example(results, w, "negative") for w in results.non_activating(feature_id)[:n_negatives]]
    return FeatureExamples(feature_id, explain, test, negatives)
