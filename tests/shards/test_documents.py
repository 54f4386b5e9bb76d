"""A document too long to tokenize whole (a text, a conversation's rendering, a list of token ids) is cut into
bounded pieces and windowed as they come: the windows are exactly those of the whole-document path, and the
document is counted in ``documents_chunked``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures import conversations, decoder_fit_texts

from personamine.corpus import CorpusSpec, open_manifest
from personamine.corpus.conversations import ChatRenderer
from personamine.merge.stats import FeatureStats
from personamine.shards import documents
from personamine.shards.documents import UnitDocuments, UnitTally


def windows_of(tokenizer, corpus, column, **kwargs):
    manifest = open_manifest(CorpusSpec(str(corpus), column=column))
    docs = UnitDocuments(tokenizer=tokenizer, prefix=[1], ctx_len=24, column=column, skip_malformed=False,
                         stride=kwargs.pop("stride", 10), **kwargs)
    counters = FeatureStats.empty(0).counters
    got = [w for u in range(len(manifest)) for w in docs.windows(manifest.ref(u), UnitTally(u), counters)]
    return got, counters["documents_chunked"]


def assert_same_windows(got, want):
    assert len(got) == len(want) > 0
    for a, b in zip(got, want, strict=True):
        assert (a.document, a.start, a.score_from) == (b.document, b.start, b.score_from)
        np.testing.assert_array_equal(a.tokens, b.tokens)
        np.testing.assert_array_equal(a.roles, b.roles)
        # each token's assistant turn (per-turn scores), carried across pieces: conversations only
        assert (a.turns is None) == (b.turns is None)
        if a.turns is not None:
            np.testing.assert_array_equal(a.turns, b.turns)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.mark.parametrize("suffix", ["jsonl", "txt"])
def test_a_long_text_streamed_by_its_reader_gives_the_whole_texts_windows(tokenizer, tmp_path, monkeypatch, suffix):
    from personamine.corpus.readers import jsonl, lines

    texts = ["A short one.", "  ".join(decoder_fit_texts(40)), "Another short one."]
    corpus = tmp_path / f"c.{suffix}"
    corpus.write_text("".join((json.dumps({"text": t}) if suffix == "jsonl" else t) + "\n" for t in texts))
    want, chunked = windows_of(tokenizer, corpus, "text")
    assert chunked == 0
    monkeypatch.setattr(documents, "LONG_TEXT_CHARS", 500)
    monkeypatch.setattr(lines, "LONG_LINE_BYTES", 1000)
    monkeypatch.setattr(lines, "BLOCK_BYTES", 333)
    monkeypatch.setattr(jsonl, "_SPAN_CHARS", 200)
    monkeypatch.setattr(jsonl, "SHORT_STRING_CHARS", 100)
    got, chunked = windows_of(tokenizer, corpus, "text")
    assert chunked == 1
    assert_same_windows(got, want)


def test_a_long_conversation_is_rendered_in_pieces_with_the_same_windows_and_roles(tokenizer, tmp_path, monkeypatch):
    rows = conversations()
    rows.append([{"role": "user", "content": " ".join(decoder_fit_texts(10))},
                 {"role": "assistant", "content": "\n\n".join(decoder_fit_texts(30))}])
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"messages": turns}) + "\n" for turns in rows))
    renderer = ChatRenderer(tokenizer)
    want, chunked = windows_of(tokenizer, corpus, "messages", renderer=renderer)
    assert chunked == 0
    assert {int(r) for w in want for r in w.roles} >= {1, 2}  # user and assistant tokens both present
    monkeypatch.setattr(documents, "LONG_TEXT_CHARS", 300)
    got, chunked = windows_of(tokenizer, corpus, "messages", renderer=renderer)
    assert chunked == sum(len(renderer.layout(turns)[0]) > 300 for turns in rows) >= 2
    assert_same_windows(got, want)
    assert max(int(w.turns.max()) for w in got) >= 1  # documents with several assistant turns were streamed


@pytest.mark.parametrize("stride", [None, 7])
def test_a_long_token_list_is_windowed_in_slices(tokenizer, tmp_path, monkeypatch, stride):
    rng = np.random.default_rng(0)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"ids": rng.integers(3, 300, n).tolist()}) + "\n" for n in (5, 400, 23)))
    want, chunked = windows_of(tokenizer, corpus, "ids", pretokenized=True, stride=stride)
    monkeypatch.setattr(documents, "LONG_TOKENS", 17)
    got, chunked_now = windows_of(tokenizer, corpus, "ids", pretokenized=True, stride=stride)
    assert (chunked, chunked_now) == (0, 2)
    assert_same_windows(got, want)
