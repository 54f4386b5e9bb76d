"""The browser's index and feature data at 131,072 features, over plain HTTP on the loopback address: pages, sorting,
filtering and feature data equal what ``read_results`` gives, and each request answers in well under a second
(asserted loosely here; ``benchmarks/serve_index.py`` measures it)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from fixtures import BIG_FEATURES, PERSONA_EXPLANATION, http_json

import personamine
from personamine.merge.entries import TOKEN_FILL
from personamine.report.data import display_token, report_data
from personamine.roles import ROLE


@pytest.fixture(scope="module")
def whole(big_results):
    """The whole file, as ``read_results`` reads it (the test file's windows are small: ~80 MB)."""
    return personamine.read_results(big_results)


@pytest.fixture(scope="module")
def tokens(whole) -> list[str]:
    """Each feature's top token as the report computes it: the peak of its best window's shown tokens (here from the
    arrays at once; the same as ``examples``/``shown`` per feature, which a sample checks)."""
    width = whole.token_ids.shape[2]
    ids, acts = whole.token_ids[:, 0, :], whole.activations[:, 0, :].astype(np.float64)
    keep = (whole.roles[:, 0, :] != ROLE["prefix"]) & (ids != TOKEN_FILL) & (
        np.arange(width)[None, :] < whole.length[:, 0, None])
    acts[~keep] = -np.inf
    peak = ids[np.arange(ids.shape[0]), np.argmax(acts, axis=1)]
    has = ~np.isnan(whole.score[:, 0]) & keep.any(axis=1)
    out = [display_token(whole.vocab_text[t], whole.vocab_pieces[t])[0] if h else ""
           for t, h in zip(peak.tolist(), has.tolist(), strict=True)]
    for fid in range(0, BIG_FEATURES, 701):
        examples = whole.examples(fid)
        if examples:
            shown = whole.shown(examples[0])
            tid = int(examples[0]["token_ids"][shown][int(np.argmax(examples[0]["activations"][shown]))])
            assert out[fid] == display_token(whole.vocab_text[tid], whole.vocab_pieces[tid])[0]
    return out


def get(server, query: str = "", limit: float = 2.0) -> dict:
    began = time.perf_counter()
    status, data = http_json("GET", f"{server.url}api/index{query}")
    took = time.perf_counter() - began
    assert status == 200, data
    assert took < limit, f"{query}: {took:.2f} s"  # loose: measured at ~0.02-0.1 s (docs/serve.md)
    return data


def column(data: dict, key: str) -> list:
    k = [c["key"] for c in data["columns"]].index(key)
    return [row[k] for row in data["rows"]]


def test_every_feature_is_indexed_and_a_page_shows_the_files_values(big_server, big_results, tokens):
    data = get(big_server)
    assert data["total"] == data["matched"] == BIG_FEATURES and len(data["rows"]) == 50
    assert [c["key"] for c in data["columns"]] == [
        "feature", "density", "max", "mean", "top_token", "detection_balanced_accuracy", "detection_auc",
        "fuzzing_balanced_accuracy", "fuzzing_auc", "explanation"]
    assert data["row_features"] == list(range(50)) and column(data, "feature") == list(range(50))
    for page in (0, 1234, BIG_FEATURES // 50 - 1):
        data = get(big_server, f"?page={page}")
        ids = data["row_features"]
        assert ids == list(range(page * 50, page * 50 + 50))
        res = personamine.read_results(big_results, features=ids)
        assert column(data, "density") == res.density.tolist()
        assert column(data, "max") == res.max.astype(float).tolist()
        assert column(data, "mean") == [s / a if a else 0.0 for s, a in zip(res.activation_sum.tolist(),
                                                                             res.active_tokens.tolist(), strict=True)]
        assert column(data, "top_token") == [tokens[i] for i in ids]
    last = get(big_server, f"?page={BIG_FEATURES // 50}")  # 131,072 = 2,621 pages of 50 and one of 22
    assert len(last["rows"]) == BIG_FEATURES % 50 and get(big_server, "?page=9999")["rows"] == []


@pytest.mark.parametrize("key", ["max", "density", "mean", "detection_balanced_accuracy", "top_token"])
def test_sorting_by_any_column_orders_all_131072_features(big_server, whole, tokens, big_explanations, key):
    ex = personamine.read_explanations(big_explanations)
    values = {"max": whole.max.astype(float), "density": whole.density, "mean": np.where(
        whole.active_tokens > 0, whole.activation_sum / np.maximum(whole.active_tokens, 1), 0.0),
        "detection_balanced_accuracy": ex.scores["detection"]["balanced_accuracy"]}.get(key)
    for direction in ("desc", "asc"):
        first = get(big_server, f"?sort={key}&dir={direction}&n=200")
        assert first["matched"] == BIG_FEATURES and first["sort"] == key
        shown = column(first, key)
        if key == "top_token":
            folded = [t.casefold() for t in tokens]
            expected = sorted((t for t in folded if t), reverse=direction == "desc")[:200]
            assert [t.casefold() for t in shown] == expected
            continue
        present = np.sort(values[~np.isnan(values)])
        expected = (present[::-1] if direction == "desc" else present)[:200]
        assert np.array_equal(np.array(shown, float), expected)
        assert [values[f] for f in first["row_features"]] == shown
        # Ties keep the file's order; features without a value come last either way.
        last = get(big_server, f"?sort={key}&dir={direction}&page={BIG_FEATURES // 200}&n=200")
        if np.isnan(values).any():
            assert last["rows"] and column(last, key)[-1] is None


def test_filter_by_id_top_token_and_explanation_text(big_server, whole, tokens):
    one = get(big_server, "?q=12345")
    assert 12345 in one["row_features"]
    word = next(t for t in tokens if len(t.strip()) >= 5).strip()[:4]  # a piece of some top token
    hits = get(big_server, f"?q={word}&n=500")
    expected = [i for i, t in enumerate(tokens) if word.casefold() in t.casefold()]
    persona = [i for i in range(BIG_FEATURES) if i % 997 == 0]
    assert hits["matched"] == len(expected) and hits["row_features"] == expected[:500]
    found = get(big_server, "?q=" + PERSONA_EXPLANATION.upper().replace(" ", "+") + "&n=500")  # case-folded
    assert found["row_features"] == persona and column(found, "explanation") == [PERSONA_EXPLANATION] * len(persona)
    # A filter and a sort together: the filtered rows, in the column's order.
    both = get(big_server, "?q=" + PERSONA_EXPLANATION.replace(" ", "+") + "&sort=max&dir=desc&n=500")
    assert both["row_features"] == sorted(persona, key=lambda f: -float(whole.max[f]))
    assert get(big_server, "?q=no-such-text-anywhere")["matched"] == 0


def test_feature_data_is_the_reports_for_that_feature(big_server, big_results):
    for fid in (0, 77_777, BIG_FEATURES - 1):
        began = time.perf_counter()
        status, data = http_json("GET", f"{big_server.url}api/feature/0/{fid}")
        took = time.perf_counter() - began
        assert status == 200 and took < 5.0, took
        expected = report_data(personamine.read_results(big_results, features=[fid]), [fid])
        assert data["features"] == expected["features"] and data["vocab"] == expected["vocab"]
        assert data["meta"]["n_features_in_file"] == BIG_FEATURES
        # The synthetic file's SAE does not exist: the page says so instead of neighbours.
        assert data["server"]["neighbours"]["ready"] is False and data["server"]["neighbours"]["rows"] == []


def test_discovery_and_role_columns_and_several_files(tiny_model_dir, tiny_sae_dir, tiny_mining_file, tmp_path):
    """A conversation run scoring the Assistant's turns, with a discovery file, served beside a text run: the
    discovery and per-role columns, the default order (discovery rank), sorting by them, and rows of both files."""
    from fixtures import SAE_LAYER, run_discovery, write_chat_corpus_jsonl

    chat = personamine.mine(model=str(tiny_model_dir), layer=SAE_LAYER, sae=str(tiny_sae_dir),
                            corpus=str(write_chat_corpus_jsonl(tmp_path / "chat.jsonl")), messages_column="messages",
                            score_roles=["assistant"], features=list(range(0, 256, 4)), ctx_len=64, top_k=4,
                            output=str(tmp_path / "chat.h5"), progress=False)
    disc_path = run_discovery(tiny_model_dir, tiny_sae_dir, tmp_path, ["Who are you?", "How do you feel?"],
                              ["Who was Ada?", "How does a cat feel?"], top=256)
    disc = personamine.read_discovery(disc_path)
    res, text = personamine.read_results(chat), personamine.read_results(tiny_mining_file)
    with personamine.serve([chat, tiny_mining_file], discovery=disc_path, port=0, quiet=True) as server:
        data = get(server, "?n=500")
        keys = [c["key"] for c in data["columns"]]
        assert keys == ["feature", "file", "rank", "disc_score", "persona", "control", "density", "density_assistant",
                        "max", "mean", "top_token"]
        assert data["total"] == res.feature_ids.size + text.feature_ids.size
        rank = {int(f): r for r, f in enumerate(disc.feature_ids.tolist())}
        pairs = list(zip(data["row_files"], data["row_features"], strict=True))
        rows = [(0, f) for f in res.feature_ids.tolist()] + [(1, f) for f in text.feature_ids.tolist()]
        # Discovery rank order (file 0 first on a tie), then the features it did not rank, in the files' order.
        expected = sorted([p for p in rows if p[1] in rank], key=lambda p: (rank[p[1]], p[0])) + [
            p for p in rows if p[1] not in rank]
        assert pairs == expected and any(f not in rank for _, f in rows)
        assert column(data, "rank") == [rank[f] + 1 if f in rank else None for _, f in expected]
        assert column(data, "disc_score") == [float(disc.score[rank[f]]) if f in rank else None for _, f in expected]
        by_role = res.density_by_role()["assistant"]
        assistant = {f: float(by_role[i]) for i, f in enumerate(res.feature_ids.tolist())}
        assert column(data, "density_assistant") == [assistant[f] if file == 0 else None for file, f in expected]
        ordered = get(server, "?sort=density_assistant&dir=desc&n=500")
        shown = column(ordered, "density_assistant")
        assert shown[:64] == sorted(assistant.values(), reverse=True) and shown[64:] == [None] * 10
        ordered = get(server, "?sort=disc_score&dir=asc&n=500")
        scores = [v for v in column(data, "disc_score") if v is not None]
        assert column(ordered, "disc_score") == sorted(scores) + [None] * (len(rows) - len(scores))
        # Both files' features have pages; a feature is named by its file's position.
        assert http_json("GET", f"{server.url}api/feature/1/{int(text.feature_ids[0])}")[0] == 200
        assert http_json("GET", f"{server.url}api/feature/1/40")[0] == 404  # in the first file, not the second
