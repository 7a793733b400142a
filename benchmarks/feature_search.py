"""Benchmark of feature search (`seqvis.regions`, `core.regions`): a region query over the demo dataset from
cached features against recomputing the features (running the model over the dataset) per query.

Project: the built units demo at --project, else data/demo-units or /tmp/demo-full/demo-units (3000
images, 64x64), else the tiny demo built into a temporary folder (said so in the output). Per layer:
features cached once (the build is timed when it happens; later runs reuse benchmarks/out/), then
QUERIES boxes (16 to 32 pixels a side, random images and places, seed 0) are answered from the cache
(median of the queries, each run twice, the second timed) and by the baseline: decode every image, run
the model to the layer, then the same search on those features: directly or, where the service keeps
spectra, through spectra computed first, whichever is faster. Both use --threads torch threads.
Results are checked against a brute-force reference: for every image, every window's mask-weighted
features against the query in float64 (numpy sliding windows, no convolution), the same tie rule;
(item, box, score) must be identical. Run: `python benchmarks/feature_search.py [--quick] [--threads 1]`.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.hooks import TraceDict  # noqa: E402
from core.regions import DECIMALS, box_mask, pool_mask, search_regions  # noqa: E402
from seqvis.progress import Progress  # noqa: E402
from seqvis.projects import open_project  # noqa: E402
from core.regions import Spectra  # noqa: E402
from seqvis.regions import SPECTRA_CELLS, FeatureSearch  # noqa: E402
from seqvis.units import feature_map, to_input  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
PLACES = (Path("data/demo-units"), Path("/tmp/demo-full/demo-units"))
QUERIES, K = 5, 10


def find_project(given: Path | None, quick: bool) -> tuple[Path, str]:
    """The demo project to measure on, and a line saying which it is."""
    for place in ([given] if given else PLACES):
        if (place / "seqvis.yml").is_file():
            return place, f"demo project {place}"
    if given:
        sys.exit(f"--project {given}: no seqvis.yml there")
    from seqvis.demo import build_demo

    folder = build_demo("units", Path(tempfile.mkdtemp(prefix="feature-search-bench-")), tiny=True,
                        progress=Progress("tiny demo"))
    return folder, f"no full demo found ({', '.join(map(str, PLACES))}): the TINY demo built into {folder}"


def recompute(search: FeatureSearch, layer: str) -> np.ndarray:
    """The baseline's features: every image decoded and run through the model up to `layer`."""
    from seqvis.extract import load_model

    model = load_model(search.project.model.factory, search.project.model.weights)
    data = search.dataset
    blocks = []
    for start in range(0, len(data), search.batch_size):
        pixels = torch.from_numpy(data.images(range(start, min(len(data), start + search.batch_size))))
        with torch.no_grad(), TraceDict(model, [layer], stop=True) as traces:
            model(to_input(pixels))
        blocks.append(feature_map(traces[layer].output, layer).float().numpy())
    return np.concatenate(blocks)


def brute_force(features: np.ndarray, item: int, mask: np.ndarray, k: int) -> list[tuple[int, int, int, float]]:
    """(image, y, x, score) of the k best windows, one per image, every window scored directly in float64."""
    rows, cols = np.nonzero(mask > 0)
    top, left, bottom, right = rows.min(), cols.min(), rows.max() + 1, cols.max() + 1
    weights = mask[top:bottom, left:right]
    query = weights * features[item, :, top:bottom, left:right].astype(np.float64)
    query /= np.sqrt((query * query).sum())
    best = []
    for image in range(len(features)):
        windows = np.lib.stride_tricks.sliding_window_view(features[image].astype(np.float64), weights.shape,
                                                           axis=(1, 2)) * weights        # [C, h', w', bh, bw]
        dots = np.einsum("cyxij,cij->yx", windows, query)
        norms = np.sqrt(np.einsum("cyxij,cyxij->yx", windows, windows))
        scores = np.round(np.clip(np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0), -1, 1), DECIMALS)
        y, x = np.unravel_index(np.argmax(scores), scores.shape)          # first best: ties by row, column
        best.append((image, int(y), int(x), float(scores[y, x])))
    return sorted(best, key=lambda r: (-r[3], r[0], r[1], r[2]))[:k]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: two layers, two queries, one checked")
    parser.add_argument("--project", type=Path, help="a built units demo project")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder, which = find_project(args.project, args.quick)
    project = open_project(folder)
    search = FeatureSearch(project, OUT / "feature-search-cache", batch_size=100)
    data = search.dataset
    layers = project.layers[-2:] if args.quick else project.layers
    queries, checked = (2, 1) if args.quick else (QUERIES, 2)
    rng = np.random.default_rng(0)
    ih, iw = data.image_size
    boxes = []
    for _ in range(queries):
        side = int(rng.integers(16, 33))
        x0, y0 = (int(v) for v in rng.integers(0, [iw - side + 1, ih - side + 1]))
        boxes.append((int(rng.integers(len(data))), (x0, y0, x0 + side, y0 + side)))
    print(f"{which}: {len(data)} images {ih}x{iw}; {queries} box queries, top-{K}, {args.threads} thread(s)",
          flush=True)
    for layer in layers:
        started = time.perf_counter()
        cached = search.cache_path(layer).is_file()
        features = search.features(layer)
        search.spectra(layer)
        built = "reused" if cached else f"built in {time.perf_counter() - started:.1f} s"
        times, same = [], []
        for number, (item, box) in enumerate(boxes):
            search.search(layer, item, box=box, k=K)
            started = time.perf_counter()
            answer = search.search(layer, item, box=box, k=K)
            times.append(time.perf_counter() - started)
            if number < checked:
                mask = pool_mask(box_mask(box, (ih, iw)), features.shape[2:])
                reference = brute_force(np.asarray(features), item, mask, K)
                found = search_regions(features, item, mask, k=K, spectra=search.spectra(layer))
                same.append([(m.image, m.y, m.x, m.score) for m in found] == reference
                            and [r["item"] for r in answer["results"]] == [r[0] for r in reference])
        started = time.perf_counter()
        fresh = recompute(search, layer)
        computed = time.perf_counter() - started
        item, box = boxes[0]
        mask = pool_mask(box_mask(box, (ih, iw)), fresh.shape[2:])
        started = time.perf_counter()
        search_regions(fresh, item, mask, k=K)
        direct = time.perf_counter() - started
        parts = f"features {computed:.2f} s, then search {direct:.2f} s"
        if fresh.shape[2] * fresh.shape[3] >= SPECTRA_CELLS:
            started = time.perf_counter()
            search_regions(fresh, item, mask, k=K, spectra=Spectra.of(fresh))
            through_spectra = time.perf_counter() - started
            parts += f" or spectra and search {through_spectra:.2f} s"
            direct = min(direct, through_spectra)
        baseline = computed + direct
        query = float(np.median(times))
        print(f"  {layer}: features {list(features.shape[1:])} {features.dtype} {features.nbytes / 2**20:.0f} MiB "
              f"({built}); "
              f"query median {query * 1e3:.0f} ms (max {max(times) * 1e3:.0f}); recompute + search "
              f"{baseline:.2f} s ({parts}); speed-up {baseline / query:.0f}x; identical to brute force: "
              f"{all(same)} ({len(same)} checked)", flush=True)
    project.close()


if __name__ == "__main__":
    main()
