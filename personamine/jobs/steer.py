"""`personamine.steer(...)`: does the feature cause the persona? Ablate, clamp or add SAE features at the SAE's layer
of the full model, and add, ablate, cap or floor residual-stream directions (a discovered persona direction, an
Assistant Axis) over a range of layers, and measure what changes, on the persona prompts and on matched controls.

Features come from a discovery file, a mining file or a list; the model, layer and SAE default to the ones
recorded in that file. Prompts are rendered with the chat template exactly as ``discover`` renders them.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from personamine.config import DEFAULT_MODEL, SteerConfig, resolve_config
from personamine.corpus import CorpusSpec, iter_rows, open_manifest
from personamine.errors import PersonamineError
from personamine.files.directions import load_directions
from personamine.files.discover import FORMAT as DISCOVERY_FORMAT
from personamine.files.discover import FORMAT_VERSION as DISCOVERY_VERSION
from personamine.files.discover import read_discovery_ranking
from personamine.files.h5 import file_format, read_attrs
from personamine.files.mine import FORMAT as MINE_FORMAT
from personamine.files.mine import (
    INDEX_FORMAT,
    mined_percentiles,
    read_feature_ids,
    read_results,
    readout_path,
    readouts_of,
)
from personamine.files.steer import write_steering
from personamine.model.generate import GenerationSettings
from personamine.model.loading import check_layer, find_decoder_layers, load_causal_lm, load_config, load_tokenizer
from personamine.model.prompts import (
    builtin_prompts_path,
    load_prompts,
    render_prompts,
    sink_prefix_ids,
    special_token_ids,
    tokenize,
)
from personamine.steering.assemble import assemble
from personamine.steering.hooks import Steering
from personamine.steering.interventions import DirectionSpec, TermSpec, direction_names, parse_intervention, sweep
from personamine.steering.run import SteerInputs, run_interventions
from personamine.steering.sae_access import SteerSae, check_feature_ids, check_hook, open_sae


@dataclass
class Source:
    """What a discovery or mining file says about the run that wrote it."""

    kind: str  # "discovery" or "mining"
    path: str
    config: dict
    feature_ids: np.ndarray


def read_source(path: str) -> Source:
    fmt = file_format(Path(path), "features_from")
    if fmt == INDEX_FORMAT:  # a run with several readouts: its first (its first SAE's) file
        path, fmt = str(readout_path(path, None)), MINE_FORMAT
    if fmt == DISCOVERY_FORMAT:
        attrs = read_attrs(Path(path), DISCOVERY_FORMAT, DISCOVERY_VERSION, "discovery")
        return Source("discovery", path, json.loads(attrs.get("config", "{}")), read_discovery_ranking(path)[0])
    if fmt == MINE_FORMAT:
        ids, attrs = read_feature_ids(path)
        return Source("mining", path, json.loads(attrs.get("config", "{}")), ids)
    raise PersonamineError(f"{path!r} is neither a discovery nor a mining file")


def corpus_max(path: str, features: list[int]) -> dict[int, float]:
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
    every = list(dict.fromkeys(features + [t.feature for group in specs for t in group if isinstance(t, TermSpec)]))
    check_feature_ids(handle, every)
    units, own_layer = resolve_directions(cfg.directions, [t for group in specs for t in group
                                                           if isinstance(t, DirectionSpec)],
                                          hidden_size=int(model_config.hidden_size),
                                          num_layers=int(model_config.num_hidden_layers), model=run.model,
                                          default_layer=layer)
    if cfg.percentiles_from:
        readouts_of(cfg.percentiles_from)  # a mining output, checked before the model loads
    mining = cfg.mining or (cfg.features_from if source is not None and source.kind == "mining" else None)
    unit = cfg.clamp_unit if cfg.clamp_unit != "auto" else ("corpus-max" if mining else "prompt-max")
    relative = any(t.relative for group in specs for t in group if isinstance(t, TermSpec))
    if unit == "corpus-max" and relative and not mining:
        raise PersonamineError("clamp multiples of the corpus max need a mining file: give mining (or a mining "
                               "file as features_from), or clamp_unit prompt-max or absolute")
    if unit == "absolute" and relative:
        raise PersonamineError("clamp multiples like '2x' need clamp_unit corpus-max or prompt-max, not absolute")
    maxima = corpus_max(mining, every) if unit == "corpus-max" and relative else None

    tokenizer = load_tokenizer(run.model, run.gguf_file, run.revision)
    rendered = {kind: render_prompts(tokenizer, items, system_prompt=cfg.system_prompt, date_string=cfg.date_string)
                for kind, items in texts.items()}
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
    decoder_layers = find_decoder_layers(model)
    steering = Steering(model, decoder_layers[layer], sae, special, layers=decoder_layers)
    inputs = SteerInputs(
        prompts={kind: [p.ids for p in items] for kind, items in rendered.items()},
        continuations=continuation_ids, windows=windows, n_prefix=len(prefix), specs=specs,
        positions=cfg.positions, clamp_unit=unit, corpus_max=maxima, clamp_where=cfg.clamp_where,
        alpha_unit=cfg.alpha_unit, batch_size=cfg.batch_size, directions=units, own_layer=own_layer,
        percentile_prompts=cfg.percentile_prompts,
        percentiles=mined_percentiles(cfg.percentiles_from) if cfg.percentiles_from else None,
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
                              "features_from": cfg.features_from or "", "mining": mining or "",
                              "directions": cfg.directions or "", "percentile_prompts": cfg.percentile_prompts,
                              "percentiles_from": cfg.percentiles_from or ""},
                       config=cfg.to_dict())
    return write_steering(cfg.output, results)


def resolve_directions(path: str | None, specs: list[DirectionSpec], *, hidden_size: int, num_layers: int,
                       model: str, default_layer: int) -> tuple[dict[tuple[str, int], np.ndarray],
                                                               dict[str, int | None]]:
    """The unit vector of every direction the terms name at every layer they act at, read with the one direction
    loader (checked: present, finite, non-zero, as wide as the model), and each plainly named direction's own layer
    (the one its file records, else ``default_layer``); every layer checked against the model."""
    if not specs:
        return {}, {}
    if not path:
        raise PersonamineError(f"intervention term {specs[0].label()!r} names a direction: give directions, the "
                               "file that holds it")
    plain = [s.name for s in specs if s.layers is None]
    ranged = [name for s in specs if s.layers is not None for name, _ in direction_names(s, {})]
    found = {d.name: d for d in load_directions(path, names=list(dict.fromkeys(plain + ranged)),
                                                hidden_size=hidden_size)}
    own = {name: (found[name].layer if found[name].layer is not None else default_layer) for name in plain}
    pairs = [pair for s in specs for pair in direction_names(s, own)]
    for _, at in pairs:
        check_layer(at, num_layers, model)
    return {(name, at): found[name].unit for name, at in pairs}, own


def _ppl_windows(cfg: SteerConfig, tokenizer, prefix: list[int]) -> list[list[int]]:
    """One window per leading document of the corpus, its first ``ppl_ctx_len`` tokens behind the sink prefix,
    until ``ppl_tokens`` are collected."""
    if not cfg.ppl_corpus or cfg.ppl_tokens == 0:
        return []

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
