"""Discovery's typed config (``personamine.discover``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from personamine.config.fields import DEFAULT_DATE, DEFAULT_MODEL, at_least, field_help, knob
from personamine.config.mine import MineConfig
from personamine.errors import PersonamineError

# Where a prompt is read: the last generation-prompt token, the mean over the generation prompt, over every token,
# or over the prompt's own (user) tokens (``personamine.model.prompts.render_prompts``).
POSITIONS = ("last", "assistant-header", "prompt-mean", "user")

_MINE = field_help(MineConfig)  # the fields discover shares with mining, documented once


@dataclass
class DiscoverConfig:
    # model
    model: str = knob(DEFAULT_MODEL, _MINE["model"])
    layer: int | None = knob(None, _MINE["layer"])
    gguf_file: str | None = knob(None, _MINE["gguf_file"])
    revision: str | None = knob(None, _MINE["revision"])
    dtype: str = knob("auto", _MINE["dtype"])
    device: str = knob("auto", _MINE["device"])
    # SAE
    sae: str = knob("", _MINE["sae"])
    sae_trainer: int = knob(0, _MINE["sae_trainer"])
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
    control: bool = knob(True, "rank by mean(persona) - mean(control); --no-control ranks by the raw persona mean "
                               "(the seed notebook's ranking)")
    system_prompt: str | None = knob(None, "a system turn before each prompt (default: none, so a template's own "
                                           "default system prompt applies)")
    date_string: str | None = knob(DEFAULT_DATE, "date passed to the chat template (Llama-3.1's prints today's "
                                                  "date otherwise)")
    position: str = knob("last", "where each prompt is read: last (the last generation-prompt token), "
                                 "assistant-header (mean over the generation prompt), prompt-mean (every token), "
                                 "or user (mean over the prompt's own tokens: what mining scores as score_roles "
                                 "user)")
    # output
    top: int = knob(100, "features whose per-prompt activations are stored (activations/persona, /control)")
    batch_size: int = knob(16, "prompts per forward pass")
    feature_chunk: int = knob(8192, _MINE["feature_chunk"])
    output: str = knob("personamine-out/discover.h5", "the HDF5 file to write")
    progress: bool = knob(True, _MINE["progress"])

    def __post_init__(self) -> None:
        if self.position not in POSITIONS:
            raise PersonamineError(f"position must be one of {', '.join(POSITIONS)}, got {self.position!r}")
        at_least(self, 1, "top", "batch_size", "feature_chunk")
        at_least(self, 0, "sae_trainer")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
