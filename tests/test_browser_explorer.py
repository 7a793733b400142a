"""The explorer page in a real browser: the plot draws, a mouse brush selects what the select API selects, a match
lists results that move the view, the address restores the view, and bad addresses show their error."""
from __future__ import annotations

import json
import urllib.parse
import urllib.request

import pytest

from tests.conftest import make_token_project

pytestmark = pytest.mark.browser

LAYER = "rnn.l0.h"
SIZE = 40


@pytest.fixture
def data_dir(data_dir):
    """The shared data folder plus a project as wide as a real LSTM layer (650 units)."""
    make_token_project(data_dir / "wide", name="wide", n_tokens=600, units=650, seed=1)
    return data_dir


def api(server, route: str, **params) -> dict:
    with urllib.request.urlopen(f"{server.url}api/{route}?{urllib.parse.urlencode(params)}") as response:
        return json.load(response)


def open_view(page, server, query: str) -> None:
    page.goto(f"{server.url}explorer.html?{query}")
    page.locator("#words .cell").first.wait_for(timeout=10_000)


def inked_share(page) -> float:
    """The share of the plot canvas's pixels that differ from its white background."""
    return page.evaluate("""() => {
        const canvas = document.getElementById("plot");
        const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        let inked = 0;
        for (let i = 0; i < data.length; i += 4) if (data[i] < 250 || data[i + 1] < 250 || data[i + 2] < 250) inked++;
        return inked / (data.length / 4);
    }""")


def drag_words(page, first: int, last: int) -> None:
    """Press on the word at token `first`, drag to the word at `last`, release."""
    start = page.locator(f"#words .cell[data-token='{first}']").bounding_box()
    end = page.locator(f"#words .cell[data-token='{last}']").bounding_box()
    page.mouse.move(start["x"] + start["width"] / 2, start["y"] + 5)
    page.mouse.down()
    page.mouse.move(end["x"] + end["width"] / 2, end["y"] + 5, steps=5)
    page.mouse.up()


def shown_units(page) -> list[int]:
    return [int(unit) for unit in page.locator("#units li").evaluate_all("items => items.map(i => i.dataset.unit)")]


def test_brush_select_match_and_jump(live_server, page):
    open_view(page, live_server, f"project=toy&size={SIZE}")
    assert page.locator("#words .cell").count() == SIZE
    assert inked_share(page) > 0.02, "the plot canvas is blank"

    # The first two-token brush in view that selects units, as the select API answers it.
    b0, expected = next((b0, answer["units"]) for b0 in range(1, SIZE - 2)
                        if (answer := api(live_server, "explorer/toy/select", layer=LAYER, b0=b0, b1=b0 + 2))["units"])
    drag_words(page, b0, b0 + 1)
    page.wait_for_function("n => document.querySelectorAll('#units li').length === n", arg=len(expected))
    assert shown_units(page) == expected
    assert f"b0={b0}&b1={b0 + 2}" in page.url
    assert page.locator("#words .cell.brushed").count() == 2

    page.click("#match")
    page.locator("#results li").first.wait_for(timeout=10_000)
    answer = api(live_server, "explorer/toy/match", layer=LAYER, units=",".join(map(str, expected)), threshold=0.3)
    assert page.locator("#results li").count() == len(answer["results"])
    starts = [int(start) for start in page.locator("#results li").evaluate_all("items => items.map(i => i.dataset.start)")]
    assert starts == [result["start"] for result in answer["results"]]
    assert page.locator(".histogram").count() == 2

    # A result outside the view: clicking it centres the view on it and brushes it.
    index, result = next((i, r) for i, r in enumerate(answer["results"]) if r["start"] >= 2 * SIZE)
    page.locator(f"#results li[data-result='{index}']").click()
    position = max(0, min(500 - SIZE, result["start"] - (SIZE - result["length"]) // 2))
    page.wait_for_function("p => document.querySelector('#words .cell')?.dataset.token === String(p)", arg=position)
    assert page.input_value("#position") == str(position)
    assert page.locator("#words .cell.brushed").count() == result["length"]
    assert f"pos={position}" in page.url and f"b0={result['start']}&b1={result['stop']}" in page.url

    # The address restores the view: position, brush, selected units and the match.
    page.reload()
    page.locator("#results li").first.wait_for(timeout=10_000)
    assert page.input_value("#position") == str(position)
    assert shown_units(page) == expected
    assert page.locator("#words .cell.brushed").count() == result["length"]
    page.screenshot(path="/tmp/explorer.png", full_page=True)
    assert page.locator("#error").is_hidden()
    assert page.js_errors == []


def test_search_jumps_to_hits(live_server, page):
    open_view(page, live_server, f"project=toy&size={SIZE}&pos=200")
    hits = api(live_server, "explorer/toy/search", q="the cat", limit=1000)["hits"]
    page.fill("#query", "the cat")
    page.press("#query", "Enter")
    first = next(hit for hit in hits if hit["start"] >= 200)
    page.wait_for_function("n => document.querySelectorAll('#words .cell.hit').length >= n", arg=2)
    assert page.locator("#hit-status").inner_text() == f"{hits.index(first) + 1} / {len(hits)}"
    assert page.locator(f"#words .cell.hit[data-token='{first['start']}']").count() == 1
    assert page.js_errors == []


def test_wide_layer_stays_fluid(live_server, page):
    """650 units x 200 tokens: each redraw of the plot stays well inside a frame budget."""
    open_view(page, live_server, "project=wide&size=200&b0=50&b1=51")
    page.locator("#units li").first.wait_for(timeout=10_000)
    timings = []
    for _ in range(5):
        page.click("#step-forward")
        page.wait_for_timeout(50)
        timings.append(float(page.locator("#plot").get_attribute("data-draw-ms")))
    assert inked_share(page) > 0.2
    assert max(timings) < 100, f"plot draws took {timings} ms"


@pytest.mark.parametrize(("query", "message"), [
    ("project=toy&layer=nope", "has no layer 'nope'; known: rnn.l0.h, rnn.l0.c"),
    ("project=toy&pos=abc", "pos: must be a whole number"),
    ("project=ghost", "unknown project 'ghost'"),
])
def test_bad_address_shows_error(live_server, page, query, message):
    page.goto(f"{live_server.url}explorer.html?{query}")
    error = page.locator("#error")
    error.wait_for(state="visible", timeout=10_000)
    assert message in error.inner_text()
    assert page.js_errors == []
