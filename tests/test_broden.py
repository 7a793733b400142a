"""The Broden reader: real layout written with PIL (label ids R + 256 * G), batches for core.align, clear errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seqvis.broden import Broden, BrodenError, label_image, write_tables

LABELS = """number,name,category,frequency,coverage,syns
0,-,-,0,0,
1,red-c,color(2),2,0.5,
2,dog,object(2);part(1),2,0.1,
3,leg,part(1),1,0.1,
300,kitchen-s,scene(1),1,1.0,
"""


def write_png(path: Path, numbers: np.ndarray) -> None:
    """A label map as Broden stores it: R = number % 256, G = number // 256."""
    pixels = np.zeros((*numbers.shape, 3), np.uint8)
    pixels[..., 0], pixels[..., 1] = numbers % 256, numbers // 256
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def make_broden(folder: Path) -> Path:
    """Two 8x8 images with 4x4 label maps: colour, object, two part maps for the first; a scene label for the second."""
    images = folder / "images" / "set"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(images / f"{name}.png")
    color = np.zeros((4, 4), int)
    color[:2] = 1
    dog = np.zeros((4, 4), int)
    dog[1:3, 1:3] = 2
    leg = np.zeros((4, 4), int)
    leg[2, 1:3] = 3
    whole_dog = np.where(dog > 0, 2, 0)
    write_png(images / "a_color.png", color)
    write_png(images / "a_object.png", dog)
    write_png(images / "a_part_1.png", leg)
    write_png(images / "a_part_2.png", whole_dog)
    write_png(images / "b_object.png", np.full((4, 4), 2))
    (folder / "category.csv").write_text("name,first,last,count,frequency\ncolor,1,1,1,2\nobject,2,2,1,2\n"
                                         "part,3,3,1,1\nscene,300,300,1,1\n")
    (folder / "label.csv").write_text(LABELS)
    (folder / "c_object.csv").write_text("code,number,name,frequency,coverage\n1,2,dog,2,0.1\n")
    (folder / "index.csv").write_text(
        "image,split,ih,iw,sh,sw,color,object,part,scene\n"
        "set/a.png,train,8,8,4,4,set/a_color.png,set/a_object.png,set/a_part_1.png;set/a_part_2.png,\n"
        "set/b.png,val,8,8,4,4,,set/b_object.png,,300\n")
    return folder


def test_reads_concepts_maps_and_image_labels(tmp_path):
    data = Broden(make_broden(tmp_path / "broden"))
    assert data.categories == ["color", "object", "part", "scene"]
    assert data.concepts == ["red-c", "dog", "leg", "kitchen-s"]
    assert [data.categories[c] for c in data.concept_category] == ["color", "object", "part", "scene"]
    assert len(data) == 2 and data.image_size == (8, 8) and data.label_size == (4, 4)

    batch = data.batch([0, 1])
    assert batch.images.shape == (2, 8, 8, 3) and batch.images.dtype == np.uint8
    np.testing.assert_array_equal(batch.images[1], np.asarray(Image.open(tmp_path / "broden/images/set/b.png")))
    assert batch.labels.shape == (2, 4, 4, 4)            # the most maps any item has: a has 4, b 1 (+3 empty)
    first = batch.labels[0]
    assert set(np.unique(first[0])) == {0, 1}            # colour map: concept 0 ("red-c") stored as 1
    assert (first[1] == 2).sum() == 4 and (first[2] == 3).sum() == 2 and (first[3] == 2).sum() == 4
    assert (batch.labels[1, 0] == 2).all() and not batch.labels[1, 1:].any()
    np.testing.assert_array_equal(batch.item_labels, [[False] * 4, [False, False, False, True]])


def test_split_and_batches(tmp_path):
    data = Broden(make_broden(tmp_path / "broden"), split="val")
    assert [r.image for r in data.records] == ["set/b.png"]
    everything = Broden(tmp_path / "broden")
    sizes = [len(b.indices) for b in everything.batches(1)]
    assert sizes == [1, 1]
    with pytest.raises(BrodenError, match="no images in split 'test'"):
        Broden(tmp_path / "broden", split="test")


def test_label_numbers_above_255_use_the_green_channel(tmp_path):
    data = Broden(make_broden(tmp_path / "broden"))
    write_png(tmp_path / "broden/images/set/b_object.png", np.full((4, 4), 300))
    np.testing.assert_array_equal(data.label_maps(1)[0], np.full((4, 4), 4))     # number 300 is concept 3


