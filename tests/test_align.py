"""Unit-concept alignment: equal to a plain brute-force NetDissect tally, right on planted data, round trips."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.align import Alignment, Batch, ThresholdSearch, UnitLabel, align, search_thresholds

CATEGORIES = ["object", "colour", "scene"]


def vocabulary(pixel: int, whole: int) -> tuple[list[str], list[int]]:
    """`pixel` concepts in two categories, then `whole`-item concepts in a third."""
    names = [f"c{i}" for i in range(pixel + whole)]
    return names, [i % 2 for i in range(pixel)] + [2] * whole


# ---------------------------------------------------------------------------------------------------------
# The reference: one item, one direction, one unit, one concept at a time, as the papers define it.


def concept_masks(batch: Batch, item: int, concepts: int, size: tuple[int, ...]) -> np.ndarray:
    """Bool [C, *size] at the concept positions of one item (before pooling and validity)."""
    masks = np.zeros((concepts, *size), bool)
    if batch.masks is not None:
        masks |= np.asarray(batch.masks[item], bool)
    if batch.labels is not None:
        for label_map in np.asarray(batch.labels[item]):
            for c in range(concepts):
                masks[c] |= label_map == c + 1
    return masks


def pool_any(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    (big_h, big_w), (h, w) = mask.shape, size
    out = np.zeros(size, bool)
    for i in range(h):
        for j in range(w):
            rows = slice(i * big_h // h, -(-(i + 1) * big_h // h))
            cols = slice(j * big_w // w, -(-(j + 1) * big_w // w))
            out[i, j] = mask[rows, cols].any()
    return out


def brute_force(batches: list[Batch], thresholds: np.ndarray, concept_category: list[int], union: str,
                resolution: str = "upsample", shuffled: bool = False) -> np.ndarray:
    """IoU [directions, units, concepts]; `shuffled` pairs each item with the next item's concepts."""
    concepts, categories = len(concept_category), max(concept_category) + 1
    directions, units = thresholds.shape
    inter = np.zeros((directions, units, concepts))
    on_all = np.zeros((directions, units))
    on_category = np.zeros((directions, units, categories))
    count = np.zeros(concepts)
    for batch in batches:
        acts = np.asarray(batch.acts, np.float32)
        n, positions = len(acts), acts.shape[2:]
        for i in range(n):
            j = (i + 1) % n if shuffled else i
            valid = np.ones(positions, bool) if batch.valid is None else np.asarray(batch.valid[i], bool)
            concept_valid = valid if batch.valid is None else valid & np.asarray(batch.valid[j], bool)
            size = positions
            if batch.masks is not None:
                size = np.asarray(batch.masks).shape[2:]
            elif batch.labels is not None:
                size = np.asarray(batch.labels).shape[2:]
            masks = concept_masks(batch, j, concepts, size)
            maps = acts[i]
            if size != positions and resolution == "upsample":
                maps = F.interpolate(torch.from_numpy(maps)[None], size=size, mode="bilinear",
                                     align_corners=False)[0].numpy()
                valid, concept_valid = (F.interpolate(torch.from_numpy(v)[None, None].float(), size=size,
                                                      mode="nearest")[0, 0].numpy() > 0.5
                                        for v in (valid, concept_valid))
            elif size != positions:
                masks = np.stack([pool_any(m, positions) for m in masks])
            whole = np.zeros(concepts, bool) if batch.item_labels is None else np.asarray(batch.item_labels[j], bool)
            for c in range(concepts):       # padding counts nowhere: neither the unit's nor the concept's
                masks[c] = valid if whole[c] else masks[c] & concept_valid
            count += masks.reshape(concepts, -1).sum(1)
            for d in range(directions):
                for u in range(units):
                    on = (maps[u] > thresholds[d, u] if d == 0 else maps[u] < thresholds[d, u]) & valid
                    on_all[d, u] += on.sum()
                    touched = np.zeros(categories, bool)    # categories the unit's mask touches, or item labels
                    for c in range(concepts):
                        inter[d, u, c] += (on & masks[c]).sum()
                        touched[concept_category[c]] |= (on & masks[c]).any() or whole[c]
                    on_category[d, u] += on.sum() * touched
    size = on_all[:, :, None] if union == "plain" else on_category[:, :, concept_category]
    size = size + count - inter
    return np.divide(inter, size, out=np.zeros_like(inter), where=size > 0)


