"""Projects on disk: seqvis.yml and LSTMVis folders open read-only, broken ones are reported by file and dataset."""
from __future__ import annotations

import gc
import json
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from seqvis.projects import (KINDS, Layer, MetaTrack, ProjectError, Seq2SeqProject, TokenProject, UnitsProject,
                             discover, open_project)
from tests._lstmvis import TAGS, VOCAB, make_lstmvis_folder

WORDS = ["def", "f", "(", ")", ":", "return", "x", "\n", " "]


def open_files() -> int:
    """How many HDF5 files this process has open (after collecting projects that earlier tests dropped)."""
    gc.collect()
    return h5py.h5f.get_obj_count(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE)


def write_description(folder: Path, description: dict) -> None:
    (folder / "seqvis.yml").write_text(yaml.safe_dump(description, sort_keys=False))


def make_seqvis_tokens(folder: Path, *, name: str = "charlm", n: int = 120, units: int = 5, seed: int = 1) -> dict:
    """A seqvis token project with two layers and a discrete, a scalar and a wordvec track; returns its description."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    with h5py.File(folder / "tokens.h5", "w") as f:
        f["tokens"] = rng.integers(0, len(WORDS), n).astype(np.int32)
    with h5py.File(folder / "states.h5", "w") as f:
        f["lstm.l0.h"] = rng.standard_normal((n, units)).astype(np.float32)
        f["lstm.l0.c"] = rng.standard_normal((n, units + 2)).astype(np.float32)
    with h5py.File(folder / "meta.h5", "w") as f:
        f["doc"] = (np.arange(n) >= n // 2).astype(np.int64)
        f["depth"] = rng.integers(0, 8, n).astype(np.float32)
        f["top5"] = rng.integers(0, len(WORDS), (n, 5)).astype(np.int32)
    # A character vocabulary: the space token keeps its spelling, the newline is written escaped.
    spelled = [word.replace("\n", "\\n") for word in WORDS]
    (folder / "vocab.dict").write_text("".join(f"{word} {i}\n" for i, word in enumerate(spelled)))
    description = {
        "seqvis": 1, "kind": "tokens", "name": name, "description": "stdlib char model",
        "tokens": {"file": "tokens.h5", "path": "tokens"}, "vocab": "vocab.dict",
        "layers": [{"name": "lstm.l0.h", "file": "states.h5", "path": "lstm.l0.h", "transform": "tanh"},
                   {"name": "lstm.l0.c", "file": "states.h5", "path": "lstm.l0.c", "transform": "none"}],
        "meta": {"doc": {"file": "meta.h5", "path": "doc", "type": "discrete", "labels": ["a.py", "b.py"]},
                 "depth": {"file": "meta.h5", "path": "depth", "type": "scalar", "range": [0, 8]},
                 "top5": {"file": "meta.h5", "path": "top5", "type": "wordvec"}},
        "extra": {"metrics": {"loss": 1.25}},
    }
    write_description(folder, description)
    return description


# --- seqvis token projects ---------------------------------------------------------------------------------


def test_seqvis_token_project_reads_states_words_and_meta(tmp_path):
    make_seqvis_tokens(tmp_path / "p")
    with h5py.File(tmp_path / "p" / "tokens.h5") as f:
        ids = f["tokens"][:]
    with h5py.File(tmp_path / "p" / "states.h5") as f:
        h = f["lstm.l0.h"][:]
    with open_project(tmp_path / "p") as project:
        assert isinstance(project, TokenProject)
        assert (project.kind, project.name, project.description) == ("tokens", "charlm", "stdlib char model")
        assert len(project) == 120 and project.path == tmp_path / "p"
        assert isinstance(project.tokens, h5py.Dataset)
        assert project.vocab[:3] == ["def", "f", "("] and project.vocab[8] == " "
        assert project.words(10, 20) == [project.vocab[i] for i in ids[10:20]]
        assert project.words(5, 5) == []

        assert list(project.layers) == ["lstm.l0.h", "lstm.l0.c"]
        layer = project.layers["lstm.l0.h"]
        assert isinstance(layer, Layer) and isinstance(layer.dataset, h5py.Dataset)
        assert (layer.units, layer.transform, layer.unsigned) == (5, "tanh", False)
        np.testing.assert_array_equal(layer.dataset[30:40], h[30:40])
        assert (project.layers["lstm.l0.c"].units, project.layers["lstm.l0.c"].transform) == (7, "none")

        doc, depth, top5 = project.meta["doc"], project.meta["depth"], project.meta["top5"]
        assert isinstance(doc, MetaTrack) and (doc.type, doc.labels, doc.range) == ("discrete", ["a.py", "b.py"], None)
        assert (depth.type, depth.labels, depth.range) == ("scalar", None, (0.0, 8.0))
        assert top5.type == "wordvec" and top5.labels is project.vocab and top5.dataset.shape == (120, 5)

        summary = project.summary()
        assert json.loads(json.dumps(summary)) == summary
        assert summary == {
            "kind": "tokens", "name": "charlm", "description": "stdlib char model", "format": "seqvis",
            "extra": {"metrics": {"loss": 1.25}}, "tokens": 120, "vocab": len(WORDS),
            "layers": [{"name": "lstm.l0.h", "units": 5, "transform": "tanh", "unsigned": False},
                       {"name": "lstm.l0.c", "units": 7, "transform": "none", "unsigned": False}],
            "meta": [{"name": "doc", "type": "discrete"}, {"name": "depth", "type": "scalar"},
                     {"name": "top5", "type": "wordvec"}]}


def test_meta_labels_from_a_dict_file(tmp_path):
    description = make_seqvis_tokens(tmp_path / "p")
    (tmp_path / "p" / "docs.dict").write_text("first.py 0\nsecond.py 1\n")
    description["meta"]["doc"] = {"file": "meta.h5", "path": "doc", "type": "discrete", "dict": "docs.dict"}
    write_description(tmp_path / "p", description)
    with open_project(tmp_path / "p") as project:
        assert project.meta["doc"].labels == ["first.py", "second.py"]


def test_one_hdf5_handle_per_file_closed_with_the_project(tmp_path):
    make_seqvis_tokens(tmp_path / "p")
    before = open_files()
    project = open_project(tmp_path / "p")
    assert open_files() - before == 3  # tokens.h5, states.h5, meta.h5: each opened once for all its datasets
    dataset = project.layers["lstm.l0.h"].dataset
    with project:
        pass
    assert open_files() == before and not dataset.id.valid
    project.close()  # closing twice is harmless


def test_datasets_stay_on_disk(tmp_path):
    """20M tokens x 650 units (52 GB as float32) opens at once: nothing but the dictionary is read."""
    folder = tmp_path / "big"
    folder.mkdir()
    n, units = 20_000_000, 650
    with h5py.File(folder / "tokens.h5", "w") as f:
        f.create_dataset("tokens", shape=(n,), dtype=np.int32, chunks=(1 << 16,), fillvalue=1)
    with h5py.File(folder / "states.h5", "w") as f:
        f.create_dataset("h", shape=(n, units), dtype=np.float32, chunks=(256, units))
    (folder / "vocab.dict").write_text("a 0\nb 1\n")
    write_description(folder, {"seqvis": 1, "kind": "tokens", "tokens": {"file": "tokens.h5", "path": "tokens"},
                               "vocab": "vocab.dict", "layers": [{"name": "h", "file": "states.h5", "path": "h"}]})
    started = time.perf_counter()
    with open_project(folder) as project:
        assert time.perf_counter() - started < 2.0
        assert project.name == "big" and len(project) == n and project.layers["h"].units == units
        assert project.words(n - 3, n) == ["b", "b", "b"]


def test_words_checks_its_arguments_and_the_vocabulary(tmp_path):
    make_seqvis_tokens(tmp_path / "p")
    (tmp_path / "p" / "vocab.dict").write_text("def 0\nf 1\n")  # ids 2.. are not in this vocabulary
    with open_project(tmp_path / "p") as project:
        with pytest.raises(ValueError, match="start=5, stop=3"):
            project.words(5, 3)
        with pytest.raises(ValueError, match="<= 120"):
            project.words(0, 121)
        with pytest.raises(TypeError, match="start must be an integer"):
            project.words(1.0, 3)
        with pytest.raises(ProjectError, match=r"tokens\.h5: dataset 'tokens': token id \d+ at position \d+"):
            project.words(0, 120)


# --- LSTMVis folders ---------------------------------------------------------------------------------------


def test_lstmvis_folder_opens_unchanged(tmp_path):
    written = make_lstmvis_folder(tmp_path / "lv")
    with open_project(tmp_path / "lv") as project:
        assert isinstance(project, TokenProject) and project.format == "lstmvis"
        assert (project.name, project.description) == ("toy lstmvis", "an LSTMVis folder written by the tests")
        assert len(project) == 240
        assert project.vocab == ["", *VOCAB]  # ids count from 1 as in LSTMVis's dictionaries
        assert project.words(0, 240) == written.words

        assert list(project.layers) == ["states1", "output1", "states2", "output2", "extra::cells2"]
        for name, path in [("states1", "states1"), ("output2", "output2"), ("extra::cells2", "cells2")]:
            np.testing.assert_array_equal(project.layers[name].dataset[:], written.states[path])
        assert (project.layers["states1"].transform, project.layers["states1"].unsigned) == ("tanh", False)
        assert project.layers["states2"].unsigned is True
        assert project.layers["output2"].transform == "none"

        pos = project.meta["part_of_speech"]
        assert (pos.type, pos.labels, pos.range) == ("discrete", ["", *TAGS], None)
        assert [pos.labels[i] for i in pos.dataset[:]] == written.tags
        assert (project.meta["depth"].type, project.meta["depth"].range) == ("scalar", (0.0, 4.0))
        prediction = project.meta["prediction"]
        assert prediction.type == "wordvec" and prediction.labels == ["", *VOCAB] and prediction.dataset.ndim == 2
        assert project.summary()["layers"][0] == {"name": "states1", "units": 6, "transform": "tanh", "unsigned": False}


def edit_lstm_yml(folder: Path, old: str, new: str) -> None:
    text = (folder / "lstm.yml").read_text()
    assert old in text
    (folder / "lstm.yml").write_text(text.replace(old, new))


def shorten(folder: Path, file: str, path: str) -> None:
    with h5py.File(folder / file, "a") as f:
        values = f[path][:-1]
        del f[path]
        f[path] = values


LSTMVIS_BREAKS = {
    "file key not in files": (lambda d: edit_lstm_yml(d, "file: train", "file: trian"), ["lstm.yml word_sequence",
                                                                                          "trian", "files"]),
    "missing states dataset": (lambda d: edit_lstm_yml(d, "path: output1", "path: output9"),
                               ["states.hdf5", "output9"]),
    "missing file": (lambda d: (d / "pos.dict").unlink(), ["pos.dict", "file not found"]),
    "states shorter than words": (lambda d: shorten(d, "states.hdf5", "states2"),
                                  ["states.hdf5", "states2", "239 rows", "240"]),
    "meta shorter than words": (lambda d: shorten(d, "pos.hdf5", "pos"), ["pos.hdf5", "'pos'", "239 rows"]),
    "range dict without a dict": (lambda d: edit_lstm_yml(d, "    dict: pos_dict\n", ""),
                                  ["lstm.yml meta.part_of_speech.vis", "range: dict"]),
    "indexed meta": (lambda d: edit_lstm_yml(d, "    path: depth\n", "    path: depth\n    index: word_sequence\n"),
                     ["lstm.yml meta.depth", "index"]),
    "bad transform": (lambda d: edit_lstm_yml(d, "transform: none", "transform: log"),
                      ["lstm.yml states.types[3]", "transform", "log"]),
}


@pytest.mark.parametrize("case", LSTMVIS_BREAKS)
def test_broken_lstmvis_folder_names_file_and_dataset(tmp_path, case):
    make_lstmvis_folder(tmp_path / "lv")
    breaks, expected = LSTMVIS_BREAKS[case]
    breaks(tmp_path / "lv")
    before = open_files()
    with pytest.raises(ProjectError) as failure:
        open_project(tmp_path / "lv")
    for part in expected:
        assert part in str(failure.value)
    assert open_files() == before  # files opened before the failure are closed again


# --- broken seqvis projects --------------------------------------------------------------------------------


def add_dataset(folder: Path, file: str, path: str, values: np.ndarray) -> None:
    with h5py.File(folder / file, "a") as f:
        f[path] = values


def use_layer(description: dict, file: str, path: str) -> None:
    description["layers"][0].update(file=file, path=path)


def seqvis_break(edit_description=None, edit_folder=None):
    def apply(folder: Path, description: dict) -> None:
        if edit_folder:
            edit_folder(folder)
        if edit_description:
            edit_description(description)
            write_description(folder, description)
    return apply


SEQVIS_BREAKS = {
    "missing file": (seqvis_break(lambda d: use_layer(d, "gone.h5", "x")), ["gone.h5", "file not found"]),
    "missing dataset": (seqvis_break(lambda d: use_layer(d, "states.h5", "lstm.l9.h")), ["states.h5", "lstm.l9.h"]),
    "group, not dataset": (seqvis_break(lambda d: use_layer(d, "states.h5", "grp"),
                                        lambda f: add_dataset(f, "states.h5", "grp/x", np.zeros((120, 2)))),
                           ["states.h5", "no dataset 'grp'"]),
    "states length": (seqvis_break(lambda d: use_layer(d, "states.h5", "short"),
                                   lambda f: add_dataset(f, "states.h5", "short", np.zeros((119, 5), np.float32))),
                      ["states.h5: dataset 'short'", "119 rows", "120"]),
    "meta length": (seqvis_break(lambda d: d["meta"]["doc"].update(path="long"),
                                 lambda f: add_dataset(f, "meta.h5", "long", np.zeros(121, np.int32))),
                    ["meta.h5: dataset 'long'", "meta 'doc'", "121 rows"]),
    "float tokens": (seqvis_break(lambda d: d["tokens"].update(path="floats"),
                                  lambda f: add_dataset(f, "tokens.h5", "floats", np.zeros(120, np.float32))),
                     ["tokens.h5: dataset 'floats'", "integers", "float32"]),
    "integer states": (seqvis_break(lambda d: use_layer(d, "tokens.h5", "tokens")),
                       ["tokens.h5: dataset 'tokens'", "layer 'lstm.l0.h'", "floats"]),
    "1-d states": (seqvis_break(lambda d: use_layer(d, "states.h5", "flat"),
                                lambda f: add_dataset(f, "states.h5", "flat", np.zeros(120, np.float32))),
                   ["states.h5: dataset 'flat'", "shaped [N, k]", "(120,)"]),
    "2-d discrete meta": (seqvis_break(lambda d: d["meta"]["doc"].update(path="top5")),
                          ["meta.h5: dataset 'top5'", "meta 'doc'", "shaped [N],"]),
    "string dataset": (seqvis_break(lambda d: d["tokens"].update(path="text"),
                                    lambda f: add_dataset(f, "tokens.h5", "text", np.array([b"a"] * 120))),
                       ["tokens.h5: dataset 'text'", "integers"]),
    "not hdf5": (seqvis_break(lambda d: use_layer(d, "notes.h5", "x"),
                              lambda f: (f / "notes.h5").write_text("plain text")),
                 ["notes.h5", "not a readable HDF5 file"]),
    "bad yaml": (seqvis_break(edit_folder=lambda f: (f / "seqvis.yml").write_text("seqvis: 1\nkind: [tokens\n")),
                 ["seqvis.yml: invalid YAML at line 3, column 1"]),
    "not a mapping": (seqvis_break(edit_folder=lambda f: (f / "seqvis.yml").write_text("- a\n- b\n")),
                      ["seqvis.yml", "expected a mapping"]),
    "unknown kind": (seqvis_break(lambda d: d.update(kind="movies")),
                     ["seqvis.yml", "unknown kind 'movies'", "seq2seq, tokens, units"]),
    "format version": (seqvis_break(lambda d: d.update(seqvis=2)), ["seqvis.yml", "seqvis: 2", "expected 1"]),
    "typo in a key": (seqvis_break(lambda d: d.update(layer=d.pop("layers"))), ["seqvis.yml", "unknown key(s) layer"]),
    "missing key": (seqvis_break(lambda d: d.pop("vocab")), ["seqvis.yml", "missing key 'vocab'"]),
    "escaping path": (seqvis_break(lambda d: use_layer(d, "../outside.h5", "lstm.l0.h")),
                      ["seqvis.yml layers[0]", "'../outside.h5' points outside the project folder"]),
    "absolute path": (seqvis_break(lambda d: use_layer(d, "/etc/hostname", "x")), ["/etc/hostname", "outside"]),
    "escaping vocab": (seqvis_break(lambda d: d.update(vocab="sub/../../vocab.dict")), ["seqvis.yml vocab", "outside"]),
    "bad transform": (seqvis_break(lambda d: d["layers"][1].update(transform="relu")),
                      ["seqvis.yml layers[1]", "transform", "tanh, none", "relu"]),
    "duplicate layer": (seqvis_break(lambda d: d["layers"][1].update(name="lstm.l0.h")),
                        ["seqvis.yml layers[1]", "lstm.l0.h", "twice"]),
    "bad meta type": (seqvis_break(lambda d: d["meta"]["doc"].update(type="colour")), ["meta.doc", "colour"]),
    "bad range": (seqvis_break(lambda d: d["meta"]["depth"].update(range=[8, 0])), ["meta.depth", "range"]),
    "wordvec with labels": (seqvis_break(lambda d: d["meta"]["top5"].update(labels=["x"])), ["meta.top5", "vocab"]),
    "bad dict line": (seqvis_break(edit_folder=lambda f: (f / "vocab.dict").write_text("def 0\nf one\n")),
                      ["vocab.dict line 2", "word id"]),
    "duplicate dict id": (seqvis_break(edit_folder=lambda f: (f / "vocab.dict").write_text("def 0\nf 0\n")),
                          ["vocab.dict line 2", "id 0"]),
}


@pytest.mark.parametrize("case", SEQVIS_BREAKS)
def test_broken_seqvis_project_names_file_and_dataset(tmp_path, case):
    description = make_seqvis_tokens(tmp_path / "p")
    add_dataset(tmp_path, "outside.h5", "lstm.l0.h", np.zeros((120, 5), np.float32))  # exists, but outside
    (tmp_path / "vocab.dict").write_text("x 0\n")
    breaks, expected = SEQVIS_BREAKS[case]
    breaks(tmp_path / "p", description)
    before = open_files()
    with pytest.raises(ProjectError) as failure:
        open_project(tmp_path / "p")
    for part in expected:
        assert part in str(failure.value)
    assert open_files() == before


# --- discovery ---------------------------------------------------------------------------------------------


def test_discover_keeps_good_projects_next_to_broken_ones(tmp_path):
    data = tmp_path / "data"
    make_seqvis_tokens(data / "a-good")
    make_lstmvis_folder(data / "b-lstmvis")
    make_seqvis_tokens(data / "c-broken", name="broken")
    (data / "c-broken" / "states.h5").unlink()
    make_lstmvis_folder(data / "d-both")  # seqvis.yml wins over lstm.yml
    write_description(data / "d-both", {"seqvis": 1, "kind": "tokens", "name": "both",
                                         "tokens": {"file": "train.hdf5", "path": "words"}, "vocab": "train.dict",
                                         "layers": [{"name": "c1", "file": "states.hdf5", "path": "states1"}]})
    (data / "e-not-a-project").mkdir()
    (data / "e-not-a-project" / "notes.txt").write_text("no description here")
    make_seqvis_tokens(data / ".hidden", name="hidden")
    (data / "loose-file.yml").write_text("seqvis: 1\n")

    projects, errors = discover(data)
    try:
        assert sorted(projects) == ["both", "charlm", "toy lstmvis"]
        assert projects["charlm"].path == data / "a-good"
        assert projects["both"].format == "seqvis" and list(projects["both"].layers) == ["c1"]
        assert projects["toy lstmvis"].format == "lstmvis"
        assert list(errors) == ["c-broken"]
        assert "states.h5: file not found" in errors["c-broken"]
    finally:
        for project in projects.values():
            project.close()


def test_discover_renames_a_duplicate_name_after_its_folder(tmp_path):
    make_seqvis_tokens(tmp_path / "one", name="same")
    make_seqvis_tokens(tmp_path / "two", name="same")
    projects, errors = discover(tmp_path)
    assert errors == {}
    assert {name: project.path.name for name, project in projects.items()} == {"same": "one", "same@two": "two"}
    assert projects["same@two"].summary()["name"] == "same@two"
    for project in projects.values():
        project.close()


def test_discover_needs_a_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_dir"):
        discover(tmp_path / "nowhere")


def test_files_are_unchanged_by_opening_and_reading(tmp_path):
    data = tmp_path / "data"
    make_seqvis_tokens(data / "p")
    make_lstmvis_folder(data / "lv")
    time.sleep(0.01)

    def snapshot() -> dict[Path, tuple[bytes, int]]:
        return {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in sorted(data.rglob("*"))
                if path.is_file()}

    before = snapshot()
    projects, errors = discover(data)
    assert not errors
    for project in projects.values():
        project.words(0, len(project))
        for layer in project.layers.values():
            layer.dataset[:10]
        for track in project.meta.values():
            track.dataset[-5:]
        project.summary()
        project.close()
    assert snapshot() == before


# --- seq2seq and units -------------------------------------------------------------------------------------


def make_model_project(folder: Path, kind: str) -> dict:
    folder.mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"\0" * 64)
    (folder / "train.txt").write_text("one\tun\n")
    description = {"seqvis": 1, "kind": kind, "name": f"{kind}-demo",
                   "model": {"factory": "seqvis.demo.models:build", "weights": "model.pt"},
                   "files": {"pairs": "train.txt"}}
    if kind == "units":
        (folder / "broden").mkdir()
        (folder / "broden" / "index.csv").write_text("image,split,ih,iw\nimages/a.png,train,8,8\n"
                                                     "images/b.png,train,8,8\nimages/c.png,val,8,8\n")
        description.update(dataset="broden", layers=["features.0", "layer4.1.conv2"])
    write_description(folder, description)
    return description


def test_seq2seq_project(tmp_path):
    make_model_project(tmp_path / "s", "seq2seq")
    with open_project(tmp_path / "s") as project:
        assert isinstance(project, Seq2SeqProject) and KINDS["seq2seq"] is Seq2SeqProject
        assert project.model.factory == "seqvis.demo.models:build" and project.model.weights == tmp_path / "s/model.pt"
        assert project.files == {"pairs": tmp_path / "s/train.txt"}
        assert project.summary() == {"kind": "seq2seq", "name": "seq2seq-demo", "description": "", "format": "seqvis",
                                     "extra": {}, "files": ["pairs"],
                                     "model": {"factory": "seqvis.demo.models:build", "weights": "model.pt",
                                               "weights_bytes": 64}}


def test_units_project(tmp_path):
    make_model_project(tmp_path / "u", "units")
    with open_project(tmp_path / "u") as project:
        assert isinstance(project, UnitsProject)
        assert project.dataset == tmp_path / "u/broden" and project.layers == ["features.0", "layer4.1.conv2"]
        summary = project.summary()
        assert (summary["kind"], summary["images"], summary["dataset"]) == ("units", 3, "broden")
        assert summary["layers"] == [{"name": "features.0"}, {"name": "layer4.1.conv2"}]


MODEL_BREAKS = {
    "missing weights": ("seq2seq", lambda d: d["model"].update(weights="gone.pt"), ["gone.pt", "file not found"]),
    "bad factory": ("seq2seq", lambda d: d["model"].update(factory="build"), ["seqvis.yml model", "factory"]),
    "no model": ("seq2seq", lambda d: d.pop("model"), ["seqvis.yml", "missing key 'model'"]),
    "files outside": ("seq2seq", lambda d: d["files"].update(vocab="../vocab.txt"),
                      ["seqvis.yml files.vocab", "outside"]),
    "missing file": ("units", lambda d: d["files"].update(tally="tally.csv"), ["tally.csv", "file not found"]),
    "tokens keys": ("seq2seq", lambda d: d.update(layers=["x"]), ["unknown key(s) layers"]),
    "dataset outside": ("units", lambda d: d.update(dataset="../broden"), ["seqvis.yml dataset", "outside"]),
    "no index.csv": ("units", lambda d: d.update(dataset="."), ["index.csv: file not found", "Broden"]),
    "bad layer name": ("units", lambda d: d.update(layers=["layer 4"]), ["seqvis.yml", "dotted module names"]),
    "no layers": ("units", lambda d: d.update(layers=[]), ["seqvis.yml", "layers"]),
}


@pytest.mark.parametrize("case", MODEL_BREAKS)
def test_broken_model_project(tmp_path, case):
    kind, edit, expected = MODEL_BREAKS[case]
    description = make_model_project(tmp_path / "m", kind)
    (tmp_path / "vocab.txt").write_text("x\n")
    (tmp_path / "broden").mkdir()
    edit(description)
    write_description(tmp_path / "m", description)
    with pytest.raises(ProjectError) as failure:
        open_project(tmp_path / "m")
    for part in expected:
        assert part in str(failure.value)
