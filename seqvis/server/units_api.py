"""CNN unit inspector routes: /api/units/<project>/{layers,units,unit,image/<item>,detectors,classes,ablate,rank,
features,search}."""
from __future__ import annotations

import threading
import weakref

from flask import Blueprint, jsonify, request, send_file

from core.regions import MATCHES
from seqvis.regions import FeatureSearch
from seqvis.server import params
from seqvis.server.errors import bad_request
from seqvis.server.projects_api import service
from seqvis.units import SORT_KEYS, Units

blueprint = Blueprint("units", __name__, url_prefix="/api/units/<project>")

_searches: weakref.WeakKeyDictionary[Units, FeatureSearch] = weakref.WeakKeyDictionary()
_searches_lock = threading.Lock()


def units_service(project: str) -> Units:
    return service(project, Units)


def feature_search(project: str) -> FeatureSearch:
    """The project's feature search, made once per opened project (it lives as long as the project's Units)."""
    service = units_service(project)
    with _searches_lock:
        if service not in _searches:
            _searches[service] = FeatureSearch(service.project, service.cache_dir)
        return _searches[service]


@blueprint.get("/layers")
def layers(project: str):
    """The dissected layers (name, units, feature-map size, detectors, the dissection's quantile and union), the
    number of dataset images and their size [ih, iw]."""
    service = units_service(project)
    return jsonify(layers=service.layers(), images=len(service.dataset), image_size=list(service.dataset.image_size))


@blueprint.get("/units")
def units(project: str):
    """Every unit's card of `layer` (label, category, IoU, direction, threshold, baseline, detector, top images),
    sorted by `sort` (iou, label or unit) in `order` (asc or desc; IoU best first, the others ascending)."""
    sort = params.choice("sort", list(SORT_KEYS), "iou")
    order = params.choice("order", ["asc", "desc"], None)
    layer = params.string("layer")
    cards = units_service(project).units(layer, sort, None if order is None else order == "desc")
    return jsonify(layer=layer, sort=sort, units=cards)


@blueprint.get("/unit")
def unit(project: str):
    """One unit: its card, its `concepts` best concepts with their shuffled-label baselines, and its activation
    quantiles 0, 0.01, ..., 1 (the histogram's data)."""
    return jsonify(units_service(project).unit(params.string("layer"), params.integer("unit"),
                                               concepts=params.integer("concepts", 10, lo=1, hi=100)))


@blueprint.get("/image/<item>")
def image(project: str, item: str):
    """A dataset image as PNG, scaled for display; with `layer` and `unit` (the item one of the unit's top images)
    the region where the unit is on is highlighted. Rendered once and cached."""
    try:
        number = int(item)
    except ValueError:
        raise bad_request("item", f"must be an integer, got {item!r}") from None
    layer, unit_id = params.string("layer", None), params.integer("unit", None)
    path = units_service(project).thumbnail(number, layer, unit_id)
    return send_file(path, mimetype="image/png", max_age=3600)


@blueprint.get("/detectors")
def detectors(project: str):
    """How many units of `layer` detect each concept (IoU >= min_iou), grouped by category, most first."""
    return jsonify(units_service(project).detectors(params.string("layer")))


@blueprint.get("/classes")
def classes(project: str):
    """The model's class names, in output order (ablation measures accuracy per class)."""
    return jsonify(classes=units_service(project).classes())


@blueprint.route("/ablate", methods=["GET", "POST"])
def ablate(project: str):
    """Per-class held-out accuracy before and after zeroing `units` of `layer` (ids, a list or comma-separated), or
    every detector labelled `label`; cached."""
    return jsonify(units_service(project).ablate(params.string("layer"), units=params.integers("units", None),
                                                 label=params.string("label", None, max_length=500)))


@blueprint.get("/rank")
def rank(project: str):
    """Every unit of `layer` ablated alone, ranked by the change of `class`'s held-out accuracy (largest drop
    first); cached."""
    return jsonify(units_service(project).rank(params.string("layer"), params.string("class", max_length=500)))


@blueprint.get("/features")
def features(project: str):
    """Whether `layer`'s features for region search are ready; computing them (over the whole dataset, once) starts
    in the background on this call, with progress."""
    return jsonify(feature_search(project).prepare(params.string("layer")))


@blueprint.route("/search", methods=["GET", "POST"])
def search(project: str):
    """The `k` regions of the dataset most similar at `layer` to the `box` (x0, y0, x1, y1 in pixels, ends exclusive)
    or brushed `mask` (in a JSON body: rows of 0/1 over the image) of image `item`, best first, at most `per_image`
    per image, each with its score (cosine), box and heatmap; the layer's features are computed over the dataset on
    first use and cached."""
    body = request.get_json(silent=True) if request.is_json else None
    mask = body.get("mask") if isinstance(body, dict) else None
    return jsonify(feature_search(project).search(
        params.string("layer"), params.integer("item"), box=params.integers("box", None, max_count=4), mask=mask,
        k=params.integer("k", 12, lo=1, hi=100), per_image=params.integer("per_image", 1, lo=1, hi=100),
        match=params.choice("match", list(MATCHES), "template")))
