"""Feature search for a units project: select a region of a dataset image, find the most similar regions.

    search = FeatureSearch(project, "cache/")
    found = search.search("conv4", item=12, box=(8, 8, 40, 40), k=10)    # box (x0, y0, x1, y1) in pixels
    found["results"][0]                  # {"rank", "item", "image", "score", "box", "heatmap"}

A layer's features over every image of the dataset are computed once and cached as a float32 .npy
(float16 would halve the file, but converting it costs four times the search) in `cache_dir/features/`,
named by the layer and a key of the model factory, the weights' content, the dataset's CSV files and
its image files' sizes and times, so a changed model or dataset is never answered from a stale file;
layers with large maps also keep the features' spectra there, for large query windows.
The file is written under a temporary name and renamed into place; searches read it memory-mapped.
Scores: `core.regions`.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.hooks import TraceDict
from core.regions import Spectra, box_mask, check_options, pool_mask, search_regions
from seqvis.broden import Broden
from seqvis.jobs import Jobs
from seqvis.units import feature_map, to_input

FORMAT = 1                                               # bump when the cached features' meaning changes
SPECTRA_CELLS = 256                     # layers with maps of this many cells also cache spectra (core.regions)


class FeatureSearch:
    """Region search over the dataset of one units project (`seqvis.projects.UnitsProject`).

    Unknown layers and items raise LookupError, bad regions and options ValueError, both naming the parameter.
    """

    def __init__(self, project: Any, cache_dir: str | os.PathLike, *, batch_size: int = 64):
        self.project = project
        self.cache_dir = Path(cache_dir) / "features"
        self.batch_size = batch_size
        self._dataset: Broden | None = None
        self._key: str | None = None
        self._features: dict[str, np.ndarray] = {}
        self._spectra: dict[str, Spectra] = {}
        self._lock = threading.Lock()
        self._jobs = Jobs()

    @property
    def dataset(self) -> Broden:
        if self._dataset is None:
            self._dataset = Broden(self.project.dataset)
        return self._dataset

    def _identity(self) -> str:
        """A hash of what the features depend on: factory, weights, dataset tables and image files."""
        if self._key is None:
            digest = hashlib.sha256(json.dumps([FORMAT, self.project.model.factory, self.dataset.identity()]).encode())
            digest.update(self.project.model.weights.read_bytes())
            for record in self.dataset.records:
                stat = (self.dataset.folder / "images" / record.image).stat()
                digest.update(f"{record.image}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
            self._key = digest.hexdigest()[:24]
        return self._key

    def _check_layer(self, layer: str) -> None:
        if layer not in self.project.layers:
            raise LookupError(f"layer: unknown layer {layer!r}; known: {', '.join(self.project.layers)}")

    def cache_path(self, layer: str) -> Path:
        """Where the features of `layer` are (or will be) cached."""
        self._check_layer(layer)
        return self.cache_dir / f"{layer}-{self._identity()}.npy"

    def features(self, layer: str, progress: Any = None) -> np.ndarray:
        """Read-only memory map of `layer`'s features `[images, units, h, w]`, computed and cached on first use."""
        path = self.cache_path(layer)
        with self._lock:
            if layer not in self._features or not path.is_file():
                if not path.is_file():
                    self._compute(layer, path, progress)
                self._features[layer] = np.load(path, mmap_mode="r")
            return self._features[layer]

    def prepare(self, layer: str) -> dict[str, Any]:
        """Start computing `layer`'s features (and spectra) in the background unless they are cached; their status:
        {"layer", "status": "ready" | "building" (with progress) | "failed" (with the error)}."""
        self._check_layer(layer)
        key = ("features", layer)

        def build(progress: Any) -> bool:
            self.spectra(layer, progress)                       # computes the features first where they are missing
            return True

        self._jobs.result(key, f"features {layer}", lambda: self._cached(layer) or None, build)
        return {"layer": layer, **self._jobs.status(key)}

    def _cached(self, layer: str) -> bool:
        """Whether `layer`'s features (and the spectra it keeps) are on disk."""
        path = self.cache_path(layer)
        if not path.is_file():
            return False
        height, width = np.load(path, mmap_mode="r").shape[2:]
        return height * width < SPECTRA_CELLS or self._spectra_saved(layer)

    def _spectra_path(self, layer: str) -> Path:
        return self.cache_path(layer).with_suffix(".spectra.npy")

    def _spectra_saved(self, layer: str) -> bool:
        """Whether both files of `Spectra.save` for `layer` are there."""
        path = self._spectra_path(layer)
        return path.is_file() and path.with_suffix(".npz").is_file()

    def spectra(self, layer: str, progress: Any = None) -> Spectra | None:
        """The spectra of `layer`'s features (None for maps under SPECTRA_CELLS cells, where windows are few),
        computed and cached on first use."""
        features = self.features(layer, progress)
        if features.shape[2] * features.shape[3] < SPECTRA_CELLS:
            return None
        path = self._spectra_path(layer)
        with self._lock:
            saved = self._spectra_saved(layer)
            if layer not in self._spectra or not saved:
                if not saved:
                    if progress is not None:
                        progress.start(f"{layer}: spectra", None)
                    Spectra.of(features).save(path)
                self._spectra[layer] = Spectra.load(path)
            return self._spectra[layer]

    def _compute(self, layer: str, path: Path, progress: Any) -> None:
        """Run the model over every image and write `layer`'s features to `path` atomically."""
        from seqvis.extract import load_model

        model = load_model(self.project.model.factory, self.project.model.weights)
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        count = len(self.dataset)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
        os.close(handle)
        try:
            stored = None
            if progress is not None:
                progress.start(f"{layer}: features", count)
            for start in range(0, count, self.batch_size):
                pixels = torch.from_numpy(self.dataset.images(range(start, min(count, start + self.batch_size))))
                with torch.no_grad(), TraceDict(model, [layer], stop=True) as traces:
                    model(to_input(pixels).to(device))
                maps = feature_map(traces[layer].output, layer).float().cpu().numpy()
                if stored is None:
                    stored = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float32,
                                                       shape=(count, *maps.shape[1:]))
                stored[start:start + len(maps)] = maps
                if progress is not None:
                    progress.update(len(maps))
            stored.flush()
            del stored
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)

    def _region(self, box: Any, mask: Any) -> np.ndarray:
        """The selected pixels, bool `[ih, iw]`, from exactly one of `box` and `mask`."""
        size = self.dataset.image_size
        if (box is None) == (mask is None):
            raise ValueError("box: give either a box (x0, y0, x1, y1) or a mask, not both or neither")
        if box is not None:
            return box_mask(box, size)
        try:
            pixels = np.asarray(mask, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError("mask: expected rows of numbers (0 or 1) over the image") from None
        if pixels.shape != size:
            raise ValueError(f"mask: expected {size[0]} rows of {size[1]} values (the image size), got shape "
                             f"{list(pixels.shape)}")
        if not np.isin(pixels, (0, 1)).all():
            raise ValueError("mask: values must be 0 or 1")
        if not pixels.any():
            raise ValueError("mask: the region is empty")
        return pixels.astype(bool)

    def search(self, layer: str, item: int, *, box: Any = None, mask: Any = None, k: int = 10, per_image: int = 1,
               match: str = "template", progress: Any = None) -> dict[str, Any]:
        """The `k` regions of the dataset most similar at `layer` to the `box` (x0, y0, x1, y1, pixels, ends
        exclusive) or `mask` (bool `[ih, iw]`) of image `item`, best first, at most `per_image` per image.

        Each result: rank, item, image (file under the dataset's images/), score (cosine), box (pixels) and
        heatmap `[h, w]`: at each feature cell the score of the window centred there (None where none fits).
        """
        self._check_layer(layer)
        if not isinstance(item, (int, np.integer)) or isinstance(item, bool) or not 0 <= item < len(self.dataset):
            raise LookupError(f"item: {item!r} is not an image of the dataset (0..{len(self.dataset) - 1})")
        check_options(k, per_image, match)
        region = self._region(box, mask)
        features = self.features(layer, progress)
        cells = features.shape[2:]
        found = search_regions(features, int(item), pool_mask(region, cells), k=k, per_image=per_image, match=match,
                               spectra=self.spectra(layer, progress))
        ih, iw = self.dataset.image_size
        ys, xs = np.nonzero(region)
        results = []
        for rank, m in enumerate(found):
            heatmap = np.full(cells, np.nan)
            cy, cx = m.height // 2, m.width // 2
            heatmap[cy:cy + m.heatmap.shape[0], cx:cx + m.heatmap.shape[1]] = m.heatmap
            results.append({
                "rank": rank, "item": m.image, "image": self.dataset.records[m.image].image,
                "score": round(m.score, 6),
                "box": [round(m.x * iw / cells[1]), round(m.y * ih / cells[0]),
                        round((m.x + m.width) * iw / cells[1]), round((m.y + m.height) * ih / cells[0])],
                "heatmap": [[None if np.isnan(v) else round(float(v), 4) for v in row] for row in heatmap]})
        return {"layer": layer, "item": int(item), "image": self.dataset.records[item].image, "match": match,
                "region": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1],
                "image_size": [ih, iw], "cells": list(cells), "window": [found[0].height, found[0].width],
                "k": k, "per_image": per_image, "results": results}
