"""The OpenAI-compatible HTTP backend against a real server on 127.0.0.1 serving a real (tiny, random) model:
plumbing and log-probability scoring, the cache, transient failures (retried), malformed answers (counted)."""

from __future__ import annotations

import math

import pytest
from chat_server import ChatServer, reference_probability

import personamine
from personamine.autointerp.backend import Request
from personamine.autointerp.openai_http import OpenAIBackend
from personamine.autointerp.scoring import answer_probabilities
from personamine.jobs.cli import main

SMALL = dict(features=[4, 28], n_explain=3, n_test=2, n_negatives=2, explanation_tokens=12, progress=False)


@pytest.fixture(autouse=True)
def _no_openai_env(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def test_backend_reads_what_the_server_sent(tiny_model_dir, monkeypatch):
    with ChatServer(tiny_model_dir) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        backend = OpenAIBackend(concurrency=2)  # base URL and key from the environment, model from /v1/models
        assert backend.model == "tiny-chat"
        requests = [Request.chat([{"role": "user", "content": f"hello {i}"}], max_tokens=5, top_logprobs=3)
                    for i in range(3)] + [Request.chat([{"role": "user", "content": "plain"}], max_tokens=4)]
        responses = backend.complete(requests)
        backend.close()
        assert server.authorization == "Bearer sk-test"
    by_text = {r["choices"][0]["message"]["content"]: r for r in server.sent}
    for response in responses[:3]:
        sent = by_text[response.text]["choices"][0]["logprobs"]["content"]
        assert response.error is None and response.attempts == 1
        assert response.tokens == [c["token"] for c in sent]
        assert response.logprobs == [[(a["token"], a["logprob"]) for a in c["top_logprobs"]] for c in sent]
    assert responses[3].logprobs is None and responses[3].text in by_text


def test_explain_over_http_scores_from_logprobs_and_caches(tiny_model_dir, tiny_mining_file, tmp_path):
    with ChatServer(tiny_model_dir) as server:
        kw = dict(backend="openai", base_url=server.url, cache_dir=str(tmp_path / "cache"), top_logprobs=600, **SMALL)
        out = personamine.explain(tiny_mining_file, output=str(tmp_path / "a.h5"), **kw)
        ex = personamine.read_explanations(out)
        posts = server.posts
        assert posts == ex.attrs["n_calls_sent"] == len(ex.calls) and ex.attrs["n_errors"] == 0
        assert ex.attrs["model"] == "tiny-chat"
        checked = 0
        for a in ex.answers[:14]:  # each recomputation is a full greedy decode without a cache
            call = ex.calls[a.call]
            assert call.kind == a.scorer and call.feature_id == a.feature_id
            expected = reference_probability(server.tok, server.model, call.messages, 8)
            if expected is None:
                assert a.probability is None
            else:
                assert a.probability == pytest.approx(expected, rel=1e-5)
                assert a.prediction == int(expected > 0.5)
                checked += 1
        assert checked >= 10
        # Scores are the arithmetic of the stored answers.
        for row, f in enumerate(ex.feature_ids.tolist()):
            for scorer in ("detection", "fuzzing"):
                mine = [a for a in ex.answers if a.feature_id == f and a.scorer == scorer]
                tp = sum(a.truth == 1 and a.prediction == 1 for a in mine)
                tn = sum(a.truth == 0 and a.prediction == 0 for a in mine)
                pos, neg = sum(a.truth == 1 for a in mine), sum(a.truth == 0 for a in mine)
                assert ex.scores[scorer]["balanced_accuracy"][row] == pytest.approx((tp / pos + tn / neg) / 2)
        # A rerun asks the server nothing and writes the same explanations and scores.
        again = personamine.read_explanations(personamine.explain(tiny_mining_file, output=str(tmp_path / "b.h5"),
                                                                  **kw))
        assert server.posts == posts and again.attrs["n_calls_sent"] == 0 and all(c.cached for c in again.calls)
    assert again.explanations == ex.explanations
    for scorer in ex.scores:
        for metric, values in ex.scores[scorer].items():
            assert values.tolist() == pytest.approx(again.scores[scorer][metric].tolist(), nan_ok=True), metric


def test_transient_failures_are_retried(tiny_model_dir, tiny_mining_file, tmp_path):
    # 2 answered 503, 1 hung up on, 1 held past the client's timeout (generous: a real answer under load must fit)
    with ChatServer(tiny_model_dir, fail_first=2, drop_next=1, hang_next=1, hang_seconds=8.0) as server:
        out = personamine.explain(tiny_mining_file, backend="openai", base_url=server.url, model="tiny-chat",
                                  cache_dir=str(tmp_path / "cache"), concurrency=2, timeout=4.0, retry_backoff=0.01,
                                  output=str(tmp_path / "x.h5"), **SMALL)
        ex = personamine.read_explanations(out)
        assert ex.attrs["n_errors"] == 0 and all(c.error is None for c in ex.calls)
        assert sum(c.attempts for c in ex.calls) == len(ex.calls) + 4
        assert server.posts == len(ex.calls) + 4


def test_malformed_answers_are_counted_not_fatal(tiny_model_dir, tiny_mining_file, tmp_path):
    with ChatServer(tiny_model_dir, malformed_every=3) as server:
        out = personamine.explain(tiny_mining_file, backend="openai", base_url=server.url, model="tiny-chat",
                                  cache_dir=str(tmp_path / "cache"), top_logprobs=0, output=str(tmp_path / "m.h5"),
                                  **SMALL)
        ex = personamine.read_explanations(out)
        assert server.posts == len(ex.calls)  # a malformed body is not retried: it would come back the same
    bad = [c for c in ex.calls if c.error is not None]
    assert len(bad) == server.posts // 3 and all(c.error.startswith("malformed response") for c in bad)
    assert ex.attrs["n_errors"] == len(bad)
    # A malformed call's texts are unanswered; with no log-probabilities, so are the random model's prose answers.
    for a in ex.answers:
        if ex.calls[a.call].error is not None:
            assert a.prediction is None and a.probability is None
        assert a.probability is None
    unanswered = sum(a.prediction is None for a in ex.answers)
    assert unanswered == ex.attrs["n_unanswered"] >= sum(ex.calls[a.call].error is not None for a in ex.answers) > 0
    for row, f in enumerate(ex.feature_ids.tolist()):
        for scorer in ("detection", "fuzzing"):
            mine = [a for a in ex.answers if a.feature_id == f and a.scorer == scorer]
            if mine:
                assert ex.scores[scorer]["n_unanswered"][row] == sum(a.prediction is None for a in mine)


def test_unreachable_and_rejecting_servers_fail_in_one_line(tiny_model_dir, tiny_mining_file, tmp_path, capsys):
    with pytest.raises(personamine.PersonamineError, match="cannot reach the explainer server"):
        personamine.explain(tiny_mining_file, backend="openai", base_url="http://127.0.0.1:9/v1", **SMALL)
    with ChatServer(tiny_model_dir, reject_all=True) as server:
        out = tmp_path / "never.h5"
        code = main(["explain", str(tiny_mining_file), "--backend", "openai", "--base-url", server.url, "--model",
                     "tiny-chat", "--features", "4", "--output", str(out), "--cache-dir", str(tmp_path / "c"),
                     "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not out.exists()
    assert err.startswith("personamine: error: every explanation request failed; the first: HTTP 400")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("listing", ["listed, same float", "listed, another float", "not listed"])
def test_p_yes_counts_the_generated_token_once(tiny_model_dir, listing):
    """Restated from the docs: at the answer position P(yes) sums the generated token's own ``logprob`` and every
    ``top_logprobs`` entry of another token. A ``top_logprobs`` entry with the generated token's text is that token
    again: it counts once, at the token's own ``logprob``, even when the server printed a different float for it
    (counting it twice would give (0.5 + 0.5 + 0.1) / 1.45 here); a generated token the server does not list is
    added."""
    own = math.log(0.5)
    again = {"listed, same float": [("1", own)], "listed, another float": [("1", round(own, 3))],
             "not listed": []}[listing]
    others = [("0", math.log(0.3)), (" yes", math.log(0.1)), ("No", math.log(0.05)), ("maybe", math.log(0.05))]

    def answer_one(reply: dict) -> None:  # a real completion, then its answer made "1" with these alternatives
        choice = reply["choices"][0]
        choice["message"]["content"] = "1"
        choice["logprobs"] = {"content": [{"token": "1", "logprob": own, "top_logprobs": [
            {"token": t, "logprob": lp} for t, lp in [*again, *others]]}]}

    with ChatServer(tiny_model_dir, edit=answer_one) as server:
        backend = OpenAIBackend(base_url=server.url, concurrency=1)
        (response,) = backend.complete([Request.chat([{"role": "user", "content": "Does it fire?"}], max_tokens=1,
                                                     top_logprobs=5)])
        backend.close()
    assert response.error is None and response.tokens == ["1"]
    assert response.logprobs == [[("1", own), *others]]
    assert answer_probabilities(response.tokens, response.logprobs, 1) == [pytest.approx(0.6 / 0.95)]
