"""The browser's style and scripts: nothing fetched from elsewhere (the page works offline under the report's
Content-Security-Policy), no inline handlers the policy would block, and no text inserted as HTML."""

from __future__ import annotations

import re

import pytest

from personamine.serve import assets

SCRIPTS = {name: getattr(assets, name) for name in ("COMMON_JS", "INDEX_JS", "FEATURE_JS", "INSPECT_JS", "ERROR_JS")}


@pytest.mark.parametrize("name", sorted(SCRIPTS) + ["CSS"])
def test_nothing_is_fetched_from_elsewhere(name):
    text = SCRIPTS.get(name, assets.CSS)
    assert not re.search(r"https?://|//cdn|@import|url\(", text)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_scripts_insert_text_as_text(name):
    text = SCRIPTS[name]
    assert "innerHTML" not in text and "outerHTML" not in text and "insertAdjacentHTML" not in text
    assert "document.write" not in text and "eval(" not in text and not re.search(r"\bon[a-z]+\s*=\s*\"", text)
