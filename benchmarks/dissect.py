"""Benchmark of dissecting the units demo's layers: seqvis's tally (core.align, as `seqvis.units.dissect` runs it)
against a NetDissect-Lite-style loop over images and units, in the same run, on the same activations.

For each layer of the demo model, the activations of every dataset image are computed once and both methods
get them from memory with the same thresholds (core.stats.Quantile, top 0.005) and the same label maps, so
only the tally is timed. The reference follows NetDissect-Lite's `tally_job`: per image and per unit whose
peak passes its threshold, upsample the map (F.interpolate, bilinear, as seqvis does), threshold it and
bincount the labels under it; union "category" (Lite's convention: a unit's on pixels count towards the
categories its mask touches in that image); no baseline for either. The loop runs
on the first `--loop-units` units of each layer and its time is extrapolated to all units (the loop's cost
is linear in units); the labels of those units must be identical and their IoUs within 1e-4 (a pixel whose
upsampled value equals the threshold may round either way).

Run: `python benchmarks/dissect.py [--project DIR] [--quick] [--threads N]`. Without a built demo project at
DIR (default data/demo-units), the demo is built into a temporary folder (the tiny build with --quick).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.align import Batch, align  # noqa: E402
from core.hooks import Trace  # noqa: E402
from core.stats import Quantile  # noqa: E402
from seqvis import units  # noqa: E402
from seqvis.broden import Broden  # noqa: E402
from seqvis.extract import load_model  # noqa: E402
from seqvis.projects import open_project  # noqa: E402

BATCH = 100


def clock() -> np.ndarray:
    """(wall, CPU) seconds: the machine is shared, so CPU time is the steadier figure."""
    return np.array([time.perf_counter(), time.process_time()])


def layer_activations(model, layer: str, images: np.ndarray) -> np.ndarray:
    """float32 `[n, units, h, w]` feature maps of `layer` for uint8 `images`."""
    parts = []
    for start in range(0, len(images), BATCH):
        with torch.no_grad(), Trace(model, layer, stop=True) as trace:
            model(units.to_input(torch.from_numpy(images[start:start + BATCH])))
        parts.append(units.feature_map(trace.output, layer).numpy())
    return np.concatenate(parts)


def thresholds_of(acts: np.ndarray, quantile: float) -> np.ndarray:
    sketch = Quantile()
    for start in range(0, len(acts), BATCH):
        chunk = acts[start:start + BATCH]
        sketch.update(chunk.transpose(0, 2, 3, 1).reshape(-1, chunk.shape[1]))
    return sketch.quantiles([1 - quantile])[:, 0].astype(np.float32)


def loop_tally(acts: np.ndarray, labels: np.ndarray, item_labels: np.ndarray, thresholds: np.ndarray,
               concept_category: np.ndarray, unit_ids: range) -> np.ndarray:
    """NetDissect-Lite's per-image, per-unit tally for `unit_ids`; IoU `[len(unit_ids), concepts]`, union "category":
    a unit's on pixels in an image count towards the categories its mask touches (and the image's item labels')."""
    concepts, size = item_labels.shape[1], labels.shape[2:]
    categories = int(concept_category.max()) + 1
    inter = np.zeros((len(unit_ids), concepts + 1), np.int64)
    on_category = np.zeros((len(unit_ids), categories), np.int64)
    label_count = np.zeros(concepts + 1, np.int64)
    for i in range(len(acts)):
        pixels = labels[i].astype(np.int64)
        whole = np.flatnonzero(item_labels[i])
        label_count += np.bincount(pixels.ravel(), minlength=concepts + 1)
        label_count[whole + 1] += size[0] * size[1]
        maps = torch.from_numpy(acts[i])
        for row, u in enumerate(unit_ids):
            if acts[i, u].max() <= thresholds[u]:
                continue
            up = F.interpolate(maps[u][None, None], size=size, mode="bilinear", align_corners=False)[0, 0].numpy()
            on = up > thresholds[u]
            count = int(on.sum())
            if count:
                hits = np.bincount(pixels[:, on].ravel(), minlength=concepts + 1)
                touched = np.zeros(categories, bool)
                touched[concept_category[np.flatnonzero(hits[1:])]] = True
                touched[concept_category[whole]] = True
                inter[row] += hits
                inter[row, whole + 1] += count
                on_category[row] += count * touched
    inter = inter[:, 1:]
    union = on_category[:, concept_category] + label_count[1:] - inter
    return np.divide(inter, union, out=np.zeros(inter.shape), where=union > 0)


