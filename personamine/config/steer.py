"""Steering's typed config (``personamine.steer``)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from personamine.config.fields import DEFAULT_DATE, knob, parse_feature_list
from personamine.config.interventions import CLAMP_WHERE, PERCENTILE_PROMPTS, POSITIONS, parse_intervention
from personamine.errors import PersonamineError

CLAMP_UNITS = ("auto", "corpus-max", "prompt-max", "absolute")
ALPHA_UNITS = ("residual-norm", "absolute")


@dataclass
class SteerConfig:
    # model, layer, SAE: default to the ones recorded in features_from
    model: str | None = knob(None, "model: a hub id, a local directory, or builtin:smollm2-135m-instruct (default: "
                                   "the one recorded in features_from, else the built-in SmolLM2)")
    gguf_file: str | None = knob(None, "GGUF file inside the model repo or directory, for GGUF checkpoints")
    revision: str | None = knob(None, "model revision (branch, tag or commit) on the hub")
    dtype: str = knob("auto", "model dtype: auto (bf16 on GPU, fp32 on CPU), float32, bfloat16 or float16")
    device: str = knob("auto", "torch device: auto (cuda if available), cpu, cuda, cuda:1, ...")
    sae: str | None = knob(None, "SAE: a hub repo id, a release directory, a directory holding ae.pt, or the ae.pt "
                                 "file (default: the one recorded in features_from)")
    sae_trainer: int | None = knob(None, "trainer folder of a release (default: the recorded one, else 0)")
    sae_id: str | None = knob(None, "one SAE inside the SAE repo or directory, or a SAELens release's sae_id "
                                    "(default: the recorded one)")
    sae_format: str | None = knob(None, "SAE layout: auto, dictionary_learning, saelens, sparsify, goodfire, "
                                        "gemma_scope, llama_scope (default: the recorded one, else auto)")
    layer: int | None = knob(None, "layer whose output the SAE reads and the interventions rewrite (default: the "
                                   "one recorded in features_from, else the SAE's own)")
    allow_uncalibrated: bool = knob(False, "use an SAE whose threshold was never calibrated (dense ReLU codes)")
    # features
    features: list[int] = knob(help="feature ids to steer (1,5,9 or 3-6; default: the top of features_from)",
                               factory=list)
    features_from: str | None = knob(None, "a discovery or mining file: steer its first `top` features")
    top: int = knob(3, "with features_from: how many of its first features to steer")
    mining: str | None = knob(None, "a mining file whose per-feature max is the corpus max for clamping (default: "
                                    "features_from when it is a mining file)")
    # interventions
    ablate: bool = knob(True, "ablate each feature: h - a_f(h) W_dec[:, f] at every position")
    clamp: list[float] = knob(help="clamp each feature at these values, in clamp_unit", factory=lambda: [2.0])
    clamp_unit: str = knob("auto", "what clamp values are multiples of: corpus-max (the feature's max in the mining "
                                   "file), prompt-max (its max over the persona prompts' tokens, unsteered), absolute "
                                   "activations, or auto (corpus-max with a mining file, else prompt-max)")
    clamp_where: str = knob("active", "clamp where the feature fires (active) or at every position (all)")
    alphas: list[float] = knob(help="add each feature's unit decoder direction times these alphas, in alpha_unit "
                                    "(on the command line: --alphas=-1,1)",
                              factory=lambda: [-0.5, -0.25, -0.1, 0.1, 0.25, 0.5])
    alpha_unit: str = knob("residual-norm", "residual-norm (multiples of the median residual norm at the layer over "
                                            "the prompts' tokens, unsteered) or absolute")
    combine: bool = knob(True, "with several features, also ablate, clamp and add all of them at once")
    interventions: list[str] = knob(help="more interventions, terms joined by +: on SAE features ablate:12, "
                                         "clamp:12=2x, clamp:12=30, add:12=0.5, ablate:12+add:40=-1; on a direction "
                                         "of the directions file, over a layer or a half-open layer range (left out: "
                                         "the file's layer for it): add:[L10/last]@10=0.5 (alpha, in alpha_unit at "
                                         "each layer), ablate:[axis]@8:12, cap:[axis]@8:12=p25 (no projection above "
                                         "its 25th percentile) or cap:[axis]=3.5 (absolute), floor:[axis]@8:12=p25 "
                                         "(none below); {layer} in a name: each layer's own direction, e.g. "
                                         "floor:[L{layer}/last]@8:12=p25", factory=list)
    directions: str | None = knob(None, "the file of the directions that interventions name in brackets: a discovery "
                                        ".h5 (names L<layer>/<pooling>), .safetensors, .npy (names in the .json "
                                        "beside it) or .pt")
    percentile_prompts: str = knob("persona", "the prompts whose unsteered projections (prompt and response tokens, "
                                              "as positions says) a cap or floor percentile is measured on: persona, "
                                              "control or both")
    percentiles_from: str | None = knob(None, "a mining run's output holding the directions mined at the layers a cap "
                                              "or floor acts on (directions-L<layer> readouts): read its percentile "
                                              "there, over every token the corpus run scored (default: measured on "
                                              "percentile_prompts)")
    positions: str = knob("all", "where to intervene: all, prompt (the rendered prompt's tokens) or generated "
                                 "(the response's tokens); special tokens never")
    # prompts (rendered as discover renders them)
    prompts: str | None = knob(None, "persona prompts: JSONL {\"content\": ...} per line or plain text lines "
                                     "(default: the shipped 32)")
    controls: str | None = knob(None, "control prompts, same formats (default: the shipped 32, matched line by line)")
    n_prompts: int | None = knob(None, "use only the first N prompts of each set")
    system_prompt: str | None = knob(None, "a system turn before each prompt (default: the template's own)")
    date_string: str | None = knob(DEFAULT_DATE, "date passed to the chat template (Llama-3.1 prints today's "
                                                  "otherwise)")
    # measurements
    continuations: str | None = knob(None, "JSON file {set name: [continuation, ...]} whose log-probabilities are "
                                           "measured, {name} standing for the model's name (default: the shipped "
                                           "assistant and human sets)")
    self_name: str = knob("auto", "the model's own name in continuations (auto: from the chat template's 'named "
                                  "X', else the model id)")
    ppl_corpus: str = knob("builtin:chat-and-prose", "corpus whose first documents measure perplexity ('' to skip)")
    ppl_tokens: int = knob(2048, "tokens of ppl_corpus scored for perplexity")
    ppl_ctx_len: int = knob(64, "tokens per perplexity window, sink prefix included (one window per document)")
    # generation
    max_new_tokens: int = knob(40, "tokens generated per response")
    sample: bool = knob(False, "sample (seeded, the same draws for every intervention) instead of greedy decoding")
    temperature: float = knob(1.0, "sampling temperature (with sample)")
    top_p: float = knob(1.0, "nucleus sampling mass (with sample)")
    seed: int = knob(0, "sampling seed (with sample)")
    batch_size: int = knob(16, "sequences per forward")
    output: str = knob("personamine-out/steer.h5", "the HDF5 file to write")
    progress: bool = knob(True, "show a progress bar")

    def __post_init__(self) -> None:
        if isinstance(self.features, str):
            self.features = parse_feature_list(self.features)
        for name in ("clamp", "alphas"):
            value = getattr(self, name)
            values = _floats(value, name) if isinstance(value, str) else [float(v) for v in value]
            bad = [v for v in values if not math.isfinite(v)]
            if bad:
                raise PersonamineError(f"{name} must be finite numbers, got {bad[0]}")
            setattr(self, name, values)
        for name, allowed in (("positions", POSITIONS), ("clamp_unit", CLAMP_UNITS), ("clamp_where", CLAMP_WHERE),
                              ("alpha_unit", ALPHA_UNITS), ("percentile_prompts", PERCENTILE_PROMPTS)):
            if getattr(self, name) not in allowed:
                raise PersonamineError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for name in ("top", "max_new_tokens", "batch_size", "ppl_ctx_len"):
            if getattr(self, name) < 1:
                raise PersonamineError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.n_prompts is not None and self.n_prompts < 1:
            raise PersonamineError(f"n_prompts must be at least 1, got {self.n_prompts}")
        if self.ppl_tokens < 0:
            raise PersonamineError(f"ppl_tokens must not be negative, got {self.ppl_tokens}")
        if not (math.isfinite(self.temperature) and self.temperature > 0) or not 0 < self.top_p <= 1:
            raise PersonamineError("temperature must be a positive number and top_p in (0, 1]")
        for text in self.interventions:
            parse_intervention(text)  # fail before anything loads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _floats(text: str, name: str) -> list[float]:
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError as exc:
        raise PersonamineError(f"{name}: cannot parse {text!r} as comma-separated numbers") from exc


# ---------------------------------------------------------------- what to steer
