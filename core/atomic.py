"""Files and folders written atomically: to a temporary name in the target's folder, renamed into place only when complete,
so an interrupted write never leaves a half-written cache or result that a later run would read."""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write `path`'s new content to; it replaces `path` when the block ends without error.

        with atomic_file("stats.npz") as file:
            np.savez(file, **state)
    """
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}-", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            yield file
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_file(path) as file:
        file.write(text.encode("utf-8"))


@contextmanager
def atomic_folder(out_dir: Path, overwrite: bool) -> Iterator[Path]:
    """A hidden sibling folder to build `out_dir` in, renamed into place on success and deleted on any failure; an
    existing `out_dir` is replaced only with `overwrite` (or when it is an empty folder)."""
    _check_target(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = out_dir.with_name(f".{out_dir.name}.building-{uuid.uuid4().hex[:8]}")
    work.mkdir()
    try:
        yield work
        _check_target(out_dir, overwrite)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
            out_dir.rename(old)
            work.rename(out_dir)
            shutil.rmtree(old)
        else:
            work.rename(out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check_target(out_dir: Path, overwrite: bool) -> None:
    """An existing out_dir is refused unless `overwrite` (or it is an empty folder); a file is always refused."""
    if out_dir.exists() or out_dir.is_symlink():
        if not out_dir.is_dir() or out_dir.is_symlink():
            raise FileExistsError(f"out_dir {str(out_dir)!r} exists and is not a folder")
        if not overwrite and any(out_dir.iterdir()):
            raise FileExistsError(f"out_dir {str(out_dir)!r} exists; pass overwrite (--overwrite) to replace it")
