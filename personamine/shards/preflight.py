"""The pre-flight quality check on the corpus's first scored tokens, run by a mining engine before any mining
(``personamine.saes.preflight`` measures; this feeds it the engine's own windows, at the captured layer and its
two neighbours)."""

from __future__ import annotations

from contextlib import ExitStack

import torch

from personamine.merge.stats import FeatureStats
from personamine.model.capture import record_output
from personamine.model.loading import find_decoder_layers
from personamine.saes import PreflightResult, preflight
from personamine.shards.plan import Shard
from personamine.shards.run import MiningEngine
from personamine.shards.windows import capture_windows, scored_tokens

PREFLIGHT_MIN_TOKENS = 256  # fewer scored tokens than this and the variance explained is mostly noise


@torch.inference_mode()
def preflight_engine(engine: MiningEngine, shards: list[Shard], n_tokens: int,
                     min_fve: float) -> PreflightResult | None:
    """The SAE's pre-flight quality check on the first ``n_tokens`` scored tokens of ``shards`` (in order), at the
    captured layer and at its neighbours, layer - 1 and (when the engine's model holds it: see ``neighbour_model``)
    layer + 1, all from one forward that stops after the last of them."""
    loaded, cfg, layer = engine.loaded, engine.config, engine.loaded.layer
    layers = find_decoder_layers(loaded.model)
    wanted = [i for i in (layer - 1, layer, layer + 1) if 0 <= i < len(layers)]
    last = wanted[-1]
    hidden: dict[int, list[torch.Tensor]] = {i: [] for i in wanted}
    got = 0
    counters = FeatureStats.empty(0).counters
    for shard in shards:
        for batch in engine.batches(shard, [], counters):
            with ExitStack() as stack:
                seen = {i: stack.enter_context(record_output(layers[i])) for i in wanted if i != last}
                out = {last: capture_windows(loaded.model, layers[last], batch)}
            for i, found in seen.items():
                raw = found[0]
                out[i] = raw if batch.segment is None else raw.reshape(-1, raw.shape[-1])[batch.unpack]
            scored, _ = scored_tokens(out[layer], batch, cfg.norm_filter)
            for i in wanted:
                hidden[i].append(out[i][scored].float())
            got += int(scored.sum())
            if got >= n_tokens:
                break
        if got >= n_tokens:
            break
    # Rows with no text or no token of a scored role (mining itself says which, with the counts), or a corpus too
    # small for the variance explained to mean anything: the check is skipped, with a warning after mining.
    if got < min(n_tokens, PREFLIGHT_MIN_TOKENS):
        return None
    rows = {i: torch.cat(parts)[:n_tokens] for i, parts in hidden.items()}
    return preflight(engine.sae, rows.pop(layer), layer=layer, neighbours=rows, min_fve=min_fve,
                     chunk_size=cfg.feature_chunk)
