"""A discovery run: render the prompts, check the SAE on them, encode every feature at the prompts' positions,
rank, and write the file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from personamine.atomic import check_writable
from personamine.config import DiscoverConfig
from personamine.discovery.preflight import preflight_on_prompts
from personamine.discovery.rank import rank_features
from personamine.discovery.vectors import prompt_vectors
from personamine.errors import PersonamineError
from personamine.files.discover import write_discovery
from personamine.model.loading import find_decoder_layers, load_config, load_model, load_tokenizer, pick_device
from personamine.model.prompts import builtin_prompts_path, load_prompts, render_prompts
from personamine.saes import load_checked, prepare_sae, sae_spec
from personamine.version import __version__


def run_discovery(cfg: DiscoverConfig) -> Path:
    """Rank SAE features by how much more they fire on self-referential prompts than on controls; write the
    discovery file (``personamine.files.discover``) and return its path."""
    # Everything cheap is checked before the model loads, so bad input fails fast and writes nothing.
    check_writable(cfg.output, "output")
    pick_device(cfg.device)
    persona_texts = load_prompts(cfg.prompts or builtin_prompts_path("persona"))
    control_texts = load_prompts(cfg.controls or builtin_prompts_path("control")) if cfg.control else []
    model_config = load_config(cfg.model, cfg.gguf_file, cfg.revision)
    meta, layer = prepare_sae(sae_spec(cfg), hidden_size=int(model_config.hidden_size),
                              num_layers=int(model_config.num_hidden_layers), model=cfg.model,
                              allow_uncalibrated=cfg.allow_uncalibrated, announce=cfg.progress)
    cfg = dataclasses.replace(cfg, layer=layer)

    tokenizer = load_tokenizer(cfg.model, cfg.gguf_file, cfg.revision)
    render = {"position": cfg.position, "system_prompt": cfg.system_prompt, "date_string": cfg.date_string}
    persona = render_prompts(tokenizer, persona_texts, **render)
    control = render_prompts(tokenizer, control_texts, **render)

    # One layer more than the capture needs, for the pre-flight's look at layer + 1 (the capture stops at layer).
    loaded = load_model(cfg.model, min(layer + 1, int(model_config.num_hidden_layers) - 1) if cfg.preflight else layer,
                        dtype=cfg.dtype, device=cfg.device, gguf_file=cfg.gguf_file, revision=cfg.revision)
    loaded = dataclasses.replace(loaded, layer=layer, layer_module=find_decoder_layers(loaded.model)[layer])
    sae = load_checked(sae_spec(cfg), hidden_size=loaded.hidden_size, layer=layer,
                       allow_uncalibrated=cfg.allow_uncalibrated)
    checked = preflight_on_prompts(loaded, sae, persona + control, cfg) if cfg.preflight else None
    # Every feature: exact for TopK SAEs too (all pre-activations are computed anyway).
    encoder = sae.encoder(None, device=loaded.device, chunk_size=cfg.feature_chunk)
    bar = None
    if cfg.progress:
        bar = tqdm(total=len(persona) + len(control), unit="prompt", desc="discover", dynamic_ncols=True)
    try:
        persona_acts = prompt_vectors(loaded, encoder, persona, cfg.batch_size, bar)
        control_acts = prompt_vectors(loaded, encoder, control, cfg.batch_size, bar) if control else None
    finally:
        if bar is not None:
            bar.close()
    ranking = rank_features(persona_acts, control_acts)
    if ranking.feature_ids.size == 0:
        raise PersonamineError("no SAE feature scores above zero on these prompts: nothing to rank")
    top = ranking.feature_ids[: cfg.top]
    attrs = {**sae.meta.attrs(), **(checked.attrs() if checked is not None else {}), "model": cfg.model,
             "layer": cfg.layer, "sae": sae_spec(cfg).label, "position": cfg.position, "controls": cfg.control,
             "config": json.dumps(cfg.to_dict(), sort_keys=True), "personamine_version": __version__}
    return write_discovery(Path(cfg.output), attrs, ranking, persona, control, persona_acts[:, top],
                           control_acts[:, top] if control_acts is not None else np.zeros((0, top.size), np.float32))
