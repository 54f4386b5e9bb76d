"""Long windows with real preceding context, display spans and role-aware scoring, against the brute-force reference
(each fed window alone through the full model, full ``sae.encode``): text and conversation corpora, ctx 64 and
1,024, one shard and several."""

from __future__ import annotations

import json

import fixtures as fx
import numpy as np
import pytest
from fixtures import SAE_LAYER, TIE
from ray_helpers import assert_identical_datasets
from reference import ref_docs, reference_mine
from transformers import AutoTokenizer

import personamine
from personamine.roles import ROLE, ROLES

FEATURES = list(range(0, 256, 9))


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("long")
    text = root / "long.jsonl"
    texts = fx.long_texts() + ["I think so.", "You are a helpful assistant and you answer every question."]
    text.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    chat = fx.write_chat_corpus_jsonl(root / "chat.jsonl")
    return {"text": (text, texts), "chat": (chat, fx.conversations())}


def assert_equal_to_reference(res, ref, features, example_len):
    """Same windows (or score ties within float rounding), same spans, roles and per-token values."""
    width = res.token_ids.shape[2]
    assert width == min(example_len, int(res.attrs["ctx_len"]))
    checked = 0
    for i, f in enumerate(features):
        everything = {(e.document, e.window_start): e for e in ref[f]}
        expected = ref[f][: res.score.shape[1]]
        assert int(np.sum(~np.isnan(res.score[i]))) == len(expected), f
        for k, e in enumerate(expected):
            key = (int(res.document[i, k]), int(res.window_start[i, k]))
            mined = everything[key]
            if key != (e.document, e.window_start):
                assert abs(mined.score - e.score) <= TIE
            assert abs(res.score[i, k] - mined.score) <= TIE
            n = int(res.length[i, k])
            assert int(res.span_start[i, k]) == mined.span_start, (f, k)
            assert tuple(res.token_ids[i, k, :n].tolist()) == mined.tokens
            assert tuple(res.roles[i, k, :n].tolist()) == mined.roles
            np.testing.assert_allclose(res.activations[i, k, :n], mined.activations, atol=TIE, rtol=0)
            checked += 1
    assert checked > 20


def assert_stats_equal(res, stats, features):
    for i, f in enumerate(features):
        assert res.active_tokens[i] == stats.active.get(f, 0)
        # Exact sums: the engine's is the exact real sum of its float32 values, the reference's a math.fsum.
        assert res.activation_sum[i] == pytest.approx(stats.exact_sum(f), rel=1e-6, abs=1e-6)
        assert abs(res.max[i] - stats.max.get(f, 0.0)) <= TIE
        for r, name in enumerate(ROLES):
            assert res.active_tokens_by_role[i, r] == stats.role_active.get((f, r), 0), (f, name)
    assert res.tokens_scored == stats.tokens_scored
    assert res.tokens_scored_by_role.tolist() == [stats.role_scored.get(r, 0) for r in range(len(ROLES))]


CASES = {
    "text-1024": dict(kind="text", ctx_len=1024, stride=256, score_roles=None),
    "text-64-overlap": dict(kind="text", ctx_len=64, stride=24, score_roles=None),
    "chat-64": dict(kind="chat", ctx_len=64, stride=None, score_roles=["assistant"]),
    "chat-1024": dict(kind="chat", ctx_len=1024, stride=512, score_roles=["user", "assistant"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_windows_spans_and_roles_equal_brute_force(case, corpora, tiny_model_dir, tiny_sae_dir, tmp_path):
    c = CASES[case]
    path, rows = corpora[c["kind"]]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ae = fx.sae_file(tiny_sae_dir)
    roles = tuple(ROLE[r] for r in (c["score_roles"] or ("text", "system", "user", "assistant")))
    ref, stats = reference_mine(tiny_model_dir, ae, ref_docs(tiny_model_dir, c["kind"], rows), layer=SAE_LAYER,
                                features=FEATURES, ctx_len=c["ctx_len"], prefix=[tok.bos_token_id],
                                stride=c["stride"], example_len=32, score_roles=roles)
    kwargs = dict(model=str(tiny_model_dir), layer=SAE_LAYER, sae=str(tiny_sae_dir), corpus=str(path),
                  features=FEATURES, ctx_len=c["ctx_len"], stride=c["stride"], example_len=32, top_k=5,
                  score_roles=c["score_roles"], unit_bytes=2000, progress=False,
                  messages_column="messages" if c["kind"] == "chat" else None)
    one = personamine.mine(**kwargs, n_shards=1, output=str(tmp_path / "one.h5"))
    res = personamine.read_results(one)
    assert_equal_to_reference(res, ref, FEATURES, 32)
    assert_stats_equal(res, stats, FEATURES)
    assert_identical_datasets(one, personamine.mine(**kwargs, n_shards=3, output=str(tmp_path / "three.h5")))
    if c["score_roles"] == ["assistant"]:
        filled = ~np.isnan(res.score)
        peak_roles = [int(res.roles[i, k, int(np.argmax(res.activations[i, k]))]) for i, k in np.argwhere(filled)]
        assert set(peak_roles) == {ROLE["assistant"]}  # only assistant tokens ever score
        assert res.tokens_scored_by_role[ROLE["user"]] == 0 < res.tokens_seen_by_role[ROLE["user"]]