def random_batches(rng: np.random.Generator, *, sizes: list[int], units: int, positions: tuple[int, ...],
                   concept_positions: tuple[int, ...], pixel: int, whole: int, maps: int = 2,
                   masks: bool = True, padding: bool = False) -> list[Batch]:
    """Random activations and concepts; label maps overlap in concepts, so repeats at a position occur."""
    batches = []
    concepts = pixel + whole
    for n in sizes:
        acts = rng.standard_normal((n, units, *positions)).astype(np.float32)
        labels = rng.integers(0, pixel + 1, (n, maps, *concept_positions))
        mask = None
        if masks:
            mask = np.zeros((n, concepts, *concept_positions), bool)
            mask[:, :pixel] = rng.random((n, pixel, *concept_positions)) < 0.15
        item_labels = rng.random((n, concepts)) < 0.3
        item_labels[:, :pixel] &= rng.random((n, pixel)) < 0.2        # a few pixel concepts as whole items
        valid = None
        if padding:
            lengths = rng.integers(1, positions[0] + 1, n)
            valid = np.arange(positions[0])[None, :] < lengths[:, None]
        batches.append(Batch(acts=acts, masks=mask, labels=labels, item_labels=item_labels, valid=valid))
    return batches


def run(batches: list[Batch], pixel: int, whole: int, **options) -> Alignment:
    names, category = vocabulary(pixel, whole)
    return align(lambda: iter(batches), names, CATEGORIES, category, **options)


# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("union", ["plain", "category"])
def test_tokens_with_padding_equal_brute_force(union):
    rng = np.random.default_rng(1)
    batches = random_batches(rng, sizes=[5, 3, 6], units=6, positions=(30,), concept_positions=(30,),
                             pixel=6, whole=3, padding=True)
    result = run(batches, 6, 3, quantile=0.05, signed=True, union=union)
    _, category = vocabulary(6, 3)
    np.testing.assert_allclose(result.iou, brute_force(batches, result.thresholds, category, union), atol=1e-6)
    np.testing.assert_allclose(result.baseline_iou,
                               brute_force(batches, result.thresholds, category, union, shuffled=True), atol=1e-6)
    assert result.iou.shape == (2, 6, 9) and result.items == 14


def test_thresholds_are_quantiles_of_valid_positions():
    rng = np.random.default_rng(2)
    batches = random_batches(rng, sizes=[4, 4], units=3, positions=(25,), concept_positions=(25,),
                             pixel=2, whole=1, padding=True)
    result = run(batches, 2, 1, quantile=0.1, signed=True)
    values = np.concatenate([np.asarray(b.acts).transpose(0, 2, 1)[np.asarray(b.valid)] for b in batches])
    expected = np.stack([np.quantile(values, 0.9, axis=0), np.quantile(values, 0.1, axis=0)])
    np.testing.assert_allclose(result.thresholds, expected.astype(np.float32), rtol=0, atol=0)


@pytest.mark.parametrize("union", ["plain", "category"])
@pytest.mark.parametrize("shape", [((4, 4), (16, 16)), ((5, 3), (17, 11))])
def test_upsampled_pixels_equal_brute_force(union, shape):
    positions, concept_positions = shape
    rng = np.random.default_rng(3)
    batches = random_batches(rng, sizes=[4, 3], units=5, positions=positions, concept_positions=concept_positions,
                             pixel=5, whole=2)
    result = run(batches, 5, 2, quantile=0.05, signed=True, union=union)
    _, category = vocabulary(5, 2)
    np.testing.assert_allclose(result.iou, brute_force(batches, result.thresholds, category, union), atol=1e-6)
    np.testing.assert_allclose(result.baseline_iou,
                               brute_force(batches, result.thresholds, category, union, shuffled=True), atol=1e-6)


