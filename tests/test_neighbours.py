"""core.neighbours: exact cosine neighbours (equal to a plain scan, ties by row), the 2-D map, cache files."""
from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.decomposition import PCA

from core import neighbours
from core.neighbours import NeighbourIndex, StaleIndexError, source_identity


def scan(states: np.ndarray, queries: np.ndarray, k: int, valid: np.ndarray | None = None):
    """The plain reference: float64 cosine against every non-zero valid row, best first, ties by row."""
    x, q = states.astype(np.float64), queries.astype(np.float64)
    x_norm, q_norm = np.sqrt((x * x).sum(1)), np.sqrt((q * q).sum(1))
    rows = np.flatnonzero((x_norm > 0) & (True if valid is None else valid))
    sims = (q[:, None, :] * x[None, rows, :]).sum(-1) / (q_norm[:, None] * x_norm[None, rows])
    order = np.array([np.lexsort((rows, -s))[:k] for s in sims])
    return rows[order], np.take_along_axis(sims, order, 1)


def assert_same(index: NeighbourIndex, states, queries, k, valid=None):
    rows, sims = index.query(queries, k)
    ref_rows, ref_sims = scan(np.asarray(states), queries, k, valid)
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_allclose(sims, ref_sims, rtol=0, atol=1e-12)
    assert rows.dtype == np.int64 and sims.dtype == np.float64


def rnn_like(n: int, dims: int, seed: int = 0, clusters: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.2, (clusters, dims))
    return np.tanh(centres[rng.integers(0, clusters, n)] + rng.normal(0, 0.4, (n, dims))).astype(np.float32)


def tricky(n: int = 3000, dims: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """States with exact duplicates, duplicates scaled by powers of two (equal cosines, bit for bit),
    near-ties far below the int8 error (1e-4 perturbations of the first query) and zero rows."""
    rng = np.random.default_rng(seed)
    states = rnn_like(n, dims, seed)
    queries = rnn_like(6, dims, seed + 1)
    states[100:140] = queries[0] + rng.normal(0, 1e-4, (40, dims)).astype(np.float32)
    states[200] = states[201] = states[202] = states[105]
    states[203], states[204] = 4 * states[105], 0.5 * states[105]
    states[300:320] = states[7]                       # 20 equal rows: more ties than k
    queries[1] = states[7]
    states[[5, 60, 61]] = 0.0
    return states, queries


# -- exactness -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 5, 20])
def test_query_equals_plain_scan_with_ties_duplicates_and_zero_rows(k):
    states, queries = tricky()
    index = NeighbourIndex.build(states)
    assert index.size == len(states) - 3               # the three zero rows are not indexed
    assert_same(index, states, queries, k)


def test_ties_are_broken_by_the_smaller_row():
    states, queries = tricky()
    rows, sims = NeighbourIndex.build(states).query(queries[1:2], 20)
    assert rows[0].tolist() == [7] + list(range(300, 319))      # 21 equal rows, the smallest 20
    assert np.all(sims[0] == sims[0, 0])
    rows, sims = NeighbourIndex.build(states).query(states[105:106], 6)
    assert set(rows[0, :6].tolist()) == {105, 200, 201, 202, 203, 204}
    assert rows[0, :6].tolist() == sorted(rows[0, :6].tolist()) and np.all(sims[0, :6] == sims[0, 0])


def test_exact_through_every_stage(monkeypatch):
    """Small scan blocks, probe and candidate budget: the threshold is raised while scanning and
    candidates are pruned many times; near-parallel rows keep the candidate set large."""
    monkeypatch.setattr(neighbours, "_SCAN_ROWS", 256)
    monkeypatch.setattr(neighbours, "_PROBE_ROWS", 16)
    monkeypatch.setattr(neighbours, "_PENDING", 64)
    monkeypatch.setattr(neighbours, "_PAIRS", 100)
    rng = np.random.default_rng(3)
    direction = rng.normal(size=32)
    states = (direction + rng.normal(0, 0.05, (4000, 32))).astype(np.float32)   # all within ~0.999
    queries = np.vstack([direction + rng.normal(0, 0.05, (5, 32)), rng.normal(size=(3, 32))]).astype(np.float32)
    assert_same(NeighbourIndex.build(states), states, queries, 25)


class CountingRows:
    """A states matrix that counts the rows read from it."""

    def __init__(self, array: np.ndarray):
        self.array, self.shape, self.dtype, self.read = array, array.shape, array.dtype, 0

    def __getitem__(self, key):
        rows = self.array[key]
        self.read += len(rows)
        return rows


def test_a_query_rereads_only_a_few_source_rows():
    states = CountingRows(rnn_like(20_000, 32, seed=9))
    index = NeighbourIndex.build(states)
    states.read = 0
    rows, _ = index.query(rnn_like(10, 32, seed=10), 20)
    assert 10 * 20 <= states.read < 0.03 * len(states.array)


def test_without_int_mm_the_float_path_gives_the_same_result(monkeypatch):
    states, queries = tricky(seed=4)
    expected = NeighbourIndex.build(states).query(queries, 10)
    monkeypatch.setattr(neighbours, "_int_mm_exact", lambda dims: False)
    got = NeighbourIndex.build(states).query(queries, 10)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


@pytest.mark.parametrize("dims", [1, 2, 7, 40, 256])
def test_integer_products_are_exact_at_the_extremes(dims):
    codes = np.random.default_rng(dims).integers(-127, 128, (70, dims)).astype(np.int8)
    codes[0], codes[1], codes[2, ::2] = 127, -127, -127
    queries = torch.from_numpy(codes[[0, 1, 2, 5]].copy())
    expected = codes.astype(np.int64) @ codes[[0, 1, 2, 5]].astype(np.int64).T
    np.testing.assert_array_equal(neighbours._products(codes, queries), expected)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), dims=st.integers(1, 9), k=st.integers(1, 70), seed=st.integers(0, 2 ** 16),
       repeat=st.booleans())
