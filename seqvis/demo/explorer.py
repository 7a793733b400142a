"""The explorer demo: a character-level LSTM language model trained on the Python standard library's own sources.

The corpus is the running interpreter's stdlib `.py` files (tests, tools and generated tables left out),
in path order; every tenth file is held out for validation. The model reads characters of a fixed
alphabet (tab, newline, printable ASCII; anything else is "<unk>"), so `factory()` rebuilds it without
data: `seqvis extract --model seqvis.demo.explorer:factory --weights <project>/model.pt --vocab
<project>/vocab.dict ...` runs the trained model over any text. The project holds the states of both
layers (h and c) over the held-out files, followed by training files when those are too short, with
discrete per-character meta tracks from Python's tokenize (see `seqvis.demo.pytokens`). Files that
tokenize rejects are left out of the states (none in CPython 3.11's stdlib); they still train the model.
"""
from __future__ import annotations

import math
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from seqvis.demo import pytokens, torch_threads
from seqvis.extract import Tokenizer, write_token_project
from seqvis.progress import Progress

VOCAB = ("<unk>", "\t", "\n", *map(chr, range(32, 127)))
SKIPPED_FOLDERS = {"test", "tests", "idlelib", "lib2to3", "turtledemo", "site-packages", "dist-packages",
                   "pydoc_data", "encodings", "ensurepip", "__pycache__"}
HELD_OUT_EVERY = 10
WEIGHTS_FILE = "model.pt"


@dataclass(frozen=True)
class Plan:
    """The sizes of one build: model, training (stops at `steps` or after `seconds` of wall-clock time, sized so
    that the whole build fits its budget on `threads` otherwise idle cores), corpora, torch threads."""

    embedding: int
    hidden: int
    layers: int
    batch: int
    bptt: int
    steps: int
    seconds: float
    learning_rate: float
    clip: float
    train_chars: int | None  # None: every training file
    validation_chars: int | None  # None: every held-out file
    state_chars: int
    threads: int


FULL = Plan(embedding=64, hidden=256, layers=2, batch=32, bptt=128, steps=2400, seconds=400.0, learning_rate=6e-3,
            clip=1.0, train_chars=None, validation_chars=None, state_chars=1_000_000, threads=2)
TINY = Plan(embedding=16, hidden=32, layers=2, batch=16, bptt=64, steps=300, seconds=120.0, learning_rate=1e-2,
            clip=1.0, train_chars=200_000, validation_chars=20_000, state_chars=20_000, threads=1)