@pytest.mark.parametrize("positions, concept_positions", [((4, 4), (16, 16)), ((30,), (30,))])
def test_tally_a_few_items_at_a_time_equals_brute_force(monkeypatch, positions, concept_positions):
    import core.align
    monkeypatch.setattr(core.align, "_CHUNK_VALUES", 2 * 5 * int(np.prod(positions)))      # two items at a time
    rng = np.random.default_rng(13)
    batches = random_batches(rng, sizes=[5, 4], units=5, positions=positions, concept_positions=concept_positions,
                             pixel=5, whole=2)
    result = run(batches, 5, 2, quantile=0.05, signed=True, union="category")
    _, category = vocabulary(5, 2)
    for shuffled, iou in ((False, result.iou), (True, result.baseline_iou)):
        expected = brute_force(batches, result.thresholds, category, "category", shuffled=shuffled)
        np.testing.assert_allclose(iou, expected, atol=1e-6)
    assert result.unit_on.sum() > 0


def test_upsampled_pixels_with_validity_equal_brute_force():
    rng = np.random.default_rng(4)
    batches = random_batches(rng, sizes=[4], units=4, positions=(4, 4), concept_positions=(12, 12), pixel=4, whole=1)
    batches[0].valid = rng.random((4, 4, 4)) < 0.8
    result = run(batches, 4, 1, quantile=0.05, union="category")
    _, category = vocabulary(4, 1)
    np.testing.assert_allclose(result.iou, brute_force(batches, result.thresholds, category, "category"), atol=1e-6)


@pytest.mark.parametrize("union", ["plain", "category"])
def test_pooled_pixels_equal_brute_force(union):
    rng = np.random.default_rng(5)
    batches = random_batches(rng, sizes=[5], units=5, positions=(3, 4), concept_positions=(10, 10), pixel=5, whole=2)
    result = run(batches, 5, 2, quantile=0.05, union=union, resolution="pool")
    _, category = vocabulary(5, 2)
    expected = brute_force(batches, result.thresholds, category, union, resolution="pool")
    np.testing.assert_allclose(result.iou, expected, atol=1e-6)


def test_dense_layer_with_item_concepts_only():
    rng = np.random.default_rng(6)
    item_labels = rng.random((40, 3)) < 0.4
    acts = rng.standard_normal((40, 4)).astype(np.float32)
    acts[:, 0] += 3 * item_labels[:, 1]
    batches = [Batch(acts=acts[:25], item_labels=item_labels[:25]), Batch(acts=acts[25:], item_labels=item_labels[25:])]
    result = align(lambda: iter(batches), ["a", "b", "c"], ["scene"], [0, 0, 0], quantile=0.2)
    np.testing.assert_allclose(result.iou, brute_force(batches, result.thresholds, [0, 0, 0], "plain"), atol=1e-6)
    assert result.labels()[0].label == "b"


def test_category_union_counts_only_categories_the_mask_touches():
    """NetDissect-Lite: on positions count toward a category where the unit's mask touches one of its labels
    in that item, or the item carries an item label of it; a category labelled elsewhere in the item does not."""
    labels = np.array([[[1, 1, 0, 0, 0, 0, 2, 2]], [[0, 0, 0, 0, 0, 0, 2, 2]]])      # a: colour, b: object
    acts = np.zeros((2, 2, 8), np.float32)
    acts[0, 0, :3] = 1                                  # unit 0: on over 'a' and one unlabelled token of item 0
    acts[1, 0, :2] = 1                                  # ... and on two unlabelled tokens of item 1
    acts[:, 1, 5:7] = 1                                 # unit 1: touches 'b' in both items
    item_labels = np.array([[False, False, False], [False, False, True]])           # item 1 is 'indoor'
    result = align(lambda: iter([Batch(acts=acts, labels=labels, item_labels=item_labels)]),
                   ["a", "b", "indoor"], ["colour", "object", "scene"], [0, 1, 2], thresholds=np.full(2, 0.5),
                   union="category", baseline=False)
    assert result.unit_on[0].tolist() == [5, 4]
    assert result.unit_on_category[0].tolist() == [[3, 0, 2], [0, 4, 2]]
    np.testing.assert_allclose(result.iou[0, 0], [2 / 3, 0, 2 / 8])
    np.testing.assert_allclose(result.iou[0, 1], [0, 2 / 6, 2 / 8])


