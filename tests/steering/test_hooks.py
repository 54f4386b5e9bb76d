"""The steering hooks on the tiny model: a zero change leaves every bit of the plain model, ablation and clamping
reach their targets up to the encoder/decoder bound, positions are the ones asked for, nothing else moves."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures import SAE_LAYER, SENTENCES

from personamine.model.generate import GenerationSettings
from personamine.model.padding import left_pad
from personamine.steering.hooks import Steering, fixed_positions, generate_steered, generation_positions
from personamine.steering.interventions import Intervention, Term, parse_intervention, resolve
from personamine.steering.sae_access import SteerSae, open_sae

FEATURES = np.arange(0, 256, 1, dtype=np.int64)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def batch(tok, texts=SENTENCES[:5]):
    return left_pad([tok(t)["input_ids"] for t in texts], tok.pad_token_id, torch.device("cpu"))


def special_ids(tok):
    return [*tok.all_special_ids, tok.pad_token_id]


def steering_for(model, tok, sae_dir, features=FEATURES):
    sae = SteerSae(open_sae(str(sae_dir), SAE_LAYER), features, torch.device("cpu"))
    return Steering(model, model.model.layers[SAE_LAYER], sae, special_ids(tok))


def test_zero_change_and_empty_intervention_are_bitwise_the_plain_model(tiny, tied_sae_dir):
    model, tok = tiny
    ids, mask, pos = batch(tok)
    with torch.inference_mode():
        plain = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        settings = GenerationSettings(max_new_tokens=8, batch_size=8)
        prompts = [tok(t)["input_ids"] for t in SENTENCES[:5]]
        plain_gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                                   pad_token_id=tok.pad_token_id)[:, ids.shape[1]:]
    steering = steering_for(model, tok, tied_sae_dir)
    try:
        zero = resolve(parse_intervention("add:5=0+add:9=0"), clamp_scale={}, alpha_scale=1.0, where="active")
        for intervention in (Intervention("empty", ()), zero):
            steering.use(intervention, record=True)
            with torch.inference_mode(), steering.positions(fixed_positions(mask.bool())):
                logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
            assert torch.equal(logits, plain), intervention.name
            gens = generate_steered(model, tok, steering, prompts, "all", settings)
            for row in range(len(prompts)):
                expected = [t for t in plain_gen[row].tolist()]
                end = next((j for j, t in enumerate(expected) if t == tok.eos_token_id), len(expected))
                assert gens.token_ids[row, : gens.length[row]].tolist() == expected[:end]
        # The zero add really ran: it touched every real, non-special token of the generation.
        assert int(steering.record.positions) > 0
    finally:
        steering.close()

    # bf16: the change is computed in fp32 and rounded once, so zero still changes no bit.
    model16 = type(model).from_pretrained(model.name_or_path, dtype=torch.bfloat16).eval()
    with torch.inference_mode():
        plain16 = model16(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    steering = steering_for(model16, tok, tied_sae_dir)
    try:
        steering.use(zero)
        with torch.inference_mode(), steering.positions(fixed_positions(mask.bool())):
            assert torch.equal(model16(input_ids=ids, attention_mask=mask, position_ids=pos).logits, plain16)
    finally:
        steering.close()


def _perturbed_sae(src_dir, out_dir, scale: float):
    """The fixture SAE with every encoder row scaled: e_f . d_f = scale instead of 1 (the fixture ties encoder and
    decoder), so ablation leaves (1 - scale) of the pre-activation behind."""
    ae = src_dir / f"resid_post_layer_{SAE_LAYER}" / "trainer_0"
    state = torch.load(ae / "ae.pt", weights_only=True)
    state["encoder.weight"] = state["encoder.weight"] * scale
    target = out_dir / f"resid_post_layer_{SAE_LAYER}" / "trainer_0"
    target.mkdir(parents=True)
    torch.save(state, target / "ae.pt")
    (target / "config.json").write_text((ae / "config.json").read_text())
    return out_dir


def _through(model, tok, sae, intervention, ids, mask, pos):
    """The layer's output before and after a fresh steering hook (capture hooks on either side of it), where it
    acted, and its record of the activations."""
    seen = {}
    layer = model.model.layers[SAE_LAYER]
    before = layer.register_forward_hook(lambda m, a, out: seen.__setitem__("before", out.clone()))
    steering = Steering(model, layer, sae, special_ids(tok))
    after = layer.register_forward_hook(lambda m, a, out: seen.__setitem__("after", out.clone()))
    try:
        steering.use(intervention, record=True)
        with torch.inference_mode(), steering.positions(fixed_positions(mask.bool())):
            model(input_ids=ids, attention_mask=mask, position_ids=pos)
    finally:
        for handle in (before, after):
            handle.remove()
        steering.close()
    acted = mask.bool() & ~torch.isin(ids, torch.tensor(special_ids(tok)))
    return seen["before"], seen["after"], acted, steering.record


def _busiest_feature(tiny, sae_dir):
    """The tiny batch through an unsteered pass: (reference SAE, its threshold, (ids, mask, positions), the steering
    SAE, the captured residuals, the acted positions, their reference codes, and the feature that fires on most of
    them, so that checks on it cover many positions)."""
    from dictionary_learning.trainers import BatchTopKSAE

    model, tok = tiny
    reference = BatchTopKSAE.from_pretrained(str(sae_dir / f"resid_post_layer_{SAE_LAYER}/trainer_0/ae.pt"),
                                             device="cpu")
    ids, mask, pos = batch(tok)
    sae = SteerSae(open_sae(str(sae_dir), SAE_LAYER), FEATURES, torch.device("cpu"))
    h0, _, acted, _ = _through(model, tok, sae, None, ids, mask, pos)
    with torch.no_grad():
        codes = reference.encode(h0[acted])
    f = int((codes > 0).sum(0).argmax())
    return reference, float(reference.threshold), (ids, mask, pos), sae, h0, acted, codes, f


@pytest.mark.parametrize("scale", [1.0, 0.8])
def test_ablate_and_clamp_reach_their_targets_within_the_bound(tiny, tied_sae_dir, tmp_path, scale):
    model, tok = tiny
    sae_dir = tied_sae_dir if scale == 1.0 else _perturbed_sae(tied_sae_dir, tmp_path / "sae", scale)
    reference, threshold, (ids, mask, pos), sae, h0, acted, codes, f = _busiest_feature(tiny, sae_dir)
    ed = float(sae.encoder_decoder_dot()[sae.index(f)])
    assert ed == pytest.approx(scale, abs=1e-5)
    value = float(codes[:, f].max()) * 1.5
    for intervention in (Intervention("ablate", (Term("ablate", f),)),
                         Intervention("clamp", (Term("clamp", f, value, "active"),))):
        h_before, h_after, acted, record = _through(model, tok, sae, intervention, ids, mask, pos)
        assert torch.equal(h_before[~acted], h_after[~acted])  # pads and special tokens untouched
        with torch.no_grad():
            a = reference.encode(h_before[acted])[:, f].double()
            a_new = reference.encode(h_after[acted])[:, f].double()
        fired = a > 0
        assert int(fired.sum()) >= 5
        target = 0.0 if intervention.name == "ablate" else value
        # Exact algebra: the encoder is linear before its threshold, so the change c * d_f moves the
        # pre-activation by c * (e_f . d_f), and the target is missed by |c| * |1 - e_f . d_f|.
        c = (target - a)[fired]
        pre = a[fired] + c * ed
        expected = torch.where(pre > threshold, pre, torch.zeros_like(pre))
        torch.testing.assert_close(a_new[fired], expected, atol=1e-4, rtol=1e-4)
        bound = c.abs() * abs(1 - ed)
        reads = a_new[fired] > 0  # a value pushed to or below the threshold reads 0
        assert bool(((a_new[fired] - target).abs() <= bound + 1e-4)[reads | (target == 0)].all())
        if scale == 1.0:
            assert float((a_new[fired] - target).abs().max()) < 1e-4
        else:
            assert float(bound.max()) > 20 * 1e-4  # the bound is needed (well above the tolerance), and met
        # Where the feature did not fire, clamping "active" and ablating change nothing of it.
        assert torch.equal(a_new[~fired], a[~fired])
        stats = record.summary()
        assert stats["n_fired"][0] == int(fired.sum())
        assert stats["target_error"][0] == pytest.approx(float((a_new[fired] - target).abs().max()), abs=1e-4)


def test_add_moves_along_the_unit_decoder_direction(tiny, tied_sae_dir):
    model, tok = tiny
    ids, mask, pos = batch(tok)
    sae = SteerSae(open_sae(str(tied_sae_dir), SAE_LAYER), FEATURES, torch.device("cpu"))
    d = sae.decoder[sae.index(7)]
    iv = resolve(parse_intervention("add:7=2.5"), clamp_scale={}, alpha_scale=2.0, where="active")
    h_before, h_after, acted, _ = _through(model, tok, sae, iv, ids, mask, pos)
    torch.testing.assert_close(h_after[acted] - h_before[acted], (5.0 * d / d.norm()).expand(int(acted.sum()), -1),
                               atol=1e-5, rtol=0)
    assert torch.equal(h_before[~acted], h_after[~acted])


def test_generation_positions_follow_prefill_then_steps():
    prompt_real = torch.tensor([[False, True, True], [True, True, True]])
    ids = torch.zeros((2, 3), dtype=torch.long)
    step = torch.zeros((2, 1), dtype=torch.long)
    for mode, prefill, each_step in (("all", prompt_real, True), ("prompt", prompt_real, False),
                                     ("generated", torch.zeros_like(prompt_real), True)):
        at = generation_positions(prompt_real, mode)
        assert torch.equal(at(ids), prefill)
        for _ in range(3):
            assert at(step).tolist() == [[each_step], [each_step]]


def test_term_stats_cover_the_positions_the_schema_names(tiny, tied_sae_dir):
    """Restated from the steering file's schema: per term, ``n_positions``, ``before_mean``, ``after_mean`` and
    ``after_max`` cover EVERY position the intervention acted on; ``n_fired``, ``before_fired_mean``,
    ``after_fired_mean`` and ``target_error`` only those where the term's feature fired before. In a combination
    another term can make the feature fire where it had not: ``after_max`` sees that, ``target_error`` does not."""
    model, tok = tiny
    reference, threshold, (ids, mask, pos), sae, h0, acted, codes, f = _busiest_feature(tiny, tied_sae_dir)
    # g: the other feature whose unit decoder direction raises f's pre-activation most.
    e_f = sae.encoder_rows[sae.index(f)]
    push = (sae.decoder / sae.decoder.norm(dim=-1, keepdim=True)) @ e_f
    push[sae.index(f)] = -np.inf
    g = int(FEATURES[int(push.argmax())])
    k = float(push.max())
    assert k > 0
    # Ablate f and add g at 0.9 x the threshold / k: where f fired, its pre-activation becomes 0.9 x the threshold
    # (e_f . d_f = 1: the ablation removes all of it), so it reads 0 and the ablation meets its target; where f was
    # just below its threshold, the add lifts it above.
    alpha = 0.9 * threshold / k
    iv = Intervention("mixed", (Term("ablate", f), Term("add", g, alpha)))
    h_before, h_after, acted, record = _through(model, tok, sae, iv, ids, mask, pos)
    with torch.no_grad():
        before = reference.encode(h_before[acted])[:, [f, g]].double()
        after = reference.encode(h_after[acted])[:, [f, g]].double()
    stats = record.summary()
    n = int(acted.sum())
    for t in range(2):  # term 0: ablate f, term 1: add g (its own feature's numbers)
        b, a = before[:, t], after[:, t]
        fired = b > 0
        assert stats["n_positions"][t] == n and stats["n_fired"][t] == int(fired.sum())
        assert stats["before_mean"][t] == pytest.approx(float(b.mean()), abs=1e-4)
        assert stats["after_mean"][t] == pytest.approx(float(a.mean()), abs=1e-4)
        assert stats["before_fired_mean"][t] == pytest.approx(float(b[fired].mean()), abs=1e-4)
        assert stats["after_fired_mean"][t] == pytest.approx(float(a[fired].mean()), abs=1e-4)
        assert stats["after_max"][t] == pytest.approx(float(a.max()), abs=1e-4)  # every acted position
    b, a = before[:, 0], after[:, 0]
    fired = b > 0
    assert stats["target_error"][0] == pytest.approx(float(a[fired].abs().max()), abs=1e-4)  # fired only
    assert stats["target_error"][0] < 1e-4  # the ablation reads 0 wherever f fired...
    assert stats["after_max"][0] > threshold  # ...but the add made f fire where it had not
    assert bool((a[~fired] > 0).any()) and float(a[fired].max()) < 1e-4
    assert np.isnan(stats["target_error"][1])  # add has no target
