"""CNN units: Network Dissection of any `torch.nn.Module` over a Broden dataset, unit ablation, and the services a
units project answers with (units per layer, a unit's detail, top images, ablation effects).

Model convention: `model(x)` takes float32 images `[n, 3, ih, iw]`, RGB in [0, 1] (or what `transform` makes
of the uint8 `[n, ih, iw, 3]` pixels), on the device of its parameters; normalisation belongs in the model.
A layer is a dotted module name whose output (or, for a tuple, its first element) is a feature map
`[n, units, h, w]`. Dissection follows NetDissect: per-unit top-`quantile` thresholds at feature-map
resolution, maps upsampled bilinearly to the label maps, IoU summed over the dataset, a unit's label its
best concept, a detector at IoU >= `min_iou`, and a shuffled-pairing baseline (see `core.align`).

    data = Broden("broden1_224")
    result = dissect(model, ["layer3", "layer4"], data, progress=Progress("dissect"))
    result["layer4"].alignment.labels()[7]          # UnitLabel(unit=7, label='dog', category='object', iou=...)
    write_dissection("out/dissection", result, data, dissection_settings(QUANTILE, "plain", False, 32))
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image
from torch import nn

from core.align import Alignment, Batch, align
from core.atomic import atomic_file, atomic_folder, write_text
from core.hooks import Trace, TraceDict, ablate, get_module
from core.stats import Quantile, TopK
from seqvis.broden import Broden, BrodenBatch

QUANTILE = 0.005
MIN_IOU = 0.04
TOP_K = 8
CURVE_POINTS = 101                     # quantiles 0, 0.01, ..., 1 per unit: the activation histogram's data
CACHE_BYTES = 1 << 29                  # a dataset whose decoded batches fit is read from disk once
THUMBNAIL = 128                        # pixels on the longer side of a rendered image, at least
REPORT = "report.json"
Transform = Callable[[torch.Tensor], torch.Tensor]


def to_input(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 `[n, h, w, 3]` pixels as the float32 `[n, 3, h, w]` RGB in [0, 1] that models take by default."""
    return pixels.permute(0, 3, 1, 2).float().div_(255)


