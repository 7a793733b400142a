"""Progress of long work (extraction, demo builds, dissection), shown on the terminal and pollable by the server.

Anything that runs long takes an optional `progress` and calls `progress.start(stage, total)` then
`progress.update(n)`; the core only relies on those two methods.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class Progress:
    """A stage name, a count and a total; printed as a single updating line, readable from other threads."""

    def __init__(self, label: str = "", *, stream: TextIO | None | str = "stderr", interval: float = 2.0):
        self.label = label
        self.stream = sys.stderr if stream == "stderr" else stream  # looked up now: tests and tools swap sys.stderr
        self.interval = interval
        self._lock = threading.Lock()
        self._stage, self._done, self._total = "", 0, None
        self._started = self._printed = time.monotonic()

    def start(self, stage: str, total: int | None = None) -> None:
        with self._lock:
            self._stage, self._done, self._total = stage, 0, total
            self._started = time.monotonic()
        self._print(force=True)

    def update(self, n: int = 1) -> None:
        with self._lock:
            self._done += n
        self._print()

    def finish(self, stage: str = "done") -> None:
        with self._lock:
            self._stage, self._done, self._total = stage, 0, None
        self._print(force=True)

    def snapshot(self) -> dict:
        """The current state as JSON-ready data: stage, done, total, fraction (None when unknown)."""
        with self._lock:
            fraction = min(1.0, self._done / self._total) if self._total else None
            return {"stage": self._stage, "done": self._done, "total": self._total, "fraction": fraction}

    def _print(self, force: bool = False) -> None:
        if self.stream is None:
            return
        now = time.monotonic()
        if not force and now - self._printed < self.interval:
            return
        self._printed = now
        snap = self.snapshot()
        count = f"{snap['done']}/{snap['total']}" if snap["total"] else (str(snap["done"]) if snap["done"] else "")
        percent = f" {100 * snap['fraction']:5.1f}%" if snap["fraction"] is not None else ""
        elapsed = f" {now - self._started:6.1f}s"
        prefix = f"[{self.label}] " if self.label else ""
        self.stream.write(f"{prefix}{snap['stage']}{percent} {count}{elapsed}\n")
        self.stream.flush()
