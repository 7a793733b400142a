"""Benchmark of `core.neighbours`: exact top-20 cosine neighbours of 30 states among millions, index vs
a float32 brute-force matrix-product scan.

States look like RNN states: tanh of a correlated Gaussian, clustered. A latent vector with a power-law
spectrum (variance of axis i proportional to 1/i, unit std 1.2 on average) is the sum of one of 2000
cluster centres (70% of the variance; the cluster follows the sentence: it changes with probability
0.15 per token) and an AR(1) drift along the tokens (coefficient 0.9, 30%); states = tanh(W latent + b)
with W a random rotation (about 14% of values beyond +-0.95). They are written to a contiguous float32 HDF5
dataset under benchmarks/out/ (reused when complete). Queries are 30 states of held-out sentences
(the same clusters, another seed).

Each method runs in a fresh subprocess and reports its peak memory: VmHWM (peak resident set, which
counts touched pages of memory-mapped files too) minus the resident set just before the method
starts (interpreter, numpy, torch and h5py loaded). Brute force: the normalised float32 matrix in RAM
(read from the file in blocks), then per query batch a blocked scan (torch.mm of 1M rows at a time,
top-k per block, merged). Index: built and saved by one subprocess, opened (memory-mapped) and queried
in another. Results are checked against an exact float64 scan (streamed): indices must be identical.
Run: `python benchmarks/neighbours.py [--quick] [--sizes 1000000 5000000] [--threads 2]`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from scipy.signal import lfilter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.neighbours import NeighbourIndex  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
BLOCK = 1 << 16                  # rows generated / read per step
SCAN = 1 << 20                   # rows per brute-force matrix product
CLUSTERS, SWITCH, DRIFT, GAIN = 2000, 0.15, 0.9, 1.2
QUERIES, K, REPEATS = 30, 20, 5


# -- synthetic states -----------------------------------------------------------------------------------

class StateModel:
    """The fixed part of the generator (clusters, rotation, bias): shared by stored and held-out states."""

    def __init__(self, dims: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        scale = np.sqrt(1.0 / np.arange(1, dims + 1))                          # latent std, power law
        self.scale = (scale * GAIN / np.sqrt((scale ** 2).sum() / dims)).astype(np.float32)  # unit std GAIN
        self.centres = (rng.standard_normal((CLUSTERS, dims)) * self.scale * np.sqrt(0.7)).astype(np.float32)
        self.rotation = np.linalg.qr(rng.standard_normal((dims, dims)))[0].astype(np.float32)
        self.bias = rng.normal(0.0, 0.3, dims).astype(np.float32)

    def sample(self, count: int, seed: int):
        """Blocks of [rows, dims] float32 states of consecutive tokens."""
        rng = np.random.default_rng(seed)
        dims = len(self.scale)
        cluster, carry = rng.integers(CLUSTERS), np.zeros((dims, 1), np.float32)
        gain = np.float32(np.sqrt(1 - DRIFT ** 2))
        for start in range(0, count, BLOCK):
            rows = min(BLOCK, count - start)
            switch = rng.random(rows) < SWITCH
            last = np.maximum.accumulate(np.where(switch, np.arange(rows), -1))     # latest switch so far
            ids = np.where(last >= 0, rng.integers(0, CLUSTERS, rows)[np.maximum(last, 0)], cluster)
            cluster = ids[-1]
            noise = rng.standard_normal((dims, rows), dtype=np.float32) * gain
            drift, carry = lfilter(np.float32([1.0]), np.float32([1.0, -DRIFT]), noise, axis=1, zi=carry * DRIFT)
            latent = self.centres[ids] + drift.T * (self.scale * np.float32(np.sqrt(0.3)))
            yield np.tanh(latent @ self.rotation.T + self.bias)


def write_states(path: Path, count: int, dims: int) -> Path:
    """The stored states, [count, dims] float32 "states", contiguous; written once to a temporary name."""
    if path.exists():
        with h5py.File(path, "r") as file:
            if file["states"].shape == (count, dims) and file.attrs.get("complete", False):
                return path
    partial = path.with_suffix(".partial")
    with h5py.File(partial, "w") as file:
        states = file.create_dataset("states", shape=(count, dims), dtype=np.float32)
        start = 0
        for block in StateModel(dims).sample(count, seed=1):
            states[start:start + len(block)] = block
            start += len(block)
        file.attrs["complete"] = True
    os.replace(partial, path)
    return path


def held_out_queries(dims: int) -> np.ndarray:
    """30 states from held-out sentences: every 97th token of a fresh stretch."""
    stretch = np.concatenate(list(StateModel(dims).sample(QUERIES * 97, seed=2)))
    return np.ascontiguousarray(stretch[::97][:QUERIES])


# -- the methods, each in its own subprocess ------------------------------------------------------------

def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as file:
        for line in file:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def run_brute(path: str, queries: np.ndarray) -> dict:
    """float32 brute force: normalised matrix in RAM, blocked torch.mm scan with top-k per block."""
    base = _rss_kib("VmRSS")
    with h5py.File(path, "r") as file:
        data = file["states"]
        matrix = np.empty(data.shape, np.float32)
        for start in range(0, data.shape[0], BLOCK):
            data.read_direct(matrix, np.s_[start:start + BLOCK], np.s_[start:start + BLOCK])
    states = torch.from_numpy(matrix)
    states /= torch.linalg.vector_norm(states, dim=1, keepdim=True).clamp_min(1e-30)

    def scan() -> tuple[torch.Tensor, torch.Tensor]:
        q = torch.from_numpy(queries)
        q = q / torch.linalg.vector_norm(q, dim=1, keepdim=True)
        best_s, best_i = [], []
        for start in range(0, states.shape[0], SCAN):
            s, i = torch.topk(q @ states[start:start + SCAN].T, K, dim=1)
            best_s.append(s), best_i.append(i + start)
        s, at = torch.topk(torch.cat(best_s, 1), K, dim=1)
        return torch.gather(torch.cat(best_i, 1), 1, at), s

    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        rows, _ = scan()
        times.append(time.perf_counter() - started)
    return {"times": times, "peak_mib": (_rss_kib("VmHWM") - base) / 1024, "rows": rows.numpy().tolist()}


def run_build(path: str, cache: str) -> dict:
    started = time.perf_counter()
    with h5py.File(path, "r") as file:
        index = NeighbourIndex.build(file["states"])
        index.save(cache)
    return {"build_s": time.perf_counter() - started, "file_mib": os.path.getsize(cache) / 2**20}


def run_index(path: str, cache: str, queries: np.ndarray) -> dict:
    """Open the saved index (memory-mapped) and query it."""
    base = _rss_kib("VmRSS")
    with h5py.File(path, "r") as file:
        index = NeighbourIndex.open(cache, file["states"])
        times = []
        for _ in range(REPEATS):
            started = time.perf_counter()
            rows, sims = index.query(queries, K)
            times.append(time.perf_counter() - started)
    return {"times": times, "peak_mib": (_rss_kib("VmHWM") - base) / 1024, "rows": rows.tolist(),
            "sims": sims.tolist()}


def exact_top(path: str, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact reference: float64 cosines over a streamed scan, k best with ties by row."""
    q = queries.astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    found: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in q]
    with h5py.File(path, "r") as file:
        data = file["states"]
        for start in range(0, data.shape[0], BLOCK):
            block = data[start:start + BLOCK].astype(np.float64)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            sims = q @ block.T
            kth = -np.partition(-sims, K - 1, axis=1)[:, K - 1]
            for i, (row, limit) in enumerate(zip(sims, kth)):
                at = np.flatnonzero(row >= limit)                          # the block's k best, with ties
                found[i].append((at + start, row[at]))
    rows, sims = [], []
    for parts in found:
        at, s = (np.concatenate(x) for x in zip(*parts))
        order = np.lexsort((at, -s))[:K]
        rows.append(at[order]), sims.append(s[order])
    return np.array(rows), np.array(sims)


