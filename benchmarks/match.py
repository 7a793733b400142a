"""Benchmark of `core.search`: LSTMVis-style match over millions of token states, index vs brute force.

Synthetic LSTM-like states (per-unit AR(1) series mixed with shared slow factors, scaled and offset so
that some units saturate under tanh and units switch on and off together in runs) are written once, in
row blocks, to a row-major float32 HDF5 dataset chunked by rows, under benchmarks/out/ (reused when
complete and of the right shape). Then, in one run:
(a) queries as a user makes them: brush a random range, select its units (10-60) at a threshold from
    0.30 to 0.60 (two decimals, as a slider gives; a few more at arbitrary float thresholds), match with
    the index and with the brute-force scan the LSTMVis way (`brute_force_match` on the HDF5 dataset:
    selected columns read in row blocks, binarised, counted, runs found level by level, candidates
    verified against their float rows); results must be identical;
(b) index build time against one sequential read of the states (through h5py, and of the raw file), read
    after a warming read and again after the build (the mean is compared), its peak heap memory, its size;
(c) query time at 1M, 5M and 20M tokens (64 units, so that 20M tokens fit the disk budget).
Files created besides the states are deleted at the end. Run: `python benchmarks/match.py [--quick]`.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import torch
from scipy.signal import lfilter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core import search  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
BLOCK = 1 << 16                 # rows generated per step
CHUNK_ROWS = 128                # HDF5 chunk: 128 rows x all units (row-major, 333 KB at 650 units)
FACTORS = 16                    # shared latent series that make units co-activate
AR_GROUPS = (0.8, 0.9, 0.95, 0.98)


def write_states(path: Path, tokens: int, units: int, *, seed: int = 0) -> Path:
    """A [tokens, units] float32 dataset "states"; reused when complete and of this shape, otherwise
    written block by block to a temporary name and renamed into place."""
    if path.exists():
        with h5py.File(path, "r") as file:
            if file["states"].shape == (tokens, units) and file.attrs.get("complete", False):
                return path
    rng = np.random.default_rng(seed)
    noise = torch.Generator().manual_seed(seed)
    groups = np.array_split(np.arange(units), len(AR_GROUPS))           # unit slices sharing an AR coefficient
    loadings = rng.standard_normal((FACTORS, units)).astype(np.float32)
    loadings /= np.linalg.norm(loadings, axis=0)
    shared_part = np.where(rng.random(units) < 0.5, rng.uniform(0.3, 0.8, units), 0.0).astype(np.float32)
    scale = rng.uniform(0.5, 2.0, units).astype(np.float32)
    offset = rng.uniform(-0.8, 0.5, units).astype(np.float32)
    carry = [np.zeros((len(g), 1), np.float32) for g in groups]
    factor_carry = np.zeros((FACTORS, 1), np.float32)
    partial = path.with_suffix(".partial")
    with h5py.File(partial, "w") as file:
        states = file.create_dataset("states", shape=(tokens, units), dtype=np.float32,
                                     chunks=(min(CHUNK_ROWS, tokens), units))
        for start in range(0, tokens, BLOCK):
            rows = min(BLOCK, tokens - start)
            series = torch.randn((units, rows), generator=noise).numpy()           # [units, rows]
            for i, (g, a) in enumerate(zip(groups, AR_GROUPS)):
                series[g], carry[i] = _ar1(series[g], a, carry[i])
            shared, factor_carry = _ar1(torch.randn((FACTORS, rows), generator=noise).numpy(), 0.99, factor_carry)
            series *= np.sqrt(1 - shared_part)[:, None]
            series += (loadings * np.sqrt(shared_part)).T @ shared
            states[start:start + rows] = (series * scale[:, None] + offset[:, None]).T
        file.attrs["complete"] = True
    os.replace(partial, path)
    return path


def _ar1(noise: np.ndarray, a: float, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit-variance AR(1) series along axis 1 of `noise`, continuing from the filter state `state`."""
    coefficient = np.float32(np.sqrt(1 - a * a))
    series, state = lfilter(np.float32([coefficient]), np.float32([1, -a]), noise, axis=1, zi=state)
    return series.astype(np.float32), state.astype(np.float32)


