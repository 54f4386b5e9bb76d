"""The scoring arithmetic: per-text answers from log-probabilities or text, and the scores of a set of answers.

Each scored text has a truth (1: the feature fires / the marking is correct; 0: not) and, from the answer, a
probability that it is 1 and a prediction. The probability comes from the log-probabilities of the answer tokens
where the backend returned them: P(yes) / (P(yes) + P(no)), where P(yes) sums the probability of every returned
alternative whose stripped, lowercased text is "1" or "yes" (P(no): "0" or "no"). The alternatives hold each token
once: the HTTP backend's are the generated token (its own logprob) and every top_logprobs entry of another token
(``openai_http.with_chosen``); the in-process backend's are distinct token ids. The prediction is probability >
0.5, or else the digit parsed from the answer's text; a text with neither is unanswered and counted, not scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from personamine.autointerp.prompts import ANSWER_WORDS, NEGATIVE_WORDS, POSITIVE_WORDS


def answer_positions(tokens: list[str], n: int) -> list[int] | None:
    """Generated positions holding the answers: one text, the first answer word (else the first position);
    several, the digit tokens, which must be exactly n."""
    if n == 1:
        return next(([i] for i, t in enumerate(tokens) if t.strip().lower() in ANSWER_WORDS), [0] if tokens else None)
    digits = [i for i, t in enumerate(tokens) if t.strip() in ("0", "1")]
    return digits if len(digits) == n else None


def answer_probabilities(tokens: list[str] | None, logprobs: list[list[tuple[str, float]]] | None,
                         n: int) -> list[float | None]:
    """P(1) for each of the n texts from the alternatives at its answer position; None where not available."""
    positions = answer_positions(tokens, n) if tokens and logprobs else None
    if positions is None:
        return [None] * n
    out: list[float | None] = []
    for i in positions:
        alternatives = logprobs[i] if i < len(logprobs) else []
        yes = sum(math.exp(lp) for t, lp in alternatives if t.strip().lower() in POSITIVE_WORDS)
        no = sum(math.exp(lp) for t, lp in alternatives if t.strip().lower() in NEGATIVE_WORDS)
        out.append(yes / (yes + no) if yes + no > 0 else None)
    return out


@dataclass
class Judgement:
    truth: int
    prediction: int | None  # None: unanswered
    probability: float | None


def judge(truth: list[int], parsed: list[int] | None, probabilities: list[float | None]) -> list[Judgement]:
    out = []
    for j, t in enumerate(truth):
        p = probabilities[j]
        prediction = (1 if p > 0.5 else 0) if p is not None else (parsed[j] if parsed is not None else None)
        out.append(Judgement(int(t), prediction, p))
    return out


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def roc_auc(truth: list[int], probability: list[float]) -> float:
    """Area under the ROC curve: the chance a random positive outranks a random negative, ties counting half."""
    pos = [p for t, p in zip(truth, probability, strict=True) if t == 1]
    neg = [p for t, p in zip(truth, probability, strict=True) if t == 0]
    if not pos or not neg:
        return math.nan
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def score(judgements: list[Judgement]) -> dict[str, float]:
    """Every metric of ``METRICS`` (NaN where undefined, e.g. balanced accuracy without answered negatives)."""
    answered = [j for j in judgements if j.prediction is not None]
    tp = sum(j.truth == 1 and j.prediction == 1 for j in answered)
    fp = sum(j.truth == 0 and j.prediction == 1 for j in answered)
    tn = sum(j.truth == 0 and j.prediction == 0 for j in answered)
    fn = sum(j.truth == 1 and j.prediction == 0 for j in answered)
    recall, specificity, precision = _ratio(tp, tp + fn), _ratio(tn, tn + fp), _ratio(tp, tp + fp)
    with_p = [j for j in judgements if j.probability is not None]
    return {
        "n": len(judgements), "n_positive": sum(j.truth == 1 for j in judgements),
        "n_negative": sum(j.truth == 0 for j in judgements), "n_unanswered": len(judgements) - len(answered),
        "tp": tp, "fp": fp, "tn": tn, "fn": fn, "accuracy": _ratio(tp + tn, len(answered)),
        "balanced_accuracy": (recall + specificity) / 2, "precision": precision, "recall": recall,
        "specificity": specificity,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "auc": roc_auc([j.truth for j in with_p], [j.probability for j in with_p]), "n_with_probability": len(with_p),
    }
