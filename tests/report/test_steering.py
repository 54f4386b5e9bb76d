"""The report's steering section in a real headless Chromium: it renders next to the features, its curves and
tables hold the file's numbers, the generations sit in columns, and hostile text stays text."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest
from fixtures import IMG_ATTACK, SAE_LAYER, SCRIPT_ATTACK, corpus_rows, open_report, wait_for

import personamine
from personamine.jobs.cli import main


@pytest.fixture(scope="module")
def files(tiny_model_dir, tiny_sae_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("steer-report")
    corpus = tmp / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in corpus_rows() if isinstance(r["text"], str)))
    mined = personamine.mine(model=str(tiny_model_dir), layer=SAE_LAYER, sae=str(tiny_sae_dir), corpus=str(corpus),
                             features=[3, 7, 11], ctx_len=16, max_documents=20, n_shards=1,
                             output=str(tmp / "mine.h5"), progress=False)
    prompts, controls, conts = tmp / "p.jsonl", tmp / "c.jsonl", tmp / "conts.json"
    prompts.write_text("".join(json.dumps({"content": t}) + "\n" for t in ["Who are you?", SCRIPT_ATTACK]))
    controls.write_text("".join(json.dumps({"content": t}) + "\n" for t in ["Who is she?", IMG_ATTACK]))
    conts.write_text(json.dumps({"assistant": ["I am an AI", SCRIPT_ATTACK], IMG_ATTACK: ["I grew up in"]}))
    directions = tmp / "d.npy"
    np.save(directions, np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32))  # named d0
    steered = personamine.steer(features_from=str(mined), top=2, prompts=str(prompts), controls=str(controls),
                                continuations=str(conts), ppl_corpus=str(corpus), ppl_tokens=40, ppl_ctx_len=16,
                                max_new_tokens=4, alphas=[-0.5, 0.5, 1.0], output=str(tmp / "steer.h5"),
                                directions=str(directions), interventions=[
                                    "add:[d0]@1:3=-0.5", "add:[d0]@1:3=0.5", "cap:[d0]@1:3=p50"], progress=False)
    # A response that is markup: the tiny model would never write one, so put it in the real file.
    with h5py.File(steered, "r+") as f:
        responses = f["persona/responses"]
        responses[1, 0], responses[2, 1] = SCRIPT_ATTACK, IMG_ATTACK
    return mined, steered


def test_steering_section_renders_curves_tables_and_generations(browser, files, tmp_path):
    mined, steered = files
    page = tmp_path / "report.html"
    assert main(["report", str(mined), "-o", str(page), "--steering", str(steered)]) == 0
    res = personamine.read_steering(steered)
    open_report(browser, page)
    wait_for(browser, "return document.getElementById('pm-steering').getAttribute('data-ready') === '1'")
    shown = browser.execute_script("""
        const root = document.getElementById('pm-steering');
        const groups = Array.from(root.querySelectorAll('section.st-group')).map(sec => ({
          features: sec.getAttribute('data-features'), directions: sec.getAttribute('data-directions'),
          title: sec.querySelector('h3').textContent,
          link: Array.from(sec.querySelectorAll('h3 a')).map(a => a.getAttribute('href')),
          metrics: Array.from(sec.querySelectorAll('table.st-metrics tbody tr')).map(tr =>
              [Number(tr.getAttribute('data-intervention')), ...Array.from(tr.children).map(td => td.textContent)]),
          curves: Array.from(sec.querySelectorAll('.st-curve')).map(c => ({
              cls: c.className, width: c.getBoundingClientRect().width,
              lines: Array.from(c.querySelectorAll('polyline')).map(l => [l.getAttribute('data-series'),
                  JSON.parse(l.getAttribute('data-values')), l.getAttribute('points').split(' ').length])})),
          heads: Array.from(sec.querySelector('table.st-gen').querySelectorAll('th')).map(th => th.textContent),
          cells: Array.from(sec.querySelector('table.st-gen').querySelectorAll('tbody tr')).map(tr =>
              Array.from(tr.children).map(td => td.textContent)),
          visible: sec.querySelector('table.st-gen').getBoundingClientRect().height,
        }));
        return {groups: groups, text: root.textContent, imgs: root.querySelectorAll('img').length,
                scripts: root.querySelectorAll('script').length, pwned: window.__pwned === undefined ? null : 1,
                features: document.querySelectorAll('section.feature').length};""")
    assert shown["pwned"] is None and shown["imgs"] == 0 and shown["scripts"] == 0
    assert shown["features"] == 3  # the mining part of the page is all there
    groups = {g["features"]: g for g in shown["groups"] if g["features"]}
    assert list(groups) == ["3", "7", "3,7"]
    _direction_group_shows_the_file(res, [g for g in shown["groups"] if not g["features"]])
    assert groups["3"]["link"] == ["#f-3"] and groups["3,7"]["link"] == ["#f-3", "#f-7"]
    summary = res.summary()
    for key, g in groups.items():
        features = tuple(int(f) for f in key.split(","))
        rows = [i for i in range(1, len(res.names)) if res.features_of(i) == features]
        assert [m[0] for m in g["metrics"]] == [0] + rows
        assert g["metrics"][1][1] == res.names[rows[0]]
        # Generations in columns: unsteered, then each of the group's interventions; each cell is the text itself.
        assert g["heads"] == ["persona prompt", "unsteered"] + [res.names[i] for i in rows]
        assert [row[0] for row in g["cells"]] == ["Who are you?", SCRIPT_ATTACK]
        for p, row in enumerate(g["cells"]):
            assert row[1:] == [res.sets["persona"].responses[i][p] for i in [0] + rows]
        assert g["visible"] > 0
        # The curves over alpha: unsteered at 0 plus the three alphas, each metric's values those of the file.
        adds = sorted((res.alphas[i], i) for i in rows if res.kinds[i] == "add")
        order = [i for _, i in sorted(adds + [(0.0, 0)])]
        curves = {c["cls"].split()[1]: c for c in g["curves"]}
        assert set(curves) == {"st-logprob", "st-kl", "st-ppl", "st-act"}
        assert all(c["width"] > 100 for c in curves.values())
        lines = dict((name, (values, n)) for name, values, n in curves["st-logprob"]["lines"])
        assert set(lines) == {"assistant (persona)", "assistant (control)", f"{IMG_ATTACK} (persona)",
                              f"{IMG_ATTACK} (control)"}
        values, n_points = lines["assistant (persona)"]
        assert n_points == 4
        for got, i in zip(values, order, strict=True):
            assert got == pytest.approx(summary[i]["persona_delta_assistant"], rel=1e-4, abs=1e-9)
        kl = dict((name, values) for name, values, _ in curves["st-kl"]["lines"])
        assert kl["control"] == pytest.approx([summary[i]["control_kl"] for i in order], rel=1e-4, abs=1e-12)
        ppl = curves["st-ppl"]["lines"][0][1]
        assert ppl == pytest.approx([res.perplexity[i] for i in order], rel=1e-4)
        assert not any(v is None or (isinstance(v, float) and math.isnan(v)) for v in ppl)
    # Hostile strings from every source are shown as text: prompts, continuation sets, responses.
    for attack in (SCRIPT_ATTACK, IMG_ATTACK):
        assert attack in shown["text"]
    assert groups["3"]["cells"][0][2] == SCRIPT_ATTACK  # the response planted at intervention 1, prompt 0


def _direction_group_shows_the_file(res, found):
    """The direction's own group: its adds as curves over alpha (with the projection before and after), the cap's
    projection and how often it acted, its generations in columns."""
    assert [g["directions"] for g in found] == ["[d0]@1:3"]
    g = found[0]
    assert g["title"].startswith("direction [d0]@1:3")
    rows = [i for i in range(1, len(res.names)) if res.directions_of(i) == ("[d0]@1:3",)]
    assert [res.names[i] for i in rows] == ["add [d0]@1:3=-0.5", "add [d0]@1:3=0.5", "cap [d0]@1:3=p50"]
    assert [m[0] for m in g["metrics"]] == [0] + rows
    stats = res.sets["persona"].direction_stats
    cap = np.nonzero(res.direction_intervention == rows[2])[0]
    cell = g["metrics"][3][-1]
    for r in cap:  # each layer: before -> after, and the share of positions the cap acted on
        share = round(100 * float(stats["active_fraction"][r]), 1)
        assert f"L{res.direction_layer[r]}: " in cell and f"(cap {share:g}%)" in cell
    assert g["heads"] == ["persona prompt", "unsteered"] + [res.names[i] for i in rows]
    curves = {c["cls"].split()[1]: c for c in g["curves"]}
    assert set(curves) == {"st-logprob", "st-kl", "st-ppl", "st-proj"}
    lines = {name: values for name, values, _ in curves["st-proj"]["lines"]}
    first = [np.nonzero(res.direction_intervention == i)[0][0] for i in rows[:2]]
    assert lines["after"][0] == pytest.approx(stats["after_mean"][first[0]], rel=1e-4)  # alpha -0.5, layer 1
    assert lines["after"][2] == pytest.approx(stats["after_mean"][first[1]], rel=1e-4)  # alpha 0.5 (0 between)
    assert lines["after"][1] is None  # the unsteered model has no direction rows


def test_a_run_of_several_readouts_links_steering_to_its_sae_readouts_features(browser, files, tiny_model_dir,
                                                                              tiny_sae_dir, tmp_path):
    """The page of an index prefixes each readout's anchors; the steering section links to the first SAE readout's."""
    mined, steered = files
    np.save(tmp_path / "v.npy", np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32))
    cfg = personamine.read_results(mined).config
    index = personamine.mine(**{**cfg, "directions": str(tmp_path / "v.npy"), "direction_layer": SAE_LAYER,
                                "output": str(tmp_path / "both.h5"), "work_dir": None})
    page = personamine.report(index, tmp_path / "both.html", steering=steered)
    open_report(browser, page)
    wait_for(browser, "return document.getElementById('pm-steering').getAttribute('data-ready') === '1'")
    links = browser.execute_script("""
        return Array.from(document.querySelectorAll('#pm-steering section.st-group h3 a')).map(a =>
            [a.getAttribute('href'), !!document.getElementById(a.getAttribute('href').slice(1))]);""")
    assert links and all(href.startswith(f"#L{SAE_LAYER}-f-") and found for href, found in links), links