def feature_map(output: Any, layer: str) -> torch.Tensor:
    """The `[n, units, h, w]` map in a layer's output (a tuple's first element), or a ValueError naming the layer."""
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    if not isinstance(output, torch.Tensor) or output.ndim != 4 or not output.is_floating_point():
        shape = list(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(f"layer {layer!r} outputs {shape}; dissection needs a float feature map [n, units, h, w]")
    return output


class _Reader:
    """The batches of a Broden dataset, decoded once and kept when they fit in `CACHE_BYTES`."""

    def __init__(self, dataset: Broden, batch_size: int):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.dataset, self.batch_size = dataset, batch_size
        first = dataset.batch([0])
        per_item = first.images.nbytes + first.labels.nbytes + first.item_labels.nbytes
        self._kept: list[BrodenBatch] | None = [] if per_item * len(dataset) <= CACHE_BYTES else None
        self._complete = False

    def __iter__(self) -> Iterator[BrodenBatch]:
        if self._complete:
            yield from self._kept
            return
        if self._kept is not None:
            self._kept.clear()
        for batch in self.dataset.batches(self.batch_size):
            if self._kept is not None:
                self._kept.append(batch)
            yield batch
        self._complete = self._kept is not None


class _Named:
    """Progress of one layer's stages: "<layer>: <stage>", with the dataset's size as the total."""

    def __init__(self, progress: Any, layer: str, total: int):
        self.progress, self.layer, self.total = progress, layer, total

    def start(self, stage: str, total: int | None = None) -> None:
        self.progress.start(f"{self.layer}: {stage}", total or self.total)

    def update(self, n: int = 1) -> None:
        self.progress.update(n)


@dataclass
class LayerDissection:
    """One layer's dissection: the alignment, and per unit its top images with their maps and its quantile curve."""
    layer: str
    shape: tuple[int, int, int]            # (units, h, w) of the feature map
    alignment: Alignment
    top_items: np.ndarray                  # [units, k] item indices, highest peak (max over positions) first
    top_values: np.ndarray                 # [units, k] those peaks
    top_maps: np.ndarray                   # [units, k, h, w] feature maps of those items, float16 where they fit
    curve: np.ndarray                      # [units, CURVE_POINTS] activation quantiles 0, 0.01, ..., 1


def dissect(model: nn.Module, layers: Sequence[str], dataset: Broden, *, quantile: float = QUANTILE,
            union: str = "category", signed: bool = False, min_iou: float = MIN_IOU, baseline: bool = True,
            batch_size: int = 32, top_k: int = TOP_K, transform: Transform = to_input,
            progress: Any = None) -> dict[str, LayerDissection]:
    """Dissect `layers` of `model` over every image of `dataset` (see the module docstring for the semantics).

    One forward pass over the dataset measures every layer's thresholds, quantile curves and top images,
    then one pass per layer (stopping after it) tallies its IoUs, and a last pass over the top images
    records their maps. `union`, `signed`, `baseline`, `min_iou` are `core.align.align`'s options: union
    "category" (the default, NetDissect-Lite's) counts a unit's on pixels toward a concept only where its mask
    touches the concept's category, "plain" in every image (the PNAS version).
    """
    if isinstance(layers, str) or not layers:
        raise ValueError("layers must be a non-empty list of dotted layer names")
    layers = list(dict.fromkeys(layers))
    for layer in layers:
        get_module(model, layer)
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile!r}")
    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an int >= 1, got {top_k!r}")
    reader = _Reader(dataset, batch_size)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    model.eval()

    def forward(batch: BrodenBatch, names: Sequence[str]) -> dict[str, torch.Tensor]:
        with torch.no_grad(), TraceDict(model, names, stop=True) as traces:
            model(transform(torch.from_numpy(batch.images)).to(device))
        return {name: feature_map(traces[name].output, name).float().cpu() for name in names}

    sketches = {layer: Quantile() for layer in layers}
    tops = {layer: TopK(top_k) for layer in layers}
    shapes: dict[str, tuple[int, int, int]] = {}
    if progress is not None:
        progress.start("activations", len(dataset))
    for batch in reader:
        for layer, acts in forward(batch, layers).items():
            shapes[layer] = tuple(acts.shape[1:])
            sketches[layer].update(acts.permute(0, 2, 3, 1).reshape(-1, acts.shape[1]))
            tops[layer].update(acts.amax(dim=(2, 3)), index=batch.indices)
        if progress is not None:
            progress.update(len(batch.indices))

    results = {}
    for layer in layers:
        curve = sketches[layer].quantiles(np.linspace(0, 1, CURVE_POINTS))
        thresholds = sketches[layer].quantiles([1 - quantile, quantile]).T[:2 if signed else 1]

        def batches(layer: str = layer) -> Iterator[Batch]:
            for batch in reader:
                yield Batch(acts=forward(batch, [layer])[layer], labels=batch.labels.astype(np.int64),
                            item_labels=batch.item_labels)

        alignment = align(batches, dataset.concepts, dataset.categories, dataset.concept_category,
                          quantile=quantile, signed=signed, union=union, thresholds=thresholds, baseline=baseline,
                          min_iou=min_iou, progress=None if progress is None else _Named(progress, layer, len(dataset)))
        results[layer] = LayerDissection(layer, shapes[layer], alignment, tops[layer].indices, tops[layer].values,
                                         np.zeros((0,)), curve)
    _record_top_maps(results, dataset, lambda batch: forward(batch, layers), batch_size, progress)
    return results


