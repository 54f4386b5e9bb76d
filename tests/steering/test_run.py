"""One steering run, called directly on the tiny model: the unsteered pass first (it fixes the units), then every
intervention on the same inputs; what each unit makes of a relative clamp; a clamp at a multiple of a maximum that is
zero refused in one line."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fixtures import SAE_LAYER

from personamine.errors import PersonamineError
from personamine.model.generate import GenerationSettings
from personamine.steering.hooks import Steering
from personamine.steering.interventions import UNSTEERED, TermSpec, parse_intervention
from personamine.steering.measure import corpus_nll
from personamine.steering.run import SteerInputs, run_interventions
from personamine.steering.sae_access import SteerSae, open_sae

FEATURES = np.arange(256)  # every feature loaded: some never fire on two short prompts


@pytest.fixture(scope="module")
def tiny(tiny_model_dir, tied_sae_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    sae = SteerSae(open_sae(str(tied_sae_dir), SAE_LAYER), FEATURES, torch.device("cpu"))
    steering = Steering(model, model.model.layers[SAE_LAYER], sae, set(tok.all_special_ids) | {tok.pad_token_id})
    yield tok, model, steering
    steering.close()


def inputs_for(tok, specs, **extra):
    def chat(text):
        return tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                       tokenize=True, return_dict=True)["input_ids"]

    base = dict(prompts={"persona": [chat("Who are you?"), chat("How do you feel?")],
                         "control": [chat("Who was Ada?"), chat("How does a cat feel?")]},
                continuations=[tok("I am", add_special_tokens=False)["input_ids"]], windows=[], n_prefix=1,
                specs=specs, generation=GenerationSettings(max_new_tokens=2, batch_size=4), batch_size=4)
    base.update(extra)
    return SteerInputs(**base)


@pytest.fixture(scope="module")
def unsteered(tiny):
    tok, model, steering = tiny
    return run_interventions(model, tok, steering, inputs_for(tok, []))


def test_the_unsteered_pass_comes_first_and_sets_the_units(tiny, unsteered):
    out = unsteered
    assert out.interventions == [UNSTEERED] and math.isnan(out.perplexity[0])  # no windows: no perplexity
    assert out.alpha_scale == out.residual_norm > 0  # residual-norm: alphas are multiples of the median norm
    assert out.prompt_max.shape == (256,) and out.prompt_max.max() > 0 and (out.prompt_max == 0).any()
    assert out.clamp_scale == {int(f): float(m) for f, m in zip(FEATURES, out.prompt_max, strict=True)}
    for kind in ("persona", "control"):
        data = out.sets[kind]
        assert len(data.logprob) == len(data.kl) == len(data.generations) == len(data.term_stats) == 1
        assert data.logprob[0].shape == (2, 1) and np.all(data.kl[0] == 0) and data.term_stats == [{}]


def test_interventions_run_on_the_same_inputs_in_their_units(tiny, unsteered):
    tok, model, steering = tiny
    fired = int(np.argmax(unsteered.prompt_max))
    specs = [parse_intervention(f"clamp:{fired}=2x"), parse_intervention(f"add:{fired}=0.5+ablate:{fired + 1}")]
    windows = [[tok.bos_token_id, *tok("the cat sleeps on the mat", add_special_tokens=False)["input_ids"]]]
    out = run_interventions(model, tok, steering, inputs_for(tok, specs, windows=windows))
    assert [iv.name for iv in out.interventions] == ["unsteered", f"clamp {fired}=2x",
                                                     f"add {fired}=0.5 + ablate {fired + 1}"]
    assert out.residual_norm == unsteered.residual_norm  # the same unsteered pass, run again
    clamp, add = out.interventions[1].terms[0], out.interventions[2].terms[0]
    assert clamp.value == pytest.approx(2 * unsteered.prompt_max[fired]) and clamp.given == 2.0
    assert add.value == pytest.approx(0.5 * out.residual_norm) and add.given == 0.5
    for kind in ("persona", "control"):
        data = out.sets[kind]
        assert len(data.logprob) == len(data.generations) == 3 and np.all(data.kl[0] == 0)
        np.testing.assert_array_equal(data.logprob[0], unsteered.sets[kind].logprob[0])
        assert sorted(data.term_stats[2]) == ["after_fired_mean", "after_max", "after_mean", "before_fired_mean",
                                              "before_mean", "n_fired", "n_positions", "target_error"]
        assert data.term_stats[2]["n_positions"].tolist() == [data.term_stats[2]["n_positions"][0]] * 2
    assert not np.allclose(out.sets["persona"].logprob[1], out.sets["persona"].logprob[0])
    steering.use(None)
    nll, n = corpus_nll(model, steering, windows, 1, 4, tok.pad_token_id)
    assert out.perplexity[0] == pytest.approx(math.exp(nll / n), rel=1e-9)
    assert out.perplexity[2] != out.perplexity[0]  # an add acts at every position of the window


def test_units_of_a_relative_clamp(tiny, unsteered):
    tok, model, steering = tiny
    fired = int(np.argmax(unsteered.prompt_max))
    spec = [(TermSpec("clamp", fired, 3.0, True),)]
    corpus = run_interventions(model, tok, steering, inputs_for(tok, spec, clamp_unit="corpus-max",
                                                                corpus_max={fired: 5.0}, alpha_unit="absolute"))
    assert corpus.interventions[1].terms[0].value == 15.0 and corpus.alpha_scale == 1.0
    assert math.isnan(corpus.clamp_scale[fired + 1])  # not in the mining file
    absolute = run_interventions(model, tok, steering, inputs_for(tok, [(TermSpec("clamp", fired, 3.0),)],
                                                                  clamp_unit="absolute"))
    assert absolute.interventions[1].terms[0].value == 3.0 and all(math.isnan(v) for v in
                                                                   absolute.clamp_scale.values())


def test_a_multiple_of_a_maximum_that_is_zero_is_refused(tiny, unsteered):
    tok, model, steering = tiny
    silent = int(np.flatnonzero(unsteered.prompt_max == 0)[0])
    with pytest.raises(PersonamineError) as info:
        run_interventions(model, tok, steering, inputs_for(tok, [parse_intervention(f"clamp:{silent}=2x")]))
    assert str(info.value) == (f"feature {silent} has no positive prompt-max to clamp at a multiple of (it never "
                               "fires there): give absolute clamp values")
    with pytest.raises(PersonamineError, match=f"^feature {silent} has no positive corpus-max"):
        run_interventions(model, tok, steering, inputs_for(tok, [parse_intervention(f"clamp:{silent}=2x")],
                                                           clamp_unit="corpus-max", corpus_max={}))
    assert steering._plan is None  # the hooks are left doing nothing
