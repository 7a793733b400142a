"""The shared dissection core: hooks, streaming statistics, unit-concept alignment, search, intervention.

Activations are `[items, units, *positions]` (positions `(T,)` for sequences, `(H, W)` for images,
none for dense layers); nothing here knows about projects, files on disk, HTTP or pages.
"""
