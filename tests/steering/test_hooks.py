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
from personamine.steering.interventions import DirectionTerm, Intervention, Term, parse_intervention, resolve
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


# ---------------------------------------------------------------- direction terms over a range of layers


def _units(seed: int = 0, hidden: int = 64) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for layer in range(4):
        v = rng.standard_normal(hidden)
        out[layer] = (v / np.linalg.norm(v)).astype(np.float32)
    return out


def _direction(kind: str, layer: int, unit: np.ndarray, value: float = float("nan")) -> DirectionTerm:
    return DirectionTerm(kind, f"L{layer}", layer, unit, value, value, target=f"[L{{layer}}]@{layer}")


def _steered_hidden(model, tok, tiny_sae, intervention, ids, mask, pos):
    """The residual stream the steered model carries out of each layer l < 3 (what layer l + 1 reads: transformers
    5 records ``output_hidden_states`` before a layer's forward hooks run, so they show the unsteered output of an
    intervened layer), the positions it acted on, the direction record and the logits."""
    carried: dict[int, torch.Tensor] = {}

    def reads(layer):
        return lambda _m, args, kwargs: carried.__setitem__(layer, (args[0] if args else kwargs["hidden_states"]))

    handles = [model.model.layers[layer + 1].register_forward_pre_hook(reads(layer), with_kwargs=True)
               for layer in range(3)]
    steering = Steering(model, model.model.layers[SAE_LAYER], tiny_sae, special_ids(tok), layers=model.model.layers)
    try:
        steering.use(intervention, record=True)
        with torch.inference_mode(), steering.positions(fixed_positions(mask.bool())):
            logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    finally:
        steering.close()
        for handle in handles:
            handle.remove()
    acted = mask.bool() & ~torch.isin(ids, torch.tensor(special_ids(tok)))
    return carried, acted, steering.direction_record, logits


def test_direction_terms_hold_their_algebra_on_the_carried_residual(tiny, tied_sae_dir):
    """Cap: no projection above tau at any acted position of each capped layer; floor: none below; ablate: 0; add:
    shifted by the value exactly; positions not acted on exactly as they were. Checked on the residual the model
    carries on (the next layer's input)."""
    model, tok = tiny
    ids, mask, pos = batch(tok)
    sae = SteerSae(open_sae(str(tied_sae_dir), SAE_LAYER), FEATURES, torch.device("cpu"))
    units = _units()
    plain, acted, _, _ = _steered_hidden(model, tok, sae, None, ids, mask, pos)
    # Thresholds near the median of the plain model's projections at each layer (later layers read capped input, so
    # the cap acts on some positions and not on others there too), off any projection so that "sits at tau" and
    # "was moved" are the same positions.
    taus = {layer: float((plain[layer][acted] @ torch.from_numpy(units[layer])).median()) + 3e-4
            for layer in range(3)}
    for kind in ("cap", "floor"):
        layers = [0, 1, 2]
        iv = Intervention(kind, (), tuple(_direction(kind, layer, units[layer], taus[layer]) for layer in layers))
        out, acted, record, _ = _steered_hidden(model, tok, sae, iv, ids, mask, pos)
        stats = record.summary()
        for row, layer in enumerate(layers):
            u = torch.from_numpy(units[layer])
            p = out[layer][acted] @ u
            if kind == "cap":
                assert float(p.max()) <= taus[layer] + 1e-5
            else:
                assert float(p.min()) >= taus[layer] - 1e-5
            changed = (p - taus[layer]).abs() <= 1e-5
            assert 0 < int(changed.sum()) < p.numel()
            assert stats["n_positions"][row] == p.numel()
            assert stats["n_active"][row] == int(changed.sum())  # acted exactly where it now sits at tau
            assert stats["after_mean"][row] == pytest.approx(float(p.mean()), abs=1e-5)
            assert stats["active_fraction"][row] == pytest.approx(float(changed.float().mean()))
            if layer == 0:  # the first layer's other positions are exactly as they were (later ones attend to changes)
                assert torch.equal(out[0][~acted], plain[0][~acted])
        # The first capped layer reads the plain model's input: its "before" is the plain projection.
        assert stats["before_mean"][0] == pytest.approx(
            float((plain[0][acted] @ torch.from_numpy(units[0])).mean()), abs=1e-5)
        if kind == "cap":
            assert stats["after_max"][0] <= taus[0] + 1e-5
        else:
            assert stats["after_min"][0] >= taus[0] - 1e-5

    iv = Intervention("ablate", (), (_direction("ablate", 1, units[1]),))
    out, acted, record, _ = _steered_hidden(model, tok, sae, iv, ids, mask, pos)
    assert float((out[1][acted] @ torch.from_numpy(units[1])).abs().max()) < 1e-5
    assert abs(record.summary()["after_mean"][0]) < 1e-5
    assert torch.equal(out[0], plain[0])  # the layer before it: untouched

    # Add at layer 2 (the layers before it untouched, so layer 2 computes its plain output first).
    iv = Intervention("add", (), (_direction("add", 2, units[2], 1.75),))
    out, acted, record, _ = _steered_hidden(model, tok, sae, iv, ids, mask, pos)
    shift = out[2][acted] - plain[2][acted]
    torch.testing.assert_close(shift, (1.75 * torch.from_numpy(units[2])).expand(int(acted.sum()), -1), atol=1e-5,
                               rtol=0)
    assert torch.equal(out[2][~acted], plain[2][~acted])
    s = record.summary()
    assert s["after_mean"][0] - s["before_mean"][0] == pytest.approx(1.75, abs=1e-5)


def test_zero_add_infinite_cap_and_no_layer_leave_the_plain_model_bitwise(tiny, tied_sae_dir):
    model, tok = tiny
    ids, mask, pos = batch(tok)
    sae = SteerSae(open_sae(str(tied_sae_dir), SAE_LAYER), FEATURES, torch.device("cpu"))
    units = _units(1)
    _, _, _, plain = _steered_hidden(model, tok, sae, None, ids, mask, pos)
    for iv in (Intervention("add 0", (), tuple(_direction("add", layer, units[layer], 0.0) for layer in range(4))),
               Intervention("cap inf", (), tuple(_direction("cap", layer, units[layer], float("inf"))
                                                 for layer in range(4))),
               Intervention("floor -inf", (), (_direction("floor", 1, units[1], float("-inf")),)),
               Intervention("no layer", (), ())):
        _, acted, record, logits = _steered_hidden(model, tok, sae, iv, ids, mask, pos)
        assert torch.equal(logits, plain), iv.name
        if iv.directions:
            assert record.summary()["n_positions"].min() == int(acted.sum())  # it ran, and changed no bit
    # An empty layer range resolves to no direction term at all.
    spec = parse_intervention("cap:[L{layer}]@2:2=p50")
    assert resolve(spec, clamp_scale={}, alpha_scale=1.0, where="active").directions == ()