def _record_top_maps(results: dict[str, LayerDissection], dataset: Broden,
                     forward: Callable[[BrodenBatch], dict[str, torch.Tensor]], batch_size: int, progress: Any) -> None:
    """Fill in `top_maps` of every layer with one forward pass over the union of their top items."""
    items = np.unique(np.concatenate([r.top_items.reshape(-1) for r in results.values()]))
    for result in results.values():
        fits = np.abs(result.curve[:, [0, -1]]).max(initial=0) < np.finfo(np.float16).max
        result.top_maps = np.zeros((*result.top_items.shape, *result.shape[1:]), np.float16 if fits else np.float32)
    if progress is not None:
        progress.start("top images", len(items))
    for batch in dataset.batches(batch_size, items):
        maps = forward(batch)
        where = {int(item): row for row, item in enumerate(batch.indices)}
        for layer, result in results.items():
            for unit, rank in zip(*np.nonzero(np.isin(result.top_items, batch.indices))):
                result.top_maps[unit, rank] = maps[layer][where[int(result.top_items[unit, rank])], unit].numpy()
        if progress is not None:
            progress.update(len(batch.indices))


# -- results on disk ---------------------------------------------------------------------------------------------


def unit_records(result: LayerDissection, dataset: Broden) -> list[dict[str, Any]]:
    """One JSON-ready card per unit: label, category, IoU, direction, threshold, baseline, detector, top images."""
    cards = []
    for record in result.alignment.labels():
        top = [{"item": int(item), "image": dataset.records[item].image, "value": round(float(value), 6)}
               for item, value in zip(result.top_items[record.unit], result.top_values[record.unit])]
        cards.append({"unit": record.unit, "label": record.label, "category": record.category,
                      "iou": round(record.iou, 6), "direction": record.direction, "threshold": record.threshold,
                      "baseline_iou": None if record.baseline_iou is None else round(record.baseline_iou, 6),
                      "detector": record.detector, "top": top})
    return cards


def write_dissection(folder: str | os.PathLike, results: dict[str, LayerDissection], dataset: Broden,
                     settings: dict[str, Any]) -> Path:
    """Write `results` into `folder` (created; files written atomically) and return the path of its report.json.

    Per layer `<layer>/`: alignment.json (every IoU and count, `core.align.Alignment`), tally.csv (one row per
    unit), units.json (`unit_records`) and top.npz (`items`, `values`, `maps` float16 `[units, k, h, w]`,
    `curve` `[units, 101]`). report.json holds the settings and a summary per layer.
    """
    folder = Path(folder)
    layers = []
    for name, result in results.items():
        where = folder / name
        where.mkdir(parents=True, exist_ok=True)
        result.alignment.save(where / "alignment.json")
        result.alignment.to_csv(where / "tally.csv")
        write_text(where / "units.json", json.dumps(unit_records(result, dataset)))
        with atomic_file(where / "top.npz") as file:
            np.savez(file, items=result.top_items, values=result.top_values, maps=result.top_maps, curve=result.curve)
        units, height, width = result.shape
        layers.append({"name": name, "folder": name, "units": units, "height": height, "width": width,
                       "detectors": sum(r.detector for r in result.alignment.labels())})
    report = {"format": "seqvis.dissection", "version": 1,
              "settings": {**settings, "dataset": dataset.identity(), "images": len(dataset)}, "layers": layers}
    write_text(folder / REPORT, json.dumps(report, indent=1))
    return folder / REPORT


def dissection_settings(quantile: float, union: str, signed: bool, batch_size: int) -> dict[str, Any]:
    """The settings a dissection records next to its results."""
    return {"quantile": quantile, "union": union, "signed": signed, "min_iou": MIN_IOU, "baseline": "shuffled",
            "resolution": "upsample", "top_k": TOP_K, "batch_size": batch_size}


