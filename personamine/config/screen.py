"""Screening's typed config (``personamine.screen``): a conversation corpus ranked by projection difference. It is
saved into the output and fingerprints the work dir for resume, as mining's does."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personamine.config.fields import DEFAULT_DATE, DEFAULT_MODEL, at_least, check_fields, knob, read_toml
from personamine.errors import PersonamineError

# Fields that change how a run executes but not what it computes: a resume may change them. (``batch_size`` is not
# one: a batch's padding moves float rounding, and generation's greedy choices with it.)
SCREEN_EXECUTION_FIELDS = frozenset(
    {"output", "work_dir", "backend", "ray_address", "num_actors", "actor_num_gpus", "actor_num_cpus", "progress",
     "max_shard_retries", "n_shards", "keep_work_dir"})


@dataclass
class ScreenConfig:
    # model
    model: str = knob(DEFAULT_MODEL, "model: a hub id, a local directory, or builtin:smollm2-135m-instruct")
    revision: str | None = knob(None, "model revision (branch, tag or commit) on the hub")
    dtype: str = knob("auto", "model dtype: auto (bf16 on GPU, fp32 on CPU), float32, bfloat16 or float16")
    device: str = knob("auto", "torch device: auto (cuda if available), cpu, cuda, cuda:1, ...")
    # directions
    directions: str = knob("", "direction file: a discovery .h5 (names L<layer>/<pooling>), .safetensors, .npy (with "
                               "its .json) or .pt")
    names: list[str] | None = knob(None, "the directions to project on, all at one layer (default: every direction "
                                         "in the file found at the layer); the first one ranks the samples")
    layer: int | None = knob(None, "decoder layer whose output (resid_post) is projected (default: the layer the "
                                   "directions were found at, which a discovery file records; needed for "
                                   ".safetensors, .npy or .pt files without one)")
    # corpus
    corpus: str = knob("", "conversation corpus: a file, directory or glob (jsonl, json, parquet, arrow), or a hub "
                           "dataset id")
    corpus_config: str | None = knob(None, "hub dataset configuration (subset) name")
    split: str = knob("train", "hub dataset split")
    corpus_revision: str | None = knob(None, "hub dataset revision (branch, tag or commit; pinned to its commit)")
    messages_column: str = knob("messages", "column holding each row's conversation, a list of {role, content} (or "
                                            "ShareGPT {from, value}) turns; a sample is a row whose last turn is the "
                                            "assistant's")
    system_prompt: str | None = knob(None, "a system turn added to conversations without one (default: none, so "
                                           "templates with a default system prompt insert theirs)")
    date_string: str | None = knob(DEFAULT_DATE, "date passed to the chat template (Llama-3.1's prints today's date "
                                                 "otherwise)")
    max_documents: int | None = knob(None, "screen at most this many leading rows")
    unit_bytes: int = knob(8 << 20, "bytes per unit of a jsonl file (parquet units are its row groups)")
    skip_malformed_rows: bool = knob(False, "skip and count rows that are not conversations (default: error)")
    # generation
    max_new_tokens: int = knob(64, "the model's own greedy response stops at an end-of-turn token or after this many "
                                   "tokens")
    batch_size: int = knob(16, "samples generated (and projected) together; a batch never mixes units")
    # execution
    n_shards: int | None = knob(None, "group the units into this many shards (what one actor call screens), each "
                                      "checkpointed (default: one per unit; the output does not depend on it)")
    output: str = knob("personamine-out/screen.h5", "the HDF5 file to write")
    work_dir: str | None = knob(None, "checkpoint directory (default: OUTPUT.work)")
    keep_work_dir: bool = knob(False, "keep the checkpoints after a successful run (they are always kept after a "
                                      "failure, to resume)")
    backend: str = knob("local", "where shards run: local or ray")
    ray_address: str | None = knob(None, "Ray cluster to join (default: RAY_ADDRESS, a local cluster, or a new one)")
    num_actors: int | None = knob(None, "Ray screening actors (default: one per GPU, or one on CPU)")
    actor_num_gpus: float | None = knob(None, "GPUs per Ray actor (default: 1 if the cluster has GPUs, else 0)")
    actor_num_cpus: float = knob(1.0, "CPUs per Ray actor (also its torch thread count)")
    max_shard_retries: int = knob(3, "retries of a shard of work whose actor died or that raised")
    progress: bool = knob(True, "show a progress bar")

    def __post_init__(self) -> None:
        at_least(self, 1, "n_shards", "max_documents", "unit_bytes", "max_new_tokens", "batch_size")
        at_least(self, 0, "layer", "max_shard_retries")
        if self.backend not in ("local", "ray"):
            raise PersonamineError(f"backend must be 'local' or 'ray', got {self.backend!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Hash of everything that affects the result; a work dir only resumes a run with the same one."""
        data = {k: v for k, v in self.to_dict().items() if k not in SCREEN_EXECUTION_FIELDS}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def resolved_work_dir(self) -> Path:
        return Path(self.work_dir) if self.work_dir else Path(str(self.output) + ".work")

    def replace(self, **changes: Any) -> ScreenConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScreenConfig:
        check_fields(cls, data, "config field")
        return cls(**data)

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> ScreenConfig:
        return read_toml(cls, path, overrides)
