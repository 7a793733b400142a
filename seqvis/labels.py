"""Unit labels of token projects: which meta-track concept each unit follows, computed once per layer and cached.

Concepts come from the project's meta tracks: every value of a discrete track ("token_class=keyword",
category "token_class") and thresholds of integer scalar tracks ("bracket_depth>=1"). Each unit is
scored against each concept by `core.align.search_thresholds`: IoU at the best threshold and average
precision, for +h and -h, with the concepts rolled by half the corpus as a baseline.

    search = dissect_layer(project, "rnn.l1.c", cache_dir)
    best = search.best_units("bracket_depth>=1", k=1)[0]
    print(best.unit, best.direction, best.iou, best.ap, best.baseline_iou)
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from core.align import Progress, ThresholdSearch, TokenLabel, search_thresholds
from core.stats import TopK
from seqvis.projects import Layer, MetaTrack, TokenProject

SKIPPED_TRACKS = ("doc",)       # the document index `seqvis extract` writes names documents, not concepts
MAX_VALUES = 64                 # a discrete track with more distinct values is an identifier, not a concept set
SCALAR_STEPS = (1, 2, 3)        # default concepts of an integer scalar track: track >= 1, >= 2, >= 3
_SPEC = re.compile(r"\s*([^<>=!\s]+)\s*(>=|<=|==|=|>|<)\s*(.+?)\s*")
_COMPARE = {">=": np.greater_equal, "<=": np.less_equal, ">": np.greater, "<": np.less, "==": np.equal}
_VERSION = 1                    # bump when the scores or the file change meaning


@dataclass
class Concepts:
    """Named token concepts of a project: `masks` `[tokens, concepts]` bool, each concept in a category (a track)."""
    names: list[str]
    categories: list[str]
    concept_category: list[int]
    masks: np.ndarray


def project_concepts(project: TokenProject, specs: Sequence[str] | None = None) -> Concepts:
    """The concepts of `project`'s meta tracks: `specs` such as "token_class=keyword", "bracket_depth>=2", or
    by default every value of each discrete track (up to MAX_VALUES values, SKIPPED_TRACKS left out) and
    `>= 1, 2, 3` of each scalar track of non-negative integers."""
    names: list[str] = []
    columns: list[np.ndarray] = []
    tracks: list[str] = []
    for track, name, mask in (_default_concepts(project) if specs is None else [_spec(project, s) for s in specs]):
        if name in names:
            raise ValueError(f"concept {name!r} is given twice")
        names.append(name)
        columns.append(mask)
        tracks.append(track)
    if not names:
        raise ValueError(f"project {project.name!r} has no meta track to take concepts from "
                         f"(discrete tracks, or scalar tracks of integers)")
    categories = list(dict.fromkeys(tracks))
    return Concepts(names, categories, [categories.index(t) for t in tracks], np.stack(columns, axis=1))


def _values(track: MetaTrack) -> np.ndarray:
    return np.asarray(track.dataset[...])


def _label(track: MetaTrack, value: int) -> str:
    labels = track.labels or []
    return labels[value] if 0 <= value < len(labels) and labels[value] else str(value)


def _default_concepts(project: TokenProject) -> list[tuple[str, str, np.ndarray]]:
    found = []
    for track in project.meta.values():
        if track.name in SKIPPED_TRACKS or track.type not in ("discrete", "scalar"):
            continue
        values = _values(track)
        if track.type == "discrete":
            present = np.unique(values)
            if len(present) <= MAX_VALUES:
                found += [(track.name, f"{track.name}={_label(track, int(v))}", values == v) for v in present]
        elif values.size and values.min() >= 0 and np.array_equal(values, np.round(values)):
            found += [(track.name, f"{track.name}>={step}", values >= step)
                      for step in SCALAR_STEPS if step <= values.max()]
    return found


def _spec(project: TokenProject, spec: str) -> tuple[str, str, np.ndarray]:
    """(track, name, mask) of a concept spec: `track=label` (a discrete value by label or number) or `track OP x`."""
    match = _SPEC.fullmatch(spec)
    if match is None:
        raise ValueError(f"concept {spec!r} must look like 'track=label' or 'track>=number'")
    name, op, operand = match.groups()
    track = project.meta.get(name)
    if track is None or track.type == "wordvec":
        usable = [t.name for t in project.meta.values() if t.type != "wordvec"]
        raise ValueError(f"concept {spec!r}: no discrete or scalar meta track {name!r} "
                         f"(tracks: {', '.join(usable)})")
    values = _values(track)
    if op == "=" and track.type == "discrete":
        labels = track.labels or []
        if operand in labels:
            return name, f"{name}={operand}", values == labels.index(operand)
        if not re.fullmatch(r"-?\d+", operand):
            raise ValueError(f"concept {spec!r}: {operand!r} is not a label of track {name!r}")
        return name, f"{name}={_label(track, int(operand))}", values == int(operand)
    try:
        number = float(operand)
    except ValueError:
        raise ValueError(f"concept {spec!r}: {operand!r} is not a number") from None
    op = "==" if op == "=" else op
    return name, f"{name}{op}{number:g}", _COMPARE[op](values, number)


def _layer(project: TokenProject, layer: str | Layer) -> Layer:
    if isinstance(layer, Layer):
        return layer
    if layer not in project.layers:
        raise ValueError(f"layer {layer!r} is not one of {', '.join(project.layers)}")
    return project.layers[layer]


def _identity(dataset: h5py.Dataset) -> list:
    """What names a dataset's content: its file (path, size, modification time) and path inside it."""
    path = os.path.realpath(dataset.file.filename)
    stat = os.stat(path)
    return [path, stat.st_size, stat.st_mtime_ns, dataset.name, list(dataset.shape), str(dataset.dtype)]