def test_counts_give_precision_and_recall_parts():
    rng = np.random.default_rng(7)
    batches = random_batches(rng, sizes=[6], units=3, positions=(20,), concept_positions=(20,), pixel=3, whole=1)
    result = run(batches, 3, 1, quantile=0.1)
    union = result.unit_on[:, :, None] + result.concept_count - result.inter
    np.testing.assert_allclose(result.iou, result.inter / union)
    assert (result.inter <= result.unit_on[:, :, None]).all() and (result.inter <= result.concept_count).all()
    assert result.unit_on.sum() > 0


# ---------------------------------------------------------------------------------------------------------
# Planted answers


def planted_images(seed: int = 0, n: int = 60):
    """8x8 maps of 32x32 images: unit 0 follows concept 'disk', unit 1 'stripe', unit 2 is 'indoor', 3 noise."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, 1, 32, 32), np.int64)
    indoor = rng.random(n) < 0.3
    for i in range(n):
        y, x = rng.integers(4, 28, 2)
        yy, xx = np.mgrid[:32, :32]
        labels[i, 0][(yy - y) ** 2 + (xx - x) ** 2 < 30] = 1                   # disk
        row = rng.integers(0, 28)
        labels[i, 0, row:row + 4][labels[i, 0, row:row + 4] == 0] = 2          # stripe
    cover = torch.from_numpy((labels[:, 0, None] == np.array([1, 2])[None, :, None, None]).astype(np.float32))
    pooled = F.avg_pool2d(cover, 4).numpy()                                     # [n, 2, 8, 8]
    acts = rng.normal(0, 0.3, (n, 4, 8, 8)).astype(np.float32)
    acts[:, :2] += 3 * pooled
    acts[:, 2] += 2 * indoor[:, None, None]
    item_labels = np.zeros((n, 3), bool)
    item_labels[:, 2] = indoor
    return [Batch(acts=acts[s:s + 20], labels=labels[s:s + 20], item_labels=item_labels[s:s + 20])
            for s in range(0, n, 20)]


def test_planted_units_get_their_concepts():
    result = align(lambda: iter(planted_images()), ["disk", "stripe", "indoor"], ["object", "scene"], [0, 0, 1],
                   quantile=0.1)
    labels = result.labels()
    assert [r.label for r in labels[:3]] == ["disk", "stripe", "indoor"]
    for r in labels[:3]:
        assert r.detector and r.direction == 1
        assert r.iou > 0.1 and r.iou > 3 * r.baseline_iou
    assert not labels[3].detector
    assert result.best_units("disk", k=1)[0].unit == 0
    assert result.detectors_per_concept() == {"disk": 1, "stripe": 1, "indoor": 1}


def test_planted_token_units_with_padding():
    """Sequences padded with huge values: padding must count nowhere, or unit 1 would look like 'pad-ish' noise."""
    rng = np.random.default_rng(9)
    n, length = 40, 30
    lengths = rng.integers(10, length + 1, n)
    valid = np.arange(length)[None, :] < lengths[:, None]
    labels = rng.integers(0, 4, (n, 1, length))
    acts = rng.normal(0, 0.3, (n, 3, length)).astype(np.float32)
    acts[:, 0] += 2 * (labels[:, 0] == 1)
    acts[:, 1] += 2 * (labels[:, 0] == 3)
    acts[~np.broadcast_to(valid[:, None], acts.shape)] = 100.0
    batches = [Batch(acts=acts[:25], labels=labels[:25], valid=valid[:25]),
               Batch(acts=acts[25:], labels=labels[25:], valid=valid[25:])]
    result = align(lambda: iter(batches), ["a", "b", "c"], ["tag"], [0, 0, 0], quantile=0.1)
    assert (result.thresholds < 10).all()
    assert [r.label for r in result.labels()[:2]] == ["a", "c"]
    assert result.unit_on[0].sum() <= 0.1 * valid.sum() * 3 + 3
    assert result.concept_count.sum() == (labels[:, 0][valid] > 0).sum()


def test_signed_unit_is_labelled_by_its_low_side():
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 3, (50, 1, 40))
    acts = rng.normal(0, 0.2, (50, 2, 40)).astype(np.float32)
    acts[:, 0] -= 2 * (labels[:, 0] == 2)
    batches = [Batch(acts=acts, labels=labels)]
    unsigned = align(lambda: iter(batches), ["a", "b"], ["tag"], [0, 0], quantile=0.05)
    signed = align(lambda: iter(batches), ["a", "b"], ["tag"], [0, 0], quantile=0.05, signed=True)
    record = signed.labels()[0]
    assert (record.label, record.direction) == ("b", -1) and record.iou > unsigned.labels()[0].iou
    assert record.threshold == signed.thresholds[1, 0]


def test_given_thresholds_skip_the_first_pass():
    batches = planted_images(n=20)
    calls = []

    def stream():
        calls.append(1)
        return iter(batches)

    first = align(stream, ["disk", "stripe", "indoor"], ["object", "scene"], [0, 0, 1], quantile=0.05)
    assert len(calls) == 2
    again = align(stream, ["disk", "stripe", "indoor"], ["object", "scene"], [0, 0, 1],
                  thresholds=first.thresholds[0])
    assert len(calls) == 3
    np.testing.assert_array_equal(again.iou, first.iou)


def test_progress_reports_both_stages():
    events = []

    class Recorder:
        def start(self, stage, total=None):
            events.append((stage, total))

        def update(self, n=1):
            events.append(n)

    align(lambda: iter(planted_images(n=40)), ["disk", "stripe", "indoor"], ["object", "scene"], [0, 0, 1],
          progress=Recorder())
    assert events == [("thresholds", None), 20, 20, ("tally", 40), 20, 20]


# ---------------------------------------------------------------------------------------------------------
# Saving


def test_json_and_csv_round_trip(tmp_path):
    result = align(lambda: iter(planted_images(n=40)), ["disk", "stripe", "indoor"], ["object", "scene"],
                   [0, 0, 1], quantile=0.05, signed=True, union="category")
    result.save(tmp_path / "alignment.json")
    loaded = Alignment.load(tmp_path / "alignment.json")
    assert loaded.labels() == result.labels()
    for name in ("iou", "baseline_iou", "thresholds", "inter", "unit_on", "unit_on_category", "concept_count"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(result, name))
    assert (loaded.union, loaded.quantile, loaded.concepts) == ("category", 0.05, ["disk", "stripe", "indoor"])
    assert [p.name for p in tmp_path.iterdir()] == ["alignment.json"]

    result.to_csv(tmp_path / "tally.csv")
    with open(tmp_path / "tally.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 4 and rows[0]["label"] == "disk" and rows[2]["category"] == "scene"
    assert float(rows[0]["threshold"]) == result.thresholds[0, 0]
    assert abs(float(rows[1]["iou"]) - result.labels()[1].iou) < 1e-6


def test_load_rejects_other_json(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not a saved Alignment"):
        Alignment.load(tmp_path / "x.json")


def test_records_without_baseline():
    result = align(lambda: iter(planted_images(n=20)), ["disk", "stripe", "indoor"], ["object", "scene"],
                   [0, 0, 1], baseline=False)
    assert result.baseline_iou is None and result.labels()[0].baseline_iou is None
    assert isinstance(result.labels()[0], UnitLabel)


# ---------------------------------------------------------------------------------------------------------
# Bad input


def one_batch(**fields) -> list[Batch]:
    base = dict(acts=np.zeros((2, 3, 5), np.float32), labels=np.zeros((2, 1, 5), np.int64))
    base.update(fields)
    return [Batch(**base)]


@pytest.mark.parametrize("fields, message", [
    (dict(labels=np.zeros((2, 1, 6), np.int64)), "concept positions"),
    (dict(labels=np.full((2, 1, 5), 7)), "labels values"),
    (dict(masks=np.zeros((2, 4, 5), bool)), "Batch.masks must have shape"),
    (dict(item_labels=np.zeros((3, 2), bool)), "Batch.item_labels must have shape"),
    (dict(valid=np.ones((2, 4), bool)), "Batch.valid must have shape"),
    (dict(acts=np.zeros((2, 3), np.int64)), "Batch.acts must hold floats"),
    (dict(acts=[[0.0]]), "Batch.acts must be a torch.Tensor or numpy.ndarray"),
    (dict(labels=None), "no concepts"),
])
def test_bad_batches_name_the_array(fields, message):
    with pytest.raises((ValueError, TypeError), match=message):
        align(lambda: iter(one_batch(**fields)), ["a", "b"], ["x"], [0, 0], thresholds=np.zeros(3))


@pytest.mark.parametrize("options, message", [
    (dict(quantile=0.0), "quantile"),
    (dict(quantile=1.5), "quantile"),
    (dict(union="iou"), "union"),
    (dict(resolution="nearest"), "resolution"),
    (dict(thresholds=np.zeros((3, 3))), "thresholds"),
    (dict(thresholds=np.zeros(4)), "3 units, expected 4"),
])
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        align(lambda: iter(one_batch()), ["a", "b"], ["x"], [0, 0], **options)


def test_bad_vocabulary_and_units_changing_between_batches():
    with pytest.raises(ValueError, match="concept_category"):
        align(lambda: iter(one_batch()), ["a", "b"], ["x"], [0])
    with pytest.raises(ValueError, match="concept_category values"):
        align(lambda: iter(one_batch()), ["a", "b"], ["x"], [0, 1])
    batches = one_batch() + one_batch(acts=np.zeros((2, 4, 5), np.float32))
    with pytest.raises(ValueError, match="4 units, expected 3"):
        align(lambda: iter(batches), ["a", "b"], ["x"], [0, 0])
    with pytest.raises(ValueError, match="no items"):
        align(lambda: iter([]), ["a", "b"], ["x"], [0, 0], thresholds=np.zeros(3))
    with pytest.raises(ValueError, match="not one of"):
        align(lambda: iter(one_batch()), ["a", "b"], ["x"], [0, 0]).best_units("zebra")


# ---------------------------------------------------------------------------------------------------------
# Token units: best threshold per concept and average precision, against every threshold tried in turn


def brute_force_search(acts: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best IoU and AP [2, units, concepts]: every distinct value as threshold, on where direction * h >= it."""
    tokens, units = acts.shape
    iou, ap = np.zeros((2, units, masks.shape[1])), np.zeros((2, units, masks.shape[1]))
    for d, sign in enumerate([1, -1]):
        for u in range(units):
            h = sign * acts[:, u]
            for c in range(masks.shape[1]):
                concept = masks[:, c]
                recall_before = 0.0
                for t in sorted(set(h.tolist()), reverse=True):
                    on = h >= t
                    inter = (on & concept).sum()
                    iou[d, u, c] = max(iou[d, u, c], inter / (on | concept).sum())
                    recall = inter / concept.sum()
                    ap[d, u, c] += (recall - recall_before) * inter / on.sum()
                    recall_before = recall
    return iou, ap


