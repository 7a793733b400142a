"""The units demo: composition with exact masks, Broden-style colour names, and the tiny build end to end."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from seqvis.broden import Broden
from seqvis.demo import build_demo
from seqvis.demo import units as demo
from seqvis.extract import load_model
from seqvis.progress import Progress
from seqvis.projects import UnitsProject, open_project
from seqvis.units import Units


def test_objects_have_exact_masks_and_halves():
    rng = np.random.default_rng(0)
    objects = np.zeros((12, 28, 28), np.uint8)
    objects[:, 4:24, 8:20] = rng.integers(demo.MASK_LEVEL, 256, (12, 20, 12))
    objects[:, 10, 10] = demo.MASK_LEVEL - 1                  # a dim pixel inside stays outside the mask
    black = [np.zeros((256, 300, 3), np.uint8)]
    composed = demo.compose(objects, np.arange(12) % 3, black, rng)
    assert composed.images.shape == (12, demo.SIZE, demo.SIZE, 3)
    np.testing.assert_array_equal(composed.masks, composed.images.max(-1) > 0)
    assert (composed.top <= composed.masks).all()
    for mask, top in zip(composed.masks, composed.top):
        rows = np.flatnonzero(mask.any(1))
        top_rows, bottom_rows = np.flatnonzero(top.any(1)), np.flatnonzero((mask & ~top).any(1))
        assert top_rows.max() < bottom_rows.min() and abs(len(top_rows) - len(bottom_rows)) <= 1
        assert len(rows) == len(top_rows) + len(bottom_rows)
        assert 3 * demo.SIZE // 8 * 20 // 28 <= len(rows) <= demo.SIZE
    assert len({tuple(np.argwhere(m).min(0)) for m in composed.masks}) > 6    # placed at varied positions


def test_colour_names_are_nearest_in_lab():
    prototypes = np.array(list(demo.COLORS.values()), np.uint8)[None, None]
    np.testing.assert_array_equal(demo.color_names(prototypes)[0, 0], np.arange(len(demo.COLORS)))
    names = list(demo.COLORS)
    shades = np.array([[[230, 40, 50], [60, 90, 220], [250, 250, 235], [100, 60, 30]]], np.uint8)[None]
    assert [names[i] for i in demo.color_names(shades)[0, 0]] == ["red", "blue", "white", "brown"]


def test_objects_fall_back_to_digits(tmp_path):
    objects = demo.load_objects(tmp_path)
    assert objects.source == "scikit-learn digits" and objects.names == [str(d) for d in range(10)]
    assert objects.train_images.shape[1:] == (8, 8) and len(objects.test_images) == 360


def test_fashion_classes_when_installed():
    if not (demo.FASHION_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    objects = demo.load_objects()
    assert objects.names == list(demo.FASHION_CLASSES.values())
    assert objects.test_images.shape == (7000, 28, 28) and set(objects.test_labels) == set(range(7))


def test_tiny_build_writes_a_dissected_units_project(tmp_path):
    threads = torch.get_num_threads()
    folder = build_demo("units", tmp_path, tiny=True, progress=Progress("test", stream=None))
    project = open_project(folder)
    assert isinstance(project, UnitsProject) and project.layers == list(demo.LAYERS)
    assert project.images == demo.TINY.dataset_images

    data = Broden(project.dataset)
    assert data.categories == ["color", "object", "part", "texture", "scene"]
    batch = data.batch(range(len(data)))
    classes = project.files["classes"].read_text().split("\n")[:-1]
    targets = [line.split(",")[1] for line in project.files["targets"].read_text().splitlines()[1:]]
    for i in range(len(data)):
        pixels = {data.concepts[v - 1] for v in np.unique(batch.labels[i]) if v}
        assert targets[i] in pixels and {f"{targets[i]} top", f"{targets[i]} bottom"} <= pixels
        scene = [data.concepts[c] for c in np.flatnonzero(batch.item_labels[i])]
        assert len(scene) == 1 and scene[0].endswith("-s")
        colours = batch.labels[i][0]
        assert colours.min() >= 1 and data.concept_category[colours.max() - 1] == 0   # every pixel has a colour

    model = load_model(project.model.factory, project.model.weights)
    predicted = demo.predict(model, batch.images)
    accuracy = float(np.mean([classes[p] == t for p, t in zip(predicted, targets)]))
    assert project.extra["validation"]["accuracy"] == round(accuracy, 4)

    service = Units(project, tmp_path / "cache")
    assert [layer["units"] for layer in service.layers()] == [32, 64, 128, 128]
    card = service.units("conv2")[0]
    assert len(card["top"]) == 8 and card["iou"] == max(c["iou"] for c in service.units("conv2"))
    effect = service.ablate("conv4", [0, 1, 2])
    assert effect["images"] == len(data) and len(effect["classes"]) == len(classes)
    assert torch.get_num_threads() == threads                  # the build restores torch's thread count
