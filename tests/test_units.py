"""Dissection of any nn.Module over a Broden folder, ablation, the units project services (planted units)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from seqvis import units
from seqvis.broden import Broden, label_image, write_tables
from seqvis.projects import UnitsProject, open_project

SIZE = 16
CLASSES = ["plain", "red"]


def make_dataset(folder: Path, n: int = 24, seed: int = 0) -> Path:
    """Grey noise images; odd items carry a red square (concept "red square", class "red"), every item a blue
    stripe at its top rows (concept "stripe"); scenes alternate between two image-level labels."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    index = []
    for i in range(n):
        image = np.repeat(rng.integers(60, 140, (SIZE, SIZE, 1)), 3, axis=2).astype(np.uint8)
        numbers = np.zeros((SIZE, SIZE), int)
        image[:2, :, 2] = rng.integers(200, 256, (2, SIZE))
        numbers[:2] = 2
        if i % 2:
            y, x = rng.integers(2, SIZE - 6, 2)
            image[y:y + 6, x:x + 6] = (0, 20, 20)
            image[y:y + 6, x:x + 6, 0] = rng.integers(150, 256, (6, 6))
            numbers[y:y + 6, x:x + 6] = 1
        Image.fromarray(image).save(folder / "images" / f"{i}.png")
        label_image(numbers).save(folder / "images" / f"{i}_object.png")
        index.append({"image": f"{i}.png", "split": "val" if i >= n // 2 else "train", "ih": SIZE, "iw": SIZE,
                      "sh": SIZE, "sw": SIZE, "object": [f"{i}_object.png"], "scene": [3 + i % 2]})
    write_tables(folder, ["object", "scene"], [("red square", "object"), ("stripe", "object"), ("indoor", "scene"),
                                               ("outdoor", "scene")], [n // 2, n, n // 2, n // 2], index)
    (folder / "targets.csv").write_text("image,class\n" + "".join(f"{i}.png,{CLASSES[i % 2]}\n" for i in range(n)))
    return folder


class Detectors(nn.Module):
    """Unit 0: redness (r - g) per pixel; unit 1: blueness; unit 2: a constant."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            self.conv.weight[0, 0], self.conv.weight[0, 1] = 1.0, -1.0
            self.conv.weight[1, 2], self.conv.weight[1, 0] = 1.0, -1.0
            self.conv.bias[2] = 0.3


class WithAux(nn.Module):
    """Returns a tuple (feature map, auxiliary scalar), as some blocks do."""

    def __init__(self):
        super().__init__()
        self.detect = Detectors()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = F.relu(self.detect.conv(x))
        return maps, maps.mean()


class Planted(nn.Module):
    """Nested blocks; `body.0` returns a tuple; `body.1.pool` halves the map. Class "red" scores unit 0's peak."""

    def __init__(self):
        super().__init__()
        self.body = nn.ModuleList([WithAux(), nn.ModuleDict({"pool": nn.AvgPool2d(2)})])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps, _ = self.body[0](x)
        pooled = self.body[1]["pool"](maps)
        red = pooled[:, 0].amax(dim=(1, 2))
        return torch.stack([torch.full_like(red, 0.5), red], dim=1)


def planted() -> Planted:
    return Planted()


@pytest.fixture
def dataset(tmp_path) -> Broden:
    return Broden(make_dataset(tmp_path / "broden"))


def activations(model: nn.Module, data: Broden, layer: str) -> torch.Tensor:
    from core.hooks import Trace

    with torch.no_grad(), Trace(model, layer) as trace:
        model(units.to_input(torch.from_numpy(data.images(range(len(data))))))
    return units.feature_map(trace.output, layer)


def test_planted_units_get_their_concepts_at_every_layer(dataset):
    model = planted()
    result = units.dissect(model, ["body.0", "body.1.pool"], dataset, quantile=0.05, batch_size=5, top_k=3)
    assert list(result) == ["body.0", "body.1.pool"]
    for layer, (h, w) in (("body.0", (16, 16)), ("body.1.pool", (8, 8))):
        dissection = result[layer]
        assert dissection.shape == (3, h, w)
        labels = dissection.alignment.labels()
        assert (labels[0].label, labels[0].category, labels[0].detector) == ("red square", "object", True)
        assert (labels[1].label, labels[1].detector) == ("stripe", True)
        assert labels[0].iou > 3 * labels[0].baseline_iou
        acts = activations(model, dataset, layer)
        values = acts.permute(1, 0, 2, 3).reshape(3, -1).numpy()
        np.testing.assert_allclose(dissection.alignment.thresholds[0], np.quantile(values, 0.95, axis=1), rtol=1e-6)
        peaks = acts.amax(dim=(2, 3)).numpy()
        np.testing.assert_allclose(dissection.top_values, -np.sort(-peaks.T, axis=1)[:, :3], rtol=1e-6)
        assert all(dissection.top_items[0] % 2 == 1)           # red squares peak in the odd items
        for unit in range(3):
            for rank, item in enumerate(dissection.top_items[unit]):
                np.testing.assert_allclose(dissection.top_maps[unit, rank], acts[item, unit].numpy(), atol=2e-3)
        assert dissection.curve.shape == (3, units.CURVE_POINTS)
        np.testing.assert_allclose(dissection.curve[:, [0, -1]], np.stack([values.min(1), values.max(1)], 1))


def test_union_and_signed_options_pass_through(dataset):
    """NetDissect-Lite's category union by default; the PNAS version's plain union on request."""
    model = planted()
    plain = units.dissect(model, ["body.0"], dataset, quantile=0.05, union="plain")["body.0"].alignment
    category = units.dissect(model, ["body.0"], dataset, quantile=0.05, signed=True)["body.0"].alignment
    assert plain.union == "plain" and category.union == "category"
    assert plain.thresholds.shape == (1, 3) and category.thresholds.shape == (2, 3)
    assert category.iou[0, 0, 2] >= plain.iou[0, 0, 2]       # fewer unit pixels counted for a scene concept


def test_bad_layers_are_named(dataset):
    model = planted()
    with pytest.raises(ValueError, match="layer 'body.2' not found"):
        units.dissect(model, ["body.2"], dataset)
    with pytest.raises(ValueError, match=r"layer 'body.0.detect' outputs"):
        units.dissect(model, ["body.0.detect"], dataset)   # a container module that is never called
    with pytest.raises(ValueError, match="non-empty list"):
        units.dissect(model, [], dataset)


def test_ablating_the_unit_a_class_depends_on_drops_its_accuracy(dataset):
    model = planted()
    items = np.arange(len(dataset))
    targets = items % 2
    images = dataset.images(items)
    effect = units.ablation_effect(model, "body.0", [0], images, targets, CLASSES)
    red = effect["classes"][1]
    assert red["before"] == 1.0 and red["after"] == 0.0 and red["change"] == -1.0
    assert effect["classes"][0]["change"] == 0.0
    untouched = units.ablation_effect(model, "body.0", [1, 2], images, targets, CLASSES)
    assert all(row["change"] == 0.0 for row in untouched["classes"])
    ranking = units.rank_units(model, "body.1.pool", 1, images[targets == 1], 2, units=range(3))
    assert [r["unit"] for r in ranking] == [0, 1, 2] and ranking[0]["change"] == -1.0


@pytest.fixture
def project(tmp_path, dataset) -> UnitsProject:
    out = units.dissect_project(tmp_path / "project", model="tests.test_units:planted",
                                layers=["body.0", "body.1.pool"], dataset=dataset.folder, quantile=0.05, batch_size=8)
    (out / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (out / "targets.csv").write_text((dataset.folder / "targets.csv").read_text())
    description = (out / "seqvis.yml").read_text()
    (out / "seqvis.yml").write_text(description.replace("files:\n", "files:\n  classes: classes.txt\n"
                                                                      "  targets: targets.csv\n"))
    opened = open_project(out)
    yield opened
    opened.close()


def test_dissect_project_writes_a_units_project(project, dataset):
    assert isinstance(project, UnitsProject) and project.layers == ["body.0", "body.1.pool"]
    assert (project.path / "dataset").resolve() == dataset.folder.resolve() and project.images == len(dataset)
    report = json.loads((project.path / "dissection/report.json").read_text())
    assert report["settings"]["quantile"] == 0.05 and report["settings"]["images"] == len(dataset)
    assert [layer["units"] for layer in report["layers"]] == [3, 3]
    tally = (project.path / "dissection/body.0/tally.csv").read_text().splitlines()
    assert tally[0].startswith("unit,category,label,iou") and tally[1].startswith("0,object,red square,")


def test_services_answer_from_the_project(project, tmp_path):
    service = units.Units(project, tmp_path / "cache")
    assert [layer["name"] for layer in service.layers()] == ["body.0", "body.1.pool"]
    cards = service.units("body.0")
    assert cards[0]["iou"] >= cards[1]["iou"] >= cards[2]["iou"]
    assert [c["unit"] for c in service.units("body.0", sort="unit")] == [0, 1, 2]
    detail = service.unit("body.0", 0)
    assert detail["label"] == "red square" and detail["concepts"][0]["concept"] == "red square"
    assert len(detail["quantiles"]) == units.CURVE_POINTS
    top = service.top_images("body.0", 0)
    assert len(top["images"]) == units.TOP_K and np.array(top["images"][0]["map"]).shape == (16, 16)
    assert service.image_path(top["images"][0]["item"]).is_file()
    assert service.detectors("body.0")["categories"][0]["category"] == "object"

    effect = service.ablate("body.0", label="red square")
    assert effect["units"] == [0] and effect["classes"][1]["change"] == -1.0
    assert effect["images"] == 12                                # the "val" half of the dataset
    ranking = service.rank("body.0", "red")
    assert ranking["units"][0]["unit"] == 0 and ranking["units"][0]["label"] == "red square"


def test_ablation_results_are_cached(project, tmp_path, monkeypatch):
    service = units.Units(project, tmp_path / "cache")
    first = service.ablate("body.0", [0])
    assert len(list((tmp_path / "cache/ablation").glob("*.json"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("recomputed a cached ablation")

    monkeypatch.setattr(units, "ablation_effect", fail)
    assert units.Units(project, tmp_path / "cache").ablate("body.0", [0]) == first
    with pytest.raises(AssertionError):
        service.ablate("body.0", [1])                           # other parameters: another cache entry


@pytest.mark.parametrize("call, error, message", [
    (lambda s: s.units("fc"), LookupError, "layer: unknown layer 'fc'; known: body.0, body.1.pool"),
    (lambda s: s.unit("body.0", 3), LookupError, r"unit: 3 is not a unit of layer 'body.0' \(0..2\)"),
    (lambda s: s.units("body.0", sort="size"), ValueError, "sort: must be one of iou, label, unit"),
    (lambda s: s.ablate("body.0"), ValueError, "units: give either unit ids or a label"),
    (lambda s: s.ablate("body.0", label="cat"), LookupError, "label: no detector of layer 'body.0' is labelled 'cat'"),
    (lambda s: s.rank("body.0", "dog"), LookupError, "class: unknown class 'dog'; known: plain, red"),
    (lambda s: s.image_path(99), LookupError, r"item: 99 is not an image of the dataset \(0..23\)"),
])
def test_bad_requests_name_the_parameter(project, tmp_path, call, error, message):
    with pytest.raises(error, match=message):
        call(units.Units(project, tmp_path / "cache"))


def test_dissect_project_refuses_what_it_cannot_use(tmp_path, dataset):
    options = dict(model="tests.test_units:planted", layers=["body.0"], quantile=0.05)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken/file").write_text("x")
    with pytest.raises(FileExistsError, match="pass overwrite"):
        units.dissect_project(tmp_path / "taken", dataset=dataset.folder, **options)
    (dataset.folder / "label.csv").write_text("number,name,category\n1,red square,object\nx,stripe,object\n")
    with pytest.raises(ValueError, match="label.csv line 3: number must be an integer >= 0, found 'x'"):
        units.dissect_project(tmp_path / "new", dataset=dataset.folder, **options)
    assert not (tmp_path / "new").exists() and (tmp_path / "taken/file").exists()


def test_a_malformed_targets_file_is_named(project, tmp_path):
    (project.path / "targets.csv").write_text("image,class\n0.png,plain\n1.png,purple\n")
    with pytest.raises(ValueError, match=r"targets.csv line 3: expected 'image,class' with a class of classes.txt, "
                                         r"found '1.png,purple'"):
        units.Units(project, tmp_path / "cache").ablate("body.0", [0])


def test_cli_dissects_a_model_into_a_units_project(tmp_path, dataset, capsys):
    from seqvis.cli import main

    out = tmp_path / "cli-project"
    argv = ["dissect", "--model", "tests.test_units:planted", "--layers", "body.0", "--dataset", str(dataset.folder),
            "--out", str(out), "--quantile", "0.05", "--union", "plain"]
    assert main(argv) == 0
    report = json.loads((out / "dissection/report.json").read_text())
    assert report["settings"]["union"] == "plain" and report["settings"]["quantile"] == 0.05
    assert main(argv) == 2 and "exists" in capsys.readouterr().err
    assert main(["dissect", "--model", "tests.test_units:planted", "--layers", "body.0"]) == 2
    assert "--dataset, --out" in capsys.readouterr().err
    assert main([*argv[:4], "body.9", *argv[5:], "--overwrite"]) == 2
    assert "body.9" in capsys.readouterr().err
