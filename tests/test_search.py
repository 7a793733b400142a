"""core.search: LSTMVis cell selection and match; the index equals the brute-force scan for any threshold,
and the brute force equals a plain reference written out below."""
from __future__ import annotations

import tempfile
import tracemalloc
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import search

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- a plain reference: LSTMVis's match written out step by step -----------------------------------------

def reference_match(raw: np.ndarray, units, threshold: float, *, transform: str = "tanh", phrase_length: int = 0,
                    constrain=(False, False), top: int = 50, max_candidates: int = 10_000):
    """(ranked [(start, stop, selected_on, union, length)], fuzzy histogram, strict histogram, total)."""
    values = np.tanh(raw) if transform == "tanh" else raw
    n, n_units = values.shape
    on = [[float(values[i, u]) >= threshold for u in range(n_units)] for i in range(n)]
    count = [sum(on[i][u] for u in units) for i in range(n)]

    def count_at(i):
        return count[i] if 0 <= i < n else 0

    found = {}                                            # (start, stop) -> (level, score)
    level = len(units)
    while level > 0 and len(found) < max_candidates:
        i = 0
        while i < n:
            if count[i] < level:
                i += 1
                continue
            j = i
            while j < n and count[j] >= level:
                j += 1
            wanted = j - i == phrase_length if phrase_length else j - i >= 2
            if wanted and (i, j) not in found:
                score = 0
                if constrain[0] or constrain[1]:
                    score = level - (count_at(i - 1) if constrain[0] else 0) - (count_at(j) if constrain[1] else 0)
                found[(i, j)] = (level, score)
            i = j
        level -= 1
    candidates = sorted(found, key=lambda run: (-found[run][1], -found[run][0], run[0]))[:max_candidates]

    verified = []
    for order, (i, j) in enumerate(candidates):
        active = {u for u in range(n_units)
                  if all(on[r][u] for r in range(i, j))
                  and not (constrain[0] and i > 0 and on[i - 1][u])
                  and not (constrain[1] and j < n and on[j][u])}
        verified.append((i, j, len(active & set(units)), len(active | set(units)), j - i, order))
    ranked = sorted(verified, key=lambda c: (-c[2], c[3], -c[4], c[5]))[:top]
    return ([c[:5] for c in ranked], _histogram(c[4] for c in verified),
            _histogram(c[4] for c in verified if c[2] == len(units)), len(verified))


def _histogram(lengths) -> list[int]:
    counts = Counter(lengths)
    return [counts[k] for k in range(max(counts) + 1)] if counts else []


def as_tuple(result: search.MatchResult):
    return ([(c.start, c.stop, c.selected_on, c.union, c.length) for c in result.candidates],
            result.fuzzy_lengths, result.strict_lengths, result.total)


# -- random states and queries ------------------------------------------------------------------------------

@st.composite
def query_cases(draw, max_tokens: int = 60, max_units: int = 7):
    """Raw float32 states with repeated values, saturation and runs, a transform and a query whose threshold
    is often exactly a stored value (or a float64 that rounds to one)."""
    n = draw(st.integers(1, max_tokens))
    u = draw(st.integers(1, max_units))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    raw = np.cumsum(rng.standard_normal((n, u)), axis=0) * draw(st.sampled_from([0.3, 1.0, 5.0]))
    if draw(st.booleans()):
        raw = np.round(raw, 1)                                    # many equal values
    raw = raw.astype(np.float32)
    transform = draw(st.sampled_from(["tanh", "none"]))
    values = np.tanh(raw) if transform == "tanh" else raw
    kind = draw(st.sampled_from(["stored", "stored64", "below", "above", "decimal", "any"]))
    stored = values.ravel()[draw(st.integers(0, values.size - 1))]
    threshold = {
        "stored": float(stored),                                   # a value exactly equal: on
        "stored64": float(np.tanh(np.float64(raw.ravel()[0]))) if transform == "tanh" else float(stored) + 1e-12,
        "below": float(np.nextafter(stored, np.float32(-np.inf))),
        "above": float(np.nextafter(stored, np.float32(np.inf))),
        "decimal": draw(st.sampled_from([-0.5, 0.0, 0.3, 0.45, 0.6, 0.99])),
        "any": draw(st.floats(-1.2, 1.2)),
    }[kind]
    units = draw(st.lists(st.integers(0, u - 1), min_size=1, max_size=u, unique=True))
    options = {"phrase_length": draw(st.sampled_from([0, 0, 0, 1, 2, 3])),
               "constrain": (draw(st.booleans()), draw(st.booleans())),
               "top": draw(st.sampled_from([1, 3, 50])),
               "max_candidates": draw(st.sampled_from([1, 2, 5, 10_000]))}
    return raw, transform, units, threshold, options


