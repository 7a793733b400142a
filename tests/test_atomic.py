"""Atomic writes: a failed write leaves the old content and no temporary files; folders replace only on request."""
from __future__ import annotations

import pytest

from core.atomic import atomic_file, atomic_folder, write_text


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "cache.json"
    write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_file(target) as file:
        file.write(b"half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["cache.json"]
    write_text(target, "new")
    assert target.read_text() == "new" and len(list(tmp_path.iterdir())) == 1


def test_a_folder_appears_whole_and_replaces_only_with_overwrite(tmp_path):
    out = tmp_path / "project"
    with pytest.raises(RuntimeError), atomic_folder(out, overwrite=False) as work:
        (work / "half").write_text("x")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with atomic_folder(out, overwrite=False) as work:
        (work / "a").write_text("1")
    with pytest.raises(FileExistsError, match="overwrite"), atomic_folder(out, overwrite=False):
        pass
    with atomic_folder(out, overwrite=True) as work:
        (work / "b").write_text("2")
    assert [p.name for p in out.iterdir()] == ["b"] and [p.name for p in tmp_path.iterdir()] == ["project"]
