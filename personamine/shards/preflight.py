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
                     min_fve: float) -> dict[str, PreflightResult]:
    """Each SAE readout's pre-flight quality check on the first ``n_tokens`` tokens it scores in ``shards`` (in
    order), at its layer and at its neighbours, layer - 1 and (when the engine's model holds it: see
    ``neighbour_model``) layer + 1, all from one forward that stops after the last of them. A readout with too few
    scored tokens gets no result (mining then says why, or warns that the check was skipped)."""
    loaded, cfg = engine.loaded, engine.config
    saes = [r for r in engine.readouts if r.sae is not None]
    if not saes:
        return {}
    layers = find_decoder_layers(loaded.model)
    wanted = sorted({i for r in saes for i in (r.layer - 1, r.layer, r.layer + 1) if 0 <= i < len(layers)})
    last = wanted[-1]
    hidden: dict[str, dict[int, list[torch.Tensor]]] = {
        r.name: {i: [] for i in (r.layer - 1, r.layer, r.layer + 1) if i in wanted} for r in saes}
    got = dict.fromkeys(hidden, 0)
    counters = FeatureStats.empty(0).counters
    for shard in shards:
        for batch in engine.batches(shard, [], counters):
            with ExitStack() as stack:
                seen = {i: stack.enter_context(record_output(layers[i])) for i in wanted if i != last}
                out = {last: capture_windows(loaded.model, layers[last], batch)}
            for i, found in seen.items():
                raw = found[0]
                out[i] = raw if batch.segment is None else raw.reshape(-1, raw.shape[-1])[batch.unpack]
            for r in saes:
                if got[r.name] >= n_tokens:
                    continue
                scored, _ = scored_tokens(out[r.layer], batch, cfg.norm_filter)
                for i, parts in hidden[r.name].items():
                    parts.append(out[i][scored].float())
                got[r.name] += int(scored.sum())
            if min(got.values()) >= n_tokens:
                break
        if min(got.values()) >= n_tokens:
            break
    results = {}
    for r in saes:
        # Rows with no text or no token of a scored role (mining itself says which, with the counts), or a corpus
        # too small for the variance explained to mean anything: the check is skipped, with a warning after mining.
        if got[r.name] < min(n_tokens, PREFLIGHT_MIN_TOKENS):
            continue
        rows = {i: torch.cat(parts)[:n_tokens] for i, parts in hidden[r.name].items()}
        results[r.name] = preflight(r.sae, rows.pop(r.layer), layer=r.layer, neighbours=rows, min_fve=min_fve,
                                    chunk_size=cfg.feature_chunk)
    return results