def write_units_project(folder: Path, *, model: nn.Module, factory: str, dataset: str,
                        results: dict[str, LayerDissection], data: Broden, settings: dict[str, Any], name: str,
                        description: str = "", files: dict[str, str] | None = None,
                        extra: dict[str, Any] | None = None) -> None:
    """Write a units project into `folder`: model.pt, dissection/, seqvis.yml. The dataset folder `dataset` and
    the extra `files` (names relative to `folder`) must be there already."""
    torch.save(model.state_dict(), folder / "model.pt")
    report = write_dissection(folder / "dissection", results, data, settings)
    description_file = {
        "seqvis": 1, "kind": "units", "name": name, "description": description,
        "model": {"factory": factory, "weights": "model.pt"}, "dataset": dataset, "layers": list(results),
        "files": {"dissection": report.relative_to(folder).as_posix(), **(files or {})},
        "extra": {"dissection": settings, **(extra or {})}}
    (folder / "seqvis.yml").write_text(yaml.safe_dump(description_file, sort_keys=False), encoding="utf-8")


def dissect_project(out_dir: str | os.PathLike, *, model: str, layers: Sequence[str], dataset: str | os.PathLike,
                    weights: str | os.PathLike | None = None, quantile: float = QUANTILE, union: str = "category",
                    signed: bool = False, batch_size: int = 32, name: str | None = None, overwrite: bool = False,
                    progress: Any = None) -> Path:
    """`seqvis dissect`: load `model` ("package.module:factory", optional weights), dissect `layers` over the Broden
    folder `dataset` and write a units project into `out_dir`, which links the dataset (a symlink, not a copy)."""
    from seqvis.extract import load_model

    out = Path(out_dir)
    with atomic_folder(out, overwrite) as work:
        net = load_model(model, weights)
        data = Broden(dataset)
        results = dissect(net, layers, data, quantile=quantile, union=union, signed=signed, batch_size=batch_size,
                          progress=progress)
        (work / "dataset").symlink_to(Path(dataset).resolve(), target_is_directory=True)
        write_units_project(work, model=net, factory=model, dataset="dataset", results=results, data=data,
                            settings=dissection_settings(quantile, union, signed, batch_size), name=name or out.name,
                            description=f"{model} dissected over {Path(dataset).name} ({len(data)} images)")
    return out



# -- ablation ------------------------------------------------------------------------------------------------------


def class_accuracy(model: nn.Module, images: np.ndarray, targets: Sequence[int], classes: int, *,
                   layer: str | None = None, units: Sequence[int] = (), batch_size: int = 64,
                   transform: Transform = to_input) -> tuple[np.ndarray, np.ndarray]:
    """Per class, how many of uint8 `images` `[n, h, w, 3]` (true classes `targets`) the model gets right, and how
    many there are: `(correct [classes], total [classes])`, with `units` of `layer` set to zero when given."""
    targets = np.asarray(targets, dtype=np.int64)
    if targets.shape != (len(images),) or (len(targets) and not 0 <= targets.min() <= targets.max() < classes):
        raise ValueError(f"targets must be {len(images)} class indices in 0..{classes - 1}")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    correct = np.zeros(classes, np.int64)
    model.eval()
    for start in range(0, len(images), batch_size):
        inputs = transform(torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size]))).to(device)
        with torch.no_grad():
            if layer is None or not len(units):
                logits = model(inputs)
            else:
                with Trace(model, layer, retain_output=False, edit_output=ablate(list(units))):
                    logits = model(inputs)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[1] != classes:
            raise ValueError(f"the model must return class scores [n, {classes}], got "
                             f"{list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}")
        chunk = targets[start:start + batch_size]
        correct += np.bincount(chunk[logits.argmax(1).cpu().numpy() == chunk], minlength=classes)
    return correct, np.bincount(targets, minlength=classes)


def _rate(correct: float, total: float) -> float | None:
    return None if total == 0 else round(float(correct / total), 6)


