"""The translate API through Flask's test client: translate, what-if, substitutes, and bad input answered 4xx."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
import yaml

from seqvis.demo import translate as demo
from seqvis.progress import Progress
from seqvis.server import create_app
from seqvis.translate.service import Translator
from seqvis.vocab import write_dict
from tests.conftest import make_token_project
from tests.test_translate import GruAdapter, GruModel, one_thread  # noqa: F401 (a fixture)

SOURCE = "<fr> Tuesday, March 5, 2024"


def write_project(folder, factory: str, weights: dict, files: dict[str, list[str]]) -> None:
    folder.mkdir(parents=True)
    torch.save(weights, folder / "model.pt")
    for name, words in files.items():
        write_dict(folder / f"{name}.dict", words)
    config = {"seqvis": 1, "kind": "seq2seq", "name": folder.name, "description": "written by the tests",
              "model": {"factory": factory, "weights": "model.pt"},
              "files": {name: f"{name}.dict" for name in files}, "extra": {"examples": [SOURCE]}}
    (folder / "seqvis.yml").write_text(yaml.safe_dump(config), encoding="utf-8")


def gru_adapter(project) -> GruAdapter:
    """A factory for a model of another architecture: the test GRU encoder-decoder without attention."""
    model = GruModel()
    model.load_state_dict(torch.load(project.model.weights, weights_only=True))
    return GruAdapter(model)


class MaskingGruAdapter(GruAdapter):
    """Rules out the target word "z" (log-probability -inf), as models that mask words do."""

    def step(self, memory, state, previous):
        log_probs, attention, state = super().step(memory, state, previous)
        return log_probs.index_fill(1, torch.tensor([4]), -torch.inf).log_softmax(-1), attention, state


def masking_gru_adapter(project) -> MaskingGruAdapter:
    return MaskingGruAdapter(gru_adapter(project).model)


PAIRS = [demo.date_pair(day, language, form) for day in (demo.FIRST_DAY, demo.LAST_DAY)
         for language in demo.LANGUAGES for form in demo.FORMATS]
PAIRS.append(demo.date_pair(__import__("datetime").date(2024, 3, 5), "fr", "full"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A data folder with an (untrained) demo-architecture model and the states of its training pairs (PAIRS),
    the GRU model and a token project."""
    data = tmp_path_factory.mktemp("data")
    source = [demo.PAD, *sorted({w for s, _ in PAIRS for w in s} | {"April", "<de>"})]
    target = [demo.PAD, demo.BOS, demo.EOS, *sorted({w for _, t in PAIRS for w in t})]
    torch.manual_seed(0)
    model = demo.DateTranslator(len(source), len(target), embedding=8, encoder=8, decoder=16).eval()
    folder = data / "dates"
    write_project(folder, "seqvis.demo.translate:load_adapter", model.state_dict(),
                  {"source_vocab": source, "target_vocab": target})
    demo.write_states(folder / "states.h5", model, [[source.index(w) for w in s] for s, _ in PAIRS],
                      [[target.index(w) for w in t] for _, t in PAIRS], target.index(demo.BOS),
                      target.index(demo.EOS), Progress(stream=None))
    config = yaml.safe_load((folder / "seqvis.yml").read_text(encoding="utf-8"))
    config["files"]["states"] = "states.h5"
    (folder / "seqvis.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    write_project(data / "gru", "tests.test_translate_api:gru_adapter", GruModel().state_dict(), {})
    write_project(data / "masked", "tests.test_translate_api:masking_gru_adapter", GruModel().state_dict(), {})
    make_token_project(data / "toy")
    return data


@pytest.fixture(scope="module")
def client(data):
    return create_app({"DATA_DIR": str(data)}).test_client()


def ok(answer) -> dict:
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


def test_info(client):
    info = ok(client.get("/api/translate/dates/info"))
    assert info["has_attention"] and info["embeddings"] and info["neighbours"] and info["examples"] == [SOURCE]
    gru = ok(client.get("/api/translate/gru/info"))
    assert gru["has_attention"] is False and gru["neighbours"] is False


def test_translate_returns_every_stage(client):
    data = ok(client.get("/api/translate/dates/translate", query_string={
        "source": SOURCE, "beam": 4, "n_best": 3, "top_k": 6, "max_length": 12}))
    source = data["source"]
    assert source["tokens"] == ["<fr>", "Tuesday", ",", "March", "5", ",", "2024"]
    assert np.array(source["states"]).shape == (7, 16)          # bidirectional 2 x 8
    assert len(data["hypotheses"]) == 3 and data["has_attention"]
    scores = [h["normalized"] for h in data["hypotheses"]]
    assert scores == sorted(scores, reverse=True)
    for h in data["hypotheses"]:
        steps = len(h["tokens"])
        assert np.array(h["attention"]).shape == (steps, 7)
        assert np.allclose(np.array(h["attention"]).sum(axis=1), 1, atol=1e-3)
        assert np.array(h["states"]).shape == (steps, 16)
        assert len(h["top"]) == steps and all(len(top["tokens"]) == 6 for top in h["top"])
        assert h["score"] == pytest.approx(sum(h["log_probs"]), abs=1e-3)
    nodes = {node["id"]: node for node in data["tree"]}
    assert nodes[0]["parent"] is None and nodes[0]["token"] == demo.BOS
    best = data["hypotheses"][0]
    assert nodes[best["node"]]["rank"] == 0
    assert data["settings"]["width"] == 4 and data["settings"]["search"] == "beam"


def test_greedy_and_post(client):
    data = ok(client.post("/api/translate/dates/translate", json={"source": SOURCE, "beam": 1}))
    assert data["settings"]["search"] == "greedy" and len(data["hypotheses"]) == 1
    assert not [node for node in data["tree"] if node["end"] == "pruned"]


def test_whatif_forces_a_prefix_and_edits_attention(client):
    words = ["mardi", "5"]
    weights = [0, 0, 0, 0, 3, 0, 1]
    data = ok(client.post("/api/translate/dates/whatif", json={
        "source": SOURCE, "prefix": " ".join(words), "attention": [{"step": 1, "weights": weights}],
        "max_length": 8}))
    edited, original = data["edited"]["hypotheses"][0], data["original"]["hypotheses"][0]
    assert edited["tokens"][:2] == words
    assert edited["attention"][1] == pytest.approx([0, 0, 0, 0, 0.75, 0, 0.25])
    assert data["edits"]["prefix"] == words and data["edits"]["attention"]["1"] == pytest.approx(
        [0, 0, 0, 0, 0.75, 0, 0.25])
    plain = ok(client.get("/api/translate/dates/translate", query_string={"source": SOURCE, "max_length": 8}))
    assert original["tokens"] == plain["hypotheses"][0]["tokens"]


def test_whatif_swaps_a_word_and_substitutes_are_offered(client):
    offered = ok(client.get("/api/translate/dates/substitutes", query_string={"source": SOURCE, "position": 3,
                                                                                 "k": 5}))
    assert offered["word"] == "March" and len(offered["neighbours"]) == 5
    assert "March" not in [n["word"] for n in offered["neighbours"]]
    assert demo.PAD not in [n["word"] for n in offered["neighbours"]]
    similarities = [n["similarity"] for n in offered["neighbours"]]
    assert similarities == sorted(similarities, reverse=True)
    data = ok(client.post("/api/translate/dates/whatif", json={"source": SOURCE, "swap": {"position": 3,
                                                                                          "word": "April"}}))
    assert data["original"]["source"]["tokens"][3] == "March" and data["edited"]["source"]["tokens"][3] == "April"
    assert data["edits"]["swap"] == {"position": 3, "from": "March", "to": "April"}


def test_a_model_without_attention_says_so(client):
    data = ok(client.get("/api/translate/gru/translate", query_string={"source": "a b c", "beam": 3}))
    assert data["has_attention"] is False and data["hypotheses"][0]["attention"] is None
    answer = client.post("/api/translate/gru/whatif", json={"source": "a b c",
                                                            "attention": [{"step": 0, "weights": [1, 0, 0]}]})
    assert answer.status_code == 400
    assert "no attention" in answer.get_json()["error"]["message"]
    assert ok(client.post("/api/translate/gru/whatif", json={"source": "a b c", "prefix": "x y"}))[
        "edited"]["hypotheses"][0]["tokens"][:2] == ["x", "y"]


def test_ruled_out_words_are_valid_json(client):
    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    answer = client.get("/api/translate/masked/translate", query_string={"source": "a b", "top_k": 5, "beam": 2})
    assert answer.status_code == 200
    data = json.loads(answer.data, parse_constant=refuse)
    assert data["hypotheses"][0]["top"][0]["tokens"][-1] == "z"
    assert data["hypotheses"][0]["top"][0]["log_probs"][-1] is None
    answer = client.post("/api/translate/masked/whatif", json={"source": "a b", "prefix": "z"})
    assert json.loads(answer.data, parse_constant=refuse)["edited"]["hypotheses"][0]["score"] is None


BAD_TRANSLATE = [
    ({"source": ""}, "source: is empty"),
    ({"source": "   "}, "source: is empty"),
    ({"source": " ".join(["March"] * 101)}, "source: has 101 tokens, at most 100 allowed"),
    ({"source": "<fr> Smarch 5, 2024"}, "source: unknown source token(s) 'Smarch'"),
    ({}, "source: is required"),
    ({"source": SOURCE, "beam": 0}, "beam: must be at least 1"),
    ({"source": SOURCE, "beam": 2, "n_best": 3}, "n_best: must be at most 2"),
    ({"source": SOURCE, "top_k": 0}, "top_k: must be at least 1"),
    ({"source": SOURCE, "max_length": 500}, "max_length: must be at most 200"),
    ({"source": SOURCE, "length_norm": "x"}, "length_norm: must be a finite number"),
]


@pytest.mark.parametrize("query, message", BAD_TRANSLATE)
def test_bad_translate_requests_name_the_problem(client, query, message):
    answer = client.get("/api/translate/dates/translate", query_string=query)
    assert answer.status_code == 400
    assert message in answer.get_json()["error"]["message"]


BAD_WHATIF = [
    ({"source": SOURCE, "prefix": "mardi Mars"}, "prefix: unknown target token(s) 'Mars'"),
    ({"source": SOURCE, "prefix": "mardi 5 mars", "max_length": 2}, "prefix: has 3 tokens, more than max_length 2"),
    ({"source": SOURCE, "attention": [{"step": 60, "weights": [1] * 7}]}, "attention: step 60 is out of range (0..49)"),
    ({"source": SOURCE, "attention": [{"step": 0, "weights": [1, 1]}]},
     "attention: step 0 has 2 weights, the source has 7 tokens"),
    ({"source": SOURCE, "attention": [{"step": 0, "weights": [1, -1, 0, 0, 0, 0, 0]}]},
     "attention: step 0 has a negative weight"),
    ({"source": SOURCE, "attention": [{"step": 0, "weights": [0] * 7}]}, "attention: step 0 sums to 0"),
    ({"source": SOURCE, "attention": [{"step": 0, "weights": ["a"] * 7}]}, "attention[0].weights: must be a list"),
    ({"source": SOURCE, "attention": [{"step": 0}]}, "attention[0]: must be an object with exactly the keys"),
    ({"source": SOURCE, "attention": [{"step": 0, "weights": [1] * 7}, {"step": 0, "weights": [1] * 7}]},
     "attention[1].step: step 0 is edited twice"),
    ({"source": SOURCE, "attention": {"0": [1] * 7}}, "attention: must be a list"),
    ({"source": SOURCE, "swap": {"position": 7, "word": "April"}}, "swap: position 7 is not a source position (0..6)"),
    ({"source": SOURCE, "swap": {"position": 3, "word": "Avril"}}, "swap: unknown source token(s) 'Avril'"),
    ({"source": SOURCE, "swap": {"position": 3, "word": "April May"}}, "swap: has 2 tokens, at most 1 allowed"),
    ({"source": SOURCE, "swap": {"position": "3", "word": "April"}}, "swap.position: must be an integer"),
]


@pytest.mark.parametrize("body, message", BAD_WHATIF)
def test_bad_whatif_requests_name_the_problem(client, body, message):
    answer = client.post("/api/translate/dates/whatif", json=body)
    assert answer.status_code == 400
    assert message in answer.get_json()["error"]["message"]


def test_bad_requests_around_the_routes(client):
    answer = client.post("/api/translate/dates/whatif", data="source=x")
    assert answer.status_code == 400 and "JSON object" in answer.get_json()["error"]["message"]
    answer = client.get("/api/translate/nope/translate", query_string={"source": SOURCE})
    assert answer.status_code == 404 and answer.get_json()["error"]["code"] == "unknown_project"
    answer = client.get("/api/translate/toy/translate", query_string={"source": SOURCE})
    assert answer.status_code == 400 and "is a tokens project, not seq2seq" in answer.get_json()["error"]["message"]
    answer = client.get("/api/translate/dates/substitutes", query_string={"source": SOURCE, "position": 9})
    assert answer.status_code == 400 and "position: 9 is not a source position" in answer.get_json()["error"]["message"]
    answer = client.get("/api/translate/gru/substitutes", query_string={"source": "a b", "position": 0, "k": 500})
    assert answer.status_code == 400 and "k: must be at most 100" in answer.get_json()["error"]["message"]


# -- neighbours ------------------------------------------------------------------------------------------------
def cosine_scan(states: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The plain reference: cosine against every stored row in float64, best first, ties by row."""
    x, q = states.astype(np.float64), np.asarray(query, dtype=np.float64)
    similarity = x @ q / (np.linalg.norm(x, axis=1) * np.linalg.norm(q))
    order = np.lexsort((np.arange(len(x)), -similarity))[:k]
    return order, similarity[order]


@pytest.mark.parametrize("side", ["encoder", "decoder"])
def test_a_training_pair_finds_its_own_states_first(client, data, side):
    pair = len(PAIRS) - 1
    source, target = PAIRS[pair]
    position = 3
    answer = ok(client.get("/api/translate/dates/neighbours", query_string={
        "source": demo.detokenize(source), "side": side, "position": position, "target": " ".join([*target, demo.EOS]),
        "k": 5}))
    assert answer["tokens"] == (source if side == "encoder" else [*target, demo.EOS])
    best = answer["neighbours"][0]
    assert (best["pair"], best["position"]) == (pair, position)
    assert best["similarity"] == pytest.approx(1, abs=1e-4)
    assert best["source"] == source and best["target"] == [*target, demo.EOS]
    assert best["xy"] == pytest.approx(answer["xy"], abs=1e-3)     # its state sits where the query does
    with h5py.File(data / "dates" / "states.h5", "r") as f:
        stored = f[f"{side}/states"][:]
        rows, similarities = cosine_scan(stored, stored[best["row"]], 5)
        assert [n["row"] for n in answer["neighbours"]] == rows.tolist()
        assert [n["similarity"] for n in answer["neighbours"]] == pytest.approx(similarities.tolist(), abs=1e-3)
        for neighbour in answer["neighbours"]:
            assert f[f"{side}/sentence"][neighbour["row"]] == neighbour["pair"]
            assert f[f"{side}/position"][neighbour["row"]] == neighbour["position"]


def test_neighbours_of_a_new_sentence_are_exact_and_placed_on_a_fixed_map(client, data):
    query = {"source": SOURCE.replace("March", "April"), "side": "encoder", "position": 3, "k": 100}
    answer = ok(client.get("/api/translate/dates/neighbours", query_string=query))
    with h5py.File(data / "dates" / "states.h5", "r") as f:
        stored = f["encoder/states"][:]
    states = np.array(ok(client.get("/api/translate/dates/translate", query_string={
        "source": query["source"], "max_length": 1}))["source"]["states"])
    rows, similarities = cosine_scan(stored, states[3], len(stored))
    assert [n["row"] for n in answer["neighbours"]] == rows.tolist()          # k beyond the index: all of it
    assert [n["similarity"] for n in answer["neighbours"]] == pytest.approx(similarities.tolist(), abs=1e-3)
    trajectory = np.array(answer["trajectory"])
    assert trajectory.shape == (len(answer["tokens"]), 2) and answer["xy"] == answer["trajectory"][3]
    assert answer["map"]["states"] == len(stored) and len(answer["map"]["points"]) == len(stored)
    cache = data / ".cache" / "dates"
    built = {path: path.stat().st_mtime_ns for path in cache.glob("*.index")}
    again = create_app({"DATA_DIR": str(data)}).test_client()        # a new server reopens the cached index
    assert ok(again.get("/api/translate/dates/neighbours", query_string=query)) == answer
    assert {path: path.stat().st_mtime_ns for path in cache.glob("*.index")} == built


def test_decoder_neighbours_follow_attention_edits(client):
    query = {"source": SOURCE, "side": "decoder", "position": 1, "target": "mardi 5 mars", "k": 3}
    plain = ok(client.post("/api/translate/dates/neighbours", json=query))
    edited = ok(client.post("/api/translate/dates/neighbours", json={
        **query, "attention": [{"step": 1, "weights": [0, 0, 0, 1, 0, 0, 0]}]}))
    assert plain["trajectory"][0] == edited["trajectory"][0] and plain["xy"] != edited["xy"]
    assert plain["tokens"] == edited["tokens"] == ["mardi", "5", "mars"]


BAD_NEIGHBOURS = [
    ({"side": "middle", "position": 0}, "side: must be one of encoder, decoder"),
    ({"side": "encoder", "position": 7}, "position: 7 is not a position of the encoder tokens (0..6)"),
    ({"side": "encoder"}, "position: is required"),
    ({"side": "decoder", "position": 0}, "target: the decoder side needs the output words"),
    ({"side": "decoder", "position": 0, "target": "mardi Mars"}, "target: unknown target token(s) 'Mars'"),
    ({"side": "decoder", "position": 0, "target": "mardi </s> 5"}, "target: only the last word may be the end"),
    ({"side": "decoder", "position": 2, "target": "mardi 5"}, "position: 2 is not a position of the decoder"),
    ({"side": "encoder", "position": 0, "k": 0}, "k: must be at least 1"),
    ({"side": "encoder", "position": 0, "source": ""}, "source: is empty"),
    ({"side": "encoder", "position": 0, "attention": [{"step": 0, "weights": [1] * 7}]},
     "attention: edits change decoder states only"),
    ({"side": "decoder", "position": 0, "target": "mardi", "attention": [{"step": 1, "weights": [1] * 7}]},
     "attention: step 1 is out of range (0..0)"),
]


@pytest.mark.parametrize("body, message", BAD_NEIGHBOURS)
def test_bad_neighbour_requests_name_the_problem(client, body, message):
    answer = client.post("/api/translate/dates/neighbours", json={"source": SOURCE, **body})
    assert answer.status_code == 400
    assert message in answer.get_json()["error"]["message"]


def test_a_project_without_training_states_says_so(client):
    answer = client.get("/api/translate/gru/neighbours", query_string={"source": "a b", "side": "encoder",
                                                                       "position": 0})
    assert answer.status_code == 404 and "stores no training states" in answer.get_json()["error"]["message"]


def test_token_concepts_of_a_conversion_task():
    from seqvis.translate.labels import token_concepts

    words = ["Tuesday", ",", "March", "5", ",", "2024", "mardi", "5", "mars", "2024"]
    positions, lengths = np.array([0, 1, 2, 3, 4, 5, 0, 1, 2, 3]), np.array([6] * 6 + [4] * 4)
    names, categories, of, masks = token_concepts(words, positions, lengths)
    concept = {name: masks[:, i] for i, name in enumerate(names)}
    assert categories == ["word class", "word", "position"]
    assert concept["digits"].tolist() == [w.isdigit() for w in words]
    assert np.flatnonzero(concept["month name"]).tolist() == [2, 8]
    assert np.flatnonzero(concept["weekday name"]).tolist() == [0, 6]
    assert np.flatnonzero(concept["punctuation"]).tolist() == [1, 4]
    assert np.flatnonzero(concept["position last"]).tolist() == [5, 9]
    assert np.flatnonzero(concept["'2024'"]).tolist() == [5, 9]
    assert [categories[of[names.index(n)]] for n in ("digits", "'2024'", "position =0")] == categories


@pytest.mark.parametrize("side", ["encoder", "decoder"])
def test_unit_labels_of_both_sides(client, data, side):
    app_translator = client.application.extensions["workspace"].service("dates", Translator)
    app_translator.labels(side, wait=True)
    labels = ok(client.get(f"/api/translate/dates/labels?side={side}&by=ap"))
    dims = app_translator.training.file[f"{side}/states"].shape[1]
    assert labels["status"] == "ready" and labels["ranked_by"] == "ap" and len(labels["units"]) == dims
    named = {concept["label"] for concept in labels["concepts"]}
    assert {"digits", "month name", "position =0", "position last"} <= named
    best = labels["units"][0][0]
    assert {"unit", "label", "category", "iou", "ap", "direction", "baseline_iou"} <= set(best)
    assert client.get("/api/translate/dates/labels?side=middle").status_code == 400
    assert client.get("/api/translate/gru/labels?side=encoder").status_code == 404
