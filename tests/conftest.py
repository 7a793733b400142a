"""Shared fixtures: small real projects on disk, a real waitress server, a real browser."""
from __future__ import annotations

import shutil
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def make_token_project(folder: Path, *, name: str = "toy", n_tokens: int = 500, units: int = 8,
                       seed: int = 0) -> Path:
    """A small seqvis token-states project with real HDF5 files: two layers and two meta tracks."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    words = ["the", "cat", "sat", "on", "a", "mat", "(", ")"]
    tokens = rng.integers(0, len(words), n_tokens)
    with h5py.File(folder / "tokens.h5", "w") as f:
        f["tokens"] = tokens.astype(np.int32)
    with h5py.File(folder / "states.h5", "w") as f:
        f["rnn.l0.h"] = rng.standard_normal((n_tokens, units)).astype(np.float32)
        f["rnn.l0.c"] = rng.standard_normal((n_tokens, units)).astype(np.float32)
    with h5py.File(folder / "meta.h5", "w") as f:
        f["doc"] = (np.arange(n_tokens) // 100).astype(np.int32)
        f["depth"] = rng.integers(0, 4, n_tokens).astype(np.float32)
    (folder / "vocab.dict").write_text("".join(f"{word} {i}\n" for i, word in enumerate(words)))
    description = {
        "seqvis": 1, "kind": "tokens", "name": name, "description": "a toy project written by the tests",
        "tokens": {"file": "tokens.h5", "path": "tokens"}, "vocab": "vocab.dict",
        "layers": [{"name": layer, "file": "states.h5", "path": layer, "transform": "tanh"}
                   for layer in ("rnn.l0.h", "rnn.l0.c")],
        "meta": {"doc": {"file": "meta.h5", "path": "doc", "type": "discrete"},
                 "depth": {"file": "meta.h5", "path": "depth", "type": "scalar", "range": [0, 3]}},
    }
    (folder / "seqvis.yml").write_text(yaml.safe_dump(description, sort_keys=False))
    return folder


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data folder with one good token project and one broken folder."""
    data = tmp_path / "data"
    make_token_project(data / "toy")
    broken = data / "broken"
    broken.mkdir()
    (broken / "seqvis.yml").write_text("seqvis: 1\nkind: tokens\nname: broken\ntokens: {file: missing.h5, path: t}\n")
    return data


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """`tiny_demo(name)`: the folder of demo `name`'s tiny build, built once per test session (each in a data
    folder of its own, which tests may add projects to)."""
    from seqvis.demo import build_demo
    from seqvis.progress import Progress

    built: dict[str, Path] = {}

    def folder(name: str) -> Path:
        if name not in built:
            built[name] = build_demo(name, tmp_path_factory.mktemp(f"{name}-data"), tiny=True,
                                     progress=Progress(stream=None))
        return built[name]

    return folder


class LiveServer:
    """The app on a real waitress server bound to 127.0.0.1 on a free port, in a background thread."""

    def __init__(self, app):
        from waitress.server import create_server

        self.server = create_server(app, host="127.0.0.1", port=0, threads=4)
        self.url = f"http://127.0.0.1:{self.server.effective_port}/"
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    def close(self):
        """Close the listening socket and every open connection from the server's own loop thread (closing them
        from here while it waits in select makes it fail with a bad file descriptor), then stop its workers."""
        def close_all():
            for dispatcher in list(self.server._map.values()):
                dispatcher.close()

        self.server.trigger.pull_trigger(close_all)
        self.thread.join(timeout=5)
        self.server.task_dispatcher.shutdown()


@pytest.fixture
def live_server(data_dir):
    from seqvis.server import create_app

    server = LiveServer(create_app({"DATA_DIR": str(data_dir)}))
    yield server
    server.close()


@pytest.fixture(scope="session")
def browser():
    """Debian chromium driven by Playwright (never a browser download)."""
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.js_errors = errors
    yield page
    context.close()