def test_writer_output_reads_back(tmp_path):
    folder = tmp_path / "written"
    (folder / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(folder / "images/x.png")
    numbers = np.zeros((6, 6), int)
    numbers[:, :3] = 2
    label_image(numbers).save(folder / "images/x_object.png")
    write_tables(folder, ["object", "scene"], [("cat", "object"), ("dog", "object"), ("beach", "scene")], [1, 1, 1],
                 [{"image": "x.png", "split": "val", "ih": 6, "iw": 6, "sh": 6, "sw": 6, "object": ["x_object.png"],
                   "scene": [3]}])
    data = Broden(folder)
    assert data.concepts == ["cat", "dog", "beach"]
    np.testing.assert_array_equal(data.label_maps(0)[0], np.where(numbers == 2, 2, 0))
    assert data.item_labels(0).tolist() == [False, False, True]


def edit(folder: Path, name: str, old: str, new: str) -> None:
    path = folder / name
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize("change, message", [
    (("index.csv", "image,split", "picture,split"), r"index.csv line 1: missing column\(s\) image"),
    (("index.csv", "set/b.png,val,8,8,4,4", "set/b.png,val,8,x,4,4"), r"index.csv line 3: iw must be a positive"),
    (("index.csv", ",,set/b_object.png,,300", ",,set/b_object.png,,301"),
     r"index.csv line 3 \(scene\): label number 301 is not in label.csv"),
    (("index.csv", "part,scene\n", "part,weather\n"), r"column 'weather' is not a category"),
    (("index.csv", "set/b.png,val,8,8,4,4,,", "../b.png,val,8,8,4,4,,"), r"line 3: '../b.png' is not a path inside"),
    (("index.csv", ",,300\n", ",300\n"), r"index.csv line 3: 9 fields, the header has 10"),
    (("label.csv", "3,leg,part(1)", "3,leg,limb(1)"), r"label.csv line 5: category 'limb\(1\)' is not one of"),
    (("label.csv", "3,leg,", "2,leg,"), r"label.csv line 5: label number 2 appears twice"),
    (("c_object.csv", "1,2,dog", "1,2,cat"), r"c_object.csv line 2: label 2 is 'cat' here but 'dog' in label.csv"),
    (("category.csv", "name,first", "title,first"), r"category.csv line 1: missing column\(s\) name"),
])
def test_malformed_tables_name_file_and_line(tmp_path, change, message):
    folder = make_broden(tmp_path / "broden")
    edit(folder, *change)
    with pytest.raises(BrodenError, match=message):
        Broden(folder)


def test_missing_and_bad_files(tmp_path):
    folder = make_broden(tmp_path / "broden")
    (folder / "label.csv").unlink()
    with pytest.raises(BrodenError, match="label.csv: file not found"):
        Broden(folder)
    folder = make_broden(tmp_path / "other")
    data = Broden(folder)
    write_png(folder / "images/set/a_part_1.png", np.full((4, 4), 7))
    with pytest.raises(BrodenError, match=r"images/set/a_part_1.png: label number 7 is not in label.csv "
                                          r"\(index.csv line 2\)"):
        data.label_maps(0)
    write_png(folder / "images/set/a_part_1.png", np.zeros((5, 4), int))
    with pytest.raises(BrodenError, match=r"a_part_1.png: 5x4 pixels, index.csv line 2 says sh, sw = \(4, 4\)"):
        data.label_maps(0)
    (folder / "images/set/b.png").write_bytes(b"not a png")
    with pytest.raises(BrodenError, match=r"images/set/b.png: not a readable image"):
        data.image(1)
    (folder / "images/set/b.png").unlink()
    with pytest.raises(BrodenError, match=r"images/set/b.png: file not found \(index.csv line 3\)"):
        data.batch([1])


def test_mixed_sizes_are_refused_for_batches(tmp_path):
    folder = make_broden(tmp_path / "broden")
    edit(folder, "index.csv", "set/b.png,val,8,8,4,4", "set/b.png,val,8,8,2,2")
    with pytest.raises(BrodenError, match=r"index.csv line 3: sh, sw = \(2, 2\) differ from \(4, 4\) on line 2"):
        Broden(folder).batch([0])