# -- measurements ---------------------------------------------------------------------------------------

def sequential_read(states: h5py.Dataset) -> tuple[float, float]:
    """Wall and CPU seconds of one pass over the states through h5py in 32 MB row blocks."""
    rows = (32 << 20) // (4 * states.shape[1])
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, states.shape[0], rows):
        states[start:start + rows]
    return time.perf_counter() - wall, time.process_time() - cpu


def file_read(path: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one pass over the states' file, read whole in 32 MB pieces into one buffer."""
    buffer = bytearray(32 << 20)
    wall, cpu = time.perf_counter(), time.process_time()
    with open(path, "rb", buffering=0) as file:
        while file.readinto(buffer):
            pass
    return time.perf_counter() - wall, time.process_time() - cpu


def reads(states: h5py.Dataset) -> tuple[tuple[float, float], tuple[float, float]]:
    """(h5py read, file read), each (wall, CPU seconds)."""
    return sequential_read(states), file_read(Path(states.file.filename))


def build_index(states: h5py.Dataset, path: Path) -> tuple[search.MatchIndex, float, float, int]:
    """The index, its build's wall and CPU seconds and peak heap bytes (numpy buffers included)."""
    tracemalloc.start()
    wall, cpu = time.perf_counter(), time.process_time()
    index = search.MatchIndex.build(states, path)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return index, wall, cpu, peak


def user_queries(states: h5py.Dataset, count: int, rng: np.random.Generator, *, units: tuple[int, int],
                 decimals: int | None = 2) -> list[tuple[np.ndarray, float, int]]:
    """(selected units, threshold, brush start): a random brush of 1-12 tokens and a threshold in
    [0.3, 0.6], kept when LSTMVis's selection (padding (1, 0)) gives between units[0] and units[1] units."""
    queries = []
    while len(queries) < count:
        start, length = int(rng.integers(1, states.shape[0] - 12)), int(rng.integers(1, 13))
        threshold = float(rng.uniform(0.3, 0.6))
        if decimals is not None:
            threshold = round(threshold, decimals)
        window = np.tanh(states[start - 1:start + length])
        selected = search.select_units(window, (1, 1 + length), (1, 0), threshold)
        if units[0] <= len(selected) <= units[1]:
            queries.append((selected, threshold, start))
    return queries


def timed(call, *args):
    wall = time.perf_counter()
    result = call(*args)
    return result, time.perf_counter() - wall


def compare(index: search.MatchIndex, states: h5py.Dataset, queries: list) -> list[tuple[int, float, float, float, float]]:
    """Per query: units, index seconds (first call, repeat), brute-force seconds, and the results asserted equal."""
    rows = []
    for units, threshold, start in queries:
        result, first = timed(index.match, units, threshold)
        again, repeat = timed(index.match, units, threshold)
        reference, brute = timed(search.brute_force_match, states, units, threshold)
        assert result == again == reference, f"index and brute force differ for {len(units)} units at {threshold}"
        best = result.candidates[0] if result.candidates else None
        print(f"  {len(units):3d} units  t={threshold:<10.6g} brush@{start:<8d} index {first * 1e3:7.1f} ms "
              f"(repeat {repeat * 1e3:7.1f} ms)  brute force {brute:6.2f} s  x{brute / repeat:6.0f}  "
              f"{result.total} candidates, best {best and (best.start, best.stop, best.selected_on, best.union)}",
              flush=True)
        rows.append((len(units), threshold, first, repeat, brute))
    return rows


def summarise(rows: list, label: str) -> None:
    first, repeat, brute = (statistics.median(row[i] for row in rows) for i in (2, 3, 4))
    speedups = [row[4] / row[3] for row in rows]
    print(f"{label}: median index {first * 1e3:.0f} ms first call, {repeat * 1e3:.0f} ms repeat; median brute force "
          f"{brute:.1f} s; speed-up median {statistics.median(speedups):.0f}x (min {min(speedups):.0f}x, max "
          f"{max(speedups):.0f}x; ratio of medians, first call: {brute / first:.0f}x)", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run (200k tokens, few queries)")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--build-only", action="store_true", help="measure only (b), the index build")
    args = parser.parse_args(argv)
    tokens, units = (200_000, 650) if args.quick else (5_000_000, 650)
    queries = 4 if args.quick else args.queries
    scales = (50_000, 200_000, 800_000) if args.quick else (1_000_000, 5_000_000, 20_000_000)
    rng = np.random.default_rng(args.seed)
    OUT.mkdir(parents=True, exist_ok=True)
    created: list[Path] = []
    try:
        path = write_states(OUT / f"states_{tokens}x{units}.h5", tokens, units)
        with h5py.File(path, "r") as file:
            states = file["states"]
            size = states.size * 4
            print(f"states {tokens:,} x {units} float32, {size / 1e9:.2f} GB, chunks {states.chunks}", flush=True)

            print("(b) index build", flush=True)
            reads(states)                                           # warm the page cache as the build finds it
            before = reads(states)
            created.append(OUT / f"states_{tokens}x{units}.match")
            index, build_wall, build_cpu, peak = build_index(states, created[-1])
            after = reads(states)
            print(f"  load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min); build {build_wall:.1f} s "
                  f"(CPU {build_cpu:.1f} s)")
            for k, name in enumerate(("h5py read", "file read")):
                read_wall, read_cpu = (before[k][0] + after[k][0]) / 2, (before[k][1] + after[k][1]) / 2
                print(f"  {name} {before[k][0]:.1f} s / {after[k][0]:.1f} s (before / after the build; CPU "
                      f"{read_cpu:.1f} s): build = {build_wall / read_wall:.2f}x the mean read "
                      f"({build_cpu / read_cpu:.2f}x in CPU time)")
            print(f"  peak heap during build {peak / 1e6:.0f} MB ({peak / size:.3%} of the states); index "
                  f"{created[-1].stat().st_size / 1e9:.2f} GB = {created[-1].stat().st_size / size:.3f}x the states",
                  flush=True)
            if args.build_only:
                return

            print(f"(a) {queries} user queries, slider thresholds (two decimals)", flush=True)
            summarise(compare(index, states, user_queries(states, queries, rng, units=(10, 60))), "(a)")
            extra = max(2, queries // 5)
            print(f"(a') {extra} user queries at arbitrary float thresholds", flush=True)
            summarise(compare(index, states, user_queries(states, extra, rng, units=(10, 60), decimals=None)), "(a')")
            del index

        print("(c) query time against sequence length, 64 units, 10 queries of 5-30 units (repeat calls)", flush=True)
        for n in scales:
            created.append(OUT / f"scale_{n}x64.h5")
            write_states(created[-1], n, 64, seed=2)
            with h5py.File(created[-1], "r") as file:
                states = file["states"]
                created.append(OUT / f"scale_{n}x64.match")
                index, build_wall, _, _ = build_index(states, created[-1])
                times = []
                for selected, threshold, _ in user_queries(states, 10, np.random.default_rng(3), units=(5, 30)):
                    index.match(selected, threshold)
                    times.append(timed(index.match, selected, threshold)[1])
                print(f"  {n:>11,} tokens: median {statistics.median(times) * 1e3:.0f} ms (min {min(times) * 1e3:.0f}, "
                      f"max {max(times) * 1e3:.0f}); build {build_wall:.1f} s", flush=True)
                del index
            for made in created[-2:]:
                made.unlink()
    finally:
        for made in created:
            made.unlink(missing_ok=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
