"""personamine.screen end to end on the tiny model: the projection difference equals an independent computation;
1 and N shards, local and Ray, give byte-identical datasets; an interrupted run resumes to the same file and a
changed one is refused; bad input is one line and writes nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import ray_helpers  # noqa: I001  (first: it configures Ray's token auth before anything imports ray)
import torch
from fixtures import (
    SAE_LAYER,
    TINY_HIDDEN_SIZE,
    TINY_NUM_LAYERS,
    personamine_cli,
    screen_conversations,
    write_screen_corpus,
)
from ray_helpers import actor_threads, assert_identical_datasets
from transformers import AutoModelForCausalLM, AutoTokenizer

import personamine
from personamine.config import DEFAULT_DATE
from personamine.corpus.conversations import ChatRenderer
from personamine.errors import PersonamineError
from personamine.files.screen import read_screening

MAX_NEW = 6


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("screen-in")
    corpus = write_screen_corpus(tmp / "chat.jsonl")
    vectors = np.random.default_rng(1).standard_normal((2, TINY_HIDDEN_SIZE)).astype(np.float32)
    directions = tmp / "dirs.npy"
    np.save(directions, vectors)
    (tmp / "dirs.json").write_text(json.dumps({"names": ["persona", "other"],
                                               "directions": {"persona": {"layer": SAE_LAYER}}}))
    return corpus, directions, vectors


def kwargs(model, inputs, out, **extra):
    corpus, directions, _ = inputs
    base = dict(model=str(model), directions=str(directions), names=["persona", "other"], layer=SAE_LAYER,
                corpus=str(corpus), unit_bytes=1500, max_new_tokens=MAX_NEW, batch_size=3, output=str(out),
                progress=False)
    return {**base, **extra}


@pytest.fixture(scope="module")
def one_shard(tiny_model_dir, inputs, tmp_path_factory):
    with actor_threads(1):  # a Ray actor's thread count, so the Ray run below can compare bytes
        return personamine.screen(**kwargs(tiny_model_dir, inputs, tmp_path_factory.mktemp("one") / "s.h5",
                                           n_shards=1))


def test_difference_equals_an_independent_computation(one_shard, tiny_model_dir, inputs):
    _, _, vectors = inputs
    got = read_screening(one_shard)
    rows = screen_conversations()
    samples = [i for i, turns in enumerate(rows) if len(turns) > 1 and turns[-1]["role"] == "assistant"]
    assert got.document.tolist() == samples and got.attrs["rows_not_samples"] == len(rows) - len(samples)
    assert any(len(rows[i]) > 2 for i in samples)  # multi-turn rows: the last assistant turn, in its context
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    renderer = ChatRenderer(tok, date_string=DEFAULT_DATE, generation_prompt=True)
    v = torch.from_numpy(vectors.T).double()
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    stop = {tok.eos_token_id, *([model.generation_config.eos_token_id] if model.generation_config.eos_token_id
                                is not None else [])}
    for k, i in enumerate(samples):
        turns = rows[i]
        prompt = renderer.render(turns[:-1]).ids
        response = tok(turns[-1]["content"], add_special_tokens=False)["input_ids"]
        with torch.no_grad():  # the model's own greedy response, one prompt at a time, no padding
            ids = prompt
            own: list[int] = []
            for _ in range(MAX_NEW):
                nxt = int(model(torch.tensor([ids])).logits[0, -1].argmax())
                if nxt in stop:
                    break
                own.append(nxt)
                ids = ids + [nxt]
        assert got.response[k] == turns[-1]["content"] and got.own[k] == tok.decode(own, skip_special_tokens=True)

        def projection(resp: list[int], prompt: list[int] = prompt) -> np.ndarray:
            with torch.no_grad():
                h = model(torch.tensor([prompt + resp]), output_hidden_states=True).hidden_states[SAE_LAYER + 1][0]
            return (h[len(prompt):].double() @ v).mean(0).numpy() / norms

        want_r, want_o = projection(response), projection(own) if own else np.full(2, np.nan)
        np.testing.assert_allclose(got.projection_response[k], want_r, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got.projection_own[k], want_o, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got.difference[k], want_r - want_o, rtol=1e-5, atol=1e-5)
    assert got.order[0].tolist() == np.argsort(-got.difference[:, 0], kind="stable").tolist()


def test_n_shards_and_ray_give_identical_datasets(one_shard, tiny_model_dir, inputs, tmp_path):
    with actor_threads(1):
        local = personamine.screen(**kwargs(tiny_model_dir, inputs, tmp_path / "n.h5", n_shards=3))
    assert_identical_datasets(one_shard, local)
    with ray_helpers.local_ray(num_cpus=2):
        ray = personamine.screen(**kwargs(tiny_model_dir, inputs, tmp_path / "r.h5", n_shards=4, backend="ray",
                                          num_actors=2))
    assert_identical_datasets(one_shard, ray)


def test_interrupted_run_resumes_to_the_same_file(one_shard, tiny_model_dir, inputs, tmp_path):
    kw = kwargs(tiny_model_dir, inputs, tmp_path / "s.h5", n_shards=4)
    done: list[str] = []

    def stop_after_two(result):
        done.append(result.shard.name)
        if len(done) == 2:
            raise Interrupt

    with actor_threads(1), pytest.raises(Interrupt):
        personamine.screen(on_shard_done=stop_after_two, **kw)
    assert not (tmp_path / "s.h5").exists()
    with pytest.raises(PersonamineError, match="holds a different run .changed: max_new_tokens"):
        personamine.screen(**{**kw, "max_new_tokens": MAX_NEW + 1})
    resumed: list[str] = []
    with actor_threads(1):
        out = personamine.screen(on_shard_done=lambda r: resumed.append(r.shard.name), **kw)
    assert len(resumed) == 2 and not set(resumed) & set(done)  # nothing screened twice
    assert_identical_datasets(one_shard, out)


@pytest.mark.parametrize("bad, message", [
    ({"directions": "wide"}, "is 65 wide, but the model's residual stream is 64"),
    ({"layer": 99}, "layer 99 is out of range"),
    ({"names": ["persona", "nobody"]}, "has no direction 'nobody'; it has other, persona"),
    ({"corpus": "users"}, "has no sample to screen: none of its 3 rows is a conversation whose last turn is an "
                          "assistant response"),
])
def test_bad_input_is_one_line_and_writes_nothing(tiny_model_dir, inputs, tmp_path, bad, message):
    if bad.get("directions") == "wide":
        np.save(tmp_path / "wide.npy", np.ones((1, TINY_HIDDEN_SIZE + 1), np.float32))
        bad = {"directions": str(tmp_path / "wide.npy"), "names": None}
    if bad.get("corpus") == "users":
        bad = {"corpus": str(write_screen_corpus(tmp_path / "users.jsonl", [[{"role": "user", "content": "Hi."}]] * 3))}
    out = tmp_path / "out" / "s.h5"
    with pytest.raises(PersonamineError, match=message) as err:
        personamine.screen(**kwargs(tiny_model_dir, inputs, out, **bad))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_cli_bad_input_exit_2(tiny_model_dir, inputs, tmp_path):
    corpus, directions, _ = inputs
    out = tmp_path / "s.h5"
    done = personamine_cli("screen", "--model", str(tiny_model_dir), "--directions", str(directions), "--layer", "99",
                           "--corpus", str(corpus), "--output", str(out))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"personamine: error: layer 99 is out of range: model {str(tiny_model_dir)!r} has {TINY_NUM_LAYERS} layers "
        f"(0..{TINY_NUM_LAYERS - 1})"]
    assert not out.exists()


def test_a_sample_longer_than_the_model_is_counted_not_screened(tiny_model_dir, inputs, tmp_path):
    """A conversation whose prompt and response pass the model's positions (2,048 for the tiny model) is no sample:
    counted in rows_too_long, the others screened."""
    rows = [[{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am an assistant."}],
            [{"role": "user", "content": "Tell me everything."},
             {"role": "assistant", "content": " ".join(["the cat sleeps and you feel tired"] * 400)}],
            [{"role": "user", "content": "What is a cat?"}, {"role": "assistant", "content": "A small animal."}]]
    corpus = write_screen_corpus(tmp_path / "long.jsonl", rows)
    res = read_screening(personamine.screen(**kwargs(tiny_model_dir, inputs, tmp_path / "s.h5",
                                                      corpus=str(corpus))))
    assert res.attrs["rows_too_long"] == 1 and res.attrs["n_samples"] == 2
    assert sorted(res.document.tolist()) == [0, 2]
