"""Streaming per-unit statistics whose state can be saved, loaded and merged across shards.

Every statistic takes batches `update(x)` with `x` a float torch tensor or numpy array `[n, units]`
(rows are items or positions, columns are units), combines with the same statistic computed on
another shard by `merge(other)`, and round-trips through `state_dict()` / `from_state_dict(d)`, a
dict of numpy arrays and Python scalars that `np.savez` stores as is (`save` / `load`).

    q = Quantile()
    for batch in batches:               # e.g. [positions, units] activations of a layer
        q.update(batch)
    thresholds = q.quantiles(0.995)     # [units]
    save(q, "layer3.quantile.npz")
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from core.atomic import atomic_file
from core.kernels import top_values

ArrayLike = torch.Tensor | np.ndarray
_CHUNK_VALUES = 1 << 24     # at most this many values are sorted or converted at a time


def _as_rows(x: ArrayLike, units: int | None) -> np.ndarray:
    """`x` as a float numpy array `[n, units]` (a view where possible), or a TypeError/ValueError naming `x`."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.is_floating_point() and x.dtype not in (torch.float32, torch.float64):
            x = x.float()
        x = x.numpy()
    elif not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D [n, units], got shape {tuple(x.shape)}")
    if x.dtype.kind != "f":
        raise TypeError(f"x must hold floats, got dtype {x.dtype}")
    if units is not None and x.shape[1] != units:
        raise ValueError(f"x has {x.shape[1]} units, this statistic has {units}")
    if x.dtype == np.float16:
        x = x.astype(np.float32)
    if x.size and np.isnan(x.min()):          # min propagates NaN, without a temporary the size of x
        raise ValueError("x contains NaN")
    return x


def _check_kind(state: dict[str, Any], kind: str) -> None:
    found = str(state.get("kind", ""))
    if found != kind:
        raise ValueError(f"state is of kind {found or '(none)'!r}, expected {kind!r}")


def _check_mergeable(stat: Any, other: Any) -> None:
    if type(other) is not type(stat):
        raise TypeError(f"cannot merge {type(other).__name__} into {type(stat).__name__}")
    if stat.count and other.count and stat.units != other.units:
        raise ValueError(f"cannot merge a statistic of {other.units} units into one of {stat.units} units")


class Moments:
    """Per-unit count, mean, variance and standard deviation, accumulated in float64.

    Batches and shards are combined with the pairwise update of Chan, Golub and LeVeque, which stays
    accurate when means are large relative to the spread.
    """

    def __init__(self):
        self.count = 0
        self._mean = np.zeros(0)
        self._m2 = np.zeros(0)          # per-unit sum of squared deviations from the mean

    @property
    def units(self) -> int | None:
        """Number of units, None before the first rows."""
        return len(self._mean) if self.count else None

    def update(self, x: ArrayLike) -> None:
        """Add the rows of `x` `[n, units]`."""
        x = _as_rows(x, self.units)
        for start in range(0, len(x), 1 << 16):
            block = x[start:start + (1 << 16)].astype(np.float64)
            mean = block.mean(axis=0)
            self._combine(len(block), mean, ((block - mean) ** 2).sum(axis=0))

    def _combine(self, count: int, mean: np.ndarray, m2: np.ndarray) -> None:
        if count == 0:
            return
        if self.count == 0:
            self.count, self._mean, self._m2 = count, mean.copy(), m2.copy()
            return
        total = self.count + count
        delta = mean - self._mean
        self._mean = self._mean + delta * (count / total)
        self._m2 = self._m2 + m2 + delta**2 * (self.count * count / total)
        self.count = total

    def merge(self, other: Moments) -> None:
        """Fold in the moments of another shard."""
        _check_mergeable(self, other)
        self._combine(other.count, other._mean, other._m2)

    def _require_data(self) -> None:
        if not self.count:
            raise ValueError("Moments has seen no data yet")

    @property
    def mean(self) -> np.ndarray:
        """Per-unit mean `[units]`."""
        self._require_data()
        return self._mean.copy()

    def variance(self, unbiased: bool = True) -> np.ndarray:
        """Per-unit variance `[units]`: divided by count - 1 (unbiased; NaN for one row) or by count."""
        self._require_data()
        dof = self.count - 1 if unbiased else self.count
        return self._m2 / dof if dof else np.full_like(self._m2, np.nan)

    def std(self, unbiased: bool = True) -> np.ndarray:
        """Per-unit standard deviation `[units]`, the square root of `variance(unbiased)`."""
        return np.sqrt(self.variance(unbiased))

    def state_dict(self) -> dict[str, Any]:
        """The state as numpy arrays and Python scalars, ready for `np.savez`."""
        return {"kind": "Moments", "count": self.count, "mean": self._mean, "m2": self._m2}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Moments:
        """Rebuild the statistic from a `state_dict()` (or the arrays `np.load` read back)."""
        _check_kind(state, "Moments")
        stat = cls()
        stat.count = int(state["count"])
        stat._mean = np.asarray(state["mean"], dtype=np.float64).copy()
        stat._m2 = np.asarray(state["m2"], dtype=np.float64).copy()
        return stat


