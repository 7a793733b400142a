"""core.stats: streaming moments, quantiles and top-k that merge across shards and round-trip through files."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from core import stats
from core.stats import Moments, Quantile, TopK, load, save


def batches(data: np.ndarray, size: int):
    for start in range(0, len(data), size):
        yield data[start:start + size]


def fed(stat, data: np.ndarray, size: int):
    for batch in batches(data, size):
        stat.update(batch)
    return stat


# ---------------------------------------------------------------- Moments

def test_moments_match_numpy_even_far_from_zero():
    rng = np.random.default_rng(0)
    data = rng.normal([1e6, 0.0, -3.0], [1.0, 2.0, 1e-3], size=(200_001, 3))
    m = fed(Moments(), data, 7_777)
    assert m.count == len(data)
    np.testing.assert_allclose(m.mean, data.mean(0), rtol=1e-12)
    np.testing.assert_allclose(m.variance(), data.var(0, ddof=1), rtol=1e-9)
    np.testing.assert_allclose(m.variance(unbiased=False), data.var(0), rtol=1e-9)
    np.testing.assert_allclose(m.std(), data.std(0, ddof=1), rtol=1e-9)


def test_moments_merge_equals_single_pass_and_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.exponential(size=(10_000, 4)).astype(np.float32)
    left, right, empty = fed(Moments(), data[:3_000], 1_000), fed(Moments(), data[3_000:], 999), Moments()
    empty.merge(left)
    empty.merge(right)
    whole = fed(Moments(), data, 4_096)
    np.testing.assert_allclose(empty.mean, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(empty.variance(), whole.variance(), rtol=1e-10)
    save(whole, tmp_path / "m.npz")
    again = load(tmp_path / "m.npz")
    assert isinstance(again, Moments) and again.count == 10_000
    np.testing.assert_array_equal(again.variance(), whole.variance())


def test_moments_single_row_and_no_data():
    m = Moments()
    with pytest.raises(ValueError, match="no data"):
        m.mean
    m.update(np.array([[1.0, 2.0]]))
    assert np.isnan(m.variance()).all()
    np.testing.assert_array_equal(m.variance(unbiased=False), [0.0, 0.0])


@pytest.mark.parametrize("stat", [Moments(), Quantile(), TopK(3)], ids=["moments", "quantile", "topk"])
def test_bad_batches_are_named(stat):
    with pytest.raises(ValueError, match=r"x must be 2-D \[n, units\], got shape \(5,\)"):
        stat.update(np.zeros(5))
    with pytest.raises(TypeError, match="x must hold floats"):
        stat.update(np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(TypeError, match="x must be a torch.Tensor or numpy.ndarray, got list"):
        stat.update([[1.0]])
    with pytest.raises(ValueError, match="x contains NaN"):
        stat.update(np.array([[1.0, np.nan]]))
    stat.update(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="x has 4 units, this statistic has 3"):
        stat.update(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="cannot merge a statistic of 5 units into one of 3 units"):
        other = type(stat)(3) if isinstance(stat, TopK) else type(stat)()
        other.update(np.zeros((1, 5), dtype=np.float32))
        stat.merge(other)
    with pytest.raises(TypeError, match="cannot merge"):
        stat.merge(Moments() if not isinstance(stat, Moments) else TopK(1))


# ---------------------------------------------------------------- Quantile, exact mode

def test_exact_quantiles_match_numpy_linear():
    rng = np.random.default_rng(2)
    data = np.column_stack([rng.standard_normal(1_001), rng.integers(0, 5, 1_001),
                            rng.exponential(size=1_001)]).astype(np.float32)
    q = fed(Quantile(), data, 100)
    assert q.exact
    levels = [0.0, 0.001, 0.25, 0.5, 0.731, 0.995, 1.0]
    np.testing.assert_allclose(q.quantiles(levels), np.quantile(data.astype(np.float64), levels, axis=0).T,
                               rtol=1e-12, atol=1e-12)
    assert q.quantiles(0.5).shape == (3,)
    np.testing.assert_allclose(q.quantiles(0.5), np.median(data, axis=0))


def test_exact_quantiles_of_many_chunks_a_few_units_at_a_time(monkeypatch):
    monkeypatch.setattr(stats, "_CHUNK_VALUES", 1_500)                # blocks of two units
    rng = np.random.default_rng(12)
    data = rng.standard_normal((700, 5)).astype(np.float32)
    data[:, 4] = np.round(data[:, 4])                                 # ties
    q = fed(Quantile(), data, 64)
    levels = [0.0, 0.002, 0.005, 0.3, 0.5, 0.995, 0.999, 1.0]
    np.testing.assert_array_equal(q.quantiles(levels), np.quantile(data.astype(np.float64), levels, axis=0).T)


def test_exact_tail_quantiles_of_long_rows_whose_sample_misleads():
    """Tails are ranked from the values above a bound read off a strided sample of each row; a row whose
    sample holds only its largest values (they recur at the stride) is ranked whole, with the same result."""
    rng = np.random.default_rng(5)
    n = 200_000
    data = rng.standard_normal((n, 3)).astype(np.float32)
    data[::n // 1024, 1] += 100                                       # exactly the sampled positions
    data[:, 2] = np.round(data[:, 2] * 2)                             # long runs of ties
    q = fed(Quantile(exact_limit=10 * n), data, 50_000)
    levels = [0.001, 0.005, 0.99, 0.995]
    np.testing.assert_array_equal(q.quantiles(levels), np.quantile(data.astype(np.float64), levels, axis=0).T)


def test_exact_merge_equals_single_pass():
    rng = np.random.default_rng(3)
    data = rng.standard_normal((5_000, 2)).astype(np.float32)
    left, right = fed(Quantile(), data[:1_234], 500), fed(Quantile(), data[1_234:], 500)
    left.merge(right)
    assert left.exact and left.count == 5_000
    levels = np.linspace(0, 1, 21)
    np.testing.assert_array_equal(left.quantiles(levels), fed(Quantile(), data, 5_000).quantiles(levels))


def test_quantile_rejects_bad_q_and_empty():
    q = Quantile()
    with pytest.raises(ValueError, match="no data"):
        q.quantiles(0.5)
    q.update(np.zeros((3, 1), dtype=np.float32))
    for bad in (1.5, -0.1, [[0.5]], float("nan")):
        with pytest.raises(ValueError, match="q must be"):
            q.quantiles(bad)
    with pytest.raises(ValueError, match="resolution must be an int >= 16"):
        Quantile(resolution=8)
    with pytest.raises(ValueError, match="exact_limit must be an int >= 0"):
        Quantile(exact_limit=-1)


# ---------------------------------------------------------------- Quantile, sketch mode

def sketched_weight(q: Quantile) -> int:
    return sum(level.shape[1] * 2**h for h, level in enumerate(q._levels))


def true_rank(column: np.ndarray, value: float) -> float:
    return float(np.mean(column < value))


def test_sketch_starts_past_the_exact_limit_and_keeps_every_value_counted():
    rng = np.random.default_rng(4)
    data = rng.standard_normal((60_000, 3)).astype(np.float32)
    q = Quantile(resolution=256, exact_limit=30_000)
    q.update(data[:10_000])
    assert q.exact
    fed(q, data[10_000:], 3_333)
    assert not q.exact and q.count == 60_000 == sketched_weight(q)
    assert q.stored_per_unit <= 256 * (math.log2(60_000 / 256) + 3)
    ends = q.quantiles([0.0, 1.0])                                  # the extremes are never compacted away
    np.testing.assert_array_equal(ends, np.stack([data.min(0), data.max(0)], 1))


def test_sketch_merge_keeps_accuracy_of_single_pass():
    rng = np.random.default_rng(5)
    data = np.column_stack([rng.standard_normal(300_000), rng.pareto(2.0, 300_000),
                            rng.integers(0, 50, 300_000)]).astype(np.float32)
    single = fed(Quantile(resolution=256, exact_limit=0), data, 1_000)
    left = fed(Quantile(resolution=256, exact_limit=0), data[:100_000], 1_000)
    right = fed(Quantile(resolution=256, exact_limit=0, seed=1), data[100_000:], 1_000)
    left.merge(right)
    assert left.count == 300_000 == sketched_weight(left)
    levels = [0.011, 0.105, 0.51, 0.89, 0.99]                      # away from the integer unit's steps
    for sketch in (single, left):
        estimates = sketch.quantiles(levels)
        for unit in range(2):                                       # continuous units: rank error
            ranks = [true_rank(data[:, unit], v) for v in estimates[unit]]
            np.testing.assert_allclose(ranks, levels, atol=2e-3)
        np.testing.assert_array_equal(estimates[2], np.quantile(data[:, 2], levels, method="lower"))


def test_sketch_state_round_trip_continues_identically(tmp_path):
    rng = np.random.default_rng(6)
    data = rng.standard_normal((50_000, 2)).astype(np.float32)
    original = fed(Quantile(resolution=64, exact_limit=0, seed=7), data[:20_000], 2_000)
    save(original, tmp_path / "q.npz")
    restored = load(tmp_path / "q.npz")
    assert isinstance(restored, Quantile) and not restored.exact
    levels = np.linspace(0, 1, 11)
    np.testing.assert_array_equal(restored.quantiles(levels), original.quantiles(levels))
    for stat in (original, restored):
        fed(stat, data[20_000:], 2_000)
    np.testing.assert_array_equal(restored.quantiles(levels), original.quantiles(levels))


def test_exact_state_round_trip():
    data = np.arange(12, dtype=np.float32).reshape(6, 2)
    restored = Quantile.from_state_dict(fed(Quantile(), data, 4).state_dict())
    assert restored.exact
    np.testing.assert_array_equal(restored.quantiles([0.5]), [[5.0], [6.0]])
    assert Quantile.from_state_dict(Quantile().state_dict()).count == 0
    with pytest.raises(ValueError, match="state is of kind 'TopK', expected 'Quantile'"):
        Quantile.from_state_dict(TopK(2).state_dict())


def assert_tail_within(column: np.ndarray, value: float, fraction: float, upper: bool, tolerance: float = 0.02):
    """`value` sits at a rank within `tolerance` (relative) of `fraction` from the chosen end of `column`.

    With ties at `value` the rank is an interval; it must overlap the allowed range. Without ties this is
    exactly "the fraction of values beyond `value` lies in [fraction * 0.98, fraction * 1.02]".
    """
    beyond = np.mean(column > value) if upper else np.mean(column < value)
    beyond_or_at = np.mean(column >= value) if upper else np.mean(column <= value)
    assert beyond <= fraction * (1 + tolerance) and beyond_or_at >= fraction * (1 - tolerance), \
        (value, beyond, beyond_or_at)


@pytest.mark.slow
def test_sketch_tails_on_ten_million_values_per_unit():
    n = 10_000_000
    rng = np.random.default_rng(8)
    data = np.empty((n, 4), dtype=np.float32)
    data[:, 0] = rng.standard_normal(n, dtype=np.float32)
    data[:, 1] = rng.standard_t(1.5, n)                              # heavy tails
    data[:, 2] = rng.lognormal(0.0, 1.0, n)                          # skewed
    data[:, 3] = np.round(np.maximum(rng.standard_normal(n), 0.0), 1)   # half zeros, then 0.1 steps
    single = fed(Quantile(), data, 1_000_000)                       # exact at first, then a sketch
    assert not single.exact
    left = fed(Quantile(exact_limit=0), data[:n // 2], 25_000)       # small batches, shards merged
    right = fed(Quantile(exact_limit=0, seed=1), data[n // 2:], 25_000)
    left.merge(right)
    assert left.count == n == sketched_weight(left)
    assert left.stored_per_unit <= 8192 * (math.log2(n / 8192) + 3)
    for sketch in (single, left):
        low, high = sketch.quantiles([0.005, 0.995]).T
        for unit in range(4):
            assert_tail_within(data[:, unit], low[unit], 0.005, upper=False)
            assert_tail_within(data[:, unit], high[unit], 0.005, upper=True)
        for unit in range(3):                                        # no ties: the plain statement
            assert 0.0049 <= np.mean(data[:, unit] > high[unit]) <= 0.0051
            assert 0.0049 <= np.mean(data[:, unit] < low[unit]) <= 0.0051
    assert left.quantiles(0.005)[3] == 0.0 and left.quantiles(0.995)[3] == np.float32(2.6)


# ---------------------------------------------------------------- TopK

def test_topk_matches_sorting_with_running_indices():
    rng = np.random.default_rng(9)
    data = rng.standard_normal((1_000, 3)).astype(np.float32)
    for largest in (True, False):
        top = fed(TopK(5, largest=largest), data, 64)
        order = np.argsort(-data if largest else data, axis=0)[:5].T
        np.testing.assert_array_equal(top.indices, order)
        np.testing.assert_array_equal(top.values, np.take_along_axis(data.T, order, 1))


def test_topk_merge_with_explicit_indices_equals_single_pass():
    rng = np.random.default_rng(10)
    data = rng.standard_normal((500, 4)).astype(np.float32)
    ids = rng.permutation(10_000)[:500]
    left, right = TopK(7), TopK(7)
    left.update(data[:200], index=ids[:200])
    right.update(torch.from_numpy(data[200:]), index=torch.from_numpy(ids[200:]))
    left.merge(right)
    whole = TopK(7)
    whole.update(data, index=ids)
    np.testing.assert_array_equal(left.values, whole.values)
    np.testing.assert_array_equal(left.indices, whole.indices)
    assert np.all(np.diff(whole.values, axis=1) <= 0)                # best first
    with pytest.raises(ValueError, match=r"cannot merge TopK\(k=3"):
        whole.merge(TopK(3))
    with pytest.raises(ValueError, match="index must be 2 integers"):
        whole.update(data[:2], index=[0.5, 1.5])


def test_topk_with_fewer_items_than_k_round_trips():
    top = TopK(10, largest=False)
    top.update(np.array([[3.0, 1.0], [2.0, 5.0], [4.0, 0.0]], dtype=np.float32))
    restored = TopK.from_state_dict(top.state_dict())
    np.testing.assert_array_equal(restored.values, [[2.0, 3.0, 4.0], [0.0, 1.0, 5.0]])
    np.testing.assert_array_equal(restored.indices, [[1, 0, 2], [2, 0, 1]])
    restored.update(np.array([[1.0, 9.0]], dtype=np.float32))
    assert restored.count == 4 and restored.indices[0, 0] == 3
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        TopK(0)


# ---------------------------------------------------------------- files

def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    path = tmp_path / "stat.npz"
    first = TopK(2)
    first.update(np.ones((3, 2), dtype=np.float32))
    save(first, path)

    def broken_savez(file, **arrays):
        file.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(stats.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save(TopK(2), path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["stat.npz"]
    assert load(path).count == 3                                     # the old file is intact


def test_load_rejects_files_without_a_statistic(tmp_path):
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="holds no saved statistic"):
        load(tmp_path / "other.npz")
