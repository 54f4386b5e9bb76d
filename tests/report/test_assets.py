"""The page's stylesheet and script: inline, so the report is one file; nothing in them fetches, imports or links to
anything outside it, nothing builds markup from strings, and neither can end its own element early."""

from __future__ import annotations

import re

from personamine.report.assets import CSS, JS

SVG_NS = "http://www.w3.org/2000/svg"  # a namespace name that createElementNS needs: never fetched


def test_no_url_but_the_svg_namespace():
    urls = re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", CSS + JS)
    assert urls == [SVG_NS]
    assert not re.search(r"\b(?:ftp|wss?|file|blob)://", CSS + JS)


def test_the_stylesheet_loads_nothing():
    for pattern in (r"url\s*\(", r"@import", r"@font-face", r"image-set\s*\(", r"expression\s*\("):
        assert not re.search(pattern, CSS, re.I), pattern
    assert "</style" not in CSS.lower()


def test_the_script_builds_elements_never_markup_and_never_fetches():
    forbidden = [r"\binnerHTML\b", r"\bouterHTML\b", r"insertAdjacentHTML", r"document\.write", r"\beval\s*\(",
                 r"new\s+Function", r"\bfetch\s*\(", r"XMLHttpRequest", r"\bimport\s*\(", r"WebSocket",
                 r"\.src\s*=", r"setAttribute\(\s*\"src\"", r"sendBeacon", r"EventSource", r"\bWorker\s*\("]
    for pattern in forbidden:
        assert not re.search(pattern, JS), pattern
    assert "</script" not in JS.lower() and "<!--" not in JS
    assert "textContent" in JS and "createElementNS(SVG" in JS  # how it does build the page
    # Links it makes go to the page's own anchors or to a URL the data carries (Neuronpedia), never one of its own.
    hrefs = re.findall(r"setAttribute\(\"href\",\s*([^)]*)\)", JS)
    assert hrefs and all(h.startswith(('"#', "f.")) for h in hrefs), hrefs


def test_the_script_is_strict_and_self_contained():
    # Three strict closures: the renderers the browser shares (one global, ``personamine``), a directions readout's
    # part (``personamineDirections``), then the report's page.
    from personamine.report.assets import DIRECTIONS_JS, RENDER_JS, REPORT_JS

    assert JS == RENDER_JS + DIRECTIONS_JS + REPORT_JS
    assert RENDER_JS.strip().startswith("var personamine = (function () {\n  \"use strict\";")
    assert DIRECTIONS_JS.strip().startswith("var personamineDirections = (function () {\n  \"use strict\";")
    assert REPORT_JS.strip().startswith("(function () {\n  \"use strict\";")
    assert all(part.strip().endswith("})();") for part in (RENDER_JS, DIRECTIONS_JS, REPORT_JS))
    assert 'document.getElementById("pm-data").textContent' in JS  # its data is the page's embedded JSON
