"""Several readouts in one forward: each SAE readout's file is its single run's, byte for byte; directions are the
projections an independent full forward (``output_hidden_states``) gives; per-document and per-turn scores are an
independent mean, max and min; bad input gets one line and writes nothing."""

from __future__ import annotations

import json

import fixtures as fx
import numpy as np
import pytest
from fixtures import TINY_HIDDEN_SIZE, personamine_cli
from ray_helpers import assert_identical_datasets
from reference import line_uids, ref_docs, reference_projections

import personamine
from personamine.errors import PersonamineError
from personamine.files.mine import readouts_of
from personamine.merge.stats import HISTOGRAM_EDGES, histogram_percentiles

FEATURES = list(range(0, 256, 7))
UNIT_BYTES = 2500
TOL = 2e-5  # batched float32 forwards against one window at a time in float64 projections


def _directions(root):
    """Three directions: two the file places at layer 2, one whose layer it does not say."""
    vectors = np.random.default_rng(7).standard_normal((3, TINY_HIDDEN_SIZE)).astype(np.float32)
    np.save(root / "dirs.npy", vectors)
    (root / "dirs.json").write_text(json.dumps({"names": ["persona", "axis", "probe"], "directions": {
        "persona": {"layer": 2, "mean": 0.5}, "axis": {"layer": 2}}}))
    return root / "dirs.npy", vectors


def _kwargs(model_dir, corpus, out, kind, **extra):
    base = dict(model=str(model_dir), corpus=str(corpus), ctx_len=24, top_k=5, unit_bytes=UNIT_BYTES,
                output=str(out), progress=False, n_shards=1, samples_per_interval=2, negatives_per_feature=3,
                allow_low_fve=True)  # the release's SAEs are calibrated, not trained: the pre-flight runs and warns
    if kind == "chat":
        base["messages_column"] = "messages"
    base.update(extra)
    return base


@pytest.fixture(scope="module", params=["text", "chat"])
def runs(request, tiny_model_dir, multi_layer_sae_dir, tmp_path_factory):
    """One combined run (SAEs at layers 1 and 3, and three directions: two readouts) in three shards, and the
    single runs it must equal, each in one shard."""
    kind = request.param
    root = tmp_path_factory.mktemp(f"readouts-{kind}")
    if kind == "text":
        corpus = root / "c.jsonl"
        texts = fx.long_texts(n_docs=2, n_sentences=40) + fx.corpus_texts()[:12]
        corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        rows = texts
    else:
        corpus = fx.write_chat_corpus_jsonl(root / "chat.jsonl")
        rows = fx.conversations()
    directions, vectors = _directions(root)
    sae = str(multi_layer_sae_dir)
    combined = personamine.mine(**_kwargs(tiny_model_dir, corpus, root / "all.h5", kind, sae=sae, layers=[1, 3],
                                          features=FEATURES, directions=str(directions), direction_layer=1,
                                          n_shards=3))
    singles = {f"L{layer}": personamine.mine(**_kwargs(tiny_model_dir, corpus, root / f"L{layer}.h5", kind, sae=sae,
                                                       layer=layer, features=FEATURES)) for layer in (1, 3)}
    singles["directions-L2"] = personamine.mine(**_kwargs(tiny_model_dir, corpus, root / "d2.h5", kind,
                                                          directions=str(directions),
                                                          direction_names=["persona", "axis"]))
    return dict(kind=kind, corpus=corpus, rows=rows, combined=combined, singles=singles, vectors=vectors, root=root)


def test_each_readout_of_a_combined_run_equals_its_single_run(runs):
    files = readouts_of(runs["combined"])
    assert list(files) == ["L1", "L3", "directions-L1", "directions-L2"]
    for name, single in runs["singles"].items():
        assert_identical_datasets(single, files[name])
    res = personamine.read_results(runs["combined"], readout="directions-L1")
    assert res.direction_names == ["probe"] and res.readout == "directions-L1"
    assert personamine.read_results(runs["combined"]).readout == "L1"  # the first readout, unless one is named
    with pytest.raises(PersonamineError, match="has no readout 'L2'"):
        personamine.read_results(runs["combined"], readout="L2")


