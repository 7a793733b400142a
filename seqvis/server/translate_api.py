"""Translation debugger routes: /api/translate/<project>/{info,translate,whatif,substitutes,neighbours,labels}."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from seqvis.server import params
from seqvis.server.errors import ApiError, bad_request
from seqvis.server.projects_api import service
from seqvis.translate.service import SIDES, Translator

blueprint = Blueprint("translate", __name__, url_prefix="/api/translate/<project>")

MAX_BEAM, MAX_TOP_K, MAX_LENGTH = 20, 50, 200


def translator(project: str) -> Translator:
    return service(project, Translator)


def decoding_options() -> dict:
    """beam (1 = greedy), n_best, top_k, max_length, length_norm."""
    beam = params.integer("beam", 5, lo=1, hi=MAX_BEAM)
    return dict(beam=beam, n_best=params.integer("n_best", 1, lo=1, hi=beam), top_k=params.integer(
        "top_k", 5, lo=1, hi=MAX_TOP_K), max_length=params.integer("max_length", 50, lo=1, hi=MAX_LENGTH),
        length_norm=params.number("length_norm", 0.0, lo=0, hi=5))


def _body() -> dict:
    body = request.get_json(silent=True) if request.is_json else None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "the request body must be a JSON object")
    return body


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def attention_edits(body: dict) -> dict[int, list[float]] | None:
    """`attention`: a list of {"step": output step, "weights": one number per source token}."""
    edits = body.get("attention")
    if edits is None:
        return None
    if not isinstance(edits, list) or len(edits) > MAX_LENGTH:
        raise bad_request("attention", f"must be a list of at most {MAX_LENGTH} {{step, weights}} objects")
    checked: dict[int, list[float]] = {}
    for i, edit in enumerate(edits):
        where = f"attention[{i}]"
        if not isinstance(edit, dict) or set(edit) != {"step", "weights"}:
            raise bad_request(where, "must be an object with exactly the keys step and weights")
        step, weights = edit["step"], edit["weights"]
        if not isinstance(step, int) or isinstance(step, bool):
            raise bad_request(f"{where}.step", f"must be an integer, got {step!r}")
        if step in checked:
            raise bad_request(f"{where}.step", f"step {step} is edited twice")
        if not isinstance(weights, list) or not all(map(_number, weights)):
            raise bad_request(f"{where}.weights", "must be a list of numbers")
        checked[step] = weights
    return checked


def word_swap(body: dict) -> tuple[int, str] | None:
    """`swap`: {"position": source position, "word": the source word to put there}."""
    swap = body.get("swap")
    if swap is None:
        return None
    if not isinstance(swap, dict) or set(swap) != {"position", "word"}:
        raise bad_request("swap", "must be an object with exactly the keys position and word")
    position, word = swap["position"], swap["word"]
    if not isinstance(position, int) or isinstance(position, bool):
        raise bad_request("swap.position", f"must be an integer, got {position!r}")
    if not isinstance(word, str):
        raise bad_request("swap.word", f"must be a string, got {word!r}")
    return position, word


@blueprint.get("/info")
def info(project: str):
    """Vocabulary sizes, whether the model has attention and embeddings, limits, example sources."""
    return jsonify(translator(project).info())


@blueprint.route("/translate", methods=["GET", "POST"])
def translate(project: str):
    """Translate `source` (beam search, or greedy with beam=1): encoder tokens and states; per hypothesis the
    words, scores, and per step attention, decoder state and top-k candidates; the beam tree with pruned
    branches."""
    service = translator(project)
    return jsonify(service.translate(params.string("source", max_length=2000), **decoding_options()))


@blueprint.post("/whatif")
def whatif(project: str):
    """Re-decode `source` edited by a forced target `prefix` (text), attention edits ([{step, weights}]) and a
    source word `swap` ({position, word}); answers the original and the edited translation side by side."""
    service = translator(project)
    body = _body()
    return jsonify(service.whatif(params.string("source", max_length=2000), prefix=params.string("prefix", None),
                                  attention=attention_edits(body), swap=word_swap(body), **decoding_options()))


@blueprint.get("/substitutes")
def substitutes(project: str):
    """Source words to swap in at `position`: its nearest neighbours by cosine of the source embeddings."""
    return jsonify(translator(project).substitutes(params.string("source", max_length=2000),
                                                   params.integer("position", lo=0),
                                                   params.integer("k", 10, lo=1, hi=100)))


@blueprint.route("/neighbours", methods=["GET", "POST"])
def neighbours(project: str):
    """The `k` training-set states nearest (exact cosine) to one state of a translation of `source`: side
    "encoder" and a source `position`, or side "decoder", the output words `target` and a `position` among them
    (with attention edits [{step, weights}] in a JSON body); each with its training pair and token position, all
    placed on the 2-D map of the index with the sentence's trajectory."""
    service = translator(project)
    edits = attention_edits(_body()) if request.method == "POST" else None
    return jsonify(service.neighbours(
        params.string("source", max_length=2000), params.choice("side", list(SIDES)), params.integer("position", lo=0),
        target=params.string("target", None, max_length=2000), attention=edits,
        k=params.integer("k", 20, lo=1, hi=100)))


@blueprint.get("/labels")
def unit_labels(project: str):
    """Each encoder or decoder unit's best token concept of the training set (word class, frequent word,
    position) with IoU, AP, direction and baseline; computed once per side in the background (`status`)."""
    return jsonify(translator(project).labels(params.choice("side", list(SIDES)),
                                              by=params.choice("by", ["iou", "ap"], "iou")))
