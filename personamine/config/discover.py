"""Discovery's typed config (``personamine.discover``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from personamine.config.fields import DEFAULT_DATE, DEFAULT_MODEL, at_least, field_help, knob, parse_feature_list
from personamine.config.mine import MineConfig
from personamine.errors import PersonamineError

# Where a prompt is read: the last generation-prompt token, the mean over the generation prompt, over every token,
# or over the prompt's own (user) tokens (``personamine.model.prompts.render_prompts``).
# or over the Assistant's response to it (response-mean: the response's own tokens, given or generated).
POSITIONS = ("last", "assistant-header", "prompt-mean", "user", "response-mean")
# What is compared: persona prompts with their paired controls; the same prompts under the default Assistant and
# under role-play system prompts (the Assistant Axis's contrast); the same prompts through two models (model
# diffing); or nothing (the raw persona mean, the seed notebook's ranking).
CONTRASTS = ("controls", "roles", "models", "none")
RESPONSES = ("generate", "given")

_MINE = field_help(MineConfig)  # the fields discover shares with mining, documented once


@dataclass
class DiscoverConfig:
    # model
    model: str = knob(DEFAULT_MODEL, _MINE["model"])
    layer: int | None = knob(None, _MINE["layer"])
    layers: list[int] = knob(help="several layers in one forward (3,7,11 or 3-27): each reads the release's SAE at "
                                  "that layer (default: layer alone)", factory=list)
    gguf_file: str | None = knob(None, _MINE["gguf_file"])
    revision: str | None = knob(None, _MINE["revision"])
    dtype: str = knob("auto", _MINE["dtype"])
    device: str = knob("auto", _MINE["device"])
    # SAE
    sae: str = knob("", _MINE["sae"])
    sae_trainer: int = knob(0, _MINE["sae_trainer"])
    sae_trainers: list[int] = knob(help="several trainers of the release at each layer (default: sae_trainer alone)",
                                   factory=list)
    allow_uncalibrated: bool = knob(False, _MINE["allow_uncalibrated"])
    # SAE layout and the pre-flight quality check (as MineConfig's; on the prompts' positions)
    sae_id: str | None = knob(None, "one SAE inside the SAE repo or directory, or a SAELens release's sae_id")
    sae_format: str = knob("auto", "SAE layout: auto, dictionary_learning, saelens, sparsify, goodfire, gemma_scope "
                                   "or llama_scope")
    preflight: bool = knob(True, "measure the SAE's variance explained and L0 on the prompts first")
    min_fve: float = knob(0.5, "pre-flight: refuse an SAE that explains less of the captured variance than this")
    allow_low_fve: bool = knob(False, "run even if the pre-flight quality check fails (it warns instead)")
    # prompts
    prompts: str | None = knob(None, "self-referential prompts: JSONL ({\"content\": ...} per line) or one per line "
                                     "(default: the 32 shipped ones)")
    controls: str | None = knob(None, "matched controls, line i pairing with prompt i, same formats (default: the "
                                      "32 shipped ones)")
    control: bool = knob(True, "--no-control is contrast none")
    contrast: str = knob("controls", "what is compared: controls (persona vs control prompts, paired line by line), "
                                     "roles (the persona prompts under the default Assistant vs under each role's "
                                     "system prompt), models (the persona prompts through model vs model_b, the same "
                                     "SAE), or none (the raw persona mean: no statistics)")
    roles: str | None = knob(None, "contrast roles: JSONL {\"name\": ..., \"system\": ...} per line (default: the "
                                   "shipped role set)")
    model_b: str | None = knob(None, "contrast models: the other model (same width and tokenizer; rendered with its "
                                     "own chat template)")
    responses: str = knob("generate", "response-mean reads the Assistant's response to each prompt: generate (the "
                                      "model's own, once, stored in the file) or given (a \"response\" field on "
                                      "every prompts-file line)")
    max_new_tokens: int = knob(48, "generated responses: at most this many tokens")
    sample: bool = knob(False, "generated responses: seeded sampling instead of greedy decoding")
    temperature: float = knob(1.0, "generated responses: sampling temperature (with sample)")
    top_p: float = knob(1.0, "generated responses: nucleus mass (with sample)")
    seed: int = knob(0, "seed of sampling, of the bootstrap and of the split halves")
    n_boot: int = knob(1000, "bootstrap resamples for each confidence interval (over pairs when paired)")
    direction_layers: list[int] = knob(help="layers whose raw residual gives the persona direction (default: the "
                                            "SAEs' layers)", factory=list)
    system_prompt: str | None = knob(None, "a system turn before each prompt (default: none, so a template's own "
                                           "default system prompt applies)")
    date_string: str | None = knob(DEFAULT_DATE, "date passed to the chat template (Llama-3.1's prints today's "
                                                  "date otherwise)")
    position: str = knob("last", "where each prompt is read, one or several (last,response-mean): last (the last "
                                 "generation-prompt token), assistant-header (mean over the generation prompt), "
                                 "prompt-mean (every token), user (mean over the prompt's own tokens: what mining "
                                 "scores as score_roles user) or response-mean (mean over the Assistant's response "
                                 "tokens); special tokens never enter a mean")
    # output
    top: int = knob(100, "features whose per-prompt activations are stored (activations/persona, /control)")
    batch_size: int = knob(16, "prompts per forward pass")
    feature_chunk: int = knob(8192, _MINE["feature_chunk"])
    output: str = knob("personamine-out/discover.h5", "the HDF5 file to write")
    directions_out: str | None = knob(None, "also write the persona directions for other tools: a .safetensors "
                                            "or .npy file")
    progress: bool = knob(True, _MINE["progress"])

    def __post_init__(self) -> None:
        for name in ("layers", "sae_trainers", "direction_layers"):
            value = getattr(self, name)
            setattr(self, name, parse_feature_list(value) if isinstance(value, str) else [int(v) for v in value])
        if isinstance(self.position, (list, tuple)):
            self.position = ",".join(self.position)
        bad = [p for p in self.positions if p not in POSITIONS]
        if bad or not self.positions:
            raise PersonamineError(f"position must be among {', '.join(POSITIONS)}, got {self.position!r}")
        if not self.control and self.contrast == "controls":
            self.contrast = "none"
        if self.contrast not in CONTRASTS:
            raise PersonamineError(f"contrast must be one of {', '.join(CONTRASTS)}, got {self.contrast!r}")
        if self.contrast == "models" and not self.model_b:
            raise PersonamineError("contrast models needs model_b, the other model")
        if self.responses not in RESPONSES:
            raise PersonamineError(f"responses must be one of {', '.join(RESPONSES)}, got {self.responses!r}")
        at_least(self, 1, "top", "batch_size", "feature_chunk", "max_new_tokens")
        at_least(self, 0, "sae_trainer")
        for name in ("layers", "sae_trainers", "direction_layers"):
            if any(v < 0 for v in getattr(self, name)):
                raise PersonamineError(f"{name} must not be negative, got {getattr(self, name)}")
        at_least(self, 2, "n_boot")
        if self.directions_out and not self.directions_out.endswith((".safetensors", ".npy")):
            raise PersonamineError(f"directions_out must name a .safetensors or .npy file, got {self.directions_out!r}")
        if not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise PersonamineError("temperature must be positive and top_p in (0, 1]")

    @property
    def positions(self) -> list[str]:
        """The poolings asked for, in order (``position`` may list several, comma-separated)."""
        return list(dict.fromkeys(p.strip() for p in self.position.split(",") if p.strip()))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
