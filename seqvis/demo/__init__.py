"""Demo projects: builders that train small models on data every machine has offline and write projects.

Each demo is a module here with `build(out_dir: Path, progress: Progress, tiny: bool) -> None`, imported only
when it is built (torch training code stays out of the server's start). `build` writes a complete project into
`out_dir`, which `build_demo` creates empty and renames into place only when the build succeeded, so an
interrupted build leaves nothing half-written under the data folder.
"""
from __future__ import annotations

import importlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from seqvis.progress import Progress

Builder = Callable[[Path, Progress, bool], None]


def _module(name: str) -> Builder:
    return lambda out_dir, progress, tiny: importlib.import_module(name).build(out_dir, progress, tiny)


DEMOS: dict[str, Builder] = {
    "explorer": _module("seqvis.demo.explorer"),
    "units": _module("seqvis.demo.units"),
    "translate": _module("seqvis.demo.translate"),
}


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Train with `threads` torch threads (the server serves with one), restoring the setting afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def demo_folder(name: str) -> str:
    """The project folder a demo is built into, under the data folder."""
    return f"demo-{name}"


def build_demo(name: str, data_dir: Path, *, tiny: bool = False, overwrite: bool = False,
               progress: Progress | None = None) -> Path:
    """Build demo `name` into `data_dir/demo-<name>` (skipped when it exists, unless `overwrite`)."""
    if name not in DEMOS:
        raise ValueError(f"unknown demo {name!r}; known: {', '.join(DEMOS) or 'none'}")
    data_dir = Path(data_dir)
    target = data_dir / demo_folder(name)
    progress = progress or Progress(f"demo {name}")
    if target.exists() and not overwrite:
        progress.finish(f"{target} exists")
        return target
    data_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".building-{name}-", dir=data_dir))
    try:
        DEMOS[name](work, progress, tiny)
        if target.exists():
            old = target.with_name(f".old-{target.name}")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            shutil.rmtree(old)
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    progress.finish(f"built {target}")
    return target