def on_at(acts: np.ndarray, result, d: int, u: int, c: int) -> np.ndarray:
    sign = (1, -1)[d]
    return sign * acts[:, u] >= sign * np.float32(result.threshold[d, u, c])


@pytest.mark.parametrize("ties", [False, True])
def test_threshold_search_equals_brute_force(ties):
    rng = np.random.default_rng(10)
    acts = rng.standard_normal((120, 5)).astype(np.float32)
    if ties:
        acts = np.round(acts * 2) / 2                               # a few distinct values, many ties
    masks = rng.random((120, 4)) < [0.05, 0.3, 0.6, 0.9]
    masks[:, 0] |= acts[:, 0] > 1
    names = ["a", "b", "c", "d"]
    result = search_thresholds(acts, masks, names, ["tag"], [0] * 4)
    iou, ap = brute_force_search(acts, masks)
    np.testing.assert_allclose(result.iou, iou, atol=1e-12)
    np.testing.assert_allclose(result.ap, ap, atol=1e-12)
    for d, u, c in np.ndindex(result.iou.shape):                 # the threshold reaches the best IoU
        on = on_at(acts, result, d, u, c)
        assert (on & masks[:, c]).sum() / (on | masks[:, c]).sum() == pytest.approx(result.iou[d, u, c])
    shifted = np.roll(masks, 60, axis=0)
    base_iou, base_ap = brute_force_search(acts, shifted)
    np.testing.assert_allclose(result.baseline_iou, base_iou, atol=1e-12)
    np.testing.assert_allclose(result.baseline_ap, base_ap, atol=1e-12)
    assert result.shift == 60 and result.count.tolist() == masks.sum(0).tolist()


