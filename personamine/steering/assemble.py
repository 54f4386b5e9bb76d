"""A finished run's outcome as the file's arrays (:class:`~personamine.files.steer.SteeringResults`)."""

from __future__ import annotations

import numpy as np

from personamine.files.steer import PromptSetResults, SteeringResults
from personamine.steering.run import SteerOutcome
from personamine.steering.sae_access import SteerSae

_NUL_SHOWN = "\u2400"  # HDF5 strings cannot hold NUL (as in the mining file)


def _clean(text: str) -> str:
    return text.replace("\x00", _NUL_SHOWN)


def assemble(outcome: SteerOutcome, sae: SteerSae, tokenizer, *, rendered: dict, set_names: list[str],
             continuations: list[str], continuation_set: list[int], features: list[int], attrs: dict,
             config: dict) -> SteeringResults:
    interventions = outcome.interventions
    terms = [(i, t) for i, iv in enumerate(interventions) for t in iv.terms]
    directions = [(i, d) for i, iv in enumerate(interventions) for d in iv.directions]
    rows = [sae.index(f) for f in features]
    dots, norms = sae.encoder_decoder_dot(), sae.decoder_norm()
    sets = {}
    for kind, out in outcome.sets.items():
        parts = [s for s in out.term_stats if s]
        stats = {name: np.concatenate([p[name] for p in parts]) for name in (parts[0] if parts else {})}
        parts = [s for s in out.direction_stats if s]
        direction_stats = {name: np.concatenate([p[name] for p in parts]) for name in (parts[0] if parts else {})}
        gens = out.generations
        sets[kind] = PromptSetResults(
            text=[_clean(p.text) for p in rendered[kind]], rendered=[_clean(p.rendered) for p in rendered[kind]],
            logprob=np.stack(out.logprob), kl=np.stack(out.kl), tokens=np.stack([g.token_ids for g in gens]),
            length=np.stack([g.length for g in gens]), finished=np.stack([g.finished for g in gens]),
            responses=[[_clean(tokenizer.decode(g.token_ids[p, : g.length[p]].tolist()))
                        for p in range(g.length.size)] for g in gens],
            term_stats=stats, direction_stats=direction_stats)
    return SteeringResults(
        attrs={**attrs, "alpha_scale": outcome.alpha_scale, "residual_norm": outcome.residual_norm},
        config=config, feature_ids=np.asarray(features, np.int64),
        feature_scale=np.array([outcome.clamp_scale[f] for f in features], np.float64),
        encoder_decoder_dot=dots[rows], decoder_norm=norms[rows], prompt_max=outcome.prompt_max[rows],
        names=[iv.name for iv in interventions], kinds=[iv.kind for iv in interventions],
        alphas=np.array([iv.alpha for iv in interventions], np.float64),
        term_intervention=np.array([i for i, _ in terms], np.int64),
        term_feature=np.array([t.feature for _, t in terms], np.int64), term_kind=[t.kind for _, t in terms],
        term_value=np.array([t.value for _, t in terms], np.float64),
        term_given=np.array([t.given for _, t in terms], np.float64),
        term_where=[t.where if t.kind == "clamp" else "" for _, t in terms],
        set_names=set_names, continuations=continuations, continuation_set=np.asarray(continuation_set, np.int64),
        perplexity=outcome.perplexity, sets=sets,
        direction_intervention=np.array([i for i, _ in directions], np.int64),
        direction_kind=[d.kind for _, d in directions], direction_name=[d.name for _, d in directions],
        direction_layer=np.array([d.layer for _, d in directions], np.int64),
        direction_target=[d.target for _, d in directions],
        direction_value=np.array([d.value for _, d in directions], np.float64),
        direction_given=np.array([d.given for _, d in directions], np.float64),
        direction_percentile=np.array([d.percentile for _, d in directions], bool),
        direction_scale=np.array([d.scale for _, d in directions], np.float64),
    )
