"""The units API on a project with planted units (unit 0 of body.0 detects the red square and class "red" depends on
it): cards, detail, highlighted images rendered once, detectors, ablation, ranking and feature search; bad input
answers 4xx naming the parameter; no file outside the project's dataset is served."""
from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seqvis import units
from seqvis.server import create_app
from tests.conftest import make_token_project
from tests.test_units import CLASSES, make_dataset


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """A data folder holding the planted units project (its dataset a symlink to a folder outside) and a token
    project."""
    data = tmp_path / "data"
    dataset = make_dataset(tmp_path / "broden")
    out = units.dissect_project(data / "planted", model="tests.test_units:planted", layers=["body.0", "body.1.pool"],
                                dataset=dataset, quantile=0.05, batch_size=8)
    (out / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (out / "targets.csv").write_text((dataset / "targets.csv").read_text())
    description = (out / "seqvis.yml").read_text()
    (out / "seqvis.yml").write_text(description.replace("files:\n", "files:\n  classes: classes.txt\n"
                                                                      "  targets: targets.csv\n"))
    make_token_project(data / "toy")
    return data


@pytest.fixture
def client(data_dir):
    return create_app({"DATA_DIR": str(data_dir)}).test_client()


def get(client, route: str, status: int = 200, **kwargs):
    response = client.get(f"/api/units/planted/{route}", **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)
    return response


def test_layers_cards_and_detail(client):
    layers = get(client, "layers").json["layers"]
    assert [(layer["name"], layer["units"]) for layer in layers] == [("body.0", 3), ("body.1.pool", 3)]
    cards = get(client, "units?layer=body.0").json["units"]
    assert cards[0]["unit"] == 0 and cards[0]["label"] == "red square" and cards[0]["detector"]
    assert [card["iou"] for card in cards] == sorted((card["iou"] for card in cards), reverse=True)
    assert len(cards[0]["quantiles"]) == units.CURVE_POINTS and len(cards[0]["top"]) == units.TOP_K
    assert [c["unit"] for c in get(client, "units?layer=body.0&sort=unit&order=desc").json["units"]] == [2, 1, 0]
    labels = [c["label"] for c in get(client, "units?layer=body.0&sort=label").json["units"]]
    assert labels == sorted(labels)
    detail = get(client, "unit?layer=body.0&unit=0&concepts=2").json
    assert detail["concepts"][0]["concept"] == "red square" and len(detail["concepts"]) == 2
    assert detail["quantiles"] == sorted(detail["quantiles"])
    groups = get(client, "detectors?layer=body.0").json["categories"]
    assert {"concept": "red square", "units": 1} in groups[0]["concepts"]
    assert get(client, "classes").json == {"classes": CLASSES}


def test_images_show_the_unit_region_and_are_rendered_once(client, data_dir):
    card = get(client, "unit?layer=body.0&unit=0").json
    item = card["top"][0]["item"]                          # an image with a red square: where unit 0 is on
    plain = Image.open(io.BytesIO(get(client, f"image/{item}").data))
    shown = get(client, f"image/{item}?layer=body.0&unit=0")
    assert shown.mimetype == "image/png"
    highlighted = np.asarray(Image.open(io.BytesIO(shown.data)).convert("RGB")).astype(int)
    assert plain.size == (units.THUMBNAIL, units.THUMBNAIL) and highlighted.shape == (units.THUMBNAIL,) * 2 + (3,)
    plain = np.asarray(plain.convert("RGB")).astype(int)
    red = (plain[..., 0] > 140) & (plain[..., 1] < 40)     # the planted square
    kept = np.all(highlighted == plain, axis=-1) | np.all(highlighted == (255, 140, 0), axis=-1)
    assert kept[red].mean() > 0.5 and kept[~red].mean() < 0.05  # the unit's region (on the square) as it was or
    assert (highlighted[~red] > plain[~red]).mean() > 0.5         # outlined; elsewhere washed out
    cached = sorted((data_dir / ".cache" / "planted" / "thumbnails").glob("*.png"))
    assert len(cached) == 2
    again = get(client, f"image/{item}?layer=body.0&unit=0")
    assert again.data == shown.data and sorted(cached[0].parent.glob("*.png")) == cached


def test_ablation_tests_the_label(client):
    effect = get(client, "ablate?layer=body.0&units=0").json
    red = next(row for row in effect["classes"] if row["class"] == "red")
    assert (red["before"], red["after"], red["change"]) == (1.0, 0.0, -1.0)
    by_label = client.post("/api/units/planted/ablate", json={"layer": "body.0", "label": "red square"})
    assert by_label.status_code == 200 and by_label.json["units"] == [0] and by_label.json["label"] == "red square"
    assert by_label.json["classes"] == effect["classes"]
    others = client.post("/api/units/planted/ablate", json={"layer": "body.0", "units": [1, 2]}).json
    assert all(row["change"] == 0 for row in others["classes"])
    ranking = get(client, "rank?layer=body.1.pool&class=red").json
    assert ranking["units"][0]["unit"] == 0 and ranking["units"][0]["change"] == -1.0


def test_feature_search_finds_the_red_squares(client):
    layers = get(client, "layers").json
    assert layers["image_size"] == [16, 16] and layers["images"] == 24
    item = get(client, "unit?layer=body.0&unit=0").json["top"][0]["item"]
    image = np.asarray(Image.open(io.BytesIO(get(client, f"image/{item}").data)).convert("RGB")).astype(int)
    scale = units.THUMBNAIL // 16
    ys, xs = np.nonzero((image[::scale, ::scale, 0] > 140) & (image[::scale, ::scale, 1] < 40))
    box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    found = client.post("/api/units/planted/search", json={"layer": "body.0", "item": item, "box": box, "k": 6})
    assert found.status_code == 200, found.get_data(as_text=True)
    results = found.json["results"]
    assert len(results) == 6 and found.json["region"] == box
    assert all(r["item"] % 2 == 1 for r in results)         # odd items carry a red square
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    mask = np.zeros((16, 16), int)
    mask[box[1]:box[3], box[0]:box[2]] = 1
    brushed = client.post("/api/units/planted/search", json={"layer": "body.0", "item": item, "mask": mask.tolist(),
                                                            "k": 6})
    assert brushed.status_code == 200 and brushed.json["results"] == results


def test_features_are_prepared_in_the_background_once(client, monkeypatch):
    """Asking for a layer's features starts computing them (and its spectra: 16x16 maps) in the background; the
    status goes from building to ready, and a later search computes nothing."""
    status = get(client, "features?layer=body.0").json
    assert status["layer"] == "body.0" and status["status"] in ("building", "ready")
    deadline = time.monotonic() + 60
    while status["status"] == "building" and time.monotonic() < deadline:
        time.sleep(0.1)
        status = get(client, "features?layer=body.0").json
    assert status["status"] == "ready", status
    from seqvis import extract, regions
    monkeypatch.setattr(extract, "load_model", lambda *a, **k: pytest.fail("features computed again"))
    monkeypatch.setattr(regions.Spectra, "of", lambda *a, **k: pytest.fail("spectra computed again"))
    assert len(get(client, "search?layer=body.0&item=1&box=0,0,8,8&k=3").json["results"]) == 3


def test_a_bad_brushed_mask_is_named(client):
    for mask, message in [([[1, 1], [1, 1]], "mask: expected 16 rows of 16 values"),
                          (np.zeros((16, 16), int).tolist(), "mask: the region is empty"), ("x", "mask:")]:
        answer = client.post("/api/units/planted/search", json={"layer": "body.0", "item": 1, "mask": mask})
        assert answer.status_code == 400 and message in answer.json["error"]["message"]


@pytest.mark.parametrize("route, status, named", [
    ("units?layer=fc", 404, "layer: unknown layer 'fc'"),
    ("units?layer=body.0&sort=size", 400, "sort:"),
    ("units?layer=body.0&order=up", 400, "order:"),
    ("units", 400, "layer: is required"),
    ("unit?layer=body.0&unit=3", 404, "unit: 3 is not a unit"),
    ("unit?layer=body.0&unit=x", 400, "unit: must be an integer"),
    ("unit?layer=body.0&unit=0&concepts=0", 400, "concepts:"),
    ("detectors?layer=nope", 404, "layer: unknown layer 'nope'"),
    ("image/abc", 400, "item: must be an integer"),
    ("image/999", 404, "item: 999 is not an image"),
    ("image/0?layer=body.0", 400, "unit: give both layer and unit"),
    ("image/0?layer=body.0&unit=7", 404, "unit: 7 is not a unit"),
    ("ablate?layer=body.0", 400, "units: give either unit ids or a label"),
    ("ablate?layer=body.0&units=0&label=stripe", 400, "units: give either"),
    ("ablate?layer=body.0&units=0,zz", 400, "units: must be a list of integers"),
    ("ablate?layer=body.0&units=9", 404, "unit: 9 is not a unit"),
    ("ablate?layer=body.0&label=cat", 404, "label: no detector"),
    ("rank?layer=body.0&class=cat", 404, "class: unknown class 'cat'"),
    ("search?layer=body.0&item=1", 400, "box: give either a box (x0, y0, x1, y1) or a mask"),
    ("search?layer=body.0&item=1&box=0,0,20,4", 400, "box: [0, 0, 20, 4] is empty or not inside the 16x16 image"),
    ("search?layer=body.0&item=1&box=0,0,4", 400, "box: expected four numbers"),
    ("search?layer=body.0&item=99&box=0,0,4,4", 404, "item: 99 is not an image"),
    ("search?layer=fc&item=1&box=0,0,4,4", 404, "layer: unknown layer 'fc'"),
    ("features?layer=fc", 404, "layer: unknown layer 'fc'"),
    ("features", 400, "layer: is required"),
    ("search?layer=body.0&item=1&box=0,0,4,4&k=0", 400, "k: must be at least 1"),
])
def test_bad_input_names_the_parameter(client, route, status, named):
    error = get(client, route, status).json["error"]
    assert named in error["message"]


def test_an_image_not_a_top_image_of_the_unit_is_refused(client):
    tops = {top["item"] for top in get(client, "unit?layer=body.0&unit=0").json["top"]}
    other = next(item for item in range(24) if item not in tops)
    assert "not a top image" in get(client, f"image/{other}?layer=body.0&unit=0", 404).json["error"]["message"]


def test_projects_of_other_kinds_and_unknown_ones(client):
    assert client.get("/api/units/toy/layers").status_code == 400
    missing = client.get("/api/units/nothing/layers")
    assert missing.status_code == 404 and "nothing" in missing.json["error"]["message"]


def test_no_file_outside_the_dataset_is_served(client, tmp_path):
    secret = tmp_path / "secret.png"
    Image.new("RGB", (16, 16), (1, 2, 3)).save(secret)
    image = tmp_path / "broden" / "images" / "5.png"
    image.unlink()
    image.symlink_to(secret)                               # a dataset image that points outside the dataset
    answer = get(client, "image/5", 404).json["error"]
    assert "outside the dataset folder" in answer["message"]


def test_a_malformed_dataset_is_named(client, tmp_path):
    (tmp_path / "broden" / "index.csv").write_text("image,split\n0.png\n")
    answer = get(client, "image/0", 400).json["error"]
    assert "index.csv" in answer["message"]
