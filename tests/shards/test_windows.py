"""Windowing: every document token is scored exactly once, never at position 0, with the promised context before it;
special and template tokens never."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures import SAE_LAYER
from transformers import AutoTokenizer

from personamine.merge.entries import TOKEN_FILL
from personamine.model.loading import load_model
from personamine.model.prompts import sink_prefix_ids, special_token_ids
from personamine.roles import ROLE
from personamine.shards.windows import Document, build_batch, capture_windows, cut_windows, pack_batches, scored_tokens


def cut(uid, ids, prefix, ctx_len, stride=None, roles=None, rendered=False):
    return list(cut_windows(Document(uid, ids, roles, rendered), prefix, ctx_len, stride))


def build(rows, ctx_len, **kw):
    return build_batch(rows, ctx_len=ctx_len, pad_id=0, special_ids=np.array([0, 1]), device=torch.device("cpu"),
                       **kw)


@pytest.mark.parametrize("n_tokens", [0, 1, 13, 14, 15, 100])
def test_windows_cover_each_token_once(n_tokens):
    prefix = [1, 2]
    ids = list(range(100, 100 + n_tokens))
    windows = cut(3, ids, prefix, ctx_len=16)
    seen = [t for w in windows for t in w.tokens[2:].tolist()]
    assert seen == ids
    assert all(w.tokens[:2].tolist() == prefix and w.tokens.size <= 16 and w.score_from == 2 for w in windows)
    assert [w.start for w in windows] == list(range(0, n_tokens, 14))


@pytest.mark.parametrize("n_tokens, stride, rendered", [(100, 5, False), (100, 14, False), (37, 1, False),
                                                        (100, 7, True), (16, 3, True)])
def test_overlapping_windows_score_each_token_once_after_real_context(n_tokens, stride, rendered):
    """Restated from the README: window 0 scores everything it holds; window j scores the next `stride` tokens,
    fed after the ctx_len - p - stride tokens before them."""
    prefix, ctx_len = [1, 2], 16
    ids = list(range(100, 100 + n_tokens))
    windows = cut(0, ids, prefix, ctx_len, stride, rendered=rendered)
    scored = [t for w in windows for t in w.tokens[w.score_from:].tolist()]
    assert scored == ids  # each token exactly once, in order
    for w in windows:
        assert w.tokens.size <= ctx_len
        body = w.tokens[len(prefix):] if (w.start > 0 or not rendered) else w.tokens
        assert body.tolist() == ids[w.start:w.start + body.size]  # real, consecutive document tokens
        first_scored = w.start + (w.score_from - (w.tokens.size - body.size))
        assert w.score_from - (w.tokens.size - body.size) == min(first_scored, ctx_len - len(prefix) - stride) or (
            w is windows[0])  # as much preceding context as the rule gives (all of it near the start)
        assert (w.roles[:w.tokens.size - body.size] == ROLE["prefix"]).all()
    if rendered:
        assert windows[0].tokens.tolist() == ids[:ctx_len] and windows[0].score_from == 0


def test_batches_mask_prefix_padding_special_ids_and_roles():
    windows = cut(0, [5, 6, 7, 0, 8], [1], ctx_len=4) + cut(1, [9], [1], ctx_len=4)
    batch = build([[w] for w in windows], 4)
    assert batch.segment is None  # one window per row: plain right padding
    assert batch.input_ids.tolist() == [[1, 5, 6, 7], [1, 0, 8, 0], [1, 9, 0, 0]]
    assert batch.region.tolist() == [[False, True, True, True], [False, True, True, False],
                                     [False, True, False, False]]
    # A real token with the pad/special id (id 0 at doc 0 offset 3) is content but never scored.
    assert batch.special.tolist() == [[False] * 4, [False, True, False, False], [False] * 4]
    assert batch.windows.token_ids[2].tolist() == [1, 9, TOKEN_FILL, TOKEN_FILL]
    # Roles: a conversation's template tokens are in the region but only the asked roles are scored.
    u, a, t = ROLE["user"], ROLE["assistant"], ROLE["template"]
    chat = cut(2, [5, 6, 7, 8, 9, 10], [1], 8, roles=np.array([t, u, u, t, a, a], np.int8), rendered=True)
    only_assistant = build([[w] for w in chat], 8, score_roles=np.array([a]))
    assert only_assistant.role_ok.tolist() == [[False, False, False, False, True, True]]
    assert build([[w] for w in chat], 8).role_ok.tolist() == [[False, True, True, False, True, True]]


def test_short_windows_share_a_row_with_their_own_positions():
    windows = cut(0, [5, 6, 7, 8, 9], [1], ctx_len=4) + cut(1, [3], [1], ctx_len=4)
    # windows: [1 5 6 7], [1 8 9], [1 3]
    batch = build([[windows[0]], [windows[1]], [windows[2]]][:1] + [[windows[1], windows[2]]], 4)
    assert batch.input_ids.tolist() == [[1, 5, 6, 7, 0], [1, 8, 9, 1, 3]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 0], [0, 1, 2, 0, 1]]
    assert batch.segment.tolist() == [[0, 0, 0, 0, -1], [1, 1, 1, 2, 2]]
    flat = batch.input_ids.reshape(-1)
    assert (flat[batch.unpack] * batch.real).tolist() == [[1, 5, 6, 7], [1, 8, 9, 0], [1, 3, 0, 0]]
    assert batch.real.sum().item() == 9 and batch.region.sum().item() == 6


def test_pack_batches_respects_the_token_budget_and_keeps_every_window():
    rng = np.random.default_rng(0)
    windows = [w for d in range(30) for w in cut(d, list(rng.integers(5, 50, rng.integers(1, 60))), [1], 16)]
    batches = list(pack_batches(windows, batch_tokens=64))
    packed = [w for b in batches for row in b for w in row]
    assert sorted((w.document, w.start) for w in packed) == sorted((w.document, w.start) for w in windows)
    fills = [[sum(w.tokens.size for w in row) for row in b] for b in batches]
    assert all(max(f) <= 16 and len(f) * max(f) <= 64 for f in fills)
    # Packing removes most padding: the fed positions exceed the real tokens by far less than one window per row.
    fed = sum(len(f) * max(f) for f in fills)
    real = sum(w.tokens.size for w in windows)
    padded = sum(16 for _ in windows)
    assert fed < padded and (fed - real) / fed < 0.1
    assert any(len(row) > 1 for b in batches for row in b)


def test_packed_windows_see_exactly_what_they_see_alone(tiny_model_dir):
    """A packed row's windows equal each window run alone (same positions, attention only to itself)."""
    loaded = load_model(str(tiny_model_dir), SAE_LAYER)
    rng = np.random.default_rng(1)
    windows = [w for d in range(12) for w in cut(d, list(rng.integers(5, 200, rng.integers(1, 40))), [1], 16)]
    batches = list(pack_batches(windows, batch_tokens=64))
    assert any(len(row) > 1 for b in batches for row in b)
    for rows in batches:
        batch = build(rows, 16)
        hidden = capture_windows(loaded.model, loaded.layer_module, batch)
        for i, w in enumerate(w for row in rows for w in row):
            alone = build([[w]], 16)
            ref = capture_windows(loaded.model, loaded.layer_module, alone)[0]
            n = w.tokens.size
            torch.testing.assert_close(hidden[i, :n], ref[:n], rtol=1e-5, atol=1e-5)


