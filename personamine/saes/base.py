"""The one SAE interface: metadata, the encode rule, exact encoders, the decoder.

Every format's loader builds a :class:`Sae` from memory-mapped tensors, declaring its encode rule with a few
fields (see :class:`Rule`), so encoding is written once and is the same code for every format:

    s   = scale * x            (or a per-token normalisation: SAELens ``constant_norm_rescale`` / ``layer_norm``)
    s   = s - b_dec            when the format subtracts the decoder bias first
    pre = linear(s, W_enc[f], b_enc[f])                       in fp32, bias inside ``linear``
    relu      a = max(pre, 0)
    jumprelu  a = pre if pre > max(t_f, 0) else 0             (t: one scalar or one per feature; with
                                                                ``score_norm`` the test is pre * |W_dec f| > t)
    gated     a = [linear(s, W_enc[f], b_gate[f]) > 0] * relu(linear(s, W_enc[f] * exp(r_mag[f]), b_mag[f]))
    topk      a = relu(pre) where pre is among the token's k largest pre-activations (times |W_dec f| with
                  ``score_norm``), else 0: this couples every feature of a token, see :class:`ExactTopKEncoder`

relu, jumprelu and gated are elementwise: a feature's value depends on its own rows only, so encoding a subset of
features gives exactly the values the full encode gives for them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from personamine.errors import PersonamineError
from personamine.saes.hooks import Hook

ELEMENTWISE = ("relu", "jumprelu", "gated")
TOPK = "topk"


@dataclass
class SaeMeta:
    """What can be known about an SAE from its config files (and tensor headers) alone: the cheap read."""

    format: str  # dictionary_learning, saelens, sparsify, goodfire, gemma_scope, llama_scope
    architecture: str  # batchtopk, matryoshka_batchtopk, topk, standard, jumprelu, gated
    source: str  # where it was found, for messages
    d_in: int | None
    d_sae: int | None
    hook: Hook | None
    k: int | None = None
    threshold: float | None = None  # the scalar threshold, when the format has one and it was read
    threshold_kind: str = "none"  # none, scalar, per-feature
    trainer: int | None = None
    neuronpedia: str | None = None  # e.g. llama3.1-8b-it/15-resid-post-aa
    notes: list[str] = field(default_factory=list)  # what could not be read (said once, as a warning)

    @property
    def activation(self) -> str:
        return TOPK if self.architecture == "topk" else "elementwise"

    @property
    def layer(self) -> int | None:
        return self.hook.captured_layer if self.hook is not None else None

    def describe(self) -> str:
        parts = [f"{self.format} {self.architecture}", f"{self.d_sae} features x {self.d_in}"]
        if self.k is not None:
            parts.append(f"k={self.k}")
        if self.trainer is not None:
            parts.append(f"trainer {self.trainer}")
        if self.threshold_kind == "scalar" and self.threshold is not None:
            parts.append(f"threshold {self.threshold:.4g}")
        elif self.threshold_kind == "per-feature":
            parts.append("per-feature thresholds")
        parts.append(f"hook {self.hook.describe()}" if self.hook else "hook not declared")
        return f"SAE {self.source}: " + ", ".join(parts)

    def attrs(self) -> dict:
        """Provenance for an output file's attributes (no None values: HDF5 attributes cannot hold them)."""
        out = {"sae_format": self.format, "sae_architecture": self.architecture, "dict_size": int(self.d_sae or 0),
               "sae_description": self.describe()}
        if self.k is not None:
            out["sae_k"] = int(self.k)
        if self.trainer is not None:
            out["sae_trainer"] = int(self.trainer)
        if self.threshold is not None:
            out["sae_threshold"] = float(self.threshold)
        if self.hook is not None:
            out["sae_hook"] = self.hook.name
        if self.neuronpedia:
            out["sae_neuronpedia"] = self.neuronpedia
        return out


def check_meta(meta: SaeMeta, *, hidden_size: int, allow_uncalibrated: bool = False) -> None:
    """Checks that need no weights: the width, and (where the config says) an uncalibrated threshold."""
    if meta.d_in is not None and meta.d_in != hidden_size:
        raise PersonamineError(f"SAE {meta.source} has width {meta.d_in}, but the model's hidden size is "
                               f"{hidden_size}")
    if meta.threshold_kind == "scalar" and meta.threshold is not None and meta.threshold <= 0 \
            and meta.architecture in ("batchtopk", "matryoshka_batchtopk") and not allow_uncalibrated:
        raise PersonamineError(
            f"SAE {meta.source} has threshold {meta.threshold}: it was never calibrated, so encoding would be a "
            "dense ReLU (pass --allow-uncalibrated to use it anyway)")


