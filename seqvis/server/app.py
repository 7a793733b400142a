"""The Flask app factory: static pages, one blueprint per view, the JSON error convention."""
from __future__ import annotations

from pathlib import Path

from flask import Flask, jsonify, send_from_directory

from seqvis.server import errors, explorer_api, projects_api, translate_api, units_api
from seqvis.workspace import Workspace

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"


def create_app(config: dict | None = None) -> Flask:
    """An app serving the projects of `config["DATA_DIR"]` (default: data/); `WORKSPACE` may be given ready-made."""
    app = Flask(__name__, static_folder=None)
    app.config.update(DATA_DIR="data", JSON_SORT_KEYS=False)
    app.config.update(config or {})
    app.extensions["workspace"] = app.config.get("WORKSPACE") or Workspace(Path(app.config["DATA_DIR"]))
    errors.install(app)
    for blueprint in (projects_api.blueprint, explorer_api.blueprint, translate_api.blueprint,
                      units_api.blueprint):
        app.register_blueprint(blueprint)

    @app.get("/api")
    def api_description():
        """The API: every route with its methods and what it does."""
        routes = [
            {"path": rule.rule, "methods": sorted(rule.methods - {"HEAD", "OPTIONS"}),
             "doc": (app.view_functions[rule.endpoint].__doc__ or "").strip()}
            for rule in app.url_map.iter_rules() if rule.rule.startswith("/api")
        ]
        return jsonify(routes=sorted(routes, key=lambda route: route["path"]))

    @app.get("/")
    def index():
        return send_from_directory(STATIC_DIR, "index.html")

    @app.get("/<path:filename>")
    def static_file(filename: str):
        """The browser pages and their assets (only files under static/)."""
        return send_from_directory(STATIC_DIR, filename)

    return app