def cache_file(project: TokenProject, layer: str | Layer, cache_dir: str | os.PathLike,
               concepts: Sequence[str] | None = None) -> Path:
    """Where `dissect_layer` keeps a layer's labels: JSON (ThresholdSearch.save), with a CSV of the same stem."""
    layer = _layer(project, layer)
    key = {"version": _VERSION, "layer": _identity(layer.dataset), "concepts": list(concepts or []),
           "meta": {t.name: _identity(t.dataset) for t in project.meta.values() if t.type != "wordvec"}}
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]
    stem = re.sub(r"[^\w.-]", "_", layer.name)
    return Path(cache_dir) / f"labels.{stem}.{digest}.json"


def load_cached(project: TokenProject, layer: str | Layer, cache_dir: str | os.PathLike, *,
                concepts: Sequence[str] | None = None) -> ThresholdSearch | None:
    """The layer's labels if `dissect_layer` computed them for the current files and `concepts`, else None."""
    path = cache_file(project, layer, cache_dir, concepts)
    return ThresholdSearch.load(path) if path.is_file() else None


def dissect_layer(project: TokenProject, layer: str | Layer, cache_dir: str | os.PathLike,
                  progress: Progress | None = None, *, concepts: Sequence[str] | None = None) -> ThresholdSearch:
    """Every unit of `layer` scored against every concept (see `project_concepts`), read from the cache when
    the layer's file, the meta files and `concepts` are unchanged; else computed (units read a few at a
    time) and written atomically, with a CSV of each unit's best concept beside the JSON."""
    cached = load_cached(project, layer, cache_dir, concepts=concepts)
    if cached is not None:
        return cached
    path = cache_file(project, layer, cache_dir, concepts)
    layer = _layer(project, layer)
    found = project_concepts(project, concepts)
    search = search_thresholds(layer.dataset, found.masks, found.names, found.categories, found.concept_category,
                               progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    search.to_csv(path.with_suffix(".csv"))
    search.save(path)
    return search


def summary(search: ThresholdSearch, *, per_unit: int = 3, by: str = "iou") -> dict:
    """JSON-ready labels: each unit's `per_unit` best concepts and each concept's best unit, ranked `by`, with
    the best baseline of any unit (the control for picking the best of many units)."""
    def row(record: TokenLabel) -> dict:
        return {key: getattr(record, key) for key in record.__dataclass_fields__}

    return {"ranked_by": by, "tokens": search.tokens, "baseline_shift": search.shift,
            "units": [[row(r) for r in search.unit_labels(u, per_unit, by)] for u in range(search.units)],
            "concepts": [{**row(search.best_units(c, 1, by)[0]), "count": int(search.count[c]),
                          "best_baseline_iou": float(search.baseline_iou[..., c].max()),
                          "best_baseline_ap": float(search.baseline_ap[..., c].max())}
                         for c in range(len(search.concepts))]}


def top_contexts(project: TokenProject, layer: str | Layer, unit: int, k: int = 10, *, direction: int = 1,
                 width: int = 10, rows: int = 1 << 20) -> list[dict]:
    """The `k` positions where `unit` is highest (direction -1: lowest), best first, each with its raw value and
    the words `width` either side (`start` is the first word's position). Reads the column `rows` at a time."""
    layer = _layer(project, layer)
    if isinstance(unit, bool) or not isinstance(unit, (int, np.integer)) or not 0 <= unit < layer.units:
        raise ValueError(f"unit must be an integer in 0..{layer.units - 1}, got {unit!r}")
    if direction not in (1, -1):
        raise ValueError(f"direction must be 1 or -1, got {direction!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    best = TopK(k, largest=direction == 1)
    n = len(project)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        best.update(np.asarray(layer.dataset[start:stop, unit], dtype=np.float32)[:, None],
                    np.arange(start, stop))
    contexts = []
    for value, position in zip(best.values[0].tolist(), best.indices[0].tolist()):
        first, last = max(0, position - width), min(n, position + width + 1)
        contexts.append({"position": position, "value": value, "start": first,
                         "words": project.words(first, last)})
    return contexts
