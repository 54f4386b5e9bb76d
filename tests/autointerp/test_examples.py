"""The deterministic split of a feature's windows into explanation, test and negative sets."""

from __future__ import annotations

import numpy as np

import personamine
from personamine.autointerp.examples import split_examples


def _ids(examples):
    return [(e.document, e.window_start) for e in examples]


def test_split(tiny_mining_file):
    res = personamine.read_results(tiny_mining_file)
    checked = 0
    for f in res.feature_ids.tolist():
        fx = split_examples(res, f, n_explain=3, n_test=5, n_negatives=4)
        top, intervals = res.examples(f), res.interval_samples(f)
        assert _ids(fx.explain) == [(w["document"], w["window_start"]) for w in top[:3]]
        assert fx.explain[0].score == top[0]["score"]
        shown = res.shown(top[0])  # a text corpus: everything but the sink prefix
        np.testing.assert_array_equal(fx.explain[0].acts, top[0]["activations"][shown])
        assert "".join(fx.explain[0].tokens) == "".join(res.token_text(t) for t in top[0]["token_ids"][shown])
        # Test set: round-robin over the intervals from the highest, then the remaining top windows, never a
        # window whose tokens the explanation set shows, nor one twice.
        levels = [v for _, v in sorted(intervals.items(), reverse=True)]
        expected, seen = [], {tuple(t.tokens) for t in fx.explain}
        pool = [w for i in range(max(map(len, levels))) for level in levels if i < len(level)
                for w in [level[i]]] + top[3:]
        for w in pool:
            text = tuple(res.token_text(t) for t in w["token_ids"][res.shown(w)])
            if len(expected) < 5 and text not in seen:
                seen.add(text)
                expected.append((w["document"], w["window_start"]))
        assert _ids(fx.test) == expected
        assert all(e.score > 0 for e in fx.test)
        assert _ids(fx.negatives) == [(w["document"], w["window_start"]) for w in res.non_activating(f)[:4]]
        assert all(e.score == 0 and not e.acts.any() for e in fx.negatives)
        again = split_examples(personamine.read_results(tiny_mining_file, features=[f]), f, 3, 5, 4)
        assert [_ids(x) for x in (again.explain, again.test, again.negatives)] == [
            _ids(x) for x in (fx.explain, fx.test, fx.negatives)]
        checked += len(fx.test)
    assert checked >= 30
