"""Results that take long to compute (match indexes, unit labels, neighbour indexes): computed once, in the
background, loaded from their cache when it is there, with progress and errors for the API to report."""
from __future__ import annotations

import threading

from seqvis.progress import Progress


class Jobs:
    """Results computed once in the background (match indexes, unit labels), each loaded from the cache when
    it is there, with the progress of the ones under way."""

    def __init__(self):
        self._done: dict[tuple, object] = {}
        self._running: dict[tuple, tuple[threading.Thread, Progress]] = {}
        self._errors: dict[tuple, str] = {}
        self._lock = threading.Lock()

    def result(self, key: tuple, label: str, load, build=None, *, wait: bool = False):
        """The result for `key`: kept, or `load()`ed from the cache; else None, and (given `build`) building it
        starts in the background; `wait` waits for it."""
        with self._lock:
            if key in self._done:
                return self._done[key]
            found = load()
            if found is not None:
                self._done[key] = found
                return found
            if build is None:
                return None
            if key not in self._running:
                progress = Progress(label)
                thread = threading.Thread(target=self._run, args=(key, build, progress), daemon=True, name=label)
                self._running[key] = (thread, progress)
                thread.start()
            thread = self._running[key][0]
        if wait:
            thread.join()
        return self._done.get(key)

    def _run(self, key: tuple, build, progress: Progress) -> None:
        try:
            result = build(progress)
        except Exception as error:  # reported through `status`; the server goes on
            self._errors[key] = f"{type(error).__name__}: {error}"
            raise
        with self._lock:
            self._done[key] = result

    def status(self, key: tuple) -> dict:
        """{"status": "ready" | "building" (with progress) | "failed" (with the error) | "missing"}."""
        with self._lock:
            if key in self._done:
                return {"status": "ready"}
            running = self._running.get(key)
        if running is None:
            return {"status": "missing"}
        thread, progress = running
        if thread.is_alive():
            return {"status": "building", "progress": progress.snapshot()}
        return {"status": "failed", "error": self._errors.get(key, "stopped")}
