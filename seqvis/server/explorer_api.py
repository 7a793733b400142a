"""Hidden-state explorer routes: /api/explorer/<project>/{context,select,match,search,labels,unit}."""
from __future__ import annotations

from flask import Blueprint, jsonify

from seqvis.explorer import Explorer
from seqvis.server import params
from seqvis.server.projects_api import service

blueprint = Blueprint("explorer", __name__, url_prefix="/api/explorer/<project>")


def explorer(project: str) -> Explorer:
    return service(project, Explorer)


@blueprint.get("/context")
def context(project: str):
    """Words, meta tracks and states (tanh or raw) of tokens [start, stop) of a layer; all units by default;
    states as lists or (encoding=float32) as base64 of a little-endian float32 [units, tokens] matrix."""
    return jsonify(explorer(project).context(
        params.string("layer"), params.integer("start"), params.integer("stop"),
        units=params.integers("units", None), transform=params.choice("transform", ["tanh", "none"], None),
        encoding=params.choice("encoding", ["json", "float32"], "json")))


@blueprint.get("/select")
def select(project: str):
    """The units on over the brush [b0, b1) and off over the padding (LSTMVis cell selection)."""
    return jsonify(explorer(project).select(
        params.string("layer"), (params.integer("b0"), params.integer("b1")),
        (params.integer("left", 1, lo=0, hi=1000), params.integer("right", 0, lo=0, hi=1000)),
        params.number("threshold", 0.3, lo=-1, hi=1)))


@blueprint.get("/search")
def search(project: str):
    """Positions where a phrase or regular expression occurs in the corpus text (bounded in time and hits)."""
    return jsonify(explorer(project).search_text(
        params.string("q", max_length=500), regex=params.choice("regex", ["0", "1"], "0") == "1",
        limit=params.integer("limit", 100, lo=1, hi=1000)))


@blueprint.get("/match")
def match(project: str):
    """Runs over the whole corpus where the selected units are on (LSTMVis match), ranked, with context,
    length histograms and per-meta summaries."""
    return jsonify(explorer(project).match(
        params.string("layer"), params.integers("units", max_count=1000), params.number("threshold", 0.3, lo=-1, hi=1),
        phrase_length=params.integer("phrase_length", 0, lo=0, hi=1000),
        constrain=(params.choice("left", ["0", "1"], "0") == "1", params.choice("right", ["0", "1"], "0") == "1"),
        top=params.integer("top", 50, lo=1, hi=500)))


@blueprint.get("/labels")
def unit_labels(project: str):
    """Each unit's best concept of the project's meta tracks (IoU at the best threshold or AP, direction,
    shifted-label baseline) and each concept's best unit; computed once per layer in the background: while
    `status` is "building" the answer has its progress and no units yet."""
    return jsonify(explorer(project).labels(params.string("layer"), by=params.choice("by", ["iou", "ap"], "iou")))


@blueprint.get("/unit")
def unit(project: str):
    """One unit: its best concepts and the contexts where it is highest and lowest."""
    return jsonify(explorer(project).unit(params.string("layer"), params.integer("unit"),
                                          k=params.integer("k", 10, lo=1, hi=100)))
