"""The HTTP layer: a thin shim of request parsing, one service call and serialisation per route."""
from seqvis.server.app import create_app

__all__ = ["create_app"]
