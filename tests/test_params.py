"""Request parameter readers: good values pass, bad ones answer 400 naming the parameter."""
from __future__ import annotations

import pytest
from flask import Flask

from seqvis.server import errors, params
from seqvis.server.errors import ApiError

app = Flask(__name__)


def read(reader, query="", json=None, **kwargs):
    with app.test_request_context("/?" + query, json=json):
        return reader(**kwargs)


def rejected(reader, query="", json=None, **kwargs) -> str:
    with pytest.raises(ApiError) as failure:
        read(reader, query, json, **kwargs)
    assert failure.value.status == 400
    return failure.value.message


def test_integers_from_query_and_json():
    assert read(params.integer, "n=5", name="n") == 5
    assert read(params.integer, json={"n": 7}, name="n") == 7
    assert read(params.integer, name="n", default=3) == 3
    assert read(params.integers, "units=1,2,3", name="units") == [1, 2, 3]
    assert read(params.integers, json={"units": [4, 5]}, name="units") == [4, 5]


@pytest.mark.parametrize("query", ["n=abc", "n=1.5", "n=", "n=nan"])
def test_bad_integer_names_the_parameter(query):
    assert rejected(params.integer, query, name="n").startswith("n: ")


def test_missing_and_out_of_range():
    assert rejected(params.integer, name="n") == "n: is required"
    assert "at most 10" in rejected(params.integer, "n=11", name="n", hi=10)
    assert "at least -1" in rejected(params.number, "t=-2", name="t", lo=-1, hi=1)
    assert "finite" in rejected(params.number, "t=inf", name="t")
    assert "finite" in rejected(params.number, json={"t": True}, name="t")


def test_integer_lists_are_bounded_and_checked():
    assert "at most 1000" in rejected(params.integers, "u=" + ",".join(["1"] * 1001), name="u")
    assert rejected(params.integers, "u=1,x", name="u").startswith("u: must be a list of integers")
    assert "at most 9" in rejected(params.integers, "u=1,10", name="u", hi=9)
    assert rejected(params.integers, json={"u": {"a": 1}}, name="u").startswith("u: ")


def test_choice_and_string():
    assert read(params.choice, "m=tanh", name="m", options=["tanh", "none"]) == "tanh"
    assert "one of tanh, none" in rejected(params.choice, "m=x", name="m", options=["tanh", "none"])
    assert "longer than 3" in rejected(params.string, "s=abcd", name="s", max_length=3)


def test_unexpected_errors_answer_json_500_without_details():
    broken = Flask(__name__)
    errors.install(broken)

    @broken.get("/boom")
    def boom():
        raise RuntimeError("secret detail")

    answer = broken.test_client().get("/boom")
    assert answer.status_code == 500
    assert "secret" not in answer.get_data(as_text=True)
    assert answer.get_json()["error"]["code"] == "internal_error"
