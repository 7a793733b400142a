"""Do the explorer demo's unit labels mean something? Best units for four code concepts, next to two controls.

For bracket depth >= 1, bracket depth >= 2, inside a string and inside a comment: the best unit over every layer
(h and c) by IoU at its best threshold and by average precision (`seqvis.labels`: `core.align.search_thresholds`),
next to (1) the shifted-label baseline (the best any unit scores with the concepts rolled by half the corpus) and
(2) the same architecture untrained, run over the same characters.

    python benchmarks/demo_labels.py [--project data/demo-explorer] [--tokens N]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from seqvis.demo.explorer import factory  # noqa: E402
from seqvis.extract import load_model, write_token_project  # noqa: E402
from seqvis.labels import dissect_layer  # noqa: E402
from seqvis.progress import Progress  # noqa: E402
from seqvis.projects import TokenProject, open_project  # noqa: E402

CONCEPTS = ["bracket_depth>=1", "bracket_depth>=2", "in_string=in string", "in_comment=in comment"]


def project_copy(project: TokenProject, model: torch.nn.Module, out: Path, tokens: int) -> TokenProject:
    """`model`'s states over the first `tokens` characters of `project`, with its meta tracks."""
    meta = {name: {"type": "discrete", "values": track.dataset[:tokens], "labels": track.labels}
            for name, track in project.meta.items() if name != "doc" and track.type == "discrete"}
    write_token_project(out, model=model, token_ids=project.tokens[:tokens], vocab=project.vocab, layers=["lstm"],
                        meta=meta, name=out.name, progress=Progress("states", stream=None))
    return open_project(out)


def best(project: TokenProject, cache: Path) -> dict[str, dict]:
    """Per concept: the best (layer, unit, direction) by IoU and by AP over all layers, and the best baselines."""
    found: dict[str, dict] = {}
    for layer in project.layers:
        search = dissect_layer(project, layer, cache, Progress(f"labels {layer}", stream=None), concepts=CONCEPTS)
        for c, concept in enumerate(search.concepts):
            entry = found.setdefault(concept, {"iou": (-1.0,), "ap": (-1.0,), "base_iou": 0.0, "base_ap": 0.0})
            for by in ("iou", "ap"):
                record = search.best_units(c, 1, by)[0]
                score = getattr(record, by)
                if score > entry[by][0]:
                    entry[by] = (score, f"{layer} u{record.unit} {record.direction:+d}")
            entry["base_iou"] = max(entry["base_iou"], float(search.baseline_iou[..., c].max()))
            entry["base_ap"] = max(entry["base_ap"], float(search.baseline_ap[..., c].max()))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--project", default="data/demo-explorer", help="the built explorer demo")
    parser.add_argument("--tokens", type=int, default=None, help="characters to use (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    trained_project = open_project(Path(args.project))
    tokens = min(args.tokens or len(trained_project), len(trained_project))
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        trained = trained_project if tokens == len(trained_project) else project_copy(
            trained_project, load_model("seqvis.demo.explorer:factory", Path(args.project) / "model.pt"),
            Path(tmp) / "trained", tokens)
        torch.manual_seed(1)
        untrained = project_copy(trained_project, factory().eval(), Path(tmp) / "untrained", tokens)
        results = {name: best(project, Path(tmp) / f"cache-{name}")
                   for name, project in (("trained", trained), ("untrained", untrained))}
        print(f"{trained_project.description}\n\nBest unit per concept over {tokens:,} characters, all layers (h and c), "
              f"both directions; IoU at the unit's best threshold, AP of ranking by the unit; 'base' is the best "
              f"any unit scores with the concepts rolled by half the corpus ({time.perf_counter() - started:.0f} s)\n")
        print(f"{'concept':<22}{'best by IoU':<26}{'IoU':>6}{'base':>6}{'untrained':>10}   "
              f"{'best by AP':<26}{'AP':>6}{'base':>6}{'untrained':>10}")
        for concept, entry in results["trained"].items():
            control = results["untrained"][concept]
            print(f"{concept:<22}{entry['iou'][1]:<26}{entry['iou'][0]:>6.2f}{entry['base_iou']:>6.2f}"
                  f"{control['iou'][0]:>10.2f}   {entry['ap'][1]:<26}{entry['ap'][0]:>6.2f}{entry['base_ap']:>6.2f}"
                  f"{control['ap'][0]:>10.2f}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
