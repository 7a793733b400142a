"""The index page in a real browser: projects appear with their view link, broken folders with the reason."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def test_index_lists_projects(live_server, page):
    page.goto(live_server.url)
    card = page.locator("[data-project=toy]")
    card.wait_for(timeout=10_000)
    assert "500 tokens" in card.inner_text()
    assert card.locator("a.open").get_attribute("href") == "explorer.html?project=toy"
    assert "missing.h5" in page.locator("#broken").inner_text()
    assert page.locator("#error").is_hidden()
    assert page.js_errors == []
