"""One typed config per mining run; it is saved into the output and fingerprints the work dir for resume."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
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


@dataclass
class MineConfig:
    # model
    model: str = DEFAULT_MODEL
    layer: int = 15
    gguf_file: str | None = None
    revision: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    # SAE
    sae: str = ""
    sae_trainer: int = 0
    allow_uncalibrated: bool = False
    # features: explicit ids, "all", or the top N of a discovery file
    features: list[int] | str = field(default_factory=list)
    features_from: str | None = None
    top: int = 20
    # corpus
    corpus: str = ""
    corpus_config: str | None = None
    split: str = "train"
    text_column: str = "text"
    streaming: bool | None = None
    max_documents: int | None = None
    max_tokens: int | None = None
    # windows and selection
    ctx_len: int = 64
    top_k: int = 20
    sink_prefix: list[str] | None = None
    norm_filter: float = 10.0
    dedupe: bool = True
    samples_per_interval: int = 5  # interval samples kept per feature and activation interval (0: none)
    # execution
    n_shards: int = 16
    batch_tokens: int | None = None
    feature_chunk: int = 8192
    output: str = "personamine-out/mine.h5"
    work_dir: str | None = None
    backend: str = "local"
    ray_address: str | None = None
    num_actors: int | None = None
    actor_num_gpus: float | None = None
    actor_num_cpus: float = 1.0
    max_shard_retries: int = 3
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.features, str) and self.features != "all":
            self.features = parse_feature_list(self.features)
        if self.ctx_len < 4:
            raise PersonamineError(f"ctx_len must be at least 4, got {self.ctx_len}")
        if self.top_k < 1:
            raise PersonamineError(f"top_k must be at least 1, got {self.top_k}")
        if self.samples_per_interval < 0:
            raise PersonamineError(f"samples_per_interval must not be negative, got {self.samples_per_interval}")
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
