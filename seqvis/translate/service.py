"""The translate service of one seq2seq project: its adapter loaded once, and JSON-ready answers.

The project's seqvis.yml names a factory ("package.module:function") that is called with the opened
`Seq2SeqProject` and returns a `Seq2SeqAdapter`; the service never looks inside the model.
"""
from __future__ import annotations

import pkgutil
import threading
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from core.neighbours import NeighbourIndex
from seqvis.jobs import Jobs
from seqvis.labels import summary
from seqvis.progress import Progress
from seqvis.projects import ProjectError, Seq2SeqProject
from seqvis.translate.adapter import Seq2SeqAdapter
from seqvis.translate.labels import side_labels
from seqvis.translate.decode import (Node, Translation, embedding_neighbours, greedy, search, source_ids, target_ids,
                                     what_if)

MAX_SOURCE_TOKENS = 100
DIGITS = 4
SIDES = ("encoder", "decoder")
MAP_POINTS = 2000       # indexed states sent as the background of the neighbourhood map


def load_adapter(project: Seq2SeqProject) -> Seq2SeqAdapter:
    """The adapter that the project's factory builds; a factory that cannot be found or returns something else
    is a ProjectError naming it."""
    spec = project.model.factory
    try:
        factory = pkgutil.resolve_name(spec)
    except (ImportError, AttributeError, ValueError) as error:
        raise ProjectError(f"seqvis.yml model.factory {spec!r} cannot be loaded: {error}") from None
    adapter = factory(project)
    if not isinstance(adapter, Seq2SeqAdapter):
        raise ProjectError(f"seqvis.yml model.factory {spec!r} returned a {type(adapter).__name__}, "
                           f"not a seqvis.translate.Seq2SeqAdapter")
    for name in ("bos", "eos"):
        token = getattr(adapter, name, None)
        if not isinstance(token, int) or not 0 <= token < len(adapter.target_vocab):
            raise ProjectError(f"seqvis.yml model.factory {spec!r}: adapter.{name} must be a target id, got {token!r}")
    return adapter


def _round(values) -> Any:
    """Numbers rounded for JSON; infinities (a token the model rules out) become None, which JSON can hold."""
    if values is None:
        return None
    array = np.round(np.asarray(values, dtype=np.float64), DIGITS)
    finite = np.isfinite(array)
    if array.ndim == 0:
        return float(array) if finite else None
    if finite.all():
        return array.tolist()
    out = array.astype(object)
    out[~finite] = None
    return out.tolist()