def test_random_small_indexes_equal_the_plain_scan(n, dims, k, seed, repeat):
    rng = np.random.default_rng(seed)
    states = rng.integers(-2, 3, (n, dims)).astype(np.float32)        # small integers: many exact ties
    if repeat:
        states = np.repeat(states, 2, axis=0)
    queries = rng.normal(size=(3, dims)).astype(np.float32)
    if not states.any(axis=1).any():
        with pytest.raises(ValueError, match="states: no valid non-zero row"):
            NeighbourIndex.build(states)
        return
    assert_same(NeighbourIndex.build(states), states, queries, k)


def test_k_larger_than_the_index_returns_all_of_it():
    states, queries = tricky(n=400)
    index = NeighbourIndex.build(states)
    rows, sims = index.query(queries, 10_000)
    assert rows.shape == sims.shape == (len(queries), index.size)
    assert all(sorted(r) == index.rows.tolist() for r in rows.tolist())
    assert_same(index, states, queries, 10_000)


def test_valid_mask_leaves_padding_out_and_results_are_source_rows():
    states, queries = tricky(n=800)
    valid = np.random.default_rng(5).random(len(states)) < 0.6
    index = NeighbourIndex.build(states, valid=valid)
    assert index.size == int((valid & states.any(axis=1)).sum())
    assert valid[index.rows].all() and np.all(np.diff(index.rows) > 0)
    assert_same(index, states, queries, 15, valid)


def test_h5py_sources_contiguous_and_chunked_give_the_same_results(tmp_path):
    states, queries = tricky(n=1000)
    with h5py.File(tmp_path / "s.h5", "w") as file:
        file.create_dataset("plain", data=states)
        file.create_dataset("chunked", data=states, chunks=(64, states.shape[1]), compression="gzip")
    with h5py.File(tmp_path / "s.h5", "r") as file:
        for name in ("plain", "chunked"):
            assert_same(NeighbourIndex.build(file[name]), states, queries, 12)


