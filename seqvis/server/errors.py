"""The JSON error convention: every failure answers `{"error": {"code", "message"}}` with a 4xx/5xx status."""
from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger("seqvis.server")


class ApiError(Exception):
    """A request the server cannot answer, for a reason the client should read (a 4xx)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def bad_request(parameter: str, message: str) -> ApiError:
    """A 400 naming the offending parameter."""
    return ApiError(400, "bad_parameter", f"{parameter}: {message}")


def not_found(what: str, name: str) -> ApiError:
    return ApiError(404, f"unknown_{what}", f"unknown {what} {name!r}")


def answer(status: int, code: str, message: str):
    """The JSON error response."""
    return jsonify(error={"code": code, "message": message}), status


def install(app: Flask) -> None:
    """Route every error, expected or not, through the JSON convention; unexpected ones are logged, not shown.

    Services stay free of HTTP: they raise ValueError for bad input and LookupError for unknown names, and
    this maps them to 400 and 404."""

    @app.errorhandler(ApiError)
    def api_error(error: ApiError):
        return answer(error.status, error.code, error.message)

    @app.errorhandler(ValueError)
    def invalid(error: ValueError):
        """Services and the core reject bad input with a ValueError whose message starts with the parameter."""
        return answer(400, "bad_parameter", str(error))

    @app.errorhandler(LookupError)
    def unknown(error: LookupError):
        """Services raise LookupError for an unknown layer, unit, image, ... named in the message."""
        return answer(404, "not_found", str(error.args[0]) if error.args else "not found")

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        code = (error.name or "error").lower().replace(" ", "_")
        return answer(error.code or 500, code, error.description or error.name)

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        log.exception("unexpected error")
        return answer(500, "internal_error", "internal error; the server log has the details")
