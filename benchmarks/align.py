"""Benchmark of `core.align`: NetDissect tally of CNN units, against the NetDissect-Lite per-unit loop.

Case 1 (images): 2000 images x 512 units at 7x7 against 112x112 label maps (4 maps: 40 pixel concepts
in 4 categories) plus 10 image-level concepts (2 categories), union "category" as NetDissect-Lite
counts it. The reference is NetDissect-Lite's loop: per image and unit whose 7x7 max passes the
threshold, upsample (the same F.interpolate call), threshold (np.argwhere), np.bincount the labels under
the mask, np.dot with the label-category matrix for the categories it touches, after thresholds from
np.percentile over each unit's activations (NetDissect-Lite's first version; later ones use a sketch).
core.align runs with and without its shuffled baseline (the reference has none); labels must be
identical and IoU within 1e-4.
Case 2 (tokens): 1M tokens (2000 sequences of 450-550, padded to 550) x 512 units x 30 concepts,
signed, union "plain", with align (top 0.005 quantile) and with search_thresholds (every threshold, IoU
and AP); time and memory only. Each method runs in a fresh subprocess; peak memory is its VmHWM (reset
after the synthetic data is built, so it counts the data plus the method). Times are wall and CPU
seconds; on a shared machine use --threads 1 and read the CPU column.
Run: `python benchmarks/align.py [--quick] [--threads N]`.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.align import Batch, align, search_thresholds  # noqa: E402

CATEGORIES = ["object", "part", "material", "colour", "scene", "texture"]
PER_CATEGORY = [16, 10, 8, 6, 6, 4]             # the first four are pixel label maps, the last two item-level
BATCH = 100
TOKEN_TAGS, TOKEN_SPANS = 20, 10


def make_images(n: int, units: int, size: int = 112, cells: int = 7, seed: int = 0):
    """Label maps [n, 4, size, size] int16, item labels [n, 50] bool, activations [n, units, cells, cells].

    Colour covers every pixel in 8x8 blocks; objects are 1-3 rectangles with a part inside each;
    materials 0-2 rectangles. Each unit follows one concept (its activation is the concept's share of
    the cell, times a gain, plus noise), 15% are pure noise.
    """
    rng = np.random.default_rng(seed)
    first = np.concatenate([[0], np.cumsum(PER_CATEGORY)])
    concepts = int(first[-1])
    labels = np.zeros((n, 4, size, size), np.int16)
    block = size // 14
    labels[:, 3] = (rng.integers(first[3], first[4], (n, 14, 14)) + 1).repeat(block, 1).repeat(block, 2)
    for i in range(n):
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, size - 24, 2)
            h, w = rng.integers(24, 72, 2)
            labels[i, 0, y:y + h, x:x + w] = rng.integers(first[0], first[1]) + 1
            part_y, part_x = y + h // 4, x + w // 4
            labels[i, 1, part_y:part_y + h // 2, part_x:part_x + w // 2] = rng.integers(first[1], first[2]) + 1
        for _ in range(rng.integers(0, 3)):
            y, x = rng.integers(0, size - 16, 2)
            h, w = rng.integers(16, 64, 2)
            labels[i, 2, y:y + h, x:x + w] = rng.integers(first[2], first[3]) + 1
    item_labels = np.zeros((n, concepts), bool)
    item_labels[np.arange(n), rng.integers(first[4], first[5], n)] = True
    texture = rng.integers(first[5], first[6] + 2, n)                   # two in six images have none
    has = texture < first[6]
    item_labels[np.arange(n)[has], texture[has]] = True
    side = size // cells
    cell_of = (np.arange(size) // side)[:, None] * cells + (np.arange(size) // side)[None, :]
    share = np.zeros((n, concepts + 1, cells * cells), np.float32)
    for k in range(4):
        key = (np.arange(n)[:, None] * (concepts + 1) + labels[:, k].reshape(n, -1)) * cells * cells + cell_of.ravel()
        share += np.bincount(key.ravel(), minlength=share.size).reshape(share.shape) / side**2
    share = share[:, 1:] + item_labels[:, :, None]
    target = rng.integers(0, concepts, units)
    gain = rng.uniform(1.0, 3.0, units).astype(np.float32) * (rng.random(units) >= 0.15)
    acts = rng.standard_normal((n, units, cells * cells), dtype=np.float32) * 0.5
    acts += gain[None, :, None] * share[:, target]
    concept_category = np.repeat(np.arange(len(CATEGORIES)), PER_CATEGORY)
    return acts.reshape(n, units, cells, cells), labels, item_labels, concept_category


def make_tokens(sequences: int, units: int, length: int = 550, seed: int = 1):
    """Activations [sequences, units, length] float16, label maps [sequences, 2, length], validity.

    Map 0 tags every token with one of 20 tags; map 1 marks spans (about 30% of tokens) with one of 10
    kinds. Units follow a tag or span kind, signed (some fall where the concept is), plus noise.
    """
    rng = np.random.default_rng(seed)
    lengths = rng.integers(length - 100, length + 1, sequences)
    valid = np.arange(length)[None, :] < lengths[:, None]
    labels = np.zeros((sequences, 2, length), np.int16)
    labels[:, 0] = rng.integers(1, TOKEN_TAGS + 1, (sequences, length))
    span_start = rng.random((sequences, length)) < 0.05
    span_kind = np.where(span_start, rng.integers(TOKEN_TAGS + 1, TOKEN_TAGS + TOKEN_SPANS + 1, span_start.shape), 0)
    run = np.maximum.accumulate(np.where(span_start, np.arange(length), -100), axis=1)
    inside = np.arange(length) - run < 6                                 # spans of six tokens
    labels[:, 1] = np.where(inside, np.take_along_axis(span_kind, np.maximum(run, 0), 1), 0)
    target = rng.integers(0, TOKEN_TAGS + TOKEN_SPANS, units)
    gain = (rng.uniform(1.0, 3.0, units) * rng.choice([-1, 1], units) * (rng.random(units) >= 0.15)).astype(np.float32)
    acts = np.empty((sequences, units, length), np.float16)
    for s in range(0, sequences, BATCH):
        lab = labels[s:s + BATCH]
        hit = (lab[:, 0, None] == target[None, :, None] + 1) | (lab[:, 1, None] == target[None, :, None] + 1)
        noise = rng.standard_normal(hit.shape, dtype=np.float32) * 0.5
        acts[s:s + BATCH] = noise + gain[None, :, None] * hit
    return acts, labels, valid


def image_batches(acts, labels, item_labels):
    return lambda: (Batch(acts=acts[s:s + BATCH], labels=labels[s:s + BATCH], item_labels=item_labels[s:s + BATCH])
                    for s in range(0, len(acts), BATCH))


def reference_thresholds(acts: np.ndarray, quantile: float) -> np.ndarray:
    """NetDissect-Lite's thresholds (its first version): np.percentile over all of each unit's activations."""
    return np.percentile(acts, 100 * (1 - quantile), axis=(0, 2, 3)).astype(np.float32)


def reference_tally(acts, labels, item_labels, thresholds, concept_category):
    """NetDissect-Lite's tally: loop over images and units, upsample, threshold, bincount; IoU [units, C].

    A unit's on pixels in an image count toward the categories of the labels they touch (and of the image's
    item labels), as NetDissect-Lite's tally_units_cat."""
    n, units = acts.shape[:2]
    concepts, size = item_labels.shape[1], labels.shape[2:]
    categories = concept_category.max() + 1
    inter = np.zeros((units, concepts + 1), np.int64)
    on_category = np.zeros((units, categories), np.int64)
    label_count = np.zeros(concepts + 1, np.int64)
    labelcat = np.zeros((concepts + 1, categories), np.int64)       # label value -> its category, one-hot
    labelcat[np.arange(1, concepts + 1), concept_category] = 1
    for i in range(n):
        pixels = labels[i].astype(np.int64)
        whole = np.flatnonzero(item_labels[i])
        whole_category = labelcat[whole + 1].sum(0)
        label_count += np.bincount(pixels.ravel(), minlength=concepts + 1)
        label_count[whole + 1] += size[0] * size[1]
        maps = torch.from_numpy(acts[i])
        peaks = acts[i].reshape(units, -1).max(1)
        for u in range(units):
            if peaks[u] <= thresholds[u]:
                continue
            up = F.interpolate(maps[u][None, None], size=size, mode="bilinear", align_corners=False)[0, 0].numpy()
            indexes = np.argwhere(up > thresholds[u])
            count = len(indexes)
            if count:
                hits = np.bincount(pixels[:, indexes[:, 0], indexes[:, 1]].ravel(), minlength=concepts + 1)
                hits[0] = 0
                inter[u] += hits
                inter[u, whole + 1] += count
                on_category[u] += count * ((np.dot(hits[None, :], labelcat)[0] + whole_category) > 0)
    inter = inter[:, 1:]
    union = on_category[:, concept_category] + label_count[1:] - inter
    return np.divide(inter, union, out=np.zeros(inter.shape), where=union > 0)


