"""The scoring arithmetic against hand-computed cases."""

from __future__ import annotations

import math

import pytest

from personamine.autointerp.scoring import Judgement, answer_probabilities, judge, roc_auc, score


def test_metrics_by_hand():
    truth = [1, 1, 1, 0, 0, 0, 0]
    prediction = [1, 0, None, 0, 1, 0, 0]
    probability = [0.9, 0.4, None, 0.2, 0.6, 0.1, 0.4]
    s = score([Judgement(t, p, q) for t, p, q in zip(truth, prediction, probability, strict=True)])
    # answered 6: tp 1, fn 1, tn 3, fp 1
    assert (s["n"], s["n_positive"], s["n_negative"], s["n_unanswered"]) == (7, 3, 4, 1)
    assert (s["tp"], s["fn"], s["tn"], s["fp"]) == (1, 1, 3, 1)
    assert s["accuracy"] == pytest.approx(4 / 6)
    assert s["recall"] == 0.5 and s["specificity"] == 0.75 and s["precision"] == 0.5
    assert s["balanced_accuracy"] == pytest.approx(0.625)
    assert s["f1"] == pytest.approx(0.5)  # 2tp / (2tp + fp + fn) = 2 / 4
    # AUC: 0.9 beats all 4 negatives; 0.4 beats 0.2 and 0.1, ties 0.4 (half), loses to 0.6: (4 + 2.5) / 8
    assert s["auc"] == pytest.approx(6.5 / 8) and s["n_with_probability"] == 6


def test_undefined_metrics_are_nan():
    only_positive = score([Judgement(1, 1, 0.8), Judgement(1, None, None)])
    assert only_positive["recall"] == 1.0 and math.isnan(only_positive["specificity"])
    assert math.isnan(only_positive["balanced_accuracy"]) and math.isnan(only_positive["auc"])
    nothing = score([Judgement(0, None, None)])
    assert nothing["n_unanswered"] == 1 and math.isnan(nothing["accuracy"]) and math.isnan(nothing["f1"])
    assert roc_auc([1, 0], [0.5, 0.5]) == 0.5 and roc_auc([1, 0, 0], [0.1, 0.3, 0.05]) == 0.5


def test_judge_prefers_probability_then_text():
    got = judge([1, 0, 1, 0], [0, 0, 1, 1], [0.7, None, 0.5, None])
    assert [j.prediction for j in got] == [1, 0, 0, 1]  # p > 0.5 wins over the text; 0.5 is "no"
    assert [j.prediction for j in judge([1, 0], None, [None, 0.9])] == [None, 1]


def test_probabilities_from_answer_tokens():
    ln = math.log
    # One text: the first answer word's position; every spelling of yes/1 against no/0 among its alternatives.
    tokens = ["The", " 1"]
    logprobs = [[("The", ln(0.5)), ("1", ln(0.2)), ("0", ln(0.1))],
                [(" 1", ln(0.6)), (" 0", ln(0.2)), ("yes", ln(0.1)), ("No", ln(0.05)), ("maybe", ln(0.05))]]
    assert answer_probabilities(tokens, logprobs, 1)[0] == pytest.approx(0.7 / 0.95)
    # No answer word written: the first position.
    assert answer_probabilities(["Hmm"], [[("Hmm", ln(0.6)), ("1", ln(0.3)), ("no", ln(0.1))]], 1)[0] == \
        pytest.approx(0.75)
    assert answer_probabilities(["Hmm"], [[("Hmm", 0.0)]], 1) == [None]
    assert answer_probabilities(None, None, 2) == [None, None]
    # A list: one probability per digit token, in order; the wrong number of digits gives none.
    tokens = ["[", "1", ",", "0", ",", "1", "]"]
    steps = [[(t, 0.0)] for t in tokens]
    steps[1], steps[3], steps[5] = ([("1", ln(0.8)), ("0", ln(0.2))], [("0", ln(0.9)), ("1", ln(0.1))],
                                    [("1", ln(0.5)), ("0", ln(0.5))])
    assert answer_probabilities(tokens, steps, 3) == pytest.approx([0.8, 0.1, 0.5])
    assert answer_probabilities(tokens, steps, 2) == [None, None]
