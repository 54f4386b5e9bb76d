"""`personamine.explain(...)`: explain every mined feature with an LLM, then score each explanation by detection
and fuzzing on held-out windows; write one explanations file beside the mining file.

Per feature: the explanation set and the test set come from ``personamine.autointerp.examples``; the explainer sees
the marked explanation set (and, with a discovery file, the persona/control prompts with the feature's values) and
writes one explanation; detection asks of each held-out activating window and each non-activating one whether the
feature fires in it; fuzzing shows held-out windows correctly marked (truth 1) or with as many wrongly chosen tokens
marked (truth 0), and non-activating windows with random tokens marked (truth 0), and asks whether the marks are
right. Every call goes through the response cache: a rerun, or a run resumed after a crash, asks nothing twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from personamine.autointerp.backend import CachedBackend, Request, Response
from personamine.autointerp.cache import ResponseCache
from personamine.autointerp.examples import Example, FeatureExamples, split_examples
from personamine.autointerp.hf_local import LocalBackend
from personamine.autointerp.openai_http import OpenAIBackend
from personamine.autointerp.prompts import (
    ANSWER_WORDS,
    PersonaEvidence,
    explanation_messages,
    firing_mask,
    judge_messages,
    marked_text,
    parse_answers,
    parse_explanation,
    shown_text,
)
from personamine.autointerp.scoring import answer_probabilities, judge, score
from personamine.cache import cache_dir
from personamine.config import DEFAULT_MODEL, SCORERS, ExplainConfig, resolve_config
from personamine.errors import PersonamineError
from personamine.files.discover import read_discovery
from personamine.files.explain import METRICS, Answer, Call, ExplanationResults, write_explanations
from personamine.files.mine import read_results
from personamine.version import __version__


def open_backend(cfg: ExplainConfig):
    if cfg.backend == "openai":
        return OpenAIBackend(cfg.model, cfg.base_url, cfg.api_key, concurrency=cfg.concurrency,
                             max_retries=cfg.max_retries, timeout=cfg.timeout, backoff=cfg.retry_backoff)

    return LocalBackend(cfg.model or DEFAULT_MODEL, device=cfg.device, dtype=cfg.dtype, batch_size=cfg.batch_size)


def persona_evidence(discovery, feature_id: int, n: int) -> PersonaEvidence | None:
    """The n persona prompts the feature is most active on, each with its matched control (line i of each set)."""
    if discovery is None or n == 0:
        return None
    hits = np.nonzero(discovery.feature_ids == feature_id)[0]
    if hits.size == 0 or hits[0] >= discovery.persona_acts.shape[1]:  # per-prompt values exist for the top N only
        return None
    rank = int(hits[0])
    persona = discovery.persona_acts[:, rank]
    control = discovery.control_acts[:, rank] if discovery.has_controls else None
    pairs = []
    for i in np.argsort(-persona, kind="stable")[:n].tolist():
        matched = control is not None and i < control.size
        pairs.append((discovery.persona_text[i], float(persona[i]), discovery.control_text[i] if matched else None,
                      float(control[i]) if matched else None))
    return PersonaEvidence(pairs)


@dataclass
class _Item:
    """One text to judge."""

    text: str
    truth: int
    example: Example


def scoring_items(scorer: str, fx: FeatureExamples, threshold: float) -> list[_Item]:
    """Detection: held-out windows unmarked (1) and negatives (0). Fuzzing: held-out windows at even positions
    correctly marked (1), at odd positions with as many tokens that do not fire marked instead (0), and negatives
    with that many random tokens marked (0); the wrong marks are drawn from a generator seeded by the feature and
    window, so a run is reproducible. Items are shuffled (seeded by the feature) so a list prompt mixes classes."""
    if scorer == "detection":
        items = [_Item(shown_text(e.tokens), 1, e) for e in fx.test] + [
            _Item(shown_text(e.tokens), 0, e) for e in fx.negatives]
    else:
        items, counts = [], []
        for i, e in enumerate(fx.test):
            mask = firing_mask(e.acts, threshold)
            counts.append(int(mask.sum()))
            if i % 2 == 0:
                items.append(_Item(marked_text(e.tokens, mask), 1, e))
            elif (wrong := _random_mask(e, int(mask.sum()), fx.feature_id)) is not None:
                items.append(_Item(marked_text(e.tokens, wrong), 0, e))
        k = max(1, int(np.median(counts))) if counts else 1
        for e in fx.negatives:
            if (wrong := _random_mask(e, k, fx.feature_id)) is not None:
                items.append(_Item(marked_text(e.tokens, wrong), 0, e))
    order = np.random.default_rng([fx.feature_id, SCORERS.index(scorer)]).permutation(len(items))
    return [items[i] for i in order]


def _random_mask(e: Example, k: int, feature_id: int) -> np.ndarray | None:
    """k tokens on which the feature does not fire, chosen reproducibly; None if the window has none."""
    free = np.nonzero(e.acts == 0)[0]
    if free.size == 0 or k == 0:
        return None
    rng = np.random.default_rng([feature_id, e.document, e.window_start])
    mask = np.zeros(e.acts.shape, bool)
    mask[rng.choice(free, size=min(k, free.size), replace=False)] = True
    return mask


def _bar(cfg: ExplainConfig, total: int, what: str):
    if not cfg.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=what, unit="call", dynamic_ncols=True)


def _ask(backend: CachedBackend, requests: list[Request], cfg: ExplainConfig, what: str) -> list[Response]:
    bar = _bar(cfg, len(requests), what)
    try:
        return backend.complete(requests, bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()


def _call(feature_id: int, kind: str, request: Request, response: Response) -> Call:
    return Call(feature_id, kind, request.message_dicts(), response.text, response.error, response.attempts,
                response.cached)


def explain(config: ExplainConfig | str | Path | None = None, /, **overrides: Any) -> Path:
    """Explain and score the features of a mining file; return the path of the explanations file.

    ``config`` is an :class:`ExplainConfig`, the mining file's path (then keyword arguments are the other fields),
    or None (all fields as keyword arguments). Nothing is written if the run fails.
    """
    if isinstance(config, (str, Path)):
        config, overrides = None, {**overrides, "results": str(config)}
    cfg = resolve_config(ExplainConfig, config, overrides, "explain")
    res = read_results(cfg.results, cfg.features or None)
    discovery = None
    if cfg.discovery:
        discovery = read_discovery(cfg.discovery)
    feature_ids = [int(f) for f in (cfg.features or res.feature_ids.tolist())]
    sets = [split_examples(res, f, cfg.n_explain, cfg.n_test, cfg.n_negatives) for f in feature_ids]
    if res.negatives is None and cfg.n_negatives:
        import warnings

        warnings.warn(f"{cfg.results} has no non-activating examples (mined before they existed, or with "
                      "negatives_per_feature=0): scores use held-out activating windows only", stacklevel=2)
    backend = CachedBackend(open_backend(cfg), ResponseCache(
        Path(cfg.cache_dir) if cfg.cache_dir else cache_dir() / "explain"))
    try:
        return _run(cfg, res, discovery, feature_ids, sets, backend)
    finally:
        close = getattr(backend.backend, "close", None)
        if close is not None:
            close()


def _run(cfg: ExplainConfig, res, discovery, feature_ids: list[int], sets: list[FeatureExamples],
         backend: CachedBackend) -> Path:
    calls: list[Call] = []
    answers: list[Answer] = []
    # 1. explanations (features that never fired have nothing to explain)
    todo = [i for i, fx in enumerate(sets) if fx.explain]
    requests = [Request.chat(explanation_messages(sets[i].explain, cfg.mark_threshold,
                                                  persona_evidence(discovery, feature_ids[i], cfg.persona_prompts)),
                             max_tokens=cfg.explanation_tokens, temperature=cfg.temperature) for i in todo]
    responses = _ask(backend, requests, cfg, "explaining")
    if responses and all(r.error is not None for r in responses):
        raise PersonamineError(f"every explanation request failed; the first: {responses[0].error}")
    explanations, parsed = [""] * len(sets), np.zeros(len(sets), bool)
    for i, request, response in zip(todo, requests, responses, strict=True):
        calls.append(_call(feature_ids[i], "explanation", request, response))
        if response.error is None:
            explanations[i], parsed[i] = parse_explanation(response.text)
    # 2. scoring prompts for every explained feature
    n, prompts = cfg.texts_per_prompt, []
    for i, fx in enumerate(sets):
        if not explanations[i]:
            continue
        for scorer in cfg.scorers:
            items = scoring_items(scorer, fx, cfg.mark_threshold)
            for lo in range(0, len(items), n):
                chunk = items[lo:lo + n]
                prompts.append((i, scorer, chunk, Request.chat(
                    judge_messages(scorer, explanations[i], [it.text for it in chunk]),
                    max_tokens=cfg.answer_tokens + (4 * len(chunk) if len(chunk) > 1 else 0),
                    temperature=cfg.temperature,
                    top_logprobs=cfg.top_logprobs, watch=ANSWER_WORDS if cfg.top_logprobs else ())))
    responses = _ask(backend, [p[3] for p in prompts], cfg, "scoring")
    judged: dict[tuple[int, str], list] = {}
    for (i, scorer, chunk, request), response in zip(prompts, responses, strict=True):
        calls.append(_call(feature_ids[i], scorer, request, response))
        texts = None if response.error is not None else parse_answers(response.text, len(chunk))
        probs = [None] * len(chunk) if response.error is not None else answer_probabilities(
            response.tokens, response.logprobs, len(chunk))
        judgements = judge([it.truth for it in chunk], texts, probs)
        judged.setdefault((i, scorer), []).extend(judgements)
        answers.extend(Answer(feature_ids[i], scorer, len(calls) - 1, j.truth, j.prediction, j.probability,
                              it.example.document, it.example.window_start, it.example.source)
                       for it, j in zip(chunk, judgements, strict=True))
    scores = {s: {m: np.full(len(sets), math.nan) for m in METRICS} for s in cfg.scorers}
    for (i, scorer), judgements in judged.items():
        for metric, value in score(judgements).items():
            scores[scorer][metric][i] = value

    attrs = {"results_file": str(cfg.results), "discovery_file": str(cfg.discovery or ""), "backend": cfg.backend,
             "model": backend.model, "personamine_version": __version__, "n_calls": len(calls),
             "n_calls_sent": backend.n_sent, "n_errors": sum(c.error is not None for c in calls),
             "n_explanations_unparsed": int(sum(1 for i in todo if explanations[i] and not parsed[i])),
             "n_explanations_empty": int(sum(1 for i in todo if not explanations[i])),
             "n_unanswered": sum(a.prediction is None for a in answers),
             "n_negatives_available": int(sum(len(fx.negatives) for fx in sets))}
    out = ExplanationResults(path=cfg.output_path(), attrs=attrs, config=cfg.to_dict(),
                             feature_ids=np.asarray(feature_ids, np.int64), explanations=explanations, parsed=parsed,
                             scores=scores, calls=calls, answers=answers)
    return write_explanations(cfg.output_path(), out)
