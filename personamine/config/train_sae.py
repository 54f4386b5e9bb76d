"""SAE training's typed config (``personamine.train_sae``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from personamine.config.fields import DEFAULT_MODEL, at_least, field_help, knob
from personamine.config.mine import MineConfig
from personamine.errors import PersonamineError

_MINE = field_help(MineConfig)  # the fields training shares with mining, documented once


@dataclass
class TrainSaeConfig:
    # model
    model: str = knob(DEFAULT_MODEL, _MINE["model"])
    layer: int = knob(15, _MINE["layer"])
    gguf_file: str | None = knob(None, _MINE["gguf_file"])
    revision: str | None = knob(None, _MINE["revision"])
    dtype: str = knob("auto", _MINE["dtype"])
    device: str = knob("auto", _MINE["device"])
    # corpus: documents [skip_documents, skip_documents + max_documents), until max_tokens activations
    corpus: str = knob("builtin:chat-and-prose", _MINE["corpus"])
    corpus_config: str | None = knob(None, _MINE["corpus_config"])
    split: str = knob("train", _MINE["split"])
    text_column: str = knob("text", _MINE["text_column"])
    corpus_revision: str | None = knob(None, _MINE["corpus_revision"])
    skip_documents: int = knob(0, "start at this document (e.g. past the ones you will mine)")
    max_documents: int | None = knob(None, "read at most this many documents")
    max_tokens: int = knob(200_000, "activations captured (held in memory: tokens x width x 4 bytes)")
    # windows, as in mining
    ctx_len: int = knob(64, _MINE["ctx_len"])
    sink_prefix: list[str] | None = knob(None, _MINE["sink_prefix"])
    norm_filter: float = knob(10.0, _MINE["norm_filter"])
    batch_tokens: int | None = knob(None, _MINE["batch_tokens"])
    # SAE and training
    dict_size: int = knob(4096, "SAE features")
    k: int = knob(32, "active features per token (BatchTopK's k)")
    steps: int = knob(1500, "training steps")
    batch_size: int = knob(1024, "activations per training step")
    lr: float | None = knob(None, "learning rate (default: dictionary_learning's 2e-4 / sqrt(dict_size / 2**14))")
    warmup_steps: int | None = knob(None, "learning-rate warmup steps (default: steps // 20)")
    threshold_start_step: int | None = knob(None, "step from which the inference threshold is calibrated "
                                                  "(default: steps // 2)")
    dead_after_tokens: int | None = knob(None, "the auxiliary loss revives features silent for this many tokens "
                                               "(default: 2 epochs)")
    held_out: float = knob(0.05, "fraction of documents kept out of training to measure the SAE")
    seed: int = knob(0, "seed of initialisation, shuffling and the held-out split")
    # output
    output: str = knob("personamine-out/sae", "release directory to write (OUTPUT/resid_post_layer_L/trainer_T)")
    trainer: int = knob(0, "trainer folder number T in the release")
    progress: bool = knob(True, _MINE["progress"])

    def __post_init__(self) -> None:
        at_least(self, 1, "dict_size", "k", "steps", "batch_size", "max_tokens", "max_documents", "batch_tokens")
        at_least(self, 0, "norm_filter", "trainer", "warmup_steps", "threshold_start_step")
        if self.k > self.dict_size:
            raise PersonamineError(f"k ({self.k}) cannot exceed dict_size ({self.dict_size})")
        if not 0 < self.held_out < 1:
            raise PersonamineError(f"held_out must be a fraction between 0 and 1, got {self.held_out}")
        if self.skip_documents < 0:
            raise PersonamineError(f"skip_documents must not be negative, got {self.skip_documents}")
        if self.ctx_len < 4:
            raise PersonamineError(f"ctx_len must be at least 4, got {self.ctx_len}")
        if self.resolved_threshold_start() + 1 >= self.steps:
            # The threshold is only calibrated on steps after threshold_start_step; without any it stays -1.
            raise PersonamineError(
                f"steps ({self.steps}) must exceed threshold_start_step ({self.resolved_threshold_start()}) + 1, "
                "or the SAE's threshold is never calibrated"
            )
        if self.resolved_warmup() >= self.steps:
            raise PersonamineError(f"warmup_steps ({self.resolved_warmup()}) must be below steps ({self.steps})")

    def resolved_warmup(self) -> int:
        return self.steps // 20 if self.warmup_steps is None else self.warmup_steps

    def resolved_threshold_start(self) -> int:
        return self.steps // 2 if self.threshold_start_step is None else self.threshold_start_step

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
