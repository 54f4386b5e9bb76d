"""A discovery run: render both sides' prompts for every pooling (generating the responses response pooling reads),
check each SAE on the prompts, read every SAE and every residual layer in one forward per batch, compare the sides
feature by feature with statistics, compute the persona direction at each layer with its SAE decomposition, and
write the file."""

from __future__ import annotations

import dataclasses
import json
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from tqdm.auto import tqdm

from personamine.atomic import check_writable
from personamine.config import DiscoverConfig
from personamine.discovery.directions import decompose, persona_direction
from personamine.discovery.preflight import preflight_on_prompts
from personamine.discovery.rank import rank_features, ranking_from_statistics
from personamine.discovery.responses import generate_responses
from personamine.discovery.stats import compare
from personamine.discovery.vectors import Readings, Readout, read_prompts
from personamine.errors import PersonamineError
from personamine.files.discover import Side, Table, write_directions, write_discovery
from personamine.model.loading import (
    LoadedModel,
    find_decoder_layers,
    load_causal_lm,
    load_config,
    load_model,
    load_tokenizer,
    pick_device,
)
from personamine.model.prompts import (
    RenderedPrompt,
    builtin_prompts_path,
    builtin_roles_path,
    load_prompt_records,
    load_roles,
    render_prompts,
    render_responses,
)
from personamine.saes import load_checked, prepare_sae, sae_spec
from personamine.version import __version__

T = TypeVar("T")


@dataclass
class _Prompts:
    """One side's prompts: each text under each system prompt (one per role; ``[None]``-like default otherwise)."""

    texts: list[str]
    systems: list[str | None]  # the system prompt of each rendering, texts repeated per system prompt
    given: list[str | None]  # given responses, per text


