"""Validated request parameters: each reader names the parameter in its 400 answer."""
from __future__ import annotations

import math

from flask import request

from seqvis.server.errors import bad_request

_MISSING = object()


class _Default(Exception):
    """Raised by `_raw` when the parameter is absent and has a default, which the reader then returns as is."""


def _raw(name: str, default):
    value = request.args.get(name)
    if value is None and request.is_json:
        body = request.get_json(silent=True)
        if isinstance(body, dict):
            value = body.get(name)
    if value is None:
        if default is _MISSING:
            raise bad_request(name, "is required")
        raise _Default
    return value


def _reader(read):
    """Give a reader its `default` back untouched when the parameter is absent."""
    def reader(name: str, default=_MISSING, **options):
        try:
            return read(name, default, **options)
        except _Default:
            return default
    reader.__doc__ = read.__doc__
    return reader


@_reader
def string(name: str, default=_MISSING, *, max_length: int = 10_000) -> str:
    value = _raw(name, default)
    if not isinstance(value, str):
        raise bad_request(name, "must be a string")
    if len(value) > max_length:
        raise bad_request(name, f"is longer than {max_length} characters")
    return value


@_reader
def integer(name: str, default=_MISSING, *, lo: int | None = None, hi: int | None = None) -> int:
    value = _raw(name, default)
    try:
        number = int(value) if not isinstance(value, (bool, float)) else None
    except (TypeError, ValueError):
        number = None
    if number is None:
        raise bad_request(name, f"must be an integer, got {value!r}")
    _check_range(name, number, lo, hi)
    return number


@_reader
def number(name: str, default=_MISSING, *, lo: float | None = None, hi: float | None = None) -> float:
    value = _raw(name, default)
    try:
        result = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        result = math.nan
    if not math.isfinite(result):
        raise bad_request(name, f"must be a finite number, got {value!r}")
    _check_range(name, result, lo, hi)
    return result


@_reader
def integers(name: str, default=_MISSING, *, lo: int | None = None, hi: int | None = None,
             max_count: int = 1000) -> list[int]:
    """A list of integers, given as a JSON list or as a comma-separated string."""
    value = _raw(name, default)
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        raise bad_request(name, "must be a list of integers")
    items = [item for item in items if not (isinstance(item, str) and not item.strip())]
    if len(items) > max_count:
        raise bad_request(name, f"has {len(items)} entries, at most {max_count} allowed")
    try:
        result = [int(item) for item in items if not isinstance(item, (bool, float))]
    except (TypeError, ValueError):
        result = []
    if len(result) != len(items):
        raise bad_request(name, f"must be a list of integers, got {value!r}")
    for item in result:
        _check_range(name, item, lo, hi)
    return result


def choice(name: str, options: list[str], default=_MISSING) -> str:
    value = string(name, default)
    if value is not default and value not in options:
        raise bad_request(name, f"must be one of {', '.join(options)}; got {value!r}")
    return value


def _check_range(name: str, value, lo, hi) -> None:
    if lo is not None and value < lo:
        raise bad_request(name, f"must be at least {lo}, got {value}")
    if hi is not None and value > hi:
        raise bad_request(name, f"must be at most {hi}, got {value}")
