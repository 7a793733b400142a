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
5. Ranking: most selected units on, then smallest union, then longest, then earliest start; the
   first `top` (50) are returned. Histograms count candidate lengths: fuzzy over all candidates,
   strict over those whose selected_on is K.

Where this differs from LSTMVis, on purpose: a step outside the sequence counts as off (LSTMVis
drops runs that touch either end and reads a wrapped-around neighbour for the score), ties are broken
by the stated orders (LSTMVis: dictionary and set order), the whole sequence is searched (its "fast"
mode silently searches the first 500,000 steps), and on/off is exact (it rounds to float32 or
compares arctanh(t) with raw values).

The index (`MatchIndex`) stores, column-major ([U, N] uint8, a quarter of float32 states), a code per
value: code = clip(floor(value * s_u) - b_u, 0, 255), exact and monotone, with a per-unit scale s_u =
q * 10^p (q in 1..9) chosen from a sample of the unit's range so that thresholds with p decimals
fall exactly on code edges. For a threshold, codes above (below) the threshold's own code are on
(off); a value whose code equals it is "ambiguous" unless the threshold is that code's lower edge,
and is read back from the float states. Ambiguous values are resolved only where they matter:
steps whose count could reach the candidate levels, and candidate rows; the union over all units
of the top-ranked candidates is read from the float state rows directly.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

TRANSFORMS = ("tanh", "none")
MAX_CANDIDATES = 10_000        # LSTMVis's candidate budget in precise mode
TOP = 50                       # LSTMVis's number of results

_MAGIC = b"SVMATCH1"
_PAGE = 4096
_BLOCK_BYTES = 32 << 20        # float32 bytes per streamed block of rows
_SAMPLE_BLOCKS, _SAMPLE_ROWS = 64, 1024
_FINGERPRINT_ROWS = 17
_LONG_RUN = 4096               # candidates longer than this are verified in chunks


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
    min_level: int              # lowest level the candidate search reached (0: no candidates)


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
        raise TypeError(f"states: need a 2-D float array or h5py dataset [tokens, units], got {shape} of {dtype}")
    if shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"states: need at least one token and one unit, got shape {shape}")
    return int(shape[0]), int(shape[1])


def _check_transform(transform: Any) -> str:
    if transform not in TRANSFORMS:
        raise ValueError(f"transform: need one of {TRANSFORMS}, got {transform!r}")
    return transform


def _result(query: _Query, starts: np.ndarray, stops: np.ndarray, selected_on: np.ndarray, unions: np.ndarray,
            min_level: int) -> MatchResult:
    """Rank verified candidates and count their lengths (unions only matter for the best selected_on values)."""
    lengths = stops - starts
    order = np.lexsort((starts, -lengths, unions, -selected_on))[:query.top]
    strict = selected_on == len(query.units)
    ranked = [MatchCandidate(int(starts[i]), int(stops[i]), int(selected_on[i]), int(unions[i]), int(lengths[i]))
              for i in order]
    return MatchResult(ranked, np.bincount(lengths).tolist(), np.bincount(lengths[strict]).tolist(),
                       len(starts), int(strict.sum()), min_level)


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
    min_level = min((level for level, _ in found.values()), default=0)
    return _result(query, table[:, 0], table[:, 1], table[:, 2], table[:, 3], min_level)


# -- reading the float states ----------------------------------------------------------------------------

class _StateReader:
    """Transformed float32 blocks, rows and single values of the states, read through a memory map when
    the states are a contiguous, unfiltered HDF5 dataset (random access then costs no library calls)."""

    def __init__(self, states: Any, transform: str):
        self.states, self.transform = states, transform
        self.direct = states if isinstance(states, np.ndarray) else _memory_map(states)

    def block(self, start: int, stop: int) -> np.ndarray:
        return np.ascontiguousarray((self.direct if self.direct is not None else self.states)[start:stop],
                                    dtype=np.float32)

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """Transformed rows (sorted, unique positions)."""
        source = self.direct if self.direct is not None else self.states
        return transformed(source[rows], self.transform)

    def values(self, rows: np.ndarray, unit: int) -> np.ndarray:
        """Transformed values of one unit at sorted, unique rows."""
        source = self.direct if self.direct is not None else self.states
        return transformed(source[rows, unit], self.transform)


def _memory_map(states: Any) -> np.ndarray | None:
    if not isinstance(states, h5py.Dataset) or states.chunks is not None or states.compression is not None:
        return None
    offset = states.id.get_offset()
    if offset is None or states.file.driver != "sec2" or states.external or not states.dtype.isnative:
        return None
    return np.memmap(states.file.filename, dtype=states.dtype, mode="r", offset=offset, shape=states.shape)


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