def ablation_effect(model: nn.Module, layer: str, units: Sequence[int], images: np.ndarray, targets: Sequence[int],
                    class_names: Sequence[str], *, batch_size: int = 64,
                    transform: Transform = to_input) -> dict[str, Any]:
    """Per-class accuracy over `images` before and after zeroing `units` of `layer`, and the change (after - before)."""
    units = sorted({int(u) for u in units})
    if not units:
        raise ValueError("units: name at least one unit to ablate")
    options = dict(batch_size=batch_size, transform=transform)
    correct, total = class_accuracy(model, images, targets, len(class_names), **options)
    ablated, _ = class_accuracy(model, images, targets, len(class_names), layer=layer, units=units, **options)
    rows = []
    for name, n, right, left in zip(class_names, total, correct, ablated):
        before, after = _rate(right, n), _rate(left, n)
        rows.append({"class": name, "images": int(n), "before": before, "after": after,
                     "change": None if n == 0 else round(after - before, 6)})
    return {"layer": layer, "units": units, "images": int(total.sum()),
            "accuracy": {"before": _rate(correct.sum(), total.sum()), "after": _rate(ablated.sum(), total.sum())},
            "classes": rows}


def rank_units(model: nn.Module, layer: str, target_class: int, images: np.ndarray, classes: int, *,
               units: Sequence[int], batch_size: int = 64, transform: Transform = to_input,
               progress: Any = None) -> list[dict[str, Any]]:
    """Each of `units` of `layer` ablated alone: the change of the accuracy on `images`, all of class
    `target_class`; largest drop first."""
    if not len(images):
        raise ValueError(f"class: no held-out images of class {target_class}")
    same = np.full(len(images), target_class)
    options = dict(batch_size=batch_size, transform=transform)
    before = _rate(class_accuracy(model, images, same, classes, **options)[0][target_class], len(images))
    if progress is not None:
        progress.start(f"ablate each unit of {layer}", len(units))
    ranking = []
    for unit in units:
        right = class_accuracy(model, images, same, classes, layer=layer, units=[unit], **options)[0][target_class]
        after = _rate(right, len(images))
        ranking.append({"unit": int(unit), "before": before, "after": after, "change": round(after - before, 6)})
        if progress is not None:
            progress.update(1)
    return sorted(ranking, key=lambda r: (r["change"], r["unit"]))


def highlight(pixels: np.ndarray, act_map: np.ndarray, threshold: float, direction: int) -> np.ndarray:
    """uint8 `pixels` `[ih, iw, 3]` with the region where `act_map` `[h, w]`, upsampled bilinearly to the image,
    is on (above `threshold`, or below it for direction -1) kept bright and outlined, the rest dimmed."""
    grid = torch.from_numpy(np.ascontiguousarray(act_map, np.float32))[None, None]
    upsampled = torch.nn.functional.interpolate(grid, size=pixels.shape[:2], mode="bilinear", align_corners=False)
    values = upsampled[0, 0].numpy()
    on = values > threshold if direction >= 0 else values < threshold
    padded = np.pad(on, 1, mode="edge")
    inner = on & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    out = np.where(on[..., None], pixels, pixels * 0.3 + 0.7 * 235).astype(np.uint8)
    out[on & ~inner] = (255, 140, 0)
    return out


# -- services of a units project -----------------------------------------------------------------------------------


SORT_KEYS = ("iou", "label", "unit")


