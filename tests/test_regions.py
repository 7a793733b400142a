"""Region search over cached features (core.regions) against a brute-force reference, and its service."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core import regions


def brute_force(features: np.ndarray, item: int, mask: np.ndarray, k: int, per_image: int = 1,
                match: str = "template") -> list[tuple[int, int, int, float]]:
    """(image, y, x, score) of the k best windows, one window and one cosine at a time in float64."""
    features = np.asarray(features, np.float64)
    rows, cols = np.nonzero(mask > 0)
    top, left, bottom, right = rows.min(), cols.min(), rows.max() + 1, cols.max() + 1
    weights = mask[top:bottom, left:right]
    region = features[item, :, top:bottom, left:right]
    if match == "mean":
        mean = (region * weights).sum(axis=(1, 2)) / weights.sum()
        region = np.broadcast_to(mean[:, None, None], region.shape)
    query = (weights * region).ravel()
    bh, bw = weights.shape
    found = []
    for image in range(len(features)):
        scored = []
        for y in range(features.shape[2] - bh + 1):
            for x in range(features.shape[3] - bw + 1):
                window = (weights * features[image, :, y:y + bh, x:x + bw]).ravel()
                norm = np.sqrt(window @ window)
                cosine = 0.0 if norm == 0 else window @ query / (norm * np.sqrt(query @ query))
                scored.append((round(float(np.clip(cosine, -1, 1)), regions.DECIMALS), y, x))
        scored.sort(key=lambda s: (-s[0], s[1], s[2]))
        kept: list[tuple[float, int, int]] = []
        for score, y, x in scored:
            if len(kept) < per_image and all(abs(y - ky) >= bh or abs(x - kx) >= bw for _, ky, kx in kept):
                kept.append((score, y, x))
        found += [(image, y, x, score) for score, y, x in kept]
    found.sort(key=lambda r: (-r[3], r[0], r[1], r[2]))
    return found[:k]


def as_tuples(matches: list[regions.Match]) -> list[tuple[int, int, int, float]]:
    return [(m.image, m.y, m.x, m.score) for m in matches]


@pytest.mark.parametrize("match", regions.MATCHES)
@pytest.mark.parametrize("per_image", [1, 3])
def test_random_features_give_the_brute_force_top_k(match, per_image):
    rng = np.random.default_rng(per_image)
    features = rng.standard_normal((13, 5, 7, 9)).astype(np.float16)
    features[4] = 0                                                   # zero windows score 0
    mask = np.zeros((7, 9))
    mask[2:5, 3:5] = rng.uniform(0.2, 1, (3, 2))
    mask[2, 3] = 0                                                    # a brushed, not boxy, region
    reference = brute_force(features, 6, mask, 8, per_image, match)
    for chunk_bytes in (1, 5 * 7 * 9 * 8 * 4, regions.CHUNK_BYTES):   # one image, a few, all at a time
        found = regions.search_regions(features, 6, mask, k=8, per_image=per_image, match=match,
                                       chunk_bytes=chunk_bytes)
        assert as_tuples(found) == reference
    assert all(m.heatmap.shape == (5, 8) and m.heatmap[m.y, m.x] == m.score for m in found)
    per = np.bincount([m.image for m in found])
    assert per.max() == per_image                                     # the cap holds and is reached on this data


@pytest.mark.parametrize("match", regions.MATCHES)
def test_screening_through_spectra_gives_the_brute_force_top_k(tmp_path, match):
    """Large windows scored in the frequency domain (saved and memory-mapped spectra): the same top-k, with
    post-ReLU-like features (zero images, zero and faint windows) and a brushed region."""
    rng = np.random.default_rng(3)
    features = np.maximum(rng.standard_normal((40, 6, 12, 10)), 0).astype(np.float32)
    features[7] = 0
    features[9] *= 1e-6                                               # faint: its bounds are wide
    features[11, :, :6] = 0
    features[12] = features[5]                                        # an exact copy ties with the query image
    regions.Spectra.of(features, chunk_bytes=6 * 12 * 10 * 16 * 7).save(tmp_path / "s.npy")
    spectra = regions.Spectra.load(tmp_path / "s.npy")
    assert isinstance(spectra.planes, np.memmap)
    mask = np.zeros((12, 10))
    mask[3:8, 2:6] = rng.uniform(0.3, 1, (5, 4))
    mask[3, 2] = 0
    for per_image in (1, 2):
        found = regions.search_regions(features, 5, mask, k=6, per_image=per_image, match=match, spectra=spectra,
                                       chunk_bytes=6 * 12 * 6 * 8 * 7)          # spectra of 7 images at a time
        assert as_tuples(found) == brute_force(features, 5, mask, 6, per_image, match)


def test_a_planted_pattern_is_found_where_it_was_copied():
    rng = np.random.default_rng(0)
    features = np.abs(rng.standard_normal((20, 6, 10, 10))).astype(np.float32)
    pattern = features[3, :, 2:5, 4:8].copy()
    places = {7: (5, 1), 11: (0, 6), 15: (6, 6)}
    for image, (y, x) in places.items():
        features[image, :, y:y + 3, x:x + 4] = pattern
    mask = np.zeros((10, 10))
    mask[2:5, 4:8] = 1
    found = regions.search_regions(torch.from_numpy(features), 3, mask, k=4)
    assert [(m.image, m.y, m.x) for m in found] == [(3, 2, 4)] + [(i, *places[i]) for i in sorted(places)]
    assert [m.score for m in found] == [1.0] * 4 and (found[0].height, found[0].width) == (3, 4)
    assert as_tuples(found) == brute_force(features, 3, mask, 4)


def test_near_ties_below_float32_resolution_are_ranked_exactly():
    rng = np.random.default_rng(1)
    features = rng.standard_normal((40, 8, 6, 6))
    pattern = features[0, :, 1:4, 1:4].copy()
    for image in range(1, 40):                    # copies whose cosines differ by about 1e-8
        features[image, :, 2:5, 0:3] = pattern + rng.uniform(0.5, 1.5) * 3e-4 * rng.standard_normal(pattern.shape)
    mask = np.zeros((6, 6))
    mask[1:4, 1:4] = 1
    found = regions.search_regions(features, 0, mask, k=15)
    assert as_tuples(found) == brute_force(features, 0, mask, 15)
    assert len({m.score for m in found}) == 15 and 1 - found[-1].score < 1e-6


def test_masks_from_boxes_weigh_each_cell_by_its_coverage():
    mask = regions.box_mask((4, 0, 12, 6), (16, 16))
    assert mask.sum() == 8 * 6 and mask[0, 4] and not mask[6, 4] and not mask[0, 12]
    weights = regions.pool_mask(mask, (4, 4))
    assert weights.tolist()[:2] == [[0, 1, 1, 0], [0, 0.5, 0.5, 0]] and weights[2:].sum() == 0


@pytest.mark.parametrize("call, error, message", [
    (lambda f, m: regions.box_mask((0, 0, 20, 4), (16, 16)), ValueError, r"box: \[0, 0, 20, 4\] is empty or not in"),
    (lambda f, m: regions.box_mask((5, 5, 5, 9), (16, 16)), ValueError, "box: .* is empty"),
    (lambda f, m: regions.box_mask((1, 2, 3), (16, 16)), ValueError, "box: expected four numbers"),
    (lambda f, m: regions.search_regions(f, 9, m), LookupError, r"item: 9 is not an image of the features \(0..3\)"),
    (lambda f, m: regions.search_regions(f, 0, m[:3]), ValueError, r"mask: expected cell weights of shape \(4, 4\)"),
    (lambda f, m: regions.search_regions(f, 0, m * 0), ValueError, "mask: the region covers no feature cell"),
    (lambda f, m: regions.search_regions(f, 0, m * 2), ValueError, r"mask: weights must lie in \[0, 1\]"),
    (lambda f, m: regions.search_regions(f, 0, m, k=0), ValueError, "k: must be an int >= 1"),
    (lambda f, m: regions.search_regions(f, 0, m, per_image=1.5), ValueError, "per_image: must be an int >= 1"),
    (lambda f, m: regions.search_regions(f, 0, m, match="max"), ValueError, "match: must be one of template, mean"),
    (lambda f, m: regions.search_regions(f, 1, m), ValueError, "mask: the features of image 1 under the region are"),
    (lambda f, m: regions.search_regions(f[0], 0, m), ValueError, r"features: expected an array \[N, C, h, w\]"),
])
def test_bad_queries_name_the_parameter(call, error, message):
    features = np.ones((4, 2, 4, 4), np.float16)
    features[1] = 0
    mask = np.zeros((4, 4))
    mask[1:3, 1:3] = 1
    with pytest.raises(error, match=message):
        call(features, mask)


# -- the service of a units project ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A units project of the planted model of tests.test_units over its dataset (no dissection needed)."""
    from seqvis.projects import open_project
    from tests.test_units import make_dataset, planted

    folder = tmp_path_factory.mktemp("regions")
    make_dataset(folder / "dataset")
    torch.save(planted().state_dict(), folder / "model.pt")
    (folder / "seqvis.yml").write_text("seqvis: 1\nkind: units\nname: planted\nmodel:\n"
                                       "  factory: tests.test_units:planted\n  weights: model.pt\n"
                                       "dataset: dataset\nlayers: [body.0, body.1.pool]\n")
    opened = open_project(folder)
    yield opened
    opened.close()


