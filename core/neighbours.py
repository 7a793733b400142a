"""Exact cosine nearest neighbours among stored states, and a fixed 2-D map of them.

    index = NeighbourIndex.cached(states, "cache/", valid=mask)      # builds once, later opens the file
    rows, sims = index.query(queries, k=20)                          # [Q, k] source rows, cosines
    xy = index.project(queries)                                      # [Q, 2], the map of index.coordinates

`states` is a float matrix [N, D] (a numpy array, a memory map or an h5py dataset; read in row
blocks, never whole). Rows that are not `valid` (padding) and zero rows (no direction: cosine is
undefined) are left out; a zero or non-finite query is a ValueError. Every result is a source row
number. Results are exact: the similarity is sum(q * x) / (|q| |x|) in float64 from the float32
values, row by row (so equal directions score equally); the k largest are returned, best first,
ties broken by the smaller row; k larger than the index returns all of it.

How it is small and fast: the index keeps each unit state as int8 codes times a float32 scale (a
quarter of float32), with a bound on the error of that approximation, |u - scale * codes| <= error.
A query is quantised the same way; the approximate scores are exact integer products (torch._int_mm,
VNNI on x86; an exact float product where it is missing or fails a check). With both errors,
|approximate - true| <= w = error_n + error_q (1 + error_n) + margin, so a row whose approximate
score is more than 2 max(w) below the k-th best approximate score cannot be among the k best; the
rows that can are re-ranked exactly from the float source. The margin, 2^-20, covers float64
rounding in the scores and the cosines (about D 2^-53) many times over. Speed therefore needs the
k-th best to stand out by more than the int8 error (about 0.005); on near-duplicate data a query
degrades to an exact re-ranking of many rows, still exact.

The map is the PCA of the unit states (centred), fitted once at build on rows spread over the states:
`project` places new states with the same mean and axes, never refitting.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

_MAGIC = b"SVNEIGH1"
_VERSION = 1
_PAGE = 4096
_READ_ROWS = 1 << 15          # source rows read per step at build time
_SCAN_ROWS = 1 << 17          # index rows scored per step of a query
_SAMPLE_BLOCKS = 32           # blocks of _READ_ROWS spread over the source fit the map
_PROBE_ROWS = 8192            # evenly spread rows scored first, for a starting threshold
_PENDING = 1 << 15            # candidate pairs collected before the threshold is raised from them
_PAIRS = 1 << 15              # candidate pairs re-ranked from the source at a time
_MARGIN = 2.0 ** -20
_ARRAYS = ("codes", "scale", "error", "coordinates", "rows", "center", "axes")


class StaleIndexError(ValueError):
    """The index file was built from other states (or another validity mask), or it is damaged."""


class Progress(Protocol):
    """Anything with these two methods (seqvis.progress.Progress, for one) can follow a build."""

    def start(self, stage: str, total: int | None = None) -> None: ...
    def update(self, n: int = 1) -> None: ...


# -- identity of the source ------------------------------------------------------------------------------

def source_identity(states: Any, valid: Any = None) -> dict:
    """What a stale index would not match: shape and dtype; for an h5py dataset its file (real path,
    size, modification time) and dataset name, for anything else a digest of the content (one read);
    and a digest of the validity mask."""
    n, dims = _check_states(states)
    identity: dict[str, Any] = {"shape": [n, dims], "dtype": np.dtype(states.dtype).str}
    filename, name = getattr(getattr(states, "file", None), "filename", None), getattr(states, "name", None)
    if isinstance(filename, str) and isinstance(name, str):
        path = os.path.realpath(filename)
        stat = os.stat(path)
        identity.update(file=path, size=stat.st_size, mtime_ns=stat.st_mtime_ns, dataset=name)
    else:
        digest = hashlib.sha256()
        for start in range(0, n, _READ_ROWS):
            digest.update(np.ascontiguousarray(states[start:start + _READ_ROWS]).tobytes())
        identity["sha256"] = digest.hexdigest()
    mask = _check_valid(valid, n)
    identity["valid"] = None if mask is None else hashlib.sha256(np.packbits(mask).tobytes()).hexdigest()
    return identity


# -- argument checks ------------------------------------------------------------------------------------

def _check_states(states: Any) -> tuple[int, int]:
    shape = getattr(states, "shape", None)
    if shape is None or len(shape) != 2 or not hasattr(states, "__getitem__"):
        raise ValueError(f"states must be a 2-D array [N, D], got {type(states).__name__} of shape {shape}")
    if np.dtype(states.dtype).kind != "f":
        raise ValueError(f"states must hold floats, got dtype {states.dtype}")
    if shape[1] < 1:
        raise ValueError("states must have at least one dimension (D >= 1)")
    return int(shape[0]), int(shape[1])


def _check_valid(valid: Any, n: int) -> np.ndarray | None:
    if valid is None:
        return None
    mask = np.asarray(valid.detach().cpu() if isinstance(valid, torch.Tensor) else valid)
    if mask.dtype != bool or mask.shape != (n,):
        raise ValueError(f"valid must be a bool array of shape ({n},), got {mask.dtype} of shape {mask.shape}")
    return mask


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _check_queries(states: Any, dims: int) -> np.ndarray:
    """Queries as float64 [Q, D] (their float32 values); a ValueError naming `states` for a wrong shape,
    a non-finite or a zero row."""
    if isinstance(states, torch.Tensor):
        states = states.detach().cpu().numpy()
    values = np.asarray(states)
    if values.ndim != 2 or values.shape[1] != dims or values.dtype.kind not in "fiu":
        raise ValueError(f"states must be a numeric array [Q, {dims}], got {values.dtype} of shape {values.shape}")
    values = values.astype(np.float32).astype(np.float64)
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        raise ValueError(f"states: row {int(np.argmax(bad))} has a non-finite value")
    zero = ~values.any(axis=1)
    if zero.any():
        raise ValueError(f"states: row {int(np.argmax(zero))} is a zero vector (cosine is undefined)")
    return values


# -- arithmetic -----------------------------------------------------------------------------------------

def _norms(values: np.ndarray) -> np.ndarray:
    """Row norms in float64, row by row (equal rows, equal norms)."""
    return np.sqrt((values * values).sum(axis=1))


def _round_up(values: np.ndarray) -> np.ndarray:
    """float64 -> the smallest float32 values that are >= them."""
    rounded = values.astype(np.float32)
    low = rounded.astype(np.float64) < values
    rounded[low] = np.nextafter(rounded[low], np.float32(np.inf))
    return rounded


def _quantise(unit: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit rows as (int8 codes, float32 scale, float64 error): |unit - scale * codes| = error, codes in
    [-127, 127]."""
    scale = (np.abs(unit).max(axis=1) / 127.0).astype(np.float32)
    wide = scale.astype(np.float64)[:, None]
    codes = np.clip(np.rint(unit / wide), -127, 127)
    return codes.astype(np.int8), scale, _norms(unit - wide * codes)


