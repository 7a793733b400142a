"""LSTMVis cell selection and "match" over one long sequence of token states, exact, with a column index.

States are a float matrix [N, U] (a numpy array or an h5py dataset, row-major), one row per token. A
value is the float32 state passed through the layer's transform ("tanh": numpy's float32 tanh, "none":
the float32 value itself). A unit is ON at a step when its value is >= the threshold t, compared
exactly (a float32 value against a float64 threshold, as real numbers; equal counts as on, as in
LSTMVis's `threshold_discrete`).

Cell selection (`select_units`): a unit is selected when it is on at every step of the brush [b0, b1)
and off at every padding step (`padding` steps before b0, after b1).

Match (LSTMVis's `query_similar_activations`, precise mode, made deterministic):
1. count[n] = number of selected units on at step n.
2. Candidates, level by level for k = K (all selected units), K-1, ..., 1: the maximal runs of steps
   with count >= k, of length >= 2 (or exactly `phrase_length` when it is > 0). A run is keyed by
   (start, stop) and recorded at the first (highest) level where it appears, so its level is the
   minimum count over it. The descent stops after the first level at which `max_candidates` runs
   have been recorded (LSTMVis: 10,000).
3. Border score (LSTMVis's constraint bonus): level - count[start-1] (if constrain left)
   - count[stop] (if constrain right), 0 without constraints. Candidates are ordered by score
   (descending), then level (descending), then start, and the first `max_candidates` kept.
4. Each candidate is verified over all U units: a unit is ACTIVE when it is on at every step of the
   run and, where a side is constrained, off at the step just outside it. selected_on = active
   selected units; union = |active units ∪ selected units| = K + active units that are not selected.
5. Ranking: most selected units on, then smallest union, then longest, then the candidate order of
   step 3 (LSTMVis's sort is stable); the first `top` (50) are returned. Histograms count candidate
   lengths: fuzzy over all candidates, strict over those whose selected_on is K.

Where this differs from LSTMVis, on purpose: a step outside the sequence counts as off (LSTMVis
drops runs that touch either end and reads a wrapped-around neighbour for the score), ties among
equal scores are broken by level and start (LSTMVis: dictionary and set order), the whole sequence
is searched (its "fast" mode silently searches the first 500,000 steps), and on/off is exact (it
compares raw values with arctanh(t)).

The index (`MatchIndex`) stores, column-major ([U, N] uint8, a quarter of float32 states), a code per
value: code = clip(floor(value * s_u) - b_u, 0, 255), exact and monotone, with a per-unit scale s_u =
q * 10^p (q in 1..9) chosen from a sample of the unit's range so that thresholds with p decimals
fall exactly on code edges. For a threshold, codes above (below) the threshold's own code are on
(off); a value whose code equals it is "ambiguous" unless the threshold is that code's lower edge,
and is read back from the float states. Ambiguous values are resolved only where they matter:
steps whose count could reach the candidate levels, and candidate rows; the union over all units
of the top-ranked candidates is read from the float state rows directly. Float states in an
unfiltered HDF5 dataset (contiguous or chunked) are read at random positions through a memory map of
the file. The index is built streaming: row blocks read from the file (one read per run of chunks)
while one worker per core encodes a block in cache-sized tiles into a stripe of code columns, and a
writer thread writes each full stripe (one piece per unit) into the preallocated file and lets it go
from the page cache; it refuses states that changed since (StaleIndexError).
"""
from __future__ import annotations

import collections
import hashlib
import itertools
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from core.kernels import encode_codes

TRANSFORMS = ("tanh", "none")
MAX_CANDIDATES = 10_000        # LSTMVis's candidate budget in precise mode
TOP = 50                       # LSTMVis's number of results

_MAGIC = b"SVMATCH1"
_PAGE = 4096
_BLOCK_BYTES = 32 << 20        # float32 bytes per streamed block of rows
_STRIPE_BYTES = 64 << 20       # code bytes written at a time while building (two stripes in memory)
_SAMPLE_BLOCKS, _SAMPLE_ROWS = 64, 1024
_FINGERPRINT_ROWS = 64
_COUNT_BLOCK = 1 << 16          # steps counted at once (fits a core's cache)
_TILE_VALUES = 1 << 16          # values encoded at once while building (a tile's buffers fit a core's cache)
_UNION_ROWS = 1 << 13          # float state rows read at once to find candidates' active units


class StaleIndexError(ValueError):
    """The index file does not belong to these states (shape, transform or content changed) or is damaged."""


# -- values and thresholds ----------------------------------------------------------------------------

