"""The explorer API: context, select, match and search on real HDF5 projects, and every kind of bad input."""
from __future__ import annotations

import base64
import json
import urllib.request

import h5py
import numpy as np
import pytest

from core import search
from seqvis.explorer import Explorer
from seqvis.server import create_app
from tests._lstmvis import make_lstmvis_folder
from tests.conftest import LiveServer, make_token_project


@pytest.fixture
def app(data_dir):
    make_lstmvis_folder(data_dir / "lv", n_tokens=400, units=12, seed=3)
    planted = make_token_project(data_dir / "planted", name="planted", n_tokens=300, units=6, seed=1)
    with h5py.File(planted / "states.h5", "r+") as f:  # units 2 and 4 on over exactly [100, 110)
        states = f["rnn.l0.h"][...]
        states[:, [2, 4]] = -2.0
        states[100:110, [2, 4]] = 2.0
        f["rnn.l0.h"][...] = states
    return create_app({"DATA_DIR": str(data_dir)})


@pytest.fixture
def client(app):
    return app.test_client()


def get(client, path, status=200, **query):
    answer = client.get(path, query_string=query)
    assert answer.status_code == status, answer.get_json()
    return answer.get_json()


def states_of(data_dir, project, dataset):
    files = {"toy": "toy/states.h5", "planted": "planted/states.h5", "toy lstmvis": "lv/states.hdf5"}
    with h5py.File(data_dir / files[project], "r") as f:
        return f[dataset][...]


def test_context_gives_words_states_and_meta(client, data_dir):
    data = get(client, "/api/explorer/toy/context", layer="rnn.l0.h", start=10, stop=30)
    raw = states_of(data_dir, "toy", "rnn.l0.h")
    assert data["units"] == list(range(8)) and len(data["words"]) == 20
    np.testing.assert_allclose(data["states"], np.tanh(raw[10:30]).T, atol=1e-4)
    assert data["meta"]["doc"]["type"] == "discrete" and data["meta"]["depth"]["range"] == [0, 3]
    some = get(client, "/api/explorer/toy/context", layer="rnn.l0.h", start=10, stop=30, units="5,1",
               transform="none")
    np.testing.assert_allclose(some["states"], raw[10:30][:, [5, 1]].T, atol=1e-4)
    packed = get(client, "/api/explorer/toy/context", layer="rnn.l0.h", start=10, stop=30, encoding="float32")
    exact = np.frombuffer(base64.b64decode(packed["states"]), "<f4").reshape(8, 20)
    np.testing.assert_array_equal(exact, np.tanh(raw[10:30]).T)
    assert packed["words"] == data["words"] and packed["meta"] == data["meta"]


def test_select_finds_the_planted_units(client):
    base = dict(layer="rnn.l0.h", threshold=0.3)
    assert get(client, "/api/explorer/planted/select", b0=100, b1=110, **base)["units"] == [2, 4]
    # padding inside the on-range: the planted units are on there too, so they are not selected
    assert 2 not in get(client, "/api/explorer/planted/select", b0=102, b1=108, left=1, right=1, **base)["units"]
    assert get(client, "/api/explorer/planted/select", b0=102, b1=108, left=0, **base)["units"][:2] == [2, 4]


def test_match_finds_the_planted_run_first(client):
    data = get(client, "/api/explorer/planted/match", layer="rnn.l0.h", units="2,4")
    best = data["results"][0]
    assert (best["start"], best["stop"], best["on"]) == (100, 110, 2)
    assert best["context"]["words"] and best["context"]["on_counts"][5:15] == [2] * 10
    assert len(best["context"]["meta"]["doc"]["values"]) == best["context"]["stop"] - best["context"]["start"]
    assert data["histograms"]["strict"][10] == 1
    assert set(data["meta"]) == {"doc"} and sum(data["meta"]["doc"]["counts"]) >= 10


