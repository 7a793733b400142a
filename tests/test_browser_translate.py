"""The translation debugger in a real browser on the tiny translate demo: type a source and see the translation and
its attention as the API gives them, force a top-k word and see the output begin with it, drag attention onto a
source word, open a word's neighbours and see their training sentences, hover links a word across the views, and API
errors are shown."""
from __future__ import annotations

import json
import urllib.parse
import urllib.request

import pytest
import yaml


pytestmark = pytest.mark.browser


@pytest.fixture(scope="session")
def translate_data(tiny_demo):
    """A data folder with the tiny translate demo, built once per session."""
    return tiny_demo("translate").parent


@pytest.fixture
def data_dir(translate_data):
    """The live server of these tests serves the session's translate data folder."""
    return translate_data


@pytest.fixture(scope="session")
def project(translate_data) -> dict:
    return yaml.safe_load((translate_data / "demo-translate" / "seqvis.yml").read_text(encoding="utf-8"))


def api(server, project: dict, route: str, body: dict | None = None, **params) -> dict:
    url = f"{server.url}api/translate/{project['name']}/{route}?{urllib.parse.urlencode(params)}"
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def idle(page) -> None:
    """Wait until the page's decoding request has been answered and drawn."""
    page.wait_for_function("() => document.getElementById('body').getAttribute('aria-busy') === 'false'",
                           timeout=15_000)


def words(page, side: str) -> list[str]:
    return page.locator(f"#sequence .tok[data-side={side}]").all_inner_texts()


def translate(page, source: str) -> None:
    page.fill("#source", source)
    page.click("#translate")
    page.wait_for_function("source => new URLSearchParams(location.search).get('source') === source", arg=source)
    idle(page)


def test_translate_force_attend_and_neighbours(live_server, page, project):
    examples = project["extra"]["examples"]
    page.goto(f"{live_server.url}translate.html?project={project['name']}")
    idle(page)
    assert words(page, "enc")                              # the first example is translated on arrival

    source = examples[1]
    translate(page, source)
    expected = api(live_server, project, "translate", source=source, beam=5, n_best=5, top_k=5)
    best = expected["hypotheses"][0]
    assert words(page, "enc") == expected["source"]["tokens"]
    assert words(page, "dec") == best["tokens"]
    assert page.locator("#sequence .graph .edge").count() > 0
    assert page.locator("#matrix td").count() == len(best["tokens"]) * len(expected["source"]["tokens"])
    assert page.locator("#hypotheses li").count() == len(expected["hypotheses"])
    assert page.locator("#tree .node").count() == len(expected["tree"])

    # force a top-k alternative at the first step: the re-decoded output begins with it
    candidates = page.locator("#sequence .candidates").first
    alternative = candidates.locator(".cand:not(.chosen):not([data-word='</s>'])").first
    word = alternative.get_attribute("data-word")
    alternative.click()
    idle(page)
    assert words(page, "dec")[0] == word
    assert page.locator("#edits [data-edit=prefix]").is_visible()
    assert page.locator("#compare-original").is_visible() and page.locator("#compare-edited").is_visible()
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(page.url).query)["prefix"] == [word]

    # drag the second output word onto the last source word: all its attention goes there
    last = len(expected["source"]["tokens"]) - 1
    start = page.locator("#sequence .tok[data-side=dec]").nth(1).bounding_box()
    end = page.locator(f"#sequence .tok[data-side=enc][data-index='{last}']").bounding_box()
    page.mouse.move(start["x"] + start["width"] / 2, start["y"] + start["height"] / 2)
    page.mouse.down()
    page.mouse.move(end["x"] + end["width"] / 2, end["y"] + end["height"] / 2, steps=6)
    page.mouse.up()
    idle(page)
    assert page.locator("#edits [data-edit='attention:1']").is_visible()
    assert page.locator(f"#matrix td[data-step='1'][data-source='{last}']").inner_text() == "100"

    # the address holds the source, the settings and the edits: reloading it shows the same what-if
    page.goto(page.url)
    idle(page)
    assert words(page, "dec")[0] == word
    assert page.locator(f"#matrix td[data-step='1'][data-source='{last}']").inner_text() == "100"
    assert page.locator("#edits [data-edit]").count() == 2

    # hover links a source word across the views
    page.locator("#sequence .tok[data-side=enc]").nth(1).hover()
    assert "linked" in page.locator("#matrix th[data-link='enc:1']").get_attribute("class")

    # neighbours of a source word's encoder state: the training sentences the API names, the word marked
    page.locator("#sequence .tok[data-side=enc]").nth(1).click()
    page.locator("#show-neighbours").click()
    items = page.locator("#neighbour-list li")
    items.first.wait_for(timeout=15_000)
    found = api(live_server, project, "neighbours", {"source": source, "side": "encoder", "position": 1, "k": 20})
    assert items.count() == len(found["neighbours"]) == 20
    for item, neighbour in zip(items.all()[:3], found["neighbours"]):
        assert " ".join(neighbour["source"]) in item.inner_text()
        assert item.locator(".hit").inner_text() == neighbour["source"][neighbour["position"]]
    assert page.locator("#neighbours .scatter .near").count() == 20
    assert page.locator("#neighbours .scatter .step").count() == len(expected["source"]["tokens"])
    assert page.locator("#error").is_hidden()
    assert page.js_errors == []


def test_unit_concepts_show_each_concepts_best_unit(live_server, page, project):
    """The side panel lists each concept's best encoder unit as the labels API ranks them (computed in the
    background on first use; the panel waits for them), and the decoder's when switched."""
    page.goto(f"{live_server.url}translate.html?project={project['name']}")
    rows = page.locator("#concept-units tbody tr")
    rows.first.wait_for(timeout=60_000)
    for side in ("encoder", "decoder"):
        if side == "decoder":
            page.select_option("#label-side", "decoder")
            page.wait_for_function("() => document.getElementById('labels-status').textContent.includes('decoder unit,')",
                                   timeout=60_000)
        answer = api(live_server, project, "labels", side=side)
        expected = sorted(answer["concepts"], key=lambda concept: -concept["iou"])
        shown = rows.evaluate_all("rows => rows.map(r => [r.cells[0].textContent, Number(r.dataset.unit)])")
        assert shown == [[concept["label"], concept["unit"]] for concept in expected]
        assert page.locator("#concept-units tbody tr.weak").count() == sum(
            concept["iou"] <= concept["best_baseline_iou"] for concept in expected)
    assert page.locator("#error").is_hidden()
    assert page.js_errors == []


@pytest.mark.parametrize("source, message", [("", "source: is empty"),
                                             (" ".join(["2024"] * 101), "source: has 101 tokens, at most 100")])
def test_api_errors_are_shown(live_server, page, project, source, message):
    page.goto(f"{live_server.url}translate.html?project={project['name']}")
    idle(page)
    page.fill("#source", source)
    page.click("#translate")
    page.locator("#error").wait_for(timeout=10_000)
    assert message in page.locator("#error").inner_text()
    translate(page, project["extra"]["examples"][0])            # a good request clears the error
    assert page.locator("#error").is_hidden()
    assert page.js_errors == []