class Quantile:
    """Per-unit quantiles: exact while few values were seen, then a mergeable sketch accurate at both tails.

    Exact mode keeps every value (float32) while `count * units <= exact_limit` (default 2**25, 128 MB)
    and answers like `numpy.quantile(..., method="linear")`.

    Sketch mode is a hierarchy of compactors per unit (after Karnin, Lang and Liberty's KLL): level
    `h` holds items that each stand for `2**h` values. When a level reaches `resolution` (C) items it
    is sorted, its `C/4` lowest and `C/4` highest items stay, and every other item of the middle
    (random offset) moves up a level. Keeping the extremes at every level makes the rank error shrink
    towards both ends (the minimum and maximum stay exact): a rough analysis bounds the standard
    deviation of the rank error of quantile q by `2 * sqrt(min(q, 1 - q)) / C` of the count, whatever
    the count, i.e. 1.7e-5 at q = 0.005 or 0.995 and 1.7e-4 at the median for the default C = 8192;
    measured on 10M values per unit fed 4000 rows at a time: 4e-6 and 3e-5. The estimate is unbiased
    and merging sketches keeps these bounds. Memory is at most `C * (log2(count / C) + 3)` float32 per
    unit: 108k values (0.4 MB) per unit at 10M values (47k-65k measured), 163k at 1e9.
    Queries interpolate linearly between the rank positions of the items, as numpy does between values.
    """

    def __init__(self, resolution: int = 8192, exact_limit: int = 1 << 25, seed: int = 0):
        if not isinstance(resolution, int) or resolution < 16:
            raise ValueError(f"resolution must be an int >= 16, got {resolution!r}")
        if not isinstance(exact_limit, int) or exact_limit < 0:
            raise ValueError(f"exact_limit must be an int >= 0, got {exact_limit!r}")
        self.resolution, self.exact_limit, self.seed = resolution, exact_limit, int(seed)
        self.count = 0
        self.units: int | None = None
        self._exact: list[np.ndarray] | None = []       # [units, n] chunks while exact, None once sketching
        self._levels: list[np.ndarray] = []             # sketch: level h is [units, size_h], items weigh 2**h
        self._compactions = 0

    @property
    def exact(self) -> bool:
        """Whether every value seen is still kept (quantiles are then exact)."""
        return self._exact is not None

    @property
    def stored_per_unit(self) -> int:
        """How many float32 values are held per unit."""
        return sum(chunk.shape[1] for chunk in self._chunks())

    def _chunks(self) -> list[np.ndarray]:
        return self._exact if self._exact is not None else self._levels

    def update(self, x: ArrayLike) -> None:
        """Add the rows of `x` `[n, units]`."""
        x = _as_rows(x, self.units)
        if len(x) == 0:
            return
        self.units = x.shape[1]
        self.count += len(x)
        columns = x.T
        if self._exact is not None:
            self._exact.append(np.ascontiguousarray(columns, dtype=np.float32))
            if self.count * self.units > self.exact_limit:
                self._start_sketch()
        else:
            self._add_values(columns)

    def _start_sketch(self) -> None:
        chunks, self._exact = self._exact, None
        for chunk in chunks:
            self._add_values(chunk)

    def _add_values(self, columns: np.ndarray) -> None:
        """Feed `[units, n]` values of weight 1 into level 0, a bounded chunk at a time."""
        step = max(self.resolution, _CHUNK_VALUES // columns.shape[0])
        for start in range(0, columns.shape[1], step):
            self._add(0, np.ascontiguousarray(columns[:, start:start + step], dtype=np.float32))

    def _add(self, level: int, items: np.ndarray) -> None:
        """Append items of weight 2**level and compact every level that reached the resolution."""
        while True:
            while len(self._levels) <= level:
                self._levels.append(np.empty((items.shape[0], 0), dtype=np.float32))
            self._levels[level] = np.concatenate([self._levels[level], items], axis=1)
            if self._levels[level].shape[1] < self.resolution:
                return
            items = self._compact(level)
            level += 1

    def _compact(self, level: int) -> np.ndarray:
        """Halve the middle of a sorted level, keep its extremes; return the items promoted a level up."""
        ordered = np.sort(self._levels[level], axis=1)
        guard = self.resolution // 4
        middle = (ordered.shape[1] - 2 * guard) // 2 * 2
        offset = int(np.random.default_rng([self.seed, self._compactions]).integers(2))
        self._compactions += 1
        self._levels[level] = np.concatenate([ordered[:, :guard], ordered[:, guard + middle:]], axis=1)
        return np.ascontiguousarray(ordered[:, guard + offset:guard + middle:2])

    def merge(self, other: Quantile) -> None:
        """Fold in the quantile state of another shard; this one's resolution and limits apply."""
        _check_mergeable(self, other)
        if other.count == 0:
            return
        self.units = other.units
        total = self.count + other.count
        if self._exact is not None and other._exact is not None and total * self.units <= self.exact_limit:
            self._exact.extend(chunk.copy() for chunk in other._exact)
        else:
            if self._exact is not None:
                self._start_sketch()
            if other._exact is not None:
                for chunk in other._exact:
                    self._add_values(chunk)
            else:
                for level, items in enumerate(other._levels):
                    self._add(level, items.copy())
        self.count = total

    def quantiles(self, q: float | Sequence[float] | np.ndarray) -> np.ndarray:
        """Per-unit quantiles: `[units, len(q)]` for a sequence `q`, `[units]` for a scalar."""
        qs = np.asarray(q, dtype=np.float64)
        if qs.ndim > 1 or not np.all((qs >= 0) & (qs <= 1)):
            raise ValueError(f"q must be a number or 1-D sequence of numbers in [0, 1], got {q!r}")
        if not self.count:
            raise ValueError("Quantile has seen no data yet")
        targets = np.atleast_1d(qs) * (self.count - 1)
        if self._exact is not None:
            result = _exact_quantiles(self._exact, targets)
        else:
            items = np.concatenate(self._levels, axis=1)
            weights = np.concatenate([np.full(level.shape[1], 2**h, dtype=np.int64)
                                      for h, level in enumerate(self._levels)])
            step = max(1, _CHUNK_VALUES // items.shape[1])     # a block of units at a time bounds the memory
            result = np.concatenate([_weighted_quantiles(items[start:start + step], weights, targets)
                                     for start in range(0, items.shape[0], step)])
        return result[:, 0] if qs.ndim == 0 else result

    def state_dict(self) -> dict[str, Any]:
        """The state as numpy arrays and Python scalars, ready for `np.savez`."""
        chunks = self._chunks()
        units = self.units or 0
        return {"kind": "Quantile", "resolution": self.resolution, "exact_limit": self.exact_limit,
                "seed": self.seed, "compactions": self._compactions, "count": self.count, "units": units,
                "exact": self.exact,
                "values": np.concatenate(chunks, axis=1) if chunks else np.zeros((units, 0), np.float32),
                "level_sizes": np.array([chunk.shape[1] for chunk in chunks], dtype=np.int64)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Quantile:
        """Rebuild the statistic from a `state_dict()` (or the arrays `np.load` read back)."""
        _check_kind(state, "Quantile")
        stat = cls(int(state["resolution"]), int(state["exact_limit"]), int(state["seed"]))
        stat._compactions, stat.count = int(state["compactions"]), int(state["count"])
        stat.units = int(state["units"]) or None
        values = np.array(state["values"], dtype=np.float32)
        chunks = np.split(values, np.cumsum(state["level_sizes"])[:-1], axis=1) if len(state["level_sizes"]) else []
        if bool(state["exact"]):
            stat._exact = chunks
        else:
            stat._exact, stat._levels = None, chunks
        return stat


def _exact_quantiles(chunks: list[np.ndarray], targets: np.ndarray) -> np.ndarray:
    """Linear interpolation at rank positions `targets` `[k]` of the values of `chunks` `[units, n_i]` -> `[units, k]`.

    Only the values from the nearer end up to each rank are ranked (core.kernels.top_values), a block of
    units at a time: the tail quantiles that thresholds need cost about one pass over the values.
    """
    units, count = chunks[0].shape[0], sum(chunk.shape[1] for chunk in chunks)
    lower = np.clip(np.floor(targets).astype(np.int64), 0, count - 1)
    upper = np.minimum(lower + 1, count - 1)
    step = max(1, _CHUNK_VALUES // count)
    low, high = np.empty((units, len(targets))), np.empty((units, len(targets)))
    for start in range(0, units, step):
        values = np.concatenate([chunk[start:start + step] for chunk in chunks], axis=1)
        for j, (lo, up) in enumerate(zip(lower.tolist(), upper.tolist())):
            if up < count - lo:                                 # ascending from the smallest value
                ranked, lo_at, up_at = -top_values(values, np.float32(-1), up + 1), lo, up
            else:                                               # descending from the largest
                ranked, lo_at, up_at = top_values(values, np.float32(1), count - lo), count - 1 - lo, count - 1 - up
            low[start:start + step, j], high[start:start + step, j] = ranked[:, lo_at], ranked[:, up_at]
    return low + (high - low) * (targets - lower)


def _weighted_quantiles(items: np.ndarray, weights: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Quantiles of sketch `items` `[units, m]` whose column j stands for `weights[j]` values each."""
    order = np.argsort(items, axis=1)
    ordered_weights = weights[order]
    centres = np.cumsum(ordered_weights, axis=1) - (ordered_weights + 1) / 2
    return _interpolate(np.take_along_axis(items, order, axis=1), centres, targets)


def _interpolate(values: np.ndarray, centres: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Linear interpolation of sorted `values` `[units, m]` at rank positions `targets` `[k]` -> `[units, k]`.

    `centres` `[units, m]` (m >= 2) are the increasing rank positions of the values.
    """
    units, m = values.shape
    batch = torch.from_numpy(np.ascontiguousarray(np.broadcast_to(targets, (units, len(targets)))))
    upper = torch.searchsorted(torch.from_numpy(centres), batch, right=True).numpy().clip(1, m - 1)
    lower = upper - 1
    low_rank, high_rank = np.take_along_axis(centres, lower, 1), np.take_along_axis(centres, upper, 1)
    fraction = np.clip((targets - low_rank) / (high_rank - low_rank), 0, 1)
    low = np.take_along_axis(values, lower, 1).astype(np.float64)
    high = np.take_along_axis(values, upper, 1).astype(np.float64)
    return low + (high - low) * fraction


class TopK:
    """Per-unit `k` largest (or smallest) values and the global index of the item each came from."""

    def __init__(self, k: int, largest: bool = True):
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        self.k, self.largest = k, bool(largest)
        self.count = 0
        self._values = np.zeros((0, 0), dtype=np.float32)
        self._indices = np.zeros((0, 0), dtype=np.int64)

    @property
    def units(self) -> int | None:
        """Number of units, None before the first rows."""
        return self._values.shape[0] if self.count else None

    def update(self, x: ArrayLike, index: ArrayLike | Sequence[int] | None = None) -> None:
        """Add the rows of `x` `[n, units]`; `index` `[n]` names their items (default: a running row number)."""
        x = _as_rows(x, self.units)
        n = len(x)
        if index is None:
            items = np.arange(self.count, self.count + n)
        else:
            items = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index)
            if items.shape != (n,) or items.dtype.kind not in "iu":
                raise ValueError(f"index must be {n} integers, one per row of x, got {items.dtype} "
                                 f"of shape {items.shape}")
        if n == 0:
            return
        take = min(self.k, n)
        rows = np.argpartition(self._best_first(x), take - 1, axis=0)[:take]
        self._absorb(np.take_along_axis(x, rows, 0).T.astype(np.float32), items[rows].T.astype(np.int64))
        self.count += n

    def _best_first(self, values: np.ndarray) -> np.ndarray:
        """A key whose ascending order puts the best values first."""
        return -values if self.largest else values

    def _absorb(self, values: np.ndarray, indices: np.ndarray) -> None:
        """Keep the best k of the current and the given `[units, m]` values; ties keep the earlier ones."""
        if self.count:
            values = np.concatenate([self._values, values], axis=1)
            indices = np.concatenate([self._indices, indices], axis=1)
        order = np.argsort(self._best_first(values), axis=1, kind="stable")[:, :self.k]
        self._values = np.take_along_axis(values, order, 1)
        self._indices = np.take_along_axis(indices, order, 1)

    def merge(self, other: TopK) -> None:
        """Fold in another shard's top-k; give shards distinct `index` values so the items stay apart."""
        _check_mergeable(self, other)
        if (other.k, other.largest) != (self.k, self.largest):
            raise ValueError(f"cannot merge TopK(k={other.k}, largest={other.largest}) into "
                             f"TopK(k={self.k}, largest={self.largest})")
        if other.count:
            self._absorb(other._values, other._indices)
            self.count += other.count

    @property
    def values(self) -> np.ndarray:
        """`[units, min(k, count)]` best values per unit, best first."""
        return self._values.copy()

    @property
    def indices(self) -> np.ndarray:
        """`[units, min(k, count)]` item index of each value in `values`."""
        return self._indices.copy()

    def state_dict(self) -> dict[str, Any]:
        """The state as numpy arrays and Python scalars, ready for `np.savez`."""
        return {"kind": "TopK", "k": self.k, "largest": self.largest, "count": self.count,
                "values": self.values, "indices": self.indices}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> TopK:
        """Rebuild the statistic from a `state_dict()` (or the arrays `np.load` read back)."""
        _check_kind(state, "TopK")
        stat = cls(int(state["k"]), bool(state["largest"]))
        stat.count = int(state["count"])
        stat._values = np.array(state["values"], dtype=np.float32)
        stat._indices = np.array(state["indices"], dtype=np.int64)
        return stat


Statistic = Moments | Quantile | TopK
_KINDS: dict[str, type[Statistic]] = {cls.__name__: cls for cls in (Moments, Quantile, TopK)}


def save(stat: Statistic, path: str | os.PathLike) -> None:
    """Write `stat` to an .npz file at `path` atomically (temporary file in the same folder, then rename)."""
    with atomic_file(path) as file:
        np.savez(file, **stat.state_dict())


def load(path: str | os.PathLike) -> Statistic:
    """Read a statistic written by `save`."""
    with np.load(path, allow_pickle=False) as data:
        state = {key: data[key] for key in data.files}
    kind = str(state.get("kind", ""))
    if kind not in _KINDS:
        raise ValueError(f"{os.fspath(path)!r} holds no saved statistic (kind {kind or '(none)'!r})")
    return _KINDS[kind].from_state_dict(state)