def run_discovery(cfg: DiscoverConfig) -> Path:
    """Compare the two sides of ``cfg.contrast`` feature by feature (with statistics) at every SAE and pooling, and
    compute the persona direction at every layer; write the discovery file (``personamine.files.discover``) and
    return its path."""
    # Everything cheap is checked before a model loads, so bad input fails fast and writes nothing.
    check_writable(cfg.output, "output")
    if cfg.directions_out:
        check_writable(cfg.directions_out, "directions_out")
    pick_device(cfg.device)
    side_a, side_b, roles = _sides(cfg)
    model_config = load_config(cfg.model, cfg.gguf_file, cfg.revision)
    n_layers, width = int(model_config.num_hidden_layers), int(model_config.hidden_size)
    tokenizer = load_tokenizer(cfg.model, cfg.gguf_file, cfg.revision)
    tokenizer_b = _check_model_b(cfg, n_layers, width, tokenizer) if cfg.contrast == "models" else tokenizer
    if cfg.contrast == "roles" and getattr(tokenizer, "chat_template", None) is None:
        raise PersonamineError("contrast roles needs a chat template (each role is a system prompt); this tokenizer "
                               "has none")

    specs = []
    for layer in cfg.layers or [cfg.layer]:
        for trainer in cfg.sae_trainers or [cfg.sae_trainer]:
            spec = dataclasses.replace(sae_spec(cfg), layer=layer, trainer=trainer)
            _, resolved = prepare_sae(spec, hidden_size=width, num_layers=n_layers, model=cfg.model,
                                      allow_uncalibrated=cfg.allow_uncalibrated, announce=cfg.progress)
            specs.append(dataclasses.replace(spec, layer=resolved))
    if len({(s.layer, s.trainer) for s in specs}) != len(specs):
        raise PersonamineError("layers and sae_trainers name the same SAE twice")
    direction_layers = sorted(set(cfg.direction_layers or [s.layer for s in specs]))
    past = [layer for layer in direction_layers if layer >= n_layers]
    if past:
        raise PersonamineError(f"direction layer {past[0]} is past the model's last layer ({n_layers - 1})")
    several_trainers = len({s.trainer for s in specs}) > 1
    cfg = dataclasses.replace(cfg, layer=specs[0].layer)

    deepest = max([s.layer for s in specs] + direction_layers)
    generating = "response-mean" in cfg.positions and cfg.responses == "generate"
    loaded = _load(cfg, cfg.model, deepest, n_layers, generating)
    readouts = []
    for spec in specs:
        sae = load_checked(spec, hidden_size=width, layer=spec.layer, allow_uncalibrated=cfg.allow_uncalibrated)
        name = f"L{spec.layer}" + (f"-t{spec.trainer}" if several_trainers else "")
        # Every feature: exact for TopK SAEs too (all pre-activations are computed anyway).
        encoder = sae.encoder(None, device=loaded.device, chunk_size=cfg.feature_chunk)
        readouts.append(Readout(name, spec.layer, spec.trainer, sae, encoder, spec.label))

    renderings_a, responses_a = _render(cfg, loaded, tokenizer, side_a)
    loaded_b = _load(cfg, cfg.model_b, deepest, n_layers, generating) if cfg.contrast == "models" else loaded
    renderings_b, responses_b = (_render(cfg, loaded_b, tokenizer_b, side_b) if side_b is not None else ({}, None))

    checks = {}
    if cfg.preflight:
        first = cfg.positions[0]
        prompts = renderings_a[first] + (renderings_b.get(first, []) if cfg.contrast != "models" else [])
        for r in readouts:
            at = dataclasses.replace(loaded, layer=r.layer, layer_module=find_decoder_layers(loaded.model)[r.layer])
            checks[r.name] = preflight_on_prompts(at, r.sae, prompts, cfg)

    bar = None
    if cfg.progress:
        total = sum(len({tuple(p.ids) for rs in renderings.values() for p in rs})
                    for renderings in (renderings_a, renderings_b) if renderings)
        bar = tqdm(total=total, unit="prompt", desc="discover", dynamic_ncols=True)
    try:
        read_a = read_prompts(loaded.model, tokenizer, readouts, renderings_a, direction_layers, cfg.batch_size, bar)
        read_b = (read_prompts(loaded_b.model, tokenizer_b, readouts, renderings_b, direction_layers,
                               cfg.batch_size, bar) if side_b is not None else None)
    finally:
        if bar is not None:
            bar.close()
    if cfg.contrast == "roles":
        read_b = _mean_over_roles(read_b, len(roles))
    paired = side_b is not None and len(side_a.texts) == len(side_b.texts)
    n_b = len(side_b.texts) // max(len(roles), 1) if side_b is not None else 0
    statistics = side_b is not None and min(len(side_a.texts), n_b) >= 2
    if side_b is not None and not statistics:
        warnings.warn("statistics and directions need at least 2 prompts a side: ranked by the mean difference "
                      "alone", stacklevel=3)

    tables, mean_differences = [], {}
    for r in readouts:
        for pooling in cfg.positions:
            a = read_a.codes[(r.name, pooling)]
            b = read_b.codes[(r.name, pooling)] if read_b is not None else None
            if b is None or not statistics:
                ranking = rank_features(a, b)
            else:
                stats = compare(a, b, paired=paired, n_boot=cfg.n_boot, seed=cfg.seed, feature_chunk=cfg.feature_chunk)
                ranking = ranking_from_statistics(stats, len(a), len(b))
                mean_differences[(r.name, pooling)] = stats.mean_difference
            top = ranking.feature_ids[: cfg.top]
            tables.append(Table(r.name, r.layer, r.label, pooling, ranking, a[:, top],
                                b[:, top] if b is not None else np.zeros((0, top.size), np.float32)))
    if tables[0].ranking.feature_ids.size == 0:
        raise PersonamineError("no SAE feature fires on these prompts: nothing to rank")

    directions = []
    if statistics:
        for layer in direction_layers:
            for pooling in cfg.positions:
                d = persona_direction(read_a.residuals[(layer, pooling)], read_b.residuals[(layer, pooling)],
                                      layer=layer, pooling=pooling, paired=paired, n_boot=cfg.n_boot, seed=cfg.seed)
                for r in readouts:
                    if r.layer == layer:
                        d.decompositions[r.name] = decompose(d, r.sae, mean_differences[(r.name, pooling)], r.name)
                directions.append(d)
                if cfg.progress:
                    print(f"personamine: direction at layer {layer} ({pooling}): AUROC {d.auroc:.3f} "
                          f"[{d.auroc_ci[0]:.3f}, {d.auroc_ci[1]:.3f}], split-half cosine {d.split_half[0]:.3f}",
                          file=sys.stderr)

    primary = readouts[0]
    check = checks.get(primary.name)
    attrs = {**primary.sae.meta.attrs(), **(check.attrs() if check is not None else {}), "model": cfg.model,
             "model_b": cfg.model_b or "", "layers": json.dumps([r.layer for r in readouts]),
             "readouts": json.dumps([r.name for r in readouts]), "positions": json.dumps(cfg.positions),
             "contrast": cfg.contrast, "controls": cfg.contrast == "controls", "paired": paired,
             "n_boot": cfg.n_boot, "seed": cfg.seed, "config": json.dumps(cfg.to_dict(), sort_keys=True),
             "personamine_version": __version__}
    first = cfg.positions[0]
    persona = Side(side_a.texts, renderings_a[first], responses_a)
    control = Side([], [])
    if side_b is not None:
        control = Side(side_b.texts, renderings_b[first], responses_b)
    if cfg.contrast == "roles":
        # Line i of the control side is prompt i under every role, its readings averaged over the roles; the
        # renderings and responses listed are prompt i under the first role, and every role's in turn (prompt-major).
        control = Side(side_a.texts, renderings_b[first][:: len(roles)], responses_b)
    path = write_discovery(Path(cfg.output), attrs, tables, persona, control, directions, roles)
    if cfg.directions_out:
        if not directions:
            raise PersonamineError("directions_out: this run computed no directions (contrast none, or fewer than 2 "
                                   "prompts a side)")
        write_directions(directions, cfg.model, cfg.directions_out)
    return path


