"""The `seqvis` command line: serve, extract, demo."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


class CliError(Exception):
    """A problem with what the user asked for: printed as one line, exit status 2."""


def _cmd_serve(args: argparse.Namespace) -> None:
    from seqvis.server.run import serve

    serve(Path(args.data), host=args.host, port=args.port, build_demos=not args.no_demos, debug=args.debug)


def _cmd_demo(args: argparse.Namespace) -> None:
    from seqvis.demo import DEMOS, build_demo

    names = list(DEMOS) if args.name == "all" else [args.name]
    for name in names:
        build_demo(name, Path(args.data), tiny=args.tiny, overwrite=args.overwrite)


def build_parser() -> argparse.ArgumentParser:
    from seqvis.demo import DEMOS

    parser = argparse.ArgumentParser(prog="seqvis", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="serve the projects of a data folder")
    p.add_argument("--data", default="data", help="projects folder (default: data)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=5000, help="port, or the next free one after it (default: 5000)")
    p.add_argument("--no-demos", action="store_true", help="do not build missing demo projects")
    p.add_argument("--debug", action="store_true", help="Flask's debug server instead of waitress")
    p.set_defaults(run=_cmd_serve)

    p = sub.add_parser("demo", help="build a demo project into the data folder")
    p.add_argument("name", choices=[*DEMOS, "all"])
    p.add_argument("--data", default="data", help="projects folder (default: data)")
    p.add_argument("--tiny", action="store_true", help="a small, fast build (for tests)")
    p.add_argument("--overwrite", action="store_true", help="rebuild even if the project exists")
    p.set_defaults(run=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (CliError, FileNotFoundError, ValueError) as error:
        print(f"seqvis {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