class Units:
    """The answers of one units project: its dissection (read from disk), images, and cached ablations.

    Plain data in and out. Unknown layers and units raise LookupError, bad parameters ValueError, both naming
    the parameter. Ablation needs the project files `targets` (CSV `image,class`) and `classes` (one class
    name per line, in the model's output order); it measures on the images of split `extra.ablation_split`
    (default "val"). Results are cached in `cache_dir/ablation`, keyed by the parameters, the weights' and the
    dataset's identity.
    """

    kind = "units"

    def __init__(self, project: Any, cache_dir: str | os.PathLike):
        self.project = project
        self.cache_dir = Path(cache_dir)
        self._report: dict[str, Any] | None = None
        self._layers: dict[str, dict[str, Any]] = {}
        self._dataset: Broden | None = None
        self._model: nn.Module | None = None
        self._identity: dict[str, str] | None = None

    # -- dissection ------------------------------------------------------------------------------------------
    @property
    def report(self) -> dict[str, Any]:
        if self._report is None:
            path = self.project.files.get("dissection")
            if path is None:
                raise LookupError(f"project {self.project.name!r} has no dissection (files: dissection); run "
                                  f"`seqvis dissect`")
            self._report = json.loads(Path(path).read_text(encoding="utf-8"))
        return self._report

    @property
    def dataset(self) -> Broden:
        if self._dataset is None:
            self._dataset = Broden(self.project.dataset)
        return self._dataset

    def layers(self) -> list[dict[str, Any]]:
        """Each dissected layer: name, units, map size, detectors; and the dissection settings."""
        settings = self.report["settings"]
        return [{**{k: layer[k] for k in ("name", "units", "height", "width", "detectors")},
                 "quantile": settings["quantile"], "union": settings["union"]} for layer in self.report["layers"]]

    def _layer(self, name: str) -> dict[str, Any]:
        if name not in self._layers:
            entry = next((layer for layer in self.report["layers"] if layer["name"] == name), None)
            if entry is None:
                known = ", ".join(layer["name"] for layer in self.report["layers"])
                raise LookupError(f"layer: unknown layer {name!r}; known: {known}")
            folder = Path(self.project.files["dissection"]).parent / entry["folder"]
            with np.load(folder / "top.npz") as top:
                arrays = {key: top[key] for key in top.files}
            self._layers[name] = {"entry": entry, "folder": folder, **arrays,
                                  "cards": json.loads((folder / "units.json").read_text(encoding="utf-8"))}
        return self._layers[name]

    def _unit(self, layer: dict[str, Any], unit: int) -> int:
        units = layer["entry"]["units"]
        if not isinstance(unit, (int, np.integer)) or not 0 <= unit < units:
            raise LookupError(f"unit: {unit!r} is not a unit of layer {layer['entry']['name']!r} (0..{units - 1})")
        return int(unit)

    def units(self, layer: str, sort: str = "iou", descending: bool | None = None) -> list[dict[str, Any]]:
        """Every unit's card with its activation quantiles, sorted by `sort` (iou: best first; label, unit:
        ascending unless `descending`)."""
        if sort not in SORT_KEYS:
            raise ValueError(f"sort: must be one of {', '.join(SORT_KEYS)}, got {sort!r}")
        descending = sort == "iou" if descending is None else descending
        data = self._layer(layer)
        cards = [{**card, "quantiles": np.round(data["curve"][card["unit"]], 6).tolist()} for card in data["cards"]]
        key = {"iou": lambda c: (c["iou"], -c["unit"]), "label": lambda c: (c["label"], c["unit"]),
               "unit": lambda c: c["unit"]}[sort]
        return sorted(cards, key=key, reverse=descending)

    def unit(self, layer: str, unit: int, concepts: int = 10) -> dict[str, Any]:
        """A unit's card, its `concepts` best concepts (IoU, baseline) and its activation quantiles (histogram data)."""
        data = self._layer(layer)
        unit = self._unit(data, unit)
        alignment = self._alignment(layer)
        direction = 0 if data["cards"][unit]["direction"] == 1 else 1
        scores = alignment.iou[direction, unit]
        best = np.argsort(-scores, kind="stable")[:concepts]
        ranking = [{"concept": alignment.concepts[c], "category": alignment.categories[alignment.concept_category[c]],
                    "iou": round(float(scores[c]), 6),
                    "baseline_iou": None if alignment.baseline_iou is None
                    else round(float(alignment.baseline_iou[direction, unit, c]), 6)} for c in best]
        return {**data["cards"][unit], "layer": layer, "concepts": ranking,
                "quantiles": np.round(data["curve"][unit], 6).tolist()}

    def _alignment(self, layer: str) -> Alignment:
        data = self._layer(layer)
        if "alignment" not in data:
            data["alignment"] = Alignment.load(data["folder"] / "alignment.json")
        return data["alignment"]

    def top_images(self, layer: str, unit: int) -> dict[str, Any]:
        """A unit's top images: item, image path (under the dataset's images/), peak value, and its feature map
        `[h, w]` with the threshold, so that a page can draw the region above it."""
        data = self._layer(layer)
        unit = self._unit(data, unit)
        card = data["cards"][unit]
        return {"layer": layer, "unit": unit, "threshold": card["threshold"], "direction": card["direction"],
                "images": [{**top, "map": np.round(data["maps"][unit, rank].astype(np.float32), 4).tolist()}
                           for rank, top in enumerate(card["top"])]}

    def image_path(self, item: int) -> Path:
        """The file of dataset item `item` (an index into index.csv's rows), which must lie inside the dataset."""
        if not isinstance(item, (int, np.integer)) or not 0 <= item < len(self.dataset):
            raise LookupError(f"item: {item!r} is not an image of the dataset (0..{len(self.dataset) - 1})")
        root = self.dataset.folder.resolve()
        path = (root / "images" / self.dataset.records[item].image).resolve()
        if not path.is_relative_to(root):
            raise LookupError(f"item: image {self.dataset.records[item].image!r} lies outside the dataset folder")
        return path

    def thumbnail(self, item: int, layer: str | None = None, unit: int | None = None) -> Path:
        """A PNG of dataset image `item` with THUMBNAIL to 2 * THUMBNAIL pixels on its longer side (small images
        scaled up by a whole factor), and with `unit` of `layer` given (`item` then one of its top images) the
        region where the unit is on highlighted; rendered once into `cache_dir/thumbnails`, keyed by the image's
        and the dissection's file identity."""
        path = self.image_path(item)
        sources = [path]
        act_map = None
        if (layer is None) != (unit is None):
            raise ValueError("unit: give both layer and unit, or neither")
        if layer is not None:
            data = self._layer(layer)
            unit = self._unit(data, unit)
            card = data["cards"][unit]
            ranks = [rank for rank, top in enumerate(card["top"]) if top["item"] == item]
            if not ranks:
                raise LookupError(f"item: {item} is not a top image of unit {unit} of layer {layer!r}")
            act_map = (data["maps"][unit, ranks[0]].astype(np.float32), card["threshold"], card["direction"])
            sources.append(data["folder"] / "top.npz")
        identity = [[str(s), s.stat().st_mtime_ns, s.stat().st_size] for s in sources]
        key = hashlib.sha256(json.dumps([item, layer, unit, THUMBNAIL, identity]).encode()).hexdigest()[:24]
        target = self.cache_dir / "thumbnails" / f"{item}-{key}.png"
        if not target.is_file():
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
            rendered = highlight(pixels, *act_map) if act_map is not None else pixels
            longest = max(pixels.shape[:2])
            factor = -(-THUMBNAIL // longest) if longest < THUMBNAIL else min(1.0, 2 * THUMBNAIL / longest)
            size = (max(1, round(pixels.shape[1] * factor)), max(1, round(pixels.shape[0] * factor)))
            picture = Image.fromarray(rendered).resize(
                size, Image.Resampling.NEAREST if factor >= 1 else Image.Resampling.LANCZOS)
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(target) as file:
                picture.save(file, format="PNG")
        return target

    def detectors(self, layer: str) -> dict[str, Any]:
        """Detectors (IoU >= min_iou) per concept, grouped by category, most first: NetDissect's bar graph."""
        groups: dict[str, dict[str, int]] = {}
        for card in self._layer(layer)["cards"]:
            if card["detector"]:
                counts = groups.setdefault(card["category"], {})
                counts[card["label"]] = counts.get(card["label"], 0) + 1
        return {"layer": layer, "min_iou": self.report["settings"]["min_iou"],
                "categories": [{"category": category, "total": sum(counts.values()),
                                "concepts": [{"concept": c, "units": n} for c, n in
                                             sorted(counts.items(), key=lambda item: (-item[1], item[0]))]}
                               for category, counts in sorted(groups.items(), key=lambda g: -sum(g[1].values()))]}

    # -- ablation --------------------------------------------------------------------------------------------
    def classes(self) -> list[str]:
        path = self.project.files.get("classes")
        if path is None:
            raise LookupError(f"project {self.project.name!r} has no class names (files: classes), so no ablation")
        return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]

    def _held_out(self) -> tuple[np.ndarray, np.ndarray]:
        """Items of the held-out split and their class indices."""
        path = self.project.files.get("targets")
        if path is None:
            raise LookupError(f"project {self.project.name!r} has no targets (files: targets), so no ablation")
        names = self.classes()
        index = {name: i for i, name in enumerate(names)}
        split = self.project.extra.get("ablation_split", "val")
        target_of = {}
        with open(path, encoding="utf-8", newline="") as file:
            rows = csv.reader(file)
            if next(rows, None) != ["image", "class"]:
                raise ValueError(f"{Path(path).name} line 1: expected the header 'image,class'")
            for row in rows:
                if len(row) != 2 or row[1] not in index:
                    raise ValueError(f"{Path(path).name} line {rows.line_num}: expected 'image,class' with a class "
                                     f"of {Path(self.project.files['classes']).name}, found {','.join(row)!r}")
                target_of[row[0]] = index[row[1]]
        items = [i for i, r in enumerate(self.dataset.records) if r.split == split and r.image in target_of]
        if not items:
            raise ValueError(f"no images of split {split!r} have a target class")
        return np.array(items), np.array([target_of[self.dataset.records[i].image] for i in items])

    def model(self) -> nn.Module:
        if self._model is None:
            from seqvis.extract import load_model

            self._model = load_model(self.project.model.factory, self.project.model.weights)
        return self._model

    def _cached(self, parameters: dict[str, Any], compute: Callable[[], Any]) -> Any:
        """`compute()`, or what it returned before for the same parameters, weights and dataset."""
        if self._identity is None:
            weights = hashlib.sha256(self.project.model.weights.read_bytes()).hexdigest()
            self._identity = {"weights": weights, "dataset": self.dataset.identity()}
        key = json.dumps({**parameters, **self._identity}, sort_keys=True)
        path = self.cache_dir / "ablation" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
        result = compute()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(result))
        return result

    def ablate(self, layer: str, units: Sequence[int] | None = None, label: str | None = None) -> dict[str, Any]:
        """Per-class held-out accuracy before and after zeroing `units` (ids) or every detector labelled `label`."""
        data = self._layer(layer)
        if (units is None) == (label is None):
            raise ValueError("units: give either unit ids or a label")
        if label is not None:
            units = [card["unit"] for card in data["cards"] if card["label"] == label and card["detector"]]
            if not units:
                raise LookupError(f"label: no detector of layer {layer!r} is labelled {label!r}")
        units = sorted({self._unit(data, u) for u in units})
        if not units:
            raise ValueError("units: name at least one unit")

        def compute() -> dict[str, Any]:
            items, targets = self._held_out()
            return ablation_effect(self.model(), layer, units, self.dataset.images(items), targets, self.classes())

        result = self._cached({"what": "ablate", "layer": layer, "units": units}, compute)
        return {**result, "label": label}

    def rank(self, layer: str, class_name: str, progress: Any = None) -> dict[str, Any]:
        """Every unit of `layer` ablated alone, ranked by the drop of `class_name`'s held-out accuracy."""
        data = self._layer(layer)
        names = self.classes()
        if class_name not in names:
            raise LookupError(f"class: unknown class {class_name!r}; known: {', '.join(names)}")
        target = names.index(class_name)

        def compute() -> dict[str, Any]:
            items, targets = self._held_out()
            images = self.dataset.images(items[targets == target])
            ranking = rank_units(self.model(), layer, target, images, len(names),
                                 units=range(data["entry"]["units"]), progress=progress)
            labels = {card["unit"]: card["label"] for card in data["cards"]}
            return {"layer": layer, "class": class_name, "images": len(images),
                    "units": [{**r, "label": labels[r["unit"]]} for r in ranking]}

        return self._cached({"what": "rank", "layer": layer, "class": class_name}, compute)