def test_directions_equal_an_independent_projection(runs, tiny_model_dir):
    res = personamine.read_results(runs["singles"]["directions-L2"])
    units = runs["vectors"][:2] / np.linalg.norm(runs["vectors"][:2].astype(np.float64), axis=1, keepdims=True)
    prefix = [int(t) for t in res.attrs["sink_prefix"]]
    ref = reference_projections(tiny_model_dir, units, ref_docs(tiny_model_dir, runs["kind"], runs["rows"]),
                                layer=2, ctx_len=24, prefix=prefix)
    values = np.concatenate(ref.values)
    # Signed statistics, exactly from the two channels of each direction.
    signed = res.signed_stats()
    np.testing.assert_allclose(signed["mean"], values.mean(0), atol=TOL)
    np.testing.assert_allclose(signed["max"], values.max(0), atol=TOL)
    np.testing.assert_allclose(signed["min"], values.min(0), atol=TOL)
    assert res.tokens_scored == values.shape[0]
    np.testing.assert_array_equal(res.active_tokens[:2], (values > 0).sum(0))
    # Both tails: the top window of channel i reads the highest projection; of channel n + i, the lowest.
    for i in range(2):
        assert res.score[i, 0] == pytest.approx(max(w[2][i] for w in ref.windows), abs=TOL)
        assert res.score[2 + i, 0] == pytest.approx(-min(w[3][i] for w in ref.windows), abs=TOL)
        best = [(d, s) for d, s, high, _ in ref.windows if abs(high[i] - res.score[i, 0]) <= TOL]
        assert (int(res.document[i, 0]), int(res.window_start[i, 0])) in best
    # Per document: mean, max, min over its scored tokens.
    docs = res.documents
    assert sorted(ref.documents) == docs.document.tolist()
    for row, d in enumerate(docs.document.tolist()):
        n, total, high, low = ref.documents[d]
        assert docs.n_tokens[row] == n
        np.testing.assert_allclose(docs.mean[row], total / n, atol=TOL)
        np.testing.assert_allclose(docs.max[row], high, atol=TOL)
        np.testing.assert_allclose(docs.min[row], low, atol=TOL)
    # Per assistant turn (conversations): each turn's mean.
    if runs["kind"] == "chat":
        cells = list(zip(docs.turn_document.tolist(), docs.turn.tolist(), strict=True))
        assert cells == sorted(ref.turns) and len(cells) > 20
        for row, cell in enumerate(cells):
            n, total = ref.turns[cell]
            assert docs.turn_n_tokens[row] == n
            np.testing.assert_allclose(docs.turn_mean[row], total / n, atol=TOL)
    else:
        assert docs.turn.size == 0
    # Percentiles from the exact histograms: within a bin's width of numpy's on the same values.
    width = HISTOGRAM_EDGES[1] / HISTOGRAM_EDGES[0]
    for i in range(2):
        for q in (1, 10, 50, 90, 99):
            want, got = np.percentile(values[:, i], q), res.percentiles[i, q]
            assert np.sign(got) == np.sign(want) or abs(want) < 1e-3
            assert abs(got) <= abs(want) * width ** 1.01 + 1e-3 and abs(got) >= abs(want) / width ** 1.01 - 1e-3


def test_document_ids_are_the_corpus_rows(runs):
    """The per-document scores use the same global document index as the top-k examples (a jsonl line's row)."""
    if runs["kind"] != "text":
        pytest.skip("one case is enough")
    res = personamine.read_results(runs["singles"]["directions-L2"])
    uids = line_uids(runs["corpus"], UNIT_BYTES)
    assert res.documents.document.tolist() == list(range(len(uids)))