def peak_memory_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


def reset_peak_memory() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
    except OSError:
        pass                    # the peak then also counts building the data


def clock() -> tuple[float, float]:
    """(wall, CPU) seconds: the machine is shared, so CPU time (all threads of this process) is the steadier figure."""
    return time.perf_counter(), time.process_time()


class StageClock:
    """A progress sink that records when each stage starts."""

    def __init__(self):
        self.starts: dict[str, tuple[float, float]] = {}

    def start(self, stage: str, total: int | None = None) -> None:
        self.starts[stage] = clock()

    def update(self, n: int = 1) -> None:
        pass


def run_method(method: str, args: argparse.Namespace, out: Path) -> dict:
    """One measurement, in this (fresh) process; arrays go to `out`, figures are returned."""
    torch.set_num_threads(args.threads)
    names = None
    concepts = [f"tag{i}" for i in range(TOKEN_TAGS)] + [f"span{i}" for i in range(TOKEN_SPANS)]
    category = [0] * TOKEN_TAGS + [1] * TOKEN_SPANS
    if method in ("tokens", "search"):
        acts, labels, valid = make_tokens(args.sequences, args.units)
    else:
        acts, labels, item_labels, concept_category = make_images(args.images, args.units)
        names = [f"concept{i}" for i in range(item_labels.shape[1])]
    if method == "search":                          # one long sequence: [tokens, units] and [tokens, concepts]
        rows = acts.transpose(0, 2, 1)[valid]
        tags, spans = labels[:, 0][valid], labels[:, 1][valid]
        masks = np.zeros((len(rows), len(concepts)), bool)
        masks[np.arange(len(rows)), tags - 1] = True
        masks[np.flatnonzero(spans), spans[spans > 0] - 1] = True
        del acts, labels
    reset_peak_memory()
    begin = clock()
    if method == "reference":
        thresholds = reference_thresholds(acts, 0.005)
        middle = clock()
        iou = reference_tally(acts, labels, item_labels, thresholds, concept_category)
    elif method in ("align", "align_baseline"):
        stages = StageClock()
        result = align(image_batches(acts, labels, item_labels), names, CATEGORIES, concept_category,
                       union="category", baseline=method == "align_baseline", progress=stages)
        middle, iou, thresholds = stages.starts["tally"], result.iou[0], result.thresholds[0]
    elif method == "search":
        middle = begin
        result = search_thresholds(rows, masks, concepts, ["tag", "span"], category)
        iou, thresholds = result.iou, result.threshold
        detectors = int((result.iou.max((0, 2)) > result.baseline_iou.max((0, 2)) + 0.1).sum())
    else:
        stages = StageClock()
        batches = lambda: (Batch(acts=torch.from_numpy(acts[s:s + BATCH]).float(), labels=labels[s:s + BATCH],
                                 valid=valid[s:s + BATCH]) for s in range(0, len(acts), BATCH))
        result = align(batches, concepts, ["tag", "span"], category, signed=True, progress=stages)
        middle, iou, thresholds = stages.starts["tally"], result.iou, result.thresholds
        detectors = sum(record.detector for record in result.labels())
    end = clock()
    np.savez(out / f"{method}.npz", iou=iou, thresholds=thresholds)
    figures = {"peak_mb": peak_memory_mb()}
    for kind, k in (("wall", 0), ("cpu", 1)):
        figures[kind] = {"thresholds": middle[k] - begin[k], "tally": end[k] - middle[k], "total": end[k] - begin[k]}
    if method in ("tokens", "search"):
        figures.update(tokens=int(valid.sum()), detectors=detectors)
    return figures


