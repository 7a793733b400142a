"""Projects: what is in the data folder, what failed to open, what is being built."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from seqvis.server.errors import ApiError, not_found

blueprint = Blueprint("projects", __name__)


def workspace():
    return current_app.extensions["workspace"]


def project_or_404(name: str):
    """The open project called `name`, or a 404 naming it."""
    project = workspace().get(name)
    if project is None:
        raise not_found("project", name)
    return project


def service(name: str, service_class: type):
    """The `service_class` service (Explorer, Translator, Units) of project `name`: a 404 for an unknown project,
    a 400 for a project of another kind."""
    found = workspace().service(name, service_class)
    if found is None:
        project = project_or_404(name)
        raise ApiError(400, "wrong_kind", f"project {name!r} is a {project.kind} project, not {service_class.kind}")
    return found


@blueprint.get("/api/projects")
def list_projects():
    """Every project (kind, name, description, sizes, layers), broken folders with the reason, and demo builds."""
    ws = workspace()
    return jsonify(
        projects=[project.summary() for project in sorted(ws.projects.values(), key=lambda p: p.name)],
        broken=[{"folder": folder, "error": error} for folder, error in sorted(ws.errors.items())],
        building=ws.build_status(),
    )


@blueprint.get("/api/projects/<name>")
def show_project(name: str):
    """One project's description."""
    return jsonify(project_or_404(name).summary())