@functools.lru_cache(maxsize=None)
def _int_mm_exact(dims: int) -> bool:
    """Whether torch._int_mm exists here and multiplies exactly with `dims` columns (checked on extreme
    and random codes in a few shapes; it returns garbage for one column in torch 2.13)."""
    if not hasattr(torch, "_int_mm"):
        return False
    generator = torch.Generator().manual_seed(0)
    rows = torch.randint(-127, 128, (64, dims), dtype=torch.int8, generator=generator)
    rows[0], rows[1], rows[2, ::2] = 127, -127, -127
    try:
        return all(torch.equal(torch._int_mm(rows[:n], rows[:q].T).long(), rows[:n].long() @ rows[:q].long().T)
                   for n, q in ((1, 1), (7, 3), (64, 30)))
    except RuntimeError:
        return False


def _products(codes: np.ndarray, queries: torch.Tensor) -> np.ndarray:
    """Exact integer products codes @ queries.T of int8 codes [B, D] and queries [Q, D]: int32 [B, Q]
    from torch._int_mm, or integer-valued floats [B, Q] where it is missing or inexact."""
    codes, dims = torch.from_numpy(codes), codes.shape[1]
    if dims * 127 * 127 < 2 ** 31 and _int_mm_exact(dims):
        return torch._int_mm(codes, queries.T).numpy()
    wide = torch.float32 if dims * 127 * 127 < 2 ** 24 else torch.float64    # sums stay exact integers
    return (codes.to(wide) @ queries.to(wide).T).numpy()


# -- the index ------------------------------------------------------------------------------------------

