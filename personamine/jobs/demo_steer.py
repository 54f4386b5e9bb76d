"""`personamine demo-steer`: after ``personamine demo``, steer its top discovered features and its persona direction
and show what changes.

It reads the demo's files (``discover.h5`` for the ranking and the persona direction, ``mine.h5`` for each
feature's corpus max), steers on the same model, layer and SAE (recorded in them): the features as ``steer`` does,
and the discovered persona direction at the demo's layer (added at a few alphas, ablated, capped and floored at a
percentile of its projections on the persona prompts), prints the metrics and a few generations side by side, and
rewrites the demo's report with a steering section. Sized for a laptop CPU: few prompts, short generations.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personamine.config import DemoSteerConfig, resolve_config
from personamine.config.interventions import spec_number
from personamine.errors import PersonamineError
from personamine.files.directions import load_directions
from personamine.files.steer import read_steering
from personamine.jobs.steer import read_source, steer
from personamine.report import report


@dataclass
class DemoSteerResult:
    steering: Path
    report: Path
    seconds: float


def demo_steer(config: DemoSteerConfig | None = None, /, *, say: Callable[[str], None] = print,
               **overrides: Any) -> DemoSteerResult:
    """Steer the demo's top features; print metrics and generations; add the section to the demo's report."""
    from transformers.utils import logging as hf_logging

    began = time.perf_counter()
    cfg = resolve_config(DemoSteerConfig, config, overrides, "demo-steer")
    out = Path(cfg.output_dir)
    discovery, mining = out / "discover.h5", out / "mine.h5"
    missing = [p for p in (discovery, mining) if not p.is_file()]
    if missing:
        raise PersonamineError(f"{missing[0]} does not exist: run `personamine demo` first (--output-dir "
                               f"{cfg.output_dir})")
    say(f"personamine demo-steer: the top {cfg.top} features of {discovery}, corpus max from {mining}")
    interventions = direction_interventions(discovery, mining, cfg.direction, cfg.direction_alphas,
                                            cfg.direction_percentiles)
    if interventions:
        say(f"and the persona direction {interventions[0].split(':', 1)[1].split('=')[0]} of {discovery}")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        path = steer(features_from=str(mining), top=cfg.top, n_prompts=cfg.n_prompts,
                     max_new_tokens=cfg.max_new_tokens, alphas=cfg.alphas, clamp=cfg.clamp, combine=cfg.combine,
                     ppl_tokens=cfg.ppl_tokens, output=str(out / "steer.h5"), progress=cfg.progress,
                     directions=str(discovery) if interventions else None, interventions=interventions)
    finally:
        hf_logging.set_verbosity(verbosity)
    res = read_steering(path)
    say(f"\nwrote {path}: {len(res.names) - 1} interventions on features "
        f"{', '.join(map(str, res.feature_ids.tolist()))}" + (" and the persona direction" if interventions else "")
        + f", {len(res.sets['persona'].text)} persona prompts and {len(res.sets['control'].text)} controls; alpha 1 = "
        f"{res.attrs['alpha_scale']:.3g} (the median residual norm at layer {res.attrs['layer']}), clamps in "
        "multiples of the corpus max" + (", cap and floor percentiles of the direction's projections on the persona "
                                         "prompts (prompt and response tokens, unsteered)" if interventions else ""))
    say(res.table())
    say(format_generations(res, cfg.show))
    page = report(mining, out / "report.html", discovery=discovery, steering=path)
    seconds = time.perf_counter() - began
    say(f"\ndone in {seconds:.0f} s. {path} (personamine.read_steering); report with a steering section: {page}")
    return DemoSteerResult(steering=path, report=page, seconds=seconds)


def direction_interventions(discovery: Path, mining: Path, pooling: str, alphas: list[float],
                            percentiles: list[float]) -> list[str]:
    """The persona direction's interventions: ``add`` at each alpha, ``ablate``, and ``cap`` and ``floor`` at each
    percentile, on discovery's direction ``L<layer>/<pooling>`` at the demo's layer (none for an empty pooling)."""
    if not pooling:
        return []
    layer = read_source(str(mining)).config.get("layer")
    name = f"L{layer}/{pooling}"
    found = [d.name for d in load_directions(discovery)]
    if name not in found:
        raise PersonamineError(f"{discovery} has no persona direction {name!r} (it has {', '.join(found)}): rerun "
                               "`personamine demo`, or give --direction '' to steer features only")
    target = f"[{name}]"
    return ([f"add:{target}={spec_number(a)}" for a in alphas] + [f"ablate:{target}"]
            + [f"{kind}:{target}=p{spec_number(p)}" for p in percentiles for kind in ("cap", "floor")])


def format_generations(res, n_prompts: int = 2) -> str:
    """The first persona prompts' responses, unsteered and under each single-feature ablation and the strongest adds,
    and each direction intervention but the milder adds."""
    data = res.sets["persona"]
    picks = [0] + [i for i, kind in enumerate(res.kinds) if kind == "ablate" and len(res.features_of(i)) == 1]
    for f in res.feature_ids.tolist():
        adds = [i for i, kind in enumerate(res.kinds) if kind == "add" and res.features_of(i) == (f,)]
        if adds:
            picks += [min(adds, key=lambda i: res.alphas[i]), max(adds, key=lambda i: res.alphas[i])]
    steered = [i for i in range(1, len(res.names)) if res.directions_of(i) and not res.features_of(i)]
    adds = [i for i in steered if res.kinds[i] == "add"]
    if adds:
        picks += [min(adds, key=lambda i: res.alphas[i]), max(adds, key=lambda i: res.alphas[i])]
    picks += [i for i in steered if res.kinds[i] != "add"]
    lines = []
    for p in range(min(n_prompts, len(data.text))):
        lines.append(f"\nprompt: {data.text[p]!r}")
        for i in dict.fromkeys(picks):
            lines.append(f"  {res.names[i]:<16} {data.responses[i][p]!r}")
    return "\n".join(lines)
