"""Context windows over HTTP: 200 tokens x all units of a 650-unit layer, from a real waitress server.

The states are written as `seqvis extract` writes them (float32, chunked 256 rows x 32 units) into a token
project of `--tokens` tokens. Each request asks for a random window; the page's encoding (base64 float32)
is measured against the plain JSON lists in the same run.

    python benchmarks/context.py [--tokens 1000000] [--requests 50] [--quick]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import h5py
import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from seqvis.extract import ROW_CHUNK, UNIT_CHUNK  # noqa: E402
from seqvis.server import create_app  # noqa: E402
from tests.conftest import LiveServer  # noqa: E402

UNITS, WINDOW = 650, 200


def write_project(folder: Path, tokens: int) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    with h5py.File(folder / "states.h5", "w") as f:
        states = f.create_dataset("h", (tokens, UNITS), "f4", chunks=(ROW_CHUNK, UNIT_CHUNK))
        for start in range(0, tokens, 65536):
            stop = min(tokens, start + 65536)
            states[start:stop] = rng.standard_normal((stop - start, UNITS), dtype=np.float32)
        f["tokens"] = rng.integers(0, 90, tokens).astype(np.int32)
        f["depth"] = rng.integers(0, 4, tokens).astype(np.int8)
    (folder / "vocab.dict").write_text("".join(f"{chr(33 + i)} {i}\n" for i in range(90)))
    description = {"seqvis": 1, "kind": "tokens", "name": "bench", "tokens": {"file": "states.h5", "path": "tokens"},
                   "vocab": "vocab.dict", "layers": [{"name": "h", "file": "states.h5", "path": "h"}],
                   "meta": {"depth": {"file": "states.h5", "path": "depth", "type": "discrete"}}}
    (folder / "seqvis.yml").write_text(yaml.safe_dump(description))


def timed_requests(url: str, tokens: int, encoding: str, n: int) -> tuple[list[float], int]:
    rng = np.random.default_rng(1)
    times, size = [], 0
    for start in rng.integers(0, tokens - WINDOW, n):
        began = time.perf_counter()
        with urllib.request.urlopen(f"{url}api/explorer/bench/context?layer=h&start={start}"
                                    f"&stop={start + WINDOW}&encoding={encoding}") as answer:
            size = len(answer.read())
        times.append(time.perf_counter() - began)
    return times, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    args = parser.parse_args()
    tokens, requests = (20_000, 5) if args.quick else (args.tokens, args.requests)
    with tempfile.TemporaryDirectory() as tmp:
        write_project(Path(tmp) / "bench", tokens)
        server = LiveServer(create_app({"DATA_DIR": tmp}))
        try:
            timed_requests(server.url, tokens, "float32", 2)  # opens the project and warms the server
            print(f"context of {WINDOW} tokens x {UNITS} units over HTTP (waitress), {tokens:,} tokens, "
                  f"{requests} random windows")
            for encoding in ("float32", "json"):
                times, size = timed_requests(server.url, tokens, encoding, requests)
                p95 = sorted(times)[int(0.95 * (len(times) - 1))]
                print(f"  encoding={encoding:8} median {1000 * statistics.median(times):6.1f} ms   "
                      f"p95 {1000 * p95:6.1f} ms   {size / 1e6:5.2f} MB per answer")
        finally:
            server.close()


if __name__ == "__main__":
    main()
