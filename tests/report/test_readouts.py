"""The report of a run with several readouts (``personamine.report.readouts``), opened in a real headless Chromium: a
part per readout in the run's order, the SAE readout's features as for a single file, each direction's signed
statistics, both tails (the lowest below 0) and its documents of highest and lowest mean projection, equal to what
the file holds; every text (direction names, the corpus) stays text, and the page logs no error."""

from __future__ import annotations

import json

import fixtures as fx
import h5py
import numpy as np
import pytest
from fixtures import IMG_ATTACK, SCRIPT_ATTACK, open_report, wait_for

import personamine
from personamine.files.mine import readouts_of
from personamine.jobs.cli import main
from personamine.merge.documents import MIN_RANKED_TOKENS
from personamine.report.readouts import N_DOCUMENTS, directions_readout_data

FEATURES = list(range(0, 40, 4))
NAMES = ["persona", f"axis {IMG_ATTACK}"]


def sig4(values) -> list[float]:
    return [float(f"{v:.4g}") for v in np.asarray(values, np.float64).tolist()]


@pytest.fixture(scope="module")
def run(tiny_model_dir, multi_layer_sae_dir, tmp_path_factory):
    """Conversations (one of them markup) mined with an SAE at layer 1 and two directions at layer 2 in one run."""
    root = tmp_path_factory.mktemp("report-readouts")
    convs = fx.conversations() + [[{"role": "user", "content": SCRIPT_ATTACK},
                                   {"role": "assistant", "content": f"Sure: {IMG_ATTACK} and more."}]]
    corpus = root / "chat.jsonl"
    corpus.write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs))
    vectors = np.random.default_rng(7).standard_normal((2, fx.TINY_HIDDEN_SIZE)).astype(np.float32)
    np.save(root / "dirs.npy", vectors)
    (root / "dirs.json").write_text(json.dumps({"names": NAMES}))
    return personamine.mine(model=str(tiny_model_dir), corpus=str(corpus), messages_column="messages",
                            sae=str(multi_layer_sae_dir), layers=[1], features=FEATURES,
                            directions=str(root / "dirs.npy"), direction_layer=2, ctx_len=24, top_k=5,
                            samples_per_interval=2, n_shards=1, progress=False, allow_low_fve=True,
                            output=str(root / "run.h5"))


def _shown_direction(browser, section_id: str) -> dict:
    return browser.execute_script("""
        const sec = document.getElementById(arguments[0]);
        const scores = sel => Array.from(sec.querySelectorAll(sel + ' .ctx > .score')).map(s => Number(s.textContent));
        const stat = k => sec.querySelector('[data-stat="' + k + '"]').textContent;
        return {
          name: sec.querySelector('h2').textContent, high: scores('.tail.high'), low: scores('.tail.low'),
          lowTokens: Array.from(sec.querySelectorAll('.tail.low .tok.on')).map(s => [Number(s.getAttribute('data-a')),
                                                                                    s.getAttribute('title')]),
          stats: Object.fromEntries(['mean', 'max', 'min', 'above', 'below'].map(k => [k, stat(k)])),
          bars: Array.from(sec.querySelectorAll('svg.signed rect.bar')).map(r => [r.getAttribute('class'),
                                                                                 Number(r.getAttribute('data-count'))]),
          pct: Array.from(sec.querySelectorAll('table.pct td')).map(t => [Number(t.getAttribute('data-q')),
                                                                          t.textContent]),
          docs: ['top', 'bottom'].map(k => Array.from(sec.querySelectorAll('.docs.' + k + ' tr[data-doc]')).map(r =>
              [Number(r.getAttribute('data-doc')), Number(r.getAttribute('data-mean')),
               (r.querySelector('.turns') || {getAttribute: () => ''}).getAttribute('title')])),
        };""", section_id)


