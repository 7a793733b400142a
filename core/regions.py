"""Region search over cached CNN features: the image regions whose features best match a query region.

    mask = pool_mask(box_mask((8, 8, 24, 24), (64, 64)), (8, 8))        # a box in pixels -> cell weights
    for match in search_regions(features, 12, mask, k=10):               # features [N, C, h, w]
        match.image, match.y, match.x, match.score, match.heatmap        # best first

The query is image `item`'s features under `mask` (cell weights in [0, 1] at feature resolution),
cropped to the mask's bounding box (bh x bw). Every bh x bw window of every image is scored by the
cosine of two vectors over the window's cells and channels, both weighted by the mask:
W = m * F[j, :, window] against Q = m * F[item, :, query window] (`match="template"`: the spatial
pattern, as Visual Feature Search does) or Q = m * q with q the mask-weighted mean feature
(`match="mean"`: every covered cell like the average of the region). That is a cosine convolution,
a few tensor ops per chunk of images: conv2d(F, m * Q) / (|Q| sqrt(conv2d(sum_c F^2, m^2))).
A window whose features are all zero scores 0.

Exact and deterministic: results are the k best windows, at most `per_image` per image (greedily,
best first, windows of one image never overlapping), ties broken by image, then row, then column; the
query's own window is among them (score 1 in template mode). A float32 pass finds every image's best
window within a bound on its rounding error (with the layer's `Spectra`, large windows are scored in
the frequency domain: a product per frequency instead of one per window cell, within a norm-wise
bound); only the images that can then hold a result (normally about k) are scored again in float64
from the stored values, and those scores, rounded to `DECIMALS`
places (so summation order cannot reorder equal scores), decide. Features are read `chunk_bytes` at a
time (a memory map is never read whole); a float32 one is read in place, without a copy.
"""
from __future__ import annotations

import heapq
import math
import numbers
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from core.atomic import atomic_file

MATCHES = ("template", "mean")
DECIMALS = 10
CHUNK_BYTES = 1 << 26
FFT_CELLS = 8               # windows of more cells are screened through spectra, when given


@dataclass
class Match:
    """One found region: window of image `image` at feature cell (y, x), `height` x `width` cells, its cosine,
    and `heatmap`, the score of every window of that image ([h - height + 1, w - width + 1], by top-left cell)."""
    image: int
    y: int
    x: int
    height: int
    width: int
    score: float
    heatmap: np.ndarray


