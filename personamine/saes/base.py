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
from dataclasses import dataclass, field

import numpy as np
import torch

from personamine.errors import PersonamineError
from personamine.saes.encoders import ElementwiseEncoder, ExactTopKEncoder
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
    """A [F, d] or [d, F] tensor (memory-mapped, any dtype) read as fp32 rows, one row per feature. Every row read is
    checked finite (one reduction over what was read, so a targeted run reads and checks only its features' rows);
    a NaN or infinity is an error naming the feature."""

    def __init__(self, tensor: torch.Tensor, features_first: bool, label: str = "SAE weights") -> None:
        self.tensor, self.features_first = tensor, features_first
        self.label = label  # e.g. "SAE '/x/ae.pt': the encoder", set by Sae

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
        part = part.to(torch.float32).contiguous()
        if not all_finite(part):  # the rows looked at only on failure
            row = int((~torch.isfinite(part)).any(dim=1).nonzero()[0])
            feature = (index.start or 0) + row if isinstance(index, slice) else int(index[row])
            raise nonfinite_weights(self.label, f"row of feature {feature}", part[row])
        return part


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
        encoder.label, decoder.label = f"SAE {meta.source}: the encoder", f"SAE {meta.source}: the decoder"
        # The vectors are checked whole (at most d_sae values each, a few hundred KB for the largest SAEs); the
        # matrices row by row as rows are read (Matrix.rows).
        for name, vec, per_feature in (("encoder bias", b_enc, True), ("decoder bias", b_dec, False),
                                       ("threshold", threshold, threshold is not None and threshold.dim() == 1),
                                       ("gate bias", b_gate, True), ("r_mag", r_mag, True), ("b_mag", b_mag, True)):
            if vec is not None:
                check_finite_vector(vec, f"SAE {meta.source}: the {name}", per_feature)
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


def all_finite(values: torch.Tensor) -> bool:
    """The check on weights as read and on every encoded block of activations: one sum, which is NaN or infinite
    whenever any value is (a sum propagates both; on a CPU it costs a fifteenth of ``isfinite(values).all()``, which
    writes a bool per value: ``benchmarks/nonfinite_cost.py``), and one sync on a GPU. Only when the sum is not
    finite is every value looked at, since a sum of finite values can overflow: the answer is exact either way."""
    return bool(torch.isfinite(values.sum())) or bool(torch.isfinite(values).all())


def overflow_hint(dtype: torch.dtype | None) -> str:
    """What to try when activations of a model in ``dtype`` are not finite ('' where an overflow is unlikely)."""
    name = str(dtype).removeprefix("torch.")
    return f" (the model runs in {name}: an overflow there gives this; try --dtype float32)" \
        if name in ("float16", "bfloat16") else ""


def describe_nonfinite(values: torch.Tensor) -> str:
    """What a tensor holding non-finite values holds, e.g. ``nan (3 of 64 values non-finite)``."""
    flat = values.reshape(-1).float()
    bad = ~torch.isfinite(flat)
    first = float(flat[bad.nonzero()[0]])
    return f"{first} ({int(bad.sum()):,} of {flat.numel():,} values non-finite)"


def nonfinite_weights(label: str, where: str, values: torch.Tensor) -> PersonamineError:
    where = f" {where}" if where else ""
    return PersonamineError(f"{label}{where} holds {describe_nonfinite(values)}: the SAE file is damaged or its "
                            "training diverged; mining with it would give NaN or empty features")


def check_finite_vector(vec: torch.Tensor, label: str, per_feature: bool) -> None:
    """A bias or threshold vector (or scalar) must be finite; the error names the first feature that is not."""
    values = vec.float()
    if bool(torch.isfinite(values).all()):
        return
    if per_feature and values.dim() == 1:
        feature = int((~torch.isfinite(values)).nonzero()[0])
        raise nonfinite_weights(label, f"of feature {feature}", values)
    raise nonfinite_weights(label, "", values)


def require_tensors(state: dict, names: tuple[str, ...], what: str) -> None:
    """One error naming every missing tensor (``what``: the SAE and the file)."""
    missing = [name for name in names if name not in state]
    if missing:
        raise PersonamineError(f"{what} is missing tensor(s) {', '.join(missing)} (has {', '.join(sorted(state))})")
