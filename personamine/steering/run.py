"""One steering run: the unsteered model first, then every intervention, each measured on the same inputs.

The unsteered pass also fixes the units the interventions are given in: the median residual norm at the layer
over the prompts' tokens (for ``alpha_unit = residual-norm``) and each feature's max over the persona prompts'
tokens (for ``clamp_unit = prompt-max``); for direction terms, the same norm at each of their layers and the
percentiles of their projections (``personamine.steering.directions``), unless ``percentiles`` gives another source.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from personamine.errors import PersonamineError
from personamine.model.generate import Generations, GenerationSettings, pad_id
from personamine.steering.directions import measure_units
from personamine.steering.hooks import Observation, Steering, generate_steered
from personamine.steering.interventions import UNSTEERED, DirectionSpec, Intervention, PercentileSource, Spec, resolve
from personamine.steering.measure import corpus_nll, kl_divergence, score_continuations

SETS = ("persona", "control")


@dataclass
class SteerInputs:
    prompts: dict[str, list[list[int]]]  # "persona" / "control" -> rendered prompt token ids
    continuations: list[list[int]]  # token ids of every continuation, all sets together
    windows: list[list[int]]  # corpus windows for perplexity (sink prefix included); may be empty
    n_prefix: int  # sink-prefix tokens at the start of each window
    specs: list[tuple[Spec, ...]]
    positions: str = "all"
    clamp_unit: str = "prompt-max"  # corpus-max, prompt-max or absolute
    corpus_max: dict[int, float] | None = None
    clamp_where: str = "active"
    alpha_unit: str = "residual-norm"  # or absolute
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    batch_size: int = 16
    # Direction terms: each direction's unit vector at each layer it acts at, its recorded layer, which prompts its
    # percentiles are measured on, and where percentiles come from (None: measured on those prompts).
    directions: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    own_layer: dict[str, int | None] = field(default_factory=dict)
    percentile_prompts: str = "persona"
    percentiles: PercentileSource | None = None


@dataclass
class SetOutcome:
    logprob: list[np.ndarray] = field(default_factory=list)  # per intervention [P, C]
    kl: list[np.ndarray] = field(default_factory=list)  # per intervention [P]
    generations: list[Generations] = field(default_factory=list)
    term_stats: list[dict[str, np.ndarray]] = field(default_factory=list)  # per intervention, per term
    direction_stats: list[dict[str, np.ndarray]] = field(default_factory=list)  # per intervention, per direction term


@dataclass
class SteerOutcome:
    interventions: list[Intervention]  # [0] is the unsteered model
    alpha_scale: float
    clamp_scale: dict[int, float]  # per feature; NaN with absolute clamps
    prompt_max: np.ndarray  # [n SAE features loaded] unsteered max over the persona prompts' tokens
    residual_norm: float
    perplexity: np.ndarray  # [I]
    sets: dict[str, SetOutcome]


def _scales(inputs: SteerInputs, features: np.ndarray, prompt_max: np.ndarray,
            residual_norm: float) -> tuple[float, dict[int, float]]:
    alpha_scale = residual_norm if inputs.alpha_unit == "residual-norm" else 1.0
    if inputs.clamp_unit == "corpus-max":
        assert inputs.corpus_max is not None
        scale = {int(f): float(inputs.corpus_max.get(int(f), math.nan)) for f in features}
    elif inputs.clamp_unit == "prompt-max":
        scale = {int(f): float(m) for f, m in zip(features.tolist(), prompt_max.tolist(), strict=True)}
    else:
        scale = {int(f): math.nan for f in features}
    needed = {s.feature for specs in inputs.specs for s in specs
              if not isinstance(s, DirectionSpec) and s.kind == "clamp" and s.relative}
    bad = sorted(f for f in needed if not math.isfinite(scale[f]) or scale[f] <= 0)
    if bad:
        raise PersonamineError(f"feature {bad[0]} has no positive {inputs.clamp_unit} to clamp at a multiple of "
                               f"(it never fires there): give absolute clamp values")
    return alpha_scale, scale


def run_interventions(model: nn.Module, tokenizer, steering: Steering, inputs: SteerInputs,
                      progress: bool = False) -> SteerOutcome:
    sae = steering.sae
    sets = {kind: SetOutcome() for kind in SETS}
    pad = pad_id(tokenizer)
    device = sae.decoder.device

    # The unsteered model: generations, while watching the prompts' tokens for the units.
    observed = {}
    firsts: dict[str, torch.Tensor] = {}
    steering.use(None)
    for kind in SETS:
        steering.observation = observed[kind] = Observation(sae.features.size, device)
        sets[kind].generations.append(generate_steered(model, tokenizer, steering, inputs.prompts[kind], "prompt",
                                               inputs.generation))
    steering.observation = None
    residual_norm = float(torch.cat(observed["persona"].norms + observed["control"].norms).median())
    prompt_max = observed["persona"].max.cpu().numpy().astype(np.float64)
    alpha_scale, clamp_scale = _scales(inputs, sae.features, prompt_max, residual_norm)
    layer_scale, percentiles = None, inputs.percentiles
    if inputs.directions:
        unsteered = {k: _with_responses(inputs.prompts[k], sets[k].generations[0]) for k in SETS}
        units = measure_units(model, steering.layers, steering.special, unsteered, inputs.directions,
                              positions=inputs.positions, percentile_prompts=inputs.percentile_prompts,
                              batch_size=inputs.batch_size, pad=pad)
        layer_scale = units.layer_scale if inputs.alpha_unit == "residual-norm" else (lambda _layer: 1.0)
        percentiles = percentiles or units.percentiles_of
    interventions = [UNSTEERED] + [resolve(s, clamp_scale=clamp_scale, alpha_scale=alpha_scale,
                                           where=inputs.clamp_where, units=inputs.directions,
                                           own_layer=inputs.own_layer, layer_scale=layer_scale,
                                           percentiles_of=percentiles) for s in inputs.specs]

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(interventions), unit="intervention", desc="steer", dynamic_ncols=True)
    perplexity = []
    try:
        for i, intervention in enumerate(interventions):
            for kind in SETS:
                out = sets[kind]
                steering.use(intervention)
                scores = score_continuations(model, steering, inputs.prompts[kind], inputs.continuations,
                                             inputs.positions, inputs.batch_size, pad)
                if i == 0:
                    firsts[kind] = scores.first
                out.logprob.append(scores.logprob)
                out.kl.append(kl_divergence(firsts[kind], scores.first))
                if i == 0:  # generated above, while observing
                    out.term_stats.append({})
                    out.direction_stats.append({})
                    continue
                # The activation record covers the generation: the positions the intervention acts on in use.
                steering.use(intervention, record=True)
                out.generations.append(generate_steered(model, tokenizer, steering, inputs.prompts[kind],
                                                inputs.positions, inputs.generation))
                out.term_stats.append(steering.record.summary() if steering.record is not None else {})
                out.direction_stats.append(steering.direction_record.summary() if intervention.directions else {})
            steering.use(intervention)
            perplexity.append(_perplexity(model, steering, inputs, pad))
            if bar is not None:
                bar.update(1)
    finally:
        steering.use(None)
        if bar is not None:
            bar.close()
    return SteerOutcome(interventions=interventions, alpha_scale=alpha_scale, clamp_scale=clamp_scale,
                        prompt_max=prompt_max, residual_norm=residual_norm, perplexity=np.array(perplexity),
                        sets=sets)


def _with_responses(prompts: list[list[int]], gens: Generations) -> list[tuple[list[int], list[int]]]:
    return [(p, gens.token_ids[i, : gens.length[i]].tolist()) for i, p in enumerate(prompts)]


def _perplexity(model: nn.Module, steering: Steering, inputs: SteerInputs, pad: int) -> float:
    if not inputs.windows:
        return math.nan
    nll, n = corpus_nll(model, steering, inputs.windows, inputs.n_prefix, inputs.batch_size, pad)
    return math.exp(nll / max(n, 1))