def red_square(data, item: int) -> list[int]:
    """[x0, y0, x1, y1] of the planted red square of `item` (concept 1 in its object map)."""
    ys, xs = np.nonzero(data.label_maps(item)[0] == 1)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def test_a_box_around_a_red_square_finds_the_red_squares_of_the_dataset(project, tmp_path):
    from seqvis.regions import FeatureSearch

    search = FeatureSearch(project, tmp_path / "cache", batch_size=5)
    data = search.dataset
    found = search.search("body.0", 3, box=red_square(data, 3), k=12)
    assert [r["item"] for r in found["results"]][:1] == [3] and found["results"][0]["score"] == 1.0
    assert sorted(r["item"] for r in found["results"]) == list(range(1, 24, 2))   # every image with a red square
    assert all(r["box"] == red_square(data, r["item"]) for r in found["results"])
    assert found["window"] == [6, 6] and found["cells"] == [16, 16] and found["region"] == red_square(data, 3)
    heatmap = np.array(found["results"][1]["heatmap"], dtype=float)            # None -> nan
    assert heatmap.shape == (16, 16) and np.isnan(heatmap[:3]).all() and np.isnan(heatmap[:, -2:]).all()
    assert np.nanmax(heatmap) == round(found["results"][1]["score"], 4)

    features = search.features("body.0")
    mask = regions.pool_mask(regions.box_mask(red_square(data, 3), data.image_size), (16, 16))
    assert [(r["item"], r["score"]) for r in found["results"]] == \
        [(image, round(score, 6)) for image, _, _, score in brute_force(features, 3, mask, 12)]
    brushed = np.zeros(data.image_size, int)                              # the same region as a mask
    x0, y0, x1, y1 = red_square(data, 3)
    brushed[y0:y1, x0:x1] = 1
    assert search.search("body.0", 3, mask=brushed.tolist(), k=12)["results"] == found["results"]
    coarse = search.search("body.1.pool", 3, box=[x0, y0, x1, y1], k=3, per_image=2, match="mean")
    assert coarse["cells"] == [8, 8] and len(coarse["results"]) == 3


