"""`personamine.steer(...)`: does the feature cause the persona? Ablate, clamp or add SAE features at the SAE's layer
of the full model and measure what changes, on the persona prompts and on matched controls.

Features come from a discovery file, a mining file or a list; the model, layer and SAE default to the ones
recorded in that file. Prompts are rendered with the chat template exactly as ``discover`` renders them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from personamine.config import DEFAULT_MODEL, knob, parse_feature_list, resolve_config
from personamine.errors import PersonamineError
from personamine.steering.interventions import CLAMP_WHERE, POSITIONS, parse_intervention, sweep

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
    interventions: list[str] = knob(help="more interventions, terms joined by +: ablate:12, clamp:12=2x, "
                                         "clamp:12=30, add:12=0.5, ablate:12+add:40=-1", factory=list)
    positions: str = knob("all", "where to intervene: all, prompt (the rendered prompt's tokens) or generated "
                                 "(the response's tokens); special tokens never")
    # prompts (rendered as discover renders them)
    prompts: str | None = knob(None, "persona prompts: JSONL {\"content\": ...} per line or plain text lines "
                                     "(default: the shipped 32)")
    controls: str | None = knob(None, "control prompts, same formats (default: the shipped 32, matched line by line)")
    n_prompts: int | None = knob(None, "use only the first N prompts of each set")
    system_prompt: str | None = knob(None, "a system turn before each prompt (default: the template's own)")
    date_string: str | None = knob("26 Jul 2024", "date passed to the chat template (Llama-3.1 prints today's "
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
                              ("alpha_unit", ALPHA_UNITS)):
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


@dataclass
class Source:
    """What a discovery or mining file says about the run that wrote it."""

    kind: str  # "discovery" or "mining"
    path: str
    config: dict
    feature_ids: np.ndarray


def read_source(path: str) -> Source:
    import h5py

    from personamine.jobs.features import DISCOVERY_FORMAT, read_discovery_ranking
    from personamine.merge.hdf5 import FORMAT as MINE_FORMAT

    try:
        with h5py.File(path, "r") as f:
            fmt = f.attrs.get("format")
            config = json.loads(f.attrs.get("config", "{}"))
            ids = f["feature_ids"][()] if fmt == MINE_FORMAT else None
    except OSError as exc:
        raise PersonamineError(f"cannot open features_from file {path!r}: {exc}") from exc
    if fmt == DISCOVERY_FORMAT:
        return Source("discovery", path, config, read_discovery_ranking(path)[0])
    if fmt == MINE_FORMAT:
        return Source("mining", path, config, ids.astype(np.int64))
    raise PersonamineError(f"{path!r} is neither a discovery nor a mining file")


def corpus_max(path: str, features: list[int]) -> dict[int, float]:
    from personamine.merge.hdf5 import read_results

    res = read_results(path, features)
    return {int(f): float(m) for f, m in zip(res.feature_ids.tolist(), res.max.tolist(), strict=True)}


def self_name(model: str, tokenizer) -> str:
    """The model's name for itself: the chat template's default system prompt ("... named SmolLM, ..."), else the
    leading word of the model id ("meta-llama/Llama-3.1-8B-Instruct" -> "Llama")."""
    match = re.search(r"\bnamed ([A-Z][\w.-]*[\w])", getattr(tokenizer, "chat_template", None) or "")
    if match:
        return match.group(1)
    base = re.split(r"[/:]", model.rstrip("/"))[-1]
    word = (re.match(r"[A-Za-z]+", base) or re.match(r".*", base)).group(0) or base
    return word[:1].upper() + word[1:] if word.islower() else word


def load_continuations(path: str | None, name: str) -> tuple[list[str], list[str], list[int]]:
    """(set names, continuations, set index of each), ``{name}`` filled in."""
    source = Path(path) if path else Path(str(resources.files("personamine") / "data" / "identity_continuations.json"))
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PersonamineError(f"cannot read continuations file {str(source)!r}: {exc.strerror}") from exc
    except ValueError as exc:
        raise PersonamineError(f"continuations file {str(source)!r} is not JSON: {exc}") from exc
    if not isinstance(data, dict) or not data or not all(
            isinstance(v, list) and v and all(isinstance(c, str) and c.strip() for c in v) for v in data.values()):
        raise PersonamineError(f"continuations file {str(source)!r} must map set names to non-empty lists of "
                               "non-empty strings")
    names, texts, sets = [], [], []
    for s, (set_name, items) in enumerate(data.items()):
        names.append(str(set_name))
        for text in items:
            texts.append(text.replace("{name}", name))
            sets.append(s)
    return names, texts, sets


# ---------------------------------------------------------------- the job


@dataclass
class _Resolved:
    model: str
    gguf_file: str | None
    revision: str | None
    sae: str
    sae_trainer: int
    layer: int | None
    sae_id: str | None
    sae_format: str


def _resolve_run(cfg: SteerConfig, source: Source | None) -> _Resolved:
    rec = source.config if source is not None else {}
    if cfg.model is not None:
        model, gguf, revision = cfg.model, cfg.gguf_file, cfg.revision
    else:
        model = rec.get("model") or DEFAULT_MODEL
        gguf, revision = cfg.gguf_file or rec.get("gguf_file"), cfg.revision or rec.get("revision")
    trainer = cfg.sae_trainer if cfg.sae_trainer is not None else int(rec.get("sae_trainer") or 0)
    layer = cfg.layer if cfg.layer is not None else rec.get("layer")
    same_sae = cfg.sae is None or cfg.sae == rec.get("sae")
    sae_id = cfg.sae_id if cfg.sae_id is not None else (rec.get("sae_id") if same_sae else None)
    sae_format = cfg.sae_format or (rec.get("sae_format") if same_sae else None) or "auto"
    return _Resolved(model, gguf, revision, cfg.sae or rec.get("sae") or "", trainer, layer, sae_id, sae_format)


def steer(config: SteerConfig | None = None, /, **overrides: Any) -> Path:
    """Steer SAE features of a chat model and measure the effect; write one HDF5 file and return its path.

    ``config`` is a :class:`SteerConfig` or None (then keyword arguments are its fields); keyword arguments override
    a given config. Read the file with :func:`personamine.read_steering`.
    """
    from personamine.jobs.discover import DiscoverConfig, builtin_prompts_path, load_prompts, render_prompts
    from personamine.model.loading import check_layer, find_decoder_layers, load_causal_lm, load_config, load_tokenizer
    from personamine.shards.windows import sink_prefix_ids, special_token_ids
    from personamine.steering.assemble import assemble
    from personamine.steering.generate import GenerationSettings
    from personamine.steering.hdf5 import write_steering
    from personamine.steering.hooks import Steering
    from personamine.steering.run import SteerInputs, run_interventions
    from personamine.steering.sae_access import SteerSae, check_feature_ids, check_hook, open_sae

    cfg = resolve_config(SteerConfig, config, overrides, "steer")
    # Everything cheap is checked before the model loads, so bad input fails fast and writes nothing.
    source = read_source(cfg.features_from) if cfg.features_from else None
    run = _resolve_run(cfg, source)
    texts = {kind: load_prompts(path or builtin_prompts_path(kind))[: cfg.n_prompts]
             for kind, path in (("persona", cfg.prompts), ("control", cfg.controls))}
    handle = open_sae(run.sae, run.layer, run.sae_trainer, run.sae_id, run.sae_format)
    layer = run.layer if run.layer is not None else handle.layer
    if layer is None:
        raise PersonamineError(f"the SAE {run.sae!r} does not say which layer it reads: give the layer")
    model_config = load_config(run.model, run.gguf_file, run.revision)
    check_layer(layer, model_config.num_hidden_layers, run.model)
    check_hook(handle, layer, int(model_config.hidden_size), cfg.allow_uncalibrated)

    features = list(dict.fromkeys(cfg.features)) if cfg.features else (
        source.feature_ids[: cfg.top].tolist() if source is not None else [])
    if not features:
        raise PersonamineError("no features to steer: pass features or features_from")
    specs = sweep(features, ablate=cfg.ablate, clamp=cfg.clamp, alphas=cfg.alphas, combine=cfg.combine)
    if cfg.clamp_unit == "absolute":
        specs = [tuple(dataclasses.replace(s, relative=False) for s in group) for group in specs]
    specs += [parse_intervention(text) for text in cfg.interventions]
    if not specs:
        raise PersonamineError("no interventions: enable ablate, or give clamp values, alphas or interventions")
    every = list(dict.fromkeys(features + [t.feature for group in specs for t in group]))
    check_feature_ids(handle, every)
    mining = cfg.mining or (cfg.features_from if source is not None and source.kind == "mining" else None)
    unit = cfg.clamp_unit if cfg.clamp_unit != "auto" else ("corpus-max" if mining else "prompt-max")
    relative = any(t.relative for group in specs for t in group)
    if unit == "corpus-max" and relative and not mining:
        raise PersonamineError("clamp multiples of the corpus max need a mining file: give mining (or a mining "
                               "file as features_from), or clamp_unit prompt-max or absolute")
    if unit == "absolute" and relative:
        raise PersonamineError("clamp multiples like '2x' need clamp_unit corpus-max or prompt-max, not absolute")
    maxima = corpus_max(mining, every) if unit == "corpus-max" and relative else None

    tokenizer = load_tokenizer(run.model, run.gguf_file, run.revision)
    render = DiscoverConfig(system_prompt=cfg.system_prompt, date_string=cfg.date_string)
    rendered = {kind: render_prompts(tokenizer, items, render) for kind, items in texts.items()}
    prefix = sink_prefix_ids(tokenizer)
    special = set(special_token_ids(tokenizer, prefix).tolist())
    for kind, items in rendered.items():
        # Interventions skip special tokens: a prompt of nothing else would not be steered at all.
        empty = [p.text for p in items if all(i in special for i in p.ids)]
        if empty:
            raise PersonamineError(f"the {kind} prompts render to nothing but special tokens (e.g. {empty[0]!r})")
    name = cfg.self_name if cfg.self_name != "auto" else self_name(run.model, tokenizer)
    set_names, continuation_texts, continuation_set = load_continuations(cfg.continuations, name)
    continuation_ids = [[int(i) for i in tokenizer(c, add_special_tokens=False)["input_ids"]]
                        for c in continuation_texts]
    windows = _ppl_windows(cfg, tokenizer, prefix)

    model, device, _ = load_causal_lm(run.model, dtype=cfg.dtype, device=cfg.device, gguf_file=run.gguf_file,
                                      revision=run.revision)
    sae = SteerSae(handle, np.asarray(every, dtype=np.int64), device)
    steering = Steering(model, find_decoder_layers(model)[layer], sae, special)
    inputs = SteerInputs(
        prompts={kind: [p.ids for p in items] for kind, items in rendered.items()},
        continuations=continuation_ids, windows=windows, n_prefix=len(prefix), specs=specs,
        positions=cfg.positions, clamp_unit=unit, corpus_max=maxima, clamp_where=cfg.clamp_where,
        alpha_unit=cfg.alpha_unit, batch_size=cfg.batch_size,
        generation=GenerationSettings(max_new_tokens=cfg.max_new_tokens, sample=cfg.sample,
                                      temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed,
                                      batch_size=cfg.batch_size))
    try:
        outcome = run_interventions(model, tokenizer, steering, inputs, progress=cfg.progress)
    finally:
        steering.close()
    results = assemble(outcome, sae, tokenizer, rendered=rendered, set_names=set_names,
                       continuations=continuation_texts, continuation_set=continuation_set, features=every,
                       attrs={"model": run.model, "layer": layer, "sae": handle.label, "dict_size": handle.dict_size,
                              "sae_threshold": float("nan") if handle.threshold is None else handle.threshold,
                              "positions": cfg.positions, "clamp_unit": unit,
                              "clamp_where": cfg.clamp_where, "alpha_unit": cfg.alpha_unit,
                              "self_name": name, "decoding": "sampled" if cfg.sample else "greedy",
                              "max_new_tokens": cfg.max_new_tokens, "ppl_corpus": cfg.ppl_corpus,
                              "ppl_tokens": sum(max(len(w) - len(prefix), 0) for w in windows),
                              "features_from": cfg.features_from or "", "mining": mining or ""},
                       config=cfg.to_dict())
    return write_steering(cfg.output, results)


def _ppl_windows(cfg: SteerConfig, tokenizer, prefix: list[int]) -> list[list[int]]:
    """One window per leading document of the corpus, its first ``ppl_ctx_len`` tokens behind the sink prefix,
    until ``ppl_tokens`` are collected."""
    if not cfg.ppl_corpus or cfg.ppl_tokens == 0:
        return []
    from personamine.corpus import CorpusSpec, iter_rows, open_manifest
    from personamine.shards.windows import tokenize

    room = cfg.ppl_ctx_len - len(prefix)
    if room < 2:
        raise PersonamineError(f"ppl_ctx_len {cfg.ppl_ctx_len} leaves no room after the {len(prefix)}-token sink "
                               "prefix")
    windows: list[list[int]] = []
    budget = cfg.ppl_tokens
    for _, text in iter_rows(open_manifest(CorpusSpec(cfg.ppl_corpus))):
        if not isinstance(text, str) or not text.strip():
            continue
        tokens = tokenize(tokenizer, [text])[0][: min(room, budget)]
        if tokens:
            windows.append(prefix + [int(t) for t in tokens])
            budget -= len(tokens)
        if budget <= 0:
            break
    if not windows:
        raise PersonamineError(f"the perplexity corpus {cfg.ppl_corpus!r} has no text")
    return windows