def project_folder(args: argparse.Namespace) -> Path:
    if (args.project / "seqvis.yml").is_file():
        return args.project
    from seqvis.demo import build_demo
    from seqvis.progress import Progress

    print(f"{args.project} has no project: building the {'tiny ' if args.quick else ''}units demo", file=sys.stderr)
    return build_demo("units", Path(tempfile.mkdtemp(prefix="dissect-bench-")), tiny=args.quick,
                      progress=Progress("demo units"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("data/demo-units"), help="a built units demo project")
    parser.add_argument("--quick", action="store_true", help="the first 300 images, 4 loop units per layer")
    parser.add_argument("--loop-units", type=int, help="units per layer the reference loop runs on (default 16)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loop_units = args.loop_units or (4 if args.quick else 16)

    project = open_project(project_folder(args))
    model = load_model(project.model.factory, project.model.weights)
    data = Broden(project.dataset)
    items = np.arange(min(len(data), 300) if args.quick else len(data))
    batches = [data.batch(items[s:s + BATCH]) for s in range(0, len(items), BATCH)]
    images = np.concatenate([b.images for b in batches])
    labels = np.concatenate([b.labels.astype(np.int64) for b in batches])
    item_labels = np.concatenate([b.item_labels for b in batches])
    rows, total = [], np.zeros((2, 2))
    for layer in project.layers:
        acts = layer_activations(model, layer, images)
        thresholds = thresholds_of(acts, units.QUANTILE)
        begin = clock()
        result = align(lambda: (Batch(acts=acts[s:s + BATCH], labels=labels[s:s + BATCH],
                                      item_labels=item_labels[s:s + BATCH]) for s in range(0, len(acts), BATCH)),
                       data.concepts, data.categories, data.concept_category, union="category", thresholds=thresholds,
                       baseline=False)
        ours = clock() - begin
        subset = range(min(loop_units, acts.shape[1]))
        begin = clock()
        reference = loop_tally(acts, labels, item_labels, thresholds, data.concept_category, subset)
        loop = (clock() - begin) * acts.shape[1] / len(subset)
        ours_labels = [record.label for record in result.labels()[:len(subset)]]
        loop_labels = [data.concepts[c] for c in reference.argmax(1)]
        rows.append({"layer": layer, "units": acts.shape[1], "map": list(acts.shape[2:]), "loop_units": len(subset),
                     "seqvis_s": {"wall": round(ours[0], 3), "cpu": round(ours[1], 3)},
                     "loop_s_extrapolated": {"wall": round(loop[0], 3), "cpu": round(loop[1], 3)},
                     "speedup_cpu": round(loop[1] / ours[1], 1), "speedup_wall": round(loop[0] / ours[0], 1),
                     "labels_identical": ours_labels == loop_labels,
                     "max_iou_difference": float(np.abs(result.iou[0, :len(subset)] - reference).max())})
        total += np.stack([ours, loop])
        print(json.dumps(rows[-1]), file=sys.stderr)
    summary = {"images": len(items), "label_size": list(data.label_size), "concepts": len(data.concepts),
               "threads": args.threads, "layers": rows,
               "total": {"seqvis_s": {"wall": round(total[0, 0], 3), "cpu": round(total[0, 1], 3)},
                         "loop_s_extrapolated": {"wall": round(total[1, 0], 3), "cpu": round(total[1, 1], 3)},
                         "speedup_cpu": round(total[1, 1] / total[0, 1], 1),
                         "speedup_wall": round(total[1, 0] / total[0, 0], 1)},
               "labels_identical": all(row["labels_identical"] for row in rows)}
    print(json.dumps(summary, indent=1))
    if not summary["labels_identical"] or max(row["max_iou_difference"] for row in rows) > 1e-4:
        sys.exit("labels or IoUs differ between seqvis and the reference loop")


if __name__ == "__main__":
    main()
