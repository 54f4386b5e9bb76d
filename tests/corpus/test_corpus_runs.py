"""Mining on the unit layer: byte-identical output for any grouping of units, budgets that choose exactly the
documents a serial count chooses (across unit and file boundaries, after a resume), and a changed corpus refused."""

from __future__ import annotations

import fixtures as fx
import numpy as np
import pytest
from fixtures import mine_kwargs
from ray_helpers import assert_identical_datasets
from transformers import AutoTokenizer

import personamine
from personamine.errors import PersonamineError


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    return {fmt: fx.write_corpus_files(root / fmt, fmt, n_files=3, rows_per_group=7) for fmt in ("parquet", "jsonl",
                                                                                                  "txt")}


def run(model, sae, corpus, tmp_path, name, **extra):
    extra.setdefault("unit_bytes", 700)
    return personamine.mine(**mine_kwargs(model, str(sae), corpus, tmp_path / name, **extra))


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "txt"])
def test_any_grouping_of_units_gives_byte_identical_output(tiny_model_dir, tiny_sae_dir, corpora, tmp_path, fmt):
    outs = [run(tiny_model_dir, tiny_sae_dir, corpora[fmt], tmp_path, f"s{n}", n_shards=n) for n in (1, 3, 7)]
    res = personamine.read_results(outs[0])
    assert res.attrs["n_units"] >= 9 and res.attrs["n_documents"] == 60
    for other in outs[1:]:
        assert_identical_datasets(outs[0], other)


def serial_cut(tokenizer, texts: list[str], max_documents: int | None, max_tokens: int | None) -> int:
    counts = [len(tokenizer(t, add_special_tokens=False, split_special_tokens=True)["input_ids"]) for t in texts]
    n = len(texts) if max_documents is None else min(len(texts), max_documents)
    if max_tokens is not None:
        n = min(n, int(np.searchsorted(np.cumsum(counts), max_tokens, side="left")) + 1)
    return n


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_budgets_choose_what_a_serial_count_chooses(tiny_model_dir, tiny_sae_dir, corpora, tmp_path, fmt):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = fx.corpus_texts()
    # 23 documents cross a file (20 rows each) and a row group (7 rows); the token budgets land mid-unit.
    total = serial_cut(tokenizer, texts, None, None)
    sums = np.cumsum([len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts])
    for max_documents, max_tokens in [(23, None), (None, int(sums[26])), (None, int(sums[26]) + 1), (40, 700)]:
        n = serial_cut(tokenizer, texts, max_documents, max_tokens)
        assert 0 < n < total
        outs = [run(tiny_model_dir, tiny_sae_dir, corpora[fmt], tmp_path, f"b{max_documents}-{max_tokens}-{s}",
                    max_documents=max_documents, max_tokens=max_tokens, n_shards=s) for s in (None, 4)]
        res = personamine.read_results(outs[0])
        assert res.attrs["n_documents"] == n, (max_documents, max_tokens)
        assert res.document[~np.isnan(res.score)].max() < n
        assert_identical_datasets(outs[0], outs[1])
        # The same documents chosen by count: the same file.
        assert_identical_datasets(outs[0], run(tiny_model_dir, tiny_sae_dir, corpora[fmt], tmp_path,
                                               f"n{max_documents}-{max_tokens}", max_documents=n))


class Stop(Exception):
    pass


def test_a_budgeted_run_resumes_and_a_changed_corpus_is_refused(tiny_model_dir, tiny_sae_dir, corpora, tmp_path):
    budget = dict(max_tokens=1500, n_shards=None)
    whole = run(tiny_model_dir, tiny_sae_dir, corpora["jsonl"], tmp_path, "whole", **budget)
    seen: list[str] = []

    def stop_after_three(result):
        seen.append(result.shard.name)
        if len(seen) == 3:
            raise Stop

    with pytest.raises(Stop):
        personamine.mine(**mine_kwargs(tiny_model_dir, str(tiny_sae_dir), corpora["jsonl"], tmp_path / "r",
                                       unit_bytes=700, **budget), on_shard_done=stop_after_three)
    again: list[str] = []
    resumed = personamine.mine(**mine_kwargs(tiny_model_dir, str(tiny_sae_dir), corpora["jsonl"], tmp_path / "r",
                                             unit_bytes=700, **budget), on_shard_done=lambda r: again.append(
        r.shard.name))
    assert not set(seen) & set(again)  # nothing finished was mined again
    assert_identical_datasets(whole, resumed)

    changed = tmp_path / "changed"
    changed.mkdir()
    for src in sorted(corpora["jsonl"].iterdir()):
        (changed / src.name).write_bytes(src.read_bytes())
    kwargs = mine_kwargs(tiny_model_dir, str(tiny_sae_dir), changed, tmp_path / "c", unit_bytes=700)
    with pytest.raises(Stop):
        personamine.mine(**kwargs, on_shard_done=lambda r: (_ for _ in ()).throw(Stop()))
    with (changed / "part-01.jsonl").open("a") as handle:
        handle.write('{"text": "one more document"}\n')
    with pytest.raises(PersonamineError, match=r"the corpus changed since .*: file '.*part-01.jsonl' changed size"):
        personamine.mine(**kwargs)
    (changed / "part-03.jsonl").write_text('{"text": "new file"}\n')
    with pytest.raises(PersonamineError, match=r"file '.*part-03.jsonl' was added"):
        personamine.mine(**kwargs)


def test_a_pretokenized_corpus_equals_its_text(tiny_model_dir, tiny_sae_dir, tmp_path):
    """Rows of token ids (``tokens_column``) are mined as they are: the same file as the texts they tokenize to;
    a row that is not a list of ids is an error naming it, or skipped and counted."""
    import json

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = fx.corpus_texts()
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    ids = [tok(t, add_special_tokens=False, split_special_tokens=True)["input_ids"] for t in texts]
    (tmp_path / "i.jsonl").write_text("".join(json.dumps({"ids": i}) + "\n" for i in ids))
    # One unit each: the two files differ in bytes, so byte-range units (and the sampling keys) would differ.
    text = run(tiny_model_dir, tiny_sae_dir, tmp_path / "t.jsonl", tmp_path, "t", unit_bytes=1 << 20)
    assert_identical_datasets(text, run(tiny_model_dir, tiny_sae_dir, tmp_path / "i.jsonl", tmp_path, "i",
                                        tokens_column="ids", unit_bytes=1 << 20))
    (tmp_path / "bad.jsonl").write_text(json.dumps({"ids": [5, 6]}) + "\n" + json.dumps({"ids": "oops"}) + "\n")
    with pytest.raises(PersonamineError, match="row 1: 'ids' is not a list of token ids"):
        run(tiny_model_dir, tiny_sae_dir, tmp_path / "bad.jsonl", tmp_path, "bad", tokens_column="ids")