@pytest.mark.parametrize("project,layer", [("toy", "rnn.l0.c"), ("toy lstmvis", "states2")])
def test_match_with_index_equals_brute_force_over_the_float_states(app, data_dir, project, layer):
    """Whether the index is ready or not, the API answers what a scan of the float states answers, also at
    thresholds that equal stored values exactly."""
    raw = states_of(data_dir, project, layer)
    explorer = app.extensions["workspace"].service(project, Explorer)
    explorer.index(explorer.layer(layer), wait=True)
    values = np.tanh(raw)
    client = app.test_client()
    rng = np.random.default_rng(0)
    for trial in range(6):
        units = sorted(rng.choice(raw.shape[1], size=rng.integers(1, 5), replace=False).tolist())
        threshold = float(values[rng.integers(len(raw)), units[0]]) if trial % 2 else [0.3, -0.2, 0.55][trial // 2]
        data = get(client, f"/api/explorer/{project}/match", layer=layer, units=",".join(map(str, units)),
                   threshold=repr(threshold), left=str(trial % 2), top=500)
        assert data["index"]["status"] == "ready"
        expected = search.brute_force_match(raw, units, threshold, transform="tanh", constrain=(trial % 2 == 1, False),
                                            top=500)
        assert [(r["start"], r["stop"], r["on"], r["union"]) for r in data["results"]] == [
            (c.start, c.stop, c.selected_on, c.union) for c in expected.candidates]
        assert data["histograms"]["fuzzy"] == expected.fuzzy_lengths


def test_lstmvis_folder_is_explored_unchanged(client, data_dir):
    before = {p.name: p.read_bytes() for p in (data_dir / "lv").iterdir()}
    project = get(client, "/api/projects/toy lstmvis")
    assert project["kind"] == "tokens"
    data = get(client, "/api/explorer/toy lstmvis/context", layer="states2", start=0, stop=5)
    assert data["words"] == make_lstmvis_folder(data_dir / "copy", n_tokens=400, units=12, seed=3).words[:5]
    assert data["meta"]["part_of_speech"]["labels"]
    get(client, "/api/explorer/toy lstmvis/match", layer="states2", units="0,1")
    assert {p.name: p.read_bytes() for p in (data_dir / "lv").iterdir()} == before


def test_search_phrases_and_regular_expressions(client):
    words = get(client, "/api/explorer/toy/context", layer="rnn.l0.h", start=0, stop=500)["words"]
    phrase = " ".join(words[40:42])
    hits = get(client, "/api/explorer/toy/search", q=phrase)["hits"]
    assert {"start": 40, "stop": 42} in hits
    assert all(words[h["start"]:h["stop"]] == words[40:42] for h in hits)
    regex = get(client, "/api/explorer/toy/search", q=r"\( \w+ \)", regex="1")
    assert regex["complete"] and all(words[h["start"]] == "(" and words[h["stop"] - 1] == ")" for h in regex["hits"])
    assert len(get(client, "/api/explorer/toy/search", q="the", limit=3)["hits"]) == 3


BAD = [
    ("/api/explorer/nope/context", dict(layer="rnn.l0.h", start=0, stop=5), 404, "nope"),
    ("/api/explorer/toy/context", dict(layer="l9", start=0, stop=5), 404, "l9"),
    ("/api/explorer/toy/context", dict(layer="rnn.l0.h", start=0, stop=5, units="3,99"), 400, "units"),
    ("/api/explorer/toy/context", dict(layer="rnn.l0.h", start=9, stop=5), 400, "range"),
    ("/api/explorer/toy/context", dict(layer="rnn.l0.h", start=490, stop=510), 400, "range"),
    ("/api/explorer/toy/context", dict(layer="rnn.l0.h", start="ten", stop=5), 400, "start"),
    ("/api/explorer/toy/context", dict(layer="rnn.l0.h", start=0, stop=5000), 400, "range"),
    ("/api/explorer/toy/context", dict(layer="rnn.l0.h", start=0, stop=5, transform="log"), 400, "transform"),
    ("/api/explorer/toy/context", dict(start=0, stop=5), 400, "layer"),
    ("/api/explorer/toy/context", dict(layer="rnn.l0.h", start=0, stop=5, encoding="f16"), 400, "encoding"),
    ("/api/explorer/toy/select", dict(layer="rnn.l0.h", b0=20, b1=10), 400, "range"),
    ("/api/explorer/toy/select", dict(layer="rnn.l0.h", b0=-3, b1=10), 400, "range"),
    ("/api/explorer/toy/select", dict(layer="rnn.l0.h", b0=0, b1=10), 400, "padding"),
    ("/api/explorer/toy/select", dict(layer="rnn.l0.h", b0=5, b1=10, threshold=1.5), 400, "threshold"),
    ("/api/explorer/toy/select", dict(layer="rnn.l0.h", b0=5, b1=10, threshold="nan"), 400, "threshold"),
    ("/api/explorer/toy/select", dict(layer="rnn.l0.h", b0=5, b1=10, left=-1), 400, "left"),
    ("/api/explorer/toy/match", dict(layer="rnn.l0.h", units=",".join(map(str, range(1000)))), 400, "units"),
    ("/api/explorer/toy/match", dict(layer="rnn.l0.h", units=",".join(map(str, range(1001)))), 400, "units"),
    ("/api/explorer/toy/match", dict(layer="rnn.l0.h", units="1,x"), 400, "units"),
    ("/api/explorer/toy/match", dict(layer="rnn.l0.h", units="1", threshold=-2), 400, "threshold"),
    ("/api/explorer/toy/match", dict(layer="rnn.l0.h", units="1", left="yes"), 400, "left"),
    ("/api/explorer/toy/match", dict(layer="rnn.l0.h", units=""), 400, "units"),
    ("/api/explorer/toy/search", dict(q="(", regex="1"), 400, "query"),
    ("/api/explorer/toy/search", dict(q=""), 400, "query"),
    ("/api/explorer/toy/search", dict(q="the", limit=0), 400, "limit"),
]


@pytest.mark.parametrize("path,query,status,named", BAD, ids=[f"{p.rsplit('/', 1)[1]}-{i}" for i, (p, *_) in
                                                             enumerate(BAD)])
def test_bad_input_is_a_4xx_naming_the_problem(client, path, query, status, named):
    error = get(client, path, status, **query)["error"]
    assert named in error["message"] and error["code"]


def test_a_project_of_another_kind_is_refused(data_dir):
    (data_dir / "words").mkdir()
    (data_dir / "words" / "model.pt").write_bytes(b"")
    (data_dir / "words" / "seqvis.yml").write_text(
        "seqvis: 1\nkind: seq2seq\nname: words\nmodel: {factory: 'pkg.mod:make', weights: model.pt}\n")
    client = create_app({"DATA_DIR": str(data_dir)}).test_client()
    error = get(client, "/api/explorer/words/context", 400, layer="x", start=0, stop=1)["error"]
    assert error == {"code": "wrong_kind", "message": "project 'words' is a seq2seq project, not tokens"}


def test_a_broken_project_is_not_served(client):
    error = get(client, "/api/explorer/broken/context", 404, layer="x", start=0, stop=1)["error"]
    assert error["code"] == "unknown_project"


def test_context_over_http_on_waitress(app):
    server = LiveServer(app)
    try:
        url = f"{server.url}api/explorer/toy%20lstmvis/context?layer=states1&start=100&stop=300"
        with urllib.request.urlopen(url, timeout=10) as answer:
            data = json.load(answer)
        assert len(data["states"]) == 12 and len(data["states"][0]) == 200
    finally:
        server.close()


def test_labels_are_computed_once_in_the_background_and_name_the_planted_concept(data_dir):
    """Unit 3 of the toy project is planted to follow `depth >= 2`; its label says so, above the baseline."""
    with h5py.File(data_dir / "toy" / "meta.h5", "r") as f:
        depth = f["depth"][...]
    with h5py.File(data_dir / "toy" / "states.h5", "r+") as f:
        states = f["rnn.l0.h"][...]
        states[:, 3] = np.where(depth >= 2, 1.5, -1.5) + 0.1 * np.random.default_rng(0).standard_normal(len(depth))
        f["rnn.l0.h"][...] = states
    app = create_app({"DATA_DIR": str(data_dir)})
    client = app.test_client()
    first = get(client, "/api/explorer/toy/labels", layer="rnn.l0.h")
    assert first["status"] in ("building", "ready")
    app.extensions["workspace"].service("toy", Explorer).labels("rnn.l0.h", wait=True)
    data = get(client, "/api/explorer/toy/labels", layer="rnn.l0.h")
    assert data["status"] == "ready" and len(data["units"]) == 8
    label = data["units"][3]
    assert (label["label"], label["direction"], label["iou"]) == ("depth>=2", 1, 1.0)
    assert label["baseline_iou"] < 0.7
    best = {concept["label"]: concept["unit"] for concept in data["concepts"]}
    assert best["depth>=2"] == 3
    unit = get(client, "/api/explorer/toy/unit", layer="rnn.l0.h", unit=3, k=4)
    assert unit["labels"][0]["label"] == "depth>=2" and len(unit["top"]) == 4
    assert all(depth[context["position"]] >= 2 for context in unit["top"])
    assert all(depth[context["position"]] < 2 for context in unit["bottom"])
    assert get(client, "/api/explorer/toy/unit", 400, layer="rnn.l0.h", unit=8)["error"]["message"].startswith("units")
    assert "by" in get(client, "/api/explorer/toy/labels", 400, layer="rnn.l0.h", by="f1")["error"]["message"]
