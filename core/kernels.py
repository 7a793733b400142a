"""Compiled loops (numba) for what vectorised numpy can only do through large temporaries.

Each kernel is declared with its argument types, so it is compiled (the first time, a few seconds)
or loaded from the cache next to this file (or in NUMBA_CACHE_DIR) when this module is imported, not
inside the first call. Callers pass exactly these types (C-contiguous arrays where marked `::1`,
np.float32 scalars).
"""
from __future__ import annotations

import numpy as np
from numba import boolean, float32, float64, int32, int64, njit, uint8

_TALLY_ON = (float32[:, :, :, :], float32, float32[::1], int64, int64, int64[:, ::1], float32[:, :, ::1],
             int64[:, ::1], int64[:, ::1], float32[:, :, ::1], int64[:, ::1], int64, boolean, int32[:, :, ::1], int64,
             boolean[:, ::1], int64)


@njit(_TALLY_ON, cache=True, nogil=True)
def tally_on(acts, sign, limit, first, last, rows, row_weights, row_cells, cols, col_weights, col_cells, width,
             direct, slots, sides, valid, concepts):
    """Count the on positions of items `first..last` of a batch by the labels under them.

    acts `[n, units, h, w]` float32 (any strides); a unit is on where `sign * value > limit[unit]` (sign -1
    scores -h). `direct`: the positions are the cells (h * w of them); otherwise each map is upsampled
    bilinearly to rows x `width` pixels, cut into bands (`rows`, `cols`: `[4, bands]` low cell, high cell,
    first pixel, pixels; `*_weights`: `[2, bands, longest]` low and high cell weight per pixel;
    `*_cells`: `[2, cells]` the first and last band each cell is a corner of). A tile (a row band by a
    column band) never exceeds its largest corner, so only the tiles of on cells are looked at. Pixel
    values follow torch's upsample_bilinear2d arithmetic (in float32: columns first, then rows).
    slots `[maps, n, positions]` int32 label values (0 none, v concept v - 1); side 1 (when `sides` is 2)
    reads the next item's labels (the shuffled baseline); valid `[n, positions]`, or `[0, 0]` for all.
    Returns, per (item, unit) pair with on positions: pair id `item * units + unit`, its on positions,
    and `[sides, pairs, concepts + 1]` the labels under them.
    """
    n, units, h, w = acts.shape
    maps, bands = slots.shape[0], cols.shape[1]
    check = valid.shape[0] > 0
    pairs = np.empty((last - first) * units, np.int64)
    counts = np.empty((last - first) * units, np.int64)
    hits = np.empty((sides, (last - first) * units, concepts + 1), np.int32)
    on_cells = np.empty(h * w, np.int64)
    marked = np.zeros(rows.shape[1] * bands, np.bool_)
    tiles = np.empty(rows.shape[1] * bands, np.int64)
    upper = np.empty(col_weights.shape[2], np.float32)
    lower = np.empty(col_weights.shape[2], np.float32)
    k = 0
    for i in range(first, last):
        following = (i + 1) % n
        for u in range(units):
            t, a = limit[u], acts[i, u]
            cells = 0
            for y in range(h):
                for x in range(w):
                    on_cells[cells] = y * w + x
                    cells += sign * a[y, x] > t
            if cells == 0:
                continue
            hits[:, k, :] = 0
            count = 0
            if direct:
                for c in range(cells):
                    p = on_cells[c]
                    if not check or valid[i, p]:
                        count += 1
                        for s in range(sides):
                            for m in range(maps):
                                hits[s, k, slots[m, i if s == 0 else following, p]] += 1
            else:
                found = 0
                for c in range(cells):
                    y, x = divmod(on_cells[c], w)
                    for rb in range(row_cells[0, y], row_cells[1, y] + 1):
                        for cb in range(col_cells[0, x], col_cells[1, x] + 1):
                            if not marked[rb * bands + cb]:
                                marked[rb * bands + cb] = True
                                tiles[found] = rb * bands + cb
                                found += 1
                for tile in range(found):
                    rb, cb = divmod(tiles[tile], bands)
                    marked[tiles[tile]] = False
                    y0, y1, x0, x1 = rows[0, rb], rows[1, rb], cols[0, cb], cols[1, cb]
                    left, span = cols[2, cb], cols[3, cb]
                    v00, v01 = sign * a[y0, x0], sign * a[y0, x1]
                    v10, v11 = sign * a[y1, x0], sign * a[y1, x1]
                    for dx in range(span):
                        low, high = col_weights[0, cb, dx], col_weights[1, cb, dx]
                        upper[dx], lower[dx] = v00 * low + v01 * high, v10 * low + v11 * high
                    for dy in range(rows[3, rb]):
                        top, bottom = row_weights[0, rb, dy], row_weights[1, rb, dy]
                        row = (rows[2, rb] + dy) * width + left
                        for dx in range(span):
                            if upper[dx] * top + lower[dx] * bottom > t:
                                p = row + dx
                                if check and not valid[i, p]:
                                    continue
                                count += 1
                                for s in range(sides):
                                    for m in range(maps):
                                        hits[s, k, slots[m, i if s == 0 else following, p]] += 1
            if count:
                pairs[k], counts[k] = i * units + u, count
                k += 1
    return pairs[:k], counts[:k], hits[:, :k]