class TrainingStates:
    """The encoder and decoder states of a project's training pairs, searched for neighbours.

    The HDF5 file (seqvis.yml `files.states`) holds, per side ("encoder", "decoder"), `states` [N, D] (one row
    per token, no padding rows; a decoder row is the state that predicts target token t), and `sentence` and
    `position` [N] (the row's pair and token position); `sentences/source` and `sentences/target` hold the
    pairs' word ids in the adapter's vocabularies, pair i at `sentences/{source,target}_offsets`[i:i+2]
    (`seqvis.demo.translate.write_states` writes it). Each side's `NeighbourIndex` is built once into
    `cache_dir` and reopened from there.
    """

    DATASETS = [f"{side}/{name}" for side in SIDES for name in ("states", "sentence", "position")] + [
        f"sentences/{side}{suffix}" for side in ("source", "target") for suffix in ("", "_offsets")]

    def __init__(self, path: Path, cache_dir: Path):
        self.path, self.cache_dir = Path(path), Path(cache_dir)
        try:
            self.file = h5py.File(self.path, "r")
        except OSError as error:
            raise ProjectError(f"{self.path.name}: not a readable HDF5 file ({error}) (seqvis.yml files.states)") \
                from None
        missing = [name for name in self.DATASETS if not isinstance(self.file.get(name), h5py.Dataset)]
        if missing:
            raise ProjectError(f"{self.path.name}: no dataset {', '.join(repr(m) for m in missing)} "
                               f"(seqvis.yml files.states)")
        self.offsets = {side: self.file[f"sentences/{side}_offsets"][:] for side in ("source", "target")}
        self._indexes: dict[str, NeighbourIndex] = {}
        self._lock = threading.Lock()

    def index(self, side: str) -> NeighbourIndex:
        """The neighbour index of one side's states, opened from the cache or built there first."""
        with self._lock:
            if side not in self._indexes:
                self._indexes[side] = NeighbourIndex.cached(
                    self.file[f"{side}/states"], self.cache_dir,
                    progress=Progress(f"neighbour index {self.path.parent.name}/{side}"))
            return self._indexes[side]

    def locate(self, side: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The pair and token position of each of `rows` of one side's states."""
        unique, inverse = np.unique(rows, return_inverse=True)
        return (self.file[f"{side}/sentence"][unique][inverse].astype(np.int64),
                self.file[f"{side}/position"][unique][inverse].astype(np.int64))

    def token_words(self, side: str, vocab: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
        """For every row of one side's states: its word (the source word read, or the target word predicted), its
        position and its sentence's length."""
        words = "source" if side == "encoder" else "target"
        pairs, positions = self.file[f"{side}/sentence"][:].astype(np.int64), self.file[f"{side}/position"][:]
        offsets = self.offsets[words]
        ids = self.file[f"sentences/{words}"][:][offsets[pairs] + positions]
        return ([vocab[i] if 0 <= i < len(vocab) else "?" for i in ids.tolist()], positions,
                (offsets[pairs + 1] - offsets[pairs]))

    def pair(self, pair: int) -> tuple[np.ndarray, np.ndarray]:
        """The source and target word ids of training pair `pair`."""
        return tuple(self.file[f"sentences/{side}"][self.offsets[side][pair]:self.offsets[side][pair + 1]]
                     for side in ("source", "target"))


class Translator:
    """Translations and what-ifs for one seq2seq project; plain data in, JSON-ready dicts out."""

    kind = "seq2seq"

    def __init__(self, project: Seq2SeqProject, cache_dir: Path):
        self.project, self.cache_dir = project, Path(cache_dir)
        self.adapter = load_adapter(project)
        self._jobs = Jobs()

    @cached_property
    def has_attention(self) -> bool:
        """Whether the decoder steps return attention, learnt from one step on a one-word source."""
        word = next((i for i, w in enumerate(self.adapter.source_vocab) if w and w not in
                     self.adapter.special_source_tokens), 0)
        return greedy(self.adapter, [word], max_length=1).has_attention

    def info(self) -> dict:
        """What the page needs before the first request: vocabulary sizes, attention, embeddings, whether training
        states are stored for neighbours, limits, examples."""
        return {"project": self.project.name, "description": self.project.description,
                "source_words": len(self.adapter.source_vocab), "target_words": len(self.adapter.target_vocab),
                "has_attention": self.has_attention, "embeddings": self.adapter.source_embeddings() is not None,
                "neighbours": "states" in self.project.files,
                "max_source_tokens": MAX_SOURCE_TOKENS, "examples": list(self.project.extra.get("examples", []))}

    # -- decoding ----------------------------------------------------------------------------------------------
    def translate(self, source: str, **options: Any) -> dict:
        """The translation of `source` with every stage of the decoding (see `as_json`)."""
        return self.as_json(search(self.adapter, self.source_ids(source), **options))

    def whatif(self, source: str, *, prefix: str | None = None, attention: Mapping[int, Sequence[float]] | None = None,
               swap: tuple[int, str] | None = None, **options: Any) -> dict:
        """The translation of `source` and, side by side, the one edited by a forced `prefix` (target words),
        attention edits ({output step: weights over the source}) and a source word swap ((position, word))."""
        ids = self.source_ids(source)
        swapped = None if swap is None else (swap[0], self.word_id(swap[1], "swap"))
        forced = target_ids(self.adapter, prefix) if prefix else []
        original, edited = what_if(self.adapter, ids, swap=swapped, prefix=forced, attention=attention, **options)
        return {"original": self.as_json(original), "edited": self.as_json(edited),
                "edits": {"prefix": self.words(forced, self.adapter.target_vocab),
                          "attention": {str(step): weights for step, weights in edited.settings["attention"].items()},
                          "swap": None if swap is None else {"position": swap[0], "from": self.adapter.source_vocab[
                              ids[swap[0]]], "to": swap[1]}}}

    def substitutes(self, source: str, position: int, k: int = 10) -> dict:
        """The source words nearest (cosine of embeddings) to the word at `position` of `source`."""
        ids = self.source_ids(source)
        if not 0 <= position < len(ids):
            raise ValueError(f"position: {position} is not a source position (0..{len(ids) - 1})")
        vocab = self.adapter.source_vocab
        return {"position": position, "word": vocab[ids[position]],
                "neighbours": [{"word": vocab[i], "similarity": round(similarity, DIGITS)}
                               for i, similarity in embedding_neighbours(self.adapter, ids[position], k)]}

    # -- neighbours -------------------------------------------------------------------------------------------------
    @cached_property
    def training(self) -> TrainingStates:
        """The project's stored training states; a LookupError when it stores none."""
        path = self.project.files.get("states")
        if path is None:
            raise LookupError(f"project {self.project.name!r} stores no training states to search (seqvis.yml "
                              f"files.states)")
        return TrainingStates(path, self.cache_dir)

    def neighbours(self, source: str, side: str, position: int, *, target: str | None = None,
                   attention: Mapping[int, Sequence[float]] | None = None, k: int = 20) -> dict:
        """The `k` training states nearest (exact cosine) to one state of a translation, with their pairs.

        side "encoder": the state of source token `position`. side "decoder": the state that predicts output token
        `position` of `target` (the output words, e.g. a hypothesis's tokens, decoded forced along them with the
        `attention` edits), so any step of any hypothesis can be asked about. The answer places the query, its
        neighbours and the whole sentence's states (its trajectory) on the 2-D map fitted once per index, with a
        sample of the indexed states as background."""
        states, tokens = self.sentence_states(source, side, target, attention)
        if not 0 <= position < len(tokens):
            raise ValueError(f"position: {position} is not a position of the {side} tokens (0..{len(tokens) - 1})")
        training = self.training
        index = training.index(side)
        if states.shape[1] != index.dims:
            raise ProjectError(f"{training.path.name}: {side} states have {index.dims} dimensions, the model's "
                               f"{states.shape[1]} (seqvis.yml files.states belongs to another model)")
        rows, similarities = index.query(states[position:position + 1], k)
        rows, similarities = rows[0], similarities[0]
        pairs, positions = training.locate(side, rows)
        trajectory = index.project(states)
        background = np.unique(np.linspace(0, index.size - 1, min(index.size, MAP_POINTS)).astype(np.int64))
        places = index.coordinates[np.searchsorted(index.rows, rows)]
        found = []
        for row, similarity, pair, at, xy in zip(rows, similarities, pairs, positions, places):
            source_words, target_words = training.pair(int(pair))
            found.append({"row": int(row), "similarity": _round(similarity), "pair": int(pair), "position": int(at),
                          "xy": _round(xy), "source": self.words(source_words, self.adapter.source_vocab),
                          "target": self.words(target_words, self.adapter.target_vocab)})
        return {"side": side, "position": position, "tokens": tokens, "xy": _round(trajectory[position]),
                "trajectory": _round(trajectory), "neighbours": found,
                "map": {"states": index.size, "points": _round(index.coordinates[background])}}

    def labels(self, side: str, *, by: str = "iou", wait: bool = False) -> dict:
        """Each encoder or decoder unit's best token concept of the training set (digits, month name, a frequent
        word, a position, ...: `seqvis.translate.labels`), computed once per side in the background."""
        if side not in SIDES:
            raise ValueError(f"side: must be one of {', '.join(SIDES)}, got {side!r}")
        if by not in ("iou", "ap"):
            raise ValueError(f"by: must be iou or ap, got {by!r}")
        training = self.training
        found = self._jobs.result(
            ("labels", side), f"unit labels {self.project.name}/{side}", lambda: None,
            lambda progress: side_labels(training, side, self.adapter.source_vocab, self.adapter.target_vocab,
                                         self.cache_dir, progress), wait=wait)
        answer = {"side": side, **self._jobs.status(("labels", side))}
        if found is None:
            return answer
        table = summary(found, per_unit=3, by=by)
        return answer | table

    def sentence_states(self, source: str, side: str, target: str | None,
                        attention: Mapping[int, Sequence[float]] | None) -> tuple[np.ndarray, list[str]]:
        """One side's states [T, D] of a sentence and its words: the encoder's over `source`, or the decoder's
        forced along the output words `target` with the `attention` edits."""
        if side not in SIDES:
            raise ValueError(f"side: must be one of {', '.join(SIDES)}, got {side!r}")
        ids = self.source_ids(source)
        if side == "encoder":
            if attention:
                raise ValueError("attention: edits change decoder states only; ask with side decoder")
            encoded = greedy(self.adapter, ids, max_length=1, top_k=1)     # checks the encoding as decoding does
            return encoded.encoder_states, self.words(ids, self.adapter.source_vocab)
        if not target:
            raise ValueError("target: the decoder side needs the output words whose states to search")
        forced = target_ids(self.adapter, target, what="target")
        if self.adapter.eos in forced[:-1]:
            raise ValueError(f"target: only the last word may be the end token "
                             f"{self.adapter.target_vocab[self.adapter.eos]!r}")
        translation = greedy(self.adapter, ids, max_length=len(forced), top_k=1, prefix=forced, attention=attention)
        return translation.best.states, self.words(forced, self.adapter.target_vocab)

    # -- words and ids ---------------------------------------------------------------------------------------------
    def source_ids(self, source: str) -> list[int]:
        return source_ids(self.adapter, source, max_tokens=MAX_SOURCE_TOKENS)

    def word_id(self, word: str, what: str) -> int:
        return source_ids(self.adapter, word, max_tokens=1, what=what)[0]

    @staticmethod
    def words(ids: Sequence[int], vocab: Sequence[str]) -> list[str]:
        return [vocab[i] for i in ids]

    def as_json(self, translation: Translation) -> dict:
        """Encoder tokens and states; per hypothesis its words, scores, and per output step the attention, decoder
        state and top-k; the search tree (every node with its top-k, pruned branches included)."""
        source_vocab, target_vocab = self.adapter.source_vocab, self.adapter.target_vocab
        eos = self.adapter.eos
        hypotheses = []
        for hypothesis in translation.hypotheses:
            words = self.words(hypothesis.ids, target_vocab)
            hypotheses.append({
                "tokens": words, "ids": hypothesis.ids,
                "text": self.adapter.detokenize_target(words[:-1] if hypothesis.ids[-1:] == [eos] else words),
                "score": _round(hypothesis.score), "normalized": _round(hypothesis.normalized),
                "finished": hypothesis.finished, "log_probs": _round(hypothesis.log_probs),
                "attention": _round(hypothesis.attention), "states": _round(hypothesis.states),
                "top": [self._top(ids, log_probs) for ids, log_probs in
                        zip(hypothesis.top_ids, hypothesis.top_log_probs)],
                "node": hypothesis.node})
        return {
            "source": {"tokens": self.words(translation.source_ids, source_vocab), "ids": translation.source_ids,
                       "states": _round(translation.encoder_states)},
            "has_attention": translation.has_attention,
            "hypotheses": hypotheses,
            "tree": [self._node(node) for node in translation.nodes],
            "settings": {key: value for key, value in translation.settings.items() if key != "attention"},
        }

    def _top(self, ids: np.ndarray, log_probs: np.ndarray) -> dict:
        return {"tokens": self.words(ids.tolist(), self.adapter.target_vocab), "ids": ids.tolist(),
                "log_probs": _round(log_probs)}

    def _node(self, node: Node) -> dict:
        return {"id": node.id, "parent": node.parent, "depth": node.depth,
                "token": self.adapter.target_vocab[node.token], "log_prob": _round(node.log_prob),
                "score": _round(node.score), "end": node.end, "rank": node.rank,
                "top": None if node.top_ids is None else self._top(node.top_ids, node.top_log_probs)}