@PROPERTY
@given(query_cases())
def test_brute_force_equals_the_plain_reference(case):
    raw, transform, units, threshold, options = case
    result = search.brute_force_match(raw, units, threshold, transform=transform, **options)
    assert as_tuple(result) == reference_match(raw, units, threshold, transform=transform, **options)
    assert result.strict_total == sum(result.strict_lengths) and result.total == sum(result.fuzzy_lengths)


@PROPERTY
@given(query_cases(max_tokens=400, max_units=12))
def test_index_equals_brute_force_for_any_threshold(case):
    raw, transform, units, threshold, options = case
    with tempfile.TemporaryDirectory() as folder:
        index = search.MatchIndex.build(raw, Path(folder) / "states.match", transform=transform)
        assert index.match(units, threshold, **options) == \
            search.brute_force_match(raw, units, threshold, transform=transform, **options)


def _states_file(folder: Path, raw: np.ndarray, *, backwards: bool = False, **layout) -> h5py.Dataset:
    """The states in an HDF5 file; `backwards`: written from the last row block to the first, so that the
    file holds the chunks in reverse order."""
    with h5py.File(folder / "states.h5", "w") as file:
        if backwards:
            dataset = file.create_dataset("states", shape=raw.shape, dtype=raw.dtype, **layout)
            for start in reversed(range(0, len(raw), dataset.chunks[0])):
                dataset[start:start + dataset.chunks[0]] = raw[start:start + dataset.chunks[0]]
        else:
            file.create_dataset("states", data=raw, **layout)
    return h5py.File(folder / "states.h5", "r")["states"]


@pytest.mark.parametrize("layout", [{}, {"chunks": (64, 5)}, {"chunks": (7, 40)}, {"chunks": (7, 40), "backwards": True},
                                    {"chunks": (100, 3), "compression": "gzip"}])
def test_index_on_hdf5_layouts_equals_brute_force_at_every_stored_value(tmp_path, monkeypatch, layout):
    """Contiguous, chunked and compressed datasets; thresholds at stored values and at the next float32.
    Small work blocks, so that counting and reading candidates' rows cross block borders."""
    monkeypatch.setattr(search, "_COUNT_BLOCK", 100)
    monkeypatch.setattr(search, "_UNION_ROWS", 3)
    rng = np.random.default_rng(3)
    raw = (np.cumsum(rng.standard_normal((900, 40)), axis=0) * 0.4).astype(np.float32)
    raw[:5] = 9.0                                             # all units on at the start (tanh saturates at 1)
    raw[-4:] = 9.0                                            # and at the end of the sequence
    states = _states_file(tmp_path, raw, **layout)
    index = search.MatchIndex.build(states, tmp_path / "states.match")
    values = np.tanh(raw)
    for k, units in enumerate([[3], [0, 1, 2, 3, 4], list(range(0, 40, 3)), list(range(40))]):
        for stored in rng.choice(values.ravel(), 4):
            for threshold in (float(stored), float(np.nextafter(stored, np.float32(np.inf)))):
                options = {"constrain": (k % 2 == 0, k > 1), "phrase_length": 2 if k == 3 else 0}
                expected = search.brute_force_match(raw, units, threshold, **options)
                assert index.match(units, threshold, **options) == expected
                assert search.brute_force_match(states, units, threshold, **options) == expected


def test_index_on_a_partly_written_chunked_dataset(tmp_path):
    """Chunks never written read as the fill value, through HDF5 (no memory map of missing chunks)."""
    rng = np.random.default_rng(4)
    with h5py.File(tmp_path / "states.h5", "w") as file:
        dataset = file.create_dataset("states", shape=(600, 12), dtype=np.float32, chunks=(50, 12), fillvalue=0.5)
        dataset[:320] = np.cumsum(rng.standard_normal((320, 12)), axis=0).astype(np.float32)
    states = h5py.File(tmp_path / "states.h5", "r")["states"]
    index = search.MatchIndex.build(states, tmp_path / "m")
    for units, threshold in (([0, 3, 7], 0.4), ([1], float(np.tanh(np.float32(0.5)))), (list(range(12)), 0.2)):
        assert index.match(units, threshold) == search.brute_force_match(states[:], units, threshold)


