"""The mining engine end to end on tiny real parts: exactness against brute force, shard invariance, resume."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from fixtures import FEATURES, SAE_LAYER, TIE, mine_kwargs, sae_file
from reference import load_texts, reference_topk

import personamine


def assert_matches_reference(res, ref, features):
    """Same window at every rank, or else a window whose reference score ties the expected one within 1e-5
    (batching changes float rounding, so near-equal scores may swap); scores and per-token values within 1e-5."""
    top_k = res.score.shape[1]
    for i, f in enumerate(features):
        everything = {(e.document, e.window_start): e for e in ref[f]}
        expected = ref[f][:top_k]
        got_n = int(np.sum(~np.isnan(res.score[i])))
        assert got_n == len(expected), f"feature {f}: {got_n} windows vs {len(expected)} in the reference"
        for k, e in enumerate(expected):
            key = (int(res.document[i, k]), int(res.window_start[i, k]))
            mined = everything.get(key)
            assert mined is not None, f"feature {f} rank {k}: {key} is not an activating window in the reference"
            if key != (e.document, e.window_start):
                assert abs(mined.score - e.score) <= TIE, f"feature {f} rank {k}: {key} vs {e.document, e.window_start}"
            assert abs(res.score[i, k] - e.score) <= TIE
            n = res.length[i, k]
            assert tuple(res.token_ids[i, k, :n].tolist()) == mined.tokens
            np.testing.assert_allclose(res.activations[i, k, :n], mined.activations, atol=TIE, rtol=0)


def assert_same_selection(a, b):
    """Equal selections; where windows tie within float rounding (identical contexts up to the peak token score
    the same but may round apart by an ulp in a different batch), their order may differ."""
    np.testing.assert_array_equal(np.isnan(a.score), np.isnan(b.score))
    np.testing.assert_allclose(a.score, b.score, atol=TIE)
    for i, k in np.argwhere((a.document != b.document) | (a.window_start != b.window_start)):
        window = (b.document[i, k], b.window_start[i, k])
        where = np.nonzero((a.document[i] == window[0]) & (a.window_start[i] == window[1]))[0]
        tied_with = a.score[i, where[0]] if where.size else a.score[i, -1]
        assert abs(tied_with - b.score[i, k]) <= TIE, f"feature row {i} rank {k}: {window} is not a tie"
    same = (a.document == b.document) & (a.window_start == b.window_start)
    np.testing.assert_array_equal(a.token_ids[same], b.token_ids[same])
    assert same.mean() > 0.9


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl):
    ae = sae_file(tiny_sae_dir)
    from transformers import AutoTokenizer

    bos = AutoTokenizer.from_pretrained(tiny_model_dir).bos_token_id
    return reference_topk(tiny_model_dir, ae, load_texts(tiny_corpus_jsonl), layer=SAE_LAYER, features=FEATURES,
                          ctx_len=16, top_k=None, prefix=[bos])


def test_topk_equals_brute_force_via_hub(tiny_model_dir, tiny_sae_repo, tiny_corpus_jsonl, reference, tmp_path):
    out = personamine.mine(**mine_kwargs(tiny_model_dir, tiny_sae_repo, tiny_corpus_jsonl, tmp_path))
    res = personamine.read_results(out)
    assert res.feature_ids.tolist() == FEATURES
    assert_matches_reference(res, reference, FEATURES)
    # Bad rows are skipped and counted, not crashed on.
    assert res.attrs["rows_skipped"] == 2
    assert res.attrs["n_documents"] == 62
    assert res.tokens_scored == res.counters["tokens_scored"] > 0
    # Stats agree with the kept examples: a feature's max is its best window's score.
    filled = ~np.isnan(res.score[:, 0])
    np.testing.assert_allclose(res.max[filled], res.score[filled, 0], rtol=0, atol=0)
    assert (res.histogram.sum(1) == res.active_tokens).all()


def test_batch_size_does_not_change_selection(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path):
    one = personamine.read_results(personamine.mine(
        **mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp_path / "a", n_shards=1)))
    seven = personamine.read_results(personamine.mine(
        **mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp_path / "b", n_shards=7,
                      batch_tokens=96)))
    assert_same_selection(one, seven)
    np.testing.assert_array_equal(one.active_tokens, seven.active_tokens)
    np.testing.assert_array_equal(one.histogram, seven.histogram)
    assert one.tokens_scored == seven.tokens_scored


def test_same_run_twice_is_byte_identical(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path):
    paths = [personamine.mine(**mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp_path / d,
                                            n_shards=3)) for d in ("x", "y")]

    def as_bytes(dataset):
        value = dataset[()]
        return repr(value.tolist()).encode() if value.dtype == object else value.tobytes()

    def datasets(path):
        out = {}
        with h5py.File(path) as f:
            f.visititems(lambda name, obj: out.__setitem__(name, as_bytes(obj))
                         if isinstance(obj, h5py.Dataset) else None)
        return out

    a, b = datasets(paths[0]), datasets(paths[1])
    assert a.keys() == b.keys() and len(a) > 10
    assert [k for k in a if a[k] != b[k]] == []


def test_dedupe_keeps_one_copy_of_identical_windows(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path):
    res = personamine.read_results(personamine.mine(
        **mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp_path, top_k=20)))
    for i in range(len(res.feature_ids)):
        rows = {tuple(res.token_ids[i, k].tolist()) for k in range(20) if not np.isnan(res.score[i, k])}
        assert len(rows) == int(np.sum(~np.isnan(res.score[i])))
    raw = personamine.read_results(personamine.mine(
        **mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp_path / "raw", top_k=20,
                      dedupe=False)))
    dup = [i for i in range(len(raw.feature_ids))
           if len({tuple(raw.token_ids[i, k].tolist()) for k in range(20) if not np.isnan(raw.score[i, k])})
           < int(np.sum(~np.isnan(raw.score[i])))]
    assert dup, "the duplicated document should produce duplicate windows when dedupe is off"


def test_all_features_mode_equals_sae_encode(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path):
    from transformers import AutoTokenizer

    ae = sae_file(tiny_sae_dir)
    bos = AutoTokenizer.from_pretrained(tiny_model_dir).bos_token_id
    texts = load_texts(tiny_corpus_jsonl)[:20]
    ref = reference_topk(tiny_model_dir, ae, texts, layer=SAE_LAYER, features=list(range(256)), ctx_len=16,
                         top_k=None, prefix=[bos])
    shards = []
    res = personamine.read_results(personamine.mine(
        **mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp_path, features="all", top_k=3,
                      feature_chunk=48, max_documents=20, n_shards=2), on_shard_done=shards.append))
    assert res.feature_ids.tolist() == list(range(256))
    assert_matches_reference(res, ref, list(range(256)))
    # In memory each window is stored once, however many features (in however many chunks) keep it.
    for shard in shards:
        for buffer in (shard.buffer, shard.samples):
            w = buffer.entries.windows
            assert len(buffer) > 3 * len(w) > 0
            assert np.unique(np.stack([w.document, w.window_start]), axis=1).shape[1] == len(w)


def test_no_bos_tokenizer_gets_a_two_token_sink_prefix(tiny_model_dir_nobos, tiny_sae_dir, tiny_corpus_jsonl,
                                                        tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir_nobos)
    prefix = [tok.unk_token_id, tok.bos_token_id]
    ae = sae_file(tiny_sae_dir)
    ref = reference_topk(tiny_model_dir_nobos, ae, load_texts(tiny_corpus_jsonl), layer=SAE_LAYER,
                         features=FEATURES, ctx_len=16, top_k=None, prefix=prefix)
    res = personamine.read_results(personamine.mine(
        **mine_kwargs(tiny_model_dir_nobos, str(tiny_sae_dir), tiny_corpus_jsonl, tmp_path)))
    assert res.attrs["sink_prefix"].tolist() == prefix
    assert_matches_reference(res, ref, FEATURES)
    # No content token sits at position 0 and the prefix is never scored.
    filled = ~np.isnan(res.score)
    assert (res.activations[..., :2][filled] == 0).all()
    assert (res.token_ids[..., 0][filled] == prefix[0]).all()


def test_norm_filter_drops_outlier_tokens_and_counts_them(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl,
                                                          tmp_path):
    from transformers import AutoTokenizer

    ae = sae_file(tiny_sae_dir)
    bos = AutoTokenizer.from_pretrained(tiny_model_dir).bos_token_id
    # A tight multiple makes the filter bite on this random model; the reference applies the same rule.
    ref = reference_topk(tiny_model_dir, ae, load_texts(tiny_corpus_jsonl), layer=SAE_LAYER, features=FEATURES,
                         ctx_len=16, top_k=None, prefix=[bos], norm_filter=1.05)
    res = personamine.read_results(personamine.mine(
        **mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp_path, norm_filter=1.05)))
    assert res.attrs["tokens_norm_filtered"] > 0
    assert_matches_reference(res, ref, FEATURES)