def transformed(values: Any, transform: str) -> np.ndarray:
    """float32 values through the transform; numpy's tanh on a contiguous float32 array, so that every
    code path (stream, rows, single values) computes bit-identical results."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    return np.tanh(values) if transform == "tanh" else values


def ceil_float32(threshold: float) -> np.float32:
    """The smallest float32 >= threshold: for float32 v, `v >= threshold` (exact) iff `v >= ceil_float32(threshold)`."""
    with np.errstate(over="ignore"):
        nearest = np.float32(threshold)
    return nearest if float(nearest) >= threshold else np.nextafter(nearest, np.float32(np.inf))


def select_units(window: np.ndarray, brush: tuple[int, int], padding: tuple[int, int] = (1, 0),
                 threshold: float = 0.3) -> np.ndarray:
    """LSTMVis cell selection: units >= threshold at every step of `brush` [b0, b1) (relative to `window`,
    [T, U] transformed values) and below it at the `padding` = (left, right) steps around the brush.

    >>> select_units(np.array([[0.0, 0.5], [0.9, 0.5], [0.8, 0.5]]), (1, 3))
    array([0])
    """
    window = np.asarray(window)
    if window.ndim != 2 or not np.issubdtype(window.dtype, np.floating):
        raise ValueError(f"window: need a 2-D float array [steps, units], got shape {window.shape} of {window.dtype}")
    b0, b1 = _int_pair(brush, "brush")
    left, right = _int_pair(padding, "padding")
    threshold = _check_threshold(threshold)
    if not 0 <= b0 < b1 <= len(window):
        raise ValueError(f"brush: need 0 <= b0 < b1 <= {len(window)} (window steps), got {(b0, b1)}")
    if left < 0 or right < 0 or b0 - left < 0 or b1 + right > len(window):
        raise ValueError(f"padding: {(left, right)} around brush {(b0, b1)} must be >= 0 and inside the "
                         f"window of {len(window)} steps")
    on = window >= np.float64(threshold)           # float64 comparison: exact for any float dtype
    inside = on[b0:b1].all(axis=0)
    outside = on[b0 - left:b0].any(axis=0) | on[b1:b1 + right].any(axis=0)
    return np.flatnonzero(inside & ~outside)


# -- results ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MatchCandidate:
    """One matched run [start, stop): selected units on over it, the union size, its length."""
    start: int
    stop: int
    selected_on: int
    union: int
    length: int


@dataclass(frozen=True)
class MatchResult:
    """Ranked candidates (at most `top`), length histograms (index = run length) and totals."""
    candidates: list[MatchCandidate]
    fuzzy_lengths: list[int]
    strict_lengths: list[int]
    total: int                  # candidates verified (<= max_candidates)
    strict_total: int           # of which all selected units are on


@dataclass(frozen=True)
class _Query:
    units: np.ndarray           # sorted unit ids
    t32: np.float32
    phrase_length: int
    constrain: tuple[bool, bool]
    top: int
    max_candidates: int

    @classmethod
    def check(cls, units: Any, threshold: Any, n_units: int, *, phrase_length: int = 0,
              constrain: tuple[bool, bool] = (False, False), top: int = TOP,
              max_candidates: int = MAX_CANDIDATES) -> "_Query":
        ids = np.asarray(units).ravel()
        if ids.size == 0:
            raise ValueError("units: must name at least one unit")
        if ids.dtype == bool or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"units: unit ids must be integers, got {list(ids.tolist())[:5]}")
        bad = ids[(ids < 0) | (ids >= n_units)]
        if bad.size:
            raise ValueError(f"units: {int(bad[0])} is not a unit id (0..{n_units - 1})")
        ids = np.sort(ids.astype(np.int64))
        if np.any(ids[1:] == ids[:-1]):
            raise ValueError(f"units: duplicate unit id {int(ids[1:][ids[1:] == ids[:-1]][0])}")
        if not (isinstance(constrain, (tuple, list)) and len(constrain) == 2
                and all(isinstance(side, (bool, np.bool_)) for side in constrain)):
            raise ValueError(f"constrain: need a pair of booleans (left, right), got {constrain!r}")
        left, right = constrain
        for name, value, low in (("phrase_length", phrase_length, 0), ("top", top, 1),
                                 ("max_candidates", max_candidates, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name}: need an integer >= {low}, got {value!r}")
        return cls(ids, ceil_float32(_check_threshold(threshold)), int(phrase_length), (bool(left), bool(right)),
                   int(top), int(max_candidates))

    def keeps(self, lengths: np.ndarray) -> np.ndarray:
        """Which run lengths make candidates: exactly phrase_length when set, else at least 2."""
        return lengths == self.phrase_length if self.phrase_length > 0 else lengths >= 2

    def scores(self, levels: np.ndarray, left_counts: np.ndarray, right_counts: np.ndarray) -> np.ndarray:
        """LSTMVis's border score: how cleanly the selected units switch off at the constrained borders."""
        left, right = self.constrain
        if not (left or right):
            return np.zeros(len(levels), np.int64)
        return levels - (left_counts if left else 0) - (right_counts if right else 0)


def _check_threshold(threshold: Any) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)):
        raise ValueError(f"threshold: need a number, got {threshold!r}")
    if not np.isfinite(threshold):
        raise ValueError(f"threshold: must be finite, got {threshold!r}")
    return float(threshold)


def _int_pair(pair: Any, name: str) -> tuple[int, int]:
    try:
        a, b = pair
    except (TypeError, ValueError):
        raise ValueError(f"{name}: need a pair of integers, got {pair!r}") from None
    if any(isinstance(x, bool) or not isinstance(x, (int, np.integer)) for x in (a, b)):
        raise ValueError(f"{name}: need a pair of integers, got {pair!r}")
    return int(a), int(b)


def _check_states(states: Any) -> tuple[int, int]:
    shape, dtype = getattr(states, "shape", None), getattr(states, "dtype", None)
    if shape is None or len(shape) != 2 or dtype is None or not np.issubdtype(dtype, np.floating):
        raise ValueError(f"states: need a 2-D float array or h5py dataset [tokens, units], got {shape} of {dtype}")
    if shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"states: need at least one token and one unit, got shape {shape}")
    return int(shape[0]), int(shape[1])


def _check_transform(transform: Any) -> str:
    if transform not in TRANSFORMS:
        raise ValueError(f"transform: need one of {TRANSFORMS}, got {transform!r}")
    return transform


def _result(query: _Query, starts: np.ndarray, stops: np.ndarray, selected_on: np.ndarray,
            unions: np.ndarray) -> MatchResult:
    """Rank verified candidates, given in candidate order, and count their lengths (unions only matter for
    the best selected_on values). Ties keep the candidate order, as LSTMVis's stable sort does."""
    lengths = stops - starts
    order = np.lexsort((np.arange(len(starts)), -lengths, unions, -selected_on))[:query.top]
    strict = selected_on == len(query.units)
    ranked = [MatchCandidate(int(starts[i]), int(stops[i]), int(selected_on[i]), int(unions[i]), int(lengths[i]))
              for i in order]
    return MatchResult(ranked, np.bincount(lengths).tolist(), np.bincount(lengths[strict]).tolist(),
                       len(starts), int(strict.sum()))


