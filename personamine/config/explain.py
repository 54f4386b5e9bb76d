"""The explanations run's typed config (``personamine.explain``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personamine.config.fields import DEFAULT_MODEL, knob, parse_feature_list
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
