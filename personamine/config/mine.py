"""The mining run's typed config. It is saved into the output and fingerprints the work dir for resume."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personamine.config.fields import DEFAULT_MODEL, at_least, check_fields, knob, parse_feature_list, read_toml
from personamine.errors import PersonamineError
from personamine.roles import CONTENT_ROLES

# Fields that change how a run executes but not what it computes (batch shapes only move float rounding):
# a resume may change them.
EXECUTION_FIELDS = frozenset(
    {"output", "work_dir", "backend", "ray_address", "num_actors", "actor_num_gpus", "actor_num_cpus",
     "progress", "max_shard_retries", "batch_tokens", "feature_chunk", "n_shards", "keep_work_dir", "sae_exact_topk",
     "preflight_tokens", "min_fve", "allow_low_fve"}
)


# Fields added after work dirs were first written, with the default that means "as before": left at it, they stay
# out of the fingerprint, so a run started by an older version resumes.
ADDED_FIELDS = {"max_q": None, "min_ci_low": None, "layers": [], "directions": None, "direction_names": None,
                "direction_layer": None, "center_directions": False, "document_scores": False}


@dataclass
class MineConfig:
    # model
    model: str = knob(DEFAULT_MODEL, "model: a hub id, a local directory, or builtin:smollm2-135m-instruct")
    layer: int | None = knob(None, "decoder layer whose output (resid_post) is captured; the forward stops there "
                                   "(default: the layer the SAE declares)")
    layers: list[int] = knob(help="several layers in one forward (3,7,11 or 3-27): one SAE readout per layer, each "
                                  "the release's SAE at that layer, written to OUTPUT's stem + .L<layer>.h5 and "
                                  "indexed by OUTPUT (default: layer alone)", factory=list)
    gguf_file: str | None = knob(None, "GGUF file inside the model repo or directory, for GGUF checkpoints")
    revision: str | None = knob(None, "model revision (branch, tag or commit) on the hub")
    dtype: str = knob("auto", "model dtype: auto (bf16 on GPU, fp32 on CPU), float32, bfloat16 or float16")
    device: str = knob("auto", "torch device: auto (cuda if available), cpu, cuda, cuda:1, ...")
    # SAE
    sae: str = knob("", "SAE: a hub repo id, a release directory, a directory holding ae.pt, or the ae.pt file "
                        "(none: mine directions alone)")
    sae_trainer: int = knob(0, "trainer folder of a release (resid_post_layer_L/trainer_T)")
    allow_uncalibrated: bool = knob(False, "use an SAE whose threshold was never calibrated (dense ReLU codes)")
    # SAE layout, exact TopK encoding and the pre-flight quality check (personamine/saes)
    sae_id: str | None = knob(None, "one SAE inside the SAE repo or directory (a folder or file, e.g. layers.10 or "
                                    "layer_20/width_16k/average_l0_71), or a SAELens release's sae_id")
    sae_format: str = knob("auto", "SAE layout: auto, dictionary_learning, saelens, sparsify, goodfire, gemma_scope "
                                   "or llama_scope")
    sae_exact_topk: bool = knob(False, "TopK SAEs: encode a subset of features exactly by computing every "
                                       "pre-activation (a full encoder pass per batch); required to mine a subset")
    preflight_tokens: int = knob(4096, "scored tokens the pre-flight quality check measures the SAE on (0: skip)")
    min_fve: float = knob(0.5, "pre-flight: refuse an SAE that explains less of the captured variance than this")
    allow_low_fve: bool = knob(False, "run even if the pre-flight quality check fails (it warns instead)")
    allow_nonfinite: bool = knob(False, "read a NaN or infinite activation as 0, count it (activations_nonfinite) "
                                        "and warn, instead of stopping the run (default: the first one is an error "
                                        "naming its feature, document and token)")
    # features: explicit ids, "all", or the top N of a discovery file
    features: list[int] | str = knob(help="feature ids (1,5,9 or 3-6) or 'all'", factory=list)
    features_from: str | None = knob(None, "a discovery file: mine its top-ranked features")
    top: int = knob(20, "with features_from: how many of its top-ranked features to mine")
    positive_only: bool = knob(True, "with features_from: take only features that score above zero "
                                     "(--no-positive-only: the top N whatever their score)")
    max_q: float | None = knob(None, "with features_from: take only features whose q-value (Benjamini-Hochberg, "
                                     "from the discovery file's statistics) is at most this")
    min_ci_low: float | None = knob(None, "with features_from: take only features whose CI's lower bound is above "
                                          "this (0: the CI excludes zero)")
    # directions, read in the same forward (personamine/shards/readouts.py)
    directions: str | None = knob(None, "also mine directions: a discovery .h5, or a .safetensors, .npy (names in a "
                                        ".json beside it) or .pt file of [n, hidden] vectors; each direction's value "
                                        "at a token is the projection h . v_hat at its layer, mined in both tails")
    direction_names: list[str] | None = knob(None, "with directions: mine only these (default: every direction in "
                                                   "the file)")
    direction_layer: int | None = knob(None, "with directions: the layer of directions whose file does not say (a "
                                             "discovery file does; default: layer)")
    center_directions: bool = knob(False, "with directions: subtract each direction's reference mean (a discovery "
                                          "direction's: the midpoint of its two sides' mean projections)")
    document_scores: bool = knob(False, "SAE readouts: also keep each mined feature's mean and max per document and "
                                        "per assistant turn (directions always keep theirs)")
    # corpus
    corpus: str = knob("", "corpus: a file, directory or glob (parquet, jsonl, json, txt, arrow, csv), a hub "
                           "dataset id, or builtin:chat-and-prose")
    corpus_config: str | None = knob(None, "hub dataset configuration (subset) name")
    split: str = knob("train", "hub dataset split")
    corpus_revision: str | None = knob(None, "hub dataset revision (branch, tag or commit; pinned to its commit)")
    text_column: str = knob("text", "column holding each document's text")
    tokens_column: str | None = knob(None, "column holding pre-tokenized documents (lists of token ids), mined as "
                                           "they are (default: a text corpus, tokenized here)")
    messages_column: str | None = knob(None, "column holding each row's conversation, a list of {role, content} "
                                             "(or ShareGPT {from, value}) turns: mine it rendered with the chat "
                                             "template (default: a text corpus)")
    system_prompt: str | None = knob(None, "a system turn added to conversations without one (default: none, so "
                                           "templates with a default system prompt insert theirs)")
    date_string: str | None = knob("26 Jul 2024", "date passed to the chat template (Llama-3.1's prints today's "
                                                  "date otherwise)")
    generation_prompt: bool = knob(False, "render conversations with the assistant's generation prompt after the "
                                          "last turn, as discover renders its prompts")
    max_documents: int | None = knob(None, "mine at most this many leading documents")
    max_tokens: int | None = knob(None, "mine whole leading documents until their tokens reach this budget")
    unit_bytes: int = knob(8 << 20, "bytes per unit of a jsonl or txt file (parquet units are its row groups)")
    skip_malformed_rows: bool = knob(False, "skip and count jsonl lines that are not JSON objects (default: error)")
    # windows and selection
    ctx_len: int = knob(64, "tokens fed per window, sink prefix included (up to the model's context)")
    stride: int | None = knob(None, "tokens each window after a document's first scores, the rest of it being "
                                    "real preceding context (default: ctx_len minus the sink prefix, no overlap)")
    example_len: int = knob(64, "tokens stored per example: a span around the window's peak (the whole window "
                                "when it is shorter)")
    score_roles: list[str] | None = knob(None, "roles whose tokens are scored: text, system, user, assistant "
                                               "(default: all of them; template tokens never are)")
    top_k: int = knob(20, "windows kept per feature")
    sink_prefix: list[str] | None = knob(None, "tokens every window starts with (default: the tokenizer's BOS, "
                                               "or its unk then bos tokens)")
    norm_filter: float = knob(10.0, "skip tokens whose residual norm exceeds this multiple of their window's "
                                    "median norm (0: off)")
    dedupe: bool = knob(True, "windows whose fed tokens are identical count once")
    samples_per_interval: int = knob(5, "interval samples kept per feature and activation interval (0: none)")
    negatives_per_feature: int = knob(20, "non-activating windows kept per feature, for explanation scoring (0: none)")
    # execution
    n_shards: int | None = knob(None, "group the units into this many shards (what one actor call mines), each "
                                      "checkpointed (default: one per unit; the output does not depend on it)")
    batch_tokens: int | None = knob(None, "fed positions per batch (default: 2048 on CPU, 32768 on GPU)")
    feature_chunk: int = knob(8192, "features encoded at a time (bounds the encoder's memory)")
    output: str = knob("personamine-out/mine.h5", "the HDF5 file to write")
    work_dir: str | None = knob(None, "checkpoint directory (default: OUTPUT.work)")
    keep_work_dir: bool = knob(False, "keep the checkpoints after a successful run (they are always kept after a "
                                      "failure, to resume)")
    backend: str = knob("local", "where shards run: local or ray")
    ray_address: str | None = knob(None, "Ray cluster to join (default: RAY_ADDRESS, a local cluster, or a new one)")
    num_actors: int | None = knob(None, "Ray mining actors (default: one per GPU, or one on CPU)")
    actor_num_gpus: float | None = knob(None, "GPUs per Ray actor (default: 1 if the cluster has GPUs, else 0)")
    actor_num_cpus: float = knob(1.0, "CPUs per Ray actor (also its torch thread count)")
    max_shard_retries: int = knob(3, "retries of a shard of work whose actor died or that raised")
    progress: bool = knob(True, "show a progress bar")

    def __post_init__(self) -> None:
        if isinstance(self.features, str) and self.features != "all":
            self.features = parse_feature_list(self.features)
        if isinstance(self.layers, str):
            self.layers = parse_feature_list(self.layers)
        self.layers = [int(v) for v in self.layers]
        if any(v < 0 for v in self.layers) or (self.direction_layer is not None and self.direction_layer < 0):
            raise PersonamineError(f"layers must not be negative, got {self.layers or self.direction_layer}")
        if len(set(self.layers)) != len(self.layers):
            raise PersonamineError(f"layers names a layer twice ({self.layers}): two readouts would have one name")
        at_least(self, 4, "ctx_len")
        at_least(self, 1, "top", "top_k", "n_shards", "batch_tokens", "feature_chunk", "max_documents", "max_tokens",
                 "unit_bytes", "example_len", "stride")
        at_least(self, 0, "samples_per_interval", "negatives_per_feature", "norm_filter", "max_shard_retries",
                 "sae_trainer", "preflight_tokens")
        if self.score_roles is not None:
            unknown = [r for r in self.score_roles if r not in CONTENT_ROLES]
            if unknown or not self.score_roles:
                raise PersonamineError(f"score_roles may name {', '.join(CONTENT_ROLES)}; got "
                                       f"{', '.join(map(repr, self.score_roles)) or 'none'}")
        if self.backend not in ("local", "ray"):
            raise PersonamineError(f"backend must be 'local' or 'ray', got {self.backend!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def fingerprint(self) -> str:
        """Hash of everything that affects the result; a work dir only resumes a run with the same one."""
        data = {k: v for k, v in self.to_dict().items()
                if k not in EXECUTION_FIELDS and not (k in ADDED_FIELDS and v == ADDED_FIELDS[k])}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def resolved_work_dir(self) -> Path:
        return Path(self.work_dir) if self.work_dir else Path(str(self.output) + ".work")

    def replace(self, **changes: Any) -> MineConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MineConfig:
        check_fields(cls, data, "config field")
        return cls(**data)

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> MineConfig:
        return read_toml(cls, path, overrides)
