"""``personamine.explain`` end to end: the in-process backend on the real SmolLM2 (offline), the persona evidence
from a real discovery file, the output file, the cache, and the config's errors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from chat_server import ChatServer, reference_probability
from fixtures import run_discovery

import personamine
from personamine.config import ExplainConfig, field_help
from personamine.jobs.explain import scoring_items
from personamine.model.smollm2 import SMOLLM2_ID

TINY = dict(n_explain=3, n_test=2, n_negatives=2, explanation_tokens=24, progress=False)


@pytest.mark.slow
def test_smollm2_in_process_end_to_end(tiny_mining_file, tmp_path):
    """Explanations are whatever the 135M model writes; what is checked is the plumbing and the arithmetic."""
    cache = tmp_path / "cache"
    small = {**TINY, "n_negatives": 1, "explanation_tokens": 16, "answer_tokens": 2}
    out = personamine.explain(tiny_mining_file, features=[28], model=SMOLLM2_ID, cache_dir=str(cache),
                              output=str(tmp_path / "ex.h5"), **small)
    ex = personamine.read_explanations(out)
    assert ex.attrs["backend"] == "local" and ex.attrs["model"] == SMOLLM2_ID and ex.attrs["n_errors"] == 0
    assert ex.feature_ids.tolist() == [28] and ex.explanations[0]
    kinds = [c.kind for c in ex.calls]
    assert kinds.count("explanation") == 1 and kinds.count("detection") == 3 and kinds.count("fuzzing") >= 2
    assert "<<" in ex.calls[0].messages[1]["content"] and "Activations:" in ex.calls[0].messages[1]["content"]
    # Every answer has an exact probability (the local backend reads "0"/"1"/yes/no from the full distribution):
    # recompute two from the model, one token at a time with no batching.
    assert all(a.probability is not None for a in ex.answers)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from personamine.model.loading import resolve_model_source

    src = resolve_model_source(SMOLLM2_ID)
    tok, lm = AutoTokenizer.from_pretrained(src), AutoModelForCausalLM.from_pretrained(src).eval()
    for a in (ex.answers[0], ex.answers[-1]):
        assert a.probability == pytest.approx(reference_probability(tok, lm, ex.calls[a.call].messages, 2), abs=1e-3)
    for row, scorer in ((0, "detection"), (0, "fuzzing")):
        mine = [a for a in ex.answers if a.scorer == scorer]
        pos = [a for a in mine if a.truth == 1]
        neg = [a for a in mine if a.truth == 0]
        expected = (sum(a.prediction == 1 for a in pos) / len(pos) + sum(a.prediction == 0 for a in neg) / len(neg)) / 2
        assert ex.scores[scorer]["balanced_accuracy"][row] == pytest.approx(expected)
    # Rerun: all from the cache, the model never loads.
    again = personamine.read_explanations(personamine.explain(
        tiny_mining_file, features=[28], model=SMOLLM2_ID, cache_dir=str(cache), output=str(tmp_path / "b.h5"),
        device="no-such-device", **small))
    assert again.attrs["n_calls_sent"] == 0 and again.explanations == ex.explanations


def test_discovery_prompts_reach_the_explainer(tiny_model_dir, tiny_sae_dir, tiny_mining_file, tmp_path):
    persona = ["Who are you?", "Are you an AI assistant?", "What is your name?"]
    control = ["Who is she?", "Is that a cat?", "What is the time?"]
    disc_path = run_discovery(tiny_model_dir, tiny_sae_dir, tmp_path, persona, control, top=256)
    disc = personamine.read_discovery(disc_path)
    mined = personamine.read_results(tiny_mining_file).feature_ids.tolist()
    ranked = [f for f in mined if f in disc.feature_ids[:disc.persona_acts.shape[1]].tolist()]
    unranked = [f for f in mined if f not in disc.feature_ids.tolist()]
    assert ranked and unranked
    features = ranked[:2] + unranked[:1]
    with ChatServer(tiny_model_dir) as server:
        out = personamine.explain(tiny_mining_file, discovery=str(disc_path), features=features, backend="openai",
                                  base_url=server.url, cache_dir=str(tmp_path / "cache"), persona_prompts=2,
                                  output=str(tmp_path / "ex.h5"), **TINY)
    ex = personamine.read_explanations(out)
    assert ex.attrs["discovery_file"] == str(disc_path)
    for call in (c for c in ex.calls if c.kind == "explanation"):
        if call.feature_id in unranked:  # no per-prompt values: no persona block
            assert "persona" not in call.messages[1]["content"]
            continue
        rank = int(np.nonzero(disc.feature_ids == call.feature_id)[0][0])
        values = disc.persona_acts[:, rank]
        best = np.argsort(-values, kind="stable")[:2]
        text = call.messages[1]["content"]
        assert "persona prompts" in text
        shown = [line for line in text.splitlines() if line.startswith("persona (")]
        assert len(shown) == 2
        controls = disc.control_acts[:, rank]
        top = max(values[best].max(), controls[best].max())
        for line, i in zip(shown, best.tolist(), strict=True):
            assert f'"{persona[i]}"' in line and f'"{control[i]}"' in line
            p, c = (0 if v == 0 else max(1, min(10, int(np.rint(10 * v / top)))) for v in (values[i], controls[i]))
            assert line.startswith(f"persona ({p}): ") and f"| control ({c}): " in line


def test_fuzzing_items_mark_right_and_wrong_tokens(tiny_mining_file):
    from personamine.autointerp.examples import split_examples
    from personamine.autointerp.prompts import firing_mask, marked_text

    res = personamine.read_results(tiny_mining_file)
    fx = split_examples(res, 28, 2, 6, 3)
    items = scoring_items("fuzzing", fx, 0.3)
    again = scoring_items("fuzzing", fx, 0.3)
    assert [i.text for i in items] == [i.text for i in again]  # reproducible
    right = {id(e) for e in fx.test[::2]}
    for it in items:
        e = it.example
        true_mark = marked_text(e.tokens, firing_mask(e.acts, 0.3))
        if id(e) in right:
            assert it.truth == 1 and it.text == true_mark
        else:
            assert it.truth == 0 and it.text != true_mark and "<<" in it.text
    assert sum(i.truth for i in items) == len(fx.test[::2])
    assert sum(i.example.source == "negative" for i in items) == len(fx.negatives)
    detection = scoring_items("detection", fx, 0.3)
    assert sorted(i.truth for i in detection) == [0] * len(fx.negatives) + [1] * len(fx.test)
    assert all("<<" not in i.text for i in detection)


def test_config_help_and_errors(tiny_mining_file, tmp_path):
    assert all(field_help(ExplainConfig).values())
    for bad, match in ((dict(backend="vllm"), "backend"), (dict(scorers="detection,simulation"), "scorers"),
                       (dict(n_explain=0), "n_explain"), (dict(mark_threshold=1.5), "mark_threshold")):
        with pytest.raises(personamine.PersonamineError, match=match):
            ExplainConfig(results="x.h5", **bad)
    with pytest.raises(personamine.PersonamineError, match="no mining file"):
        ExplainConfig()
    with pytest.raises(personamine.PersonamineError, match="unknown explain option"):
        personamine.explain(tiny_mining_file, no_such_option=1)
    with pytest.raises(personamine.PersonamineError, match="feature 5 is not in"):
        personamine.explain(tiny_mining_file, features=[5], backend="openai", model="m", base_url="http://127.0.0.1:9/v1")
    assert ExplainConfig(results="run/mine.h5").output_path().as_posix() == "run/mine.explanations.h5"
    assert "api_key" not in ExplainConfig(results="x.h5", api_key="secret").to_dict()
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.attrs["format"] = "something"
    with pytest.raises(personamine.PersonamineError, match="not a personamine explanations file"):
        personamine.read_explanations(tmp_path / "other.h5")