def test_features_are_computed_once_and_recomputed_when_the_model_changes(project, tmp_path, monkeypatch):
    from seqvis import extract
    from seqvis.regions import FeatureSearch

    first = FeatureSearch(project, tmp_path / "cache")
    answer = first.search("body.0", 5, box=(0, 4, 8, 12), k=4)
    path = first.cache_path("body.0")
    assert path.is_file() and np.load(path, mmap_mode="r").dtype == np.float32
    spectra = [f"{path.stem}.spectra.npy", f"{path.stem}.spectra.npz"]                  # body.0 has 16x16 maps
    assert sorted(p.name for p in (tmp_path / "cache/features").iterdir()) == sorted([path.name, *spectra])

    def fail(*args, **kwargs):
        raise AssertionError("recomputed cached features")

    with monkeypatch.context() as patch:
        patch.setattr(extract, "load_model", fail)
        assert FeatureSearch(project, tmp_path / "cache").search("body.0", 5, box=(0, 4, 8, 12), k=4) == answer

    weights = torch.load(project.model.weights)
    weights["body.0.detect.conv.bias"] += 1.0
    torch.save(weights, project.model.weights)
    try:
        changed = FeatureSearch(project, tmp_path / "cache")
        assert changed.cache_path("body.0") != path
        assert changed.search("body.0", 5, box=(0, 4, 8, 12), k=4) != answer
        assert len(list((tmp_path / "cache/features").iterdir())) == 6
    finally:
        weights["body.0.detect.conv.bias"] -= 1.0
        torch.save(weights, project.model.weights)


@pytest.mark.parametrize("call, error, message", [
    (lambda s: s.search("fc", 0, box=(0, 0, 4, 4)), LookupError, "layer: unknown layer 'fc'; known: body.0, body.1"),
    (lambda s: s.search("body.0", 24, box=(0, 0, 4, 4)), LookupError, r"item: 24 is not an image of the dataset \(0"),
    (lambda s: s.search("body.0", "1", box=(0, 0, 4, 4)), LookupError, "item: '1' is not an image"),
    (lambda s: s.search("body.0", 1, box=(10, 10, 17, 12)), ValueError, "box: .* not inside the 16x16 image"),
    (lambda s: s.search("body.0", 1), ValueError, "box: give either a box"),
    (lambda s: s.search("body.0", 1, box=(0, 0, 4, 4), mask=np.ones((16, 16))), ValueError, "box: give either"),
    (lambda s: s.search("body.0", 1, mask=np.ones((16, 15))), ValueError, r"mask: expected 16 rows of 16 values"),
    (lambda s: s.search("body.0", 1, mask=np.zeros((16, 16))), ValueError, "mask: the region is empty"),
    (lambda s: s.search("body.0", 1, mask=np.full((16, 16), 0.5)), ValueError, "mask: values must be 0 or 1"),
    (lambda s: s.search("body.0", 1, mask=[["a"]]), ValueError, "mask: expected rows of numbers"),
    (lambda s: s.search("body.0", 1, box=(0, 0, 4, 4), k=0), ValueError, "k: must be an int >= 1"),
    (lambda s: s.search("body.0", 1, box=(0, 0, 4, 4), match="best"), ValueError, "match: must be one of"),
])
def test_bad_searches_name_the_parameter(project, tmp_path, call, error, message):
    from seqvis.regions import FeatureSearch

    with pytest.raises(error, match=message):
        call(FeatureSearch(project, tmp_path / "cache"))
    assert not (tmp_path / "cache").exists()                          # refused before any features are computed
