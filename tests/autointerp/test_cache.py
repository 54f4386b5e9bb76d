"""The response cache: one JSON file per request digest, written atomically; what is put is what is got (marked as
cached, no request made); an absent or unreadable entry is asked again rather than trusted."""

from __future__ import annotations

import pytest

from personamine.autointerp.backend import Request, Response
from personamine.autointerp.cache import ResponseCache


def key_of(text: str) -> str:
    return Request.chat([{"role": "user", "content": text}], max_tokens=4).digest("model-a")


def test_put_then_get_gives_back_the_response(tmp_path):
    cache = ResponseCache(tmp_path / "explain")
    key = key_of("hello")
    response = Response(text="Feature fires on «cats» ✓", tokens=["Feature", " fires"],
                        logprobs=[[("Feature", -0.1), ("The", -2.5)], [(" fires", -0.01)]], attempts=3)
    cache.put(key, response)
    got = cache.get(key)
    assert got == Response(text=response.text, tokens=response.tokens, logprobs=response.logprobs, cached=True,
                           attempts=0)
    assert isinstance(got.logprobs[0][0], tuple)  # JSON lists come back as (token, log-probability) pairs
    file = tmp_path / "explain" / key[:2] / f"{key}.json"
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        file.relative_to(tmp_path).as_posix()]  # one file, under the key's first two characters, no temp file
    assert "«cats» ✓" in file.read_text(encoding="utf-8")  # stored as UTF-8, not escaped


def test_a_response_without_log_probabilities(tmp_path):
    cache = ResponseCache(tmp_path)
    cache.put("ab" + "0" * 62, Response(text="plain"))
    got = cache.get("ab" + "0" * 62)
    assert got.text == "plain" and got.tokens is None and got.logprobs is None and got.cached


def test_absent_or_damaged_entries_are_asked_again(tmp_path):
    cache = ResponseCache(tmp_path)
    key = key_of("x")
    assert cache.get(key) is None
    cache.put(key, Response(text="first"))
    file = tmp_path / key[:2] / f"{key}.json"
    for damaged in ('{"text": "cut', '{"tokens": null}', '{"text": "t", "logprobs": [[["a"]]]}',
                    '{"text": "t", "logprobs": [5]}', "", "\x00\x01"):
        file.write_text(damaged)
        assert cache.get(key) is None, damaged
    cache.put(key, Response(text="second"))  # a new answer replaces the damaged entry
    assert cache.get(key).text == "second"


@pytest.mark.parametrize("damaged", ["[1, 2]", "null", '"text"'])
def test_an_entry_that_is_json_but_not_an_object_is_asked_again(tmp_path, damaged):
    cache = ResponseCache(tmp_path)
    key = key_of("x")
    cache.put(key, Response(text="first"))
    (tmp_path / key[:2] / f"{key}.json").write_text(damaged)
    assert cache.get(key) is None


def test_keys_separate_models_and_settings(tmp_path):
    cache = ResponseCache(tmp_path)
    request = Request.chat([{"role": "user", "content": "same"}], max_tokens=4)
    other_model = request.digest("model-b")
    other_setting = Request.chat([{"role": "user", "content": "same"}], max_tokens=5).digest("model-a")
    cache.put(request.digest("model-a"), Response(text="a"))
    assert len({request.digest("model-a"), other_model, other_setting}) == 3
    assert cache.get(other_model) is None and cache.get(other_setting) is None
    assert cache.get(request.digest("model-a")).text == "a"