def _sides(cfg: DiscoverConfig) -> tuple[_Prompts, _Prompts | None, list[tuple[str, str]]]:
    texts, given = load_prompt_records(cfg.prompts or builtin_prompts_path("persona"))
    side_a = _Prompts(texts, [cfg.system_prompt] * len(texts), given)
    roles: list[tuple[str, str]] = []
    side_b = None
    if cfg.contrast == "controls":
        control, control_given = load_prompt_records(cfg.controls or builtin_prompts_path("control"))
        side_b = _Prompts(control, [cfg.system_prompt] * len(control), control_given)
    elif cfg.contrast == "roles":
        roles = load_roles(cfg.roles or builtin_roles_path())
        # Prompt-major: rendering i * R + r is prompt i under role r.
        side_b = _Prompts([t for t in texts for _ in roles], [system for _ in texts for _, system in roles],
                          [g for g in given for _ in roles])
    elif cfg.contrast == "models":
        side_b = _Prompts(texts, [cfg.system_prompt] * len(texts), given)
    if "response-mean" in cfg.positions and cfg.responses == "given":
        for side in (side_a, side_b):
            if side is not None and None in side.given:
                raise PersonamineError(f"responses given: prompt {side.texts[side.given.index(None)]!r} has no "
                                       "\"response\" in its prompts file")
        if cfg.contrast == "roles":
            raise PersonamineError("responses given cannot be used with contrast roles: each role answers in its "
                                   "own voice, so its responses are generated (responses generate)")
    return side_a, side_b, roles


def _check_model_b(cfg: DiscoverConfig, n_layers: int, width: int, tokenizer):
    """model_b's tokenizer, once its width, depth and vocabulary are those of ``cfg.model`` (one SAE reads both)."""
    config_b = load_config(cfg.model_b, None, None)
    if int(config_b.hidden_size) != width:
        raise PersonamineError(f"model_b {cfg.model_b!r} has width {int(config_b.hidden_size)}, model {cfg.model!r} "
                               f"has {width}: one SAE cannot read both")
    if int(config_b.num_hidden_layers) != n_layers:
        raise PersonamineError(f"model_b {cfg.model_b!r} has {int(config_b.num_hidden_layers)} layers, model "
                               f"{cfg.model!r} has {n_layers}")
    tokenizer_b = load_tokenizer(cfg.model_b, None, None)
    if tokenizer_b.get_vocab() != tokenizer.get_vocab():
        raise PersonamineError(f"model_b {cfg.model_b!r} has another tokenizer than model {cfg.model!r}: the same "
                               "prompts would not be the same tokens")
    return tokenizer_b