# -- the reference: a brute-force scan, the LSTMVis way --------------------------------------------------

def brute_force_match(states: Any, units: Any, threshold: float, *, transform: str = "tanh",
                      phrase_length: int = 0, constrain: tuple[bool, bool] = (False, False), top: int = TOP,
                      max_candidates: int = MAX_CANDIDATES, block_rows: int = 1 << 18) -> MatchResult:
    """Match by scanning the float states: read the selected columns in row blocks, binarise, count,
    find runs level by level, then verify every candidate against its float rows (all units)."""
    n, n_units = _check_states(states)
    transform = _check_transform(transform)
    query = _Query.check(units, threshold, n_units, phrase_length=phrase_length, constrain=constrain, top=top,
                         max_candidates=max_candidates)
    columns = query.units.tolist()
    counts = np.zeros(n, np.int64)
    for start in range(0, n, block_rows):
        block = transformed(states[start:start + block_rows, columns], transform)
        counts[start:start + block_rows] = (block >= query.t32).sum(axis=1)

    found: dict[tuple[int, int], tuple[int, int]] = {}         # (start, stop) -> (level, score)
    level = len(columns)
    while level > 0 and len(found) < query.max_candidates:
        edges = np.diff(np.concatenate(([0], (counts >= level).view(np.int8), [0])))
        starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        keep = query.keeps(stops - starts)
        starts, stops = starts[keep], stops[keep]
        left = np.where(starts > 0, counts[np.maximum(starts - 1, 0)], 0)
        right = np.where(stops < n, counts[np.minimum(stops, n - 1)], 0)
        scores = query.scores(np.full(len(starts), level), left, right)
        for start, stop, score in zip(starts.tolist(), stops.tolist(), scores.tolist()):
            found.setdefault((start, stop), (level, score))
        level -= 1
    chosen = sorted(found.items(), key=lambda item: (-item[1][1], -item[1][0], item[0][0]))[:query.max_candidates]

    selected = np.zeros(n_units, bool)
    selected[query.units] = True
    verified = []
    for (start, stop), _ in chosen:
        first, last = max(start - 1, 0), min(stop + 1, n)
        on = transformed(states[first:last], transform) >= query.t32
        active = on[start - first:stop - first].all(axis=0)
        if query.constrain[0] and start > 0:
            active &= ~on[0]
        if query.constrain[1] and stop < n:
            active &= ~on[-1]
        verified.append((start, stop, int((active & selected).sum()), len(columns) + int((active & ~selected).sum())))
    table = np.array(verified, np.int64).reshape(-1, 4)
    return _result(query, table[:, 0], table[:, 1], table[:, 2], table[:, 3])


# -- reading the float states ----------------------------------------------------------------------------

