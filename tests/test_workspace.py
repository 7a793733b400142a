"""Demo builds: atomic, in the background, with progress, and the server sees the project when it is done."""
from __future__ import annotations

import pytest

from seqvis import demo
from seqvis.progress import Progress
from seqvis.workspace import Workspace
from tests.conftest import make_token_project


@pytest.fixture
def toy_demo(monkeypatch):
    """Register a demo whose builder writes a small token project, reporting progress as real builders do."""
    calls = []

    def build(out_dir, progress, tiny):
        calls.append(tiny)
        progress.start("writing", 2)
        progress.update(1)
        make_token_project(out_dir, name="toy-demo")
        progress.update(1)

    monkeypatch.setitem(demo.DEMOS, "toy", build)
    return calls


def test_build_demo_is_atomic_and_idempotent(tmp_path, toy_demo):
    target = demo.build_demo("toy", tmp_path, tiny=True, progress=Progress(stream=None))
    assert target == tmp_path / "demo-toy" and (target / "seqvis.yml").exists()
    demo.build_demo("toy", tmp_path, progress=Progress(stream=None))
    assert toy_demo == [True]
    assert [p.name for p in tmp_path.iterdir()] == ["demo-toy"]


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    def fail(out_dir, progress, tiny):
        (out_dir / "half-written").write_text("x")
        raise RuntimeError("training diverged")

    monkeypatch.setitem(demo.DEMOS, "bad", fail)
    with pytest.raises(RuntimeError):
        demo.build_demo("bad", tmp_path, progress=Progress(stream=None))
    assert list(tmp_path.iterdir()) == []


def test_unknown_demo_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown demo 'nope'"):
        demo.build_demo("nope", tmp_path)


def test_workspace_builds_missing_demos_in_background(tmp_path, toy_demo, monkeypatch):
    for name in list(demo.DEMOS):
        if name != "toy":
            monkeypatch.delitem(demo.DEMOS, name)
    workspace = Workspace(tmp_path)
    assert workspace.missing_demos() == ["toy"] and workspace.get("toy-demo") is None
    workspace.build_missing_demos(tiny=True).join(timeout=30)
    assert workspace.get("toy-demo") is not None
    [status] = workspace.build_status()
    assert status["status"] == "done" and status["error"] is None
    assert workspace.missing_demos() == [] and workspace.build_missing_demos() is None
