"""The unit inspector in a real browser on the tiny units demo: cards with their highlighted top images loaded, sorting
by label, a unit's detail, an ablation with its per-class effect next to the label, a feature search from a box drawn
or a region brushed on an image, and API errors shown."""
from __future__ import annotations

import json
import urllib.parse
import urllib.request

import pytest
import yaml


pytestmark = pytest.mark.browser


@pytest.fixture(scope="session")
def units_data(tiny_demo):
    """A data folder with the tiny units demo, built once per session."""
    return tiny_demo("units").parent


@pytest.fixture
def data_dir(units_data):
    """The live server of these tests serves the session's units data folder."""
    return units_data


@pytest.fixture(scope="session")
def project(units_data) -> str:
    return yaml.safe_load((units_data / "demo-units" / "seqvis.yml").read_text(encoding="utf-8"))["name"]


def api(server, project: str, route: str, **params) -> dict:
    url = f"{server.url}api/units/{project}/{route}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url) as response:
        return json.load(response)


def card_units(page) -> list[int]:
    return [int(unit) for unit in page.eval_on_selector_all(".unit-card", "cards => cards.map(c => c.dataset.unit)")]


def test_cards_sort_detail_and_ablation(live_server, page, project):
    layer = api(live_server, project, "layers")["layers"][-1]["name"]
    page.goto(f"{live_server.url}units.html?project={project}")
    page.wait_for_selector(".unit-card")
    assert card_units(page) == [c["unit"] for c in api(live_server, project, "units", layer=layer)["units"]]
    page.wait_for_function("""() => {
        const cards = [...document.querySelectorAll('.unit-card')].slice(0, 4);
        const images = cards.flatMap(card => [...card.querySelectorAll('img')]);
        return images.length === 16 && images.every(image => image.complete && image.naturalWidth > 0);
    }""", timeout=15_000)
    assert page.locator("#detectors .bar-column").count() > 0 or page.locator("#detectors .note").count() == 1

    page.select_option("#sort", "label")
    by_label = [c["unit"] for c in api(live_server, project, "units", layer=layer, sort="label")["units"]]
    page.wait_for_function("units => [...document.querySelectorAll('.unit-card')].map(c => +c.dataset.unit)"
                           ".join() === units.join()", arg=by_label)
    assert "sort=label" in page.url

    unit = by_label[0]
    page.click(f".unit-card[data-unit='{unit}']")
    page.wait_for_function("unit => document.getElementById('detail-title').textContent.startsWith(`Unit ${unit} `)",
                           arg=unit)
    assert f"unit={unit}" in page.url
    detail = api(live_server, project, "unit", layer=layer, unit=unit)
    assert page.locator("#detail-body .unit-label").inner_text() == detail["label"]
    assert page.locator("#detail-body .concepts tr").count() == len(detail["concepts"])

    page.click("#ablate-unit")
    page.wait_for_selector("#ablation .effects tbody tr", timeout=20_000)
    classes = api(live_server, project, "classes")["classes"]
    rows = page.locator("#ablation .effects tbody tr")
    assert rows.count() == len(classes)
    assert [rows.nth(i).get_attribute("data-class") for i in range(len(classes))] == classes
    assert detail["label"] in page.locator("#ablation .claim").first.inner_text()
    assert page.locator("#error").is_hidden()

    top = detail["top"][0]["item"]                         # search from the unit's best image
    page.click("#detail-body .detail-thumbs figure >> nth=0")
    page.wait_for_function("item => document.getElementById('query-image').src.endsWith(`/image/${item}`)", arg=top)
    frame = page.locator("#query-frame").bounding_box()
    page.mouse.move(frame["x"] + frame["width"] * 0.2, frame["y"] + frame["height"] * 0.2)
    page.mouse.down()
    page.mouse.move(frame["x"] + frame["width"] * 0.6, frame["y"] + frame["height"] * 0.7, steps=4)
    page.mouse.up()
    page.wait_for_selector("#search-results .search-result", timeout=60_000)
    box = urllib.parse.parse_qs(urllib.parse.urlparse(page.url).query)["box"][0]
    found = api(live_server, project, "search", layer=layer, item=top, box=box, k=12)["results"]
    assert [int(item) for item in page.eval_on_selector_all("#search-results .search-result",
                                                             "nodes => nodes.map(n => n.dataset.item)")] == \
        [result["item"] for result in found]
    page.wait_for_function("""() => [...document.querySelectorAll('#search-results img')]
        .every(image => image.complete && image.naturalWidth > 0)""", timeout=15_000)
    page.check("input[name=mode][value=brush]")           # brush a region instead
    page.locator("#query-frame").scroll_into_view_if_needed()
    frame = page.locator("#query-frame").bounding_box()    # results above may have moved it
    page.mouse.move(frame["x"] + frame["width"] * 0.3, frame["y"] + frame["height"] * 0.3)
    page.mouse.down()
    page.mouse.move(frame["x"] + frame["width"] * 0.5, frame["y"] + frame["height"] * 0.6, steps=4)
    page.mouse.up()
    page.wait_for_function("() => document.getElementById('search-status').textContent.includes('brushed')",
                           timeout=60_000)
    assert page.locator("#search-results .search-result").count() == 12

    page.reload()                                          # the view comes back from the address
    page.wait_for_function("unit => document.getElementById('detail-title').textContent.startsWith(`Unit ${unit} `)",
                           arg=unit)
    assert page.input_value("#sort") == "label"
    page.wait_for_function("item => document.getElementById('query-image').src.endsWith(`/image/${item}`)", arg=top)
    assert page.js_errors == []


def test_api_errors_are_shown(live_server, page, project):
    page.goto(f"{live_server.url}units.html?project={project}&layer=nosuch")
    page.wait_for_selector("#error:not([hidden])")
    assert "layer: unknown layer 'nosuch'" in page.inner_text("#error")
    page.goto(f"{live_server.url}units.html?project={project}&unit=999999")
    page.wait_for_selector("#error:not([hidden])")
    assert "unit: 999999 is not a unit" in page.inner_text("#error")
    assert page.js_errors == []