class _StateReader:
    """Raw float32 row blocks, rows and single-unit values of the states. An unfiltered HDF5 dataset
    (contiguous or chunked) is read at random positions through a memory map of its file, since h5py
    costs about 0.1 ms per row selected; row blocks are read by slicing."""

    def __init__(self, states: Any, transform: str):
        self.states, self.transform = states, transform
        self._map: _FileMap | None | bool = False          # False: not looked up yet

    @property
    def map(self) -> _FileMap | None:
        if self._map is False:
            self._map = _FileMap.of(self.states)
        return self._map

    def read(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        """Raw rows [start, stop): read from the file into `out` (a float32 buffer of at least stop - start rows)
        where its chunks span whole rows, else sliced from the states (a view of a float32 array in memory)."""
        if self.map is not None and self.map.read(start, out[:stop - start]):
            return out[:stop - start]
        return np.ascontiguousarray(self.states[start:stop], dtype=np.float32)

    def blocks(self, start: int, stop: int, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, raw rows) covering rows [start, stop) in blocks of at most `rows`, each valid until the next."""
        buffer = np.empty((min(rows, stop - start), self.states.shape[1]), np.float32)
        for first in range(start, stop, rows):
            yield first, self.read(first, min(first + rows, stop), buffer)

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """Raw values [len(rows), U] at sorted, unique rows."""
        if self.map is not None:
            return self.map.gather(rows, None)
        return np.ascontiguousarray(self.states[rows], dtype=np.float32)

    def values(self, rows: np.ndarray, unit: int) -> np.ndarray:
        """Transformed values of one unit at sorted, unique rows."""
        raw = self.map.gather(rows, unit) if self.map is not None else self.states[rows, unit]
        return transformed(raw, self.transform)


class _FileMap:
    """Random access to the elements of an unfiltered HDF5 dataset by a memory map of its file, and row
    blocks by reading the file: the element offset of each chunk (one chunk spanning the whole array when
    contiguous), read once."""

    _GATHER = 1 << 22                # elements gathered per step

    def __init__(self, data: np.memmap, offsets: np.ndarray, chunk: tuple[int, int], shape: tuple[int, int]):
        self.data, self.offsets, self.chunk, self.shape = data, offsets, chunk, shape
        self.path = data.filename

    @classmethod
    def of(cls, states: Any) -> "_FileMap | None":
        """The map of an h5py dataset stored plainly in a native-order file on local disk; else None."""
        if not isinstance(states, h5py.Dataset) or states.file.driver != "sec2" or states.file.userblock_size \
                or states.external or not states.dtype.isnative or states.id.get_create_plist().get_nfilters():
            return None
        size = states.dtype.itemsize
        if states.chunks is None:
            offset = states.id.get_offset()
            if offset is None or offset % size:
                return None
            offsets, chunk = np.array([[offset // size]], np.int64), tuple(states.shape)
        else:
            chunk = tuple(states.chunks)
            grid = tuple(-(-dim // side) for dim, side in zip(states.shape, chunk))
            offsets = np.full(grid, -1, np.int64)

            def record(info: Any) -> None:
                offsets[info.chunk_offset[0] // chunk[0], info.chunk_offset[1] // chunk[1]] = info.byte_offset

            try:
                states.id.chunk_iter(record)
            except (AttributeError, RuntimeError):          # HDF5 without chunk iteration
                return None
            if (offsets < 0).any() or (offsets % size).any():  # unwritten chunks (fill values) or misaligned
                return None
            offsets //= size
        elements = os.path.getsize(states.file.filename) // size
        data = np.memmap(states.file.filename, dtype=states.dtype, mode="r", shape=(elements,))
        return cls(data, offsets, chunk, tuple(states.shape))

    def read(self, start: int, out: np.ndarray) -> bool:
        """Fill `out` (float32 [rows, U]) with the rows from `start` on, one read per run of chunks that
        follow one another in the file; False (nothing read) unless the chunks span whole float32 rows."""
        (chunk_rows, chunk_units), n_units = self.chunk, self.shape[1]
        if chunk_units != n_units or self.data.dtype != np.float32:
            return False
        at, stop = start, start + len(out)
        with open(self.path, "rb", buffering=0) as file:
            while at < stop:
                first = at // chunk_rows
                offsets = self.offsets[first:(stop - 1) // chunk_rows + 1, 0]
                gaps = np.flatnonzero(np.diff(offsets) != chunk_rows * n_units)
                end = min(stop, (first + gaps[0] + 1) * chunk_rows) if len(gaps) else stop
                position = 4 * int(offsets[0] + (at - first * chunk_rows) * n_units)
                piece = memoryview(out[at - start:end - start]).cast("B")
                while len(piece):
                    got = os.preadv(file.fileno(), [piece], position)
                    if not got:
                        raise ValueError(f"states: {self.path} ends inside the dataset")
                    piece, position = piece[got:], position + got
                at = end
        return True

    def gather(self, rows: np.ndarray, unit: int | None) -> np.ndarray:
        """float32 values at sorted rows, of one unit or (unit None) of all units [len(rows), U]."""
        units = np.arange(self.shape[1]) if unit is None else np.array([unit])
        (chunk_rows, chunk_units), columns = self.chunk, units % self.chunk[1]
        out = np.empty((len(rows), len(units)), np.float32)
        step = max(1, self._GATHER // len(units))
        for at in range(0, len(rows), step):
            part = rows[at:at + step]
            where = self.offsets[(part // chunk_rows)[:, None], units // chunk_units] \
                + ((part % chunk_rows) * chunk_units)[:, None] + columns
            out[at:at + step] = self.data[where]
        return out if unit is None else out[:, 0]


# -- codes ----------------------------------------------------------------------------------------------

def _code_scales(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit scale q * 10^p (q in 1..9, p <= 6; a power of two below 1) spreading [low, high] over at
    most 254 codes, and the base putting `low` at code 1; |value * scale| stays below 2^21 in range."""
    scales, bases = np.empty(len(low)), np.empty(len(low))
    for i, (lo, hi) in enumerate(zip(low.tolist(), high.tolist())):
        limit = min(254.0 / max(hi - lo, 1e-30), 2.0 ** 21 / max(abs(lo), abs(hi), 1e-30))
        if limit >= 1:
            power = min(6, int(np.floor(np.log10(limit))))
            while 10.0 ** power > limit:
                power -= 1
            scale = min(9, int(limit // 10.0 ** power)) * 10.0 ** power
        else:
            scale = 2.0 ** -int(np.ceil(np.log2(1 / limit)))
        scales[i], bases[i] = scale, np.floor(lo * scale) - 1
    return scales, bases


class _Encoder:
    """uint8 codes clip(floor(value * scale) - base, 0, 255) of transformed float32 rows, exact
    (`core.kernels.encode_codes`), a tile of rows at a time in a buffer that stays in a core's cache."""

    def __init__(self, scale: np.ndarray, base: np.ndarray, transform: str):
        self.rows = max(1, _TILE_VALUES // len(scale))
        self.scale, self.scale32, self.base32 = scale, scale.astype(np.float32), base.astype(np.float32)
        self.transform = transform
        self.values = np.empty((self.rows, len(scale)), np.float32)

    def __call__(self, raw: np.ndarray, out: np.ndarray) -> None:
        """Write the codes of raw float32 rows [R, U] (C-contiguous) into `out` [U, R]."""
        for at in range(0, len(raw), self.rows):
            tile = raw[at:at + self.rows]
            if self.transform == "tanh":
                tile = np.tanh(tile, out=self.values[:len(tile)])
            encode_codes(tile, self.scale32, self.scale, self.base32, out[:, at:at + len(tile)])


@dataclass(frozen=True)
class _Rule:
    """How codes decide "value >= t" per unit: code >= on_from is on, code < code_t is off, code ==
    code_t < on_from is ambiguous (on_from is code_t when t is its code's lower edge, else code_t + 1)."""
    code_t: np.ndarray
    on_from: np.ndarray

    @classmethod
    def of(cls, t32: np.float32, scale: np.ndarray, base: np.ndarray) -> "_Rule":
        def code(value: np.float32) -> np.ndarray:
            return np.clip(np.floor(np.float64(value) * scale) - base, 0, 255).astype(np.int64)
        code_t = code(t32)
        below = code(np.nextafter(t32, np.float32(-np.inf)))
        return cls(code_t, np.where(below < code_t, code_t, code_t + 1))


def _fingerprint(states: Any, transform: str) -> str:
    """What a stale index would not match: shape, dtype, transform, rows spread over the states and, for an
    HDF5 dataset, its name and its file's size and modification time (so a rewritten file is never trusted)."""
    n, n_units = states.shape
    rows = np.unique(np.linspace(0, n - 1, _FINGERPRINT_ROWS).astype(np.int64))
    identity: list[Any] = [[n, n_units], np.dtype(states.dtype).str, transform]
    if isinstance(states, h5py.Dataset):
        stat = os.stat(states.file.filename)
        identity += [states.name, stat.st_size, stat.st_mtime_ns]
    digest = hashlib.sha256(json.dumps(identity).encode())
    digest.update(np.ascontiguousarray(states[rows.tolist()], dtype=np.float32).tobytes())
    return digest.hexdigest()


def _sample_range(reader: _StateReader, n: int, n_units: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit finite min and max of the transformed values: over all rows (read in blocks) when there are
    few, else over evenly spread blocks of rows."""
    if n <= _SAMPLE_BLOCKS * _SAMPLE_ROWS:
        blocks = reader.blocks(0, n, max(1, _BLOCK_BYTES // (4 * n_units)))
    else:
        starts = np.linspace(0, n - _SAMPLE_ROWS, _SAMPLE_BLOCKS).astype(np.int64).tolist()
        blocks = itertools.chain.from_iterable(reader.blocks(start, start + _SAMPLE_ROWS, _SAMPLE_ROWS)
                                               for start in starts)
    low, high = np.full(n_units, np.inf), np.full(n_units, -np.inf)
    for _, raw in blocks:
        values = transformed(raw, reader.transform)
        finite = np.isfinite(values)
        low = np.minimum(low, np.where(finite, values, np.inf).min(axis=0))
        high = np.maximum(high, np.where(finite, values, -np.inf).max(axis=0))
    empty = low > high
    low[empty], high[empty] = 0.0, 0.0
    return low, high


class _OnTest:
    """Exact "transformed value >= t" on raw float32 values. For tanh, raw values below atanh(t - 1e-5)
    are off and those at or above atanh(t + 1e-5) on (numpy's float32 tanh is accurate to a few ulp,
    far inside that margin); only values between go through tanh itself."""

    MARGIN = 1e-5

    def __init__(self, t32: np.float32, transform: str):
        self.t32, self.transform = t32, transform
        self.off_below = self.on_from = None          # None: no raw value is decided without tanh
        if transform == "tanh":
            below, above = float(t32) - self.MARGIN, float(t32) + self.MARGIN
            if below > -1:
                self.off_below = np.float32(np.inf) if below >= 1 else ceil_float32(np.arctanh(below))
            if above < 1:
                self.on_from = np.float32(-np.inf) if above <= -1 else ceil_float32(np.arctanh(above))

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        if self.transform != "tanh":
            return raw >= self.t32
        on = raw >= self.on_from if self.on_from is not None else np.zeros(raw.shape, bool)
        unsure = ~on
        if self.off_below is not None:
            unsure &= ~(raw < self.off_below)
        where = np.nonzero(unsure)
        on[where] = transformed(raw[where], "tanh") >= self.t32
        return on


class MatchIndex:
    """A column-major uint8 code index of one states matrix for exact LSTMVis matching in milliseconds.

        index = MatchIndex.build(states, "layer.match", transform="tanh")     # once; streams the states
        index = MatchIndex.open("layer.match", states)                        # later; checks it is current
        best = index.match([3, 17, 42], 0.3, constrain=(True, False)).candidates[0]
    """

    def __init__(self, path: Path, states: Any, header: dict, offset: int):
        self.path = path
        self.shape: tuple[int, int] = tuple(header["shape"])
        self.transform: str = header["transform"]
        self._scale, self._base = np.array(header["scale"]), np.array(header["base"])
        n, n_units = self.shape
        self._codes = np.memmap(path, np.uint8, mode="r", offset=offset, shape=(n_units, n)).view(np.ndarray)
        self._offset = offset
        self._reader = _StateReader(states, self.transform)

    def _prefetch(self, units: np.ndarray) -> None:
        """Ask the kernel to read the selected units' codes now, all at once, rather than page by page as
        counting first touches them (a third faster when they are not in the page cache)."""
        if not hasattr(os, "posix_fadvise"):
            return
        n = self.shape[0]
        try:
            with open(self.path, "rb") as file:
                for unit in units.tolist():
                    os.posix_fadvise(file.fileno(), self._offset + unit * n, n, os.POSIX_FADV_WILLNEED)
        except OSError:                         # only advice: the memory map reads the codes regardless
            pass

    # -- building and opening -------------------------------------------------------------------------
    @classmethod
    def build(cls, states: Any, out_path: str | os.PathLike, *, transform: str = "tanh",
              progress: Any = None) -> "MatchIndex":
        """Stream the states in row blocks into an index file (written to a temporary name, then renamed)."""
        n, n_units = _check_states(states)
        transform = _check_transform(transform)
        out_path = Path(out_path)
        reader = _StateReader(states, transform)
        scale, base = _code_scales(*_sample_range(reader, n, n_units))
        header = {"format": "seqvis match index", "version": 1, "shape": [n, n_units], "transform": transform,
                  "fingerprint": _fingerprint(states, transform), "scale": scale.tolist(), "base": base.tolist()}
        text = json.dumps(header).encode()
        offset = -(-(len(_MAGIC) + 8 + len(text)) // _PAGE) * _PAGE
        partial = out_path.with_name(f".{out_path.name}.{os.getpid()}.partial")
        try:
            with open(partial, "wb") as file:
                file.write(_MAGIC + len(text).to_bytes(8, "little") + text)
                _allocate(file, offset + n * n_units)
                file.flush()
                _stream_codes(reader, file.fileno(), offset, scale, base, progress)
                os.fsync(file.fileno())
            os.replace(partial, out_path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return cls.open(out_path, states)

    @classmethod
    def open(cls, path: str | os.PathLike, states: Any) -> "MatchIndex":
        """Open an index for `states` (the float states it was built from, read to verify ambiguous values);
        StaleIndexError when it belongs to other states or is damaged."""
        n, n_units = _check_states(states)
        path = Path(path)
        with open(path, "rb") as file:
            head = file.read(len(_MAGIC) + 8)
            if len(head) < len(_MAGIC) + 8 or head[:len(_MAGIC)] != _MAGIC:
                raise StaleIndexError(f"index: {path} is not a match index")
            size = int.from_bytes(head[len(_MAGIC):], "little")
            try:
                header = json.loads(file.read(size))
            except ValueError:
                header = None
        if not isinstance(header, dict):
            raise StaleIndexError(f"index: {path} has a damaged header")
        offset = -(-(len(_MAGIC) + 8 + size) // _PAGE) * _PAGE
        if header.get("version") != 1 or header.get("shape") != [n, n_units]:
            raise StaleIndexError(f"index: {path} was built for states of shape {header.get('shape')}, "
                                  f"not {[n, n_units]}")
        if path.stat().st_size != offset + n * n_units:
            raise StaleIndexError(f"index: {path} is truncated")
        if header.get("transform") not in TRANSFORMS or \
                header.get("fingerprint") != _fingerprint(states, header["transform"]):
            raise StaleIndexError(f"index: {path} was built from other states (their content differs)")
        return cls(path, states, header, offset)

    # -- matching -------------------------------------------------------------------------------------
    def match(self, units: Any, threshold: float, *, phrase_length: int = 0,
              constrain: tuple[bool, bool] = (False, False), top: int = TOP,
              max_candidates: int = MAX_CANDIDATES) -> MatchResult:
        """LSTMVis match (see the module docstring); equal to `brute_force_match` on the same states."""
        query = _Query.check(units, threshold, self.shape[1], phrase_length=phrase_length, constrain=constrain,
                             top=top, max_candidates=max_candidates)
        rule = _Rule.of(query.t32, self._scale, self._base)
        self._prefetch(query.units)
        high, histogram = self._count_bounds(query, rule)
        levels, starts, stops = self._candidate_runs(query, rule, high, histogram)
        if query.constrain != (False, False):
            scores = query.scores(levels, self._exact_counts(starts - 1, query, rule, high),
                                  self._exact_counts(stops, query, rule, high))
        else:
            scores = np.zeros(len(levels), np.int64)
        order = np.lexsort((starts, -levels, -scores))[:query.max_candidates]
        starts, stops = starts[order], stops[order]
        selected_on = self._selected_on(query, rule, starts, stops)
        unions = np.full(len(starts), np.iinfo(np.int64).max)
        if len(starts):
            cutoff = np.sort(selected_on)[::-1][min(query.top, len(starts)) - 1]
            needed = np.flatnonzero(selected_on >= cutoff)
            unions[needed] = self._unions(query, starts[needed], stops[needed])
        return _result(query, starts, stops, selected_on, unions)

    def _count_bounds(self, query: _Query, rule: _Rule) -> tuple[np.ndarray, np.ndarray]:
        """Per step, the selected units possibly on (an upper bound on the count, from the codes alone),
        counted in cache-sized blocks of steps, one core per block; and its histogram. Exact counts are
        taken later, only at the steps where the bound can reach the levels searched."""
        n = self.shape[0]
        high = np.zeros(n, np.uint8 if len(query.units) < 256 else np.uint16)
        tests = [(self._codes[unit], int(rule.code_t[unit])) for unit in query.units.tolist()]

        def count(start: int) -> np.ndarray:
            stop = min(start + _COUNT_BLOCK, n)
            block, on = high[start:stop], np.empty(stop - start, bool)
            for codes, code_t in tests:
                block += np.greater_equal(codes[start:stop], code_t, out=on)
            return np.bincount(block, minlength=len(tests) + 1)

        with ThreadPoolExecutor(_workers()) as pool:
            histogram = sum(pool.map(count, range(0, n, _COUNT_BLOCK)))
        return high, histogram

    def _unit_on(self, unit: int, rows: np.ndarray, query: _Query, rule: _Rule) -> np.ndarray:
        """Exact on/off of one unit at sorted, unique rows: codes, and the float states where codes cannot tell."""
        codes = np.take(self._codes[unit], rows)
        code_t, on_from = int(rule.code_t[unit]), int(rule.on_from[unit])
        on = codes >= on_from if on_from <= 255 else np.zeros(len(rows), bool)
        if on_from != code_t:
            unsure = np.flatnonzero(codes == code_t)
            if len(unsure):
                on[unsure] = self._reader.values(rows[unsure], unit) >= query.t32
        return on

    def _exact_counts(self, rows: np.ndarray, query: _Query, rule: _Rule, high: np.ndarray) -> np.ndarray:
        """Selected units on at each of `rows` (any order; rows outside the sequence count 0): the bound
        `high`, less the units whose code equals their threshold's code where the float state is below it
        (none, for units whose threshold lies on a code edge)."""
        counts = np.zeros(len(rows), np.int64)
        inside = np.flatnonzero((rows >= 0) & (rows < self.shape[0]))
        counts[inside] = high[rows[inside]]
        edgeless = [unit for unit in query.units.tolist() if rule.on_from[unit] != rule.code_t[unit]]
        if edgeless and len(inside):
            unique, inverse = np.unique(rows[inside], return_inverse=True)
            for unit in edgeless:
                ambiguous = np.flatnonzero(np.take(self._codes[unit], unique) == rule.code_t[unit])
                off = ~(self._reader.values(unique[ambiguous], unit) >= query.t32)         # NaN is off
                counts[inside] -= np.bincount(ambiguous[off], minlength=len(unique))[inverse]
        return counts

    def _candidate_runs(self, query: _Query, rule: _Rule, high: np.ndarray,
                        histogram: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The runs LSTMVis's level-by-level descent records: (level, start, stop) arrays, by level then start.

        Only steps whose count could reach the lowest level searched (`floor`) matter; the floor starts
        where a few times `max_candidates` steps qualify and drops, at least doubling the steps, until enough
        runs are found."""
        at_least = np.cumsum(histogram[::-1])[::-1]
        empty = np.zeros(0, np.int64)
        if at_least[1] == 0:
            return empty, empty, empty
        plenty = np.flatnonzero(at_least[1:] >= 4 * query.max_candidates)
        floor = int(plenty[-1]) + 1 if len(plenty) else 1
        while True:
            rows = np.flatnonzero(high >= floor)
            counts = self._exact_counts(rows, query, rule, high)
            levels, first, last = _nested_runs(rows, counts, floor)
            keep = query.keeps(last - first + 1)
            levels, first, last = levels[keep], first[keep], last[keep]
            recorded = np.cumsum(np.bincount(levels, minlength=len(query.units) + 1)[::-1])[::-1]
            if recorded[floor] >= query.max_candidates or floor == 1:
                break
            grown = np.flatnonzero(at_least[1:floor] >= 2 * len(rows))
            floor = int(grown[-1]) + 1 if len(grown) else 1
        deepest = int(np.flatnonzero(recorded >= query.max_candidates)[-1]) if recorded[floor] >= \
            query.max_candidates else floor
        chosen = levels >= deepest
        return levels[chosen], rows[first[chosen]], rows[last[chosen]] + 1

    def _selected_on(self, query: _Query, rule: _Rule, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
        """Per candidate, the selected units on over the whole run (and off at constrained borders)."""
        n = self.shape[0]
        rows = _covered(starts, stops)
        first, end = np.searchsorted(rows, starts), np.searchsorted(rows, stops)
        borders = np.unique(np.concatenate((starts - 1, stops)))
        borders = borders[(borders >= 0) & (borders < n)]
        counts = np.zeros(len(starts), np.int64)
        for unit in query.units.tolist():
            off = np.concatenate(([0], np.cumsum(~self._unit_on(unit, rows, query, rule))))
            active = off[end] == off[first]
            border_on = self._unit_on(unit, borders, query, rule)
            for constrained, at in zip(query.constrain, (starts - 1, stops)):
                if constrained:
                    inside = (at >= 0) & (at < n)
                    active[inside] &= ~border_on[np.searchsorted(borders, at[inside])]
            counts += active
        return counts

    def _unions(self, query: _Query, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
        """|active units ∪ selected units| per candidate, from the float state rows (all units), read in
        batches of at most _UNION_ROWS rows (a long candidate is cut into pieces, whose results are ANDed)."""
        n, n_units = self.shape
        on_test = _OnTest(query.t32, self.transform)
        active = np.ones((len(starts), n_units), bool)
        pieces = -(-(stops - starts) // _UNION_ROWS)
        owner = np.repeat(np.arange(len(starts)), pieces)
        first = starts[owner] + _UNION_ROWS * (np.arange(len(owner)) - np.repeat(np.cumsum(pieces) - pieces, pieces))
        end = np.minimum(first + _UNION_ROWS, stops[owner])
        order = np.argsort(first, kind="stable")
        owner, first, end = owner[order], first[order], end[order]
        batch = np.cumsum(end - first) // _UNION_ROWS
        for lo, hi in zip(*_group_bounds(batch)):
            rows = _covered(first[lo:hi], end[lo:hi])
            on = np.concatenate((on_test(self._reader.rows(rows)), np.ones((1, n_units), bool)))
            at = np.stack((np.searchsorted(rows, first[lo:hi]), np.searchsorted(rows, end[lo:hi])), 1).ravel()
            np.logical_and.at(active, owner[lo:hi], np.logical_and.reduceat(on, at, axis=0)[::2])
        for constrained, border in zip(query.constrain, (starts - 1, stops)):
            inside = np.flatnonzero((border >= 0) & (border < n)) if constrained else []
            if len(inside):
                rows, where = np.unique(border[inside], return_inverse=True)
                active[inside] &= ~on_test(self._reader.rows(rows))[where]
        active[:, query.units] = False
        return len(query.units) + active.sum(axis=1)


def _group_bounds(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi) bounds of the runs of equal values in `keys`."""
    cuts = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    return np.concatenate(([0], cuts)), np.concatenate((cuts, [len(keys)]))


def _covered(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Sorted positions covered by the intervals [starts, stops) (overlaps merged)."""
    if not len(starts):
        return np.zeros(0, np.int64)
    order = np.argsort(starts, kind="stable")
    starts, stops = starts[order], np.maximum.accumulate(stops[order])
    fresh = np.concatenate(([True], starts[1:] > stops[:-1]))
    group = np.cumsum(fresh) - 1
    merged_starts = starts[fresh]
    merged_stops = np.zeros(len(merged_starts), np.int64)
    np.maximum.at(merged_stops, group, stops)
    lengths = merged_stops - merged_starts
    return np.repeat(merged_starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())


def _nested_runs(rows: np.ndarray, counts: np.ndarray, floor: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All distinct maximal runs of `counts >= k` for every level k >= floor, over sorted positions `rows`
    (non-adjacent positions break runs): (level, first index, last index), by level then position.

    A position starts a run at each level above both its predecessor's count and floor - 1, and ends
    one likewise; within a level the i-th start pairs with the i-th end. A run recorded at level k is
    new (not the same steps as at level k + 1) iff it holds a step whose count is exactly k."""
    size = len(rows)
    adjacent = rows[1:] == rows[:-1] + 1
    before = np.full(size, floor - 1, np.int64)
    before[1:][adjacent] = np.maximum(counts[:-1][adjacent], floor - 1)
    after = np.full(size, floor - 1, np.int64)
    after[:-1][adjacent] = np.maximum(counts[1:][adjacent], floor - 1)
    start_at, start_level = _expand(np.maximum(counts - before, 0), counts)
    end_at, end_level = _expand(np.maximum(counts - after, 0), counts)
    by_start = np.argsort(start_level.astype(np.int16), kind="stable")
    by_end = np.argsort(end_level.astype(np.int16), kind="stable")
    levels, first, last = start_level[by_start], start_at[by_start], end_at[by_end]
    owners = np.flatnonzero(counts >= floor)
    keys = levels * (size + 1) + first
    new = np.zeros(len(levels), bool)
    new[np.searchsorted(keys, counts[owners] * (size + 1) + owners, side="right") - 1] = True
    return levels[new], first[new], last[new]


def _expand(repeats: np.ndarray, tops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position i repeated repeats[i] times, with levels tops[i], tops[i] - 1, ... for its copies."""
    at = np.repeat(np.arange(len(repeats)), repeats)
    within = np.arange(len(at)) - np.repeat(np.cumsum(repeats) - repeats, repeats)
    return at, tops[at] - within


def _workers() -> int:
    """Threads for numpy work that releases the GIL: one per core, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


def _stream_codes(reader: _StateReader, out: int, offset: int, scale: np.ndarray, base: np.ndarray,
                  progress: Any) -> None:
    """Encode the states block by block into the index file `out` (a descriptor; unit u's codes from byte
    offset + u * N): this thread reads the next blocks while workers (one per core) encode a block each,
    in cache-sized tiles, into a stripe of code columns; a writer thread writes each full stripe, one
    piece per unit, while the workers fill the other (many small scattered writes cost the kernel far
    more than a few large ones)."""
    n, n_units = reader.states.shape
    rows = max(1, _BLOCK_BYTES // (4 * n_units))
    stripe_rows = rows * max(1, _STRIPE_BYTES // (rows * n_units))
    workers = _workers()
    buffers = [np.empty((min(rows, n), n_units), np.float32) for _ in range(workers + 1)]
    stripes = [np.empty((n_units, min(stripe_rows, n)), np.uint8) for _ in range(2)]
    local = threading.local()

    def encode(values: np.ndarray, codes: np.ndarray) -> int:
        if not hasattr(local, "encoder"):
            local.encoder = _Encoder(scale, base, reader.transform)
        local.encoder(values, codes)
        return len(values)

    def write(encoded: list, stripe: np.ndarray, start: int, count: int) -> None:
        for job in encoded:
            job.result()
        for unit in range(n_units):
            _write_at(out, stripe[unit, :count], offset + unit * n + start)
        getattr(os, "fdatasync", os.fsync)(out)     # written back stripe by stripe, not all at the end
        if hasattr(os, "posix_fadvise"):       # and let go of, so the states being read keep the page cache
            for unit in range(n_units):
                os.posix_fadvise(out, offset + unit * n + start, count, os.POSIX_FADV_DONTNEED)

    if progress is not None:
        progress.start("index states", n)
    with ThreadPoolExecutor(workers) as pool, ThreadPoolExecutor(1) as writer:
        jobs: collections.deque = collections.deque()
        writes: list = [None, None]                   # the last write of each stripe
        encoded: list = []                            # the encode jobs of the stripe being filled
        for block, start in enumerate(range(0, n, rows)):
            stripe, at = divmod(start, stripe_rows)
            if at == 0 and writes[stripe % 2] is not None:
                writes[stripe % 2].result()           # the stripe is free again once written
            if len(jobs) == len(buffers):             # the oldest job's buffer is the one read next
                _report(progress, jobs.popleft().result())
            values = reader.read(start, min(start + rows, n), buffers[block % len(buffers)])
            jobs.append(pool.submit(encode, values, stripes[stripe % 2][:, at:at + len(values)]))
            encoded.append(jobs[-1])
            if start + rows >= min(n, (stripe + 1) * stripe_rows):
                writes[stripe % 2] = writer.submit(write, encoded, stripes[stripe % 2], start - at,
                                                   at + len(values))
                encoded = []
        while jobs:
            _report(progress, jobs.popleft().result())
        for job in writes:
            if job is not None:
                job.result()


def _allocate(file: Any, size: int) -> None:
    """Give the open file `size` bytes: allocated at once where the system can (scattered writes into a sparse
    file cost the kernel far more), else as a sparse file."""
    try:
        os.posix_fallocate(file.fileno(), 0, size)
    except (AttributeError, OSError):                  # no posix_fallocate here, or not on this file system
        file.truncate(size)


def _report(progress: Any, rows: int) -> None:
    if progress is not None:
        progress.update(rows)


def _write_at(out: int, data: np.ndarray, position: int) -> None:
    """Write the bytes of a contiguous array to the file `out` at `position`."""
    view = memoryview(data).cast("B")
    while len(view):
        written = os.pwrite(out, view, position)
        view, position = view[written:], position + written