def box_mask(box: Sequence[float], image_size: tuple[int, int]) -> np.ndarray:
    """bool `[ih, iw]` mask of the pixels of `box` = (x0, y0, x1, y1) (ends exclusive, rounded to whole pixels);
    a ValueError naming `box` when it is empty or not inside the image."""
    if not (isinstance(box, (list, tuple)) and len(box) == 4
            and all(isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v) for v in box)):
        raise ValueError(f"box: expected four numbers (x0, y0, x1, y1), got {box!r}")
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    height, width = image_size
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"box: {list(box)} is empty or not inside the {width}x{height} image "
                         f"(need 0 <= x0 < x1 <= {width}, 0 <= y0 < y1 <= {height})")
    mask = np.zeros(image_size, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def pool_mask(mask: Any, feature_size: tuple[int, int]) -> np.ndarray:
    """float64 `[h, w]` weights: the fraction of each feature cell that an image-resolution mask covers."""
    pixels = torch.as_tensor(np.asarray(mask, dtype=np.float64))[None, None]
    return F.adaptive_avg_pool2d(pixels, feature_size)[0, 0].numpy()


def _rows(features: Any, rows: slice | np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """`features[rows]` (numpy array, memory map or tensor) as a tensor of `dtype`, without a copy where it has
    that dtype (converting float16 to float32 costs more than the search itself)."""
    if isinstance(features, torch.Tensor):
        return features[rows if isinstance(rows, slice) else torch.from_numpy(rows)].to(dtype)
    block = np.asarray(features[rows], torch.empty((), dtype=dtype).numpy().dtype)
    with warnings.catch_warnings():                  # a read-only map: the block is only read
        warnings.filterwarnings("ignore", "The given NumPy array is not writable")
        return torch.from_numpy(block)


def _query_kernel(features: Any, item: int, mask: np.ndarray, match: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel m * Q / |Q| [1, C, bh, bw] and the squared mask m^2 [1, 1, bh, bw] (see the module)."""
    rows, cols = np.nonzero(mask > 0)
    top, left = int(rows.min()), int(cols.min())
    weights = torch.from_numpy(np.ascontiguousarray(mask[top:rows.max() + 1, left:cols.max() + 1], np.float64))
    region = _rows(features, slice(item, item + 1), torch.float64)[0, :, top:top + weights.shape[0],
                                                                   left:left + weights.shape[1]]
    if match == "mean":
        region = ((region * weights).sum(dim=(1, 2)) / weights.sum())[:, None, None].expand_as(region)
    query = weights * region
    norm = torch.linalg.vector_norm(query)
    if not norm > 0:
        raise ValueError(f"mask: the features of image {item} under the region are all zero at this layer, so they "
                         f"have no direction to compare; choose another region or layer")
    return (weights * query / norm)[None], (weights ** 2)[None, None]


def score_maps(block: torch.Tensor, kernel: torch.Tensor, squared_mask: torch.Tensor) -> torch.Tensor:
    """`[n, h - bh + 1, w - bw + 1]` cosine of every window of `block` [n, C, h, w] (see the module), in the
    dtype of `block`. The convolutions (one output channel) are a matrix product, every cell's feature against
    every kernel cell, and sums of shifted planes: several times faster than conv2d for them on CPU."""
    n, channels, height, width = block.shape
    kernel, squared_mask = kernel.to(block.dtype)[0], squared_mask.to(block.dtype)[0, 0]
    bh, bw = kernel.shape[1:]
    rows, cols = height - bh + 1, width - bw + 1
    flat = block.reshape(n, channels, height * width)
    taps = torch.matmul(kernel.flatten(1).T, flat).view(n, bh, bw, height, width)
    squares = (flat * flat).sum(dim=1).view(n, height, width)
    dots, norms = block.new_zeros(n, rows, cols), block.new_zeros(n, rows, cols)
    for dy in range(bh):
        for dx in range(bw):
            if squared_mask[dy, dx] == 0:                # a cell the mask leaves out (a brushed region)
                continue
            dots += taps[:, dy, dx, dy:dy + rows, dx:dx + cols]
            norms.add_(squares[:, dy:dy + rows, dx:dx + cols], alpha=float(squared_mask[dy, dx]))
    norms.sqrt_()
    return torch.where(norms > 0, dots / norms.clamp_min(torch.finfo(block.dtype).tiny), 0.0).clamp_(-1, 1)


def _best_windows(heatmap: np.ndarray, count: int, height: int, width: int) -> list[tuple[float, int, int]]:
    """Up to `count` (score, y, x) of `heatmap`, best first (ties by row, column), no two windows overlapping."""
    ys, xs = np.unravel_index(np.argsort(-heatmap, axis=None, kind="stable"), heatmap.shape)
    if count == 1:
        return [(float(heatmap[ys[0], xs[0]]), int(ys[0]), int(xs[0]))]
    chosen: list[tuple[float, int, int]] = []
    for y, x in zip(ys.tolist(), xs.tolist()):
        if all(abs(y - cy) >= height or abs(x - cx) >= width for _, cy, cx in chosen):
            chosen.append((float(heatmap[y, x]), y, x))
            if len(chosen) == count:
                break
    return chosen


@dataclass
class Spectra:
    """Fourier transforms of a layer's features that let a query score every window of an image by one
    product per frequency and channel instead of one per window cell and channel (`search_regions(...,
    spectra=)`), and the norms that bound their rounding. Computed once per layer (`Spectra.of`); the
    arrays may be memory maps (`save`, `load`)."""
    planes: Any                 # [N, C, h, w // 2 + 1] complex64: rfft2 of every channel plane
    squares: Any                # [N, h, w // 2 + 1] complex128: rfft2 of the squared features summed over channels
    plane_norms: np.ndarray     # [N, C] float64: the norm of every channel plane
    square_norms: np.ndarray    # [N] float64: the norm of the squared features summed over channels
    least_square: np.ndarray    # [N] float64: the smallest nonzero squared feature value (inf: none)

    @classmethod
    def of(cls, features: Any, chunk_bytes: int = CHUNK_BYTES) -> Spectra:
        """The spectra of `features` [N, C, h, w], read a chunk of images at a time."""
        count, channels, height, width = (int(s) for s in features.shape)
        frequencies = (height, width // 2 + 1)
        spectra = cls(np.empty((count, channels, *frequencies), np.complex64),
                      np.empty((count, *frequencies), np.complex128), np.empty((count, channels)),
                      np.empty(count), np.empty(count))
        step = max(1, chunk_bytes // (channels * height * width * 16))
        for start in range(0, count, step):
            images = slice(start, min(count, start + step))
            block = _rows(features, images, torch.float32)
            spectra.planes[images] = torch.fft.rfft2(block).numpy()
            squares = block.double().square_()                       # exact: a float32 squared fits a float64
            summed = squares.sum(dim=1)
            spectra.squares[images] = torch.fft.rfft2(summed).numpy()
            spectra.square_norms[images] = torch.linalg.vector_norm(summed, dim=(1, 2)).numpy()
            spectra.plane_norms[images] = squares.sum(dim=(2, 3)).sqrt_().numpy()
            spectra.least_square[images] = squares.masked_fill_(squares == 0, torch.inf).flatten(1).amin(dim=1).numpy()
        return spectra

    def save(self, path: str | os.PathLike) -> None:
        """Write the planes to `path` (.npy, memory-mappable) and the rest beside it (.npz), each atomically."""
        with atomic_file(path) as file:
            np.save(file, self.planes)
        with atomic_file(Path(path).with_suffix(".npz")) as file:
            np.savez(file, squares=self.squares, plane_norms=self.plane_norms, square_norms=self.square_norms,
                     least_square=self.least_square)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Spectra:
        """Read what `save` wrote; the planes as a read-only memory map."""
        with np.load(Path(path).with_suffix(".npz")) as rest:
            return cls(np.load(path, mmap_mode="r"), rest["squares"], rest["plane_norms"], rest["square_norms"],
                       rest["least_square"])


def _fft_screen(spectra: Spectra, kernel: torch.Tensor, squared_mask: torch.Tensor, shape: tuple[int, ...],
                step: int) -> tuple[np.ndarray, np.ndarray]:
    """Bounds `[N]` on every image's best window score from the spectra: (upper, lower).

    Dots come from the float32 spectra (one product per frequency and channel, summed, transformed back),
    window norms from float64 ones; each within a bound on its rounding that scales with the image's plane
    norms (FFT rounding is bounded norm-wise: for n = h w, |error| <= sqrt(n) (2 * 5 log2 n + C + 3) u
    sum_c |f_c| |k_c|, doubled here). A window whose norm is below the smallest nonzero one the image can
    have holds only zeros and scores 0, as in `score_maps`.
    """
    count, channels, height, width = shape
    bh, bw = kernel.shape[2:]
    rows, cols = height - bh + 1, width - bw + 1
    kernel, squared_mask = kernel[0], squared_mask[0, 0]
    padded = kernel.new_zeros(channels, height, width)
    padded[:, :bh, :bw] = kernel
    taps = torch.fft.rfft2(padded).conj().to(torch.complex64)
    padded = squared_mask.new_zeros(height, width)
    padded[:bh, :bw] = squared_mask
    weights = torch.fft.rfft2(padded).conj()
    growth = 2 * math.sqrt(height * width) * (10 * math.log2(height * width) + channels + 3)
    dot_error = growth * 2.0 ** -24 * (torch.from_numpy(np.asarray(spectra.plane_norms))
                                       @ torch.linalg.vector_norm(kernel, dim=(1, 2)))
    norm_error = growth * 2.0 ** -53 * torch.from_numpy(np.asarray(spectra.square_norms)) \
        * torch.linalg.vector_norm(squared_mask)
    least = torch.from_numpy(np.asarray(spectra.least_square)) * squared_mask[squared_mask > 0].min()
    upper, lower = np.empty(count), np.empty(count)
    for start in range(0, count, step):
        images = slice(start, min(count, start + step))
        planes = _rows(spectra.planes, images, torch.complex64)
        product = planes[:, 0] * taps[0]
        for channel in range(1, channels):
            product.addcmul_(planes[:, channel], taps[channel])
        dots = torch.fft.irfft2(product, s=(height, width))[:, :rows, :cols].double()
        squares = torch.from_numpy(np.asarray(spectra.squares[images]))
        norms = torch.fft.irfft2(squares * weights, s=(height, width))[:, :rows, :cols]
        error, slack, floor = (x[images, None, None] for x in (dot_error, norm_error, least))
        zero = norms + slack < floor
        low_norm = (norms - slack).clamp_min(0).maximum(floor).sqrt()
        high_norm = (norms + slack).sqrt()
        high = torch.where(dots + error > 0, (dots + error) / low_norm, (dots + error) / high_norm)
        low = torch.where(dots - error > 0, (dots - error) / high_norm, (dots - error) / low_norm)
        upper[images] = torch.where(zero, 0.0, high.clamp(-1, 1)).flatten(1).amax(dim=1).numpy()
        lower[images] = torch.where(zero, 0.0, low.clamp(-1, 1)).flatten(1).amax(dim=1).numpy()
    return upper, lower


def check_options(k: Any, per_image: Any, match: Any) -> None:
    """A ValueError naming the first of `search_regions`' options that is not valid."""
    for name, value in (("k", k), ("per_image", per_image)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: must be an int >= 1, got {value!r}")
    if match not in MATCHES:
        raise ValueError(f"match: must be one of {', '.join(MATCHES)}, got {match!r}")


def search_regions(features: Any, item: int, mask: Any, *, k: int = 10, per_image: int = 1,
                   match: str = "template", chunk_bytes: int = CHUNK_BYTES,
                   spectra: Spectra | None = None) -> list[Match]:
    """The `k` windows of `features` [N, C, h, w] most similar to image `item` under `mask` [h, w] (see the module).

    With the features' `spectra`, windows of more than `FFT_CELLS` cells are screened through them."""
    if getattr(features, "ndim", None) != 4:
        raise ValueError(f"features: expected an array [N, C, h, w], got shape {getattr(features, 'shape', None)}")
    count, channels, height, width = (int(s) for s in features.shape)
    if not isinstance(item, (int, np.integer)) or isinstance(item, bool) or not 0 <= item < count:
        raise LookupError(f"item: {item!r} is not an image of the features (0..{count - 1})")
    mask = np.asarray(mask, dtype=np.float64)
    if mask.shape != (height, width):
        raise ValueError(f"mask: expected cell weights of shape {(height, width)}, got {mask.shape}")
    if not (np.isfinite(mask).all() and mask.min(initial=0) >= 0 and mask.max(initial=0) <= 1):
        raise ValueError("mask: weights must lie in [0, 1]")
    if not (mask > 0).any():
        raise ValueError("mask: the region covers no feature cell")
    check_options(k, per_image, match)

    kernel, squared_mask = _query_kernel(features, int(item), mask, match)
    window = kernel.shape[2:]
    step = max(1, chunk_bytes // (channels * height * width * 8 + window.numel() * height * width * 8))
    # screen: bounds on every image's best window, from float32 score maps (|float32 - float64 cosine| <= margin,
    # a generous multiple of the rounding bound of sums of C * bh * bw products) or from the spectra; only images
    # whose upper bound reaches the k-th best lower bound can hold a result
    if spectra is not None and window.numel() > FFT_CELLS:
        upper, lower = _fft_screen(spectra, kernel, squared_mask, features.shape,
                                   max(1, chunk_bytes // (channels * height * (width // 2 + 1) * 8)))
    else:
        margin = 8 * (channels * window.numel() + 16) * 2.0 ** -24
        screen = np.concatenate([score_maps(_rows(features, slice(start, start + step), torch.float32), kernel,
                                            squared_mask).flatten(1).amax(dim=1).double().numpy()
                                 for start in range(0, count, step)])
        upper, lower = screen + margin, screen - margin
    cut = -np.inf if count <= k else np.partition(lower, count - k)[count - k]
    candidates = np.flatnonzero(upper >= cut)
    # exact: float64 score maps of the candidates; every result comes from an image whose best window is among
    # the k best images' best windows, so only those k maps are kept
    best: list[tuple[float, int]] = []                   # min-heap of (score, -image): the k best images so far
    maps: dict[int, np.ndarray] = {}
    for start in range(0, len(candidates), step):
        images = candidates[start:start + step]
        block = np.round(score_maps(_rows(features, images, torch.float64), kernel, squared_mask).numpy(), DECIMALS)
        tops = block.reshape(len(block), -1).max(axis=1)
        for row in np.argsort(-tops, kind="stable")[:k].tolist():
            entry = (float(tops[row]), -int(images[row]))
            if len(best) < k:
                heapq.heappush(best, entry)
            elif entry > best[0]:
                maps.pop(-heapq.heappushpop(best, entry)[1])
            else:
                break
            maps[int(images[row])] = block[row].copy()  # a copy: the chunk's scores are let go
    found = [Match(image, y, x, *window, score, maps[image])
             for image in maps for score, y, x in _best_windows(maps[image], per_image, *window)]
    found.sort(key=lambda m: (-m.score, m.image, m.y, m.x))
    return found[:k]