def test_histogram_percentiles_against_numpy():
    values = np.random.default_rng(3).standard_normal(20000) * 4
    positive = np.histogram(np.clip(values[values > 0], 1e-3, 1e5), HISTOGRAM_EDGES)[0]
    negative = np.histogram(np.clip(-values[values < 0], 1e-3, 1e5), HISTOGRAM_EDGES)[0]
    got = histogram_percentiles(positive, negative, values.size)[0]
    width = HISTOGRAM_EDGES[1] / HISTOGRAM_EDGES[0]
    for q in range(1, 100):
        want = np.percentile(values, q)
        assert got[q] / want <= width and got[q] / want >= 1 / width, q
    # nonnegative channels (an SAE feature): mostly zeros, then the positive tail
    sparse = np.where(np.arange(1000) < 900, 0.0, np.linspace(0.5, 5, 1000))
    got = histogram_percentiles(np.histogram(sparse[sparse > 0], HISTOGRAM_EDGES)[0], None, sparse.size)[0]
    assert got[50] == 0.0 and got[89] == 0.0 and 0.5 / width < got[91] < 5 * width


@pytest.mark.parametrize(("extra", "message"), [
    (dict(directions="WRONG_WIDTH"), "is 8 wide, but the model's residual stream is 64"),
    (dict(layers=[1, 9]), "layer 9"),
    (dict(directions="DIRS", direction_layer=9), "is read at layer 9, but"),
    (dict(layers="2,2"), "layers names a layer twice"),
    (dict(directions="DIRS", direction_names=["nope"]), "has no direction 'nope'"),
    (dict(directions="UNPLACED", sae="", layer=None), "does not say at which layer"),
    (dict(sae=""), "nothing to mine"),
])
def test_bad_readouts_get_one_line_and_write_nothing(tiny_model_dir, multi_layer_sae_dir, tiny_corpus_jsonl,
                                                     tmp_path, extra, message):
    np.save(tmp_path / "wrong.npy", np.ones((1, 8), np.float32))
    dirs, _ = _directions(tmp_path)
    np.save(tmp_path / "unplaced.npy", np.ones((1, TINY_HIDDEN_SIZE), np.float32))
    paths = {"WRONG_WIDTH": tmp_path / "wrong.npy", "DIRS": dirs, "UNPLACED": tmp_path / "unplaced.npy"}
    extra = {k: str(paths.get(v, v)) if k == "directions" else v for k, v in extra.items()}
    out = tmp_path / "out" / "o.h5"
    kwargs = _kwargs(tiny_model_dir, tiny_corpus_jsonl, out, "text", sae=str(multi_layer_sae_dir), layer=2,
                     features=FEATURES)
    kwargs.update(extra)
    with pytest.raises(PersonamineError, match=message):
        personamine.mine(**kwargs)
    assert not (tmp_path / "out").exists()


def test_the_command_line_mines_several_readouts(tiny_model_dir, multi_layer_sae_dir, tiny_corpus_jsonl, tmp_path):
    dirs, _ = _directions(tmp_path)
    out = tmp_path / "cli.h5"
    done = personamine_cli("mine", "--model", str(tiny_model_dir), "--sae", str(multi_layer_sae_dir), "--layers",
                           "1,3", "--features", "0-9", "--directions", str(dirs), "--direction-names", "persona",
                           "--corpus", str(tiny_corpus_jsonl), "--ctx-len", "16", "--output", str(out),
                           "--no-progress", "--allow-low-fve")
    assert done.returncode == 0, done.stderr
    assert list(readouts_of(out)) == ["L1", "L3", "directions-L2"]
    shown = personamine_cli("show", str(out), "--readout", "directions-L2")
    assert shown.returncode == 0, shown.stderr
    assert "persona" in shown.stdout and "documents" in shown.stdout
    first = personamine_cli("show", str(out), "--features", "0")
    assert first.returncode == 0 and "cli.L1.h5" in first.stdout
    assert "3 readouts (L1, L3, directions-L2): --readout NAME shows another" in first.stderr
    missing = personamine_cli("show", str(out), "--readout", "L2")
    assert missing.returncode == 2 and "has no readout 'L2'" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    bad = personamine_cli("mine", "--model", str(tiny_model_dir), "--directions", str(tmp_path / "wrong.npy"),
                          "--corpus", str(tiny_corpus_jsonl), "--output", str(tmp_path / "bad.h5"))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "not found" in bad.stderr


