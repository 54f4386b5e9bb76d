"""The browser in a real headless Chromium: the 131,072-feature index loads, sorts, filters and opens any feature; a
feature page's sections are the report's own, element for element; hostile text from the file, its vocabulary and
its explanations stays text."""

from __future__ import annotations

import time

import numpy as np
from fixtures import (
    BIG_FEATURES,
    IMG_ATTACK,
    SCRIPT_ATTACK,
    http_json,
    http_request,
    open_page,
    open_report,
    render_section,
    synthetic_explanations,
    synthetic_results,
    wait_for,
)

import personamine

ROWS = ("return Array.from(document.querySelectorAll('#pm-main tbody tr'))"
        ".map(r => Number(r.getAttribute('data-feature')))")


def click_and_wait(driver, script: str) -> float:
    """Click what ``script`` returns (a link or a button that loads a new page); seconds until that page is ready."""
    driver.execute_script("document.body.removeAttribute('data-ready')")
    began = time.perf_counter()
    driver.execute_script(f"({script}).click()")
    wait_for(driver, "return document.body && document.body.getAttribute('data-ready') === '1'")
    return time.perf_counter() - began


def test_index_sorts_filters_and_opens_any_feature(browser, big_server, big_results):
    load = open_page(browser, big_server.url)
    assert browser.execute_script(ROWS) == list(range(50))
    assert "131,072 features" in browser.execute_script("return document.getElementById('pm-header').textContent")
    # Sorting: a click on a heading; the rows are the server's order, largest first.
    sort = click_and_wait(browser, "Array.from(document.querySelectorAll('#pm-main th a')).find(a => "
                                   "a.textContent === 'max')")
    _, expected = http_json("GET", f"{big_server.url}api/index?sort=max&dir=desc")
    assert browser.execute_script(ROWS) == expected["row_features"]
    res = personamine.read_results(big_results, features=expected["row_features"])
    maxima = [float(res.max[res.feature_index(f)]) for f in expected["row_features"]]
    assert maxima == sorted(maxima, reverse=True)
    assert browser.execute_script("return document.querySelector('#pm-main th.sorted').textContent") == "max ▼"
    # The next page keeps the order.
    paged = click_and_wait(browser, "Array.from(document.querySelectorAll('.pager a')).find(a => "
                                    "a.textContent === 'next ›')")
    _, second = http_json("GET", f"{big_server.url}api/index?sort=max&dir=desc&page=1")
    assert browser.execute_script(ROWS) == second["row_features"]
    # Filtering: the form, by feature id; then the feature's page from its row.
    wanted = BIG_FEATURES - 7
    browser.execute_script("document.querySelector('form.pm-filter input[name=q]').value = arguments[0]", str(wanted))
    filtered = click_and_wait(browser, "document.querySelector('form.pm-filter button')")
    assert wanted in browser.execute_script(ROWS)
    opened = click_and_wait(browser, f"document.querySelector('#pm-main tr[data-feature=\"{wanted}\"] a')")
    assert browser.current_url == f"{big_server.url}feature/0/{wanted}"
    shown = browser.execute_script(
        "const s = document.getElementById(arguments[0]); return [s.getAttribute('data-rendered'), "
        "s.querySelectorAll('.top .ctx').length, s.querySelectorAll('svg.hist rect').length]", f"f-{wanted}")
    one = personamine.read_results(big_results, features=[wanted])
    assert shown == ["1", len(one.examples(wanted)), int(np.count_nonzero(one.histogram[0]))]
    print(f"131,072 features in Chromium: index {load:.2f} s, sort {sort:.2f} s, next page {paged:.2f} s, "
          f"filter {filtered:.2f} s, feature page {opened:.2f} s")
    assert max(load, sort, paged, filtered) < 5 and opened < 10  # loose: measured in benchmarks/serve_index.py


SECTION = """
const s = document.getElementById(arguments[0]).cloneNode(true);
s.querySelectorAll('.panel.neighbours').forEach(e => e.remove());
return s.outerHTML;"""


def test_a_feature_page_is_the_reports_section(browser, big_server, big_results, big_explanations, tmp_path):
    """The same renderers, the same data: the served section is the report's, element for element (the served page
    adds its neighbours panel)."""
    for fid in (5, 99_999):
        page = personamine.report(big_results, tmp_path / f"r{fid}.html", features=[fid],
                                  explanations=big_explanations)
        open_report(browser, page)
        render_section(browser, fid)
        wait_for(browser, "return document.body.getAttribute('data-explanations') === '1'")
        static = browser.execute_script(SECTION, f"f-{fid}")
        open_page(browser, f"{big_server.url}feature/0/{fid}")
        served = browser.execute_script(SECTION, f"f-{fid}")
        assert served == static and "explanation" in served and len(served) > 2000
        assert browser.execute_script("return document.querySelector('.panel.neighbours .chart-note').textContent"
                                      ) == "no neighbours: the file records no SAE"


def test_hostile_text_in_the_file_vocabulary_and_explanations_stays_text(browser, tmp_path):
    breakout = "</script><script>window.__pwned=3</script>"
    vocab = {i: (f"Ġw{i}", f" w{i}") for i in range(5000)}
    vocab[0] = ("<s>", "<s>")
    vocab.update({1: ("x", breakout), 2: ("<!--", "<!--"), 3: ("Ċ", "\n"), 4: ("A", IMG_ATTACK), 5: ("&", "&amp;")})
    path = synthetic_results(tmp_path / "hostile.h5", 40, vocab=vocab, windows_per_feature=40,
                             attrs={"model": IMG_ATTACK, "corpus": breakout})
    ids = personamine.read_results(path).feature_ids
    ex = synthetic_explanations(tmp_path / "ex.h5", ids, hostile={int(ids[0]): SCRIPT_ATTACK, int(ids[1]): IMG_ATTACK})
    with personamine.serve(path, explanations=ex, port=0, inspect=False, quiet=True) as server:
        for url in (server.url, f"{server.url}?q=%3Cimg", f"{server.url}?q=script&sort=explanation",
                    f"{server.url}feature/0/{int(ids[0])}", f"{server.url}feature/0/{int(ids[1])}",
                    f"{server.url}?q=" + "%3C" * 150):
            _, headers, body = http_request("GET", url)
            html = body.decode()
            assert "<script>window" not in html and "<img" not in html and "<!--" not in html
            assert html.count("<script") == html.count("</script>")
            assert "default-src 'none'" in headers["content-security-policy"]
            open_page(browser, url)
            assert browser.execute_script("return typeof window.__pwned") == "undefined"
            assert browser.execute_script("return document.querySelectorAll('#pm-main script, #pm-main img, "
                                          "#pm-header img, #pm-header script').length") == 0
        open_page(browser, f"{server.url}feature/0/{int(ids[1])}")
        assert browser.execute_script("return document.querySelector('.explanation .text').textContent") == IMG_ATTACK
        open_page(browser, f"{server.url}?q=%3Cimg")
        cells = browser.execute_script("return Array.from(document.querySelectorAll('#pm-main td.expl'))"
                                       ".map(td => td.textContent)")
        assert IMG_ATTACK in cells
        header = browser.execute_script("return document.getElementById('pm-header').textContent")
        assert IMG_ATTACK in header and breakout in header