def test_sink_prefix(tiny_model_dir, tiny_model_dir_nobos):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert sink_prefix_ids(tok) == [tok.bos_token_id]
    nobos = AutoTokenizer.from_pretrained(tiny_model_dir_nobos)
    assert sink_prefix_ids(nobos) == [nobos.unk_token_id, nobos.bos_token_id]
    assert sink_prefix_ids(nobos, ["<pad>", "<s>"]) == [nobos.pad_token_id, nobos.bos_token_id]
    assert set(special_token_ids(tok, [tok.bos_token_id])) >= {tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}


@pytest.mark.parametrize("rendered", [False, True])
@pytest.mark.parametrize("prefix, ctx_len, stride", [([1], 16, None), ([1], 16, 5), ([1, 2], 16, 1),
                                                     ([1, 2], 16, 14), ([1, 2, 3], 9, 4)])
def test_window_start_formula(prefix, ctx_len, stride, rendered):
    """Restated from the docs: with p prefix tokens, C = ctx_len - p and S = stride (default C), window 0 feeds
    tokens[0:C] after the prefix, or, for a conversation, tokens[0:ctx_len] as rendered with no prefix; window
    j >= 1 scores tokens[first_j : first_j + S] with first_j = F + (j - 1) S (F = C, or ctx_len for a
    conversation) and starts (window_start) C - S tokens earlier: window_start = F + (j - 1) S - (C - S)."""
    p = len(prefix)
    C = ctx_len - p
    S = C if stride is None else stride
    F = ctx_len if rendered else C
    ids = list(range(100, 100 + 3 * ctx_len + 7))
    windows = cut(0, ids, prefix, ctx_len, stride, rendered=rendered)
    for j, w in enumerate(windows):
        if j == 0:
            fed = ids[:F] if rendered else prefix + ids[:C]
            assert (w.start, w.score_from, w.tokens.tolist()) == (0, 0 if rendered else p, fed)
            continue
        first = F + (j - 1) * S
        start = F + (j - 1) * S - (C - S)
        assert start == j * S + (p if rendered else 0)  # the same, simplified
        assert w.start == start
        assert w.tokens.tolist() == prefix + ids[start:first + S]  # at most ctx_len positions
        assert w.score_from == p + first - start == p + C - S
        # Fed position i of window j holds document token window_start + i - p.
        assert w.tokens[w.score_from] == ids[w.start + w.score_from - p]
    assert len(windows) == 1 + -(-(len(ids) - F) // S)


def test_norm_filter_median_is_over_the_windows_scored_eligible_tokens():
    """Restated from the docs: a token is dropped when its residual norm exceeds norm_filter times the LOWER median
    of the norms of its window's eligible tokens: in the window's scored part (not the sink prefix, not the
    context), of a role in score_roles (not template, not another content role), not special. Per window, never
    per batch. Every other reading of that set changes the decision on the token of norm 50 below."""
    u, a, t = ROLE["user"], ROLE["assistant"], ROLE["template"]
    # A 22-token conversation, prefix [1], ctx_len 12, stride 10: window 1 feeds [1] + doc[11:22], doc[11] as
    # context and doc[12:22] as its scored part, so its fed position i holds doc[10 + i].
    ids, roles = [5] * 22, [a] * 22
    roles[12], roles[13], roles[21] = t, u, u
    ids[14] = 0  # a special id (build() passes special ids 0 and 1), of the scored role, in the scored part
    windows = cut(0, ids, [1], 12, 10, roles=np.array(roles, np.int8), rendered=True)
    assert [(w.start, w.score_from) for w in windows] == [(0, 0), (11, 2)]
    # Window 1: 0 prefix, 1 context, 2 template, 3 user, 4 special, 5-10 assistant (eligible), 11 user.
    eligible_norms = [1.0, 2.0, 2.0, 8.0, 20.0, 50.0]
    hidden = torch.zeros(2, 12, 4)
    hidden[0, :, 0] = 1000.0  # window 0: all at 1000, so a batch-wide median would spare the 50
    hidden[1, :, 0] = torch.tensor([1000.0] * 5 + eligible_norms + [1000.0])
    batch = build([[w] for w in windows], 12, score_roles=np.array([a]))
    assert batch.role_ok[1].logical_and(~batch.special[1]).nonzero().flatten().tolist() == [5, 6, 7, 8, 9, 10]
    scored, outlier = scored_tokens(hidden, batch, 10.0)
    assert sorted(eligible_norms)[(len(eligible_norms) - 1) // 2] == 2.0  # the lower median: 20 kept, 50 dropped
    assert outlier.nonzero().tolist() == [[1, 10]]
    assert scored[1].nonzero().flatten().tolist() == [5, 6, 7, 8, 9]
    assert scored[0].all()  # window 0's own median is 1000
    # The readings the docs rule out would each keep the 50: the upper median (8) or the mean (13.8) of the set,
    # or a median that also counts any one prefix, context, template, other-role or special token (1000).
    assert 50 <= 10 * sorted(eligible_norms)[len(eligible_norms) // 2] and 50 <= 10 * np.mean(eligible_norms)
    assert 50 <= 10 * sorted([*eligible_norms, 1000.0])[len(eligible_norms) // 2]
    # score_roles decides the set: scoring every content role brings the two user tokens (1000) into the median
    # (now 8), so the 50 is kept and the user tokens themselves are dropped.
    _, outlier_all_roles = scored_tokens(hidden, build([[w] for w in windows], 12), 10.0)
    assert outlier_all_roles.nonzero().tolist() == [[1, 3], [1, 11]]
    # A window without an eligible token has no median and drops nothing; norm_filter 0 disables the filter.
    assert not scored_tokens(hidden, build([[w] for w in windows], 12, score_roles=np.array([ROLE["system"]])),
                             10.0)[1].any()
    assert not scored_tokens(hidden, batch, 0.0)[1].any()
