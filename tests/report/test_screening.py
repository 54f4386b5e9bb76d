"""The report's screening section: the top and the bottom of each direction's ranking, both responses side by side,
every text escaped; ``report(..., screening=)`` puts it on the page."""

from __future__ import annotations

import re

import numpy as np

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
