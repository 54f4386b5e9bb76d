"""The pre-flight quality check: does this SAE fit the activations the run captures?

On the first few thousand scored tokens (or discover's prompts), before the long run: the fraction of variance
explained, ``FVE = 1 - sum |x - x_hat|^2 / sum |x - mean(x)|^2`` (every feature encoded, exactly, and decoded), and
L0, the mean number of features firing per token. Two refusals:

- ``FVE < min_fve`` (default 0.5). Measured on the demo SAE (SmolLM2-135M-Instruct layer 10, 4,096 features,
  k = 32, 4,096 scored tokens of the built-in corpus): 0.747 at layer 10, -0.55 at layer 9, -6.4 at layer 8; 0.63
  at layer 11 and 0.61 at 12. A wrong layer before the SAE's, a missing input normalisation, another model or a
  mis-read format land far below 0.5; a working SAE (the weakest here, trained on 100k tokens) well above it.
- A neighbouring layer fits better: the residual stream one layer on still holds most of the SAE's layer (0.63 at
  L+1), so an off-by-one passes any fixed bound that a working SAE passes; but then its own layer, a neighbour of
  the captured one, explains more. Refused when a neighbour's FVE exceeds the captured layer's by more than 0.01
  (the tiny test model: 0.78 at the SAE's layer, 0.67 and 0.65 either side). Measuring the next layer costs the
  pre-flight one more decoder layer loaded.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from personamine.errors import PersonamineError

if TYPE_CHECKING:
    from personamine.saes.base import Sae

DEFAULT_MIN_FVE = 0.5
NEIGHBOUR_MARGIN = 0.01
DEFAULT_TOKENS = 4096
CAUSES = ("the wrong layer or hook point (an off-by-one between resid_pre and resid_post), a missing input "
          "normalisation, a different model than the SAE was trained on, or a mis-read SAE format")


@dataclass
class PreflightResult:
    fve: float
    l0: float
    n_tokens: int
    layer: int | None = None
    min_fve: float = DEFAULT_MIN_FVE
    neighbours: dict[int, float] = field(default_factory=dict)  # the same tokens' FVE at adjacent layers
    source: str = ""

    @property
    def passed(self) -> bool:
        return self.reason() is None

    def better_neighbour(self) -> int | None:
        best = max(self.neighbours, key=self.neighbours.__getitem__, default=None)
        return best if best is not None and self.neighbours[best] > self.fve + NEIGHBOUR_MARGIN else None

    def summary(self) -> str:
        where = f" at layer {self.layer}" if self.layer is not None else ""
        text = (f"pre-flight: SAE {self.source} explains {self.fve:.1%} of the variance{where} (L0 {self.l0:.1f}, "
                f"{self.n_tokens:,} tokens)")
        if self.neighbours:
            text += "; " + ", ".join(f"{v:.1%} at layer {k}" for k, v in sorted(self.neighbours.items()))
        return text

    def reason(self) -> str | None:
        if not math.isfinite(self.fve):  # NaN compares false with everything: never let it pass
            return ("which is not a number: the SAE's weights or the captured activations hold NaN or infinity (an "
                    "fp16/bf16 overflow, or a damaged SAE file)")
        if self.fve < self.min_fve:
            return f"below the {self.min_fve:.0%} minimum"
        best = self.better_neighbour()
        if best is not None:
            return f"which fits layer {best} better than the captured layer {self.layer}"
        return None

    def check(self, allow: bool = False) -> None:
        """Raise the refusal (``allow``: warn instead)."""
        reason = self.reason()
        if reason is None:
            return
        causes = "" if not math.isfinite(self.fve) else f". Likely causes: {CAUSES}"
        message = f"{self.summary()}, {reason}{causes}"
        if allow:
            warnings.warn(message + " (allowed by allow_low_fve)", UserWarning, stacklevel=2)
            return
        raise PersonamineError(message + ". Pass --allow-low-fve to run anyway")

    def attrs(self) -> dict:
        out = {"preflight_fve": self.fve, "preflight_l0": self.l0, "preflight_tokens": self.n_tokens,
               "preflight_min_fve": self.min_fve}
        for layer, value in self.neighbours.items():
            out[f"preflight_fve_layer_{layer}"] = value
        return out


def fve_and_l0(sae: Sae, hidden: torch.Tensor, chunk_size: int = 8192) -> tuple[float, float]:
    """(fraction of variance explained, mean L0) of ``sae`` on ``hidden`` [N, d_in], every feature, exactly."""
    x = torch.as_tensor(np.array(hidden) if isinstance(hidden, np.ndarray) else hidden).float()
    if x.dim() != 2 or x.shape[0] == 0:
        raise PersonamineError(f"pre-flight needs captured hidden states [N, d], got shape {tuple(x.shape)}")
    if x.shape[1] != sae.d_in:
        raise PersonamineError(f"pre-flight: hidden states are {x.shape[1]} wide, SAE {sae.meta.source} is "
                               f"{sae.d_in}")
    recon = torch.zeros_like(x)
    fired = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
    encoder = sae.encoder(None, device=x.device, chunk_size=chunk_size, exact_topk=True, resident=False)
    for start, end, acts in encoder.iter_encode(x):
        recon += acts @ sae.dec.rows(slice(start, end)).to(x.device)
        fired += (acts > 0).sum(dim=1)
    if sae.b_dec is not None:
        recon += sae.b_dec.to(x.device, torch.float32)
    recon = sae._restore(recon, x)
    err = float((x - recon).double().pow(2).sum())
    total = float((x.double() - x.double().mean(0)).pow(2).sum())
    return (1.0 - err / total if total > 0 else float("nan")), float(fired.double().mean())


def preflight(sae: Sae, hidden: torch.Tensor | np.ndarray, *, layer: int | None = None,
              neighbours: dict[int, torch.Tensor | np.ndarray] | None = None, min_fve: float = DEFAULT_MIN_FVE,
              chunk_size: int = 8192) -> PreflightResult:
    """Measure ``sae`` on ``hidden`` [N, d], the captured scored tokens of decoder ``layer``, and on
    ``neighbours`` ({layer: the same tokens' hidden states there}, e.g. layer - 1 and layer + 1);
    ``.check()`` on the result raises the refusal."""
    with torch.inference_mode():
        fve, l0 = fve_and_l0(sae, hidden, chunk_size)
        others = {int(k): fve_and_l0(sae, v, chunk_size)[0] for k, v in (neighbours or {}).items()}
    return PreflightResult(fve=fve, l0=l0, n_tokens=int(hidden.shape[0]), layer=layer, min_fve=min_fve,
                           neighbours=others, source=sae.meta.source)
