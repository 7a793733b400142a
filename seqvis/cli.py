"""The `seqvis` command line: serve, extract, demo, dissect."""
from __future__ import annotations

import argparse
import os
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


def _working_folder_importable() -> None:
    """`seqvis` runs from a script folder; users' model modules usually live in the working one."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def _cmd_extract(args: argparse.Namespace) -> None:
    from seqvis.extract import extract_corpus
    from seqvis.progress import Progress

    _working_folder_importable()
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


def _open_token_project(name: str, data: str):
    """A token project given as a folder, or by name among the projects of `data`; with its cache folder."""
    from seqvis.projects import ProjectError, TokenProject, discover, open_project

    folder = Path(name)
    if folder.is_dir():
        project, data_dir = open_project(folder), folder.resolve().parent
    else:
        if not Path(data).is_dir():
            raise CliError(f"--project {name!r} is not a folder, and --data {data!r} is not a folder to look it up in")
        found, errors = discover(data)
        project = found.pop(name, None)
        for other in found.values():
            other.close()
        if project is None:
            why = f": {errors[name]}" if name in errors else f" (projects: {', '.join(sorted(found)) or 'none'})"
            raise CliError(f"--project {name!r} is neither a folder nor a project in {data!r}{why}")
        data_dir = Path(data)
    if not isinstance(project, TokenProject):
        project.close()
        raise ProjectError(f"--project {name!r} is a {project.kind} project; dissect --project needs token states")
    return project, data_dir / ".cache" / project.name


def _cmd_dissect(args: argparse.Namespace) -> None:
    if args.model:
        _dissect_model(args)
    else:
        _dissect_tokens(args)


def _dissect_model(args: argparse.Namespace) -> None:
    from seqvis.progress import Progress
    from seqvis.units import dissect_project

    missing = [flag for flag in ("layers", "dataset", "out") if getattr(args, flag) is None]
    if missing:
        raise CliError(f"--model needs {', '.join('--' + flag for flag in missing)}")
    layers = [layer.strip() for layer in args.layers.split(",") if layer.strip()]
    if not layers:
        raise CliError("--layers names no layer (give dotted module names separated by commas)")
    _working_folder_importable()
    progress = Progress("dissect")
    try:
        out = dissect_project(args.out, model=args.model, weights=args.weights, layers=layers, dataset=args.dataset,
                              quantile=args.quantile, union=args.union, signed=args.signed,
                              batch_size=args.batch_size, name=args.name, overwrite=args.overwrite, progress=progress)
    except OSError as error:
        raise CliError(str(error)) from None
    progress.finish(f"wrote {out}")


def _dissect_tokens(args: argparse.Namespace) -> None:
    from seqvis.labels import cache_file, dissect_layer
    from seqvis.progress import Progress

    project, cache_dir = _open_token_project(args.project, args.data)
    with project:
        layers = (list(project.layers) if args.layers is None
                  else [name.strip() for name in args.layers.split(",") if name.strip()])
        unknown = [name for name in layers if name not in project.layers]
        if unknown or not layers:
            raise CliError(f"--layers: {', '.join(unknown) or 'none given'} not among the layers "
                           f"({', '.join(project.layers)})")
        concepts = args.concept or None
        progress = Progress("dissect")
        for name in layers:
            search = dissect_layer(project, name, cache_dir, progress, concepts=concepts)
            path = cache_file(project, name, cache_dir, concepts)
            progress.finish(f"{name}: labels in {path} and {path.with_suffix('.csv').name}")
            print(f"\nlayer {name}: {search.units} units, {search.tokens:,} tokens. Best unit per concept by IoU at "
                  f"its best threshold, and by AP; 'base': the best any unit scores with the concepts shifted by "
                  f"{search.shift:,} tokens")
            print(f"{'concept':<32}{'tokens':>10}{'unit':>6}{'dir':>4}{'IoU':>7}{'base':>7}  "
                  f"{'unit':>6}{'dir':>4}{'AP':>7}{'base':>7}")
            for c, concept in enumerate(search.concepts):
                by_iou, by_ap = search.best_units(c, 1, "iou")[0], search.best_units(c, 1, "ap")[0]
                base_iou, base_ap = search.baseline_iou[..., c].max(), search.baseline_ap[..., c].max()
                print(f"{concept[:31]:<32}{int(search.count[c]):>10,}"
                      f"{by_iou.unit:>6}{by_iou.direction:>+4}{by_iou.iou:>7.3f}{base_iou:>7.3f}  "
                      f"{by_ap.unit:>6}{by_ap.direction:>+4}{by_ap.ap:>7.3f}{base_ap:>7.3f}")


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

    p = sub.add_parser("dissect", help="label units with the concepts they follow, and cache the labels")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--project", metavar="DIR|NAME",
                        help="a token project: its folder, or its name in --data; concepts are its meta tracks")
    source.add_argument("--model", metavar="PKG.MOD:FACTORY",
                        help="a CNN: factory returning the nn.Module, model(images [n, 3, h, w] in [0, 1]) is called; "
                             "needs --layers, --dataset and --out")
    p.add_argument("--data", default="data", help="projects folder to find --project NAME in (default: data)")
    p.add_argument("--layers", metavar="A,B", help="layer names, comma-separated (default: all)")
    p.add_argument("--concept", action="append", metavar="SPEC",
                   help="a concept such as 'token_class=keyword' or 'bracket_depth>=2', repeatable "
                        "(default: every value of each discrete meta track, >= 1, 2, 3 of integer scalar tracks)")
    cnn = p.add_argument_group("with --model (a CNN over a Broden-layout dataset, written as a units project)")
    cnn.add_argument("--weights", metavar="FILE", help="state dict saved with torch.save(model.state_dict(), FILE)")
    cnn.add_argument("--dataset", metavar="DIR", help="Broden-layout folder (index.csv, category.csv, label.csv, ...)")
    cnn.add_argument("--quantile", type=float, default=0.005, help="top quantile of each unit that is on (default 0.005)")
    cnn.add_argument("--union", choices=["category", "plain"], default="category",
                     help="IoU union: NetDissect-Lite's per-category (default) or over every image (PNAS)")
    cnn.add_argument("--signed", action="store_true", help="also score -activation (units that fire by going low)")
    cnn.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    cnn.add_argument("--out", metavar="DIR", help="units project folder to write")
    cnn.add_argument("--name", help="project name (default: the folder name)")
    cnn.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(run=_cmd_dissect)
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
