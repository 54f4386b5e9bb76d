"""Corpus sources and limits: local formats, directories, max_documents / max_tokens, bad rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_mine import mine_kwargs

import personamine
from personamine.errors import PersonamineError
from personamine.shards.corpus import Corpus, CorpusSpec


def test_jsonl_parquet_and_text_give_the_same_documents(tiny_corpus_jsonl, tiny_corpus_parquet, tmp_path):
    texts = [json.loads(line)["text"] for line in tiny_corpus_jsonl.read_text().splitlines()]
    good = [t for t in texts if isinstance(t, str)]
    txt = tmp_path / "c.txt"
    txt.write_text("\n".join(good) + "\n")
    assert list(Corpus(CorpusSpec(str(tiny_corpus_parquet))).texts(0, 100)) == good
    assert list(Corpus(CorpusSpec(str(txt))).texts(0, 100)) == good
    jsonl = Corpus(CorpusSpec(str(tiny_corpus_jsonl)))
    assert list(jsonl.texts(0, len(jsonl))) == texts
    streamed = Corpus(CorpusSpec(str(tiny_corpus_jsonl), streaming=True))
    assert streamed.streaming and list(streamed.texts(3, 9)) == texts[3:9]
    assert streamed.count_documents() == len(texts)


def test_directory_and_glob(tiny_corpus_parquet, tmp_path):
    d = tmp_path / "dir"
    d.mkdir()
    (d / "a.parquet").write_bytes(tiny_corpus_parquet.read_bytes())
    (d / "b.parquet").write_bytes(tiny_corpus_parquet.read_bytes())
    assert Corpus(CorpusSpec(str(d))).count_documents() == 120
    assert Corpus(CorpusSpec(str(d / "*.parquet"))).count_documents() == 120
    with pytest.raises(PersonamineError, match="matches no files"):
        Corpus(CorpusSpec(str(d / "*.jsonl")))


def test_limits(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path):
    res = personamine.read_results(personamine.mine(
        **mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp_path / "d", max_documents=7)))
    assert res.attrs["n_documents"] == 7 and (res.document[~np.isnan(res.score)] < 7).all()
    res = personamine.read_results(personamine.mine(
        **mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp_path / "t", max_tokens=300)))
    # Whole documents up to the one that reaches the budget.
    assert 300 <= res.counters["tokens_fed"] - res.counters["n_windows"] < 300 + 600
    assert res.attrs["n_documents"] < 62