def check_features(features: np.ndarray, dict_size: int) -> None:
    if features.size == 0:
        raise PersonamineError("no features selected")
    bad = features[(features < 0) | (features >= dict_size)]
    if bad.size:
        raise PersonamineError(f"feature id {int(bad[0])} is out of range: the SAE has {dict_size} features")
    if np.unique(features).size != features.size:
        raise PersonamineError("feature ids must be unique")


@dataclass
class Rule:
    """A format's encode rule, as data (see the module docstring)."""

    activation: str  # relu, jumprelu, gated, topk
    subtract_b_dec: bool
    input_scale: float | None = None  # Llama Scope: sqrt(d) / dataset average norm
    input_norm: str = "none"  # SAELens: none, constant_norm_rescale, layer_norm
    output_scale: float | None = None  # reconstruction in raw units = decode / output_scale
    k: int | None = None
    score_norm: bool = False  # threshold / top-k test on pre * |W_dec f| (lm-saes, SAELens rescale_acts...)


class Matrix:
    """A [F, d] or [d, F] tensor (memory-mapped, any dtype) read as fp32 rows, one row per feature."""

    def __init__(self, tensor: torch.Tensor, features_first: bool) -> None:
        self.tensor, self.features_first = tensor, features_first

    @property
    def n_features(self) -> int:
        return int(self.tensor.shape[0 if self.features_first else 1])

    @property
    def width(self) -> int:
        return int(self.tensor.shape[1 if self.features_first else 0])

    def rows(self, index: torch.Tensor | slice) -> torch.Tensor:
        if isinstance(index, slice):
            part = self.tensor[index] if self.features_first else self.tensor[:, index].T
        else:
            part = self.tensor.index_select(0 if self.features_first else 1, index)
            part = part if self.features_first else part.T
        return part.to(torch.float32).contiguous()


def _vector(tensor: torch.Tensor | None, index: torch.Tensor | slice) -> torch.Tensor | None:
    if tensor is None:
        return None
    part = tensor[index] if isinstance(index, slice) else tensor.index_select(0, index)
    return part.to(torch.float32)