def test_threshold_search_reads_units_in_chunks_and_skips_invalid_tokens(monkeypatch):
    import core.align

    monkeypatch.setattr(core.align, "_CHUNK_VALUES", 100)         # two units per read of 50 tokens
    rng = np.random.default_rng(11)
    acts = rng.standard_normal((60, 5)).astype(np.float32)
    masks = rng.random((60, 2)) < 0.3
    valid = rng.random(60) < 0.8
    reads = []

    class Columns:
        shape = acts.shape

        def __getitem__(self, index):
            reads.append(index[1])
            return acts[index]

    result = search_thresholds(Columns(), masks, ["a", "b"], ["tag"], [0, 0], valid=valid, baseline=False)
    assert [(s.start, s.stop) for s in reads] == [(0, 2), (2, 4), (4, 6)]
    iou, ap = brute_force_search(acts[valid], masks[valid])
    np.testing.assert_allclose(result.iou, iou, atol=1e-12)
    np.testing.assert_allclose(result.ap, ap, atol=1e-12)
    assert result.tokens == valid.sum() and result.baseline_iou is None


def test_threshold_search_finds_planted_units_and_dense_concepts():
    """Units follow dense concepts (20% and 60% of tokens) with noise, one of them on its low side."""
    rng = np.random.default_rng(12)
    tokens = 4000
    depth = np.repeat(rng.choice([0, 0, 1, 1, 2], 400), rng.integers(5, 16, 400))[:tokens]   # runs of 5-15
    masks = np.stack([depth >= 1, depth >= 2, rng.random(tokens) < 0.25], axis=1)
    acts = rng.standard_normal((tokens, 6)).astype(np.float32)
    acts[:, 2] += 2 * masks[:, 0]
    acts[:, 4] -= 2 * masks[:, 1]
    result = search_thresholds(acts, masks, ["depth>=1", "depth>=2", "noise"], ["depth", "random"], [0, 0, 1])
    for concept, unit, direction in [("depth>=1", 2, 1), ("depth>=2", 4, -1)]:
        for by in ("iou", "ap"):
            best = result.best_units(concept, k=1, by=by)[0]
            assert (best.unit, best.direction) == (unit, direction)
            assert best.iou > best.baseline_iou + 0.1 and best.ap > best.baseline_ap + 0.2, best
    assert result.labels()[2].label == "depth>=1" and "depth>=2" in [r.label for r in result.unit_labels(4, k=2)]
    noise = result.best_units("noise", k=1)[0]
    assert noise.ap < 0.4 and noise.ap < noise.baseline_ap + 0.05