def _load(cfg: DiscoverConfig, name: str, deepest: int, n_layers: int, generating: bool) -> LoadedModel:
    """The model to read (and, for generated responses, to generate with: then the whole causal LM, whose capture
    still stops after ``deepest``); truncated one layer past ``deepest`` for the pre-flight's look at layer + 1."""
    gguf, revision = (cfg.gguf_file, cfg.revision) if name == cfg.model else (None, None)
    if not generating:
        top = min(deepest + 1, n_layers - 1) if cfg.preflight else deepest
        loaded = load_model(name, top, dtype=cfg.dtype, device=cfg.device, gguf_file=gguf, revision=revision)
        return dataclasses.replace(loaded, layer=deepest, layer_module=find_decoder_layers(loaded.model)[deepest])
    model, device, dtype = load_causal_lm(name, dtype=cfg.dtype, device=cfg.device, gguf_file=gguf, revision=revision)
    return LoadedModel(model=model, tokenizer=load_tokenizer(name, gguf, revision), layer=deepest,
                       layer_module=find_decoder_layers(model)[deepest], hidden_size=int(model.config.hidden_size),
                       num_layers_total=n_layers, device=device, dtype=dtype, source=name)


def _per_system(side: _Prompts, render: Callable[[list[int], str | None], list[T]]) -> list[T]:
    """``render(indices, system prompt)`` called once per distinct system prompt of the side, on the renderings
    under it; the results back in the side's order."""
    out: list[T | None] = [None] * len(side.texts)
    for system in dict.fromkeys(side.systems):
        idx = [i for i, s in enumerate(side.systems) if s == system]
        for i, item in zip(idx, render(idx, system), strict=True):
            out[i] = item
    return out  # type: ignore[return-value]  (every index is some system's)


def _render(cfg: DiscoverConfig, loaded: LoadedModel, tokenizer,
            side: _Prompts) -> tuple[dict[str, list[RenderedPrompt]], list[str] | None]:
    """Every pooling's renderings of the side's prompts (each under its system prompt), and the responses read by
    response pooling (given, or generated here once per rendering)."""
    renderings: dict[str, list[RenderedPrompt]] = {}
    responses = None
    for pooling in cfg.positions:
        if pooling == "response-mean":
            responses = responses or _responses(cfg, loaded, tokenizer, side)
            renderings[pooling] = _per_system(side, lambda idx, system, said=responses: render_responses(
                tokenizer, [side.texts[i] for i in idx], [said[i] for i in idx], system_prompt=system,
                date_string=cfg.date_string))
        else:
            renderings[pooling] = _per_system(side, lambda idx, system, pooling=pooling: render_prompts(
                tokenizer, [side.texts[i] for i in idx], position=pooling, system_prompt=system,
                date_string=cfg.date_string))
    return renderings, responses


def _responses(cfg: DiscoverConfig, loaded: LoadedModel, tokenizer, side: _Prompts) -> list[str]:
    if cfg.responses == "given":
        return [str(g) for g in side.given]
    return _per_system(side, lambda idx, system: generate_responses(loaded.model, tokenizer,
                                                                     [side.texts[i] for i in idx], system, cfg))


def _mean_over_roles(readings: Readings, n_roles: int) -> Readings:
    """Each prompt's readings averaged over the roles it was rendered under (prompt-major order)."""
    def fold(values: np.ndarray) -> np.ndarray:
        return values.reshape(-1, n_roles, values.shape[1]).astype(np.float64).mean(1).astype(np.float32)

    return Readings({k: fold(v) for k, v in readings.codes.items()},
                    {k: fold(v) for k, v in readings.residuals.items()})
