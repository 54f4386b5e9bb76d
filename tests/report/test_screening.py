"""The report's screening section: the top and the bottom of each direction's ranking, both responses side by side,
every text escaped; ``report(..., screening=)`` puts it on the page."""

from __future__ import annotations

import re

import numpy as np
import pytest

import personamine
from personamine.files.screen import read_screening, write_screening
from personamine.report.screening import screening_html


def _file(tmp_path, n: int = 30):
    rng = np.random.default_rng(0)
    columns = {"unit": np.zeros(n, np.int64), "row": np.arange(n), "document": np.arange(n),
               "response_tokens": np.full(n, 5, np.int32), "own_tokens": np.full(n, 4, np.int32),
               "own_finished": np.ones(n, bool), "projection_response": rng.standard_normal((n, 1)),
               "projection_own": rng.standard_normal((n, 1))}
    texts = {"prompt": [f"user asks {i}" for i in range(n)], "response": [f"<b>data {i}</b>" for i in range(n)],
             "own": [f"own & {i}" for i in range(n)]}
    return write_screening(tmp_path / "s.h5", names=["L2/response"], units=np.eye(1, 8, dtype=np.float32),
                           columns=columns, texts=texts, attrs={"config": "{}", "layer": 2, "corpus": "c.jsonl",
                                                                "rows_not_samples": 3})


def test_top_and_bottom_side_by_side_escaped(tmp_path):
    res = read_screening(_file(tmp_path))
    page = screening_html(res, n=4)
    ranks = [int(r) for r in re.findall(r'<tr><td class="num">(\d+)</td>', page)]
    assert ranks == [1, 2, 3, 4, 27, 28, 29, 30]
    first = int(res.order[0, 0])
    assert f"&lt;b&gt;data {first}&lt;/b&gt;</td><td class=\"text\">own &amp; {first}</td>" in page
    assert "<b>data" not in page and "30 samples of c.jsonl (3 rows were no sample), layer 2" in page


def test_report_shows_the_section(tiny_mining_file, tmp_path):
    page = personamine.report(tiny_mining_file, tmp_path / "r.html", screening=_file(tmp_path)).read_text()
    assert 'id="pm-screening"' in page and "Screening by projection difference" in page


def test_the_section_in_a_browser_shows_the_files_ranking_as_text(browser, tiny_mining_file, tmp_path):
    """In headless Chromium: the rows are the file's ranking with its numbers, the markup in a response is text, and
    the page logs no error."""
    from fixtures import open_report

    path = _file(tmp_path)
    res = read_screening(path)
    page = personamine.report(tiny_mining_file, tmp_path / "r.html", screening=path)
    browser.get_log("browser")  # what earlier pages logged
    open_report(browser, page)
    rows = browser.execute_script("""
        return Array.from(document.querySelectorAll('#pm-screening table.pm-screen-table tr')).slice(1)
          .filter(tr => tr.children.length === 8)
          .map(tr => Array.from(tr.children).map(td => td.textContent));""")
    order = res.order[0].tolist()
    shown = [int(r[1]) for r in rows]
    assert shown == [int(res.document[i]) for i in order[:10] + order[-10:]]
    for r in rows:
        i = int(r[1])
        assert float(r[2]) == pytest.approx(res.difference[i, 0], abs=5e-4)
        assert r[6] == res.response[i] and r[7] == res.own[i]  # "<b>data i</b>" shown as it is written
    assert browser.execute_script("return document.querySelectorAll('#pm-screening b, #pm-screening script').length") \
        == 0
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