def test_an_interrupted_combined_run_resumes_to_the_same_files(runs, tiny_model_dir, multi_layer_sae_dir):
    """Checkpoints hold every readout: a run stopped after two of its three shards resumes to the same files."""
    if runs["kind"] != "chat":
        pytest.skip("one case is enough")
    root = runs["root"]
    directions = root / "dirs.npy"
    kwargs = _kwargs(tiny_model_dir, runs["corpus"], root / "resumed.h5", "chat", sae=str(multi_layer_sae_dir),
                     layers=[1, 3], features=FEATURES, directions=str(directions), direction_layer=1, n_shards=3)
    fx.interrupted_run(kwargs, 2)
    resumed = personamine.mine(**kwargs)
    for name, path in readouts_of(runs["combined"]).items():
        assert_identical_datasets(path, readouts_of(resumed)[name])
    # a resume that adds a readout is another run: refused, naming the change
    with pytest.raises(PersonamineError, match="changed: layers"):
        fx.interrupted_run({**kwargs, "output": str(root / "changed.h5")}, 1)
        personamine.mine(**{**kwargs, "output": str(root / "changed.h5"), "layers": [1, 2, 3]})


def test_centred_directions_subtract_their_reference(runs, tiny_model_dir):
    """center_directions reads p - mean (persona's file mean is 0.5; axis has none: 0); percentiles for a steering
    cap come back in raw projection units."""
    if runs["kind"] != "text":
        pytest.skip("one case is enough")
    plain = personamine.read_results(runs["singles"]["directions-L2"])
    centred = personamine.read_results(personamine.mine(**_kwargs(
        tiny_model_dir, runs["corpus"], runs["root"] / "centred.h5", "text", directions=str(runs["root"] / "dirs.npy"),
        direction_names=["persona", "axis"], center_directions=True)))
    np.testing.assert_allclose(centred.documents.mean + [0.5, 0.0], plain.documents.mean, atol=1e-5)
    np.testing.assert_allclose(centred.signed_stats()["max"] + [0.5, 0.0], plain.signed_stats()["max"], atol=1e-5)
    raw = plain.direction_percentiles()
    np.testing.assert_array_equal(raw["persona"], plain.percentiles[0])
    shifted = centred.direction_percentiles()
    # to a histogram bin's width (26%) of the centred values' magnitude, here at most ~0.6
    assert abs(shifted["persona"][50] - raw["persona"][50]) < 0.26 * 0.6


def test_an_sae_readout_keeps_per_document_scores_when_asked(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl,
                                                             tmp_path):
    """document_scores=True: each mined feature's per-document mean and max, consistent with the run's own exact
    statistics (the documents' tokens add up to the tokens scored, their sums to the exact activation sum, their
    maxima to the feature's max), and the top-k windows' documents among those where the feature is highest."""
    from fixtures import SAE_LAYER

    res = personamine.read_results(personamine.mine(**_kwargs(
        tiny_model_dir, tiny_corpus_jsonl, tmp_path / "scored.h5", "text", sae=str(tiny_sae_dir), layer=SAE_LAYER,
        features=FEATURES, document_scores=True)))
    docs = res.documents
    assert docs.total.shape == (docs.document.size, len(FEATURES)) and res.percentiles.shape == (len(FEATURES), 101)
    assert int(docs.n_tokens.sum()) == res.tokens_scored
    np.testing.assert_allclose(docs.total.sum(0), res.activation_sum, rtol=1e-9, atol=1e-6)
    np.testing.assert_array_equal(docs.max.max(0), res.max)
    for i in range(len(FEATURES)):
        if res.max[i] > 0:
            best = int(docs.document[np.argmax(docs.max[:, i])])
            assert docs.max[docs.document == res.document[i, 0], i][0] == res.score[i, 0]
            assert res.score[i, 0] == docs.max[docs.document == best, i][0]
    assert (docs.min >= 0).all()  # an SAE's codes are nonnegative
