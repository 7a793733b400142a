"""Unit labels of token projects: planted units recovered, concepts from meta tracks, the cache, `seqvis dissect`."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from seqvis import labels
from seqvis.cli import main
from seqvis.labels import cache_file, dissect_layer, load_cached, project_concepts, summary, top_contexts
from seqvis.projects import open_project
from tests._lstmvis import make_lstmvis_folder

KINDS = ["name", "number", "string"]
# (layer, unit, concept, direction): the units the states follow, among random ones
PLANTED = [("rnn.h", 1, "kind=string", 1), ("rnn.h", 5, "depth>=1", 1), ("rnn.h", 6, "depth>=2", -1),
           ("rnn.c", 0, "kind=number", -1), ("rnn.c", 3, "flag=on", 1)]


def runs(rng: np.random.Generator, n: int, values: list, run: tuple[int, int] = (3, 20)) -> np.ndarray:
    """`n` values in runs of random length, as brackets and strings come in text."""
    lengths = rng.integers(*run, n)
    return np.repeat(rng.choice(values, n), lengths)[:n]


def make_planted_project(folder: Path, *, n_tokens: int = 3000, units: int = 10, seed: int = 0) -> Path:
    """A token project whose states follow PLANTED (with noise), with a discrete, a scalar and a document track."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    kind = runs(rng, n_tokens, [0, 0, 1, 2])
    depth = runs(rng, n_tokens, [0, 0, 1, 1, 2, 3]).astype(np.float32)
    flag = runs(rng, n_tokens, [0, 1])
    masks = {"kind=string": kind == 2, "kind=number": kind == 1, "depth>=1": depth >= 1, "depth>=2": depth >= 2,
             "flag=on": flag == 1}
    states = {layer: rng.standard_normal((n_tokens, units)).astype(np.float32) for layer in ("rnn.h", "rnn.c")}
    for layer, unit, concept, direction in PLANTED:
        states[layer][:, unit] += 2.5 * direction * masks[concept]
    with h5py.File(folder / "data.h5", "w") as f:
        f["tokens"] = rng.integers(0, 4, n_tokens).astype(np.int32)
        for layer, values in states.items():
            f[layer] = values
        f["kind"], f["depth"], f["flag"] = kind.astype(np.int32), depth, flag.astype(np.int8)
        f["doc"] = (np.arange(n_tokens) // 500).astype(np.int32)
    (folder / "vocab.dict").write_text("a 0\nb 1\nc 2\n( 3\n")
    description = {
        "seqvis": 1, "kind": "tokens", "name": folder.name, "tokens": {"file": "data.h5", "path": "tokens"},
        "vocab": "vocab.dict",
        "layers": [{"name": layer, "file": "data.h5", "path": layer} for layer in states],
        "meta": {"kind": {"file": "data.h5", "path": "kind", "type": "discrete", "labels": KINDS},
                 "depth": {"file": "data.h5", "path": "depth", "type": "scalar", "range": [0, 3]},
                 "flag": {"file": "data.h5", "path": "flag", "type": "discrete", "labels": ["off", "on"]},
                 "doc": {"file": "data.h5", "path": "doc", "type": "discrete"}},
    }
    (folder / "seqvis.yml").write_text(yaml.safe_dump(description, sort_keys=False))
    return folder


@pytest.fixture
def planted(tmp_path):
    project = open_project(make_planted_project(tmp_path / "data" / "planted"))
    yield project
    project.close()


def test_default_concepts_come_from_discrete_values_and_integer_scalars(planted):
    found = project_concepts(planted)
    assert found.names == ["kind=name", "kind=number", "kind=string", "depth>=1", "depth>=2", "depth>=3",
                           "flag=off", "flag=on"]                       # doc (document index) is left out
    assert found.categories == ["kind", "depth", "flag"] and found.concept_category == [0, 0, 0, 1, 1, 1, 2, 2]
    kind = planted.meta["kind"].dataset[:]
    np.testing.assert_array_equal(found.masks[:, 2], kind == 2)
    np.testing.assert_array_equal(found.masks[:, 4], planted.meta["depth"].dataset[:] >= 2)


def test_concept_specs(planted):
    found = project_concepts(planted, ["kind=string", "kind=1", "depth > 0.5", "depth==3", "doc=2"])
    assert found.names == ["kind=string", "kind=number", "depth>0.5", "depth==3", "doc=2"]
    assert found.categories == ["kind", "depth", "doc"]
    np.testing.assert_array_equal(found.masks[:, 2], planted.meta["depth"].dataset[:] > 0.5)
    for spec, message in [("kind", "must look like"), ("colour=red", "no discrete or scalar meta track 'colour'"),
                          ("kind=float", "not a label of track 'kind'"), ("depth>=deep", "not a number"),
                          ("kind=string", "given twice")]:
        with pytest.raises(ValueError, match=message):
            project_concepts(planted, [spec, "kind=string"] if message == "given twice" else [spec])


def test_planted_units_are_recovered(planted, tmp_path):
    results = {layer: dissect_layer(planted, layer, tmp_path / "cache") for layer in planted.layers}
    for layer, unit, concept, direction in PLANTED:
        search = results[layer]
        for by in ("iou", "ap"):
            best = search.best_units(concept, k=1, by=by)[0]
            assert (best.unit, best.direction) == (unit, direction), (layer, concept, by)
            assert best.iou > best.baseline_iou + 0.1 and best.ap > best.baseline_ap + 0.2
        assert concept in [r.label for r in search.unit_labels(unit, k=2)]
    data = summary(results["rnn.h"], per_unit=2)
    assert json.loads(json.dumps(data)) == data
    assert len(data["units"]) == 10 and len(data["units"][1]) == 2
    assert data["units"][1][0]["label"] == "kind=string" and data["units"][1][0]["direction"] == 1
    concept = next(c for c in data["concepts"] if c["label"] == "depth>=2")
    assert concept["unit"] == 6 and concept["count"] == int((planted.meta["depth"].dataset[:] >= 2).sum())
    assert concept["best_baseline_iou"] >= concept["baseline_iou"] and concept["iou"] > concept["best_baseline_iou"]


def test_labels_are_cached_per_layer_and_parameters(planted, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    assert load_cached(planted, "rnn.c", cache) is None
    first = dissect_layer(planted, "rnn.c", cache)
    assert load_cached(planted, "rnn.c", cache).labels() == first.labels()
    path = cache_file(planted, "rnn.c", cache)
    assert sorted(p.name for p in cache.iterdir()) == [path.with_suffix(".csv").name, path.name]
    with open(path.with_suffix(".csv"), newline="") as file:
        rows = list(csv.DictReader(file))
    assert rows[3]["label"] == "flag=on" and rows[3]["direction"] == "1"

    def fail(*args, **kwargs):
        raise AssertionError("computed again")

    monkeypatch.setattr(labels, "search_thresholds", fail)
    assert dissect_layer(planted, "rnn.c", cache).labels() == first.labels()
    assert cache_file(planted, "rnn.c", cache, ["flag=on"]) != path
    assert cache_file(planted, "rnn.h", cache) != path
    with pytest.raises(AssertionError, match="computed again"):
        dissect_layer(planted, "rnn.c", cache, concepts=["flag=on"])


def test_changed_states_file_is_not_read_from_the_cache(tmp_path):
    folder = make_planted_project(tmp_path / "p")
    with open_project(folder) as project:
        path = cache_file(project, "rnn.h", tmp_path / "cache")
    with h5py.File(folder / "data.h5", "a") as f:
        f["rnn.h"][:, 1] = 0.0
    with open_project(folder) as project:
        assert cache_file(project, "rnn.h", tmp_path / "cache") != path


def test_top_contexts_equal_a_sort_of_the_column(planted):
    column = planted.layers["rnn.h"].dataset[:, 5]
    words = planted.words(0, len(planted))
    for direction in (1, -1):
        found = top_contexts(planted, "rnn.h", 5, k=4, direction=direction, width=2, rows=700)
        expected = np.argsort(-direction * column, kind="stable")[:4]
        assert [c["position"] for c in found] == expected.tolist()
        assert [c["value"] for c in found] == column[expected].tolist()
        for c in found:
            assert c["words"] == words[c["start"]:c["position"] + 3] and c["position"] - c["start"] <= 2
    for unit, k, direction, message in [(10, 5, 1, "unit"), (-1, 5, 1, "unit"), (1.5, 5, 1, "unit"),
                                        (1, 0, 1, "k must"), (1, 5, 0, "direction")]:
        with pytest.raises(ValueError, match=message):
            top_contexts(planted, "rnn.h", unit, k=k, direction=direction)
    with pytest.raises(ValueError, match="layer 'rnn.x' is not one of rnn.h, rnn.c"):
        top_contexts(planted, "rnn.x", 1)


def test_lstmvis_folder_gets_labels(tmp_path):
    written = make_lstmvis_folder(tmp_path / "lv", n_tokens=600)
    noun = np.array([tag == "NN" for tag in written.tags])
    with h5py.File(tmp_path / "lv" / "states.hdf5", "a") as f:
        f["states2"][:, 4] = f["states2"][:, 4] + 3.0 * noun
    with open_project(tmp_path / "lv") as project:
        search = dissect_layer(project, "states2", tmp_path / "cache")
        best = search.best_units("part_of_speech=NN", k=1)[0]
        assert (best.unit, best.direction) == (4, 1) and best.iou > 0.7 > best.baseline_iou + 0.3
        assert search.concepts[-3:] == ["depth>=1", "depth>=2", "depth>=3"]     # wordvec 'prediction' left out


def test_cli_dissect_writes_labels_and_prints_a_table(tmp_path, capsys):
    folder = make_planted_project(tmp_path / "data" / "planted")
    assert main(["dissect", "--project", "planted", "--data", str(tmp_path / "data"), "--layers", "rnn.c"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("flag=on"))
    assert row.split()[2:4] == ["3", "+1"]                           # tokens, best unit, direction
    cache = tmp_path / "data" / ".cache" / "planted"
    with open_project(folder) as project:
        path = cache_file(project, "rnn.c", cache)
    assert path.is_file() and path.with_suffix(".csv").is_file()
    assert main(["dissect", "--project", str(folder), "--concept", "depth>=2"]) == 0   # a folder; all layers
    out = capsys.readouterr().out
    assert "layer rnn.h" in out and "layer rnn.c" in out and out.count("depth>=2") == 2
    assert len(list(cache.glob("labels.*.json"))) == 3


@pytest.mark.parametrize("arguments, message", [
    (["--project", "nothing"], "--project 'nothing' is neither a folder nor a project"),
    (["--project", "planted", "--layers", "rnn.x"], "--layers: rnn.x not among the layers"),
    (["--project", "planted", "--concept", "kind=float"], "not a label of track 'kind'"),
])
def test_cli_dissect_bad_input(tmp_path, capsys, arguments, message):
    make_planted_project(tmp_path / "data" / "planted")
    assert main(["dissect", "--data", str(tmp_path / "data"), *arguments]) == 2
    assert message in capsys.readouterr().err