def test_torch_queries_are_accepted():
    states, queries = tricky(n=500)
    index = NeighbourIndex.build(states)
    np.testing.assert_array_equal(index.query(torch.from_numpy(queries), 4)[0], index.query(queries, 4)[0])


def test_build_reports_progress():
    class Recorder:
        def __init__(self):
            self.stages, self.done = [], {}

        def start(self, stage, total=None):
            self.stages.append((stage, total))
            self.done[stage] = 0

        def update(self, n=1):
            self.done[self.stages[-1][0]] += n

    recorder = Recorder()
    NeighbourIndex.build(rnn_like(70_000, 4), progress=recorder)
    assert [stage for stage, _ in recorder.stages] == ["neighbour index: fit map", "neighbour index: encode"]
    assert all(recorder.done[stage] == total for stage, total in recorder.stages)
    assert recorder.stages[1][1] == 70_000


# -- the map -------------------------------------------------------------------------------------------

def test_project_places_indexed_states_where_the_fit_put_them():
    states, _ = tricky(n=2000)
    index = NeighbourIndex.build(states)
    np.testing.assert_allclose(index.project(states[index.rows]), index.coordinates, atol=1e-6)


def test_the_map_is_the_pca_of_the_unit_states():
    states = rnn_like(1500, 16, seed=6)
    unit = states / np.linalg.norm(states, axis=1, keepdims=True)
    expected = PCA(n_components=2).fit_transform(unit.astype(np.float64))
    got = NeighbourIndex.build(states).coordinates
    signs = np.sign((got * expected).sum(0))                        # PCA axes are defined up to sign
    np.testing.assert_allclose(got, expected * signs, atol=1e-5)


def test_new_states_are_placed_without_refitting(tmp_path):
    states = rnn_like(1200, 8, seed=7)
    index = NeighbourIndex.build(states)
    before = np.array(index.coordinates)
    new = rnn_like(50, 8, seed=8)
    placed = index.project(new)
    assert placed.shape == (50, 2)
    np.testing.assert_array_equal(index.coordinates, before)
    np.testing.assert_array_equal(index.project(new), placed)
    index.save(tmp_path / "i.index")
    np.testing.assert_array_equal(NeighbourIndex.open(tmp_path / "i.index", states).project(new), placed)


# -- files ---------------------------------------------------------------------------------------------

def test_save_and_open_round_trip_without_leftovers(tmp_path):
    states, queries = tricky(n=700)
    built = NeighbourIndex.build(states)
    built.save(tmp_path / "a.index")
    assert os.listdir(tmp_path) == ["a.index"]
    opened = NeighbourIndex.open(tmp_path / "a.index", states)
    for got, expected in zip(opened.query(queries, 9), built.query(queries, 9)):
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(opened.coordinates, built.coordinates)


def test_stale_h5py_source_is_detected_and_cached_rebuilds(tmp_path):
    states, queries = tricky(n=600)
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as file:
        file.create_dataset("states", data=states)
    with h5py.File(path, "r") as file:
        first = NeighbourIndex.cached(file["states"], tmp_path / "cache")
        assert NeighbourIndex.cached(file["states"], tmp_path / "cache").path == first.path     # reused
    changed = states.copy()
    changed[:50] = -changed[:50]
    with h5py.File(path, "r+") as file:
        file["states"][...] = changed
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10 ** 9))
    with h5py.File(path, "r") as file:
        with pytest.raises(StaleIndexError, match="mtime_ns"):
            NeighbourIndex.open(first.path, file["states"])
        rebuilt = NeighbourIndex.cached(file["states"], tmp_path / "cache")
        assert rebuilt.path != first.path
        assert_same(rebuilt, changed, queries, 8)