def test_runs_at_both_ends_of_the_sequence_are_found_and_ranked():
    """A step outside the sequence counts as off: runs touching either end are candidates."""
    raw = np.full((12, 3), -1.0, np.float32)
    raw[:3] = 1.0                                              # all three units on over [0, 3)
    raw[9:, :2] = 1.0                                          # units 0 and 1 on over [9, 12)
    raw[5:7, 0] = 1.0                                          # unit 0 alone over [5, 7)
    with tempfile.TemporaryDirectory() as folder:
        index = search.MatchIndex.build(raw, Path(folder) / "m", transform="none")
        result = index.match([0, 1], 0.5, constrain=(True, True))
    assert [(c.start, c.stop, c.selected_on, c.union) for c in result.candidates] == \
        [(9, 12, 2, 2), (0, 3, 2, 3), (5, 7, 1, 2)]
    assert result.fuzzy_lengths == [0, 0, 1, 2] and result.strict_lengths == [0, 0, 0, 2]
    assert (result.total, result.strict_total) == (3, 2)


def test_ranking_most_selected_on_then_smallest_union_then_longest():
    raw = np.full((40, 4), -1.0, np.float32)
    raw[1:3, [0, 1]] = 1.0                  # both selected on, nothing else: union 2, length 2
    raw[5:9, [0, 1, 2]] = 1.0               # both on, unit 2 too: union 3, length 4
    raw[11:14, [0, 1]] = 1.0                # both on, union 2, length 3: best
    raw[16:26, 0] = 1.0                     # one selected unit on, long
    result = search.brute_force_match(raw, [0, 1], 0.0, transform="none")
    assert [(c.start, c.stop) for c in result.candidates] == [(11, 14), (1, 3), (5, 9), (16, 26)]
    assert [c.union for c in result.candidates] == [2, 2, 3, 2]
    assert result.fuzzy_lengths == [0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1]
    assert result.strict_lengths == [0, 0, 1, 1, 1]


def test_phrase_length_keeps_runs_of_exactly_that_length():
    raw = np.full((30, 1), -1.0, np.float32)
    for start, length in ((0, 1), (4, 2), (9, 3), (15, 3), (22, 5)):
        raw[start:start + length] = 1.0
    for phrase_length, expected in ((0, [(22, 27), (9, 12), (15, 18), (4, 6)]), (3, [(9, 12), (15, 18)]),
                                    (1, [(0, 1)]), (4, [])):
        result = search.brute_force_match(raw, [0], 0.5, transform="none", phrase_length=phrase_length)
        assert [(c.start, c.stop) for c in result.candidates] == expected


def test_candidate_budget_stops_the_descent_and_keeps_the_best_scored():
    """LSTMVis descends level by level until `max_candidates` runs are recorded, a run once (at its highest
    level), then keeps the budget's worth by border score, level, start."""
    raw = np.full((20, 2), -1.0, np.float32)
    raw[0:3] = 1.0                          # level 2: [0, 3) (also a level-1 run: recorded once)
    raw[5:8, 0] = 1.0                       # level 1 only: [5, 8)
    raw[10:12, 1] = 1.0                     # level 1 only: [10, 12)
    runs = {budget: [(c.start, c.stop) for c in search.brute_force_match(
        raw, [0, 1], 0.0, transform="none", max_candidates=budget).candidates] for budget in (1, 2, 3, 4)}
    assert runs == {1: [(0, 3)], 2: [(0, 3), (5, 8)], 3: [(0, 3), (5, 8), (10, 12)], 4: [(0, 3), (5, 8), (10, 12)]}


def test_ties_keep_the_candidate_order_of_border_score_then_level_then_start():
    raw = np.full((12, 3), -1.0, np.float32)
    raw[0:3, :2] = 1.0                      # run A [0, 3); unit 2 alone right after it: right border score 1
    raw[3, 2] = 1.0
    raw[6:9, :2] = 1.0                      # run B [6, 9), clean right border: score 2
    for constrain, expected in (((False, False), [(0, 3), (6, 9), (0, 4)]), ((False, True), [(6, 9), (0, 3), (0, 4)])):
        result = search.brute_force_match(raw, [0, 1, 2], 0.0, transform="none", constrain=constrain)
        assert [(c.start, c.stop) for c in result.candidates] == expected
        assert [c.union for c in result.candidates] == [3, 3, 3]


