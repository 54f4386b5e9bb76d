"""The judge-free measurements, called directly on the tiny model with the steering hooks in place: continuation
log-probabilities from the prompt's cache, the first generated token's distribution, corpus perplexity terms and KL,
each equal to one unpadded, uncached forward per sequence with the intervention applied by a hook written here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fixtures import SAE_LAYER, sae_file

from personamine.steering.hooks import Steering
from personamine.steering.interventions import UNSTEERED, parse_intervention, resolve
from personamine.steering.measure import corpus_nll, kl_divergence, score_continuations
from personamine.steering.sae_access import SteerSae, open_sae

FEATURE, ALPHA = 7, 1.5
PROMPTS = ["Who are you?", "Tell me how you feel about music and art, please.", "Hi"]
CONTINUATIONS = ["I", "The cat and the bat became friends"]  # one token, and several


@pytest.fixture(scope="module")
def tiny(tiny_model_dir, tied_sae_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    sae = SteerSae(open_sae(str(tied_sae_dir), SAE_LAYER), np.array([3, FEATURE]), torch.device("cpu"))
    special = set(tok.all_special_ids) | {tok.pad_token_id}
    steering = Steering(model, model.model.layers[SAE_LAYER], sae, special)
    yield tok, model, steering, special
    steering.close()


@pytest.fixture(scope="module")
def direction(tied_sae_dir):
    from fixtures import batchtopk_sae_class

    d = batchtopk_sae_class().from_pretrained(str(sae_file(tied_sae_dir)), device="cpu").decoder.weight[:, FEATURE]
    return (d / d.norm()).detach()


class Reference:
    """The full model, one sequence per forward, no padding and no cache; ``add`` applied by its own hook."""

    def __init__(self, model, special, direction):
        self.model, self.special, self.direction = model, special, direction
        self.alpha, self.region, self.active = 0.0, (0, 0), False  # acts only inside its own forwards
        self.handle = model.model.layers[SAE_LAYER].register_forward_hook(self.hook)

    def hook(self, _module, _args, out):
        if not self.active:
            return None
        h = out[0] if isinstance(out, tuple) else out
        lo, hi = self.region
        rows = [t for t in range(lo, min(hi, h.shape[1])) if self.ids[t] not in self.special]
        if not rows or self.alpha == 0:
            return None
        h = h.clone()
        h[0, rows] += self.alpha * self.direction
        return (h, *out[1:]) if isinstance(out, tuple) else h

    @torch.no_grad()
    def logp(self, ids, region, alpha):
        self.ids, self.region, self.alpha, self.active = ids, region, alpha, True
        try:
            return self.model(torch.tensor([ids])).logits[0].double().log_softmax(-1)
        finally:
            self.active = False


@pytest.fixture(scope="module")
def ref(tiny, direction):
    _, model, _, special = tiny
    reference = Reference(model, special, direction)
    yield reference
    reference.handle.remove()


def add_intervention():
    return resolve(parse_intervention(f"add:{FEATURE}={ALPHA}"), clamp_scale={}, alpha_scale=1.0, where="active")


@pytest.mark.parametrize("mode", ["all", "prompt", "generated"])
def test_continuation_scores_equal_one_forward_each(tiny, ref, mode):
    tok, model, steering, _ = tiny
    prompts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True,
                                       return_dict=True)["input_ids"] for p in PROMPTS]
    conts = [tok(c, add_special_tokens=False)["input_ids"] for c in CONTINUATIONS]
    steering.use(add_intervention())
    try:
        scores = score_continuations(model, steering, prompts, conts, mode, batch_size=2, pad=tok.pad_token_id)
    finally:
        steering.use(None)
    steering.use(UNSTEERED)
    plain = score_continuations(model, steering, prompts, conts, mode, batch_size=3, pad=tok.pad_token_id)
    assert scores.logprob.shape == (3, 2) and scores.logprob.dtype == np.float64
    for p, prompt in enumerate(prompts):
        n = len(prompt)
        region = {"all": (0, 10**9), "prompt": (0, n), "generated": (n, 10**9)}[mode]
        for c, cont in enumerate(conts):
            logp = ref.logp(prompt + cont, region, ALPHA)
            want = sum(float(logp[n - 1 + i, t]) for i, t in enumerate(cont))
            assert scores.logprob[p, c] == pytest.approx(want, abs=2e-4), (mode, p, c)
            base = ref.logp(prompt + cont, region, 0.0)
            assert plain.logprob[p, c] == pytest.approx(sum(float(base[n - 1 + i, t]) for i, t in enumerate(cont)),
                                                        abs=2e-4)
        torch.testing.assert_close(scores.first[p].double(), ref.logp(prompt, region, ALPHA)[-1], atol=1e-5, rtol=0)
    moved = float(np.abs(scores.logprob - plain.logprob).max())
    assert moved > 1e-3  # the intervention did act, wherever it was asked to
    if mode == "generated":  # the first generated token is predicted from the prompt alone
        torch.testing.assert_close(scores.first, plain.first)


def test_corpus_nll_counts_every_token_after_the_prefix(tiny, ref):
    tok, model, steering, _ = tiny
    windows = [[tok.bos_token_id, *tok(t, add_special_tokens=False)["input_ids"]]
               for t in ("the cat sleeps on the warm mat", "I think so", "Hello world, this is a tiny test")]
    steering.use(add_intervention())
    try:
        nll, n = corpus_nll(model, steering, windows, n_prefix=1, batch_size=2, pad=tok.pad_token_id)
    finally:
        steering.use(None)
    assert n == sum(len(w) - 1 for w in windows)
    want = 0.0
    for w in windows:
        logp = ref.logp(w, (0, 10**9), ALPHA)
        want -= sum(float(logp[t - 1, w[t]]) for t in range(1, len(w)))
    assert nll == pytest.approx(want, rel=1e-5)
    # A two-token prefix leaves one token fewer to predict per window.
    _, fewer = corpus_nll(model, steering, windows, n_prefix=2, batch_size=8, pad=tok.pad_token_id)
    assert fewer == n - len(windows)


def test_kl_divergence_per_row():
    g = torch.Generator().manual_seed(0)
    p = torch.randn(4, 50, generator=g).log_softmax(-1)
    q = (torch.randn(4, 50, generator=g) * 2).log_softmax(-1)
    got = kl_divergence(p, q)
    pn, qn = p.double().numpy(), q.double().numpy()
    want = (np.exp(pn) * (pn - qn)).sum(-1)
    assert got.dtype == np.float64 and got.shape == (4,)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert np.all(kl_divergence(p, p) == 0) and np.all(got > 0)
    assert math.isclose(float(kl_divergence(p[:1], q[:1])[0]), float(want[0]), rel_tol=1e-5)
