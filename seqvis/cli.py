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


def _cmd_extract(args: argparse.Namespace) -> None:
    import os

    from seqvis.extract import extract_corpus
    from seqvis.progress import Progress

    if os.getcwd() not in sys.path:  # `seqvis` runs from a script folder; models usually live in the working one
        sys.path.insert(0, os.getcwd())
    layers = [layer.strip() for layer in args.layers.split(",") if layer.strip()]
    if not layers:
        raise CliError("--layers names no layer (give dotted module names separated by commas)")
    progress = Progress("extract")
    try:
        out = extract_corpus(args.out, model=args.model, weights=args.weights, corpus=args.corpus, layers=layers,
                             tokenizer=args.tokenizer, vocab=args.vocab, documents=args.documents, state=args.state,
                             name=args.name, batch_size=args.batch_size, segment=args.segment,
                             overwrite=args.overwrite, progress=progress)
    except OSError as error:
        raise CliError(str(error)) from None
    progress.finish(f"wrote {out}")


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

    p = sub.add_parser("extract", help="run a PyTorch model over a text corpus and write a token-states project")
    p.add_argument("--model", required=True, metavar="PKG.MOD:FACTORY",
                   help="factory returning the nn.Module; model(ids [batch, time]) is called")
    p.add_argument("--weights", metavar="FILE", help="state dict saved with torch.save(model.state_dict(), FILE)")
    p.add_argument("--corpus", required=True, nargs="+", metavar="FILE", help="UTF-8 text files, read in order")
    p.add_argument("--layers", required=True, metavar="A,B", help="dotted module names, comma-separated")
    p.add_argument("--tokenizer", choices=["char", "word"], default="char", help="characters or whitespace words")
    p.add_argument("--vocab", metavar="FILE",
                   help="the model's 'word id' dictionary (default: the sorted set of corpus tokens)")
    p.add_argument("--documents", choices=["file", "line", "blank"], default="file",
                   help="a document per file, per line, or per blank-line-separated paragraph (default: file)")
    p.add_argument("--state", default="carry", metavar="carry|document|window:N",
                   help="carry the state over the corpus, reset it per document, or per N-token window")
    p.add_argument("--out", required=True, metavar="DIR", help="project folder to write")
    p.add_argument("--name", help="project name (default: the folder name)")
    p.add_argument("--batch-size", type=int, default=64, help="rows per model call (default: 64)")
    p.add_argument("--segment", type=int, default=256, help="tokens per row and call (default: 256)")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    p.set_defaults(run=_cmd_extract)
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