def test_many_selected_units(tmp_path):
    """More than 255 selected units (counts no longer fit a byte)."""
    rng = np.random.default_rng(5)
    shared = np.cumsum(rng.standard_normal(300)) * 0.3
    raw = (shared[:, None] + rng.standard_normal((300, 320)) * 0.3).astype(np.float32)
    index = search.MatchIndex.build(raw, tmp_path / "m")
    for units, threshold in ((np.arange(300), 0.1), (np.arange(10, 320), 0.37), (np.arange(320), -0.2)):
        assert index.match(units, threshold) == search.brute_force_match(raw, units, threshold)


def test_special_values_are_compared_exactly(tmp_path):
    """NaN is never on; infinities saturate tanh; -0.0 equals 0.0."""
    raw = np.array([[np.nan, 1.0], [np.inf, 1.0], [np.inf, -0.0], [-np.inf, 0.0], [0.0, np.nan]] * 3, np.float32)
    for transform in ("tanh", "none"):
        index = search.MatchIndex.build(raw, tmp_path / transform, transform=transform)
        for threshold in (0.0, 1.0, -1.0, 0.5):
            for units in ([0], [1], [0, 1]):
                expected = search.brute_force_match(raw, units, threshold, transform=transform)
                assert index.match(units, threshold) == expected
                assert as_tuple(expected) == reference_match(raw, units, threshold, transform=transform)


# -- cell selection ----------------------------------------------------------------------------------------

def test_select_units_on_over_the_whole_brush_and_off_over_the_padding():
    window = np.array([
        # unit: 0     1     2     3     4       5
        [-0.9, 0.9, -0.9, -0.9, -0.9, -0.9],      # padding step (left, default 1)
        [0.5, 0.5, 0.5, 0.3, 0.29999, 0.5],       # brush [1, 4)
        [0.5, 0.5, 0.1, 0.3, 0.5, 0.5],
        [0.5, 0.5, 0.5, 0.3, 0.5, 0.5],
        [-0.9, -0.9, -0.9, -0.9, -0.9, 0.9],      # after the brush: no right padding by default
    ])
    # 0: selected; 1: on at the padding; 2: off inside; 3: exactly the threshold counts as on; 4: just below
    assert search.select_units(window, (1, 4)).tolist() == [0, 3, 5]
    assert search.select_units(window, (1, 4), padding=(1, 1)).tolist() == [0, 3]
    assert search.select_units(window, (1, 4), padding=(0, 0)).tolist() == [0, 1, 3, 5]
    assert search.select_units(window, (1, 4), threshold=0.5).tolist() == [0, 5]
    assert search.select_units(window, (2, 4), threshold=0.4).tolist() == [4]


def test_select_units_float32_window_and_threshold_compared_exactly():
    window = np.array([[0.0], [0.3], [0.3]], np.float32)       # float32 0.3 is a little above 0.3
    assert search.select_units(window, (1, 3)).tolist() == [0]
    assert search.select_units(window, (1, 3), threshold=float(np.float32(0.3))).tolist() == [0]
    assert search.select_units(window, (1, 3), threshold=float(np.nextafter(np.float32(0.3), 1))).tolist() == []


@pytest.mark.parametrize("kwargs, name", [
    ({"brush": (3, 3)}, "brush"), ({"brush": (2, 1)}, "brush"), ({"brush": (0, 9)}, "brush"),
    ({"brush": (1, 2.5)}, "brush"), ({"brush": 3}, "brush"),
    ({"padding": (-1, 0)}, "padding"), ({"brush": (0, 2)}, "padding"), ({"padding": (0, 3)}, "padding"),
    ({"threshold": "high"}, "threshold"), ({"threshold": float("nan")}, "threshold"), ({"threshold": True}, "threshold"),
])
def test_select_units_bad_arguments_name_the_parameter(kwargs, name):
    arguments = {"window": np.zeros((5, 2)), "brush": (1, 3), "padding": (1, 0), "threshold": 0.3} | kwargs
    with pytest.raises(ValueError, match=f"^{name}:"):
        search.select_units(**arguments)


def test_select_units_rejects_a_window_that_is_not_a_float_matrix():
    with pytest.raises(ValueError, match="^window:"):
        search.select_units(np.zeros(5), (1, 3))
    with pytest.raises(ValueError, match="^window:"):
        search.select_units(np.zeros((5, 2), np.int64), (1, 3))