def measure(method: str, args: argparse.Namespace, out: Path) -> dict:
    command = [sys.executable, __file__, "--run", method, "--out", str(out), "--threads", str(args.threads)]
    if args.quick:
        command.append("--quick")
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


METHODS = {"reference": "NetDissect-Lite loop", "align": "core.align", "align_baseline": "core.align + baseline",
           "tokens": "core.align tokens, signed", "search": "search_thresholds tokens"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 images x 128 units, 100k tokens")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads per method")
    parser.add_argument("--run", choices=list(METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.images, args.units, args.sequences = (200, 128, 200) if args.quick else (2000, 512, 2000)
    if args.run:
        print(json.dumps(run_method(args.run, args, args.out)))
        return
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        figures = {method: measure(method, args, out) for method in METHODS}
        fast, slow = np.load(out / "align.npz"), np.load(out / "reference.npz")
        same_thresholds = np.array_equal(fast["thresholds"], slow["thresholds"])
        same_labels = np.array_equal(fast["iou"].argmax(1), slow["iou"].argmax(1))
        iou_diff = float(np.abs(fast["iou"] - slow["iou"]).max())
    print(f"images: {args.images} x {args.units} units, 7x7 -> 112x112, 40 pixel + 10 image concepts, "
          f"{args.threads} torch thread(s)")
    print(f"  thresholds identical: {same_thresholds}; labels identical: {same_labels}; max |IoU diff| {iou_diff:.2e}")
    print("seconds as wall / CPU (this process, all threads; the CPU figure is steadier on a shared machine)")
    print(f"{'method':<28}{'thresholds s':>16}{'tally s':>16}{'total s':>16}{'peak MB':>9}")
    for method, name in METHODS.items():
        f = figures[method]
        stages = ("thresholds", "tally", "total")
        cells = "".join(f"{f['wall'][stage]:>9.2f} /{f['cpu'][stage]:>6.2f}" for stage in stages)
        print(f"{name:<28}{cells}{f['peak_mb']:>9.0f}")
    ref = figures["reference"]
    for method in ("align", "align_baseline"):
        for kind in ("wall", "cpu"):
            new = figures[method]
            print(f"speedup of {METHODS[method]} ({kind}): tally {ref[kind]['tally'] / new[kind]['tally']:.1f}x, "
                  f"total {ref[kind]['total'] / new[kind]['total']:.1f}x")
    tok, search = figures["tokens"], figures["search"]
    print(f"tokens: {tok['tokens']:,} valid tokens x {args.units} units x {TOKEN_TAGS + TOKEN_SPANS} concepts; "
          f"align (top 0.005, +h and -h, baseline): {tok['detectors']} detectors; search_thresholds (every threshold, "
          f"IoU and AP, +h and -h, baseline): {search['detectors']} units beat their baseline IoU by 0.1")
    if not (same_labels and iou_diff <= 1e-4):
        sys.exit("align disagrees with the reference")


if __name__ == "__main__":
    main()