class NeighbourIndex:
    """Exact top-k cosine neighbours among the valid, non-zero rows of `states`, and their 2-D map.

    Attributes: `size` (indexed rows), `dims` (D), `rows` (source row of each indexed row, increasing),
    `coordinates` ([size, 2] float32 map position of each indexed row), `identity` (see
    `source_identity`), `path` (the file, once saved or opened), `states` (the source).
    """

    def __init__(self, states: Any, identity: dict, arrays: dict[str, np.ndarray], path: Path | None = None):
        self.states, self.identity, self.path = states, identity, path
        self._a = arrays
        self.size, self.dims = arrays["codes"].shape
        self.rows: np.ndarray = arrays["rows"]
        self.coordinates: np.ndarray = arrays["coordinates"]
        self._max_error = float(arrays["error"].max())

    # -- building ---------------------------------------------------------------------------------------
    @classmethod
    def build(cls, states: Any, *, valid: Any = None, progress: Progress | None = None) -> "NeighbourIndex":
        """Index the valid, non-zero rows of `states` [N, D] (`valid`: bool [N], False for padding), in
        two passes over row blocks: rows spread over the states fit the map, then every row is encoded."""
        n, dims = _check_states(states)
        mask = _check_valid(valid, n)
        identity = source_identity(states, mask)
        center, axes = _fit_map(states, mask, n, dims, progress)
        arrays = {"codes": np.empty((n, dims), np.int8), "scale": np.empty(n, np.float32),
                  "error": np.empty(n, np.float32), "coordinates": np.empty((n, 2), np.float32),
                  "rows": np.empty(n, np.int64)}
        size = 0
        if progress is not None:
            progress.start("neighbour index: encode", n)
        for start in range(0, n, _READ_ROWS):
            unit, rows = _unit_rows(states, mask, start, min(n, start + _READ_ROWS))
            at = slice(size, size + len(rows))
            arrays["codes"][at], arrays["scale"][at], error = _quantise(unit)
            arrays["error"][at] = _round_up(error)
            arrays["coordinates"][at] = unit @ axes - center @ axes
            arrays["rows"][at] = rows
            size += len(rows)
            if progress is not None:
                progress.update(min(n, start + _READ_ROWS) - start)
        if size == 0:
            raise ValueError("states: no valid non-zero row to index")
        arrays = {name: array[:size] for name, array in arrays.items()}
        arrays.update(center=center, axes=axes)
        return cls(states, identity, arrays)

    # -- files ------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the index to `path` (a temporary name first, then renamed into place)."""
        path = Path(path)
        layout, offset = {}, 0
        for name in _ARRAYS:
            array = self._a[name]
            layout[name] = {"offset": offset, "dtype": array.dtype.str, "shape": list(array.shape)}
            offset += -(-array.nbytes // _PAGE) * _PAGE
        text = json.dumps({"format": "seqvis neighbour index", "version": _VERSION, "identity": self.identity,
                           "arrays": layout}).encode()
        start = -(-(len(_MAGIC) + 8 + len(text)) // _PAGE) * _PAGE
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            with open(partial, "wb") as file:
                file.write(_MAGIC + len(text).to_bytes(8, "little") + text)
                for name in _ARRAYS:
                    file.seek(start + layout[name]["offset"])
                    file.write(np.ascontiguousarray(self._a[name]).reshape(-1).view(np.uint8))   # no copy
                file.truncate(start + offset)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        self.path = path
        return path

    @classmethod
    def open(cls, path: str | os.PathLike, states: Any, *, valid: Any = None) -> "NeighbourIndex":
        """Open a saved index (memory-mapped) over `states`, which are read at query time for the exact
        re-ranking; StaleIndexError when it was built from other states or another mask, or is damaged."""
        path = Path(path)
        with open(path, "rb") as file:
            head = file.read(len(_MAGIC) + 8)
            if len(head) < len(_MAGIC) + 8 or head[:len(_MAGIC)] != _MAGIC:
                raise StaleIndexError(f"index: {path} is not a neighbour index")
            length = int.from_bytes(head[len(_MAGIC):], "little")
            try:
                header = json.loads(file.read(length))
            except ValueError:
                header = None
        if not isinstance(header, dict) or "identity" not in header or set(header.get("arrays", ())) != set(_ARRAYS):
            raise StaleIndexError(f"index: {path} has a damaged header")
        if header.get("version") != _VERSION:
            raise StaleIndexError(f"index: {path} has format version {header.get('version')}, expected {_VERSION}")
        identity = source_identity(states, valid)
        changed = sorted(key for key in set(identity) | set(header["identity"])
                         if identity.get(key) != header["identity"].get(key))
        if changed:
            raise StaleIndexError(f"index: {path} was built from other states ({', '.join(changed)} differ)")
        start = -(-(len(_MAGIC) + 8 + length) // _PAGE) * _PAGE
        layout = header["arrays"]
        end = max(start + spec["offset"] + int(np.prod(spec["shape"])) * np.dtype(spec["dtype"]).itemsize
                  for spec in layout.values())
        if os.path.getsize(path) < end:
            raise StaleIndexError(f"index: {path} is truncated")
        arrays = {name: np.memmap(path, np.dtype(spec["dtype"]), mode="c", offset=start + spec["offset"],
                                  shape=tuple(spec["shape"])) for name, spec in layout.items()}
        return cls(states, header["identity"], arrays, path)

    @classmethod
    def cached(cls, states: Any, cache_dir: str | os.PathLike, *, valid: Any = None,
               progress: Progress | None = None) -> "NeighbourIndex":
        """The index of `states` kept in `cache_dir` (a file named by the source identity): opened when
        present and current, otherwise built and saved there first."""
        identity = source_identity(states, valid)
        key = hashlib.sha256(json.dumps([identity, _VERSION], sort_keys=True).encode()).hexdigest()[:24]
        path = Path(cache_dir) / f"neighbours-{key}.index"
        if path.exists():
            try:
                return cls.open(path, states, valid=valid)
            except StaleIndexError:
                pass                                   # damaged, or rewritten within the clock's resolution
        path.parent.mkdir(parents=True, exist_ok=True)
        cls.build(states, valid=valid, progress=progress).save(path)
        return cls.open(path, states, valid=valid)

    # -- queries ----------------------------------------------------------------------------------------
    def project(self, states: Any) -> np.ndarray:
        """[Q, 2] float32 positions of `states` [Q, D] in the map fitted at build (as `coordinates`)."""
        values = _check_queries(states, self.dims)
        unit = values / _norms(values)[:, None]
        return (unit @ self._a["axes"] - self._a["center"] @ self._a["axes"]).astype(np.float32)

    def query(self, states: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest indexed rows of each of `states` [Q, D] by cosine: (source rows [Q, k'] int64,
        similarities [Q, k'] float64), best first, ties by smaller row; k' = min(k, size)."""
        values = _check_queries(states, self.dims)
        k = min(_check_k(k), self.size)
        return _Search(self, values, k).run()


def _unit_rows(states: Any, mask: np.ndarray | None, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """The valid, non-zero rows of states[start:stop] scaled to unit length (float64), and their row numbers;
    a ValueError naming the first valid row with a non-finite value."""
    values = np.asarray(states[start:stop], dtype=np.float32)
    rows = np.arange(start, stop, dtype=np.int64)
    if mask is not None:
        rows = rows[mask[start:stop]]
        values = values[rows - start]
    finite = np.isfinite(values).all(axis=1)
    if not finite.all():
        raise ValueError(f"states: row {int(rows[np.argmin(finite)])} has a non-finite value")
    values = values.astype(np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", values, values))
    if not norms.all():
        values, rows, norms = values[norms > 0], rows[norms > 0], norms[norms > 0]
    values /= norms[:, None]
    return values, rows


def _fit_map(states: Any, mask: np.ndarray | None, n: int, dims: int,
             progress: Progress | None) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and first two principal axes [D, 2] of the unit states, from blocks spread over them
    (all blocks when there are few); an axis beyond D is zero, axis signs are fixed (largest entry > 0)."""
    starts = np.arange(0, n, _READ_ROWS)
    if len(starts) > _SAMPLE_BLOCKS:
        starts = starts[np.linspace(0, len(starts) - 1, _SAMPLE_BLOCKS).astype(np.int64)]
    moment, total, count = np.zeros((dims, dims)), np.zeros(dims), 0
    if progress is not None:
        progress.start("neighbour index: fit map", len(starts))
    for start in starts.tolist():
        unit = torch.from_numpy(_unit_rows(states, mask, start, min(n, start + _READ_ROWS))[0].astype(np.float32))
        moment += (unit.T @ unit).double().numpy()
        total += unit.sum(dim=0).double().numpy()
        count += len(unit)
        if progress is not None:
            progress.update(1)
    if count == 0:
        raise ValueError("states: no valid non-zero row to index")
    center = total / count
    covariance = moment / count - np.outer(center, center)
    vectors = np.linalg.eigh((covariance + covariance.T) / 2)[1][:, ::-1][:, :2]
    vectors = vectors * np.where(vectors[np.abs(vectors).argmax(axis=0), np.arange(vectors.shape[1])] < 0, -1, 1)
    return center, np.concatenate([vectors, np.zeros((dims, 2 - vectors.shape[1]))], axis=1)


class _Search:
    """One batch of queries against an index. `floor[q]` is always at most the k-th largest approximate
    score of query q; a row scoring below floor - 2 max(w) is out (see the module docstring)."""

    def __init__(self, index: NeighbourIndex, values: np.ndarray, k: int):
        self.index, self.a, self.k, self.values = index, index._a, k, values
        codes, scale, error = _quantise(values / _norms(values)[:, None])
        self.codes = torch.from_numpy(codes)
        self.scale = scale.astype(np.float64)
        self.slack_q = error                                        # w = error_n + slack_q (1 + error_n) + margin
        self.reach = 2 * (index._max_error + error * (1 + index._max_error) + _MARGIN)
        self.floor = np.full(len(values), -np.inf)

    def run(self) -> tuple[np.ndarray, np.ndarray]:
        self._probe()
        found_q, found_n, found_s = [], [], []
        pending = 0
        for start in range(0, self.index.size, _SCAN_ROWS):
            stop = min(self.index.size, start + _SCAN_ROWS)
            products, scale = _products(self.a["codes"][start:stop], self.codes), self.a["scale"][start:stop]
            limit = self._limits()                         # out: products * scale < limit
            # integer prefilter (a superset of the rows that pass), then the scaled test on the few
            bound = np.where(limit > 0, limit / scale.max(), limit / scale.min())
            hits = np.flatnonzero(products >= np.clip(np.floor(bound) - 1, -2 ** 31, 2 ** 31 - 1).astype(np.int32))
            n, q = np.divmod(hits, products.shape[1])           # flat: far faster than a 2-D nonzero
            s = products[n, q] * scale[n].astype(np.float64)
            keep = s >= limit[q]
            found_q.append(q[keep]), found_n.append(n[keep] + start), found_s.append(s[keep])
            pending += int(keep.sum())
            if pending > _PENDING:
                kept = self._prune(*(np.concatenate(x) for x in (found_q, found_n, found_s)))
                found_q, found_n, found_s = ([x] for x in kept)
                pending = 0
        q, n, s = self._prune(*(np.concatenate(x) for x in (found_q, found_n, found_s)))
        approx = s * self.scale[q]
        slack = self.a["error"][n] + self.slack_q[q] * (1 + self.a["error"][n]) + _MARGIN
        low = self._kth_largest(q, approx - slack)
        keep = approx + slack >= low[q]
        return self._exact(q[keep], n[keep])

    def _limits(self) -> np.ndarray:
        """float64 [Q]: rows whose approximate score without the query scale is below these are out."""
        return (self.floor - self.reach) / self.scale

    def _kth_largest(self, q: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Per query, the k-th largest of `values` over its pairs (-inf with fewer than k pairs)."""
        order = np.lexsort((-values, q))
        counts = np.bincount(q, minlength=len(self.values))
        firsts = np.cumsum(counts) - counts
        full = counts >= self.k
        kth = np.full(len(self.values), -np.inf)
        kth[full] = values[order[firsts[full] + self.k - 1]]
        return kth

    def _probe(self) -> None:
        """A starting floor from evenly spread rows."""
        rows = np.unique(np.linspace(0, self.index.size - 1, min(self.index.size, max(_PROBE_ROWS, self.k)))
                         .astype(np.int64))
        approx = _products(self.a["codes"][rows], self.codes) * self.a["scale"][rows, None].astype(np.float64)
        if len(rows) >= self.k:
            self.floor = -np.partition(-approx * self.scale, self.k - 1, axis=0)[self.k - 1]

    def _prune(self, q: np.ndarray, n: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raise the floor from the candidates (distinct rows per query) and drop those now out."""
        np.maximum(self.floor, self._kth_largest(q, s * self.scale[q]), out=self.floor)
        keep = s >= self._limits()[q]
        return q[keep], n[keep], s[keep]

    def _exact(self, q: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of the remaining pairs from the source; the k best of each query, ties by row."""
        source_rows = self.index.rows[n]
        score = np.empty(len(q))
        query_norms = _norms(self.values)
        for at in range(0, len(q), _PAIRS):
            unique, where = np.unique(source_rows[at:at + _PAIRS], return_inverse=True)
            rows = np.asarray(self.index.states[unique], dtype=np.float32).astype(np.float64)
            dots = (rows[where] * self.values[q[at:at + _PAIRS]]).sum(axis=1)
            score[at:at + _PAIRS] = dots / (query_norms[q[at:at + _PAIRS]] * _norms(rows)[where])
        order = np.lexsort((source_rows, -score, q))
        counts = np.bincount(q, minlength=len(self.values))
        take = order[((np.cumsum(counts) - counts)[:, None] + np.arange(self.k)).ravel()]
        shape = (len(self.values), self.k)
        return source_rows[take].reshape(shape), score[take].reshape(shape)
