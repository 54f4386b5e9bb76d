"""The explanations file (schema ``personamine.explain`` version 1), written atomically beside the mining file,
and its reader.

A sibling file, not a group inside the mining file: a mining run can take days and its file is never rewritten,
and one mining file can be explained several times (other explainers, other settings) side by side.

Layout: ``feature_ids``, ``explanation`` and ``explanation_parsed`` per feature; ``scores/<scorer>/<metric>``
per feature (``METRICS``, NaN where undefined); ``calls/`` one row per LLM call (its
feature, kind, prompt as JSON messages, raw response, error, attempts, whether it came from the cache);
``answers/`` one row per scored text (its feature, scorer, call row, truth, prediction (-1: unanswered),
probability (NaN: none), the window's document and start, and where it came from: top, interval or negative).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from personamine.files.h5 import atomic_h5, open_h5, plain_attrs

FORMAT = "personamine.explain"
FORMAT_VERSION = 1
# The scores stored per scorer and feature (NaN where undefined); personamine.autointerp.scoring computes them.
METRICS = ("n", "n_positive", "n_negative", "n_unanswered", "tp", "fp", "tn", "fn", "accuracy", "balanced_accuracy",
           "precision", "recall", "specificity", "f1", "auc", "n_with_probability")
_STR = h5py.string_dtype("utf-8")


@dataclass
class Call:
    feature_id: int
    kind: str  # "explanation", "detection" or "fuzzing"
    messages: list[dict]
    response: str
    error: str | None
    attempts: int
    cached: bool


@dataclass
class Answer:
    feature_id: int
    scorer: str
    call: int  # row of the call that answered it
    truth: int
    prediction: int | None
    probability: float | None
    document: int
    window_start: int
    source: str


@dataclass
class ExplanationResults:
    path: Path
    attrs: dict
    config: dict
    feature_ids: np.ndarray
    explanations: list[str]
    parsed: np.ndarray  # bool [F]: the answer followed the [EXPLANATION]: format
    scores: dict[str, dict[str, np.ndarray]]  # scorer -> metric -> [F]
    calls: list[Call] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)

    @property
    def scorers(self) -> list[str]:
        return list(self.scores)

    def _row(self, feature_id: int) -> int:
        hits = np.nonzero(self.feature_ids == feature_id)[0]
        if hits.size == 0:
            raise KeyError(f"feature {feature_id} is not in {self.path}")
        return int(hits[0])

    def explanation(self, feature_id: int) -> str:
        return self.explanations[self._row(feature_id)]

    def feature_scores(self, feature_id: int) -> dict[str, dict[str, float]]:
        row = self._row(feature_id)
        return {s: {m: float(v[row]) for m, v in metrics.items()} for s, metrics in self.scores.items()}

    def table(self, n: int | None = None, width: int = 80) -> str:
        """Features with their balanced accuracies and explanation, one line each."""
        head = f"{'feature':>8} " + " ".join(f"{s[:9]:>9}" for s in self.scorers) + "  explanation"
        lines = [head]
        for row, fid in enumerate(self.feature_ids.tolist()[:n]):
            accs = " ".join(f"{_fmt(self.scores[s]['balanced_accuracy'][row]):>9}" for s in self.scorers)
            text = ("" if self.parsed[row] else "(unparsed) ") + self.explanations[row]
            lines.append(f"{fid:>8} {accs}  {text[:width]}")
        return "\n".join(lines)


def _fmt(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.2f}"


def write_explanations(path: str | Path, results: ExplanationResults) -> Path:
    path = Path(path)
    config = json.dumps(results.config, sort_keys=True)
    with atomic_h5(path, FORMAT, FORMAT_VERSION, {**results.attrs, "config": config}) as f:
        f.create_dataset("feature_ids", data=np.asarray(results.feature_ids, np.int64))
        f.create_dataset("explanation", data=results.explanations, dtype=_STR)
        f.create_dataset("explanation_parsed", data=np.asarray(results.parsed, bool))
        for scorer, metrics in results.scores.items():
            g = f.create_group(f"scores/{scorer}")
            for metric in METRICS:
                g.create_dataset(metric, data=np.asarray(metrics[metric], np.float64))
        c = f.create_group("calls")
        calls = results.calls
        c.create_dataset("feature_id", data=np.array([x.feature_id for x in calls], np.int64))
        for name, values in (("kind", [x.kind for x in calls]),
                             ("prompt", [json.dumps(x.messages, ensure_ascii=False) for x in calls]),
                             ("response", [x.response for x in calls]), ("error", [x.error or "" for x in calls])):
            c.create_dataset(name, data=values, dtype=_STR, compression="gzip" if name == "prompt" else None)
        c.create_dataset("attempts", data=np.array([x.attempts for x in calls], np.int32))
        c.create_dataset("cached", data=np.array([x.cached for x in calls], bool))
        a = f.create_group("answers")
        ans = results.answers
        for name, dtype in (("feature_id", np.int64), ("call", np.int64), ("truth", np.int8),
                            ("document", np.int64), ("window_start", np.int64)):
            a.create_dataset(name, data=np.array([getattr(x, name) for x in ans], dtype))
        a.create_dataset("prediction", data=np.array([-1 if x.prediction is None else x.prediction for x in ans],
                                                      np.int8))
        a.create_dataset("probability", data=np.array(
            [math.nan if x.probability is None else x.probability for x in ans], np.float32))
        a.create_dataset("scorer", data=[x.scorer for x in ans], dtype=_STR)
        a.create_dataset("source", data=[x.source for x in ans], dtype=_STR)
    return path


def read_explanations(path: str | Path, calls: bool = True) -> ExplanationResults:
    """Read a file written by ``personamine.explain``. ``calls=False`` leaves out the calls (every prompt and
    response: the bulk of the file, which an all-features run makes gigabytes)."""
    path = Path(path)
    with open_h5(path, FORMAT, FORMAT_VERSION, "explanations") as f:
        attrs = plain_attrs(f)
        scores = {s: {m: f[f"scores/{s}/{m}"][()] for m in f[f"scores/{s}"]} for s in f.get("scores", {})}
        c, a = f["calls"], f["answers"]
        made = [Call(int(fid), kind, json.loads(prompt), response, error or None, int(att), bool(cached))
                for fid, kind, prompt, response, error, att, cached in zip(
                    c["feature_id"][()], c["kind"].asstr()[()], c["prompt"].asstr()[()], c["response"].asstr()[()],
                    c["error"].asstr()[()], c["attempts"][()], c["cached"][()], strict=True)] if calls else []
        answers = [Answer(int(fid), scorer, int(call), int(truth), None if pred < 0 else int(pred),
                          None if math.isnan(p) else float(p), int(doc), int(start), source)
                   for fid, scorer, call, truth, pred, p, doc, start, source in zip(
                       a["feature_id"][()], a["scorer"].asstr()[()], a["call"][()], a["truth"][()],
                       a["prediction"][()], a["probability"][()], a["document"][()], a["window_start"][()],
                       a["source"].asstr()[()], strict=True)]
        return ExplanationResults(
            path=path, attrs=attrs, config=json.loads(attrs.get("config", "{}")), feature_ids=f["feature_ids"][()],
            explanations=list(f["explanation"].asstr()[()]), parsed=f["explanation_parsed"][()], scores=scores,
            calls=made, answers=answers)