class Sae:
    """One loaded SAE. Build it with :func:`personamine.saes.load_sae`."""

    def __init__(self, meta: SaeMeta, rule: Rule, *, encoder: Matrix, b_enc: torch.Tensor | None,
                 decoder: Matrix, b_dec: torch.Tensor | None, threshold: torch.Tensor | None = None,
                 b_gate: torch.Tensor | None = None, r_mag: torch.Tensor | None = None,
                 b_mag: torch.Tensor | None = None) -> None:
        self.meta, self.rule = meta, rule
        self.enc, self.b_enc, self.dec, self.b_dec = encoder, b_enc, decoder, b_dec
        self.threshold = threshold  # 0-d (one scalar) or [F]; fp32 comparisons
        self.b_gate, self.r_mag, self.b_mag = b_gate, r_mag, b_mag
        d_in, d_sae = encoder.width, encoder.n_features
        if decoder.n_features != d_sae or decoder.width != d_in:
            raise PersonamineError(f"SAE {meta.source}: decoder shape {tuple(decoder.tensor.shape)} does not match "
                                   f"the encoder's {d_sae} features x {d_in}")
        for name, vec, size in (("encoder bias", b_enc, d_sae), ("decoder bias", b_dec, d_in),
                                ("gate bias", b_gate, d_sae), ("r_mag", r_mag, d_sae), ("b_mag", b_mag, d_sae)):
            if vec is not None and tuple(vec.shape) != (size,):
                raise PersonamineError(f"SAE {meta.source}: {name} has shape {tuple(vec.shape)}, expected ({size},)")
        if threshold is not None and threshold.dim() == 1 and threshold.shape[0] != d_sae:
            raise PersonamineError(f"SAE {meta.source}: threshold has {threshold.shape[0]} entries, expected {d_sae}")
        if meta.d_in is not None and meta.d_in != d_in or meta.d_sae is not None and meta.d_sae != d_sae:
            raise PersonamineError(f"SAE {meta.source}: its config says {meta.d_sae} features x {meta.d_in}, its "
                                   f"weights are {d_sae} x {d_in}")
        meta.d_in, meta.d_sae = d_in, d_sae
        if threshold is not None and threshold.dim() == 0:
            meta.threshold, meta.threshold_kind = float(threshold.float()), "scalar"
        elif threshold is not None:
            meta.threshold_kind = "per-feature"

    @property
    def d_in(self) -> int:
        return self.enc.width

    @property
    def d_sae(self) -> int:
        return self.enc.n_features

    @property
    def hook(self) -> Hook | None:
        return self.meta.hook

    @property
    def is_topk(self) -> bool:
        return self.rule.activation == TOPK

    # ------------------------------------------------------------ input

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The SAE's input in fp32: normalised, scaled, and centred on b_dec where the format does that."""
        s = x.float()
        if self.rule.input_norm == "constant_norm_rescale":
            s = s * (math.sqrt(self.d_in) / s.norm(dim=-1, keepdim=True))
        elif self.rule.input_norm == "layer_norm":
            s = s - s.mean(dim=-1, keepdim=True)
            s = s / (s.std(dim=-1, keepdim=True) + 1e-5)
        if self.rule.input_scale is not None:
            s = s * self.rule.input_scale
        if self.rule.subtract_b_dec and self.b_dec is not None:
            s = s - self.b_dec.to(s.device, torch.float32)
        return s

    def _restore(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction in the captured activations' units (undoes the input normalisation)."""
        x = x.float()
        if self.rule.output_scale is not None:
            recon = recon / self.rule.output_scale
        if self.rule.input_norm == "constant_norm_rescale":
            recon = recon / (math.sqrt(self.d_in) / x.norm(dim=-1, keepdim=True))
        elif self.rule.input_norm == "layer_norm":
            mu = x.mean(dim=-1, keepdim=True)
            recon = recon * (x - mu).std(dim=-1, keepdim=True) + mu
        return recon

    # ------------------------------------------------------------ encoding

    def encoder(self, features: np.ndarray | None = None, *, device: torch.device | str = "cpu",
                chunk_size: int = 8192, exact_topk: bool = False, resident: bool = True):
        """An exact encoder for ``features`` (default: all), with the ``SaeEncoder`` contract: ``n_features``,
        ``chunks()``, ``iter_encode(x)`` yielding ``(start, end, acts)`` and ``encode(x)``.

        A TopK SAE couples all features of a token: for a subset of its features this needs ``exact_topk``
        (every pre-activation is computed to find each token's k largest; costs a full encoder pass). All features
        of a TopK SAE are always encoded exactly. ``resident=False`` reads encoder rows from the mapped file chunk
        by chunk on every call instead of keeping them on the device (for one-off passes such as the pre-flight).
        """
        features = np.arange(self.d_sae, dtype=np.int64) if features is None else \
            np.array(features, dtype=np.int64)  # a copy: arrays from ray.get are read-only
        check_features(features, self.d_sae)
        device = torch.device(device)
        if self.is_topk:
            if not exact_topk and features.size < self.d_sae:
                raise PersonamineError(
                    f"SAE {self.meta.source} is a TopK SAE (k={self.rule.k}): a feature's value depends on every "
                    "other feature of the token, so encoding only some features is not exact; pass exact_topk "
                    "(--sae-exact-topk: every pre-activation is computed, a full encoder pass per batch)")
            return ExactTopKEncoder(self, features, device, chunk_size, resident)
        return ElementwiseEncoder(self, features, device, chunk_size, resident)

    def encode(self, x: torch.Tensor, features: np.ndarray | None = None, chunk_size: int = 8192) -> torch.Tensor:
        """Dense [N, n_features] codes (all features by default; TopK SAEs exactly)."""
        return self.encoder(features, device=x.device, chunk_size=chunk_size, exact_topk=True,
                            resident=False).encode(x)

    # ------------------------------------------------------------ decoder

    def decoder_directions(self, features: np.ndarray) -> torch.Tensor:
        """fp32 [n, d_in]: what one unit of each feature's activation adds to the reconstruction, in the captured
        activations' units (the logit lens and steering directions)."""
        rows = self.dec.rows(torch.from_numpy(np.array(features, dtype=np.int64)))
        return rows / self.rule.output_scale if self.rule.output_scale is not None else rows

    def decode(self, acts: torch.Tensor, features: np.ndarray | None = None, x: torch.Tensor | None = None,
               chunk_size: int = 8192) -> torch.Tensor:
        """Reconstruction ``acts @ W_dec[features] + b_dec`` in the captured activations' units (``x``, the
        input, is needed only by SAEs that normalise each token's input)."""
        feats = np.arange(self.d_sae) if features is None else np.asarray(features, dtype=np.int64)
        out = torch.zeros(acts.shape[0], self.d_in, dtype=torch.float32, device=acts.device)
        for lo in range(0, feats.size, chunk_size):
            index = torch.from_numpy(np.array(feats[lo:lo + chunk_size], dtype=np.int64))
            out += acts[:, lo:lo + chunk_size].float() @ self.dec.rows(index).to(acts.device)
        if self.b_dec is not None:
            out += self.b_dec.to(acts.device, torch.float32)
        if self.rule.input_norm != "none" and x is None:
            raise PersonamineError(f"decoding SAE {self.meta.source} needs its input: it normalises every token")
        return self._restore(out, x if x is not None else out)

    def score_norms(self, index: torch.Tensor | slice) -> torch.Tensor:
        """|W_dec f| for the features (the lm-saes / SAELens ``rescale_acts_by_decoder_norm`` score factor)."""
        return self.dec.rows(index).norm(dim=-1)


class _Encoder:
    """Shared chunking of the two exact encoders."""

    features: np.ndarray
    chunk_size: int

    @property
    def n_features(self) -> int:
        return int(self.features.size)

    def chunks(self) -> list[tuple[int, int]]:
        n = self.n_features
        return [(start, min(start + self.chunk_size, n)) for start in range(0, n, self.chunk_size)]

    def iter_encode(self, x: torch.Tensor) -> Iterator[tuple[int, int, torch.Tensor]]:
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([acts for _, _, acts in self.iter_encode(x)], dim=-1)


class ElementwiseEncoder(_Encoder):
    """relu / jumprelu / gated: only the chosen features' rows are read (from the mapped file), exactly."""

    def __init__(self, sae: Sae, features: np.ndarray, device: torch.device, chunk_size: int,
                 resident: bool) -> None:
        self.sae, self.features, self.device, self.chunk_size = sae, features, device, chunk_size
        self.index = torch.from_numpy(features)
        self.resident = resident
        self._cache = self._params(slice(None)) if resident else None

    def _params(self, part: slice) -> dict[str, torch.Tensor | None]:
        sae, index = self.sae, self.index[part]
        rows = sae.enc.rows(index)
        out: dict[str, torch.Tensor | None] = {"weight": rows, "bias": _vector(sae.b_enc, index)}
        rule = sae.rule
        if rule.activation == "jumprelu":
            t = sae.threshold.float()
            if rule.score_norm:
                out["threshold"] = t if t.dim() == 0 else t.index_select(0, index)
                out["norm"] = sae.score_norms(index)
            else:
                # relu(z) * (z > t) is z where z > max(t, 0), else 0 (a float32 threshold round-trips a float).
                out["floor"] = t.clamp(min=0) if t.dim() == 0 else t.index_select(0, index).clamp(min=0)
        elif rule.activation == "gated":
            out["gate_bias"] = _vector(sae.b_gate, index)
            out["mag_weight"] = rows * _vector(sae.r_mag, index).exp()[:, None]
            out["mag_bias"] = _vector(sae.b_mag, index)
        return {k: (v.to(self.device) if v is not None else None) for k, v in out.items()}

    @property
    def nbytes(self) -> int:
        """Bytes the encoder keeps on its device (0 when rows are read chunk by chunk)."""
        return sum(v.numel() * v.element_size() for v in (self._cache or {}).values() if v is not None)

    def _chunk(self, start: int, end: int) -> dict[str, torch.Tensor | None]:
        if self._cache is None:
            return self._params(slice(start, end))
        return {k: (v if v is None or v.dim() == 0 else v[start:end]) for k, v in self._cache.items()}

    def iter_encode(self, x: torch.Tensor) -> Iterator[tuple[int, int, torch.Tensor]]:
        s = self.sae.prepare(x)
        activation = self.sae.rule.activation
        for start, end in self.chunks():
            p = self._chunk(start, end)
            pre = torch.nn.functional.linear(s, p["weight"], p["bias"])
            # No local keeps a chunk alive while the next is computed: one chunk in memory at a time.
            if activation == "relu":
                yield start, end, pre.relu_()
            elif activation == "jumprelu" and "floor" in p:
                floor = p["floor"]
                if floor.dim() == 0:
                    yield start, end, torch.nn.functional.threshold_(pre, float(floor), 0.0)
                else:
                    yield start, end, pre.masked_fill_(pre <= floor, 0.0)
            elif activation == "jumprelu":
                keep = (pre * p["norm"] > p["threshold"]) & (pre > 0)
                yield start, end, pre.masked_fill_(~keep, 0.0)
            else:  # gated
                gate = torch.nn.functional.linear(s, p["weight"], p["gate_bias"]) > 0
                mag = torch.nn.functional.linear(s, p["mag_weight"], p["mag_bias"]).relu_()
                yield start, end, mag.masked_fill_(~gate, 0.0)


class ExactTopKEncoder(_Encoder):
    """Exact codes of a TopK SAE for any subset of features, in bounded memory.

    Each batch is encoded against every feature, chunk by chunk, keeping only each token's k largest scores so far
    ([N, k] values and feature ids); the chosen features' codes are then the token's top-k values placed at their
    columns. Memory: one [N, chunk] block plus [N, 2k]; cost: a full encoder pass per batch whatever the number of
    chosen features, plus a top-k merge per chunk.
    """

    def __init__(self, sae: Sae, features: np.ndarray, device: torch.device, chunk_size: int,
                 resident: bool) -> None:
        self.sae, self.features, self.device, self.chunk_size = sae, features, device, chunk_size
        self.k = int(sae.rule.k)
        if not 0 < self.k <= sae.d_sae:
            raise PersonamineError(f"SAE {sae.meta.source}: k={self.k} is not between 1 and {sae.d_sae}")
        position = torch.full((sae.d_sae,), -1, dtype=torch.int64)
        position[torch.from_numpy(features)] = torch.arange(features.size)
        self.position = position.to(device)
        self.resident = resident
        self._blocks = [self._block(lo, hi) for lo, hi in self._spans()] if resident else None

    @property
    def nbytes(self) -> int:
        """Bytes the encoder keeps on its device (0 when rows are read chunk by chunk)."""
        return sum(t.numel() * t.element_size() for block in (self._blocks or []) for t in block if t is not None)

    def _spans(self) -> list[tuple[int, int]]:
        n = self.sae.d_sae
        return [(lo, min(lo + self.chunk_size, n)) for lo in range(0, n, self.chunk_size)]

    def _block(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        part = slice(lo, hi)
        norm = self.sae.score_norms(part).to(self.device) if self.sae.rule.score_norm else None
        bias = _vector(self.sae.b_enc, part)
        return self.sae.enc.rows(part).to(self.device), bias.to(self.device) if bias is not None else None, norm

    def top_k(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each token's k largest scores (relu'd) and their feature ids, [N, k] each."""
        s = self.sae.prepare(x)
        values = ids = None
        for i, (lo, hi) in enumerate(self._spans()):
            weight, bias, norm = self._blocks[i] if self._blocks is not None else self._block(lo, hi)
            score = torch.nn.functional.linear(s, weight, bias)
            if norm is not None:
                score = score * norm
            chunk_ids = torch.arange(lo, hi, device=score.device).expand_as(score)
            if values is not None:
                score = torch.cat([values, score], dim=1)
                chunk_ids = torch.cat([ids, chunk_ids], dim=1)
            best = min(self.k, score.shape[1])
            values, where = score.topk(best, dim=1, sorted=False)
            ids = chunk_ids.gather(1, where)
        return values.relu_(), ids

    def iter_encode(self, x: torch.Tensor) -> Iterator[tuple[int, int, torch.Tensor]]:
        values, ids = self.top_k(x)
        column = self.position[ids]  # [N, k]: where each top feature sits among the chosen ones, -1 if not chosen
        for start, end in self.chunks():
            acts = torch.zeros(x.shape[0], end - start, dtype=torch.float32, device=values.device)
            row, slot = ((column >= start) & (column < end)).nonzero(as_tuple=True)
            acts[row, column[row, slot] - start] = values[row, slot]
            yield start, end, acts


def require_tensors(state: dict, names: tuple[str, ...], what: str) -> None:
    """One error naming every missing tensor (``what``: the SAE and the file)."""
    missing = [name for name in names if name not in state]
    if missing:
        raise PersonamineError(f"{what} is missing tensor(s) {', '.join(missing)} (has {', '.join(sorted(state))})")
