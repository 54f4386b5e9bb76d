"""The page shell: no network at all (its Content-Security-Policy), the data embedded as JSON that no corpus text
can break out of, the title escaped, the extra sections after the page's own script."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from personamine.report.assets import CSS, JS
from personamine.report.page import render_page, script_json

CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"
HOSTILE = ["</script><script>alert(1)</script>", "<!-- a comment", "a & b > c", "line\u2028sep\u2029para", "\"'`",
           "</SCRIPT >", "<![CDATA[x]]>", "ünï ✓ 🙂"]


class Page(HTMLParser):
    """What a browser's parser sees: elements in order, meta tags, the text of each script."""

    def __init__(self) -> None:
        super().__init__()
        self.tags, self.metas, self.scripts, self.title = [], [], [], None
        self._in = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "meta":
            self.metas.append(dict(attrs))
        if tag in ("script", "title"):
            self._in = (tag, dict(attrs), [])

    def handle_endtag(self, tag):
        if self._in and tag == self._in[0]:
            kind, attrs, text = self._in
            if kind == "script":
                self.scripts.append((attrs, "".join(text)))
            else:
                self.title = "".join(text)
            self._in = None

    def handle_data(self, data):
        if self._in:
            self._in[2].append(data)


def parsed(page: str) -> Page:
    p = Page()
    p.feed(page)
    p.close()
    return p


def test_script_json_has_no_angle_bracket_and_parses_back():
    data = {"texts": HOSTILE, "n": [1, 2.5, None, True], "nested": {"</script>": ["<b>"]}}
    text = script_json(data)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text and "\u2029" not in text
    assert json.loads(text) == data
    assert "ünï ✓ 🙂" in text  # not ascii-escaped: the page stays small
    with pytest.raises(ValueError):  # NaN is not JSON: the browser's JSON.parse would refuse the page
        script_json({"x": float("nan")})


def test_the_page_holds_its_data_and_nothing_that_reaches_the_network():
    data = {"features": [{"id": 3, "text": t} for t in HOSTILE], "title": HOSTILE[0]}
    extra = '<section id="pm-extra"><script type="application/json" id="x">{"k": 1}</script></section>'
    page = render_page(data, title="report: <b>mine</b> & co", extra=extra)
    assert page.startswith("<!DOCTYPE html>\n<html lang=\"en\">") and page.endswith("</body></html>\n")
    p = parsed(page)
    csp = [m for m in p.metas if m.get("http-equiv") == "Content-Security-Policy"]
    assert csp == [{"http-equiv": "Content-Security-Policy", "content": CSP}]
    assert p.tags.index("meta") < p.tags.index("style") < p.tags.index("body")  # the policy comes before anything
    assert p.title == "report: <b>mine</b> & co"  # escaped in the file, the same text on screen
    assert "<b>mine</b>" not in page
    assert [attrs.get("id") for attrs, _ in p.scripts] == ["pm-data", None, "x"]  # data, the page's script, extra
    assert json.loads(p.scripts[0][1]) == data and p.scripts[1][1] == JS
    assert f"<style>{CSS}</style>" in page
    assert page.index('id="pm-extra"') > page.index(JS)
    for anchor in ('id="pm-header"', 'id="pm-index"', 'id="pm-features"', "<noscript>"):
        assert page.count(anchor) == 1, anchor


def test_an_empty_report_renders():
    p = parsed(render_page({}, title=""))
    assert p.title == "" and json.loads(p.scripts[0][1]) == {}
