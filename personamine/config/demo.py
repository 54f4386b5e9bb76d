"""The demo's typed configs (``personamine.demo`` and ``personamine.demo_steer``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from personamine.config.fields import DEFAULT_MODEL, at_least, knob, parse_feature_list

DEMO_CORPUS = "builtin:chat-and-prose"
DEMO_CONVERSATIONS = "builtin:conversations"

@dataclass
class DemoConfig:
    model: str = knob(DEFAULT_MODEL, "model: builtin:smollm2-135m-instruct (offline), a hub id or a local directory")
    # A middle layer (10 of 30). Mining costs the forward through it: measured on 2 cores (2026-11-26), a later
    # run took 3:01-3:12 at layer 15 and 12; layers 0..10 leave margin under 3 minutes.
    layer: int = knob(10, "decoder layer read by the SAE, discovery and mining")
    corpus: str = knob(DEMO_CORPUS, "corpus the SAE is trained on on first use (see mine --help)")
    sae: str | None = knob(None, "an SAE for this model and layer (default: train one on first use and cache it)")
    # SAE training (when sae is None): sized for ~4 minutes on 2 CPU cores
    dict_size: int = knob(4096, "features of the SAE trained on first use")
    k: int = knob(32, "active features per token of that SAE")
    train_tokens: int = knob(100_000, "tokens it is trained on")
    # a text mine of the built-in corpus (--mine-corpus builtin:chat-and-prose) reads its first ~1,000 documents
    train_from_document: int = knob(4000, "first corpus document it is trained on (past the mined ones)")
    train_steps: int = knob(500, "its training steps")
    train_batch_size: int = knob(1024, "activations per training step")
    # discovery and mining
    discover_position: str = knob("last,response-mean", "discovery's poolings (see discover --help): the last "
                                                         "generation-prompt token and the model's own responses")
    direction_layers: list[int] = knob(help="layers whose persona direction discovery computes, in the same pass "
                                            "(default: the SAE's layer and five spread over the model's depth)",
                                       factory=list)
    n_boot: int = knob(1000, "discovery's bootstrap resamples")
    top: int = knob(20, "how many of the best-ranked discovered features to mine")
    positive_only: bool = knob(True, "mine only features that score above zero (--no-positive-only: the top N "
                                     "whatever their score)")
    mine_corpus: str = knob(DEMO_CONVERSATIONS, "corpus the top features are mined over (see mine --help)")
    messages_column: str = knob("messages", "its column of conversations, rendered with the chat template ('': a "
                                            "text corpus)")
    score_roles: list[str] = knob(help="roles scored while mining conversations (the Assistant's turns: where a "
                                       "persona feature belongs)", factory=lambda: ["assistant"])
    mine_tokens: int = knob(200_000, "tokens of the corpus mined (whole leading documents)")
    mine_ctx_len: int = knob(256, "tokens per mining window, sink prefix included (conversations are windowed)")
    ctx_len: int = knob(64, "tokens per window of the SAE's training, sink prefix included")
    # printing
    show: int = knob(10, "features printed with their contexts")
    examples: int = knob(3, "contexts printed per feature")
    allow_low_fve: bool = knob(False, "run discover and mine even if the SAE fails the pre-flight quality check")
    output_dir: str = knob("personamine-demo", "directory for discover.h5, mine.h5 and report.html")
    progress: bool = knob(True, "show progress bars")

    def __post_init__(self) -> None:
        if isinstance(self.direction_layers, str):
            self.direction_layers = parse_feature_list(self.direction_layers)
        at_least(self, 1, "dict_size", "k", "train_tokens", "train_steps", "train_batch_size", "top", "mine_tokens")
        at_least(self, 2, "n_boot")
        at_least(self, 4, "ctx_len", "mine_ctx_len")
        at_least(self, 0, "train_from_document", "show", "examples")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class DemoSteerConfig:
    output_dir: str = knob("personamine-demo", "the demo's output directory (discover.h5 and mine.h5 are read there)")
    top: int = knob(3, "steer this many of the top discovered features")
    n_prompts: int = knob(6, "persona prompts and as many controls")
    max_new_tokens: int = knob(20, "tokens generated per response")
    alphas: list[float] = knob(help="alphas, in multiples of the median residual norm (--alphas=-1,1)",
                               factory=lambda: [-0.5, -0.25, 0.25, 0.5])
    clamp: list[float] = knob(help="clamp values, in multiples of each feature's corpus max", factory=lambda: [2.0])
    combine: bool = knob(False, "also steer the features all together")
    direction: str = knob("response-mean", "the pooling of the discovered persona direction (discover.h5's "
                                           "L<layer>/<pooling> at the demo's layer) to add, ablate, cap and floor "
                                           "('' to steer features only)")
    direction_alphas: list[float] = knob(help="alphas of the direction, in multiples of the median residual norm "
                                              "(--direction-alphas=-0.25,0.25)",
                                         factory=lambda: [-0.25, -0.1, 0.1, 0.25])
    direction_percentiles: list[float] = knob(help="cap (no projection above) and floor (none below) the direction at "
                                                   "these percentiles (0-100) of its projections on the persona "
                                                   "prompts, unsteered", factory=lambda: [25.0])
    ppl_tokens: int = knob(512, "corpus tokens scored for perplexity")
    show: int = knob(2, "persona prompts whose generations are printed")
    progress: bool = knob(True, "show a progress bar")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
