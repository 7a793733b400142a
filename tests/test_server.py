"""The server skeleton: project listing, the JSON error convention, static pages, a real waitress server."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from seqvis.server import create_app


@pytest.fixture
def client(data_dir):
    return create_app({"DATA_DIR": str(data_dir)}).test_client()


def test_projects_lists_good_and_broken(client):
    data = client.get("/api/projects").get_json()
    assert [p["name"] for p in data["projects"]] == ["toy"]
    toy = data["projects"][0]
    assert toy["kind"] == "tokens" and toy["tokens"] == 500
    assert [layer["name"] for layer in toy["layers"]] == ["rnn.l0.h", "rnn.l0.c"]
    assert [b["folder"] for b in data["broken"]] == ["broken"]
    assert "missing.h5" in data["broken"][0]["error"]


def test_one_project_and_unknown_project(client):
    assert client.get("/api/projects/toy").get_json()["name"] == "toy"
    answer = client.get("/api/projects/nope")
    assert answer.status_code == 404
    assert answer.get_json() == {"error": {"code": "unknown_project", "message": "unknown project 'nope'"}}


@pytest.mark.parametrize("path", ["/api/nothing-here", "/../pyproject.toml", "/%2e%2e/pyproject.toml",
                                  "/js/../../pyproject.toml"])
def test_unknown_paths_are_json_404s(client, path):
    answer = client.get(path)
    assert answer.status_code == 404
    assert answer.get_json()["error"]["code"] == "not_found"


def test_wrong_method_is_json_405(client):
    answer = client.post("/api/projects")
    assert answer.status_code == 405
    assert answer.get_json()["error"]["code"] == "method_not_allowed"


def test_api_description_lists_routes_with_docs(client):
    routes = {route["path"]: route for route in client.get("/api").get_json()["routes"]}
    assert "/api/projects" in routes and routes["/api/projects"]["methods"] == ["GET"]
    assert routes["/api/projects"]["doc"]


def test_index_page_and_assets_are_served(client):
    assert b"seqvis" in client.get("/").data
    assert client.get("/js/index.js").status_code == 200
    assert client.get("/css/seqvis.css").status_code == 200


def test_real_waitress_server_answers(live_server):
    with urllib.request.urlopen(live_server.url + "api/projects", timeout=10) as answer:
        assert answer.headers["Server"] == "waitress"
        assert [p["name"] for p in json.load(answer)["projects"]] == ["toy"]
    with pytest.raises(urllib.error.HTTPError) as failure:
        urllib.request.urlopen(live_server.url + "api/projects/nope", timeout=10)
    assert failure.value.code == 404
    assert json.load(failure.value)["error"]["code"] == "unknown_project"
