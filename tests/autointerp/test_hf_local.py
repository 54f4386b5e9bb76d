"""The in-process explainer on the tiny chat model: it loads on the first request only; greedy answers, batched and
left-padded, equal the model's own tokens one prompt at a time; log-probabilities are the full distribution's (the
top alternatives plus every token spelling a watched word); the one-line refusals."""

from __future__ import annotations

import shutil

import pytest
import torch

from personamine.autointerp.backend import Request
from personamine.autointerp.hf_local import LocalBackend
from personamine.errors import PersonamineError

PROMPTS = ["Hi", "Do you think a language model can have a self? Tell me.", "The cat and the bat"]


def request(text, **kwargs):
    return Request.chat([{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": text}],
                        **{"max_tokens": 5, **kwargs})


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()

    @torch.no_grad()
    def run(req):
        """Greedy, one sequence alone (no padding, no cache): the tokens and each step's log-probabilities."""
        text = tok.apply_chat_template(req.message_dicts(), add_generation_prompt=True, tokenize=False)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        out, steps = [], []
        for _ in range(req.max_tokens):
            logp = model(torch.tensor([ids + out])).logits[0, -1].log_softmax(-1)
            nxt = int(logp.argmax())
            if nxt == tok.eos_token_id:
                break
            out.append(nxt)
            steps.append(logp)
        return out, steps

    return tok, run


def test_nothing_loads_until_a_request_needs_the_model(tiny_model_dir):
    backend = LocalBackend(str(tiny_model_dir), device="no-such-device", batch_size=0)
    assert backend.complete([]) == [] and backend.lm is None  # a run answered from the cache loads nothing
    assert backend.batch_size == 1 and backend.model == str(tiny_model_dir)


def test_batched_greedy_answers_equal_one_prompt_at_a_time(tiny_model_dir, reference):
    tok, run = reference
    backend = LocalBackend(str(tiny_model_dir), device="cpu", dtype="float32", batch_size=2)
    requests = [request(t) for t in PROMPTS] + [request(PROMPTS[0], max_tokens=2)]
    done = []
    responses = backend.complete(requests, on_done=lambda i, r: done.append((i, r)))
    assert sorted(i for i, _ in done) == [0, 1, 2, 3] and all(responses[i] is r for i, r in done)
    for req, response in zip(requests, responses, strict=True):
        ids, _ = run(req)
        assert response.tokens == [tok.decode([i]) for i in ids], req
        assert response.text == tok.decode(ids, skip_special_tokens=True)
        assert response.error is None and response.logprobs is None  # none asked for
    assert len(responses[3].tokens) <= 2 and responses[3].tokens == responses[0].tokens[:2]


def test_log_probabilities_are_the_models_with_watched_words(tiny_model_dir, reference):
    tok, run = reference
    backend = LocalBackend(str(tiny_model_dir), device="cpu", dtype="float32", batch_size=4)
    req = request(PROMPTS[1], top_logprobs=3, watch=(" Cat", "the"))
    response = backend.complete([req])[0]
    ids, steps = run(req)
    watched = [i for i in range(len(tok)) if tok.decode([i]).strip().lower() in ("cat", "the")]
    assert watched  # the tiny vocabulary spells both
    assert len(response.logprobs) == len(ids) > 0
    for alternatives, logp in zip(response.logprobs, steps, strict=True):
        top = logp.topk(3).indices.tolist()
        want = top + [i for i in watched if i not in top]
        assert [t for t, _ in alternatives] == [tok.decode([i]) for i in want]
        for (_, value), i in zip(alternatives, want, strict=True):
            assert value == pytest.approx(float(logp[i]), abs=1e-5)
        assert alternatives[0][1] >= alternatives[1][1] >= alternatives[2][1]


def test_a_model_that_cannot_explain_is_one_line(tiny_model_dir, tmp_path):
    with pytest.raises(PersonamineError) as info:
        LocalBackend(str(tmp_path / "absent"), device="cpu").complete([request("x")])
    assert str(info.value).startswith(f"cannot load explainer model {str(tmp_path / 'absent')!r}: ")
    assert "\n" not in str(info.value)
    from transformers import AutoTokenizer

    plain = tmp_path / "no-template"
    shutil.copytree(tiny_model_dir, plain)
    tok = AutoTokenizer.from_pretrained(plain)
    tok.chat_template = None
    for name in ("chat_template.jinja", "chat_template.json"):
        (plain / name).unlink(missing_ok=True)
    tok.save_pretrained(plain)
    assert not getattr(AutoTokenizer.from_pretrained(plain), "chat_template", None)
    with pytest.raises(PersonamineError) as info:
        LocalBackend(str(plain), device="cpu").complete([request("x")])
    assert str(info.value) == f"explainer model {str(plain)!r} has no chat template: use an instruct/chat model"
