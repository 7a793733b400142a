"""The projects of one data folder as the server sees them: opened once, reloaded after demo builds."""
from __future__ import annotations

import threading
import traceback
from pathlib import Path

from seqvis import projects
from seqvis.demo import DEMOS, build_demo, demo_folder
from seqvis.progress import Progress


class Workspace:
    """Open projects of `data_dir` by name, the folders that failed to open, and the demo builds under way."""

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self._lock = threading.Lock()
        self.projects: dict[str, projects.Project] = {}
        self.errors: dict[str, str] = {}
        self.cache_dir = self.data_dir / ".cache"
        self.builds: dict[str, dict] = {}
        self._services: dict[tuple[str, type], object] = {}
        self._progress: dict[str, Progress] = {}
        self.reload()

    def reload(self) -> None:
        """Reopen every project (after a build, or when files changed on disk)."""
        found, errors = projects.discover(self.data_dir) if self.data_dir.is_dir() else ({}, {})
        with self._lock:
            old, self.projects, self.errors = self.projects, found, errors
            self._services.clear()
        for project in old.values():
            project.close()

    def get(self, name: str) -> projects.Project | None:
        with self._lock:
            return self.projects.get(name)

    def service(self, name: str, service_class: type):
        """The service (an Explorer, ...) of project `name`, made once per opened project; None when there is no
        such project or it is of another kind than `service_class.kind`."""
        with self._lock:
            project = self.projects.get(name)
            if project is None or project.kind != service_class.kind:
                return None
            key = (name, service_class)
            if key not in self._services:
                self._services[key] = service_class(project, self.cache_dir / name)
            return self._services[key]

    def missing_demos(self) -> list[str]:
        return [name for name in DEMOS if not (self.data_dir / demo_folder(name)).exists()]

    def build_missing_demos(self, *, tiny: bool = False) -> threading.Thread | None:
        """Build the demos not on disk yet, one after another, in a background thread."""
        missing = self.missing_demos()
        if not missing:
            return None
        for name in missing:
            self._progress[name] = Progress(f"demo {name}")
            self.builds[name] = {"name": name, "status": "waiting", "error": None}
        thread = threading.Thread(target=self._build, args=(missing, tiny), name="demo-builds", daemon=True)
        thread.start()
        return thread

    def _build(self, names: list[str], tiny: bool) -> None:
        for name in names:
            self.builds[name]["status"] = "building"
            try:
                build_demo(name, self.data_dir, tiny=tiny, progress=self._progress[name])
            except Exception as error:  # a failed demo must not take the server down; show why instead
                traceback.print_exc()
                self.builds[name].update(status="failed", error=f"{type(error).__name__}: {error}")
                continue
            self.reload()
            self.builds[name]["status"] = "done"

    def build_status(self) -> list[dict]:
        """Each demo build with its progress, for the index page."""
        return [{**build, "progress": self._progress[name].snapshot()} for name, build in self.builds.items()]
