"""The mining run's typed config: the lowest layer, so every layer that reads it imports it downward.

It is saved into the output and fingerprints the work dir for resume."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

from personamine.errors import PersonamineError

DEFAULT_MODEL = "builtin:smollm2-135m-instruct"


def resolve_config(cls: type, config: Any, overrides: dict[str, Any], what: str) -> Any:
    """The config a Python entry point runs: ``config`` with ``overrides`` applied, or, with no config,
    ``cls(**overrides)``, where unknown keyword arguments are named in one error (``what``: the command)."""
    if config is None:
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise PersonamineError(f"unknown {what} option(s): {', '.join(unknown)}")
        return cls(**overrides)
    return dataclasses.replace(config, **overrides) if overrides else config

# Fields that change how a run executes but not what it computes (batch shapes only move float rounding):
# a resume may change them.
EXECUTION_FIELDS = frozenset(
    {"output", "work_dir", "backend", "ray_address", "num_actors", "actor_num_gpus", "actor_num_cpus",
     "progress", "max_shard_retries", "batch_tokens", "feature_chunk"}
)


def knob(default: Any = MISSING, help: str = "", *, factory: Callable[[], Any] | None = None) -> Any:
    """A config field and its one-line documentation: every command's ``--help`` prints it with the default, so
    the flags and the fields cannot drift apart (a test checks that every field of every config has one)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


def field_help(cls: type) -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


@dataclass
class MineConfig:
    # model
    model: str = knob(DEFAULT_MODEL, "model: a hub id, a local directory, or builtin:smollm2-135m-instruct")
    layer: int = knob(15, "decoder layer whose output (resid_post) is captured; the forward stops there")
    gguf_file: str | None = knob(None, "GGUF file inside the model repo or directory, for GGUF checkpoints")
    revision: str | None = knob(None, "model revision (branch, tag or commit) on the hub")
    dtype: str = knob("auto", "model dtype: auto (bf16 on GPU, fp32 on CPU), float32, bfloat16 or float16")
    device: str = knob("auto", "torch device: auto (cuda if available), cpu, cuda, cuda:1, ...")
    # SAE
    sae: str = knob("", "SAE: a hub repo id, a release directory, a directory holding ae.pt, or the ae.pt file")
    sae_trainer: int = knob(0, "trainer folder of a release (resid_post_layer_L/trainer_T)")
    allow_uncalibrated: bool = knob(False, "use an SAE whose threshold was never calibrated (dense ReLU codes)")
    # features: explicit ids, "all", or the top N of a discovery file
    features: list[int] | str = knob(help="feature ids (1,5,9 or 3-6) or 'all'", factory=list)
    features_from: str | None = knob(None, "a discovery file: mine its top-ranked features")
    top: int = knob(20, "with features_from: how many of its top-ranked features to mine")
    # corpus
    corpus: str = knob("", "corpus: a file, directory or glob (parquet, jsonl, json, txt, arrow, csv), a hub "
                           "dataset id, or builtin:chat-and-prose")
    corpus_config: str | None = knob(None, "hub dataset configuration (subset) name")
    split: str = knob("train", "hub dataset split")
    text_column: str = knob("text", "column holding each document's text")
    streaming: bool | None = knob(None, "stream a hub dataset instead of downloading it (default: stream)")
    max_documents: int | None = knob(None, "mine at most this many leading documents")
    max_tokens: int | None = knob(None, "mine whole leading documents until their tokens reach this budget")
    # windows and selection
    ctx_len: int = knob(64, "tokens fed per window, sink prefix included")
    top_k: int = knob(20, "windows kept per feature")
    sink_prefix: list[str] | None = knob(None, "tokens every window starts with (default: the tokenizer's BOS, "
                                               "or its unk then bos tokens)")
    norm_filter: float = knob(10.0, "skip tokens whose residual norm exceeds this multiple of their window's "
                                    "median norm (0: off)")
    dedupe: bool = knob(True, "windows whose fed tokens are identical count once")
    samples_per_interval: int = knob(5, "interval samples kept per feature and activation interval (0: none)")
    negatives_per_feature: int = knob(20, "non-activating windows kept per feature, for explanation scoring (0: none)")
    # execution
    n_shards: int = knob(16, "pieces of work the corpus is split into (checkpointed one by one)")
    batch_tokens: int | None = knob(None, "fed positions per batch (default: 2048 on CPU, 32768 on GPU)")
    feature_chunk: int = knob(8192, "features encoded at a time (bounds the encoder's memory)")
    output: str = knob("personamine-out/mine.h5", "the HDF5 file to write")
    work_dir: str | None = knob(None, "checkpoint directory (default: OUTPUT.work)")
    backend: str = knob("local", "where pieces of work run: local or ray")
    ray_address: str | None = knob(None, "Ray cluster to join (default: RAY_ADDRESS, a local cluster, or a new one)")
    num_actors: int | None = knob(None, "Ray mining actors (default: one per GPU, or one on CPU)")
    actor_num_gpus: float | None = knob(None, "GPUs per Ray actor (default: 1 if the cluster has GPUs, else 0)")
    actor_num_cpus: float = knob(1.0, "CPUs per Ray actor (also its torch thread count)")
    max_shard_retries: int = knob(3, "retries of a piece of work whose actor died or that raised")
    progress: bool = knob(True, "show a progress bar")

    def __post_init__(self) -> None:
        if isinstance(self.features, str) and self.features != "all":
            self.features = parse_feature_list(self.features)
        if self.ctx_len < 4:
            raise PersonamineError(f"ctx_len must be at least 4, got {self.ctx_len}")
        if self.top_k < 1:
            raise PersonamineError(f"top_k must be at least 1, got {self.top_k}")
        if self.samples_per_interval < 0:
            raise PersonamineError(f"samples_per_interval must not be negative, got {self.samples_per_interval}")
        if self.negatives_per_feature < 0:
            raise PersonamineError(f"negatives_per_feature must not be negative, got {self.negatives_per_feature}")
        if self.n_shards < 1:
            raise PersonamineError(f"n_shards must be at least 1, got {self.n_shards}")
        if self.backend not in ("local", "ray"):
            raise PersonamineError(f"backend must be 'local' or 'ray', got {self.backend!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def fingerprint(self) -> str:
        """Hash of everything that affects the result; a work dir only resumes a run with the same one."""
        data = {k: v for k, v in self.to_dict().items() if k not in EXECUTION_FIELDS}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def resolved_work_dir(self) -> Path:
        return Path(self.work_dir) if self.work_dir else Path(str(self.output) + ".work")

    def replace(self, **changes: Any) -> MineConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MineConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PersonamineError(f"unknown config field(s): {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> MineConfig:
        try:
            with open(path, "rb") as handle:
                data = tomllib.load(handle)
        except OSError as exc:
            raise PersonamineError(f"cannot read config {str(path)!r}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise PersonamineError(f"config {str(path)!r} is not valid TOML: {exc}") from exc
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(data)


def parse_feature_list(text: str) -> list[int]:
    """'1,5,9' or '3-6' ranges → ids."""
    ids: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                ids.extend(range(int(lo), int(hi) + 1))
            else:
                ids.append(int(part))
        except ValueError as exc:
            raise PersonamineError(f"cannot parse feature list {text!r}: expected ids like 1,5,9 or 3-6") from exc
    return ids
