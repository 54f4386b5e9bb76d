"""The persona direction at a layer and how an SAE decomposes it.

``v = mean(a) - mean(b)`` of the pooled raw residual (persona vectors, Chen et al. 2025, arXiv 2507.21509: the
difference of mean activations between the two sides; the Assistant Axis, arXiv 2601.10387: default Assistant
minus the mean of the roles). How well it separates the sides is the AUROC of the projection ``h . v_hat``; how
stable it is, the cosine between the directions of two random halves of the prompts.

The decomposition names the SAE features behind ``v``: the features whose decoder direction ``d_f`` aligns with
``v`` (cosine), the features that carry the projection difference (``(mean_a(f) - mean_b(f)) * d_f . v_hat``:
for an SAE whose reconstruction is linear in its codes, the projection difference of the reconstructions is their
sum), and the share of ``v`` that the decoded mean-code difference ``r = sum_f (mean_a(f) - mean_b(f)) d_f``
reconstructs (``r . v_hat / |v|``, and the cosine of ``r`` and ``v``). For SAEs that normalise each token's input
(layer norm, constant-norm rescaling) the reconstruction is not linear in the codes, so the decomposition is in the
normalised units; it is labelled, not refused.
"""

from __future__ import annotations

import numpy as np
import torch

from personamine.discovery.stats import auroc, auroc_ci, split_half_cosine
from personamine.files.discover import Decomposition, Direction
from personamine.saes.base import Sae

TOP_DECOMPOSITION = 20  # features kept per list


def persona_direction(a: np.ndarray, b: np.ndarray, *, layer: int, pooling: str, paired: bool, n_boot: int,
                      seed: int) -> Direction:
    """The direction between the pooled residuals ``a`` [n_a, hidden] and ``b`` [n_b, hidden]."""
    vector = a.astype(np.float64).mean(0) - b.astype(np.float64).mean(0)
    norm = float(np.linalg.norm(vector))
    unit = vector / norm if norm > 0 else np.zeros_like(vector)
    pa, pb = a.astype(np.float64) @ unit, b.astype(np.float64) @ unit
    return Direction(layer=layer, pooling=pooling, vector=vector.astype(np.float32), norm=norm, auroc=auroc(pa, pb),
                     auroc_ci=auroc_ci(pa, pb, paired=paired, n_boot=n_boot, seed=seed),
                     split_half=split_half_cosine(a, b, paired=paired, seed=seed), projection_a=pa, projection_b=pb)


def decompose(direction: Direction, sae: Sae, mean_difference: np.ndarray, readout: str,
              chunk: int = 8192) -> Decomposition:
    """``mean_difference`` [n_features]: mean(a) - mean(b) of each feature's pooled code."""
    unit = torch.from_numpy(direction.unit.astype(np.float32))
    cosine = np.zeros(sae.d_sae, np.float64)
    along = np.zeros(sae.d_sae, np.float64)
    recon = torch.zeros(sae.d_in, dtype=torch.float64)
    delta = torch.from_numpy(mean_difference.astype(np.float64))
    for lo in range(0, sae.d_sae, chunk):
        ids = np.arange(lo, min(lo + chunk, sae.d_sae))
        d = sae.decoder_directions(ids).cpu().to(torch.float64)  # [chunk, hidden]
        dots = d @ unit.to(torch.float64)
        norms = d.norm(dim=-1)
        cosine[lo: lo + ids.size] = torch.where(norms > 0, dots / norms.clamp_min(1e-30), 0).numpy()
        along[lo: lo + ids.size] = dots.numpy()
        recon += delta[lo: lo + ids.size] @ d
    contribution = mean_difference.astype(np.float64) * along
    by_cosine = np.lexsort((np.arange(cosine.size), -cosine))[:TOP_DECOMPOSITION]
    by_contribution = np.lexsort((np.arange(contribution.size), -contribution))[:TOP_DECOMPOSITION]
    v = torch.from_numpy(direction.vector.astype(np.float64))
    share = float(recon @ v) / direction.norm ** 2 if direction.norm > 0 else float("nan")
    r_norm = float(recon.norm())
    rcos = float(recon @ v) / (r_norm * direction.norm) if r_norm > 0 and direction.norm > 0 else float("nan")
    return Decomposition(readout=readout, cosine_ids=by_cosine.astype(np.int64), cosine=cosine[by_cosine],
                         contribution_ids=by_contribution.astype(np.int64), contribution=contribution[by_contribution],
                         reconstructed_share=share, reconstructed_cosine=rcos)