@njit((float32[:, ::1], float32, int64), cache=True, nogil=True)
def top_values(values, sign, count):
    """The `count` largest of `sign * values[u]` for each row `u` of `values` `[units, n]` float32, in
    descending order `[units, count]` (sign -1: the smallest values, negated).

    Ranks values above a bound read off a sample of each row, so a tail costs one pass over the row;
    where the sample misjudges (a sample of repeats, say), the whole row is sorted.
    """
    units, n = values.shape
    out = np.empty((units, count), values.dtype)
    stride = max(1, n // 1024)
    pick = min(-(-count // stride) * 2 + 8, -(-n // stride))      # about 2x count values pass the bound
    above = np.empty(n + 1, values.dtype)
    for u in range(units):
        row = values[u]
        sample = np.sort(sign * row[::stride])
        bound = sample[len(sample) - pick]
        kept = 0
        for x in range(n):                                     # branch-free: store always, keep if above
            above[kept] = sign * row[x]
            kept += above[kept] >= bound
        ranked = np.sort(above[:kept]) if kept >= count else np.sort(sign * row)
        out[u] = ranked[::-1][:count]
    return out


@njit((float32[:, ::1], float32[::1], float64[::1], float32[::1], uint8[:, :]), cache=True, nogil=True)
def encode_codes(values, scale32, scale, base32, out):
    """uint8 codes clip(floor(value * scale) - base, 0, 255) of float32 rows `values` `[R, U]` into `out`
    `[U, R]`, exact: the product is taken in float32 and, where that has no fraction (it may have been
    rounded to an integer), or is NaN or infinite, again in float64; NaN gets code 0."""
    rows, units = values.shape
    codes = np.empty(units, np.float32)
    for r in range(rows):
        row = values[r]
        redo = False
        for u in range(units):                         # branch-free, so it vectorises
            scaled = row[u] * scale32[u]
            floor = np.floor(scaled)
            redo |= not floor < scaled
            codes[u] = min(max(floor - base32[u], np.float32(0)), np.float32(255))
        if redo:
            for u in range(units):
                scaled = row[u] * scale32[u]
                if not np.floor(scaled) < scaled and row[u] != 0:
                    exact = np.floor(np.float64(row[u]) * scale[u])
                    floor = np.float32(-np.inf if np.isnan(exact) else exact)
                    codes[u] = min(max(floor - base32[u], np.float32(0)), np.float32(255))
        for u in range(units):
            out[u, r] = np.uint8(codes[u])