def test_threshold_search_round_trips(tmp_path):
    rng = np.random.default_rng(13)
    acts = torch.randn(50, 3)
    masks = torch.from_numpy(rng.random((50, 2)) < 0.4)
    result = search_thresholds(acts, masks, ["a", "b"], ["x", "y"], [0, 1])
    result.save(tmp_path / "search.json")
    loaded = ThresholdSearch.load(tmp_path / "search.json")
    assert loaded.labels() == result.labels() and loaded.best_units("b") == result.best_units("b")
    result.to_csv(tmp_path / "search.csv", by="ap")
    with open(tmp_path / "search.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["label"] for row in rows] == [r.label for r in result.labels(by="ap")]
    with pytest.raises(ValueError, match="not a saved ThresholdSearch"):
        ThresholdSearch.from_dict(result.to_dict() | {"format": "seqvis.alignment"})


@pytest.mark.parametrize("call, message", [
    (lambda: search_thresholds(np.zeros((5, 2, 3), np.float32), np.zeros((5, 1), bool), ["a"], ["x"], [0]),
     "acts must be \\[tokens, units\\]"),
    (lambda: search_thresholds(np.zeros((5, 2), np.float32), np.zeros((4, 1), bool), ["a"], ["x"], [0]),
     "masks must have shape \\[5, 1\\]"),
    (lambda: search_thresholds(np.full((5, 2), np.nan, np.float32), np.zeros((5, 1), bool), ["a"], ["x"], [0]),
     "NaN"),
    (lambda: search_thresholds(np.zeros((5, 2), np.int64), np.zeros((5, 1), bool), ["a"], ["x"], [0]),
     "floats"),
    (lambda: search_thresholds(np.zeros((5, 2), np.float32), np.zeros((5, 0), bool), [], ["x"], []),
     "at least one concept"),
    (lambda: search_thresholds(np.zeros((5, 2), np.float32), np.zeros((5, 1), bool), ["a"], ["x"], [0],
                               valid=np.zeros(5, bool)), "at least one"),
])
def test_threshold_search_bad_input(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_threshold_search_reads_hdf5_datasets(tmp_path, monkeypatch):
    import h5py

    import core.align

    monkeypatch.setattr(core.align, "_CHUNK_VALUES", 80)          # ranks one unit at a time
    monkeypatch.setattr(core.align, "_READ_VALUES", 140)          # reads 2 units, rounded up to whole chunks: 3
    rng = np.random.default_rng(14)
    acts = rng.standard_normal((70, 7)).astype(np.float32)
    masks = rng.random((70, 3)) < 0.3
    with h5py.File(tmp_path / "states.h5", "w") as f:
        f.create_dataset("chunked", data=acts, chunks=(16, 3))
        f.create_dataset("contiguous", data=acts)
    expected = search_thresholds(acts, masks, ["a", "b", "c"], ["x"], [0, 0, 0])
    with h5py.File(tmp_path / "states.h5", "r") as f:
        for dataset in f.values():
            result = search_thresholds(dataset, masks, ["a", "b", "c"], ["x"], [0, 0, 0])
            for name in ("iou", "ap", "threshold", "baseline_iou", "baseline_ap"):
                np.testing.assert_array_equal(getattr(result, name), getattr(expected, name))


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_int32_labels_and_non_contiguous_arrays_are_accepted(dtype):
    """Label maps of any integer type, and activations or labels in any memory layout, give the same IoU."""
    rng = np.random.default_rng(5)
    acts = rng.random((6, 3, 4, 4), dtype=np.float32)
    labels = rng.integers(0, 3, (6, 2, 8, 8))
    concepts, categories, of = ["a", "b"], ["x"], [0, 0]
    plain = align(lambda: iter([Batch(acts=acts, labels=labels)]), concepts, categories, of, quantile=0.1)
    strided = align(lambda: iter([Batch(acts=np.ascontiguousarray(acts.transpose(0, 1, 3, 2))
                                        .transpose(0, 1, 3, 2), labels=labels.astype(dtype)[:, :, ::-1][:, :, ::-1])]),
                    concepts, categories, of, quantile=0.1)
    np.testing.assert_array_equal(plain.iou, strided.iou)