def subprocess_run(args: list[str], threads: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--threads", str(threads), *args],
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(args[:2])} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 100k states x 64")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--dims", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--run", choices=["brute", "build", "index"], help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--queries", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.run:
        queries = np.load(args.queries) if args.queries else None
        result = (run_brute(args.path, queries) if args.run == "brute" else run_build(args.path, args.cache)
                  if args.run == "build" else run_index(args.path, args.cache, queries))
        print(json.dumps(result))
        return
    sizes, dims = ([100_000], 64) if args.quick else (args.sizes, args.dims)
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        query_file = Path(tmp) / "queries.npy"
        np.save(query_file, held_out_queries(dims))
        queries = np.load(query_file)
        for count in sizes:
            started = time.perf_counter()
            path = str(write_states(OUT / f"neighbour_states_{count}x{dims}.h5", count, dims))
            print(f"{count:,} states x {dims} (float32 {count * dims * 4 / 2**30:.2f} GiB), "
                  f"{QUERIES} queries, top-{K}; data ready in {time.perf_counter() - started:.0f} s", flush=True)
            cache = str(Path(tmp) / f"index_{count}")
            common = ["--path", path, "--queries", str(query_file)]
            build = subprocess_run(["--run", "build", "--path", path, "--cache", cache], args.threads)
            brute = subprocess_run(["--run", "brute", *common], args.threads)
            index = subprocess_run(["--run", "index", "--cache", cache, *common], args.threads)
            exact_rows, exact_sims = exact_top(path, queries)
            same = np.array_equal(np.array(index["rows"]), exact_rows)
            error = float(np.abs(np.array(index["sims"]) - exact_sims).max())
            brute_same = float(np.mean(np.array(brute["rows"]) == exact_rows))
            bt, it = np.median(brute["times"]), np.median(index["times"])
            print(f"  index build {build['build_s']:.1f} s, file {build['file_mib']:.0f} MiB")
            for name, result in (("brute force float32", brute), ("index", index)):
                times = ", ".join(f"{t * 1e3:.0f}" for t in result["times"])
                print(f"  {name + ':':21}median {np.median(result['times']) * 1e3:.0f} ms (of {REPEATS}: {times}), "
                      f"peak memory +{result['peak_mib']:.0f} MiB")
            print(f"  index/brute: time {it / bt:.2f}, memory {index['peak_mib'] / brute['peak_mib']:.2f}; "
                  f"index identical to exact float64 top-{K}: {same} (max |sim diff| {error:.1e}); "
                  f"float32 brute force agrees on {100 * brute_same:.1f}% of positions", flush=True)


if __name__ == "__main__":
    main()
