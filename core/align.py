"""Unit-concept alignment (Network Dissection): thresholds, IoU of unit masks with concept masks, labels.

One code path for tokens and pixels. Activations are `[items, units, *positions]` (positions `(T,)` for
sequences, `(h, w)` for images, none for dense layers) and concepts lie over the same items. A unit is
on where its activation exceeds its top-`quantile` threshold (NetDissect, Bau et al. 2017); its IoU with
a concept is |on AND concept| / |on OR concept| summed over the whole dataset, and its label is its best
concept. Image concepts may be finer than the activations: the map is then upsampled bilinearly (or the
concepts pooled). A shuffled pairing of items with concepts gives a baseline for every score.

    result = align(lambda: (Batch(acts, labels=segmentation) for acts, segmentation in loader),
                   concepts, categories, concept_category)
    for record in result.labels():
        print(record.unit, record.label, round(record.iou, 3), record.detector)

A top quantile leaves dense concepts out of reach (a concept on 25% of tokens caps IoU at about 0.02
at 0.005), so token units have `search_thresholds`: for each unit, direction and concept, the IoU at the
best of all thresholds and the average precision of ranking tokens by the activation.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from core.atomic import write_text
from core.kernels import tally_on
from core.stats import Quantile

ArrayLike = torch.Tensor | np.ndarray
UNIONS = ("plain", "category")
RESOLUTIONS = ("upsample", "pool")
_CHUNK_VALUES = 1 << 22     # values ranked, or label counts tallied, at a time; bounds the temporaries
_EXACT_VALUES = 1 << 26     # activation values kept for exact thresholds (256 MB); past this a quantile sketch
_READ_VALUES = 1 << 25      # values read at a time from an HDF5 dataset by search_thresholds


class Progress(Protocol):
    """Anything with these two methods (seqvis.progress.Progress, for one) can follow a long alignment."""

    def start(self, stage: str, total: int | None = None) -> None: ...
    def update(self, n: int = 1) -> None: ...


@dataclass
class Batch:
    """Activations of some items and the concepts over the same items.

    acts `[items, units, *positions]` floats; masks `[items, concepts, *concept_positions]` bool;
    labels `[items, maps, *concept_positions]` ints, value v > 0 meaning `concepts[v - 1]` and 0 no label
    (use extra maps where a position carries several labels, as Broden does); item_labels
    `[items, concepts]` bool (the concept covers the whole item); valid `[items, *positions]` bool
    (False marks padding, which counts nowhere). Concept positions equal the activation positions,
    except for images, where they may be finer.
    """
    acts: ArrayLike
    masks: ArrayLike | None = None
    labels: ArrayLike | None = None
    item_labels: ArrayLike | None = None
    valid: ArrayLike | None = None


@dataclass(frozen=True)
class UnitLabel:
    """A unit paired with a concept: the IoU, the direction that scored it and the shuffled-label baseline."""
    unit: int
    label: str
    category: str
    iou: float
    direction: int                  # +1: on where h > threshold; -1: on where h < the low threshold
    threshold: float
    baseline_iou: float | None
    detector: bool                  # iou >= min_iou


class _Result:
    """What the result dataclasses share: concept lookup, and JSON with a format tag (arrays as nested lists)."""

    concepts: list[str]
    _format: ClassVar[str]
    _arrays: ClassVar[dict[str, type]]      # numpy fields and their dtypes

    def concept_index(self, concept: str | int) -> int:
        """The index of a concept given by name or index, or a ValueError naming it."""
        if isinstance(concept, (int, np.integer)) and 0 <= concept < len(self.concepts):
            return int(concept)
        if isinstance(concept, str) and concept in self.concepts:
            return self.concepts.index(concept)
        raise ValueError(f"concept {concept!r} is not one of the {len(self.concepts)} concepts")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data: every field, arrays as nested lists."""
        data: dict[str, Any] = {"format": self._format, "version": 1}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            data[name] = value.tolist() if isinstance(value, np.ndarray) else value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        if not isinstance(data, dict) or data.get("format") != cls._format:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"not a saved {cls.__name__} (format {found!r}, expected {cls._format!r})")
        missing = [name for name in cls.__dataclass_fields__ if name not in data]
        if missing:
            raise ValueError(f"saved {cls.__name__} lacks {', '.join(missing)}")
        fields = {name: data[name] for name in cls.__dataclass_fields__}
        for name, dtype in cls._arrays.items():
            if fields[name] is not None:
                fields[name] = np.asarray(fields[name], dtype=dtype)
        return cls(**fields)

    def save(self, path: str | os.PathLike) -> None:
        """Write the result as JSON, atomically (temporary file in the same folder, then rename)."""
        write_text(path, json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Any:
        with open(path, encoding="utf-8") as file:
            return cls.from_dict(json.load(file))


@dataclass
class Alignment(_Result):
    """What `align` measured, per direction, unit and concept, and the labels that follow from it.

    `iou`, `baseline_iou` and `inter` are `[directions, units, concepts]`, directions being +1 and, when
    signed, -1; `thresholds` is `[directions, units]` (the top-quantile threshold, then the bottom one).
    Counts are positions summed over items: `inter` on and in the concept, `unit_on` on,
    `unit_on_category` `[directions, units, categories]` on in items where the unit's on positions touch a
    label of the category or the item carries an item label of it (counted for union "category" only, else
    0), `concept_count` in the concept. Precision is inter / unit_on, recall inter / concept_count.
    """
    concepts: list[str]
    categories: list[str]
    concept_category: np.ndarray
    quantile: float
    union: str
    resolution: str
    min_iou: float
    items: int
    thresholds: np.ndarray
    iou: np.ndarray
    baseline_iou: np.ndarray | None
    inter: np.ndarray
    unit_on: np.ndarray
    unit_on_category: np.ndarray
    concept_count: np.ndarray

    _format = "seqvis.alignment"
    _arrays = {"concept_category": np.int64, "thresholds": np.float64, "iou": np.float64,
               "baseline_iou": np.float64, "inter": np.int64, "unit_on": np.int64, "unit_on_category": np.int64,
               "concept_count": np.int64}

    @property
    def directions(self) -> tuple[int, ...]:
        return (1, -1)[:len(self.thresholds)]

    @property
    def units(self) -> int:
        return self.thresholds.shape[1]

    def _record(self, direction: int, unit: int, concept: int, min_iou: float) -> UnitLabel:
        iou = float(self.iou[direction, unit, concept])
        baseline = None if self.baseline_iou is None else float(self.baseline_iou[direction, unit, concept])
        return UnitLabel(unit=unit, label=self.concepts[concept],
                         category=self.categories[self.concept_category[concept]], iou=iou,
                         direction=self.directions[direction],
                         threshold=float(self.thresholds[direction, unit]),
                         baseline_iou=baseline, detector=iou >= min_iou)

    def labels(self, min_iou: float | None = None) -> list[UnitLabel]:
        """Each unit's best concept over both directions (ties: +1 and the first concept win)."""
        min_iou = self.min_iou if min_iou is None else min_iou
        directions, units, concepts = self.iou.shape
        best = self.iou.transpose(1, 0, 2).reshape(units, directions * concepts).argmax(axis=1)
        return [self._record(int(b) // concepts, unit, int(b) % concepts, min_iou) for unit, b in enumerate(best)]

    def best_units(self, concept: str | int, k: int = 10) -> list[UnitLabel]:
        """The k units (in their better direction) with the highest IoU for one concept, best first."""
        c = self.concept_index(concept)
        scores = self.iou[:, :, c]
        direction = scores.argmax(axis=0)
        best = scores.max(axis=0)
        order = np.argsort(-best, kind="stable")[:k]
        return [self._record(int(direction[u]), int(u), c, self.min_iou) for u in order]

    def detectors_per_concept(self, min_iou: float | None = None) -> dict[str, int]:
        """How many units are labelled with each concept and reach `min_iou`, most first (NetDissect's bar graph)."""
        counts: dict[str, int] = {}
        for record in self.labels(min_iou):
            if record.detector:
                counts[record.label] = counts.get(record.label, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: -item[1]))

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write one row per unit, like NetDissect's tally.csv: unit, category, label, iou, direction, baseline,
        threshold (of the labelled direction)."""
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["unit", "category", "label", "iou", "direction", "baseline", "threshold"])
        for r in self.labels():
            writer.writerow([r.unit, r.category, r.label, f"{r.iou:.6f}", r.direction,
                             "" if r.baseline_iou is None else f"{r.baseline_iou:.6f}", repr(r.threshold)])
        write_text(path, text.getvalue())


def align(batches: Callable[[], Iterable[Batch]], concepts: Sequence[str], categories: Sequence[str],
          concept_category: Sequence[int], *, quantile: float = 0.005, signed: bool = False,
          union: str = "plain", resolution: str = "upsample", thresholds: ArrayLike | None = None,
          baseline: bool = True, min_iou: float = 0.04, progress: Progress | None = None) -> Alignment:
    """Measure how well every unit's top activations overlap every concept, over all items of `batches()`.

    `batches()` is called once per pass: once to measure thresholds (unless `thresholds` `[units]`, or
    `[2, units]` high and low when signed, are given) and once to tally. `union="plain"` counts a unit's
    on positions in every item (PNAS); `"category"` (NetDissect-Lite) only in items where they touch a
    label of the concept's category, or the item carries an item label of that category. `signed=True`
    also scores -h, on below the bottom-quantile threshold.
    `resolution` says how finer image concepts meet coarser maps: "upsample" the maps bilinearly (as
    F.interpolate(align_corners=False)), or "pool" each concept to the map (present if anywhere in a cell).
    The baseline pairs each item's activations with the next item's concepts within its batch (a batch
    of one item is paired with itself).
    """
    concepts, categories, concept_category = _check_vocabulary(concepts, categories, concept_category)
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile!r}")
    if union not in UNIONS:
        raise ValueError(f"union must be one of {UNIONS}, got {union!r}")
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution!r}")
    if not min_iou >= 0:
        raise ValueError(f"min_iou must be >= 0, got {min_iou!r}")
    if thresholds is None:
        limits, total = _measure_thresholds(batches, quantile, signed, progress)
    else:
        limits, total = _given_thresholds(thresholds, signed), None
    tally = _tally(batches, limits, len(concepts), concept_category, len(categories), resolution, union, baseline,
                   total, progress)
    unit_on = tally.unit_on.numpy()
    inter, unit_on_category, concept_count = tally.real.as_arrays()
    baseline_iou = None
    if tally.shuffled is not None:
        shuffled_inter, shuffled_category, shuffled_count = tally.shuffled.as_arrays()
        baseline_iou = _iou(shuffled_inter, unit_on, shuffled_category, shuffled_count, concept_category, union)
    return Alignment(
        concepts=concepts, categories=categories, concept_category=concept_category, quantile=quantile,
        union=union, resolution=resolution, min_iou=min_iou, items=tally.items,
        thresholds=limits.numpy().astype(np.float64),
        iou=_iou(inter, unit_on, unit_on_category, concept_count, concept_category, union),
        baseline_iou=baseline_iou, inter=inter, unit_on=unit_on, unit_on_category=unit_on_category,
        concept_count=concept_count)


def _iou(inter: np.ndarray, unit_on: np.ndarray, unit_on_category: np.ndarray, concept_count: np.ndarray,
         concept_category: np.ndarray, union: str) -> np.ndarray:
    """IoU `[directions, units, concepts]` from the counts, with the union convention `union`."""
    on = unit_on[:, :, None] if union == "plain" else unit_on_category[:, :, concept_category]
    size = on + concept_count - inter
    return np.divide(inter, size, out=np.zeros(inter.shape), where=size > 0)


def _check_vocabulary(concepts: Sequence[str], categories: Sequence[str],
                      concept_category: Sequence[int]) -> tuple[list[str], list[str], np.ndarray]:
    concepts, categories = [str(c) for c in concepts], [str(c) for c in categories]
    if len(set(concepts)) != len(concepts):
        raise ValueError("concepts must be distinct names")
    category_of = np.asarray(concept_category)
    if category_of.shape != (len(concepts),) or (len(concepts) and category_of.dtype.kind not in "iu"):
        raise ValueError(f"concept_category must hold one category index per concept ({len(concepts)}), "
                         f"got shape {category_of.shape}")
    if len(concepts) and (category_of.min() < 0 or category_of.max() >= len(categories)):
        raise ValueError(f"concept_category values must index categories (0..{len(categories) - 1})")
    return concepts, categories, category_of.astype(np.int64)


def _given_thresholds(thresholds: ArrayLike, signed: bool) -> torch.Tensor:
    limits = torch.as_tensor(thresholds).detach().cpu().float()
    if limits.ndim == 1 and not signed:
        limits = limits[None]
    if limits.ndim != 2 or limits.shape[0] != (2 if signed else 1):
        raise ValueError(f"thresholds must be [units] or [1, units], or [2, units] (high, low) when signed; "
                         f"got shape {tuple(limits.shape)}")
    return limits


# ---------------------------------------------------------------------------------------------------------
# Input checking


def _tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, np.ndarray):         # kept in place unless torch cannot view it (negative strides)
        return torch.from_numpy(x if min(x.strides, default=0) >= 0 else np.ascontiguousarray(x))
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _flag(x: Any, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """A bool tensor of the given shape from bools or 0/1 integers."""
    t = _tensor(x, name)
    if t.dtype != torch.bool and (t.is_floating_point() or t.is_complex()):
        raise TypeError(f"{name} must be bool (or integers), got {t.dtype}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {list(shape)}, got {list(t.shape)}")
    return t != 0 if t.dtype != torch.bool else t


def _acts(batch: Batch, units: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A batch's activations as float32 `[items, units, *positions]` and validity `[items, *positions]`."""
    if not isinstance(batch, Batch):
        raise TypeError(f"batches() must yield Batch objects, got {type(batch).__name__}")
    acts = _tensor(batch.acts, "Batch.acts")
    if not acts.is_floating_point():
        raise TypeError(f"Batch.acts must hold floats, got {acts.dtype}")
    if not 2 <= acts.ndim <= 4:
        raise ValueError(f"Batch.acts must be [items, units, *positions] with at most 2 position dims, "
                         f"got shape {list(acts.shape)}")
    if units is not None and acts.shape[1] != units:
        raise ValueError(f"Batch.acts has {acts.shape[1]} units, expected {units} (earlier batches, thresholds)")
    valid = None if batch.valid is None else _flag(batch.valid, "Batch.valid", (acts.shape[0], *acts.shape[2:]))
    return acts.float(), valid


@dataclass
class _Parsed:
    """One checked batch: activations, validity and concept slots at the positions where IoU is tallied."""
    acts: torch.Tensor                  # [n, U, P] float32, or [n, U, h, w] when upsampled
    slots: torch.Tensor                 # [maps, n, Pt] int32: 0 no label, v concept v - 1
    item_labels: torch.Tensor           # [n, C] bool
    valid: torch.Tensor | None          # [n, Pt] at tally positions
    upsample_to: tuple[int, int] | None  # concept (H, W) when the maps are upsampled


def _parse(batch: Batch, concepts: int, resolution: str, units: int) -> _Parsed:
    acts, valid = _acts(batch, units)
    n, positions = acts.shape[0], tuple(acts.shape[2:])
    fine: tuple[int, ...] | None = None           # concept positions
    slot_maps = []
    if batch.labels is not None:
        labels = _tensor(batch.labels, "Batch.labels")
        if labels.is_floating_point() or labels.dtype == torch.bool or labels.ndim < 2 or labels.shape[0] != n:
            raise ValueError(f"Batch.labels must be integers [items={n}, maps, *positions], "
                             f"got {labels.dtype} {list(labels.shape)}")
        if labels.numel() and (labels.min() < 0 or labels.max() > concepts):
            raise ValueError(f"Batch.labels values must lie in 0..{concepts} (0: none, v: concepts[v-1])")
        fine = tuple(labels.shape[2:])
        slot_maps.append(labels.reshape(n, labels.shape[1], -1).transpose(0, 1))
    if batch.masks is not None:
        masks = _tensor(batch.masks, "Batch.masks")
        if masks.ndim < 2 or masks.shape[:2] != (n, concepts) or (fine is not None and masks.shape[2:] != fine):
            expected = f"[items={n}, concepts={concepts}, *{list(fine) if fine is not None else 'positions'}]"
            raise ValueError(f"Batch.masks must have shape {expected}, got {list(masks.shape)}")
        fine = tuple(masks.shape[2:])
        slot_maps.append(_mask_slots(_flag(masks, "Batch.masks", tuple(masks.shape)).reshape(n, concepts, -1)))
    item_labels = (torch.zeros(n, concepts, dtype=torch.bool) if batch.item_labels is None
                   else _flag(batch.item_labels, "Batch.item_labels", (n, concepts)))
    if fine is None:
        if batch.item_labels is None:
            raise ValueError("Batch has no concepts: give masks, labels or item_labels")
        fine = positions
    if fine != positions and (len(positions) != 2 or len(fine) != 2):
        raise ValueError(f"concept positions {list(fine)} must equal the activation positions {list(positions)} "
                         f"(only images may have finer concepts)")
    slots = (torch.zeros(0, n, math.prod(fine), dtype=torch.int32) if not slot_maps
             else slot_maps[0].to(torch.int32).contiguous() if len(slot_maps) == 1
             else torch.cat([s.to(torch.int32) for s in slot_maps]))
    flat_valid = None if valid is None else valid.reshape(n, -1)
    if fine == positions:
        return _Parsed(acts.reshape(n, units, -1), slots, item_labels, flat_valid, None)
    if resolution == "pool":
        pooled = _any_pool(_slot_masks(slots, concepts).view(n, concepts, *fine), positions)
        return _Parsed(acts.reshape(n, units, -1), _mask_slots(pooled.flatten(2)).contiguous(), item_labels,
                       flat_valid, None)
    fine_valid = None if valid is None else (
        F.interpolate(valid[:, None].float(), size=fine, mode="nearest")[:, 0] > 0.5).reshape(n, -1)
    return _Parsed(acts, slots, item_labels, fine_valid, (fine[0], fine[1]))


def _mask_slots(masks: torch.Tensor) -> torch.Tensor:
    """Bool `[n, C, P]` as label slots `[depth, n, P]` (depth: the most concepts at one position)."""
    n, concepts, points = masks.shape
    depth = int(masks.sum(1).max()) if masks.numel() else 0
    ids = masks.to(torch.int32) * torch.arange(1, concepts + 1, dtype=torch.int32)[:, None]
    return ids.topk(depth, dim=1).values.transpose(0, 1) if depth else torch.zeros(0, n, points, dtype=torch.int32)


def _slot_masks(slots: torch.Tensor, concepts: int) -> torch.Tensor:
    """Label slots `[maps, n, P]` as bool masks `[n, C, P]`."""
    present = torch.zeros(slots.shape[1], concepts + 1, slots.shape[2], dtype=torch.bool)
    return present.scatter_(1, slots.transpose(0, 1).long(), True)[:, 1:]


def _any_pool(masks: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Bool `[n, C, H, W]` to `[n, C, h, w]`: a cell is set if any position of its adaptive-pooling region is."""
    for axis, (fine, coarse) in enumerate(zip(masks.shape[2:], size), start=2):
        masks = torch.stack([masks.narrow(axis, i * fine // coarse, -(-(i + 1) * fine // coarse) - i * fine // coarse)
                             .any(axis) for i in range(coarse)], axis)
    return masks


# ---------------------------------------------------------------------------------------------------------
# Pass 1: thresholds


def _measure_thresholds(batches: Callable[[], Iterable[Batch]], quantile: float, signed: bool,
                        progress: Progress | None) -> tuple[torch.Tensor, int]:
    """Per-unit top (and bottom) quantiles over all valid positions, at activation resolution."""
    if progress is not None:
        progress.start("thresholds", None)
    sketch, items, units = Quantile(exact_limit=_EXACT_VALUES), 0, None
    for batch in batches():
        acts, valid = _acts(batch, units)
        units = acts.shape[1]
        columns = acts.transpose(0, 1).reshape(units, -1)          # [U, items * positions]
        if valid is not None:
            columns = columns[:, valid.reshape(-1)]
        sketch.update(columns.T)
        items += acts.shape[0]
        if progress is not None:
            progress.update(acts.shape[0])
    if not sketch.count:
        raise ValueError("batches() yielded no activations to measure thresholds on")
    limits = sketch.quantiles([1 - quantile, quantile] if signed else [1 - quantile])     # high (and low)
    return torch.from_numpy(np.ascontiguousarray(limits.T, dtype=np.float32)), items


# ---------------------------------------------------------------------------------------------------------
# Pass 2: on positions and their tallies


@dataclass(frozen=True)
class _Bands:
    """One axis of bilinear upsampling (align_corners=False) from cells to pixels, cut into bands whose
    pixels interpolate the same two cells, in the form `core.kernels.tally_on` reads."""
    index: np.ndarray           # [4, bands] int64: low cell, high cell (equal when one is used), first pixel, pixels
    weight: np.ndarray          # [2, bands, longest] float32: the low and the high cell's weight per pixel
    cells: np.ndarray           # [2, cells] int64: the first and last band of each cell (none: first > last)

    @classmethod
    def of(cls, cells: int, pixels: int) -> _Bands:
        """The bands of upsampling `cells` to `pixels`."""
        # source coordinates and weights as torch's upsample_bilinear2d computes them, in float32
        scale = torch.tensor(cells, dtype=torch.float32) / pixels
        source = (scale * (torch.arange(pixels, dtype=torch.float32) + 0.5) - 0.5).clamp(min=0)
        low = source.floor().long().clamp(max=cells - 1)
        w_high = (source - low).clamp(0, 1)
        high = torch.where((w_high > 0) & (low < cells - 1), low + 1, low)
        _, length = torch.unique_consecutive(low * cells + high, return_counts=True)
        start = length.cumsum(0) - length
        pixel = (start[:, None] + torch.arange(int(length.max()))).clamp(max=pixels - 1)
        low, high = low[start].numpy(), high[start].numpy()
        corner = (low[None, :] == np.arange(cells)[:, None]) | (high[None, :] == np.arange(cells)[:, None])
        bands = np.arange(len(low))
        return cls(np.stack([low, high, start.numpy(), length.numpy()]),
                   torch.stack([1 - w_high[pixel], w_high[pixel]]).numpy(),
                   np.stack([np.where(corner, bands, len(low)).min(1), np.where(corner, bands, -1).max(1)]))

    @classmethod
    def none(cls) -> _Bands:
        return cls(np.zeros((4, 0), np.int64), np.zeros((2, 0, 0), np.float32), np.zeros((2, 0), np.int64))


def _on_hits(parsed: _Parsed, slots: torch.Tensor, concepts: int, limit: torch.Tensor, below: bool,
             sides: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(pair ids, their on positions, `[sides, pairs, C + 1]` labels under them) of a batch's (item, unit)
    pairs with on positions, a bounded chunk of items at a time (`core.kernels.tally_on`)."""
    acts = parsed.acts.numpy()
    n, units = acts.shape[:2]
    if parsed.upsample_to is None:
        acts, rows, cols, width = acts.reshape(n, units, 1, -1), _Bands.none(), _Bands.none(), 0
    else:
        (height, width), (h, w) = parsed.upsample_to, acts.shape[2:]
        rows, cols = _Bands.of(h, height), _Bands.of(w, width)
    labels = np.ascontiguousarray(slots.numpy())
    valid = np.zeros((0, 0), bool) if parsed.valid is None else np.ascontiguousarray(parsed.valid.numpy())
    sign, limit = (np.float32(-1), -limit) if below else (np.float32(1), limit)
    step = max(1, _CHUNK_VALUES // (units * (concepts + 1) * sides))      # bounds the counts
    for first in range(0, n, step):
        pairs, counts, hits = tally_on(acts, sign, np.ascontiguousarray(limit.numpy()), first, min(n, first + step),
                                       rows.index, rows.weight, rows.cells, cols.index, cols.weight, cols.cells,
                                       width, parsed.upsample_to is None, labels, sides, valid, concepts)
        yield torch.from_numpy(pairs), torch.from_numpy(counts), torch.from_numpy(hits)


@dataclass
class _Concepts:
    """The concept sums of the items that one batch's items are paired with."""
    item_labels: torch.Tensor        # [n, C] float64, of the paired items
    labelled: torch.Tensor           # [n, C] float64 positions labelled with each concept
    item_category: torch.Tensor      # [n, categories] bool: the paired item carries an item label of the category
    concept_count: torch.Tensor      # [C] float64

    @classmethod
    def own(cls, slots: torch.Tensor, item_labels: torch.Tensor, valid: torch.Tensor | None,
            category_of: torch.Tensor) -> tuple[torch.Tensor, _Concepts]:
        """Each item with its own concepts: the label slots less labels on padding, repeats and those an item
        label overrules (a concept at most once per position), and their sums."""
        if valid is not None:
            slots = slots * valid
        counts = _slot_counts(slots, item_labels.shape[1])
        slots, changed = _drop_repeats(slots, counts, item_labels)
        if changed:
            counts = _slot_counts(slots, item_labels.shape[1])
        return slots, cls._summed(item_labels, counts.sum(0)[:, 1:], valid, slots.shape[2], category_of)

    def shuffled(self, slots: torch.Tensor, valid: torch.Tensor | None, category_of: torch.Tensor) -> _Concepts:
        """Each item paired with the next item's concepts (the last with the first): the baseline."""
        if valid is None:
            labelled = self.labelled.roll(-1, 0)
        else:                                   # the next item's labels, where this item is not padding
            labelled = _slot_counts(slots.roll(-1, 1) * valid, self.item_labels.shape[1]).sum(0)[:, 1:]
        return self._summed(self.item_labels.roll(-1, 0) > 0, labelled, valid, slots.shape[2], category_of)

    @classmethod
    def _summed(cls, item_labels: torch.Tensor, labelled: torch.Tensor, valid: torch.Tensor | None, points: int,
                category_of: torch.Tensor) -> _Concepts:
        positions = (valid.sum(1, dtype=torch.float64) if valid is not None
                     else torch.full((len(item_labels),), float(points), dtype=torch.float64))
        items = item_labels.double()
        return cls(items, labelled, items @ category_of > 0, labelled.sum(0) + positions @ items)


def _slot_counts(slots: torch.Tensor, concepts: int) -> torch.Tensor:
    """`[maps, n, C + 1]` positions holding each label value, per map and item."""
    maps, n, _ = slots.shape
    offset = np.arange(maps * n, dtype=np.int32 if maps * n * (concepts + 1) < 2**31 else np.int64)
    offset = offset.reshape(maps, n, 1) * (concepts + 1)
    key = torch.from_numpy((slots.numpy() + offset).reshape(-1))    # numpy broadcasts this add 3x faster
    return torch.bincount(key, minlength=maps * n * (concepts + 1)).view(maps, n, concepts + 1).double()


def _drop_repeats(slots: torch.Tensor, counts: torch.Tensor,
                  item_labels: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Remove pixel labels that an item's whole-item label overrules, and second copies of a label at a position."""
    maps, n, _ = slots.shape
    overruled = bool(((counts.sum(0)[:, 1:] > 0) & item_labels).any())
    if overruled:
        covered = torch.cat([torch.zeros(n, 1, dtype=torch.bool), item_labels], 1)
        index = torch.from_numpy(np.arange(n).reshape(1, n, 1) * covered.shape[1] + slots.numpy())
        slots = slots.masked_fill(covered.view(-1)[index], 0)
    present = counts.sum(1)[:, 1:] > 0                                     # [maps, C]
    shared = [(j, k) for k in range(1, maps) for j in range(k) if (present[j] & present[k]).any()]
    if shared:
        slots = slots.clone()
        for j, k in shared:
            slots[k].masked_fill_(slots[k] == slots[j], 0)
    return slots, overruled or bool(shared)


class _Sums:
    """Running sums of one pairing of units with concepts (the real one, or the shuffled baseline)."""

    def __init__(self, directions: int, units: int, concepts: int, categories: int):
        self.inter = torch.zeros(directions, units, concepts, dtype=torch.float64)
        self.unit_on_category = torch.zeros(directions, units, categories, dtype=torch.float64)
        self.concept_count = torch.zeros(concepts, dtype=torch.float64)

    def add(self, direction: int, side: _Concepts, pairs: torch.Tensor, counts: torch.Tensor, hits: torch.Tensor,
            touches: torch.Tensor | None) -> None:
        """Add the labels under the on positions of (item, unit) `pairs` (`hits` `[pairs, C + 1]`; `counts`
        `[n, units]` on positions of every pair), and by category if `touches` (`[C, K]` concept -> category)."""
        units = self.inter.shape[1]
        unit, item = pairs % units, pairs.div(units, rounding_mode="floor")
        self.inter[direction].index_add_(0, unit, hits[:, 1:].double())
        self.inter[direction] += counts.T @ side.item_labels
        if touches is not None:
            present = ((hits[:, 1:] > 0).float() @ touches > 0) | side.item_category.index_select(0, item)  # [pairs, K]
            self.unit_on_category[direction].index_add_(0, unit, counts.view(-1)[pairs, None] * present)

    def as_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (self.inter.round().long().numpy(), self.unit_on_category.round().long().numpy(),
                self.concept_count.round().long().numpy())


@dataclass
class _Tally:
    real: _Sums
    shuffled: _Sums | None
    unit_on: torch.Tensor       # [directions, U] int64
    items: int


def _tally(batches: Callable[[], Iterable[Batch]], limits: torch.Tensor, concepts: int,
           concept_category: np.ndarray, categories: int, resolution: str, union: str, baseline: bool,
           total: int | None, progress: Progress | None) -> _Tally:
    """Pass 2: count on positions by unit and concept (and category, for union "category")."""
    directions, units = limits.shape
    category_of = torch.zeros(concepts, categories, dtype=torch.float64)
    category_of[torch.arange(concepts), torch.from_numpy(concept_category)] = 1
    touches = category_of.float() if union == "category" else None
    tally = _Tally(_Sums(directions, units, concepts, categories),
                   _Sums(directions, units, concepts, categories) if baseline else None,
                   torch.zeros(directions, units, dtype=torch.long), 0)
    if progress is not None:
        progress.start("tally", total)
    for batch in batches():
        parsed = _parse(batch, concepts, resolution, units)
        n = parsed.acts.shape[0]
        if n == 0:
            continue
        slots, real = _Concepts.own(parsed.slots, parsed.item_labels, parsed.valid, category_of)
        sides = [(tally.real, real)]
        if tally.shuffled is not None:
            sides.append((tally.shuffled, real.shuffled(slots, parsed.valid, category_of)))
        for sums, side in sides:
            sums.concept_count += side.concept_count
        for direction in range(directions):
            for pairs, on, hits in _on_hits(parsed, slots, concepts, limits[direction], direction == 1, len(sides)):
                counts = torch.zeros(n * units, dtype=torch.float64).index_put_((pairs,), on.double()).view(n, units)
                tally.unit_on[direction] += counts.sum(0).long()
                for (sums, side), side_hits in zip(sides, hits):
                    sums.add(direction, side, pairs, counts, side_hits, touches)
        tally.items += n
        if progress is not None:
            progress.update(n)
    if tally.items == 0:
        raise ValueError("batches() yielded no items")
    return tally


# ---------------------------------------------------------------------------------------------------------
# Token units: the best threshold per concept, and average precision


@dataclass(frozen=True)
class TokenLabel:
    """A unit paired with a concept at the unit's best threshold for it, with the shifted-label baseline."""
    unit: int
    label: str
    category: str
    direction: int                  # +1: on where h >= threshold; -1: on where h <= threshold
    threshold: float
    iou: float
    ap: float
    baseline_iou: float | None
    baseline_ap: float | None


@dataclass
class ThresholdSearch(_Result):
    """What `search_thresholds` measured: arrays `[directions, units, concepts]`, directions +1 and -1.

    `iou` is the largest IoU over all thresholds, reached with the unit on where
    `direction * h >= direction * threshold`; `ap` the average precision of ranking the tokens by
    `direction * h` (tied values form one threshold, as in scikit-learn). `baseline_iou`, `baseline_ap`
    score the concepts rolled by `shift` tokens. `count` is the tokens in each concept.
    """
    concepts: list[str]
    categories: list[str]
    concept_category: np.ndarray
    tokens: int
    count: np.ndarray
    shift: int
    threshold: np.ndarray
    iou: np.ndarray
    ap: np.ndarray
    baseline_iou: np.ndarray | None
    baseline_ap: np.ndarray | None

    _format = "seqvis.threshold-search"
    _arrays = {"concept_category": np.int64, "count": np.int64, "threshold": np.float64, "iou": np.float64,
               "ap": np.float64, "baseline_iou": np.float64, "baseline_ap": np.float64}

    @property
    def units(self) -> int:
        return self.iou.shape[1]

    def _score(self, by: str) -> np.ndarray:
        if by not in ("iou", "ap"):
            raise ValueError(f"by must be 'iou' or 'ap', got {by!r}")
        return self.iou if by == "iou" else self.ap

    def record(self, direction: int, unit: int, concept: int) -> TokenLabel:
        """The scores of one unit, direction index (0: +h, 1: -h) and concept."""
        at = (direction, unit, concept)
        return TokenLabel(unit=unit, label=self.concepts[concept],
                          category=self.categories[self.concept_category[concept]], direction=(1, -1)[direction],
                          threshold=float(self.threshold[at]), iou=float(self.iou[at]), ap=float(self.ap[at]),
                          baseline_iou=None if self.baseline_iou is None else float(self.baseline_iou[at]),
                          baseline_ap=None if self.baseline_ap is None else float(self.baseline_ap[at]))

    def unit_labels(self, unit: int, k: int = 3, by: str = "iou") -> list[TokenLabel]:
        """A unit's k best concepts, each in its better direction, best first."""
        if not 0 <= unit < self.units:
            raise ValueError(f"unit {unit} is not one of the {self.units} units")
        score = self._score(by)[:, unit]                                   # [2, C]
        direction = score.argmax(0)
        order = np.argsort(-score.max(0), kind="stable")[:k]
        return [self.record(int(direction[c]), unit, int(c)) for c in order]

    def labels(self, by: str = "iou") -> list[TokenLabel]:
        """Each unit's best concept over both directions (ties: +h and the first concept win)."""
        return [self.unit_labels(unit, 1, by)[0] for unit in range(self.units)]

    def best_units(self, concept: str | int, k: int = 10, by: str = "iou") -> list[TokenLabel]:
        """The k units (each in its better direction) that score highest on one concept, best first."""
        c = self.concept_index(concept)
        score = self._score(by)[:, :, c]
        direction = score.argmax(0)
        order = np.argsort(-score.max(0), kind="stable")[:k]
        return [self.record(int(direction[u]), int(u), c) for u in order]

    def to_csv(self, path: str | os.PathLike, by: str = "iou") -> None:
        """Write one row per unit: its best concept (by `by`) and all its scores."""
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["unit", "category", "label", "direction", "threshold", "iou", "ap", "baseline_iou",
                         "baseline_ap"])
        for r in self.labels(by):
            writer.writerow([r.unit, r.category, r.label, r.direction, repr(r.threshold), f"{r.iou:.6f}",
                             f"{r.ap:.6f}", "" if r.baseline_iou is None else f"{r.baseline_iou:.6f}",
                             "" if r.baseline_ap is None else f"{r.baseline_ap:.6f}"])
        write_text(path, text.getvalue())


def search_thresholds(acts: Any, masks: ArrayLike, concepts: Sequence[str], categories: Sequence[str],
                      concept_category: Sequence[int], *, valid: ArrayLike | None = None, baseline: bool = True,
                      shift: int | None = None, progress: Progress | None = None) -> ThresholdSearch:
    """For every unit, direction and concept: the IoU at the best threshold, and the average precision.

    Tokens are items without positions, as in `align`'s dense layers: `acts` `[tokens, units]` is a
    numpy array, a tensor, or anything read a few units at a time as `acts[:, a:b]` (an h5py dataset);
    `masks` `[tokens, concepts]` bool; `valid` `[tokens]` bool keeps only those tokens. Exact: each unit's
    values are sorted once and every threshold between distinct values is scored. The baseline scores the
    concepts rolled by `shift` tokens (default: half of them), which keeps their runs and breaks their
    pairing with the units. Memory stays near `_CHUNK_VALUES` values ranked at a time, times a few dozen
    bytes, plus one read: `_READ_VALUES` values (whole chunks wide) from an HDF5 dataset.
    """
    concepts, categories, concept_category = _check_vocabulary(concepts, categories, concept_category)
    shape = tuple(getattr(acts, "shape", ()))
    if len(shape) != 2:
        raise ValueError(f"acts must be [tokens, units], got shape {list(shape)}")
    tokens, units = shape
    if not concepts:
        raise ValueError("search_thresholds needs at least one concept")
    masks = _flag(masks, "masks", (tokens, len(concepts))).numpy()
    keep = None if valid is None else _flag(valid, "valid", (tokens,)).numpy()
    if keep is not None:
        masks = masks[keep]
    n = len(masks)
    if n == 0:
        raise ValueError("search_thresholds needs at least one (valid) token")
    shift = n // 2 if shift is None else int(shift) % n
    count = masks.sum(0).astype(np.int64)
    packed = np.ascontiguousarray(np.packbits(masks, axis=1).T)     # [C / 8, n]: concept c is bit 7 - c % 8
    sides = [packed] + ([np.roll(packed, shift, axis=1)] if baseline else [])
    scores = np.zeros((len(sides), 3, 2, units, len(concepts)))              # side, (threshold, iou, ap)
    step = max(1, _CHUNK_VALUES // n)                     # units ranked at a time
    width = step                                            # units read at a time
    if hasattr(acts, "chunks"):                             # HDF5: every read scans the rows; read wide, whole chunks
        width = max(step, _READ_VALUES // n)
        width = width if acts.chunks is None else -(-width // acts.chunks[1]) * acts.chunks[1]
    if progress is not None:
        progress.start("threshold search", units)
    for begin in range(0, units, width):
        block = acts[:, begin:begin + width]
        block = _tensor(block if isinstance(block, torch.Tensor) else np.asarray(block), "acts")
        if not block.is_floating_point():
            raise TypeError(f"acts must hold floats, got {block.dtype}")
        if keep is not None:
            block = block[torch.from_numpy(keep)]
        for start in range(begin, begin + block.shape[1], step):
            values = block[:, start - begin:start - begin + step].float()
            if values.isnan().any():
                raise ValueError(f"acts holds NaN among units {start}..{start + values.shape[1] - 1}")
            ranked = _Ranked.of(values.T.contiguous())
            for side, bits in zip(scores, sides):
                for c in range(len(concepts)):
                    if c % 8 == 0:
                        ranked_bits = np.take(bits[c // 8], ranked.order)      # one gather for 8 concepts
                    score = ranked.score(ranked_bits & (128 >> c % 8) != 0, int(count[c]))
                    side[:, :, start:start + values.shape[1], c] = score
            if progress is not None:
                progress.update(values.shape[1])
    threshold, iou, ap = scores[0]
    return ThresholdSearch(concepts=concepts, categories=categories, concept_category=concept_category, tokens=n,
                           count=count, shift=shift, threshold=threshold, iou=iou, ap=ap,
                           baseline_iou=scores[1, 1] if baseline else None,
                           baseline_ap=scores[1, 2] if baseline else None)


@dataclass
class _Ranked:
    """Some units' values sorted high to low, with each rank's tie group (None when no value repeats)."""
    values: np.ndarray                  # [k, n] sorted, descending
    order: np.ndarray                   # [k, n] token at each rank
    first: np.ndarray | None            # [k * n] first rank of the tie group of each rank (flat)
    last: np.ndarray | None             # [k * n] last rank of it

    @classmethod
    def of(cls, values: torch.Tensor) -> _Ranked:
        """Rank `[k, n]` float32 values."""
        ordered, order = torch.sort(values, dim=1, descending=True)
        ordered, order = ordered.numpy(), order.numpy()
        k, n = ordered.shape
        tied = ordered[:, 1:] == ordered[:, :-1]                            # rank j + 1 ties with rank j
        if not tied.any():
            return cls(ordered, order, None, None)
        rank = np.broadcast_to(np.arange(n, dtype=np.int32), (k, n))
        starts = np.concatenate([np.ones((k, 1), bool), ~tied], axis=1)
        ends = np.concatenate([~tied, np.ones((k, 1), bool)], axis=1)
        first = np.maximum.accumulate(np.where(starts, rank, 0), axis=1)
        last = np.minimum.accumulate(np.where(ends, rank, n)[:, ::-1], axis=1)[:, ::-1]
        return cls(ordered, order, first.ravel(), np.ascontiguousarray(last).ravel())

    def score(self, hits: np.ndarray, m: int) -> np.ndarray:
        """(threshold, best IoU, AP) `[3, 2, k]` for +h and -h of a concept of `m` tokens, `hits` `[k, n]` by rank."""
        k, n = self.order.shape
        out = np.zeros((3, 2, k))
        if m == 0:
            out[0] = self.values[:, [0, -1]].T
            return out
        flat = np.flatnonzero(hits)                                             # k * n + rank, row by row
        i = np.arange(1, m + 1)                     # the concept's tokens at or above each one's rank
        if self.first is None:
            first = last = (flat.reshape(k, m) - (np.arange(k) * n)[:, None])
            i_first = i_last = np.broadcast_to(i, (k, m))
        else:                                       # a tie group's tokens share its counts
            first, last = self.first[flat].reshape(k, m), self.last[flat].reshape(k, m)
            same = first[:, 1:] == first[:, :-1]
            i_first = np.maximum.accumulate(np.where(np.c_[np.ones((k, 1), bool), ~same], i, 0), axis=1)
            i_last = np.minimum.accumulate(np.where(np.c_[~same, np.ones((k, 1), bool)], i, m + 1)[:, ::-1],
                                           axis=1)[:, ::-1]
        rows = np.arange(k)
        # +h: on at ranks 0..last; -h: on at ranks first..n-1. Each concept token adds 1/m times the precision.
        for d, (on, inter, cut) in enumerate([(last + 1, i_last, last), (n - first, m - i_first + 1, first)]):
            iou = inter / (on + m - inter)
            best = iou.argmax(1)
            out[0, d] = self.values[rows, cut[rows, best]]
            out[1, d] = iou[rows, best]
            out[2, d] = (inter / on).sum(1) / m
        return out
