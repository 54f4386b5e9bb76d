"""A run's outcome as the steering file's arrays: one row per term, the features' SAE rows in the order asked for,
each feature's clamp scale, responses decoded to their end (NUL shown as a symbol, which HDF5 strings can hold), and
what the file then reads back."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fixtures import SAE_LAYER

from personamine.files.steer import read_steering, write_steering
from personamine.model.generate import Generations
from personamine.model.prompts import RenderedPrompt
from personamine.steering.assemble import assemble
from personamine.steering.interventions import UNSTEERED, Intervention, Term
from personamine.steering.run import SetOutcome, SteerOutcome
from personamine.steering.sae_access import SteerSae, open_sae

LOADED = np.array([3, 7, 11])  # the SAE rows loaded, in this order
FEATURES = [11, 3]  # the features reported, in another


@pytest.fixture(scope="module")
def parts(tiny_model_dir, tied_sae_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    sae = SteerSae(open_sae(str(tied_sae_dir), SAE_LAYER), LOADED, torch.device("cpu"))
    return tok, sae


def outcome(tok):
    nul = tok.convert_tokens_to_ids("Ā")  # byte-level BPE's token for the byte 0
    cat = tok("cat", add_special_tokens=False)["input_ids"]
    ivs = [UNSTEERED, Intervention("ablate 11", (Term("ablate", 11),)),
           Intervention("clamp 3=2x + add 11=0.5", (Term("clamp", 3, 4.5, "all", 2.0), Term("add", 11, 1.25,
                                                                                               given=0.5)))]
    sets = {}
    for k, kind in enumerate(("persona", "control")):
        out = SetOutcome()
        for i in range(3):
            ids = np.full((2, 4), -1, np.int32)
            ids[0, :2] = [nul, cat[0]]
            ids[1, :1] = cat[:1]
            out.generations.append(Generations(ids, np.array([2, 1 - (i == 2)], np.int32), np.array([True, i == 2])))
            out.logprob.append(np.full((2, 3), -float(i + k)))
            out.kl.append(np.array([0.0, 0.0]) if i == 0 else np.array([0.1 * i, 0.2]))
            n = len(ivs[i].terms)
            out.term_stats.append({} if i == 0 else {"n_positions": np.full(n, 5), "after_max": np.arange(n) + 0.5})
        sets[kind] = out
    return SteerOutcome(interventions=ivs, alpha_scale=2.5, clamp_scale={3: 2.25, 7: 0.0, 11: math.nan},
                        prompt_max=np.array([2.25, 0.0, 1.5]), residual_norm=2.5, perplexity=np.array([10.0, 11, 12]),
                        sets=sets)


def rendered():
    return {kind: [RenderedPrompt(f"{kind} {p}", f"<s>{kind}\x00{p}", [1, 2], [1]) for p in range(2)]
            for kind in ("persona", "control")}


def test_the_arrays(parts, tmp_path):
    tok, sae = parts
    res = assemble(outcome(tok), sae, tok, rendered=rendered(), set_names=["assistant", "human"],
                   continuations=["a", "b", "c"], continuation_set=[0, 0, 1], features=FEATURES,
                   attrs={"model": "tiny", "layer": SAE_LAYER}, config={"top": 2})
    assert res.attrs == {"model": "tiny", "layer": SAE_LAYER, "alpha_scale": 2.5, "residual_norm": 2.5}
    assert res.feature_ids.tolist() == FEATURES and math.isnan(res.feature_scale[0])
    assert res.feature_scale[1] == 2.25  # feature 3's scale; feature 11's is NaN (absolute or absent)
    dots, norms = sae.encoder_decoder_dot(), sae.decoder_norm()
    np.testing.assert_array_equal(res.encoder_decoder_dot, dots[[2, 0]])  # rows 11 then 3, not 3 then 11
    np.testing.assert_array_equal(res.decoder_norm, norms[[2, 0]])
    np.testing.assert_array_equal(res.prompt_max, [1.5, 2.25])
    assert res.names == ["unsteered", "ablate 11", "clamp 3=2x + add 11=0.5"] and res.kinds == ["none", "ablate",
                                                                                                 "mixed"]
    assert np.isnan(res.alphas).all()
    assert res.term_intervention.tolist() == [1, 2, 2] and res.term_feature.tolist() == [11, 3, 11]
    assert res.term_kind == ["ablate", "clamp", "add"] and res.term_where == ["", "all", ""]
    np.testing.assert_array_equal(res.term_value, [np.nan, 4.5, 1.25])
    np.testing.assert_array_equal(res.term_given, [np.nan, 2.0, 0.5])
    persona = res.sets["persona"]
    assert persona.text == ["persona 0", "persona 1"] and persona.rendered == ["<s>persona\u24000", "<s>persona\u24001"]
    assert persona.logprob.shape == (3, 2, 3) and persona.kl.tolist()[2] == [0.2, 0.2]
    assert persona.tokens.shape == (3, 2, 4) and persona.length.tolist() == [[2, 1], [2, 1], [2, 0]]
    cat = tok.decode(tok("cat", add_special_tokens=False)["input_ids"][:1])
    assert persona.responses[0] == ["\u2400" + cat, cat] and persona.responses[2][1] == ""
    # Term statistics: the interventions' rows concatenated, in term order (the unsteered run has none).
    assert persona.term_stats["n_positions"].tolist() == [5, 5, 5]
    assert persona.term_stats["after_max"].tolist() == [0.5, 0.5, 1.5]
    back = read_steering(write_steering(tmp_path / "s.h5", res))  # NUL-free: HDF5 stores it
    assert back.sets["persona"].responses == persona.responses and back.term_kind == res.term_kind
    assert back.config == {"top": 2} and back.attrs["alpha_scale"] == 2.5


def test_an_add_only_intervention_carries_its_alpha(parts):
    tok, sae = parts
    out = outcome(tok)
    out.interventions[1] = Intervention("add 3+11=0.5", (Term("add", 3, 1.25, given=0.5), Term("add", 11, 1.25,
                                                                                               given=0.5)))
    for s in out.sets.values():
        s.term_stats[1] = {"n_positions": np.full(2, 5), "after_max": np.zeros(2)}
    res = assemble(out, sae, tok, rendered=rendered(), set_names=["a"], continuations=["x", "y", "z"],
                   continuation_set=[0, 0, 0], features=[3, 7, 11], attrs={}, config={})
    assert res.kinds[1] == "add" and res.alphas[1] == 0.5 and np.isnan(res.alphas[[0, 2]]).all()
    assert res.feature_scale[1] == 0.0 and res.term_where == ["", "", "all", ""]
