"""The two exact encoders, on an SAE built here from plain tensors: for any subset of features, in any order, in any
chunking, resident or read chunk by chunk, their codes equal a dense reference computed here in float64 from the
rule's formula: elementwise rules (relu, jumprelu with a scalar or per-feature threshold, gated) and exact top-k."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from personamine.errors import PersonamineError
from personamine.saes.base import Matrix, Rule, Sae, SaeMeta
from personamine.saes.encoders import ElementwiseEncoder, ExactTopKEncoder

D, F = 24, 40
SUBSETS = [np.arange(F), np.array([39, 0, 17, 5, 22]), np.array([7])]


def tensors(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"W": torch.randn(F, D, generator=g), "b": torch.randn(F, generator=g) - 0.5,
            "b_dec": torch.randn(D, generator=g) * 0.3, "dec": torch.randn(F, D, generator=g),
            "t": torch.rand(F, generator=g) * 2, "b_gate": torch.randn(F, generator=g),
            "r_mag": torch.randn(F, generator=g) * 0.3, "b_mag": torch.randn(F, generator=g)}


def make_sae(activation, *, threshold=None, k=None, features_first=True, t=None):
    t = t or tensors()
    enc = t["W"] if features_first else t["W"].T.contiguous()
    meta = SaeMeta(format="test", architecture="topk" if activation == "topk" else activation, source="'toy'",
                   d_in=None, d_sae=None, hook=None, k=k)
    gated = dict(b_gate=t["b_gate"], r_mag=t["r_mag"], b_mag=t["b_mag"]) if activation == "gated" else {}
    return Sae(meta, Rule(activation, subtract_b_dec=True, k=k), encoder=Matrix(enc, features_first),
               b_enc=None if activation == "gated" else t["b"], decoder=Matrix(t["dec"], True), b_dec=t["b_dec"],
               threshold=threshold, **gated)


def reference(activation, x, threshold=None, k=None):
    """Dense codes of every feature, in float64, from the formulas in personamine.saes.base."""
    t = {name: v.double() for name, v in tensors().items()}
    s = x.double() - t["b_dec"]
    pre = s @ t["W"].T + t["b"]
    if activation == "relu":
        return pre.clamp(min=0)
    if activation == "jumprelu":
        floor = threshold.double().clamp(min=0)
        return torch.where(pre > floor, pre, torch.zeros_like(pre))
    if activation == "gated":
        gate = (s @ t["W"].T + t["b_gate"]) > 0
        mag = (s @ (t["W"] * t["r_mag"].exp()[:, None]).T + t["b_mag"]).clamp(min=0)
        return torch.where(gate, mag, torch.zeros_like(mag))
    top = pre.topk(k, dim=1)
    out = torch.zeros_like(pre)
    return out.scatter_(1, top.indices, top.values.clamp(min=0))


def x_batch(n=50, seed=1):
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed)) * 1.5


def check(got, want):
    assert got.dtype == torch.float32 and got.shape == want.shape
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    assert torch.equal(got > 0, want > 0)  # the same features fire, exactly


ELEMENTWISE = [("relu", None), ("jumprelu", torch.tensor(0.4)), ("jumprelu", tensors()["t"]),
               ("jumprelu", torch.tensor(-1.0)), ("gated", None)]


@pytest.mark.parametrize("activation, threshold", ELEMENTWISE)
def test_elementwise_codes_equal_the_dense_reference(activation, threshold):
    x = x_batch()
    want = reference(activation, x, threshold)
    assert bool((want > 0).any()) and bool((want == 0).any())
    for features_first, chunk_size, resident in ((True, 7, True), (False, 7, False), (True, 1, False),
                                                 (False, 64, True)):  # a [F, D] or a [D, F] encoder on disk
        sae = make_sae(activation, threshold=threshold, features_first=features_first)
        for features in SUBSETS:
            enc = ElementwiseEncoder(sae, features, torch.device("cpu"), chunk_size, resident)
            check(enc.encode(x), want[:, features])
            spans = [(start, end) for start, end, _ in enc.iter_encode(x)]
            assert spans == enc.chunks() == [(lo, min(lo + chunk_size, features.size))
                                             for lo in range(0, features.size, chunk_size)]
            assert enc.n_features == features.size
            assert (enc.nbytes > 0) == resident


@pytest.mark.parametrize("k, chunk_size", [(1, 4), (3, 1), (9, 4), (9, 64)])
def test_exact_top_k_equals_the_dense_top_k(k, chunk_size):
    x = x_batch()
    want = reference("topk", x, k=k)
    assert int((want > 0).sum(1).max()) <= k
    sae = make_sae("topk", k=k)
    for resident in (True, False):
        for features in SUBSETS:
            enc = ExactTopKEncoder(sae, features, torch.device("cpu"), chunk_size, resident)
            check(enc.encode(x), want[:, features])
            assert (enc.nbytes > 0) == resident
    values, ids = ExactTopKEncoder(sae, np.arange(F), torch.device("cpu"), chunk_size, True).top_k(x)
    assert values.shape == ids.shape == (x.shape[0], k)
    dense = torch.zeros(x.shape[0], F, dtype=torch.float64).scatter_(1, ids, values.double())
    torch.testing.assert_close(dense, want, rtol=1e-5, atol=1e-5)


def test_top_k_of_an_sae_whose_k_is_out_of_range_is_refused():
    for k in (0, F + 1):
        with pytest.raises(PersonamineError) as info:
            ExactTopKEncoder(make_sae("topk", k=k), np.arange(3), torch.device("cpu"), 8, True)
        assert str(info.value) == f"SAE 'toy': k={k} is not between 1 and {F}"
    full = ExactTopKEncoder(make_sae("topk", k=F), np.arange(F), torch.device("cpu"), 8, True)
    check(full.encode(x_batch()), reference("topk", x_batch(), k=F))  # k = every feature: a plain relu


def test_an_empty_batch_gives_empty_codes():
    x = torch.zeros(0, D)
    relu = ElementwiseEncoder(make_sae("relu"), SUBSETS[1], torch.device("cpu"), 2, True)
    topk = ExactTopKEncoder(make_sae("topk", k=3), SUBSETS[1], torch.device("cpu"), 2, True)
    assert relu.encode(x).shape == topk.encode(x).shape == (0, 5)