def _encode(values: np.ndarray, scale32: np.ndarray, scale64: np.ndarray, base32: np.ndarray) -> np.ndarray:
    """uint8 codes clip(floor(value * scale) - base, 0, 255) of float32 values [rows, units], exact: a
    float32 product that rounded onto an integer is recomputed in float64; NaN gets code 0."""
    scaled = values * scale32
    codes = np.floor(scaled)
    near = codes == scaled
    near &= values != 0
    rows, units = np.nonzero(near)
    if len(rows):
        codes[rows, units] = np.floor(values[rows, units].astype(np.float64) * scale64[units])
    codes -= base32
    np.fmax(codes, 0, out=codes)
    np.fmin(codes, 255, out=codes)
    return codes.astype(np.uint8)


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
    """Shape, dtype, transform and a few rows spread over the states: what a stale index would not match."""
    n, n_units = states.shape
    rows = np.unique(np.linspace(0, n - 1, _FINGERPRINT_ROWS).astype(np.int64))
    digest = hashlib.sha256(json.dumps([[n, n_units], np.dtype(states.dtype).str, transform]).encode())
    digest.update(np.ascontiguousarray(states[rows.tolist()], dtype=np.float32).tobytes())
    return digest.hexdigest()


def _sample_range(reader: _StateReader, n: int, n_units: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit finite min and max of the transformed values over evenly spread blocks of rows."""
    starts = (np.arange(1) if n <= _SAMPLE_BLOCKS * _SAMPLE_ROWS else
              np.linspace(0, n - _SAMPLE_ROWS, _SAMPLE_BLOCKS).astype(np.int64))
    rows = n if len(starts) == 1 else _SAMPLE_ROWS
    low, high = np.full(n_units, np.inf), np.full(n_units, -np.inf)
    for start in starts.tolist():
        values = transformed(reader.block(start, start + rows), reader.transform)
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
        self._codes = np.memmap(path, np.uint8, mode="c", offset=offset, shape=(n_units, n))
        self._reader = _StateReader(states, self.transform)

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
                file.truncate(offset + n * n_units)
            codes = np.memmap(partial, np.uint8, mode="r+", offset=offset, shape=(n_units, n))
            _stream_codes(reader, codes, scale, base, progress)
            codes.flush()
            del codes
            with open(partial, "rb+") as file:
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
                raise StaleIndexError(f"index: {path} has a damaged header") from None
        offset = -(-(len(_MAGIC) + 8 + size) // _PAGE) * _PAGE
        if header.get("version") != 1 or header.get("shape") != [n, n_units]:
            raise StaleIndexError(f"index: {path} was built for states of shape {header.get('shape')}, "
                                  f"not {[n, n_units]}")
        if path.stat().st_size != offset + n * n_units:
            raise StaleIndexError(f"index: {path} is truncated")
        if header["fingerprint"] != _fingerprint(states, header["transform"]):
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
        low, high = self._count_bounds(query, rule)
        levels, starts, stops = self._candidate_runs(query, rule, low, high)
        min_level = int(levels.min()) if len(levels) else 0
        if query.constrain != (False, False):
            scores = query.scores(levels, self._exact_counts(starts - 1, query, rule, low, high),
                                  self._exact_counts(stops, query, rule, low, high))
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
        return _result(query, starts, stops, selected_on, unions, min_level)

    def _count_bounds(self, query: _Query, rule: _Rule) -> tuple[np.ndarray, np.ndarray]:
        """Per step, the selected units surely on (low) and possibly on (high), from the codes alone."""
        dtype = torch.uint8 if len(query.units) < 256 else torch.int16
        low, high = torch.zeros(self.shape[0], dtype=dtype), torch.zeros(self.shape[0], dtype=dtype)
        for unit in query.units.tolist():
            codes = torch.from_numpy(self._codes[unit])
            code_t, on_from = int(rule.code_t[unit]), int(rule.on_from[unit])
            maybe = codes >= code_t
            high += maybe
            if on_from == code_t:
                low += maybe
            elif on_from <= 255:
                low += codes >= on_from
        return low.numpy(), high.numpy()

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

    def _exact_counts(self, rows: np.ndarray, query: _Query, rule: _Rule, low: np.ndarray,
                      high: np.ndarray) -> np.ndarray:
        """Selected units on at each of `rows` (any order; rows outside the sequence count 0)."""
        counts = np.zeros(len(rows), np.int64)
        inside = np.flatnonzero((rows >= 0) & (rows < self.shape[0]))
        counts[inside] = low[rows[inside]]
        unsure = inside[high[rows[inside]] > low[rows[inside]]]
        if len(unsure):
            unique, inverse = np.unique(rows[unsure], return_inverse=True)
            exact = np.zeros(len(unique), np.int64)
            for unit in query.units.tolist():
                exact += self._unit_on(unit, unique, query, rule)
            counts[unsure] = exact[inverse]
        return counts

    def _candidate_runs(self, query: _Query, rule: _Rule, low: np.ndarray,
                        high: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The runs LSTMVis's level-by-level descent records: (level, start, stop) arrays, by level then start.

        Only steps whose count could reach the lowest level searched (`floor`) matter; the floor starts
        where a few times `max_candidates` steps qualify and drops until enough runs are found."""
        at_least = np.cumsum(np.bincount(high, minlength=len(query.units) + 1)[::-1])[::-1]
        empty = np.zeros(0, np.int64)
        if at_least[1] == 0:
            return empty, empty, empty
        plenty = np.flatnonzero(at_least[1:] >= 4 * query.max_candidates)
        floor = int(plenty[-1]) + 1 if len(plenty) else 1
        while True:
            rows = np.flatnonzero(high >= floor)
            counts = self._exact_counts(rows, query, rule, low, high)
            levels, first, last = _nested_runs(rows, counts, floor)
            keep = query.keeps(last - first + 1)
            levels, first, last = levels[keep], first[keep], last[keep]
            recorded = np.cumsum(np.bincount(levels, minlength=len(query.units) + 1)[::-1])[::-1]
            if recorded[floor] >= query.max_candidates or floor == 1:
                break
            grown = np.flatnonzero(at_least[1:floor] >= 4 * len(rows))
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
        """|active units ∪ selected units| per candidate, from the float state rows (all units)."""
        n, n_units = self.shape
        on_test = _OnTest(query.t32, self.transform)
        source = self._reader.direct if self._reader.direct is not None else self._reader.states
        extra = np.ones(n_units, bool)
        extra[query.units] = False
        active = np.zeros((len(starts), n_units), bool)
        order = np.argsort(starts, kind="stable")
        batch: list[int] = []
        spanned = 0
        for i in order.tolist() + [-1]:
            length = stops[i] - starts[i] + 2 if i >= 0 else 0
            if batch and (i < 0 or spanned + length > 4 * _LONG_RUN):
                idx = np.array(batch)
                rows = _covered(np.maximum(starts[idx] - 1, 0), np.minimum(stops[idx] + 1, n))
                on = on_test(np.ascontiguousarray(source[rows], dtype=np.float32))
                first, end = np.searchsorted(rows, starts[idx]), np.searchsorted(rows, stops[idx])
                padded = np.concatenate((on, np.ones((1, n_units), bool)))
                runs = np.logical_and.reduceat(padded, np.stack((first, end), 1).ravel(), axis=0)[::2]
                if query.constrain[0]:
                    has = starts[idx] > 0
                    runs[has] &= ~on[first[has] - 1]
                if query.constrain[1]:
                    has = stops[idx] < n
                    runs[has] &= ~on[end[has]]
                active[idx] = runs
                batch, spanned = [], 0
            if i < 0:
                break
            if length > _LONG_RUN:
                active[i] = self._long_run_active(query, on_test, source, int(starts[i]), int(stops[i]))
            else:
                batch.append(i)
                spanned += length
        return len(query.units) + (active & extra).sum(axis=1)

    def _long_run_active(self, query: _Query, on_test: _OnTest, source: Any, start: int, stop: int) -> np.ndarray:
        """Active units of one long run, reading its rows in chunks."""
        n = self.shape[0]
        active = np.ones(self.shape[1], bool)
        for chunk in range(start, stop, _LONG_RUN):
            active &= on_test(np.ascontiguousarray(source[chunk:min(chunk + _LONG_RUN, stop)],
                                                   dtype=np.float32)).all(axis=0)
        for constrained, at in zip(query.constrain, (start - 1, stop)):
            if constrained and 0 <= at < n:
                active &= ~on_test(np.ascontiguousarray(source[at:at + 1], dtype=np.float32))[0]
        return active


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


def _stream_codes(reader: _StateReader, codes: np.ndarray, scale: np.ndarray, base: np.ndarray,
                  progress: Any) -> None:
    """Encode the states block by block into `codes` [U, N]; the next block is read while workers
    (one per core) transform, encode and transpose the current one."""
    n, n_units = reader.states.shape
    rows = max(1, _BLOCK_BYTES // (4 * n_units))
    scale32, base32 = scale.astype(np.float32), base.astype(np.float32)
    workers = max(1, min(4, os.cpu_count() or 1))

    def encode(values: np.ndarray, start: int) -> None:
        codes[:, start:start + len(values)] = _encode(transformed(values, reader.transform), scale32, scale,
                                                      base32).T

    if progress is not None:
        progress.start("index states", n)
    with ThreadPoolExecutor(workers) as pool:
        pending: list = []
        for start in range(0, n + rows, rows):
            values = reader.block(start, start + rows) if start < n else None
            for job in pending:
                job.result()
            if progress is not None and pending:
                progress.update(min(rows, n - (start - rows)))
            if values is None:
                break
            bounds = np.linspace(0, len(values), workers + 1).astype(int)
            pending = [pool.submit(encode, values[a:b], start + a) for a, b in zip(bounds[:-1], bounds[1:])]
