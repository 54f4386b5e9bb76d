"""The report's explanations section in a real headless Chromium: the table, its sorting, the text under each
feature, and hostile explanation text rendered as text."""

from __future__ import annotations

import math

import numpy as np
from fixtures import open_report, render_section, wait_for

import personamine
from personamine.files.explain import METRICS, ExplanationResults, write_explanations
from personamine.jobs.cli import main

HOSTILE = '<img src=x onerror="window.__pwned=3"> fires on "quotes" & <b>tags</b>'


def _explanations(path, feature_ids: list[int], detection: list[float], fuzzing: list[float]):
    n = len(feature_ids)
    scores = {s: {m: np.full(n, math.nan) for m in METRICS} for s in ("detection", "fuzzing")}
    scores["detection"]["balanced_accuracy"][:] = detection
    scores["fuzzing"]["balanced_accuracy"][:] = fuzzing
    scores["detection"]["auc"][:] = np.linspace(0.4, 0.9, n)
    for s in scores:
        scores[s]["n"][:], scores[s]["n_unanswered"][:] = 20, 1
    texts = [HOSTILE if i == 0 else f"explanation of feature {f}" for i, f in enumerate(feature_ids)]
    texts[9 if n > 9 else -1] = ""  # no explanation (the explainer failed): left out of the section
    parsed = np.ones(n, bool)
    parsed[8 if n > 8 else 0] = False
    return write_explanations(path, ExplanationResults(
        path=path, attrs={"model": "test-model", "backend": "openai"}, config={}, feature_ids=np.array(feature_ids),
        explanations=texts, parsed=parsed, scores=scores))


def test_explanations_section(browser, tiny_mining_file, tmp_path):
    ids = personamine.read_results(tiny_mining_file).feature_ids.tolist()
    detection = [0.5, 0.9, math.nan, 0.7, 0.6, 0.8, 0.55, 0.65, 0.75, 0.85]
    fuzzing = [0.6] * 10
    exp = _explanations(tmp_path / "ex.h5", ids + [999], detection + [0.1], fuzzing + [0.1])
    page = personamine.report(tiny_mining_file, tmp_path / "r.html", explanations=exp)
    open_report(browser, page)
    wait_for(browser, "return document.body.getAttribute('data-explanations') === '1'")
    rows = lambda: browser.execute_script(  # noqa: E731
        "return Array.from(document.querySelectorAll('#pm-explanations tbody tr')).map(r => "
        "Array.from(r.children).map(td => td.textContent))")
    got = rows()
    # Every explained feature of the report, in its order (999 is not in the mining file; the tenth has no text).
    assert [int(r[0]) for r in got] == ids[:9]
    assert got[0][-1] == HOSTILE and got[1][-1] == f"explanation of feature {ids[1]}"
    assert got[0][1] == "0.50" and got[2][1] == "–"  # detection balanced accuracy; NaN shows as a dash
    assert browser.execute_script("return window.__pwned === undefined")
    # Sort by detection balanced accuracy: best first, unscored last; a second click reverses (unscored still last).
    browser.execute_script("document.querySelector('#pm-explanations th[data-col=\"1\"]').click()")
    scored = sorted((d, f) for d, f in zip(detection[:9], ids[:9], strict=True) if not math.isnan(d))
    assert [int(r[0]) for r in rows()] == [f for _, f in scored[::-1]] + [ids[2]]
    browser.execute_script("document.querySelector('#pm-explanations th[data-col=\"1\"]').click()")
    assert [int(r[0]) for r in rows()] == [f for _, f in scored] + [ids[2]]
    # Under each feature's heading: its explanation and scores.
    sec = render_section(browser, ids[1])
    assert f"explanation of feature {ids[1]}" in sec["text"] and "balanced accuracy 0.90" in sec["text"]
    first = browser.execute_script(
        f"return document.getElementById('f-{ids[1]}').querySelector('h2').nextSibling.className")
    assert first == "explanation"
    unparsed = render_section(browser, ids[8])
    assert "(not in the format)" in unparsed["text"]
    assert "explanation" not in browser.execute_script(
        f"return document.getElementById('f-{ids[9]}').textContent")


def test_report_cli_takes_explanations(tiny_mining_file, tmp_path):
    ids = personamine.read_results(tiny_mining_file).feature_ids.tolist()
    exp = _explanations(tmp_path / "ex.h5", ids[:3], [0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    out = tmp_path / "cli.html"
    assert main(["report", str(tiny_mining_file), "-o", str(out), "--explanations", str(exp)]) == 0
    assert "pm-explanations-data" in out.read_text()
    assert main(["report", str(tiny_mining_file), "-o", str(tmp_path / "x.html"), "--explanations",
                 str(tiny_mining_file)]) == 2  # a mining file is not an explanations file