def test_stale_array_source_mask_and_damaged_files_are_refused(tmp_path):
    states, _ = tricky(n=400)
    path = NeighbourIndex.build(states).save(tmp_path / "a.index")
    changed = states.copy()
    changed[3, 0] += 1
    with pytest.raises(StaleIndexError, match="sha256"):
        NeighbourIndex.open(path, changed)
    with pytest.raises(StaleIndexError, match="valid"):
        NeighbourIndex.open(path, states, valid=np.ones(len(states), bool))
    with pytest.raises(StaleIndexError, match="shape"):
        NeighbourIndex.open(path, states[:-1])
    truncated = tmp_path / "t.index"
    truncated.write_bytes(path.read_bytes()[:-5000])
    with pytest.raises(StaleIndexError, match="truncated"):
        NeighbourIndex.open(truncated, states)
    damaged = bytearray(path.read_bytes())
    damaged[20:40] = b"!" * 20
    (tmp_path / "d.index").write_bytes(damaged)
    with pytest.raises(StaleIndexError, match="damaged header"):
        NeighbourIndex.open(tmp_path / "d.index", states)
    (tmp_path / "x.index").write_bytes(b"not an index at all")
    with pytest.raises(StaleIndexError, match="not a neighbour index"):
        NeighbourIndex.open(tmp_path / "x.index", states)


def test_identity_of_h5py_names_file_and_dataset(tmp_path):
    with h5py.File(tmp_path / "s.h5", "w") as file:
        file.create_dataset("enc/states", data=np.ones((4, 3), np.float32))
    with h5py.File(tmp_path / "s.h5", "r") as file:
        identity = source_identity(file["enc/states"])
    assert identity["file"] == os.path.realpath(tmp_path / "s.h5") and identity["dataset"] == "/enc/states"
    assert identity["shape"] == [4, 3] and {"size", "mtime_ns"} <= set(identity)


# -- bad arguments ---------------------------------------------------------------------------------------

def test_bad_arguments_raise_value_errors_naming_the_parameter():
    states, queries = tricky(n=400)
    index = NeighbourIndex.build(states)
    for k in (0, -3, 1.5, True, "5", None):
        with pytest.raises(ValueError, match="^k must"):
            index.query(queries, k)
    for bad in (queries[0], queries[:, :5], np.array([["a"] * states.shape[1]])):
        with pytest.raises(ValueError, match="^states must"):
            index.query(bad, 3)
    nan = queries.copy()
    nan[2, 1] = np.nan
    with pytest.raises(ValueError, match="states: row 2 has a non-finite"):
        index.query(nan, 3)
    zero = queries.copy()
    zero[4] = 0
    with pytest.raises(ValueError, match="states: row 4 is a zero vector"):
        index.query(zero, 3)
    with pytest.raises(ValueError, match="states: row 1 is a zero vector"):
        index.project(zero[3:])
    with pytest.raises(ValueError, match="^valid must"):
        NeighbourIndex.build(states, valid=np.ones(len(states) - 1, bool))
    with pytest.raises(ValueError, match="^valid must"):
        NeighbourIndex.build(states, valid=np.ones(len(states), np.int64))
    with pytest.raises(ValueError, match="^states must"):
        NeighbourIndex.build(np.ones((5, 3), np.int32))
    with pytest.raises(ValueError, match="^states must"):
        NeighbourIndex.build(np.ones(5, np.float32))
    with pytest.raises(ValueError, match="states: no valid non-zero row"):
        NeighbourIndex.build(states, valid=np.zeros(len(states), bool))
    broken = states.copy()
    broken[17, 2] = np.inf
    with pytest.raises(ValueError, match="states: row 17 has a non-finite"):
        NeighbourIndex.build(broken)
    valid = np.ones(len(states), bool)
    valid[17] = False                                   # garbage in padding is ignored
    assert NeighbourIndex.build(broken, valid=valid).size == index.size - 1