def test_each_readout_has_its_part_and_a_direction_shows_both_tails(browser, run, tmp_path):
    files = readouts_of(run)
    assert list(files) == ["L1", "directions-L2"]
    out = personamine.report(run, tmp_path / "report.html")
    html = out.read_text()
    assert "<script>window" not in html and "<img src=x" not in html
    browser.get_log("browser")  # what earlier pages logged
    open_report(browser, out)
    parts = browser.execute_script("return Array.from(document.querySelectorAll('section.readout'))"
                                   ".map(s => [s.getAttribute('data-readout'), s.getAttribute('data-kind')])")
    assert parts == [["L1", "sae"], ["directions-L2", "directions"]]

    # The SAE readout: its features as a single file shows them, their anchors prefixed with the readout.
    sae = personamine.read_results(run, readout="L1")
    index = browser.execute_script("return Array.from(document.querySelectorAll('#r-L1 .pm-index tbody tr'))"
                                   ".map(r => Number(r.getAttribute('data-feature')))")
    assert index == sae.feature_ids.tolist() == FEATURES
    fid = FEATURES[1]
    browser.execute_script(f"document.getElementById('L1-f-{fid}').scrollIntoView()")
    wait_for(browser, f"return document.getElementById('L1-f-{fid}').getAttribute('data-rendered') === '1'")
    shown = browser.execute_script(f"return Array.from(document.querySelectorAll('#L1-f-{fid} .top .ctx > .score'))"
                                   ".map(s => Number(s.textContent))")
    assert shown == sig4([ex["score"] for ex in sae.examples(fid)]) and shown

    # The directions readout: per direction, its statistics, both tails and its documents.
    res = personamine.read_results(run, readout="directions-L2")
    n = len(res.direction_names)
    stats = res.signed_stats()
    with h5py.File(files["directions-L2"], "r") as f:  # the per-document scores straight from the file
        total, n_tokens = f["documents/total"][:], f["documents/n_tokens"][:]
        document, turn_document = f["documents/document"][:], f["documents/turn_document"][:]
    for i, name in enumerate(NAMES):
        d = _shown_direction(browser, f"directions-L2-d-{i}")
        assert d["name"] == f"direction {name}"
        for key in ("mean", "max", "min"):
            assert float(d["stats"][key].split()[1]) == pytest.approx(stats[key][i], rel=1e-3, abs=1e-6)
        assert d["stats"]["above"].startswith("above 0 on ") and d["stats"]["below"].startswith("below 0 on ")
        # highest windows from channel i, lowest from channel n + i: their scores negative, the lowest projection
        assert d["high"] == sig4([ex["score"] for ex in res.examples(i)]) and d["high"][0] == sig4([stats["max"][i]])[0]
        assert d["low"] == sig4([-ex["score"] for ex in res.examples(n + i)]) and d["low"]
        assert all(s < 0 for s in d["low"]) and d["low"][0] == sig4([stats["min"][i]])[0]
        assert d["lowTokens"] and all(a > 0 and title.startswith("\u2212projection") for a, title in d["lowTokens"])
        # the signed histogram: every scored token in one bar, below 0 (mirrored) then above
        assert sum(c for _, c in d["bars"]) == res.tokens_scored
        assert sum(c for k, c in d["bars"] if "below" in k) == res.active_tokens[n + i]
        assert sum(c for k, c in d["bars"] if "above" in k) == res.active_tokens[i]
        assert [q for q, _ in d["pct"]] == [1, 10, 50, 90, 99]
        # the top and bottom documents by mean projection, computed here from the file's sums
        mean = total[:, i] / np.maximum(n_tokens, 1)
        np.testing.assert_array_equal(mean, res.documents.mean[:, i])
        top, bottom = d["docs"]
        # ranked among the documents with at least MIN_RANKED_TOKENS scored tokens (a 1-token mean is no document's)
        ranked = n_tokens >= MIN_RANKED_TOKENS
        ranked = ranked if ranked.any() else np.ones_like(ranked)
        assert len(top) == len(bottom) == min(N_DOCUMENTS, int(ranked.sum()))
        high, low = np.where(ranked, mean, -np.inf), np.where(ranked, mean, np.inf)
        assert top[0][0] == int(document[np.argmax(high)]) and top[0][1] == sig4([high.max()])[0]
        assert bottom[0][0] == int(document[np.argmin(low)]) and bottom[0][1] == sig4([low.min()])[0]
        assert [m for _, m, _ in top] == sorted((m for _, m, _ in top), reverse=True)
        for doc, _, turns in top + bottom:  # each document's assistant turns, one mean each
            assert len(turns.splitlines()) == int((turn_document == doc).sum()) > 0
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
    assert browser.execute_script("return document.querySelectorAll('main script, main img').length") == 0
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    browser.save_screenshot(str(tmp_path / "readouts.png"))


def test_directions_data_is_plain_json(run):
    data = directions_readout_data(personamine.read_results(run, readout="directions-L2"), "x-")
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert data["id_prefix"] == "x-" and [d["name"] for d in data["directions"]] == NAMES
    first = data["directions"][0]
    assert [b[0] for b in first["hist"]] == sorted(b[0] for b in first["hist"])  # lowest first


def test_cli_reports_an_index_and_a_single_file_as_before(run, tmp_path, capsys):
    out = tmp_path / "cli.html"
    assert main(["report", str(run), "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    page = out.read_text()
    assert 'id="pm-readouts"' in page and "directions-L2" in page
    single = tmp_path / "single.html"
    assert main(["report", str(readouts_of(run)["L1"]), "-o", str(single)]) == 0
    assert 'id="pm-index"' in single.read_text() and 'id="pm-readouts"' not in single.read_text()
    # one directions readout alone is shown as directions
    alone = personamine.report(personamine.read_results(run, readout="directions-L2"), tmp_path / "alone.html")
    assert 'id="pm-readouts"' in alone.read_text() and '"kind":"directions"' in alone.read_text()