# -- arguments, staleness, streaming ---------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, name", [
    ({"units": []}, "units"), ({"units": [0, 8]}, "units"), ({"units": [-1]}, "units"), ({"units": [1, 1]}, "units"),
    ({"units": [0.5]}, "units"), ({"units": [True]}, "units"), ({"units": ["a"]}, "units"),
    ({"threshold": "0.3"}, "threshold"), ({"threshold": float("inf")}, "threshold"), ({"threshold": None}, "threshold"),
    ({"phrase_length": -1}, "phrase_length"), ({"phrase_length": 1.5}, "phrase_length"), ({"top": 0}, "top"),
    ({"max_candidates": 0}, "max_candidates"), ({"constrain": True}, "constrain"),
    ({"constrain": (True, "no")}, "constrain"), ({"constrain": (True, False, True)}, "constrain"),
])
def test_match_bad_arguments_name_the_parameter(tmp_path, kwargs, name):
    raw = np.zeros((20, 8), np.float32)
    index = search.MatchIndex.build(raw, tmp_path / "m")
    arguments = {"units": [0, 1], "threshold": 0.3} | kwargs
    for match in (index.match, lambda **a: search.brute_force_match(raw, **a)):
        with pytest.raises(ValueError, match=f"^{name}:"):
            match(**arguments)


def test_states_and_transform_are_checked(tmp_path):
    with pytest.raises(ValueError, match="^states:"):
        search.MatchIndex.build(np.zeros(10, np.float32), tmp_path / "m")
    with pytest.raises(ValueError, match="^states:"):
        search.brute_force_match(np.zeros((10, 2), np.int32), [0], 0.3)
    with pytest.raises(ValueError, match="^states:"):
        search.brute_force_match(np.zeros((0, 2), np.float32), [0], 0.3)
    with pytest.raises(ValueError, match="^transform:"):
        search.MatchIndex.build(np.zeros((10, 2), np.float32), tmp_path / "m", transform="sigmoid")
    assert not list(tmp_path.iterdir())


def test_stale_index_is_detected(tmp_path):
    raw = np.random.default_rng(0).standard_normal((500, 6)).astype(np.float32)
    states = _states_file(tmp_path, raw)
    path = tmp_path / "states.match"
    search.MatchIndex.build(states, path)
    search.MatchIndex.open(path, states)                       # current: opens
    states.file.close()

    changed = raw.copy()
    changed[250, 3] += 1.0                                     # one value, in a row the fingerprint may not read
    states = _states_file(tmp_path, changed)
    with pytest.raises(search.StaleIndexError, match="other states"):
        search.MatchIndex.open(path, states)
    with pytest.raises(search.StaleIndexError, match="shape"):
        search.MatchIndex.open(path, raw[:400])

    array_index = tmp_path / "array.match"
    search.MatchIndex.build(raw, array_index)
    with pytest.raises(search.StaleIndexError, match="other states"):
        search.MatchIndex.open(array_index, changed * np.float32(2))
    with pytest.raises(search.StaleIndexError):
        search.MatchIndex.open(array_index, raw.astype(np.float64))

    array_index.write_bytes(array_index.read_bytes()[:-1])
    with pytest.raises(search.StaleIndexError, match="truncated"):
        search.MatchIndex.open(array_index, raw)
    (tmp_path / "junk.match").write_bytes(b"not an index at all")
    with pytest.raises(search.StaleIndexError, match="not a match index"):
        search.MatchIndex.open(tmp_path / "junk.match", raw)
    (tmp_path / "junk.match").write_bytes(array_index.read_bytes()[:8] + (3).to_bytes(8, "little") + b"[1]")
    with pytest.raises(search.StaleIndexError, match="damaged header"):
        search.MatchIndex.open(tmp_path / "junk.match", raw)


class _Recorded:
    """An array-like over an h5py dataset that records how many values each read returns."""

    def __init__(self, dataset: h5py.Dataset):
        self.dataset, self.shape, self.dtype, self.reads = dataset, dataset.shape, dataset.dtype, []

    def __getitem__(self, key):
        values = self.dataset[key]
        self.reads.append(values.size)
        return values