class CharLSTM(nn.Module):
    """Embedding -> nn.LSTM (batch first) -> linear: the next character's logits at every position."""

    def __init__(self, vocab_size: int, embedding: int, hidden: int, layers: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embedding)
        self.lstm = nn.LSTM(embedding, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)

    @classmethod
    def of_plan(cls, plan: Plan) -> CharLSTM:
        """The model a build plan trains, reading the demo's alphabet."""
        return cls(len(VOCAB), plan.embedding, plan.hidden, plan.layers)

    def forward(self, ids: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Logits `[batch, time, vocab]` for ids `[batch, time]`, and the LSTM state after the last position."""
        out, state = self.lstm(self.embed(ids), state)
        return self.head(out), state


def factory() -> CharLSTM:
    """The full demo's model, untrained: the architecture its model.pt fits."""
    return CharLSTM.of_plan(FULL)


def tiny_factory() -> CharLSTM:
    """The tiny demo's model (`seqvis demo explorer --tiny`), untrained."""
    return CharLSTM.of_plan(TINY)


class StdlibCorpus:
    """The stdlib's .py files in path order (tests, tools, bundled packages and generated tables left out) that
    decode as UTF-8 and are not empty, with every `HELD_OUT_EVERY`-th file held out for validation."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root or sysconfig.get_paths()["stdlib"])
        if not self.root.is_dir():
            raise ValueError(f"root {str(self.root)!r} is not a folder")
        self.sources: dict[str, str] = {}
        for path in sorted(self.root.rglob("*.py"), key=lambda p: p.relative_to(self.root).as_posix()):
            parts = path.relative_to(self.root).parts
            if SKIPPED_FOLDERS & set(parts[:-1]) or parts[0].startswith("config-"):
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            if text:
                self.sources["/".join(parts)] = text
        names = list(self.sources)
        self.held_out = names[::HELD_OUT_EVERY]
        self.training = [name for i, name in enumerate(names) if i % HELD_OUT_EVERY]

    def take(self, names: list[str], chars: int | None) -> list[tuple[str, str]]:
        """(name, text) of the first files holding `chars` characters (all for None), the last cut after a line end."""
        taken, total = [], 0
        for name in names:
            if chars is not None and total >= chars:
                break
            text = self.sources[name]
            if chars is not None and len(text) > chars - total:
                line_end = text.find("\n", chars - total - 1)
                text = text if line_end < 0 else text[:line_end + 1]
            taken.append((name, text))
            total += len(text)
        return taken


def train(model: CharLSTM, ids: np.ndarray, plan: Plan, progress: Progress) -> dict:
    """Truncated BPTT over `plan.batch` parallel streams of `ids` with Adam, clipping and a cosine learning rate.

    The state is carried (detached) from one batch to the next. Stops after `plan.steps` steps or
    `plan.seconds`, whichever comes first; the learning rate schedule follows whichever is nearer.
    """
    streams = torch.from_numpy(ids[:len(ids) // plan.batch * plan.batch].astype(np.int64)).view(plan.batch, -1)
    if streams.shape[1] <= plan.bptt:
        raise ValueError(f"the training text ({len(ids)} chars) is too short for {plan.batch} streams of "
                         f"{plan.bptt}-char windows")
    optimizer = torch.optim.Adam(model.parameters(), lr=plan.learning_rate)
    model.train()
    losses: list[float] = []
    state, position, started, cpu = None, 0, time.monotonic(), time.process_time()
    progress.start(f"train (steps; stops after {plan.seconds:.0f} s)", plan.steps)
    for step in range(plan.steps):
        done = max(step / plan.steps, (time.monotonic() - started) / plan.seconds)
        if done >= 1:
            break
        for group in optimizer.param_groups:
            group["lr"] = plan.learning_rate * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * done)))
        if position + plan.bptt + 1 > streams.shape[1]:
            state, position = None, 0
        window = streams[:, position:position + plan.bptt + 1]
        logits, state = model(window[:, :-1], state)
        state = tuple(part.detach() for part in state)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), window[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), plan.clip)
        optimizer.step()
        losses.append(loss.item() / math.log(2))
        position += plan.bptt
        progress.update(1)
    seconds = time.monotonic() - started
    curve = [round(float(np.mean(part)), 4) for part in np.array_split(losses, min(20, len(losses)))] if losses else []
    return {"steps": len(losses), "seconds": round(seconds, 1), "cpu_seconds": round(time.process_time() - cpu, 1),
            "stopped_by": "steps" if len(losses) == plan.steps else "time",
            "chars_seen": len(losses) * plan.batch * plan.bptt, "loss_bits_per_char": curve}


@torch.no_grad()
def bits_per_char(model: CharLSTM, ids: np.ndarray, *, streams: int = 64, window: int = 512,
                  progress: Progress | None = None) -> float:
    """Mean next-character loss in bits over `ids`, read as `streams` parallel runs that carry their state."""
    length = (len(ids) - 1) // streams
    if length < 1:
        raise ValueError(f"ids must hold more than {streams} characters, got {len(ids)}")
    ids = torch.from_numpy(ids.astype(np.int64))
    inputs = ids[:streams * length].view(streams, length)
    targets = ids[1:streams * length + 1].view(streams, length)
    if progress is not None:
        progress.start("validate", streams * length)
    model.eval()
    total, state = 0.0, None
    for start in range(0, length, window):
        logits, state = model(inputs[:, start:start + window], state)
        total += nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             targets[:, start:start + window].reshape(-1), reduction="sum").item()
        if progress is not None:
            progress.update(streams * logits.shape[1])
    return total / (streams * length) / math.log(2)


def annotate(corpus: StdlibCorpus, names: list[str], chars: int | None, progress: Progress
             ) -> tuple[list[tuple[str, str]], dict[str, np.ndarray], list[str]]:
    """The first files of `names` that tokenize accepts, holding `chars` characters, cut as `StdlibCorpus.take`
    cuts; their pytokens tracks concatenated (each file tokenized whole); and the names skipped as unparsable."""
    progress.start("annotate with tokenize", chars)
    files, parts, skipped, total = [], [], [], 0
    for name in names:
        if chars is not None and total >= chars:
            break
        try:
            tracks = pytokens.char_tracks(corpus.sources[name])
        except pytokens.UnparsableSource:
            skipped.append(name)
            continue
        [(_, text)] = corpus.take([name], None if chars is None else chars - total)
        files.append((name, text))
        parts.append({track: values[:len(text)] for track, values in tracks.items()})
        total += len(text)
        progress.update(len(text))
    if not files:
        raise ValueError(f"none of the {len(names)} files given could be tokenized")
    return files, {track: np.concatenate([part[track] for part in parts]) for track in pytokens.TRACKS}, skipped


def build(out_dir: Path, progress: Progress, tiny: bool) -> None:
    """Train the model, measure it on the held-out files and write the project with its weights into `out_dir`."""
    plan = TINY if tiny else FULL
    with torch_threads(plan.threads):
        _build(Path(out_dir), progress, plan, "tiny_factory" if tiny else "factory")


def _build(out_dir: Path, progress: Progress, plan: Plan, factory_name: str) -> None:
    torch.manual_seed(0)
    progress.start("read the standard library")
    corpus = StdlibCorpus()
    tokenizer = Tokenizer("char", list(VOCAB))
    train_ids = tokenizer.encode("".join(text for _, text in corpus.take(corpus.training, plan.train_chars)))
    model = CharLSTM.of_plan(plan)
    training = train(model, train_ids, plan, progress)
    validation = corpus.take(corpus.held_out, plan.validation_chars)
    validation_ids = tokenizer.encode("".join(text for _, text in validation))
    bits = bits_per_char(model, validation_ids, progress=progress)

    states, tracks, unparsable = annotate(corpus, corpus.held_out + corpus.training, plan.state_chars, progress)
    lengths = np.array([len(text) for _, text in states])
    held_out = len({name for name, _ in states} & set(corpus.held_out))
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    then = f", then {len(states) - held_out} training files" if len(states) > held_out else ""
    left_out = f"; {len(unparsable)} files tokenize rejects left out" if unparsable else ""
    description = (f"A character-level LSTM ({plan.layers} x {plan.hidden}) trained on the Python {python} standard "
                   f"library ({len(train_ids) / 1e6:.1f} M characters; {training['chars_seen'] / 1e6:.1f} M seen in "
                   f"{training['seconds'] / 60:.1f} minutes): {bits:.2f} bits per character on "
                   f"{len(validation_ids) / 1e6:.2f} M characters of held-out files. States of "
                   f"{int(lengths.sum()):,} characters ({held_out} held-out files{then}{left_out}) with meta tracks "
                   f"from Python's tokenize.")
    extra = {
        "validation": {"bits_per_char": round(bits, 4), "chars": len(validation_ids), "files": len(validation)},
        "training": {**training, "batch": plan.batch, "bptt": plan.bptt, "learning_rate": plan.learning_rate,
                     "clip": plan.clip, "optimizer": "Adam, cosine schedule to 5%", "threads": plan.threads},
        "corpus": {"source": f"Python {python} standard library ({corpus.root})", "files": len(corpus.sources),
                   "train_files": len(corpus.training), "held_out_files": len(corpus.held_out),
                   "held_out": f"every {HELD_OUT_EVERY}th file in path order, from the first",
                   "train_chars": len(train_ids), "unk_fraction": round(float(np.mean(train_ids == 0)), 7)},
        "states_corpus": {"chars": int(lengths.sum()), "held_out_files": held_out,
                          "training_files": len(states) - held_out, "unparsable_skipped": unparsable,
                          "last_file_cut": len(states[-1][1]) < len(corpus.sources[states[-1][0]]),
                          "files": [name for name, _ in states]},
        "model": {"factory": f"{__name__}:{factory_name}", "weights": WEIGHTS_FILE, "embedding": plan.embedding,
                  "hidden": plan.hidden, "layers": plan.layers},
    }
    write_token_project(out_dir, model=model, token_ids=tokenizer.encode("".join(text for _, text in states)),
                        vocab=list(VOCAB), layers=["lstm"], documents=np.concatenate([[0], np.cumsum(lengths)[:-1]]),
                        state="carry", meta=pytokens.meta_tracks(tracks), name="stdlib-charlm",
                        description=description, extra=extra, progress=progress)
    torch.save(model.state_dict(), out_dir / WEIGHTS_FILE)
