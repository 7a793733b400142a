"""`seqvis serve`: the app on waitress, on the first free port from the one asked for."""
from __future__ import annotations

import errno
import socket
import sys
from pathlib import Path

from seqvis.server.app import create_app
from seqvis.workspace import Workspace


def free_port(host: str, start: int, tries: int = 50) -> int:
    """The first port from `start` on that `host` lets us bind."""
    for port in range(start, start + tries):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            try:
                probe.bind((host, port))
            except OSError as error:
                if error.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise ValueError(f"cannot bind {host}:{port}: {error.strerror}") from error
            return port
    raise ValueError(f"no free port in {start}..{start + tries - 1} on {host}")


def serve(data_dir: Path, *, host: str = "127.0.0.1", port: int = 5000, build_demos: bool = True,
          debug: bool = False, threads: int = 8) -> None:
    import torch

    # Requests are served by many threads at once: torch's intra-op threads on top of them only contend
    # (a beam-5 translation: 10 ms median with one thread, 240 ms with two under load).
    torch.set_num_threads(1)
    data_dir.mkdir(parents=True, exist_ok=True)
    workspace = Workspace(data_dir)
    app = create_app({"DATA_DIR": str(data_dir), "WORKSPACE": workspace})
    port = free_port(host, port)
    print(f"seqvis: serving {len(workspace.projects)} project(s) from {data_dir.resolve()}", file=sys.stderr)
    for folder, error in workspace.errors.items():
        print(f"seqvis: could not open {folder}: {error}", file=sys.stderr)
    if build_demos and workspace.missing_demos():
        print(f"seqvis: building demo projects in the background: {', '.join(workspace.missing_demos())}",
              file=sys.stderr)
        workspace.build_missing_demos()
    print(f"seqvis: open http://{host}:{port}/", file=sys.stderr, flush=True)
    if debug:
        app.run(host=host, port=port, debug=True, use_reloader=False)
    else:
        from waitress import serve as waitress_serve

        waitress_serve(app, host=host, port=port, threads=threads, ident="seqvis")