def test_build_streams_row_blocks_and_never_holds_the_float_matrix(tmp_path, monkeypatch):
    """Reads are row blocks, and the build's peak memory does not grow with the states (4x the rows: 24 MB
    more states, far less than that more memory)."""
    monkeypatch.setattr(search, "_BLOCK_BYTES", 1 << 18)
    monkeypatch.setattr(search, "_STRIPE_BYTES", 1 << 18)
    rng = np.random.default_rng(1)
    peaks = []
    for tokens in (40_000, 160_000):
        folder = tmp_path / str(tokens)
        folder.mkdir()
        raw = (np.cumsum(rng.standard_normal((tokens, 50)), axis=0) * 0.1).astype(np.float32)
        states = _Recorded(_states_file(folder, raw, chunks=(256, 50)))
        progress = []

        class Progress:
            def start(self, stage, total):
                progress.append((stage, total))

            def update(self, n):
                progress.append(n)

        tracemalloc.start()
        index = search.MatchIndex.build(states, folder / "m", progress=Progress())
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert max(states.reads) * 4 <= 1 << 18 and sum(states.reads) >= raw.size
        assert progress[0][1] == len(raw) and sum(progress[1:]) == len(raw)
        assert (folder / "m").stat().st_size <= raw.nbytes / 4 + 8192
        assert index.match([1, 5, 7], 0.2) == search.brute_force_match(raw, [1, 5, 7], 0.2)
        assert not [p for p in folder.iterdir() if "partial" in p.name]
    assert peaks[1] - peaks[0] < 4 << 20, f"build memory grew by {peaks[1] - peaks[0]} bytes for 24 MB more states"


def test_build_codes_equal_a_float64_reference_across_blocks_tiles_and_chunk_runs(tmp_path, monkeypatch):
    """Streamed from the file in blocks that cross runs of chunks (stored backwards), encoded in tiles by
    several workers at once: every code is clip(floor(value * scale) - base, 0, 255) computed in float64,
    NaN code 0, values at code edges included."""
    monkeypatch.setattr(search, "_BLOCK_BYTES", 40 * 4 * 37)
    monkeypatch.setattr(search, "_STRIPE_BYTES", 40 * 37 * 3)                 # three blocks per stripe
    monkeypatch.setattr(search, "_TILE_VALUES", 40 * 5)
    monkeypatch.setattr(search, "_workers", lambda: 3)
    rng = np.random.default_rng(7)
    for transform in search.TRANSFORMS:
        raw = (np.cumsum(rng.standard_normal((2000, 40)), axis=0) * 0.3).astype(np.float32)
        raw[rng.random(raw.shape) < 0.01] = 0.0
        raw[5, 30:34] = [np.nan, np.inf, -np.inf, -0.0]
        raw[6, 30:33] = [1e-45, -1e-45, 3e38]
        low, high = search._sample_range(search._StateReader(raw, transform), *raw.shape)
        scale, base = search._code_scales(low, high)
        if transform == "none":                  # values on every code edge, inside the range (same scales)
            edges = ((np.arange(1, 256)[:, None] + base[:20]) / scale[:20]).astype(np.float32)
            raw[100:355, :20] = np.clip(edges, low[:20].astype(np.float32), high[:20].astype(np.float32))
        folder = tmp_path / transform
        folder.mkdir()
        states = _states_file(folder, raw, chunks=(16, 40), backwards=True)
        values = search.transformed(raw, transform).astype(np.float64)
        with np.errstate(invalid="ignore"):
            expected = np.clip(np.nan_to_num(np.floor(values * scale) - base, nan=0.0), 0, 255)
        index = search.MatchIndex.build(states, folder / "m", transform=transform)
        assert np.array_equal(index._scale, scale) and np.array_equal(index._base, base)
        assert (index._codes == expected.T.astype(np.uint8)).all()
        assert index.match([0, 3, 9], 0.3) == search.brute_force_match(raw, [0, 3, 9], 0.3, transform=transform)


def test_index_reopens_and_answers_the_same(tmp_path):
    raw = np.random.default_rng(2).standard_normal((300, 5)).astype(np.float32).cumsum(axis=0)
    built = search.MatchIndex.build(raw, tmp_path / "m", transform="none")
    opened = search.MatchIndex.open(tmp_path / "m", raw)
    assert opened.transform == "none" and opened.shape == (300, 5)
    assert opened.match([0, 2], 1.5, constrain=(True, False)) == built.match([0, 2], 1.5, constrain=(True, False))


def test_ceil_float32_is_the_smallest_float32_at_or_above():
    for threshold in (0.3, -0.3, 0.0, 1.0, 1e-45, 3.5e38, -1e39, float(np.float32(0.7))):
        t32 = search.ceil_float32(threshold)
        assert t32.dtype == np.float32 and float(t32) >= threshold
        with np.errstate(over="ignore"):
            assert float(np.nextafter(t32, np.float32(-np.inf))) < threshold
