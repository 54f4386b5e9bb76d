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

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from personamine.autointerp.backend import CachedBackend, Request, Response
from personamine.autointerp.examples import Example, FeatureExamples, split_examples
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
from personamine.autointerp.scoring import METRICS, answer_probabilities, judge, score
from personamine.autointerp.store import Answer, Call, ExplanationResults, write_explanations
from personamine.config import DEFAULT_MODEL, knob, parse_feature_list, resolve_config
from personamine.errors import PersonamineError

SCORERS = ("detection", "fuzzing")
BACKENDS = ("local", "openai")


@dataclass
class ExplainConfig:
    results: str = knob("", "the mining file (HDF5) whose features to explain")
    discovery: str | None = knob(None, "a discovery file: show the explainer each feature's persona/control prompts")
    features: list[int] | str = knob(help="feature ids (1,5,9 or 3-6); default (or 'all'): every feature in the file",
                                     factory=list)
    output: str | None = knob(None, "the explanations file to write (default: RESULTS with .explanations.h5)")
    # explainer
    backend: str = knob("local", "local (a transformers model in process) or openai (an OpenAI-compatible server)")
    model: str | None = knob(None, "explainer model: local, a hub id or directory (default "
                                   f"{DEFAULT_MODEL}); openai, the served name (default: the server's first)")
    base_url: str | None = knob(None, "openai: server base URL (default: OPENAI_BASE_URL, else http://127.0.0.1:8000/v1)")
    api_key: str | None = knob(None, "openai: API key (default: OPENAI_API_KEY; a local vLLM needs none)")
    concurrency: int = knob(8, "openai: requests in flight at once")
    max_retries: int = knob(4, "openai: retries of a request that failed transiently (connection, timeout, 429, 5xx)")
    timeout: float = knob(120.0, "openai: seconds to wait for one response")
    retry_backoff: float = knob(1.0, "openai: first retry delay in seconds, doubled on each further retry")
    device: str = knob("auto", "local: torch device (auto: cuda if available)")
    dtype: str = knob("auto", "local: model dtype (auto: bf16 on GPU, fp32 on CPU)")
    batch_size: int = knob(8, "local: prompts generated together")
    temperature: float = knob(0.0, "sampling temperature (0: greedy, reproducible)")
    explanation_tokens: int = knob(200, "most tokens the explainer may write per explanation")
    answer_tokens: int = knob(8, "most tokens per scoring answer (lists: 4 more per text)")
    top_logprobs: int = knob(20, "log-probability alternatives asked per answer token (0: score from text only)")
    cache_dir: str | None = knob(None, "response cache (default: PERSONAMINE_CACHE or ~/.cache/personamine, /explain)")
    # examples and scoring
    n_explain: int = knob(10, "top windows shown to the explainer")
    n_test: int = knob(20, "held-out activating windows scored (interval samples first, then remaining top windows)")
    n_negatives: int = knob(20, "non-activating windows scored (from the mining file's negatives)")
    scorers: list[str] = knob(help="scorers to run: detection, fuzzing", factory=lambda: list(SCORERS))
    texts_per_prompt: int = knob(1, "texts judged per scoring prompt (1: one answer token, scored by log-probability; "
                                    "5: delphi's lists, for large models)")
    mark_threshold: float = knob(0.3, "tokens above this fraction of a window's max are marked <<like this>>")
    persona_prompts: int = knob(5, "with a discovery file: persona/control prompt pairs shown (most active first)")
    progress: bool = knob(True, "show a progress bar")

    def __post_init__(self) -> None:
        if isinstance(self.features, str):
            self.features = [] if self.features == "all" else parse_feature_list(self.features)
        if isinstance(self.scorers, str):
            self.scorers = [s for s in self.scorers.split(",") if s]
        if not self.results:
            raise PersonamineError("no mining file given: explain needs the HDF5 file that `personamine mine` wrote")
        if self.backend not in BACKENDS:
            raise PersonamineError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        unknown = [s for s in self.scorers if s not in SCORERS]
        if unknown or not self.scorers:
            raise PersonamineError(f"scorers must be among {', '.join(SCORERS)}, got {', '.join(self.scorers)!r}")
        for name in ("n_explain", "texts_per_prompt", "explanation_tokens", "answer_tokens", "concurrency",
                     "batch_size"):
            if getattr(self, name) < 1:
                raise PersonamineError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("n_test", "n_negatives", "max_retries", "top_logprobs", "persona_prompts"):
            if getattr(self, name) < 0:
                raise PersonamineError(f"{name} must not be negative, got {getattr(self, name)}")
        if not 0 <= self.mark_threshold < 1:
            raise PersonamineError(f"mark_threshold must be in [0, 1), got {self.mark_threshold}")

    def output_path(self) -> Path:
        return Path(self.output) if self.output else Path(self.results).with_suffix(".explanations.h5")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("api_key")  # never written to a file
        return data


def open_backend(cfg: ExplainConfig):
    if cfg.backend == "openai":
        from personamine.autointerp.openai_http import OpenAIBackend

        return OpenAIBackend(cfg.model, cfg.base_url, cfg.api_key, concurrency=cfg.concurrency,
                             max_retries=cfg.max_retries, timeout=cfg.timeout, backoff=cfg.retry_backoff)
    from personamine.autointerp.hf_local import LocalBackend

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
    from personamine.autointerp.cache import ResponseCache
    from personamine.cache import cache_dir
    from personamine.merge.hdf5 import read_results

    if isinstance(config, (str, Path)):
        config, overrides = None, {**overrides, "results": str(config)}
    cfg = resolve_config(ExplainConfig, config, overrides, "explain")
    res = read_results(cfg.results, cfg.features or None)
    discovery = None
    if cfg.discovery:
        from personamine.jobs.discover import read_discovery

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
    from personamine import __version__

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
